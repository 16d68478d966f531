//! The one way tej writes sizes and durations for people (findings, reports, logs).

/// A size in bytes with binary units: `512 B`, `1.5 KiB`, `3.0 GiB`; `?` when not a number.
pub fn bytes(bytes: f64) -> String {
    if !bytes.is_finite() {
        return "?".into();
    }
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes.abs();
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    let sign = if bytes < 0.0 { "-" } else { "" };
    if u == 0 {
        format!("{sign}{v:.0} {}", units[u])
    } else {
        format!("{sign}{v:.1} {}", units[u])
    }
}

/// A duration in seconds, to the two largest units: `42s`, `1m 05s`, `3h 12m`; in hours up
/// to two days (a day-old backup reads `25h 59m`), then `3d 04h`; `?` when negative or not
/// a number.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=172_799 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
        assert_eq!(bytes(-2048.0), "-2.0 KiB");
        assert_eq!(bytes(f64::INFINITY), "?");
        assert_eq!(duration(42.0), "42s");
        assert_eq!(duration(65.0), "1m 05s");
        assert_eq!(duration(3725.0), "1h 02m");
        assert_eq!(duration(93_540.0), "25h 59m");
        assert_eq!(duration(3.0 * 86_400.0 + 4.0 * 3600.0), "3d 04h");
        assert_eq!(duration(f64::NAN), "?");
        assert_eq!(duration(-1.0), "?");
    }
}

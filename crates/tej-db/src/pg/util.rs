//! Small formatting helpers for findings.

/// `3725.0` → `1h 02m`, `42.0` → `42s`, `90061.0` → `1d 01h`.
pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(bytes: f64) -> String {
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

/// Cuts `text` to at most `max` characters, adding `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut s: String = one_line.chars().take(max).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human_duration(42.0), "42s");
        assert_eq!(human_duration(3725.0), "1h 02m");
        assert_eq!(human_duration(90061.0), "1d 01h");
        assert_eq!(human_duration(f64::NAN), "?");
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
        assert_eq!(truncate("select  1\n from x", 8), "select 1…");
        assert_eq!(truncate("abc", 8), "abc");
    }
}

//! The emitted systemd timers, parsed by the real systemd (`systemd-analyze calendar`),
//! fire exactly at the calendar's Asia/Kolkata times for a year and a bit.

use jiff::civil::DateTime;
use jiff::{SignedDuration, Timestamp};
use tej_core::{Calendar, CommandRunner, CommandSpec, Recurrence, TokioCommandRunner};
use tej_runbook::{ScheduleOptions, emit_systemd};

fn calendar_occurrences(cal: &Calendar, id: &str, from: Timestamp, n: usize) -> Vec<Timestamp> {
    let e = cal.entry(id).unwrap();
    let mut v = Vec::new();
    let mut t = from;
    while v.len() < n {
        let z = cal.next_of(&e.recurrence, t);
        v.push(z.timestamp());
        t = z.timestamp();
    }
    v
}

/// Parses `Next elapse: Sun 2025-01-19 04:30:00 UTC` and `Iter. #2: ...` lines.
fn parse_elapses(stdout: &str) -> Vec<Timestamp> {
    stdout
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = if let Some(r) = l.strip_prefix("Next elapse:") {
                r
            } else if l.starts_with("Iter. #") {
                l.split_once(':')?.1
            } else {
                return None;
            };
            let rest = rest.trim();
            // "Sun 2025-01-19 04:30:00 UTC"
            let mut it = rest.split_whitespace();
            let _weekday = it.next()?;
            let date = it.next()?;
            let time = it.next()?;
            assert_eq!(it.next(), Some("UTC"), "{l}");
            let dt: DateTime = format!("{date}T{time}").parse().ok()?;
            dt.to_zoned(jiff::tz::TimeZone::UTC)
                .ok()
                .map(|z| z.timestamp())
        })
        .collect()
}

#[tokio::test]
async fn systemd_timers_fire_at_calendar_times() {
    let cal = Calendar::runbook();
    let units = emit_systemd(&cal, &ScheduleOptions::default()).unwrap();
    let runner = TokioCommandRunner;
    // Base: 2024-12-31T23:00Z = 2025-01-01 04:30 IST; crosses the 2025/2026 year end.
    let base: Timestamp = "2024-12-31T23:00:00Z".parse().unwrap();
    let span_end: Timestamp = "2026-01-10T00:00:00Z".parse().unwrap();
    for e in &cal.entries {
        let timer = units
            .iter()
            .find(|u| u.name == format!("tej-{}.timer", e.id))
            .unwrap();
        let expr = timer
            .contents
            .lines()
            .find_map(|l| l.strip_prefix("OnCalendar="))
            .unwrap();
        // How many firings the calendar has in the span.
        let mut n = 0;
        let mut t = base;
        loop {
            let z = cal.next_of(&e.recurrence, t);
            if z.timestamp() >= span_end {
                break;
            }
            n += 1;
            t = z.timestamp();
        }
        assert!(n >= 4, "{}: {n}", e.id);
        let spec = CommandSpec::new("systemd-analyze")
            .arg("calendar")
            .arg(format!("--iterations={n}"))
            .arg(format!("--base-time=@{}", base.as_second()))
            .arg(expr)
            .env("TZ", "UTC")
            .timeout(std::time::Duration::from_secs(30));
        let out = runner.run(spec).await.expect("run systemd-analyze");
        let stdout = out.stdout_text();
        assert!(out.status.success(), "{}: {stdout}", e.id);
        let got = parse_elapses(&stdout);
        let want = calendar_occurrences(&cal, &e.id, base, n);
        assert_eq!(got, want, "{} ({expr})", e.id);
        // Sanity: the times are IST wall-clock times, i.e. UTC minute 30 for whole hours.
        let off = SignedDuration::from_secs(19800);
        for t in &got {
            let local = t
                .checked_add(off)
                .unwrap()
                .to_zoned(jiff::tz::TimeZone::UTC);
            let at = match e.recurrence {
                Recurrence::Day { at }
                | Recurrence::Week { at, .. }
                | Recurrence::Month { at, .. }
                | Recurrence::Quarter { at, .. } => at,
            };
            assert_eq!(local.time(), at, "{}", e.id);
        }
    }
}

/// Every emitted unit, with `OnFailure=`, `EnvironmentFile=` and `User=`, passes the real
/// `systemd-analyze verify`.
#[tokio::test]
async fn emitted_units_pass_systemd_analyze_verify() {
    let cal = Calendar::runbook();
    let opts = ScheduleOptions {
        // A binary that exists, as systemd-analyze checks ExecStart=.
        tej_binary: std::path::PathBuf::from("/bin/true"),
        config: Some("/etc/tej/tej.toml".into()),
        user: Some("root".into()),
        on_failure: Some("tej-notify-failure@%n.service".into()),
        environment_file: Some("/etc/tej/tej.env".into()),
        ..ScheduleOptions::default()
    };
    let units = emit_systemd(&cal, &opts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = CommandSpec::new("systemd-analyze")
        .arg("verify")
        .timeout(std::time::Duration::from_secs(60));
    for u in &units {
        assert!(
            !u.name.ends_with(".service") || u.contents.contains("\nOnFailure="),
            "{}",
            u.contents
        );
        let p = dir.path().join(&u.name);
        std::fs::write(&p, &u.contents).unwrap();
        spec = spec.arg(p.display().to_string());
    }
    let out = TokioCommandRunner
        .run(spec)
        .await
        .expect("run systemd-analyze");
    // Unknown keys are only warnings for systemd: refuse them too.
    let said = format!("{}{}", out.stdout_text(), out.stderr);
    assert!(
        !said.contains("Unknown") && !said.contains("ignoring"),
        "{said}"
    );
    assert!(out.status.success(), "{said}");
}

//! Several runs of one check in a daily report never share a label: each row names what it
//! is about (the log pattern, the mount).

use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeSet;
use tej_runbook::{RunContext, daily_health};

/// A fake `/proc` with two real file systems (both on this machine's temp directory) and
/// application logs with errors, warnings, failed logins and slow queries.
fn context_with_logs_and_mounts(dir: &std::path::Path) -> RunContext {
    let proc_root = dir.join("proc");
    let (a, b) = (dir.join("a"), dir.join("b"));
    for d in [&proc_root, &a, &b] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(
        proc_root.join("mounts"),
        format!(
            "/dev/fake-a {} ext4 rw 0 0\n/dev/fake-b {} ext4 rw 0 0\n",
            a.display(),
            b.display()
        ),
    )
    .unwrap();
    std::fs::write(
        proc_root.join("meminfo"),
        "MemTotal: 1000 kB\nMemAvailable: 900 kB\n",
    )
    .unwrap();
    std::fs::write(proc_root.join("loadavg"), "0.1 0.2 0.3 1/1 1\n").unwrap();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let now = Timestamp::now();
    let mut text = String::new();
    for (i, what) in [
        "error upstream timed out",
        "warn pool nearly exhausted",
        "login failed for admin from 203.0.113.9",
        "slow query 2300 ms SELECT 1",
    ]
    .iter()
    .enumerate()
    {
        text.push_str(&format!(
            "{} {what}\n",
            now - SignedDuration::from_mins(10 + i as i64)
        ));
    }
    std::fs::write(logs.join("app.log"), text).unwrap();
    let mut ctx = RunContext::empty(tej_core::Config::default());
    ctx.logs.paths = vec![logs];
    ctx.resources = tej_host::ResourceOptions {
        proc_root,
        ..tej_host::ResourceOptions::default()
    };
    ctx
}

#[tokio::test]
async fn every_row_of_the_daily_report_names_what_it_is_about() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context_with_logs_and_mounts(dir.path());
    let r = daily_health(&ctx, &tej_core::SystemClock).await;
    let mut seen = BTreeSet::new();
    for f in &r.findings {
        assert!(
            seen.insert((f.check.clone(), f.target.clone())),
            "{} [{}] twice in {:#?}",
            f.check,
            f.target,
            r.findings
        );
    }
    let labels: Vec<String> = r
        .findings
        .iter()
        .map(|f| format!("{} [{}]", f.check, f.target))
        .collect();
    for want in [
        "logs.review [host:error]",
        "logs.review [host:warn]",
        "logs.review [host:login failed]",
        "logs.review [host:slow query]",
        &format!("disk.usage [host:{}]", dir.path().join("a").display()),
        &format!("disk.usage [host:{}]", dir.path().join("b").display()),
        "memory.usage [host]",
    ] {
        assert!(labels.iter().any(|l| l == want), "no {want} in {labels:#?}");
    }
}

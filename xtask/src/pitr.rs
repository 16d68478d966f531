//! `cargo xtask bench pitr`: tej's physical backup, restore, WAL push, archive backlog and
//! WAL fetch for recovery against pgBackRest, in one run, with a verdict per goal of the PITR issue.
//!
//! Builds the release `tej` binary (`cargo build --release -p tej-cli`) and four examples of
//! tej-backup, then runs, in order:
//! 1. `bench_physical`: base backup and restore vs `pgbackrest backup --type=full` and
//!    `pgbackrest restore` (zst 3, process-max 2) on the generated ~500 MB text-heavy database;
//! 2. `bench_wal_push`: per-segment `tej wal push` latency vs `pgbackrest archive-push`;
//! 3. `bench_backlog`: a 60-second pgbench run archiving through `tej wal push`, then through
//!    `pgbackrest archive-push`, with the `.ready` backlog sampled every second;
//! 4. `bench_wal_fetch`: `restore_command` over 64 segments in order, `tej wal fetch` with its
//!    prefetch and without, vs `pgbackrest archive-get`, synchronous and asynchronous.
//!
//! `TEJ_BENCH_MB` (database size), `TEJ_BENCH_SECONDS` and `TEJ_BENCH_SCALE` (backlog run)
//! are passed through to shorten a trial run.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The examples, in the order they run, with what each compares.
const PARTS: &[(&str, &str)] = &[
    (
        "bench_physical",
        "base backup and restore vs pgbackrest backup --type=full / restore",
    ),
    (
        "bench_wal_push",
        "per-segment tej wal push vs pgbackrest archive-push",
    ),
    (
        "bench_backlog",
        "archive backlog during 60 s of pgbench, tej wal push vs pgbackrest archive-push",
    ),
    (
        "bench_wal_fetch",
        "restore_command per segment: tej wal fetch with and without prefetch vs pgbackrest archive-get (sync and async)",
    ),
];

/// Runs `c`, echoing its stdout line by line, and returns the lines.
fn run_tee(mut c: Command, what: &str) -> Result<Vec<String>> {
    let mut child = c
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {what}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        lines.push(line);
    }
    let st = child.wait()?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(lines)
}

/// The cells of the markdown row whose first cell is `name`.
fn row<'a>(lines: &'a [String], name: &str) -> Option<Vec<&'a str>> {
    lines.iter().find_map(|l| {
        let cells: Vec<&str> = l
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        (cells.first() == Some(&name)).then_some(cells)
    })
}

/// The `xtask-summary:` JSON lines an example printed.
fn summaries(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("xtask-summary: "))
        .filter_map(|j| serde_json::from_str(j).ok())
        .collect()
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

pub fn run(_args: &[String]) -> Result<()> {
    let started = Instant::now();
    crate::install_deps()?;
    crate::step("build the release tej binary (cargo build --release -p tej-cli)");
    crate::status(
        crate::cargo(&["build", "--release", "-p", "tej-cli"]),
        "cargo build --release -p tej-cli",
    )?;
    let tej = crate::target_dir().join("release/tej");
    if !tej.is_file() {
        bail!("{} was not built", tej.display());
    }
    crate::step("build the benchmark examples of tej-backup (release)");
    let mut build = crate::cargo(&["build", "--release", "-p", "tej-backup"]);
    for (ex, _) in PARTS {
        build.args(["--example", ex]);
    }
    crate::status(build, "cargo build --release -p tej-backup --example ...")?;

    let mut outputs = Vec::new();
    for (i, (ex, what)) in PARTS.iter().enumerate() {
        crate::step(&format!("pitr {}/{}: {what}", i + 1, PARTS.len()));
        let mut c = Command::new(crate::target_dir().join("release/examples").join(ex));
        c.env("TEJ_BIN", &tej)
            .env("TEJ_S3S_FS", crate::s3s_fs_path());
        outputs.push(run_tee(c, ex)?);
    }

    crate::step("pitr: goals");
    let mut table = Vec::new();
    let all_met = goals(&mut table, &outputs)?;
    print!("{}", String::from_utf8_lossy(&table));
    println!();
    println!(
        "bench pitr took {:.0} s; {}",
        started.elapsed().as_secs_f64(),
        if all_met {
            "every goal met"
        } else {
            "some goals NOT met"
        }
    );
    Ok(())
}

/// Writes the table of goals from the four examples' outputs; true when every goal is met.
fn goals(out: &mut Vec<u8>, outputs: &[Vec<String>]) -> Result<bool> {
    use std::io::Write;
    anyhow::ensure!(outputs.len() == PARTS.len(), "one output per part");
    let mut all_met = true;
    writeln!(out, "| goal | tej | pgBackRest | ratio | verdict |")?;
    writeln!(out, "|---|---|---|---|---|")?;
    for (name, label, goal) in [
        (
            "full backup, median wall",
            "backup wall time <= 0.80x",
            0.80,
        ),
        ("restore, median wall", "restore wall time <= 1.00x", 1.00),
    ] {
        let cells = row(&outputs[0], name).with_context(|| format!("no {name:?} row"))?;
        let ratio: f64 = cells
            .get(3)
            .and_then(|r| r.parse().ok())
            .with_context(|| format!("no ratio in {name:?} row"))?;
        all_met &= ratio <= goal;
        writeln!(
            out,
            "| {label} | {} | {} | {ratio:.2} | {} |",
            cells.get(1).unwrap_or(&""),
            cells.get(2).unwrap_or(&""),
            verdict(ratio <= goal)
        )?;
    }
    let push = summaries(&outputs[1]);
    let p = push.first().context("bench_wal_push printed no summary")?;
    let ratio = p["ratio"].as_f64().unwrap_or(f64::NAN);
    all_met &= ratio <= 1.0;
    writeln!(
        out,
        "| per-segment push latency <= 1.00x (median) | {:.1} ms | {:.1} ms | {ratio:.2} | {} |",
        p["tej_ms"].as_f64().unwrap_or(f64::NAN),
        p["pgbackrest_ms"].as_f64().unwrap_or(f64::NAN),
        verdict(ratio <= 1.0)
    )?;
    let backlog = summaries(&outputs[2]);
    let (t, b) = match backlog.as_slice() {
        [t, b, ..] => (t, b),
        _ => bail!("bench_backlog printed no summaries"),
    };
    let cell = |v: &serde_json::Value| {
        format!(
            "max {} / median {} / end {} / {:+.2} per min",
            v["max"],
            v["median"],
            v["end"],
            v["slope_per_min"].as_f64().unwrap_or(f64::NAN)
        )
    };
    let grows = t["never_grows"].as_bool() != Some(true);
    all_met &= !grows;
    writeln!(
        out,
        "| archive backlog never grows (pgbench 60 s) | {} | {} | | {} |",
        cell(t),
        cell(b),
        verdict(!grows)
    )?;
    let fetch = summaries(&outputs[3]);
    let f = fetch
        .first()
        .context("bench_wal_fetch printed no summary")?;
    let num = |k: &str| f[k].as_f64().unwrap_or(f64::NAN);
    let ratio = num("ratio");
    all_met &= ratio <= 0.70;
    writeln!(
        out,
        "| WAL fetch for recovery with prefetch <= 0.70x without | {:.2} s (without: {:.2} s) | {:.2} s async ({:.2} s sync) | {ratio:.2} | {} |",
        num("prefetch_s"),
        num("no_prefetch_s"),
        num("pgbackrest_async_s"),
        num("pgbackrest_s"),
        verdict(ratio <= 0.70)
    )?;
    Ok(all_met)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_markdown_row_and_summaries() {
        let lines: Vec<String> = [
            "| full backup, median wall | 3.10s | 4.00s | 0.78 | <= 0.80 |",
            "xtask-summary: {\"ratio\": 0.5}",
            "xtask-summary: not json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cells = row(&lines, "full backup, median wall").unwrap();
        assert_eq!(cells[1], "3.10s");
        assert_eq!(cells[3], "0.78");
        assert!(row(&lines, "restore, median wall").is_none());
        let s = summaries(&lines);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0]["ratio"].as_f64(), Some(0.5));
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn goals_from_the_outputs_of_a_real_run() {
        let physical = lines(
            "| full backup, median wall | 5.68s | 7.98s | 0.71 | <= 0.80 |\n\
             | restore, median wall | 3.51s | 4.83s | 0.73 | <= 1.00 |",
        );
        let push = lines(
            "xtask-summary: {\"bench\":\"push\",\"pgbackrest_ms\":63.79,\"ratio\":0.98,\"segments\":20,\"tej_ms\":62.3,\"tool\":\"tej wal push\"}",
        );
        let backlog = |tej_grows: bool| {
            lines(&format!(
                "xtask-summary: {{\"end\":0,\"max\":1,\"median\":0.0,\"never_grows\":{},\"slope_per_min\":-0.09,\"tool\":\"tej wal push\"}}\n\
                 xtask-summary: {{\"end\":0,\"max\":1,\"median\":0.0,\"never_grows\":true,\"slope_per_min\":-0.11,\"tool\":\"pgbackrest archive-push\"}}",
                !tej_grows
            ))
        };
        let fetch = lines(
            "xtask-summary: {\"bench\":\"wal_fetch\",\"no_prefetch_s\":4.0,\"pgbackrest_async_s\":3.0,\"pgbackrest_s\":5.0,\"prefetch_s\":2.0,\"ratio\":0.5,\"ratio_vs_pgbackrest_async\":0.67,\"rounds\":3,\"segments\":64}",
        );
        let mut out = Vec::new();
        let met = goals(
            &mut out,
            &[
                physical.clone(),
                push.clone(),
                backlog(false),
                fetch.clone(),
            ],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(met, "{text}");
        assert!(
            text.contains("| backup wall time <= 0.80x | 5.68s | 7.98s | 0.71 | met |"),
            "{text}"
        );
        assert!(
            text.contains("| 62.3 ms | 63.8 ms | 0.98 | met |"),
            "{text}"
        );
        assert!(!text.contains("NOT met"), "{text}");

        let mut out = Vec::new();
        assert!(
            text.contains("| 2.00 s (without: 4.00 s) | 3.00 s async (5.00 s sync) | 0.50 | met |"),
            "{text}"
        );
        assert!(!goals(&mut out, &[physical, push, backlog(true), fetch]).unwrap());
        assert!(String::from_utf8(out).unwrap().contains("| NOT met |"));
        assert!(
            goals(
                &mut Vec::new(),
                &[lines(""), lines(""), lines(""), lines("")]
            )
            .is_err()
        );
    }
}

//! `tej logs review`: one streaming pass over the application's logs.

use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;
use tej_core::Report;
use tej_host::{LogReviewOptions, LogThresholds, review_logs};

/// `tej logs`.
#[derive(Debug, clap::Subcommand)]
pub enum LogsCmd {
    /// One pass over log files or directories: errors, warnings, failed logins, slow queries.
    Review {
        /// Files or directories (default: [logs] paths in tej.toml).
        paths: Vec<PathBuf>,
        /// Only lines newer than this (24h, 90m, 7d).
        #[arg(long, default_value = "24h")]
        since: String,
    },
}

/// Runs `tej logs review`; the report's Nagios exit code.
pub fn dispatch(ctx: &crate::context::Context, out: &mut dyn Write, cmd: LogsCmd) -> Result<i32> {
    let LogsCmd::Review { paths, since } = cmd;
    let cfg = ctx.config()?;
    let paths = if paths.is_empty() {
        cfg.logs.paths.clone()
    } else {
        paths
    };
    anyhow::ensure!(
        !paths.is_empty(),
        "no log paths: pass PATH... or set [logs] paths in tej.toml"
    );
    let since = parse_since(&since)?;
    let report = logs_review(out, &paths, since, ctx.format())?;
    ctx.finish_report(out, &report)
}

/// Parses `24h`, `90m`, `7d`, `30s` (or a jiff friendly duration like `2h 30m`).
pub fn parse_since(s: &str) -> Result<jiff::SignedDuration> {
    let t = s.trim();
    if let Some(days) = t.strip_suffix('d').and_then(|d| d.parse::<i64>().ok()) {
        return Ok(jiff::SignedDuration::from_hours(days * 24));
    }
    t.parse::<jiff::SignedDuration>()
        .with_context(|| format!("parse --since {s:?} (expected e.g. 24h, 90m, 7d)"))
}

/// One streaming pass over the logs.
pub fn logs_review(
    out: &mut dyn Write,
    paths: &[PathBuf],
    since: jiff::SignedDuration,
    format: OutputFormat,
) -> Result<Report> {
    let now = jiff::Timestamp::now();
    let opts = LogReviewOptions::window(now, since);
    let r = review_logs(paths, &opts).context("review logs")?;
    match format {
        OutputFormat::Json => json_line(out, "log_review", &r)?,
        OutputFormat::Text => {
            writeln!(
                out,
                "{} lines, {} bytes in {} file(s) since {}",
                r.lines,
                r.bytes,
                r.files.len(),
                r.since
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "the beginning".into())
            )?;
            for c in &r.classes {
                writeln!(out, "\n{:?}: {}", c.class, c.count)?;
                for l in c.last_lines.iter().rev().take(5).rev() {
                    writeln!(out, "    {l}")?;
                }
            }
            if !r.top_patterns.is_empty() {
                writeln!(out, "\ntop patterns:")?;
                for p in r.top_patterns.iter().take(10) {
                    writeln!(out, "  {:>8}  {}", p.count, p.pattern)?;
                }
            }
            if !r.failed_logins_by_address.is_empty() {
                writeln!(out, "\nfailed logins by address:")?;
                for a in r.failed_logins_by_address.iter().take(10) {
                    writeln!(out, "  {:>8}  {}", a.count, a.address)?;
                }
            }
            writeln!(out)?;
        }
        _ => {}
    }
    let mut report = Report::new("logs review");
    report.extend(r.findings(&LogThresholds::default()));
    Ok(report)
}

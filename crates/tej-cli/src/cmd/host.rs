//! `tej host check`, `tej logs review`, `tej cleanup`.

use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;
use tej_core::{Config, Executor, Outcome, Procedure, ProcedureReport, Report};
use tej_host::{
    CleanupOptions, CleanupStep, LogReviewOptions, LogThresholds, ResourceOptions,
    ResourceThresholds, check_resources, resource_findings, review_logs,
};

/// Disk, inodes, memory, swap and load as a report.
pub fn host_check(cfg: &Config) -> Result<Report> {
    let r =
        check_resources(&ResourceOptions::from_host(&cfg.host)).context("read host resources")?;
    let mut report = Report::new("host check");
    report.extend(resource_findings(&r, &ResourceThresholds::from(&cfg.host)));
    Ok(report)
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

/// Plans (and unless `dry_run`, applies) a cleanup through the executor, audited.
pub async fn cleanup(
    out: &mut dyn Write,
    ex: &Executor,
    opts: CleanupOptions,
    format: OutputFormat,
) -> Result<bool> {
    let proc_ = Procedure::new("cleanup").step(CleanupStep::new(opts));
    let report = ex.run(&proc_).await;
    render_procedure(out, &report, format)?;
    Ok(report.succeeded())
}

/// Renders a procedure report: each step, its plan and outcome.
pub fn render_procedure(
    out: &mut dyn Write,
    report: &ProcedureReport,
    format: OutputFormat,
) -> Result<()> {
    if format == OutputFormat::Json {
        for s in &report.steps {
            json_line(out, "step", s)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{}{}",
        report.procedure,
        if report.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        }
    )?;
    for s in &report.steps {
        let status = match &s.outcome {
            Outcome::Applied => "applied".to_string(),
            Outcome::Planned => "planned".to_string(),
            Outcome::Skipped { reason } => format!("skipped: {reason}"),
            Outcome::Refused { reason } => format!("REFUSED: {reason}"),
            Outcome::Failed { error } => format!("FAILED: {error}"),
        };
        writeln!(out, "- {} [{}] on {}: {status}", s.step, s.risk, s.target)?;
        if report.dry_run || !matches!(s.outcome, Outcome::Applied) {
            for a in &s.actions {
                writeln!(out, "    {a}")?;
            }
        }
        if let Some(o) = &s.output {
            writeln!(out, "    {}", o.summary)?;
        }
    }
    Ok(())
}

//! `tej host check`, and the rendering of a procedure report every mutating command shares.

use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result};
use std::io::Write;
use tej_core::{Config, Outcome, ProcedureReport, Report};
use tej_host::{ResourceOptions, ResourceThresholds, check_resources, resource_findings};

/// Disk, inodes, memory, swap and load as a report.
pub fn host_check(cfg: &Config) -> Result<Report> {
    let r =
        check_resources(&ResourceOptions::from_host(&cfg.host)).context("read host resources")?;
    let mut report = Report::new("host check");
    report.extend(resource_findings(&r, &ResourceThresholds::from(&cfg.host)));
    Ok(report)
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

/// `tej host`.
#[derive(Debug, clap::Subcommand)]
pub enum HostCmd {
    /// Disk, inodes, memory, swap and load with thresholds from tej.toml.
    Check,
}

/// Runs `tej host check`; the report's Nagios exit code.
pub fn dispatch(ctx: &crate::context::Context, out: &mut dyn Write, cmd: HostCmd) -> Result<i32> {
    let HostCmd::Check = cmd;
    let report = host_check(ctx.config()?)?;
    ctx.finish_report(out, &report)
}

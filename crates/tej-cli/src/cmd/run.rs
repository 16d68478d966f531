//! `tej health` and `tej run daily|performance|weekly|ENTRY [--if-due] [--scheduled]`:
//! tej-runbook's [`run_entry`] (what is due, the procedures, the notification of a failure
//! and of the first good run after one when `notify_url` is set), rendered like every other
//! check report.

use crate::args::{CheckArgs, RunArgs};
use anyhow::{Context, Result};
use std::io::Write;
use tej_runbook::{EntryRequest, EntryResult, run_entry};

/// `tej run`.
#[derive(Debug, clap::Args)]
pub struct RunCmd {
    /// `daily`, `performance`, `weekly` or a calendar entry id (`security-review`...).
    pub what: String,
    /// Run only if an occurrence is due now (what the emitted crontab and CronJobs call).
    #[arg(long)]
    pub if_due: bool,
    /// With --if-due: decide as if now were this instant (RFC 3339), e.g. to replay a timer.
    #[arg(long, requires = "if_due")]
    pub at: Option<String>,
    /// A run of the calendar (what the emitted crontab, timers and CronJobs pass): inside
    /// the entry's slot (its time plus its duration) its destructive steps are confirmed
    /// by the schedule and audited as such; outside it they are refused.
    #[arg(long)]
    pub scheduled: bool,
    #[command(flatten)]
    pub check: CheckArgs,
    /// For the procedures that change things: the weekly audit (VACUUM ANALYZE, log cleanup,
    /// image prune, backup retention), the nightly backup and its retention, deep maintenance,
    /// the quarterly rotation and drill (with --scheduled, inside the entry's slot the
    /// schedule confirms their destructive steps as --yes would).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `tej run`: the report's Nagios exit code, or 0 when not due.
pub fn dispatch(ctx: &crate::context::Context, out: &mut dyn Write, cmd: RunCmd) -> Result<i32> {
    ctx.config()?;
    let executor = ctx.executor(&cmd.run)?;
    let now = crate::context::instant(cmd.at.as_deref())?;
    let req = request(ctx, cmd.what, cmd.if_due, &cmd.check, cmd.scheduled)?;
    render(ctx, out, &req, now, Some(executor))
}

/// Runs `tej health` (= `tej run daily`, without an executor): the report's Nagios exit code.
pub fn health(ctx: &crate::context::Context, out: &mut dyn Write, check: CheckArgs) -> Result<i32> {
    let req = request(ctx, "daily".into(), false, &check, false)?;
    render(ctx, out, &req, jiff::Timestamp::now(), None)
}

/// The request of `what` (`daily`, `weekly`, an entry id) with the check options.
pub fn request(
    ctx: &crate::context::Context,
    what: String,
    if_due: bool,
    check: &CheckArgs,
    scheduled: bool,
) -> Result<EntryRequest> {
    Ok(EntryRequest {
        what,
        if_due,
        check_timeout: std::time::Duration::from_secs(check.timeout.max(1)),
        jobs: check.jobs,
        config_path: ctx.config_path(),
        tej_program: Some(std::env::current_exe().context("find the tej binary")?),
        scheduled,
    })
}

fn render(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    req: &EntryRequest,
    now: jiff::Timestamp,
    executor: Option<tej_core::Executor>,
) -> Result<i32> {
    let run = ctx.block_on(run_entry(ctx.config()?, req, now, executor))?;
    for w in &run.notify_warnings {
        eprintln!("warning: {w}");
    }
    match run.result? {
        EntryResult::Report(report) => ctx.finish_report(out, &report),
        EntryResult::NotDue(message) => {
            render_not_due(out, &message, ctx.format())?;
            Ok(0)
        }
    }
}

/// Prints the "not due" message the way the output format expects (a JSON line in JSON mode,
/// an `OK` status line for Nagios).
pub fn render_not_due(
    out: &mut dyn Write,
    message: &str,
    format: crate::output::OutputFormat,
) -> Result<()> {
    use crate::output::OutputFormat;
    match format {
        OutputFormat::Json => {
            crate::output::json_line(out, "not_due", &serde_json::json!({ "message": message }))?
        }
        OutputFormat::Nagios => writeln!(out, "OK - {message}")?,
        OutputFormat::Prometheus => {}
        OutputFormat::Text => writeln!(out, "{message}")?,
    }
    Ok(())
}

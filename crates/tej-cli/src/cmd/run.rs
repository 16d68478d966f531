//! `tej health` and `tej run daily|performance|weekly|ENTRY [--if-due] [--scheduled]`: the
//! runbook's procedures from tej-runbook, rendered like every other check report, and
//! notified like the daemon's runs (a failure, and the first good run after one) when
//! `notify_url` is set.

use crate::args::{CheckArgs, RunArgs};
use anyhow::{Context, Result, bail};
use std::io::Write;
use tej_core::{Calendar, Config, Report, SystemClock, TokioCommandRunner};
use tej_runbook::{
    CalendarRunner, DueWindow, ProcedureRunner, RunContext, RunHistory, RunOptions,
    WebhookNotifier, WebhookOptions, due_occurrence, implements, notify_run, resolve_entries,
    run_procedure,
};

/// `tej run`.
#[derive(Debug, clap::Args)]
pub struct RunCmd {
    /// `daily`, `performance`, `weekly` or a calendar entry id (`security-review`...).
    pub what: String,
    /// Run only if an occurrence is due now (what the emitted crontab and timers call).
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
    /// For the mutating monthly and quarterly procedures (deep maintenance, rotation, drill).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `tej run`: the report's Nagios exit code, or 0 when not due.
pub fn dispatch(ctx: &crate::context::Context, out: &mut dyn Write, cmd: RunCmd) -> Result<i32> {
    ctx.config()?;
    let executor = ctx.executor(&cmd.run)?;
    let now = crate::context::instant(cmd.at.as_deref())?;
    let req = RunRequest {
        what: cmd.what,
        if_due: cmd.if_due,
        check_timeout: std::time::Duration::from_secs(cmd.check.timeout.max(1)),
        jobs: cmd.check.jobs,
        config_path: ctx.config_path(),
        scheduled: cmd.scheduled,
    };
    render(ctx, out, &req, now, Some(executor))
}

/// Runs `tej health` (= `tej run daily`, without an executor): the report's Nagios exit code.
pub fn health(ctx: &crate::context::Context, out: &mut dyn Write, check: CheckArgs) -> Result<i32> {
    let req = RunRequest {
        what: "daily".into(),
        if_due: false,
        check_timeout: std::time::Duration::from_secs(check.timeout.max(1)),
        jobs: check.jobs,
        config_path: ctx.config_path(),
        scheduled: false,
    };
    render(ctx, out, &req, jiff::Timestamp::now(), None)
}

fn render(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    req: &RunRequest,
    now: jiff::Timestamp,
    executor: Option<tej_core::Executor>,
) -> Result<i32> {
    match ctx.block_on(run(ctx.config()?, req, now, executor))?? {
        RunResult::Report(report) => ctx.finish_report(out, &report),
        RunResult::NotDue(message) => {
            render_not_due(out, &message, ctx.format())?;
            Ok(0)
        }
    }
}

/// What `tej run` was asked to do, after parsing.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// `daily`, `performance`, `weekly` or a calendar entry id.
    pub what: String,
    /// Run only when an occurrence of the entry is due now (what cron and systemd call).
    pub if_due: bool,
    /// Time limit of one check.
    pub check_timeout: std::time::Duration,
    /// Checks at once.
    pub jobs: usize,
    /// The configuration file, passed to `tej wal fetch` by the PITR drill.
    pub config_path: Option<std::path::PathBuf>,
    /// The run is the calendar's own (`--scheduled`, what emitted jobs pass): inside the
    /// entry's slot its destructive steps are confirmed by the schedule, and audited so.
    pub scheduled: bool,
}

/// The outcome: a report to render, or nothing because the entry was not due.
#[derive(Debug)]
pub enum RunResult {
    /// The procedures ran; their findings, as one report.
    Report(Report),
    /// `--if-due` and nothing was due (the message says when it is next).
    NotDue(String),
}

/// Runs the request at `now` (see [`run_only`]), then, when `notify_url` is set, notifies
/// its report (or its error) exactly as the daemon does: a run that needs attention, and
/// the first good run after one. The last severity of each entry is kept under
/// `STATE_DIR/runs/` so separate processes (cron, systemd, Kubernetes) see the change.
pub async fn run(
    cfg: &Config,
    req: &RunRequest,
    now: jiff::Timestamp,
    executor: Option<tej_core::Executor>,
) -> Result<RunResult> {
    let started = jiff::Timestamp::now();
    let result = run_only(cfg, req, now, executor).await;
    let Some(url) = &cfg.notify_url else {
        return result;
    };
    let key = match &result {
        Ok(RunResult::NotDue(_)) => return result,
        _ => history_key(cfg, &req.what),
    };
    let secret = url.resolve().context("read notify_url")?;
    let notifier = WebhookNotifier::new(secret, WebhookOptions::default())
        .context("prepare the webhook notifier")?;
    let state_dir = cfg
        .state_dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("/var/lib/tej"));
    let history = RunHistory::new(state_dir.join("runs"));
    match result {
        Ok(RunResult::Report(mut report)) => {
            notify_run(
                &notifier,
                &history,
                &key,
                started,
                jiff::Timestamp::now(),
                None,
                &mut report,
            )
            .await;
            Ok(RunResult::Report(report))
        }
        Err(e) => {
            let mut report = Report::new(key.clone());
            report.push(tej_core::Finding::new(
                format!("runbook.{key}"),
                tej_core::Severity::Critical,
                format!("procedure failed: {e:#}"),
            ));
            notify_run(
                &notifier,
                &history,
                &key,
                started,
                jiff::Timestamp::now(),
                Some(format!("{e:#}")),
                &mut report,
            )
            .await;
            for f in report
                .findings
                .iter()
                .filter(|f| f.check.starts_with("notify."))
            {
                eprintln!("warning: {}", f.summary);
            }
            Err(e)
        }
        other => other,
    }
}

/// The name a run's last severity is kept under: the entry ids it runs (`daily-health`,
/// `performance-check-am+performance-check-pm`), else the request as written.
fn history_key(cfg: &Config, what: &str) -> String {
    let ids = Calendar::from_config(cfg).ok().and_then(|cal| {
        resolve_entries(&cal, what).ok().map(|es| {
            es.iter()
                .map(|e| e.id.clone())
                .collect::<Vec<_>>()
                .join("+")
        })
    });
    ids.unwrap_or_else(|| {
        what.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect::<String>()
            .trim_start_matches(['-', '.'])
            .to_string()
    })
}

/// Runs the request at `now` (the system clock's time outside tests). The check procedures
/// (daily, performance, weekly, security review, performance optimisation) run directly; the
/// others (nightly backups, certificate renewal, monthly and quarterly procedures) through
/// tej-runbook's [`CalendarRunner`] under `executor` (whose guard decides about their
/// destructive steps; a `--scheduled` run's are confirmed by the schedule inside the entry's
/// slot); without an executor they are refused.
pub async fn run_only(
    cfg: &Config,
    req: &RunRequest,
    now: jiff::Timestamp,
    executor: Option<tej_core::Executor>,
) -> Result<RunResult> {
    let cal = Calendar::from_config(cfg)?;
    if cal.is_disabled(&req.what) {
        bail!(
            "tej run {}: the entry is disabled in tej.toml ([calendar.{}] enabled = false)",
            req.what,
            req.what
        );
    }
    let entries = resolve_entries(&cal, &req.what)?;
    let entries: Vec<_> = if req.if_due {
        let due: Vec<_> = entries
            .into_iter()
            .filter(|e| due_occurrence(&cal, e, now, DueWindow::default()).is_some())
            .collect();
        if due.is_empty() {
            let next = resolve_entries(&cal, &req.what)?
                .iter()
                .filter_map(|e| cal.next_occurrence(&e.id, now).map(|z| (e.id.clone(), z)))
                .min_by_key(|(_, z)| z.timestamp());
            return Ok(RunResult::NotDue(match next {
                Some((id, z)) => format!(
                    "{} is not due now; next {id} at {}",
                    req.what,
                    z.strftime("%Y-%m-%d %H:%M %Z")
                ),
                None => format!("{} is not due now", req.what),
            }));
        }
        due
    } else {
        entries
    };
    if executor.is_none()
        && let Some(e) = entries.iter().find(|e| !implements(e.procedure))
    {
        bail!(
            "tej run {}: the {:?} procedure needs an executor (run it as `tej run {}`)",
            e.id,
            e.procedure,
            e.id
        );
    }
    let options = RunOptions {
        check_timeout: req.check_timeout,
        runner: tej_runbook::RunnerOptions {
            max_concurrent: req.jobs.max(1),
            ..tej_runbook::RunnerOptions::default()
        },
        ..RunOptions::default()
    };
    let ctx =
        std::sync::Arc::new(RunContext::from_config(cfg, options).context("prepare the run")?);
    let tej_program = std::env::current_exe().context("find the tej binary")?;
    let calendar_runner = executor.map(|ex| {
        let mut cr = CalendarRunner::new(
            ctx.clone(),
            ex,
            std::sync::Arc::new(TokioCommandRunner),
            std::sync::Arc::new(SystemClock),
        );
        // The quarterly drill is a PITR drill when the repository holds base backups.
        cr.tej_program = Some(tej_program);
        cr.config_path = req.config_path.clone();
        cr.scheduled = req.scheduled;
        cr
    });
    // Both performance entries run the same check: run it once.
    let mut kinds = Vec::new();
    for e in &entries {
        if !kinds
            .iter()
            .any(|k: &&tej_core::CalendarEntry| k.procedure == e.procedure)
        {
            kinds.push(*e);
        }
    }
    let mut report: Option<Report> = None;
    for entry in kinds {
        let kind = entry.procedure;
        let r = match (&calendar_runner, implements(kind)) {
            (Some(cr), _) if req.scheduled => ProcedureRunner::run(cr, entry)
                .await
                .with_context(|| format!("run {}", entry.id))?,
            (_, true) => run_procedure(kind, &ctx, &SystemClock).await?,
            (Some(cr), false) => cr
                .run_kind(kind)
                .await
                .with_context(|| format!("run {kind:?}"))?,
            (None, false) => bail!("the {kind:?} procedure needs an executor"),
        };
        match &mut report {
            None => report = Some(r),
            Some(all) => {
                all.title = format!("{} + {}", all.title, r.title);
                all.extend(r.findings);
            }
        }
    }
    Ok(RunResult::Report(
        report.unwrap_or_else(|| Report::new(req.what.clone())),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(what: &str, if_due: bool) -> RunRequest {
        RunRequest {
            what: what.into(),
            if_due,
            check_timeout: std::time::Duration::from_secs(5),
            jobs: 4,
            config_path: None,
            scheduled: false,
        }
    }

    #[tokio::test]
    async fn if_due_outside_the_window_runs_nothing() {
        let cfg = Config::default();
        // 2025-01-16 15:00 IST: no daily health check due (it is at 09:00).
        let now: jiff::Timestamp = "2025-01-16T09:30:00Z".parse().unwrap();
        match run(&cfg, &req("daily", true), now, None).await.unwrap() {
            RunResult::NotDue(m) => {
                assert!(
                    m.contains("next daily-health at 2025-01-17 09:00 IST"),
                    "{m}"
                )
            }
            RunResult::Report(r) => panic!("ran {r:?}"),
        }
    }

    #[tokio::test]
    async fn unknown_and_unimplemented_entries_are_errors() {
        let cfg = Config::default();
        let now = jiff::Timestamp::now();
        let e = run(&cfg, &req("fortnightly", false), now, None)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("daily-health"), "{e:#}");
        let e = run(&cfg, &req("secret-rotation", false), now, None)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("needs an executor"), "{e:#}");
    }
}

//! One run of calendar entries outside the daemon (`tej run ENTRY [--if-due] [--scheduled]`
//! from cron, systemd timers or Kubernetes CronJobs, and `tej health`): which entries are
//! due, the check procedures run directly and the mutating ones through a
//! [`CalendarRunner`] under the caller's executor, one report, and the notification of a
//! failure and of the first good run after one, as the daemon notifies, with the last
//! severity of each entry kept under `STATE_DIR/runs/` ([`RunHistory`]).

use crate::daemon::ProcedureRunner;
use crate::daemon::{RunHistory, notify_run};
use crate::error::{Result, RunbookError};
use crate::notify::{WebhookNotifier, WebhookOptions};
use crate::procedures::calendar_runner::CalendarRunner;
use crate::procedures::context::{RunContext, RunOptions};
use crate::procedures::dispatch::{implements, resolve_entries, run_procedure};
use crate::runner::RunnerOptions;
use crate::schedule::{DueWindow, due_occurrence};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tej_core::{
    Calendar, CalendarEntry, Config, Executor, Finding, Report, Severity, SystemClock,
    TokioCommandRunner,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct EntryRequest {
    /// `daily`, `performance`, `weekly` or a calendar entry id.
    pub what: String,
    /// Run only when an occurrence of the entry is due now (what cron and systemd call).
    pub if_due: bool,
    /// Time limit of one check.
    pub check_timeout: Duration,
    /// Checks at once.
    pub jobs: usize,
    /// The configuration file, passed to `tej wal fetch` by the PITR drill.
    pub config_path: Option<PathBuf>,
    /// The tej program the PITR drill's `restore_command` runs.
    pub tej_program: Option<PathBuf>,
    /// The run is the calendar's own (what emitted jobs pass): inside the entry's slot its
    /// destructive steps are confirmed by the schedule, and audited so.
    pub scheduled: bool,
}

/// The outcome: a report, or nothing because the entry was not due.
#[derive(Debug)]
pub enum EntryResult {
    /// The procedures ran; their findings, as one report.
    Report(Report),
    /// `if_due` and nothing was due (the message says when it is next).
    NotDue(String),
}

/// A run and what its notification could not do (a failed run's report is not returned,
/// only its error: these say what became of its notification).
#[derive(Debug)]
pub struct EntryRun {
    /// The report, or why the run failed.
    pub result: Result<EntryResult>,
    /// The notification problems of a failed run (`notify.*` findings' summaries).
    pub notify_warnings: Vec<String>,
}

fn refused(message: String) -> RunbookError {
    RunbookError::Refused(message)
}

/// Runs `req` at `now` (see [`run_entries`]), then, when `notify_url` is set, notifies its
/// report (or its error) as the daemon does: a run that needs attention, and the first good
/// run after one.
pub async fn run_entry(
    cfg: &Config,
    req: &EntryRequest,
    now: jiff::Timestamp,
    executor: Option<Executor>,
) -> EntryRun {
    let started = jiff::Timestamp::now();
    let result = run_entries(cfg, req, now, executor).await;
    let done = |result| EntryRun {
        result,
        notify_warnings: Vec::new(),
    };
    let Some(url) = &cfg.notify_url else {
        return done(result);
    };
    if let Ok(EntryResult::NotDue(_)) = &result {
        return done(result);
    }
    let key = history_key(cfg, &req.what);
    let notifier = match url
        .resolve()
        .map_err(|e| refused(format!("read notify_url: {e}")))
        .and_then(|secret| {
            WebhookNotifier::new(secret, WebhookOptions::default())
                .map(|n| n.with_redactor(crate::serve::config_redactor(cfg, None)))
                .map_err(|e| refused(format!("prepare the webhook notifier: {e}")))
        }) {
        Ok(n) => n,
        Err(e) => return done(Err(e)),
    };
    let state_dir = cfg
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/lib/tej"));
    let history = RunHistory::new(state_dir.join("runs"));
    let (mut report, error) = match result {
        Ok(EntryResult::Report(report)) => (report, None),
        Err(e) => {
            let mut report = Report::new(key.clone());
            report.push(Finding::new(
                format!("runbook.{key}"),
                Severity::Critical,
                format!("procedure failed: {e}"),
            ));
            (report, Some(e))
        }
        other => return done(other),
    };
    notify_run(
        &notifier,
        &history,
        &key,
        started,
        jiff::Timestamp::now(),
        error.as_ref().map(|e| e.to_string()),
        &mut report,
    )
    .await;
    match error {
        None => done(Ok(EntryResult::Report(report))),
        Some(e) => EntryRun {
            result: Err(e),
            notify_warnings: report
                .findings
                .iter()
                .filter(|f| f.check.starts_with("notify."))
                .map(|f| f.summary.clone())
                .collect(),
        },
    }
}

/// The name a run's last severity is kept under: the entry ids it runs (`daily-health`,
/// `performance-check-am+performance-check-pm`), else the request as written.
pub fn history_key(cfg: &Config, what: &str) -> String {
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

/// Runs `req` at `now` (the system clock's time outside tests). The check procedures
/// (daily, performance, weekly, security review, performance optimisation) run directly;
/// the others (nightly backups, certificate renewal, monthly and quarterly procedures)
/// through a [`CalendarRunner`] under `executor` (whose guard decides about their
/// destructive steps; a scheduled run's are confirmed by the schedule inside the entry's
/// slot); without an executor they are refused.
pub async fn run_entries(
    cfg: &Config,
    req: &EntryRequest,
    now: jiff::Timestamp,
    executor: Option<Executor>,
) -> Result<EntryResult> {
    let cal = Calendar::from_config(cfg).map_err(|e| refused(e.to_string()))?;
    if cal.is_disabled(&req.what) {
        return Err(refused(format!(
            "tej run {}: the entry is disabled in tej.toml ([calendar.{}] enabled = false)",
            req.what, req.what
        )));
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
            return Ok(EntryResult::NotDue(match next {
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
        return Err(refused(format!(
            "tej run {}: the {:?} procedure needs an executor (run it as `tej run {}`)",
            e.id, e.procedure, e.id
        )));
    }
    let options = RunOptions {
        check_timeout: req.check_timeout,
        runner: RunnerOptions {
            max_concurrent: req.jobs.max(1),
            ..RunnerOptions::default()
        },
        ..RunOptions::default()
    };
    let ctx = Arc::new(
        RunContext::from_config(cfg, options)
            .map_err(|e| refused(format!("prepare the run: {e}")))?,
    );
    let calendar_runner = executor.map(|ex| {
        let mut cr = CalendarRunner::new(
            ctx.clone(),
            ex,
            Arc::new(TokioCommandRunner),
            Arc::new(SystemClock),
        );
        // The quarterly drill is a PITR drill when the repository holds base backups.
        cr.tej_program = req.tej_program.clone();
        cr.config_path = req.config_path.clone();
        cr.scheduled = req.scheduled;
        cr
    });
    // Both performance entries run the same check: run it once.
    let mut kinds: Vec<&CalendarEntry> = Vec::new();
    for e in &entries {
        if !kinds.iter().any(|k| k.procedure == e.procedure) {
            kinds.push(*e);
        }
    }
    let mut report: Option<Report> = None;
    for entry in kinds {
        let kind = entry.procedure;
        let r = match (&calendar_runner, implements(kind)) {
            (Some(cr), _) if req.scheduled => ProcedureRunner::run(cr, entry)
                .await
                .map_err(|e| refused(format!("run {}: {e}", entry.id)))?,
            (_, true) => run_procedure(kind, &ctx, &SystemClock).await?,
            (Some(cr), false) => cr
                .run_kind(kind)
                .await
                .map_err(|e| refused(format!("run {kind:?}: {e}")))?,
            (None, false) => {
                return Err(refused(format!("the {kind:?} procedure needs an executor")));
            }
        };
        match &mut report {
            None => report = Some(r),
            Some(all) => {
                all.title = format!("{} + {}", all.title, r.title);
                all.extend(r.findings);
            }
        }
    }
    Ok(EntryResult::Report(
        report.unwrap_or_else(|| Report::new(req.what.clone())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(what: &str, if_due: bool) -> EntryRequest {
        EntryRequest {
            what: what.into(),
            if_due,
            check_timeout: Duration::from_secs(5),
            jobs: 4,
            config_path: None,
            tej_program: None,
            scheduled: false,
        }
    }

    #[tokio::test]
    async fn if_due_outside_the_window_runs_nothing() {
        let cfg = Config::default();
        // 2025-01-16 15:00 IST: no daily health check due (it is at 09:00).
        let now: jiff::Timestamp = "2025-01-16T09:30:00Z".parse().unwrap();
        match run_entry(&cfg, &req("daily", true), now, None)
            .await
            .result
            .unwrap()
        {
            EntryResult::NotDue(m) => {
                assert!(
                    m.contains("next daily-health at 2025-01-17 09:00 IST"),
                    "{m}"
                )
            }
            EntryResult::Report(r) => panic!("ran {r:?}"),
        }
    }

    #[tokio::test]
    async fn unknown_and_unimplemented_entries_are_errors() {
        let cfg = Config::default();
        let now = jiff::Timestamp::now();
        let e = run_entry(&cfg, &req("fortnightly", false), now, None)
            .await
            .result
            .unwrap_err();
        assert!(e.to_string().contains("daily-health"), "{e}");
        let e = run_entry(&cfg, &req("secret-rotation", false), now, None)
            .await
            .result
            .unwrap_err();
        assert!(e.to_string().contains("needs an executor"), "{e}");
    }
}

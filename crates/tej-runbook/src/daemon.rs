//! The daemon's building block: an in-process scheduler over the calendar.
//!
//! [`Daemon`] computes the next due entry from [`tej_core::Clock`], sleeps until
//! then (tokio time, so tests run on the paused clock with [`TokioClock`]), and
//! runs the entry's procedure through [`ProcedureRunner`]:
//!
//! - **No overlap in-process**: a run never starts while the previous run of the
//!   same procedure (by [`ProcedureKind`], so `performance-check-am` and `-pm`
//!   count as one) is still going; the occurrence is skipped and recorded.
//! - **No overlap across hosts**: every run first takes a [`RunLock`] named after
//!   the procedure (the PostgreSQL advisory-lock implementation is [`crate::PgAdvisoryRunLock`];
//!   [`InMemoryRunLock`] is here for one host and for tests). A lock held
//!   elsewhere skips the occurrence.
//! - **Missed runs**: the daemon remembers, per entry, the last occurrence it
//!   dispatched in a small JSON state file (written atomically). On start, an
//!   entry whose occurrences were missed while the daemon was down runs **once**
//!   (however many were missed), flagged as a catch-up; with
//!   [`DaemonOptions::catch_up`] off it is recorded as skipped instead. An entry
//!   the state file does not know yet (first start, new entry) starts from now:
//!   nothing runs retroactively. A run that had started is never repeated.
//!   Procedures that need the maintenance window still check it themselves
//!   (tej-core's `Guard`), so a catch-up outside the window plans but refuses
//!   destructive steps.
//! - **Notifications**: a report that needs attention (and a failed run, turned
//!   into a report with a critical finding) goes to the [`Notifier`], and so does the
//!   first good run after one ([`notify_transition`], a recovery); a failed
//!   notification is recorded in the state and the event stream, never dropped.
//!   `tej run` outside the daemon notifies the same way, remembering the last
//!   severity of each entry in a [`RunHistory`].

use crate::error::{Result, RunbookError};
use crate::notify::{Notifier, notify_transition};
use crate::schedule::{DueWindow, due_occurrence};
use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tej_core::{
    Calendar, CalendarEntry, Clock, Finding, ProcedureKind, Report, Severity, atomic_write,
};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

/// Runs the procedure of one calendar entry (composed by the lead from the domain crates).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait ProcedureRunner: Send + Sync {
    /// Runs `entry`'s procedure and returns its report.
    async fn run(&self, entry: &CalendarEntry) -> Result<Report>;
}

/// A lock shared by every host running tej, so one procedure runs on one host at a time.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait RunLock: Send + Sync {
    /// Takes the lock `key` if it is free; `false` when someone else holds it.
    async fn try_lock(&self, key: &str) -> Result<bool>;
    /// Releases the lock `key` taken by this holder.
    async fn unlock(&self, key: &str) -> Result<()>;
}

/// A [`RunLock`] in memory: enough for one host, and for tests (share it with `Arc`).
#[derive(Debug, Default)]
pub struct InMemoryRunLock {
    held: Mutex<HashSet<String>>,
}

impl InMemoryRunLock {
    /// An empty lock table.
    pub fn new() -> InMemoryRunLock {
        InMemoryRunLock::default()
    }
}

#[async_trait]
impl RunLock for InMemoryRunLock {
    async fn try_lock(&self, key: &str) -> Result<bool> {
        Ok(self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string()))
    }

    async fn unlock(&self, key: &str) -> Result<()> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        Ok(())
    }
}

/// The lock key of a procedure (`tej-runbook/weekly-audit`).
pub fn lock_key(procedure: ProcedureKind) -> String {
    let name = serde_json::to_value(procedure)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{procedure:?}"));
    format!("tej-runbook/{name}")
}

/// A clock that follows tokio's clock from `base`: the wall clock in production
/// would be [`tej_core::SystemClock`]; with a paused tokio runtime this one moves
/// exactly as far as the runtime's sleeps, so scheduling tests are exact.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock showing `base` now.
    pub fn starting_at(base: Timestamp) -> TokioClock {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let d = SignedDuration::try_from(self.start.elapsed()).unwrap_or(SignedDuration::MAX);
        self.base.checked_add(d).unwrap_or(Timestamp::MAX)
    }
}

/// What the daemon remembers about one entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntryState {
    /// The last occurrence dispatched (run or skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled: Option<Timestamp>,
    /// When the last run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_started: Option<Timestamp>,
    /// When the last run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_finished: Option<Timestamp>,
    /// Worst severity of the last run's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_severity: Option<Severity>,
    /// Error of the last run, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Why the last occurrence was skipped, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_skip: Option<SkipReason>,
    /// Error of the last failed notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notify_error: Option<String>,
}

/// The daemon's state file content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonState {
    /// Per calendar entry id.
    #[serde(default)]
    pub entries: BTreeMap<String, EntryState>,
}

/// The JSON state file, written atomically.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> StateFile {
        StateFile { path: path.into() }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state; a missing file is an empty state.
    pub fn load(&self) -> Result<DaemonState> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| RunbookError::Corrupt {
                path: self.path.clone(),
                line: e.line(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DaemonState::default()),
            Err(source) => Err(RunbookError::Io {
                action: "read daemon state",
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Writes the state atomically.
    pub fn save(&self, state: &DaemonState) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(state).map_err(|e| RunbookError::Corrupt {
            path: self.path.clone(),
            line: 0,
            message: e.to_string(),
        })?;
        text.push(b'\n');
        atomic_write(&self.path, &text, Some(0o600)).map_err(|source| RunbookError::Io {
            action: "write daemon state",
            path: self.path.clone(),
            source,
        })
    }
}

/// The last run of each entry outside the daemon (`tej run`, `tej health` from cron,
/// systemd or Kubernetes), one small JSON file per key in a directory (written
/// atomically), so separate processes notify failures and recoveries exactly as the
/// daemon does.
#[derive(Debug, Clone)]
pub struct RunHistory {
    dir: PathBuf,
}

impl RunHistory {
    /// A history kept in `dir` (created on first record).
    pub fn new(dir: impl Into<PathBuf>) -> RunHistory {
        RunHistory { dir: dir.into() }
    }

    fn file(&self, key: &str) -> Result<StateFile> {
        let ok = !key.is_empty()
            && !key.starts_with(['.', '-'])
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-+_".contains(c));
        if !ok {
            return Err(RunbookError::Unsupported(format!(
                "run history key {key:?} must be lower-case letters, digits and -+_"
            )));
        }
        Ok(StateFile::new(self.dir.join(format!("{key}.json"))))
    }

    /// What the last run of `key` left (default when it never ran).
    pub fn last(&self, key: &str) -> Result<EntryState> {
        Ok(self
            .file(key)?
            .load()?
            .entries
            .remove(key)
            .unwrap_or_default())
    }

    /// Records a run of `key`.
    pub fn record(&self, key: &str, state: EntryState) -> Result<()> {
        let f = self.file(key)?;
        std::fs::create_dir_all(&self.dir).map_err(|source| RunbookError::Io {
            action: "create the run history directory",
            path: self.dir.clone(),
            source,
        })?;
        let mut st = DaemonState::default();
        st.entries.insert(key.to_string(), state);
        f.save(&st)
    }
}

/// Notifies `report` of a run of `key` outside the daemon, as the daemon would (failure,
/// or recovery after a failed run), and records its severity in `history`. Problems with
/// the notification or the history are added to the report as warnings, never dropped.
pub async fn notify_run(
    notifier: &dyn Notifier,
    history: &RunHistory,
    key: &str,
    started: Timestamp,
    finished: Timestamp,
    error: Option<String>,
    report: &mut Report,
) {
    let previous = match history.last(key) {
        Ok(s) => s.last_severity,
        Err(e) => {
            report.push(Finding::new(
                "notify.state",
                Severity::Warning,
                format!("cannot read the last run of {key}: {e}"),
            ));
            None
        }
    };
    let notify_error = notify_transition(notifier, previous, report)
        .await
        .err()
        .map(|e| e.to_string());
    let state = EntryState {
        last_scheduled: None,
        last_started: Some(started),
        last_finished: Some(finished),
        last_severity: Some(report.severity()),
        last_error: error,
        last_skip: None,
        last_notify_error: notify_error,
    };
    if let Err(e) = history.record(key, state) {
        report.push(Finding::new(
            "notify.state",
            Severity::Warning,
            format!("cannot record the run of {key} (the next run cannot tell a recovery): {e}"),
        ));
    }
}

/// Why an occurrence did not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
pub enum SkipReason {
    /// The previous run of the same procedure is still going on this host.
    StillRunning,
    /// Another host holds the procedure's run lock.
    LockedElsewhere,
    /// The run lock could not be checked.
    LockError(String),
    /// Missed while the daemon was down, and catch-up is off.
    Missed,
}

/// What the daemon did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum DaemonEvent {
    /// A run started.
    Started {
        /// Entry id.
        entry: String,
        /// The occurrence it serves.
        scheduled_for: Timestamp,
        /// True when the occurrence was missed while the daemon was down.
        catch_up: bool,
    },
    /// A run finished with a report.
    Finished {
        /// Entry id.
        entry: String,
        /// Worst severity of the report.
        severity: Severity,
    },
    /// A run failed (the procedure returned an error).
    Failed {
        /// Entry id.
        entry: String,
        /// The error.
        error: String,
    },
    /// An occurrence did not run.
    Skipped {
        /// Entry id.
        entry: String,
        /// The occurrence.
        scheduled_for: Timestamp,
        /// Why.
        reason: SkipReason,
    },
    /// A report could not be delivered.
    NotifyFailed {
        /// Entry id.
        entry: String,
        /// The error.
        error: String,
    },
}

/// The result of one attempt to run an entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum RunOutcome {
    /// The procedure ran (a failed procedure gives a report with a critical finding).
    Completed {
        /// Its report (with a `notify.webhook` finding if notification failed).
        report: Report,
    },
    /// It did not run.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
}

/// How the daemon behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DaemonOptions {
    /// Run once on start an entry missed while down (default true).
    pub catch_up: bool,
    /// Longest single sleep; the daemon re-reads the clock at least this often,
    /// so wall-clock steps (NTP, suspend) never make it drift.
    pub max_sleep: Duration,
    /// An occurrence older than this when dispatched counts as a catch-up.
    pub late_after: SignedDuration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            catch_up: true,
            max_sleep: Duration::from_secs(60),
            late_after: SignedDuration::from_mins(10),
        }
    }
}

struct Inner {
    calendar: Calendar,
    runner: Arc<dyn ProcedureRunner>,
    lock: Arc<dyn RunLock>,
    notifier: Mutex<Option<Arc<dyn Notifier>>>,
    clock: Arc<dyn Clock>,
    state_file: StateFile,
    state: Mutex<DaemonState>,
    running: Mutex<HashSet<ProcedureKind>>,
    events: Mutex<Option<UnboundedSender<DaemonEvent>>>,
    opts: DaemonOptions,
}

/// The in-process scheduler.
pub struct Daemon {
    inner: Arc<Inner>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("state_file", &self.inner.state_file)
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

/// Removes the procedure from the running set when the run ends, however it ends.
struct RunningGuard<'a> {
    running: &'a Mutex<HashSet<ProcedureKind>>,
    procedure: ProcedureKind,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.procedure);
    }
}

impl Inner {
    fn emit(&self, e: DaemonEvent) {
        if let Some(tx) = &*self.events.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = tx.send(e);
        }
    }

    /// Changes the state and saves it; a failed save is logged (the in-memory
    /// state stays right, and the next save retries).
    fn update(&self, id: &str, f: impl FnOnce(&mut EntryState)) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(st.entries.entry(id.to_string()).or_default());
        if let Err(e) = self.state_file.save(&st) {
            tracing::error!(error = %e, "saving daemon state failed");
        }
    }

    async fn execute(
        &self,
        entry: &CalendarEntry,
        scheduled_for: Timestamp,
        catch_up: bool,
    ) -> RunOutcome {
        let id = entry.id.as_str();
        let skip = |reason: SkipReason| {
            self.emit(DaemonEvent::Skipped {
                entry: id.to_string(),
                scheduled_for,
                reason: reason.clone(),
            });
            self.update(id, |s| s.last_skip = Some(reason.clone()));
            RunOutcome::Skipped { reason }
        };
        let inserted = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entry.procedure);
        if !inserted {
            return skip(SkipReason::StillRunning);
        }
        let _guard = RunningGuard {
            running: &self.running,
            procedure: entry.procedure,
        };
        let key = lock_key(entry.procedure);
        match self.lock.try_lock(&key).await {
            Ok(true) => {}
            Ok(false) => return skip(SkipReason::LockedElsewhere),
            Err(e) => return skip(SkipReason::LockError(e.to_string())),
        }
        self.emit(DaemonEvent::Started {
            entry: id.to_string(),
            scheduled_for,
            catch_up,
        });
        let started = self.clock.now();
        let previous = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .get(id)
            .and_then(|s| s.last_severity);
        self.update(id, |s| {
            s.last_started = Some(started);
            s.last_skip = None;
        });
        let result = self.runner.run(entry).await;
        if let Err(e) = self.lock.unlock(&key).await {
            tracing::error!(error = %e, key, "releasing run lock failed");
        }
        let (mut report, error) = match result {
            Ok(r) => (r, None),
            Err(e) => {
                let mut r = Report::new(id);
                r.push(Finding::new(
                    format!("runbook.{id}"),
                    Severity::Critical,
                    format!("procedure failed: {e}"),
                ));
                (r, Some(e.to_string()))
            }
        };
        match &error {
            Some(e) => self.emit(DaemonEvent::Failed {
                entry: id.to_string(),
                error: e.clone(),
            }),
            None => self.emit(DaemonEvent::Finished {
                entry: id.to_string(),
                severity: report.severity(),
            }),
        }
        let mut notify_error = None;
        let notifier = self
            .notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(n) = notifier
            && let Err(e) = notify_transition(n.as_ref(), previous, &mut report).await
        {
            self.emit(DaemonEvent::NotifyFailed {
                entry: id.to_string(),
                error: e.to_string(),
            });
            notify_error = Some(e.to_string());
        }
        let finished = self.clock.now();
        let severity = report.severity();
        self.update(id, |s| {
            s.last_finished = Some(finished);
            s.last_severity = Some(severity);
            s.last_error = error;
            s.last_notify_error = notify_error;
        });
        RunOutcome::Completed { report }
    }
}

impl Daemon {
    /// A daemon over `calendar`, loading its state from `state_path`.
    pub fn new(
        calendar: Calendar,
        runner: Arc<dyn ProcedureRunner>,
        lock: Arc<dyn RunLock>,
        clock: Arc<dyn Clock>,
        state_path: impl Into<PathBuf>,
        opts: DaemonOptions,
    ) -> Result<Daemon> {
        let state_file = StateFile::new(state_path);
        let state = state_file.load()?;
        Ok(Daemon {
            inner: Arc::new(Inner {
                calendar,
                runner,
                lock,
                notifier: Mutex::new(None),
                clock,
                state_file,
                state: Mutex::new(state),
                running: Mutex::new(HashSet::new()),
                events: Mutex::new(None),
                opts,
            }),
            tasks: tokio::sync::Mutex::new(JoinSet::new()),
        })
    }

    /// Sends reports that need attention to `notifier`.
    pub fn with_notifier(self, notifier: Arc<dyn Notifier>) -> Daemon {
        *self
            .inner
            .notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(notifier);
        self
    }

    /// Reports what the daemon does on `events`.
    pub fn with_events(self, events: UnboundedSender<DaemonEvent>) -> Daemon {
        *self.inner.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(events);
        self
    }

    /// A copy of the current state.
    pub fn state(&self) -> DaemonState {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Entries the state does not know yet start from `now` (nothing runs retroactively).
    fn prime(&self, now: Timestamp) {
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = false;
        for e in &self.inner.calendar.entries {
            let s = st.entries.entry(e.id.clone()).or_default();
            if s.last_scheduled.is_none() {
                s.last_scheduled = Some(now);
                changed = true;
            }
        }
        if changed && let Err(e) = self.inner.state_file.save(&st) {
            tracing::error!(error = %e, "saving daemon state failed");
        }
    }

    /// The latest occurrence in `(after, now]`, if any.
    fn latest_due(
        &self,
        entry: &CalendarEntry,
        after: Timestamp,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let mut latest = None;
        let mut t = after;
        // Bounded: a year of a daily entry is 366 steps.
        for _ in 0..10_000 {
            let next = self
                .inner
                .calendar
                .next_of(&entry.recurrence, t)
                .timestamp();
            if next > now {
                break;
            }
            latest = Some(next);
            t = next;
        }
        latest
    }

    /// Dispatches every due entry (runs start in the background) and returns how
    /// long to sleep before the next look.
    pub async fn tick(&self) -> Duration {
        let now = self.inner.clock.now();
        self.prime(now);
        let mut soonest: Option<Timestamp> = None;
        for entry in &self.inner.calendar.entries {
            let last = {
                let st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
                st.entries
                    .get(&entry.id)
                    .and_then(|s| s.last_scheduled)
                    .unwrap_or(now)
            };
            let mut last = last;
            if let Some(due) = self.latest_due(entry, last, now) {
                self.inner
                    .update(&entry.id, |s| s.last_scheduled = Some(due));
                last = due;
                let catch_up = now.duration_since(due) > self.inner.opts.late_after;
                if catch_up && !self.inner.opts.catch_up {
                    self.inner.emit(DaemonEvent::Skipped {
                        entry: entry.id.clone(),
                        scheduled_for: due,
                        reason: SkipReason::Missed,
                    });
                    self.inner
                        .update(&entry.id, |s| s.last_skip = Some(SkipReason::Missed));
                } else {
                    let inner = self.inner.clone();
                    let entry = entry.clone();
                    self.tasks.lock().await.spawn(async move {
                        inner.execute(&entry, due, catch_up).await;
                    });
                }
            }
            let next = self
                .inner
                .calendar
                .next_of(&entry.recurrence, last)
                .timestamp();
            soonest = Some(soonest.map_or(next, |s| s.min(next)));
        }
        // Reap finished runs so the set does not grow.
        {
            let mut tasks = self.tasks.lock().await;
            while let Some(r) = tasks.try_join_next() {
                if let Err(e) = r
                    && e.is_panic()
                {
                    tracing::error!("a scheduled run panicked");
                }
            }
        }
        let until = soonest
            .map(|s| s.duration_since(now))
            .unwrap_or(SignedDuration::from_secs(3600));
        let until = Duration::try_from(until).unwrap_or(Duration::ZERO);
        until.min(self.inner.opts.max_sleep)
    }

    /// Runs the schedule until `shutdown` completes, then waits for running procedures.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let sleep = self.tick().await;
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = &mut shutdown => break,
            }
        }
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
    }

    /// Runs one entry now (for `tej run <entry-id>`), with the same overlap guard,
    /// run lock, state and notification as scheduled runs.
    pub async fn run_entry(&self, entry_id: &str) -> Result<RunOutcome> {
        let entry = self
            .inner
            .calendar
            .entry(entry_id)
            .cloned()
            .ok_or_else(|| RunbookError::UnknownEntry(entry_id.to_string()))?;
        let now = self.inner.clock.now();
        Ok(self.inner.execute(&entry, now, false).await)
    }

    /// Runs `entry_id` if it is due now (for `tej run <entry-id> --if-due` from
    /// cron): `Ok(None)` when it is not, without touching the state. When due, the
    /// occurrence is recorded as dispatched, so a second start for the same
    /// occurrence (cron firing twice, a retry) does nothing.
    pub async fn run_if_due(
        &self,
        entry_id: &str,
        window: DueWindow,
    ) -> Result<Option<RunOutcome>> {
        let entry = self
            .inner
            .calendar
            .entry(entry_id)
            .cloned()
            .ok_or_else(|| RunbookError::UnknownEntry(entry_id.to_string()))?;
        let now = self.inner.clock.now();
        let Some(occ) = due_occurrence(&self.inner.calendar, &entry, now, window) else {
            return Ok(None);
        };
        let occ = occ.timestamp();
        let already = {
            let st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            st.entries
                .get(entry_id)
                .and_then(|s| s.last_scheduled)
                .is_some_and(|last| last >= occ)
        };
        if already {
            return Ok(None);
        }
        self.inner
            .update(entry_id, |s| s.last_scheduled = Some(occ));
        Ok(Some(self.inner.execute(&entry, occ, false).await))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Records (entry, start time) and takes `dur` (per entry id) of tokio time.
    struct Recorder {
        clock: Arc<dyn Clock>,
        runs: Mutex<Vec<(String, Timestamp)>>,
        dur: fn(&str) -> Duration,
        fail: fn(&str) -> bool,
    }

    #[async_trait]
    impl ProcedureRunner for Recorder {
        async fn run(&self, entry: &CalendarEntry) -> Result<Report> {
            self.runs
                .lock()
                .unwrap()
                .push((entry.id.clone(), self.clock.now()));
            tokio::time::sleep((self.dur)(&entry.id)).await;
            if (self.fail)(&entry.id) {
                return Err(RunbookError::Procedure {
                    entry: entry.id.clone(),
                    message: "pg_dump exited 1".into(),
                });
            }
            let mut r = Report::new(entry.id.clone());
            r.push(Finding::ok("x", "fine"));
            Ok(r)
        }
    }

    fn recorder(clock: Arc<dyn Clock>, dur: fn(&str) -> Duration) -> Arc<Recorder> {
        Arc::new(Recorder {
            clock,
            runs: Mutex::new(Vec::new()),
            dur,
            fail: |_| false,
        })
    }

    fn opts() -> DaemonOptions {
        DaemonOptions {
            max_sleep: Duration::from_secs(600),
            ..DaemonOptions::default()
        }
    }

    fn expected(cal: &Calendar, from: Timestamp, until: Timestamp) -> Vec<(String, Timestamp)> {
        let mut v = Vec::new();
        for e in &cal.entries {
            let mut t = from;
            loop {
                let n = cal.next_of(&e.recurrence, t).timestamp();
                if n > until {
                    break;
                }
                v.push((e.id.clone(), n));
                t = n;
            }
        }
        v.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        v
    }

    fn sorted(mut v: Vec<(String, Timestamp)>) -> Vec<(String, Timestamp)> {
        v.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        v
    }

    async fn drain(rx: &mut mpsc::UnboundedReceiver<DaemonEvent>) -> Vec<DaemonEvent> {
        let mut v = Vec::new();
        while let Ok(e) = rx.try_recv() {
            v.push(e);
        }
        v
    }

    #[tokio::test(start_paused = true)]
    async fn runs_every_entry_at_its_calendar_time() {
        let dir = tempfile::tempdir().unwrap();
        let cal = Calendar::runbook();
        // Friday 2025-01-31 00:00 IST: covers a month end, the first Sunday (Feb 2)
        // and the second Sunday (Feb 9) and the last Sunday of February (Feb 23).
        let start = ts("2025-01-30T18:30:00Z");
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
        let rec = recorder(clock.clone(), |_| Duration::from_secs(60));
        let d = Daemon::new(
            cal.clone(),
            rec.clone(),
            Arc::new(InMemoryRunLock::new()),
            clock.clone(),
            dir.path().join("state.json"),
            opts(),
        )
        .unwrap();
        // Stops a minute before 00:00 IST, so no occurrence (certificate renewal is at
        // midnight) races the shutdown.
        let span = Duration::from_secs(25 * 86_400 - 60);
        d.run(tokio::time::sleep(span)).await;
        let until = start
            .checked_add(SignedDuration::try_from(span).unwrap())
            .unwrap();
        let want = expected(&cal, start, until);
        assert!(want.iter().any(|w| w.0 == "security-audit"));
        assert!(want.iter().any(|w| w.0 == "capacity-planning"));
        assert_eq!(sorted(rec.runs.lock().unwrap().clone()), want);
        // The state file remembers the last occurrence of every entry.
        let st = StateFile::new(dir.path().join("state.json"))
            .load()
            .unwrap();
        assert_eq!(
            st.entries["weekly-audit"].last_scheduled,
            Some(ts("2025-02-22T20:30:00Z"))
        );
        assert_eq!(st.entries["weekly-audit"].last_severity, Some(Severity::Ok));
    }

    #[tokio::test(start_paused = true)]
    async fn same_procedure_never_overlaps() {
        let dir = tempfile::tempdir().unwrap();
        // 2025-01-16 10:00 IST; the 11:00 check takes 7 h, so the 17:00 one is skipped.
        let start = ts("2025-01-16T04:30:00Z");
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
        let rec = recorder(clock.clone(), |id| {
            if id.starts_with("performance-check") {
                Duration::from_secs(7 * 3600)
            } else {
                Duration::from_secs(1)
            }
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let d = Daemon::new(
            Calendar::runbook(),
            rec.clone(),
            Arc::new(InMemoryRunLock::new()),
            clock,
            dir.path().join("s.json"),
            opts(),
        )
        .unwrap()
        .with_events(tx);
        d.run(tokio::time::sleep(Duration::from_secs(10 * 3600)))
            .await;
        let runs: Vec<String> = rec
            .runs
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.0.clone())
            .filter(|id| id.starts_with("performance-check"))
            .collect();
        assert_eq!(runs, vec!["performance-check-am"]);
        let ev = drain(&mut rx).await;
        assert!(ev.contains(&DaemonEvent::Skipped {
            entry: "performance-check-pm".into(),
            scheduled_for: ts("2025-01-16T11:30:00Z"),
            reason: SkipReason::StillRunning,
        }));
        // Shutdown waited for the long run to finish.
        assert!(ev.contains(&DaemonEvent::Finished {
            entry: "performance-check-am".into(),
            severity: Severity::Ok
        }));
        assert_eq!(
            d.state().entries["performance-check-pm"].last_skip,
            Some(SkipReason::StillRunning)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn two_hosts_sharing_a_lock_run_each_occurrence_once() {
        let dir = tempfile::tempdir().unwrap();
        let start = ts("2025-01-16T00:00:00Z");
        let lock = Arc::new(InMemoryRunLock::new());
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mk = |name: &str, rec: Arc<Recorder>| {
            Daemon::new(
                Calendar::runbook(),
                rec,
                lock.clone(),
                clock.clone(),
                dir.path().join(name),
                opts(),
            )
            .unwrap()
            .with_events(tx.clone())
        };
        let ra = recorder(clock.clone(), |_| Duration::from_secs(120));
        let rb = recorder(clock.clone(), |_| Duration::from_secs(120));
        let (a, b) = (mk("a.json", ra.clone()), mk("b.json", rb.clone()));
        let span = Duration::from_secs(4 * 86_400);
        tokio::join!(
            a.run(tokio::time::sleep(span)),
            b.run(tokio::time::sleep(span))
        );
        let mut all = ra.runs.lock().unwrap().clone();
        all.extend(rb.runs.lock().unwrap().clone());
        let until = start
            .checked_add(SignedDuration::try_from(span).unwrap())
            .unwrap();
        let want = expected(&Calendar::runbook(), start, until);
        assert_eq!(sorted(all), want);
        let locked = drain(&mut rx)
            .await
            .into_iter()
            .filter(|e| {
                matches!(
                    e,
                    DaemonEvent::Skipped {
                        reason: SkipReason::LockedElsewhere,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(locked, want.len());
    }

    #[tokio::test(start_paused = true)]
    async fn missed_runs_after_downtime_run_once_on_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // Last dispatched: weekly audit three Sundays ago, daily health five days ago.
        let mut st = DaemonState::default();
        st.entries.insert(
            "weekly-audit".into(),
            EntryState {
                last_scheduled: Some(ts("2024-12-28T20:30:00Z")),
                ..Default::default()
            },
        );
        st.entries.insert(
            "daily-health".into(),
            EntryState {
                last_scheduled: Some(ts("2025-01-11T03:30:00Z")),
                ..Default::default()
            },
        );
        StateFile::new(&path).save(&st).unwrap();
        // Thursday 2025-01-16 12:00 IST.
        let start = ts("2025-01-16T06:30:00Z");
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
        let rec = recorder(clock.clone(), |_| Duration::from_secs(1));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let d = Daemon::new(
            Calendar::runbook(),
            rec.clone(),
            Arc::new(InMemoryRunLock::new()),
            clock.clone(),
            &path,
            opts(),
        )
        .unwrap()
        .with_events(tx);
        // One hour: no regular occurrence falls in it (next: 17:00 IST).
        d.run(tokio::time::sleep(Duration::from_secs(3600))).await;
        let runs = sorted(rec.runs.lock().unwrap().clone());
        assert_eq!(
            runs,
            vec![
                ("daily-health".to_string(), start),
                ("weekly-audit".to_string(), start)
            ]
        );
        let ev = drain(&mut rx).await;
        assert!(ev.contains(&DaemonEvent::Started {
            entry: "weekly-audit".into(),
            scheduled_for: ts("2025-01-11T20:30:00Z"),
            catch_up: true
        }));
        assert!(ev.contains(&DaemonEvent::Started {
            entry: "daily-health".into(),
            scheduled_for: ts("2025-01-16T03:30:00Z"),
            catch_up: true
        }));

        // Same downtime with catch-up off: recorded as missed, nothing runs.
        StateFile::new(&path).save(&st).unwrap();
        let rec = recorder(clock.clone(), |_| Duration::from_secs(1));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let d = Daemon::new(
            Calendar::runbook(),
            rec.clone(),
            Arc::new(InMemoryRunLock::new()),
            clock,
            &path,
            DaemonOptions {
                catch_up: false,
                ..opts()
            },
        )
        .unwrap()
        .with_events(tx);
        d.run(tokio::time::sleep(Duration::from_secs(3600))).await;
        assert!(rec.runs.lock().unwrap().is_empty());
        let missed = drain(&mut rx)
            .await
            .into_iter()
            .filter(|e| {
                matches!(
                    e,
                    DaemonEvent::Skipped {
                        reason: SkipReason::Missed,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(missed, 2);
        assert_eq!(
            StateFile::new(&path).load().unwrap().entries["weekly-audit"].last_skip,
            Some(SkipReason::Missed)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failure_is_notified_and_failed_notification_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(ts("2025-01-16T00:00:00Z")));
        let rec = Arc::new(Recorder {
            clock: clock.clone(),
            runs: Mutex::new(Vec::new()),
            dur: |_| Duration::from_secs(1),
            fail: |_| true,
        });
        let mut n = crate::notify::MockNotifier::new();
        n.expect_notify()
            .withf(|r: &Report| {
                r.severity() == Severity::Critical
                    && r.findings[0].summary.contains("pg_dump exited 1")
            })
            .times(1)
            .returning(|_| Err(RunbookError::NotifyRejected { status: 500 }));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let d = Daemon::new(
            Calendar::runbook(),
            rec,
            Arc::new(InMemoryRunLock::new()),
            clock,
            &path,
            opts(),
        )
        .unwrap()
        .with_notifier(Arc::new(n))
        .with_events(tx);
        let out = d.run_entry("daily-health").await.unwrap();
        let RunOutcome::Completed { report } = out else {
            panic!("{out:?}")
        };
        assert_eq!(report.findings.last().unwrap().check, "notify.webhook");
        let ev = drain(&mut rx).await;
        assert!(matches!(&ev[1], DaemonEvent::Failed { entry, .. } if entry == "daily-health"));
        assert!(matches!(&ev[2], DaemonEvent::NotifyFailed { error, .. } if error.contains("500")));
        let st = StateFile::new(&path).load().unwrap();
        let s = &st.entries["daily-health"];
        assert_eq!(s.last_severity, Some(Severity::Critical));
        assert!(s.last_error.as_deref().unwrap().contains("pg_dump"));
        assert!(s.last_notify_error.as_deref().unwrap().contains("500"));
        assert!(matches!(
            d.run_entry("no-such-entry").await,
            Err(RunbookError::UnknownEntry(_))
        ));
    }

    #[tokio::test]
    async fn the_first_good_run_after_a_bad_one_is_notified_as_a_recovery() {
        use crate::notify::{MockNotifier, NotifyOutcome};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut runner = MockProcedureRunner::new();
        let mut seq = mockall::Sequence::new();
        runner
            .expect_run()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|e| {
                let mut r = Report::new(e.id.clone());
                r.push(Finding::new("db.connect", Severity::Critical, "down"));
                Ok(r)
            });
        runner
            .expect_run()
            .times(2)
            .in_sequence(&mut seq)
            .returning(|e| {
                let mut r = Report::new(e.id.clone());
                r.push(Finding::ok("db.connect", "up"));
                Ok(r)
            });
        let mut n = MockNotifier::new();
        n.expect_notify().times(3).returning(|r| {
            Ok(if r.severity() == Severity::Ok {
                NotifyOutcome::BelowThreshold
            } else {
                NotifyOutcome::Sent { attempts: 1 }
            })
        });
        n.expect_notify_recovery()
            .withf(|r: &Report, p: &Severity| {
                *p == Severity::Critical && r.severity() == Severity::Ok
            })
            .times(1)
            .returning(|_, _| Ok(NotifyOutcome::Sent { attempts: 1 }));
        n.expect_notify_recovery()
            .withf(|_, p: &Severity| *p == Severity::Ok)
            .times(1)
            .returning(|_, _| Ok(NotifyOutcome::BelowThreshold));
        let d = Daemon::new(
            Calendar::runbook(),
            Arc::new(runner),
            Arc::new(InMemoryRunLock::new()),
            Arc::new(tej_core::FakeClock::new(ts("2025-01-16T06:30:00Z"))),
            &path,
            opts(),
        )
        .unwrap()
        .with_notifier(Arc::new(n));
        for _ in 0..3 {
            d.run_entry("nightly-backup").await.unwrap();
        }
        assert_eq!(
            d.state().entries["nightly-backup"].last_severity,
            Some(Severity::Ok)
        );
    }

    #[test]
    fn run_history_keeps_the_last_run_per_key_across_instances() {
        let dir = tempfile::tempdir().unwrap();
        let h = RunHistory::new(dir.path().join("runs"));
        assert_eq!(h.last("nightly-backup").unwrap(), EntryState::default());
        h.record(
            "nightly-backup",
            EntryState {
                last_severity: Some(Severity::Critical),
                ..Default::default()
            },
        )
        .unwrap();
        let again = RunHistory::new(dir.path().join("runs"));
        assert_eq!(
            again.last("nightly-backup").unwrap().last_severity,
            Some(Severity::Critical)
        );
        assert_eq!(again.last("daily-health").unwrap().last_severity, None);
        for bad in ["../x", "", "A", "a/b", ".x"] {
            assert!(h.last(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lock_errors_skip_and_lock_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(ts("2025-01-16T00:00:00Z")));
        let mut lock = MockRunLock::new();
        let mut seq = mockall::Sequence::new();
        lock.expect_try_lock()
            .withf(|k| k == "tej-runbook/daily-health")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Err(RunbookError::Lock("connection refused".into())));
        lock.expect_try_lock()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(true));
        lock.expect_unlock()
            .withf(|k| k == "tej-runbook/daily-health")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        let rec = recorder(clock.clone(), |_| Duration::from_secs(1));
        let d = Daemon::new(
            Calendar::runbook(),
            rec.clone(),
            Arc::new(lock),
            clock,
            dir.path().join("s.json"),
            opts(),
        )
        .unwrap();
        let out = d.run_entry("daily-health").await.unwrap();
        assert!(
            matches!(out, RunOutcome::Skipped { reason: SkipReason::LockError(ref m) } if m.contains("refused"))
        );
        assert!(rec.runs.lock().unwrap().is_empty());
        assert!(matches!(
            d.run_entry("daily-health").await.unwrap(),
            RunOutcome::Completed { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn run_if_due_runs_each_occurrence_once() {
        let dir = tempfile::tempdir().unwrap();
        // Sunday 2025-01-12 02:00:03 IST: cron just started the second-Sunday job.
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(ts("2025-01-11T20:30:03Z")));
        let rec = recorder(clock.clone(), |_| Duration::from_secs(1));
        let d = Daemon::new(
            Calendar::runbook(),
            rec.clone(),
            Arc::new(InMemoryRunLock::new()),
            clock,
            dir.path().join("s.json"),
            opts(),
        )
        .unwrap();
        let w = DueWindow::default();
        // The first Sunday's 10:00 audit is not due at 02:00.
        assert_eq!(d.run_if_due("security-audit", w).await.unwrap(), None);
        let out = d.run_if_due("database-deep-maintenance", w).await.unwrap();
        assert!(matches!(out, Some(RunOutcome::Completed { .. })), "{out:?}");
        // Cron firing twice for the same occurrence: nothing the second time.
        assert_eq!(
            d.run_if_due("database-deep-maintenance", w).await.unwrap(),
            None
        );
        assert_eq!(rec.runs.lock().unwrap().len(), 1);
        assert_eq!(
            d.state().entries["database-deep-maintenance"].last_scheduled,
            Some(ts("2025-01-11T20:30:00Z"))
        );
        assert!(d.run_if_due("nope", w).await.is_err());
    }

    #[tokio::test]
    async fn in_memory_lock_and_state_file_errors() {
        let l = InMemoryRunLock::new();
        assert!(l.try_lock("k").await.unwrap());
        assert!(!l.try_lock("k").await.unwrap());
        l.unlock("k").await.unwrap();
        assert!(l.try_lock("k").await.unwrap());
        assert_eq!(
            lock_key(ProcedureKind::WeeklyAudit),
            "tej-runbook/weekly-audit"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        std::fs::write(&p, "{\"entries\": [").unwrap();
        assert!(matches!(
            StateFile::new(&p).load(),
            Err(RunbookError::Corrupt { .. })
        ));
        assert_eq!(
            StateFile::new(dir.path().join("missing.json"))
                .load()
                .unwrap(),
            DaemonState::default()
        );
    }
}

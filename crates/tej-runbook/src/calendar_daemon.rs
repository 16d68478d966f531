//! The in-process calendar (`tej daemon`) put together from `tej.toml`: a [`Daemon`] over
//! a [`CalendarRunner`] that confirms each entry's destructive steps inside its slot, runs
//! serialised across hosts by PostgreSQL advisory locks when a database is configured
//! ([`PgAdvisoryRunLock`]), else only within this process ([`InMemoryRunLock`]), and the
//! webhook of `notify_url`.

use crate::daemon::{Daemon, DaemonOptions, InMemoryRunLock, RunLock};
use crate::error::{Result, RunbookError};
use crate::notify::{WebhookNotifier, WebhookOptions};
use crate::pg_lock::PgAdvisoryRunLock;
use crate::procedures::calendar_runner::CalendarRunner;
use crate::procedures::context::{RunContext, RunOptions};
use std::path::PathBuf;
use std::sync::Arc;
use tej_core::{Calendar, Config, Executor, SystemClock, TokioCommandRunner};

/// How the daemon runs.
#[derive(Debug, Clone, Default)]
pub struct CalendarDaemonOptions {
    /// The state file (default: `STATE_DIR/daemon-state.json`).
    pub state_file: Option<PathBuf>,
    /// Run, once, the entries missed while the daemon was down.
    pub catch_up: bool,
    /// The configuration file, passed to `tej wal fetch` by the PITR drill.
    pub config_path: Option<PathBuf>,
    /// The tej program the PITR drill's `restore_command` runs.
    pub tej_program: Option<PathBuf>,
}

/// A daemon ready to run, and what it runs with.
pub struct CalendarDaemon {
    /// The daemon.
    pub daemon: Daemon,
    /// The calendar it runs.
    pub calendar: Calendar,
    /// Its state file (its directory exists).
    pub state_file: PathBuf,
    /// What keeps two runs of one entry apart (`postgres advisory locks on database "app"`).
    pub lock: String,
}

impl std::fmt::Debug for CalendarDaemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CalendarDaemon")
            .field("state_file", &self.state_file)
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

/// The daemon of `cfg`'s calendar, its mutating procedures run under `executor`.
pub fn calendar_daemon(
    cfg: &Config,
    executor: Executor,
    opts: CalendarDaemonOptions,
) -> Result<CalendarDaemon> {
    let calendar = Calendar::from_config(cfg).map_err(|e| RunbookError::Refused(e.to_string()))?;
    let ctx = RunContext::from_config(cfg, RunOptions::default())
        .map_err(|e| RunbookError::Refused(format!("read tej.toml: {e}")))?;
    let mut runner = CalendarRunner::new(
        Arc::new(ctx),
        executor,
        Arc::new(TokioCommandRunner),
        Arc::new(SystemClock),
    );
    // The quarterly drill is a PITR drill when the repository holds base backups.
    runner.tej_program = opts.tej_program;
    runner.config_path = opts.config_path;
    // The daemon is the scheduler: each entry's destructive steps are confirmed by the
    // schedule inside the entry's slot, and audited as such.
    runner.scheduled = true;
    let state_file = opts
        .state_file
        .unwrap_or_else(|| runner.state_dir.join("daemon-state.json"));
    if let Some(dir) = state_file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| RunbookError::Io {
            action: "create the state directory",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let (lock, lock_name): (Arc<dyn RunLock>, String) = match cfg.databases.first() {
        Some(db) => (
            Arc::new(
                PgAdvisoryRunLock::from_database(db)
                    .map_err(|e| RunbookError::Refused(format!("prepare the run lock: {e}")))?,
            ),
            format!("postgres advisory locks on database {:?}", db.name),
        ),
        None => (
            Arc::new(InMemoryRunLock::new()),
            "in-process only (no [[database]] configured)".into(),
        ),
    };
    let daemon_opts = DaemonOptions {
        catch_up: opts.catch_up,
        ..DaemonOptions::default()
    };
    let mut daemon = Daemon::new(
        calendar.clone(),
        Arc::new(runner),
        lock,
        Arc::new(SystemClock),
        &state_file,
        daemon_opts,
    )
    .map_err(|e| {
        RunbookError::Refused(format!(
            "load the daemon state {}: {e}",
            state_file.display()
        ))
    })?;
    if let Some(url) = &cfg.notify_url {
        let secret = url
            .resolve()
            .map_err(|e| RunbookError::Refused(format!("read notify_url: {e}")))?;
        daemon = daemon.with_notifier(Arc::new(
            WebhookNotifier::new(secret, WebhookOptions::default())
                .map_err(|e| RunbookError::Refused(format!("prepare the webhook notifier: {e}")))?
                .with_redactor(crate::serve::config_redactor(cfg, None)),
        ));
    }
    Ok(CalendarDaemon {
        daemon,
        calendar,
        state_file,
        lock: lock_name,
    })
}

//! `tej daemon`: the maintenance calendar run in-process (for a container deployment), with
//! tej-runbook's [`Daemon`] and [`CalendarRunner`]. Runs are serialised across hosts by
//! PostgreSQL advisory locks when a database is configured ([`PgAdvisoryRunLock`]), else only
//! within this process ([`InMemoryRunLock`]). Stops on SIGINT or SIGTERM after the runs in
//! progress finish.

use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tej_core::{Config, Executor, SystemClock, TokioCommandRunner};
use tej_runbook::{
    CalendarRunner, Daemon, DaemonEvent, DaemonOptions, InMemoryRunLock, PgAdvisoryRunLock,
    RunContext, RunLock, RunOptions, WebhookNotifier, WebhookOptions,
};

/// `tej daemon`.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The daemon's state file (default: STATE_DIR/daemon-state.json).
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Do not run, once, the entries missed while the daemon was down.
    #[arg(long)]
    pub no_catch_up: bool,
    /// --yes pre-confirms the destructive steps of scheduled procedures (the quarterly
    /// rotation); without it they are refused and reported.
    #[command(flatten)]
    pub run: crate::args::RunArgs,
}

/// Runs `tej daemon` until SIGINT/SIGTERM.
pub fn dispatch(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    args: DaemonArgs,
) -> Result<i32> {
    let cfg = ctx.config()?;
    let ex = ctx.executor(&args.run)?;
    ctx.block_on(daemon(out, cfg, ex, args, ctx.config_path(), ctx.format()))??;
    Ok(0)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn render(out: &mut dyn Write, ev: &DaemonEvent, format: OutputFormat) -> Result<()> {
    if format == OutputFormat::Json {
        json_line(out, "daemon", ev)?;
    } else {
        let line = match ev {
            DaemonEvent::Started {
                entry,
                scheduled_for,
                catch_up,
            } => format!(
                "started {entry} (scheduled {scheduled_for}{})",
                if *catch_up { ", catching up" } else { "" }
            ),
            DaemonEvent::Finished { entry, severity } => format!("finished {entry}: {severity}"),
            DaemonEvent::Failed { entry, error } => format!("FAILED {entry}: {error}"),
            DaemonEvent::Skipped {
                entry,
                scheduled_for,
                reason,
            } => format!(
                "skipped {entry} (scheduled {scheduled_for}): {}",
                serde_json::to_string(reason).unwrap_or_default()
            ),
            DaemonEvent::NotifyFailed { entry, error } => {
                format!("notification of {entry} FAILED: {error}")
            }
        };
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

/// Runs the calendar until SIGINT/SIGTERM.
pub async fn daemon(
    out: &mut dyn Write,
    cfg: &Config,
    ex: Executor,
    args: DaemonArgs,
    config_path: Option<PathBuf>,
    format: OutputFormat,
) -> Result<()> {
    let calendar = tej_core::Calendar::from_config(cfg)?;
    let ctx = RunContext::from_config(cfg, RunOptions::default()).context("read tej.toml")?;
    let mut runner = CalendarRunner::new(
        Arc::new(ctx),
        ex,
        Arc::new(TokioCommandRunner),
        Arc::new(SystemClock),
    );
    // The quarterly drill is a PITR drill when the repository holds base backups.
    runner.tej_program = Some(std::env::current_exe().context("find the tej binary")?);
    runner.config_path = config_path;
    // The daemon is the scheduler: each entry's destructive steps are confirmed by the
    // schedule inside the entry's slot, and audited as such.
    runner.scheduled = true;
    let state_file = args
        .state_file
        .unwrap_or_else(|| runner.state_dir.join("daemon-state.json"));
    if let Some(dir) = state_file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("create the state directory {}", dir.display()))?;
    }
    let (lock, lock_name): (Arc<dyn RunLock>, String) = match cfg.databases.first() {
        Some(db) => (
            Arc::new(PgAdvisoryRunLock::from_database(db).context("prepare the run lock")?),
            format!("postgres advisory locks on database {:?}", db.name),
        ),
        None => (
            Arc::new(InMemoryRunLock::new()),
            "in-process only (no [[database]] configured)".into(),
        ),
    };
    let opts = DaemonOptions {
        catch_up: !args.no_catch_up,
        ..DaemonOptions::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut d = Daemon::new(
        calendar.clone(),
        Arc::new(runner),
        lock,
        Arc::new(SystemClock),
        &state_file,
        opts,
    )
    .with_context(|| format!("load the daemon state {}", state_file.display()))?
    .with_events(tx);
    if let Some(url) = &cfg.notify_url {
        let secret = url.resolve().context("read notify_url")?;
        d = d.with_notifier(Arc::new(
            WebhookNotifier::new(secret, WebhookOptions::default())
                .context("prepare the webhook notifier")?,
        ));
    }
    let started = serde_json::json!({
        "entries": calendar.entries.len(),
        "lock": lock_name,
        "state_file": state_file.display().to_string(),
    });
    if format == OutputFormat::Json {
        json_line(out, "daemon_started", &started)?;
    } else {
        writeln!(
            out,
            "tej daemon: {} calendar entries, run lock: {lock_name}, state {}",
            calendar.entries.len(),
            state_file.display()
        )?;
    }
    out.flush()?;
    let d = Arc::new(d);
    let runner = d.clone();
    let mut task = tokio::spawn(async move { runner.run(shutdown_signal()).await });
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => render(out, &ev, format)?,
                None => break,
            },
            r = &mut task => {
                r.context("the daemon task failed")?;
                break;
            }
        }
    }
    while let Ok(ev) = rx.try_recv() {
        render(out, &ev, format)?;
    }
    if format == OutputFormat::Text {
        writeln!(out, "tej daemon: stopped")?;
    }
    Ok(())
}

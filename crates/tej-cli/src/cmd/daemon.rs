//! `tej daemon`: the maintenance calendar run in-process (for a container deployment):
//! tej-runbook's [`calendar_daemon`] (runner, cross-host run lock, notifier), its events
//! rendered here. Stops on SIGINT or SIGTERM after the runs in progress finish.

use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tej_core::{Config, Executor};
use tej_runbook::{CalendarDaemon, CalendarDaemonOptions, DaemonEvent, calendar_daemon};

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
    let CalendarDaemon {
        daemon,
        calendar,
        state_file,
        lock: lock_name,
    } = calendar_daemon(
        cfg,
        ex,
        CalendarDaemonOptions {
            state_file: args.state_file,
            catch_up: !args.no_catch_up,
            config_path,
            tej_program: Some(std::env::current_exe().context("find the tej binary")?),
        },
    )?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let d = daemon.with_events(tx);
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

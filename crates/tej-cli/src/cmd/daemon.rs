//! `tej daemon`: the maintenance calendar run in-process (for a container deployment):
//! tej-runbook's [`calendar_daemon`] (runner, cross-host run lock, notifier), its events
//! rendered here. Stops on SIGINT or SIGTERM after the runs in progress finish.

use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tej_core::{Config, Executor};
use tej_runbook::serve::{ServeOptions, Server};
use tej_runbook::{
    CalendarDaemon, CalendarDaemonOptions, DaemonEvent, EntryRequest, calendar_daemon,
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
    /// The schedule confirms each entry's destructive steps inside its slot (audited as
    /// `schedule:ENTRY`); --yes also confirms them outside it (a catch-up run), --dry-run
    /// only plans.
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
    let serve = match crate::cmd::serve::daemon_options(cfg)? {
        Some(opts) => Some((
            opts,
            crate::cmd::serve::request(ctx, &crate::args::CheckArgs::default())?,
        )),
        None => None,
    };
    ctx.block_on(daemon(
        out,
        cfg,
        ex,
        args,
        serve,
        ctx.config_path(),
        ctx.format(),
    ))??;
    Ok(0)
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
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

/// Completes once `stop` holds true.
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs the calendar, and `tej serve` when `serve` is given, until SIGINT/SIGTERM.
pub async fn daemon(
    out: &mut dyn Write,
    cfg: &Config,
    ex: Executor,
    args: DaemonArgs,
    serve: Option<(ServeOptions, EntryRequest)>,
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
    let server = match &serve {
        Some((opts, _)) => {
            let server = Server::bind(cfg, opts.clone()).await?;
            crate::cmd::serve::announce(out, &server, opts, format)?;
            Some(server)
        }
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let serving = {
        let stop = stopped(stop_rx.clone());
        let req = serve.as_ref().map(|(_, req)| req);
        async move {
            match (server, req) {
                (Some(server), Some(req)) => server.run(cfg, req, stop).await,
                _ => Ok(()),
            }
        }
    };
    tokio::pin!(serving);
    let mut served = serve.is_none();
    let d = Arc::new(d);
    let runner = d.clone();
    let stop = stopped(stop_rx);
    let mut task = tokio::spawn(async move { runner.run(stop).await });
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => render(out, &ev, format)?,
                None => break,
            },
            r = &mut serving, if !served => {
                served = true;
                r.context("tej serve stopped")?;
            }
            r = &mut task => {
                r.context("the daemon task failed")?;
                break;
            }
        }
    }
    if !served {
        serving.await.context("tej serve stopped")?;
    }
    while let Ok(ev) = rx.try_recv() {
        render(out, &ev, format)?;
    }
    if format == OutputFormat::Text {
        writeln!(out, "tej daemon: stopped")?;
    }
    Ok(())
}

//! `tej schedule --emit crontab|systemd|kubernetes`: the calendar as cron lines, systemd
//! timers or Kubernetes CronJobs.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use tej_core::Calendar;
use tej_runbook::{
    KubernetesOptions, ScheduleOptions, emit_crontab, emit_kubernetes, emit_systemd,
};

/// What to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// A crontab (CRON_TZ=Asia/Kolkata; each line runs `tej run ENTRY --if-due`).
    Crontab,
    /// One `.timer` and one `.service` unit per calendar entry.
    Systemd,
    /// One Kubernetes CronJob per calendar entry (timeZone Asia/Kolkata, tej.toml from a
    /// ConfigMap, credentials from a Secret); `cronjobs.yaml` with `--dir`.
    Kubernetes,
}

/// Writes the schedule to `out`, or the files into `dir` (atomically).
pub fn emit(
    out: &mut dyn Write,
    cal: &Calendar,
    kind: Emit,
    config: Option<&Path>,
    user: Option<String>,
    dir: Option<&Path>,
    kube: KubernetesOptions,
) -> Result<()> {
    let tej_binary = std::env::current_exe().context("find the tej binary")?;
    let opts = ScheduleOptions {
        tej_binary,
        config: config.map(|c| std::fs::canonicalize(c).unwrap_or_else(|_| PathBuf::from(c))),
        user,
        ..ScheduleOptions::default()
    };
    match kind {
        Emit::Crontab => {
            let text = emit_crontab(cal, &opts)?;
            match dir {
                Some(d) => {
                    let p = d.join("tej");
                    tej_core::atomic_write(&p, text.as_bytes(), Some(0o644))
                        .with_context(|| format!("write {}", p.display()))?;
                    writeln!(out, "wrote {}", p.display())?;
                }
                None => out.write_all(text.as_bytes())?,
            }
        }
        Emit::Kubernetes => {
            let text = emit_kubernetes(cal, &kube)?;
            match dir {
                Some(d) => {
                    let p = d.join("cronjobs.yaml");
                    tej_core::atomic_write(&p, text.as_bytes(), Some(0o644))
                        .with_context(|| format!("write {}", p.display()))?;
                    writeln!(out, "wrote {}", p.display())?;
                }
                None => out.write_all(text.as_bytes())?,
            }
        }
        Emit::Systemd => {
            let units = emit_systemd(cal, &opts)?;
            for u in units {
                match dir {
                    Some(d) => {
                        let p = d.join(&u.name);
                        tej_core::atomic_write(&p, u.contents.as_bytes(), Some(0o644))
                            .with_context(|| format!("write {}", p.display()))?;
                        writeln!(out, "wrote {}", p.display())?;
                    }
                    None => write!(out, "### {}\n{}\n", u.name, u.contents)?,
                }
            }
        }
    }
    Ok(())
}

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
    /// A crontab (CRON_TZ=Asia/Kolkata; each line runs `tej run ENTRY --if-due --scheduled`).
    Crontab,
    /// One `.timer` and one `.service` unit per calendar entry.
    Systemd,
    /// One Kubernetes CronJob per calendar entry (timeZone Asia/Kolkata, tej.toml from a
    /// ConfigMap, credentials from a Secret); `cronjobs.yaml` with `--dir`.
    Kubernetes,
}

/// How the emitted jobs run: as whom, what systemd starts on failure, where credentials are.
#[derive(Debug, Clone, Default)]
pub struct UnitOptions {
    /// systemd `User=`; the user field of cron.d lines (`root` when not given).
    pub user: Option<String>,
    /// systemd `OnFailure=` unit.
    pub on_failure: Option<String>,
    /// systemd `EnvironmentFile=` (optional at run time).
    pub environment_file: Option<PathBuf>,
}

/// Writes the schedule to `out`, or the files into `dir` (atomically). `config` is the
/// configuration in use (`--config`, `TEJ_CONFIG` or `./tej.toml` found implicitly); every
/// emitted job names it by its absolute path, so it runs the same configuration from any
/// working directory. A crontab written into `dir` is an `/etc/cron.d` file: its lines carry
/// a user field.
pub fn emit(
    out: &mut dyn Write,
    cal: &Calendar,
    kind: Emit,
    config: Option<&Path>,
    units: UnitOptions,
    dir: Option<&Path>,
    kube: KubernetesOptions,
) -> Result<()> {
    let tej_binary = std::env::current_exe().context("find the tej binary")?;
    let config = match config {
        Some(c) => Some(match std::fs::canonicalize(c) {
            Ok(p) => p,
            Err(_) => std::path::absolute(c)
                .with_context(|| format!("make the configuration path {} absolute", c.display()))?,
        }),
        None => None,
    };
    let opts = ScheduleOptions {
        tej_binary,
        config,
        cron_user_field: kind == Emit::Crontab && (dir.is_some() || units.user.is_some()),
        user: units.user,
        on_failure: units.on_failure,
        environment_file: units.environment_file,
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

/// `tej schedule`.
#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    /// crontab, systemd or kubernetes.
    #[arg(long, value_enum)]
    pub emit: Emit,
    /// Write into this directory (systemd units, a cron.d file named `tej`, or
    /// `cronjobs.yaml`) instead of stdout.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The user the jobs run as: systemd `User=`, and the user field of cron lines
    /// (written with --dir, the /etc/cron.d format, `root` unless given).
    #[arg(long)]
    pub user: Option<String>,
    /// systemd: `OnFailure=` unit started when a run fails (e.g. `notify-failure@%n.service`).
    #[arg(long, value_name = "UNIT")]
    pub on_failure: Option<String>,
    /// systemd: `EnvironmentFile=` holding the credentials (DATABASE_URL, AWS keys...).
    #[arg(long, value_name = "FILE", default_value = "/etc/tej/tej.env")]
    pub environment_file: PathBuf,
    /// Kubernetes: the container image with tej and the PostgreSQL 15 client tools.
    #[arg(long, default_value = "tej:latest")]
    pub image: String,
    /// Kubernetes: the namespace of the CronJobs.
    #[arg(long, default_value = "tej")]
    pub namespace: String,
}

/// Runs `tej schedule`.
pub fn dispatch(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    args: ScheduleArgs,
) -> Result<i32> {
    let cal = Calendar::from_config(ctx.config()?)?;
    emit(
        out,
        &cal,
        args.emit,
        ctx.config_path().as_deref(),
        UnitOptions {
            user: args.user,
            on_failure: args.on_failure,
            environment_file: Some(args.environment_file),
        },
        args.dir.as_deref(),
        KubernetesOptions {
            image: args.image,
            namespace: args.namespace,
            ..KubernetesOptions::default()
        },
    )?;
    Ok(0)
}

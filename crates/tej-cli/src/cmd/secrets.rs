//! `tej secrets rotate` and `tej secrets generate`. The rotation is tej-runbook's
//! [`rotation_from_config`] (tej-secrets' staged rotation over tej-db's Redis sessions and
//! tej-deploy's force-recreate, the application probed over HTTP), the same the quarterly
//! procedure runs, rendered here.

use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tej_core::Config;
use tej_runbook::{RunContext, RunOptions, rotation_from_config};
use tej_secrets::{RotateOptions, RotationMode, RotationOutcome};

/// `tej secrets`.
#[derive(Debug, clap::Subcommand)]
pub enum SecretsCmd {
    /// Staged, resumable rotation: new values in .env, recreate the backend, drop sessions, verify.
    Rotate(RotateArgs),
    /// Print a new secret from the OS CSPRNG (hex).
    Generate {
        /// Random bytes (printed as twice as many hex digits).
        #[arg(long, default_value_t = 64)]
        bytes: usize,
    },
}

/// `tej secrets rotate`.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The .env file (default: [secrets] env_file).
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Keys to rotate (default: [secrets] rotate, JWT_SECRET,JWT_REFRESH_SECRET).
    #[arg(long, value_delimiter = ',')]
    pub keys: Vec<String>,
    /// Keep the previous values as KEY_PREVIOUS for a grace period; sessions stay.
    #[arg(long)]
    pub graceful: bool,
    /// A breach: rotate every configured key and drop every session.
    #[arg(long)]
    pub emergency: bool,
    #[command(flatten)]
    pub run: crate::args::RunArgs,
}

/// Runs `tej secrets ...`: 0 when the rotation completed (or was planned), else 1.
pub fn dispatch(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    cmd: SecretsCmd,
) -> Result<i32> {
    match cmd {
        SecretsCmd::Rotate(args) => {
            let cfg = ctx.config()?;
            let ex = ctx.executor(&args.run)?;
            let ok = ctx.block_on(rotate(out, cfg, &ex, args, ctx.format()))??;
            Ok(crate::context::exit_code(ok))
        }
        SecretsCmd::Generate { bytes } => {
            generate(out, bytes)?;
            Ok(0)
        }
    }
}

/// Prints one new secret from the OS CSPRNG (the one place a secret value is printed, on request).
pub fn generate(out: &mut dyn Write, bytes: usize) -> Result<()> {
    let s = tej_secrets::generate_secret(&tej_secrets::SecretFormat::Hex { bytes })?;
    writeln!(out, "{}", s.expose())?;
    Ok(())
}

/// Runs the rotation tej.toml describes (tej-runbook's [`rotation_from_config`]), with the
/// command line's `.env`, keys, mode and dry run; true when it completed (or was planned).
pub async fn rotate(
    out: &mut dyn Write,
    cfg: &Config,
    ex: &tej_core::Executor,
    args: RotateArgs,
    format: OutputFormat,
) -> Result<bool> {
    let mode = match (args.graceful, args.emergency) {
        (true, true) => bail!("--graceful and --emergency exclude each other"),
        (true, false) => RotationMode::Graceful,
        (false, true) => RotationMode::Emergency,
        _ => RotationMode::Standard,
    };
    // The configuration's own error first: what is missing for a rotation.
    RotateOptions::from_config(cfg, mode)?;
    let ctx = RunContext::from_config(cfg, RunOptions::default()).context("read tej.toml")?;
    let redis = ctx
        .redis
        .first()
        .context("rotation drops sessions: add [[redis]] to tej.toml")?;
    let sessions = redis.client.get().await.context("connect to Redis")?;
    let docker_host = cfg.compose.as_ref().and_then(|c| c.docker_host.clone());
    let docker = super::services::connect(docker_host.as_deref()).await?;
    let (rotator, mut opts) = rotation_from_config(
        cfg,
        mode,
        sessions,
        Arc::new(docker),
        &ex.guard,
        ex.audit.clone(),
    )?;
    if let Some(env_file) = args.env_file {
        opts.env_file = env_file;
    }
    if !args.keys.is_empty() {
        opts.keys = args.keys;
    }
    opts.dry_run = args.run.dry_run;
    let report = rotator.rotate(&opts).await.context("rotate secrets")?;
    if format == OutputFormat::Json {
        json_line(out, "rotation", &report)?;
    } else {
        writeln!(
            out,
            "rotation of {} in {}: {:?}",
            report.keys.join(", "),
            report.env_file.display(),
            report.outcome
        )?;
        for p in &report.plan {
            writeln!(out, "  plan: {p}")?;
        }
        for s in &report.steps {
            writeln!(out, "  {}", serde_json::to_string(s)?)?;
        }
    }
    Ok(matches!(
        report.outcome,
        RotationOutcome::Completed | RotationOutcome::Planned
    ))
}

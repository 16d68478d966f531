//! # Secret rotation
//!
//! Automates the runbook's **"Security Maintenance › Secret Rotation › Quarterly Secret
//! Rotation"**: 1. generate new secrets (OS CSPRNG, 64 random bytes as hex, like
//! `crypto.randomBytes(64)`), 2. update the `.env` file (atomically, keeping a backup copy),
//! 3. restart the backend (a Compose force-recreate, since a restart would not re-read
//! `.env`), 4. invalidate the old sessions (only the keys matching the session pattern, not a
//! `FLUSHDB`), 5. verify the new secrets work (`/health`, then a login with the test account).
//! A failed verification restores the previous values and recreates the backend again.
//!
//! The rotation is a destructive step: it runs only when confirmed (`--yes`), in production only
//! inside the maintenance window, and every applied or refused step is written to the audit log
//! of `tej.toml`. `--dry-run` shows the plan and changes nothing.
//!
//! Library calls: [`tej_runbook::RunContext::from_config`], [`tej_runbook::rotation_from_context`]
//! (tej-secrets' `Rotator` over tej-db's Redis and tej-deploy's Compose service), run by
//! [`tej_core::Executor`].
//!
//! ## Run it
//!
//! ```text
//! cargo run -p tej-examples --bin secret_rotation -- --config tej.toml --dry-run
//! cargo run -p tej-examples --bin secret_rotation -- --config tej.toml --yes
//! cargo run -p tej-examples --bin secret_rotation -- --config tej.toml --yes --graceful
//! ```
//!
//! `tej.toml` needs `[secrets]` (`env_file`, `rotate`, `app_url`, `test_email`,
//! `test_password = { env = "..." }`), `[compose]` (the backend to recreate) and `[[redis]]`
//! (the sessions).
//!
//! ## What it prints
//!
//! `secret-rotation (dry run)` or `secret-rotation`, then for each step `STEP TARGET: OUTCOME`
//! with the planned actions (`plan: ...`) and the applied summary (`done: rotated JWT_SECRET,
//! JWT_REFRESH_SECRET in .env; N sessions dropped`). Key names are printed, values never.
//! Exit code 0 when the rotation completed (or was planned), 1 otherwise.
//!
//! ## The same with the CLI
//!
//! `tej secrets rotate [--dry-run] [--yes] [--graceful|--emergency]` (or `tej run secret-rotation`).

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use tej_core::{Config, OnFailure, Procedure};
use tej_runbook::{RunContext, RunOptions, rotation_from_context};
use tej_secrets::RotationMode;

/// Rotate the application's secrets as the runbook's quarterly procedure does.
#[derive(Debug, Parser)]
struct Args {
    /// The configuration file (default: ./tej.toml when present, else the environment).
    #[arg(long, env = "TEJ_CONFIG")]
    config: Option<PathBuf>,
    /// Show the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Confirm the rotation (a destructive step: sessions are dropped).
    #[arg(long)]
    yes: bool,
    /// Keep the previous values as KEY_PREVIOUS for a grace period; sessions stay.
    #[arg(long, conflicts_with = "emergency")]
    graceful: bool,
    /// A breach: drop every session.
    #[arg(long)]
    emergency: bool,
}

async fn run(args: Args) -> Result<bool> {
    let config = Config::load_or_env(args.config.as_deref()).context("load the configuration")?;
    let ctx =
        RunContext::from_config(&config, RunOptions::default()).context("prepare the rotation")?;
    let sessions = match ctx.redis.first() {
        Some(r) => Some(r.client.get().await.context("connect to Redis")?),
        None => None,
    };
    let executor = tej_examples::executor(&config, args.dry_run, args.yes)?;
    let mode = match (args.graceful, args.emergency) {
        (true, _) => RotationMode::Graceful,
        (_, true) => RotationMode::Emergency,
        _ => RotationMode::Standard,
    };
    let step = rotation_from_context(
        &ctx,
        sessions,
        &executor.guard,
        executor.audit.clone(),
        mode,
    )?;
    let mut procedure = Procedure::new("secret-rotation");
    procedure.push(step, OnFailure::Stop);

    let report = executor.run(&procedure).await;
    tej_examples::print_procedure(&report);
    if report.steps.is_empty() {
        bail!("the rotation procedure has no step");
    }
    Ok(report.succeeded())
}

#[tokio::main]
async fn main() -> ExitCode {
    tej_examples::procedure_exit(run(Args::parse()).await)
}

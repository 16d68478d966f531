//! # Daily health check
//!
//! Automates the runbook's **"Daily Maintenance › 1. System Health Check (Every Morning)"**
//! (9:00 AM IST): service status, recent application logs, server resources, PostgreSQL
//! (`pg_isready` and more), Redis (`redis-cli ping` and more), "verify backups completed"
//! (newest backup younger than 26 h and verified, WAL archiving current) and SSL certificate
//! expiry, plus the `[[check]]`s declared in `tej.toml`.
//!
//! It builds a [`tej_runbook::RunContext`] from `tej.toml` and runs
//! [`tej_runbook::daily_health`]: every part at once, each with its own timeout, so a dead
//! component is one finding naming it while every other part still reports.
//!
//! ## Run it
//!
//! ```text
//! cargo run -p tej-examples --bin daily_health_check -- --config tej.toml
//! cargo run -p tej-examples --bin daily_health_check -- --config tej.toml --ca internal-ca.pem
//! TEJ_CONFIG=tej.toml cargo run -p tej-examples --bin daily_health_check
//! DATABASE_URL=postgres://app@127.0.0.1/app REDIS_URL=redis://127.0.0.1/0 \
//!     cargo run -p tej-examples --bin daily_health_check      # no tej.toml at all
//! ```
//!
//! ## What it prints
//!
//! The report title, one line per finding (`SEVERITY  check  target  summary`), then a
//! `summary:` line with the counts and the overall severity. The exit code follows the Nagios
//! convention (0 OK, 1 warning, 2 critical, 3 unknown), so cron or a monitoring agent can act
//! on it; an error (unreadable `tej.toml`...) prints `error: ...` and exits 3. Passwords in connection URLs never appear: findings carry redacted targets.
//!
//! ## The same with the CLI
//!
//! `tej run daily` (or `tej health`), which adds JSON, Nagios and Prometheus output.

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tej_core::{Config, Severity, SystemClock};
use tej_runbook::{RunOptions, daily_health};

/// The runbook's morning health check over everything `tej.toml` manages.
#[derive(Debug, Parser)]
struct Args {
    /// The configuration file (default: ./tej.toml when present, else the environment).
    #[arg(long, env = "TEJ_CONFIG")]
    config: Option<PathBuf>,
    /// Trust only this CA (PEM) for the `[[tls]]` endpoints instead of the system roots
    /// (an internal CA, the sandbox's throwaway one).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Time limit of each check, in seconds.
    #[arg(long, default_value_t = 30)]
    check_timeout: u64,
}

async fn run(args: Args) -> Result<Severity> {
    let config = Config::load_or_env(args.config.as_deref()).context("load the configuration")?;
    let options = RunOptions {
        check_timeout: Duration::from_secs(args.check_timeout.max(1)),
        ..RunOptions::default()
    };
    let ctx = tej_examples::check_context(&config, options, args.ca, "the daily check")?;
    Ok(tej_examples::print_report(
        &daily_health(&ctx, &SystemClock).await,
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    tej_examples::check_exit(run(Args::parse()).await)
}

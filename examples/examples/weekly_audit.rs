//! # Weekly audit
//!
//! Automates the runbook's **"Weekly Maintenance › 1. Full System Audit (Every Sunday)"**
//! (2:00 AM IST) as a review: 1.1 database maintenance (sizes, bloated tables, unused and
//! missing indexes, slow queries), 1.2 Redis maintenance (memory, fragmentation, big keys),
//! 1.3 disk cleanup (what would be removed: logs older than 30 days, old backups per
//! retention), the newest backup of each repository verified end to end (optionally restored
//! into a scratch database), and the "2. Security Review" of the week's logs (failed logins,
//! SQL-injection probes, rate-limit hits), certificates and backup encryption.
//!
//! It builds a [`tej_runbook::RunContext`] from `tej.toml` and runs
//! [`tej_runbook::weekly_audit`]. Nothing is changed: the cleanup is a dry run and VACUUM is
//! left to `tej db vacuum`; the audit says what needs doing.
//!
//! ## Run it
//!
//! ```text
//! cargo run -p tej-examples --bin weekly_audit -- --config tej.toml
//! cargo run -p tej-examples --bin weekly_audit -- --config tej.toml \
//!     --restore-test "postgres://postgres@127.0.0.1:5432/postgres"
//! ```
//!
//! ## What it prints
//!
//! The report title, one line per finding (`SEVERITY  check  target  summary`), then a
//! `summary:` line with the counts and the overall severity. Exit code: 0 OK, 1 warning,
//! 2 critical, 3 unknown or an error (`error: ...` on stderr). No password is printed.
//!
//! ## The same with the CLI
//!
//! `tej run weekly` (what the `weekly-audit` calendar entry runs every Sunday).

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tej_backup::{DbTarget, RestoreTestOptions};
use tej_core::{Config, Severity, SystemClock};
use tej_runbook::{RunOptions, weekly_audit};

/// The runbook's Sunday audit over everything `tej.toml` manages.
#[derive(Debug, Parser)]
struct Args {
    /// The configuration file (default: ./tej.toml when present, else the environment).
    #[arg(long, env = "TEJ_CONFIG")]
    config: Option<PathBuf>,
    /// Trust only this CA (PEM) for the `[[tls]]` endpoints instead of the system roots.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Time limit of each check, in seconds (verifying a large backup takes a while).
    #[arg(long, default_value_t = 600)]
    check_timeout: u64,
    /// Also restore the newest backup into a scratch database on this server (connection
    /// string without a password; libpq's PGPASSWORD or ~/.pgpass supply one).
    #[arg(long, value_name = "CONNINFO")]
    restore_test: Option<String>,
}

async fn run(args: Args) -> Result<Severity> {
    let config = Config::load_or_env(args.config.as_deref()).context("load the configuration")?;
    let restore_test = args.restore_test.map(|conn| RestoreTestOptions {
        server: DbTarget::new(conn),
        // The `[[database]]`'s sanity queries (`SELECT COUNT(*) FROM users`) run on the copy.
        queries: config
            .databases
            .first()
            .map(|d| d.sanity_queries.clone())
            .unwrap_or_default(),
        jobs: 2,
    });
    let options = RunOptions {
        check_timeout: Duration::from_secs(args.check_timeout.max(1)),
        restore_test,
        ..RunOptions::default()
    };
    let ctx = tej_examples::check_context(&config, options, args.ca, "the weekly audit")?;
    Ok(tej_examples::print_report(
        &weekly_audit(&ctx, &SystemClock).await,
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    tej_examples::check_exit(run(Args::parse()).await)
}

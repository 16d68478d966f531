//! # Deploy
//!
//! Automates the runbook's **"Deployment Procedures › Standard Deployment (Zero Downtime)"**
//! with its "Pre-Deployment Checklist" and "Post-Deployment Checklist" as gates: tests pass
//! (`test_command`), a backup was created (`backup_max_age_hours`), the database migration
//! runs in a one-off container of the new image (`migrate`), the new container starts beside
//! the old one on the other blue/green port and must be healthy, nginx is switched to it
//! (`nginx -t`, graceful reload), the health check passes through the front (`public_addr`), no
//! errors in its logs for `log_window_secs`, then the old container drains and is removed. A
//! failure before the end leaves the old container serving and prints the new one's last logs.
//! `--rollback` deploys the previous image the same way.
//!
//! Library calls: [`tej_runbook::deploy_service`] runs the deploy as one step under a
//! [`tej_core::Executor`] (dry run, guard, the audit log: one entry per deploy, as `tej deploy`
//! writes it), over [`tej_deploy::BollardRuntime`] (the Docker Engine API). The deployer is
//! [`tej_deploy::Deployer::from_config`] (an [`tej_deploy::NginxUpstream`] switch and the
//! gates of `tej_deploy`) plus the fresh-backup gate of tej-runbook, which reads
//! [`tej_backup::list_backups`].
//!
//! ## Run it
//!
//! ```text
//! cargo run -p tej-examples --bin deploy -- --config tej.toml backend --image skillswap-backend:v42
//! cargo run -p tej-examples --bin deploy -- --config tej.toml backend --image skillswap-backend:v42 --dry-run
//! cargo run -p tej-examples --bin deploy -- --config tej.toml backend --rollback
//! ```
//!
//! `tej.toml` needs `[compose] project` and a `[[deploy.service]]` for the service (ports,
//! `nginx_upstream_file`, optional gates); the engine is `[compose] docker_host`, else
//! `DOCKER_HOST`, else the local socket.
//!
//! ## What it prints
//!
//! With `--dry-run`, the plan (`plan: ...` lines). Otherwise every event (`TIME STAGE detail`),
//! every gate (`gate NAME: passed|FAILED (detail)`), warnings, and the summary line
//! (`deploy shop/backend: shop-backend-2 serves IMAGE on port 3001`). Exit code 0 when the new
//! container serves, 1 otherwise.
//!
//! ## The same with the CLI
//!
//! `tej deploy SERVICE --image IMAGE [--dry-run]` and `tej rollback SERVICE`.

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tej_core::{Config, Executor, RunFlags, TokioCommandRunner};
use tej_deploy::{BollardRuntime, DeployKind};
use tej_runbook::{DeployEngine, DeployRequest, deploy_service};

/// Zero-downtime deploy (or rollback) of one `[[deploy.service]]`.
#[derive(Debug, Parser)]
struct Args {
    /// The configuration file (default: ./tej.toml when present, else the environment).
    #[arg(long, env = "TEJ_CONFIG")]
    config: Option<PathBuf>,
    /// The `[[deploy.service]]` name.
    service: String,
    /// The image to deploy (built or loaded on the Docker host).
    #[arg(long, required_unless_present = "rollback")]
    image: Option<String>,
    /// Deploy the previous image again instead.
    #[arg(long)]
    rollback: bool,
    /// Show the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
}

async fn run(args: Args) -> Result<bool> {
    let config = Config::load_or_env(args.config.as_deref()).context("load the configuration")?;
    tej_deploy::deploy_service(&config, &args.service)?;
    let compose = config
        .compose
        .as_ref()
        .context("set [compose] project in tej.toml")?;
    let docker = Arc::new(
        BollardRuntime::connect(compose.docker_host.as_deref())
            .await
            .context("connect to the Docker engine")?,
    );
    let engine = DeployEngine {
        containers: docker.clone(),
        images: docker,
        runner: Arc::new(TokioCommandRunner),
    };
    // A deploy is a mutating (not destructive) step: the guard asks no confirmation.
    let executor = Executor::from_config(
        &config,
        RunFlags {
            dry_run: args.dry_run,
            ..RunFlags::default()
        },
    )?;
    let request = DeployRequest {
        kind: if args.rollback {
            DeployKind::Rollback
        } else {
            DeployKind::Deploy
        },
        service: args.service,
        image: args.image,
        project: None,
    };
    let done = deploy_service(&config, &executor, &engine, &request).await?;

    if args.dry_run {
        for s in &done.procedure.steps {
            for a in &s.actions {
                println!("plan: {a}");
            }
        }
        return Ok(done.procedure.succeeded());
    }
    let Some(report) = done.deploy else {
        for s in &done.procedure.steps {
            println!("{} {}: {:?}", s.step, s.target, s.outcome);
        }
        return Ok(false);
    };
    for e in &report.events {
        println!("{} {:?} {}", e.at.strftime("%H:%M:%S"), e.stage, e.detail);
    }
    for g in &report.gates {
        println!(
            "gate {}: {} ({})",
            g.gate,
            if g.passed { "passed" } else { "FAILED" },
            g.detail
        );
    }
    for w in &report.warnings {
        println!("warning: {w}");
    }
    println!("{}", report.summary());
    for line in report
        .new_container_logs
        .iter()
        .chain(&report.migration_output)
    {
        println!("  | {line}");
    }
    Ok(report.succeeded())
}

#[tokio::main]
async fn main() -> ExitCode {
    tej_examples::procedure_exit(run(Args::parse()).await)
}

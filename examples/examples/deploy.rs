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
//! Library calls: [`tej_deploy::Deployer`] over [`tej_deploy::BollardRuntime`] (the Docker
//! Engine API) with an [`tej_deploy::NginxUpstream`] switch and the gates of `tej_deploy`; the
//! backup gate reads [`tej_backup::list_backups`].
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
use async_trait::async_trait;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tej_backup::{BackupKind, Repository, list_backups};
use tej_core::{AuditLog, CommandSpec, Config, Step, StepError, SystemClock, TokioCommandRunner};
use tej_deploy::{
    BackupFreshness, BlueGreenPorts, BollardRuntime, CommandGate, DeployKind, DeployOptions,
    DeployStep, Deployer, FreshBackupGate, HealthProbe, HealthWait, HttpHealthGate, LogErrorsGate,
    NginxUpstream,
};

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

/// The newest verified database backup in the repositories ("Backup created").
struct Repositories(Vec<Repository>);

#[async_trait]
impl BackupFreshness for Repositories {
    async fn latest_backup(&self) -> Result<Option<jiff::Timestamp>, StepError> {
        let mut latest = None;
        for repo in &self.0 {
            for b in list_backups(repo)
                .await
                .map_err(|e| format!("list backups in {}: {e}", repo.name()))?
            {
                if b.kind != BackupKind::Files && b.verification.as_ref().is_none_or(|v| v.ok) {
                    latest = latest.max(Some(b.finished_at));
                }
            }
        }
        Ok(latest)
    }
}

async fn run(args: Args) -> Result<bool> {
    let config = Config::load_or_env(args.config.as_deref()).context("load the configuration")?;
    let compose = config
        .compose
        .as_ref()
        .context("set [compose] project in tej.toml")?;
    let svc = config
        .deploy
        .service(&args.service)
        .with_context(|| format!("no [[deploy.service]] named {:?} in tej.toml", args.service))?;
    let docker = Arc::new(
        BollardRuntime::connect(compose.docker_host.as_deref())
            .await
            .context("connect to the Docker engine")?,
    );
    let runner = Arc::new(TokioCommandRunner);
    let switch = Arc::new(NginxUpstream {
        conf_path: svc.nginx_upstream_file.clone(),
        upstream_name: svc.upstream_name().to_string(),
        runner: runner.clone(),
        program: svc.nginx_program.clone(),
        drain_grace: Duration::from_secs(svc.drain_timeout_secs),
    });
    let lock_dir = config
        .deploy
        .lock_dir
        .clone()
        .or_else(|| config.state_dir.as_ref().map(|d| d.join("locks")));
    let mut d = Deployer::new(
        docker.clone(),
        docker.clone(),
        switch,
        lock_dir.unwrap_or_else(|| "/var/lib/tej/locks".into()),
    );
    d.environment = config.environment.to_string();
    d.audit = config.audit_log.as_ref().map(AuditLog::new);
    if let Some((program, rest)) = svc.test_command.as_ref().and_then(|c| c.split_first()) {
        let mut spec = CommandSpec::new(program.clone())
            .args(rest.iter().cloned())
            .timeout(Duration::from_secs(svc.test_timeout_secs));
        if let Some(dir) = &svc.test_dir {
            spec = spec.cwd(dir.clone());
        }
        d.pre_gates.push(Box::new(CommandGate {
            name: "tests".into(),
            runner: runner.clone(),
            spec,
        }));
    }
    if let Some(hours) = svc.backup_max_age_hours {
        let mut repos = Vec::new();
        for spec in &config.backup.repositories {
            repos.push(
                Repository::open(spec)
                    .await
                    .with_context(|| format!("open repository {spec}"))?,
            );
        }
        let max_age = Duration::from_secs(hours.saturating_mul(3600));
        d.pre_gates.push(Box::new(FreshBackupGate {
            source: Arc::new(Repositories(repos)),
            max_age,
            clock: Arc::new(SystemClock),
        }));
    }
    if let (Some(addr), Some(path)) = (&svc.public_addr, &svc.health_path) {
        let addr = addr
            .parse()
            .with_context(|| format!("public_addr {addr:?} is not IP:PORT"))?;
        d.post_gates.push(Box::new(HttpHealthGate {
            addr: Some(addr),
            path: path.clone(),
            timeout: Duration::from_secs(10),
        }));
    }
    if let Some(secs) = svc.log_window_secs.filter(|s| *s > 0) {
        let window = Duration::from_secs(secs);
        d.post_gates.push(Box::new(LogErrorsGate {
            containers: docker.clone(),
            window,
            pattern: LogErrorsGate::default_pattern(),
        }));
    }

    let ports = BlueGreenPorts {
        env: svc.port_env.clone(),
        ports: svc.ports,
    };
    let mut opts = DeployOptions::new(
        &compose.project,
        &svc.name,
        args.image.unwrap_or_default(),
        ports,
    );
    opts.probe = svc
        .health_path
        .clone()
        .map_or(HealthProbe::Docker, |path| HealthProbe::Http { path });
    opts.health = HealthWait {
        deadline: Duration::from_secs(svc.health_timeout_secs),
        ..HealthWait::default()
    };
    opts.migration = svc.migrate.clone();
    opts.migration_timeout = Duration::from_secs(svc.migrate_timeout_secs);
    opts.stop_timeout = Duration::from_secs(svc.stop_timeout_secs);
    opts.drain_timeout = Duration::from_secs(svc.drain_timeout_secs);
    let kind = if args.rollback {
        DeployKind::Rollback
    } else {
        DeployKind::Deploy
    };

    if args.dry_run {
        let step = DeployStep {
            deployer: Arc::new(d),
            options: opts,
            kind,
        };
        let plan = step
            .plan()
            .await
            .map_err(|e| anyhow::anyhow!("plan the deploy: {e}"))?;
        for a in &plan.actions {
            println!("plan: {a}");
        }
        return Ok(true);
    }
    let report = match kind {
        DeployKind::Deploy => d.deploy(&opts).await,
        DeployKind::Rollback => d.rollback(&opts).await,
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
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

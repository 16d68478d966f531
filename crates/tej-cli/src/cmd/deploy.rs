//! `tej deploy SERVICE --image IMAGE` and `tej rollback SERVICE`: tej-deploy's zero-downtime
//! blue/green deploy, configured by `[[deploy.service]]` in tej.toml and run as an audited step.
//!
//! The gates that need other domains are wired here: "a fresh backup exists" reads the
//! catalogue of `[backup] repositories` through tej-backup.

use crate::args::{ComposeArgs, RunArgs};
use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use jiff::Timestamp;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tej_backup::{BackupKind, Repository, list_backups};
use tej_core::config::DeployServiceConfig;
use tej_core::{
    CommandSpec, Config, Executor, Plan, Procedure, Risk, Step, StepError, StepOutput, SystemClock,
    TokioCommandRunner,
};
use tej_deploy::{
    BackupFreshness, BlueGreenPorts, BollardRuntime, CommandGate, DeployKind, DeployOptions,
    DeployReport, DeployStep, Deployer, FreshBackupGate, HealthProbe, HealthWait, HttpHealthGate,
    LogErrorsGate, NginxUpstream,
};

/// `tej deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The service.
    pub service: String,
    /// The image to deploy (built or loaded on the Docker host).
    #[arg(long)]
    pub image: String,
    #[command(flatten)]
    pub compose: ComposeArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `tej rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The service.
    pub service: String,
    #[command(flatten)]
    pub compose: ComposeArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `tej deploy`: 0 when the new container serves, else an error.
pub fn dispatch(ctx: &crate::context::Context, out: &mut dyn Write, a: DeployArgs) -> Result<i32> {
    let image = Some(a.image);
    deploy_cmd(
        ctx,
        out,
        DeployKind::Deploy,
        a.service,
        image,
        &a.compose,
        &a.run,
    )
}

/// Runs `tej rollback`: 0 when the previous image serves again, else an error.
pub fn dispatch_rollback(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    a: RollbackArgs,
) -> Result<i32> {
    deploy_cmd(
        ctx,
        out,
        DeployKind::Rollback,
        a.service,
        None,
        &a.compose,
        &a.run,
    )
}

fn deploy_cmd(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    kind: DeployKind,
    service: String,
    image: Option<String>,
    compose: &ComposeArgs,
    run: &RunArgs,
) -> Result<i32> {
    let cfg = ctx.config()?;
    let (project, docker_host) = ctx.compose_target(compose)?;
    let ex = ctx.executor(run)?;
    let req = DeployRequest {
        kind,
        service,
        image,
        project,
        docker_host,
    };
    ctx.block_on(self::run(out, cfg, &ex, req, ctx.format()))??;
    Ok(0)
}

/// What to deploy: the service, the image (ignored by a rollback) and where.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// Deploy a new image or roll back to the previous one.
    pub kind: DeployKind,
    /// The `[[deploy.service]]` name.
    pub service: String,
    /// The image (deploy only).
    pub image: Option<String>,
    /// Compose project.
    pub project: String,
    /// Docker engine address.
    pub docker_host: Option<String>,
}

/// The latest database backup across the configured repositories (a backup whose
/// verification failed does not count).
struct RepositoryFreshness {
    repos: Vec<Repository>,
}

#[async_trait]
impl BackupFreshness for RepositoryFreshness {
    async fn latest_backup(&self) -> Result<Option<Timestamp>, StepError> {
        let mut latest: Option<Timestamp> = None;
        for repo in &self.repos {
            let backups = list_backups(repo)
                .await
                .map_err(|e| format!("list backups in {}: {e}", repo.name()))?;
            for b in backups {
                if b.kind == BackupKind::Files || b.verification.as_ref().is_some_and(|v| !v.ok) {
                    continue;
                }
                latest = latest.max(Some(b.finished_at));
            }
        }
        Ok(latest)
    }
}

/// The lock directory: `[deploy] lock_dir`, else `STATE_DIR/locks`, else `/var/lib/tej/locks`.
pub fn lock_dir(cfg: &Config) -> PathBuf {
    cfg.deploy
        .lock_dir
        .clone()
        .or_else(|| cfg.state_dir.as_ref().map(|d| d.join("locks")))
        .unwrap_or_else(|| PathBuf::from("/var/lib/tej/locks"))
}

/// The deploy options of a `[[deploy.service]]`.
pub fn options(svc: &DeployServiceConfig, project: &str, image: Option<&str>) -> DeployOptions {
    let mut o = DeployOptions::new(
        project,
        svc.name.clone(),
        image.unwrap_or_default(),
        BlueGreenPorts {
            env: svc.port_env.clone(),
            ports: svc.ports,
        },
    );
    o.probe = match &svc.health_path {
        Some(path) => HealthProbe::Http { path: path.clone() },
        None => HealthProbe::Docker,
    };
    o.health = HealthWait {
        deadline: Duration::from_secs(svc.health_timeout_secs),
        ..HealthWait::default()
    };
    o.migration = svc.migrate.clone();
    o.migration_timeout = Duration::from_secs(svc.migrate_timeout_secs);
    o.stop_timeout = Duration::from_secs(svc.stop_timeout_secs);
    o.drain_timeout = Duration::from_secs(svc.drain_timeout_secs);
    o
}

/// A deployer for `svc`: engine, nginx switch, lock directory, and the configured gates.
pub async fn deployer(
    cfg: &Config,
    svc: &DeployServiceConfig,
    docker: Arc<BollardRuntime>,
) -> Result<Deployer> {
    let runner = Arc::new(TokioCommandRunner);
    let switch = Arc::new(NginxUpstream {
        conf_path: svc.nginx_upstream_file.clone(),
        upstream_name: svc.upstream_name().to_string(),
        runner: runner.clone(),
        program: svc.nginx_program.clone(),
        drain_grace: Duration::from_secs(svc.drain_timeout_secs),
    });
    let mut d = Deployer::new(docker.clone(), docker.clone(), switch, lock_dir(cfg));
    d.environment = cfg.environment.to_string();
    // The executor writes the audit entry of the step (one entry per deploy).
    d.audit = None;
    if let Some(argv) = &svc.test_command {
        let (program, args) = argv
            .split_first()
            .context("test_command is an empty command")?;
        let mut spec = CommandSpec::new(program.clone())
            .args(args.iter().cloned())
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
        let repos = super::backup::repositories(cfg, &[])
            .await
            .context("open the backup repositories for the fresh-backup gate")?;
        d.pre_gates.push(Box::new(FreshBackupGate {
            source: Arc::new(RepositoryFreshness { repos }),
            max_age: Duration::from_secs(hours.saturating_mul(3600)),
            clock: Arc::new(SystemClock),
        }));
    }
    if let (Some(addr), Some(path)) = (&svc.public_addr, &svc.health_path) {
        d.post_gates.push(Box::new(HttpHealthGate {
            addr: Some(
                addr.parse()
                    .with_context(|| format!("public_addr {addr:?} is not IP:PORT"))?,
            ),
            path: path.clone(),
            timeout: Duration::from_secs(10),
        }));
    }
    if let Some(secs) = svc.log_window_secs.filter(|s| *s > 0) {
        d.post_gates.push(Box::new(LogErrorsGate {
            containers: docker,
            window: Duration::from_secs(secs),
            pattern: LogErrorsGate::default_pattern(),
        }));
    }
    Ok(d)
}

/// The deploy step, keeping the full [`DeployReport`] (with the new container's last log
/// lines) for rendering; the executor only keeps its summary.
struct ReportingDeployStep {
    inner: DeployStep,
    report: Arc<Mutex<Option<DeployReport>>>,
}

#[async_trait]
impl Step for ReportingDeployStep {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn risk(&self) -> Risk {
        self.inner.risk()
    }
    fn target(&self) -> String {
        self.inner.target()
    }
    async fn plan(&self) -> Result<Plan, StepError> {
        self.inner.plan().await
    }
    async fn apply(&self) -> Result<StepOutput, StepError> {
        let d = &self.inner.deployer;
        let r = match self.inner.kind {
            DeployKind::Deploy => d.deploy(&self.inner.options).await,
            DeployKind::Rollback => d.rollback(&self.inner.options).await,
        };
        let summary = r.summary();
        let ok = r.succeeded();
        let data = serde_json::to_value(&r).unwrap_or_default();
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        if !ok {
            return Err(summary.into());
        }
        Ok(StepOutput {
            summary,
            findings: Vec::new(),
            data,
        })
    }
}

/// Runs the deploy or rollback under the executor (dry run, guard, audit log) and renders
/// it; a failed deploy is an error carrying the reason and the new container's last logs.
pub async fn run(
    out: &mut dyn Write,
    cfg: &Config,
    ex: &Executor,
    req: DeployRequest,
    format: OutputFormat,
) -> Result<()> {
    let Some(svc) = cfg.deploy.service(&req.service) else {
        let known: Vec<&str> = cfg
            .deploy
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        bail!(
            "no [[deploy.service]] named {:?} in tej.toml (configured: {})",
            req.service,
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    if req.kind == DeployKind::Deploy && req.image.as_deref().is_none_or(str::is_empty) {
        bail!("deploy needs --image IMAGE");
    }
    let docker = Arc::new(
        BollardRuntime::connect(req.docker_host.as_deref())
            .await
            .context("connect to the Docker engine")?,
    );
    let deployer = Arc::new(deployer(cfg, svc, docker).await?);
    let step = ReportingDeployStep {
        inner: DeployStep {
            deployer,
            options: options(svc, &req.project, req.image.as_deref()),
            kind: req.kind,
        },
        report: Arc::new(Mutex::new(None)),
    };
    let slot = step.report.clone();
    let word = match req.kind {
        DeployKind::Deploy => "deploy",
        DeployKind::Rollback => "rollback",
    };
    let procedure = Procedure::new(format!("{word} {}", req.service)).step(step);
    let report = ex.run(&procedure).await;
    super::host::render_procedure(out, &report, format)?;
    let deployed = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(r) = &deployed {
        render_deploy(out, r, format)?;
    }
    if report.succeeded() {
        return Ok(());
    }
    match deployed {
        Some(r) => bail!("{}", failure_text(&r)),
        None => bail!(
            "{word} of {} did not run: {}",
            req.service,
            report
                .steps
                .first()
                .map(|s| serde_json::to_string(&s.outcome).unwrap_or_default())
                .unwrap_or_default()
        ),
    }
}

/// The reason of a failed deploy with the failed container's (or migration's) last lines.
pub fn failure_text(r: &DeployReport) -> String {
    let mut s = r.summary();
    for (what, lines) in [
        ("the new container's last log lines", &r.new_container_logs),
        ("the migration's last output lines", &r.migration_output),
    ] {
        if !lines.is_empty() {
            s.push_str(&format!("\n{what}:"));
            for l in lines {
                s.push_str("\n  ");
                s.push_str(l);
            }
        }
    }
    s
}

fn render_deploy(out: &mut dyn Write, r: &DeployReport, format: OutputFormat) -> Result<()> {
    match format {
        OutputFormat::Json => json_line(out, "deploy", r)?,
        OutputFormat::Text => {
            for e in &r.events {
                let stage = serde_json::to_value(e.stage)?
                    .as_str()
                    .unwrap_or("?")
                    .to_string();
                let at = e.at.strftime("%H:%M:%S%.3fZ");
                writeln!(out, "  {at} {stage:<10} {}", e.detail)?;
            }
            for g in &r.gates {
                writeln!(
                    out,
                    "  gate {}: {} ({})",
                    g.gate,
                    if g.passed { "passed" } else { "FAILED" },
                    g.detail
                )?;
            }
            for w in &r.warnings {
                writeln!(out, "  warning: {w}")?;
            }
        }
        OutputFormat::Nagios | OutputFormat::Prometheus => {
            writeln!(out, "{}", r.summary())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        let text = format!(
            "state_dir = \"/srv/tej\"\n[[deploy.service]]\nname = \"backend\"\nports = [3000, 3001]\nnginx_upstream_file = \"/u.conf\"\n{extra}"
        );
        Config::from_toml_with_env(&text, "t.toml", &|_| None).unwrap()
    }

    #[test]
    fn options_follow_the_service_config() {
        let c = cfg(
            "health_path = \"/health\"\nhealth_timeout_secs = 7\nmigrate = [\"npx\", \"prisma\", \"migrate\", \"deploy\"]\nstop_timeout_secs = 3\n",
        );
        let o = options(c.deploy.service("backend").unwrap(), "shop", Some("b:v2"));
        assert_eq!((o.project.as_str(), o.image.as_str()), ("shop", "b:v2"));
        assert_eq!(o.ports.ports, [3000, 3001]);
        assert_eq!(o.ports.env, "PORT");
        assert_eq!(
            o.probe,
            HealthProbe::Http {
                path: "/health".into()
            }
        );
        assert_eq!(o.health.deadline, Duration::from_secs(7));
        assert_eq!(o.migration.as_ref().unwrap()[0], "npx");
        assert_eq!(o.stop_timeout, Duration::from_secs(3));
        assert_eq!(lock_dir(&c), PathBuf::from("/srv/tej/locks"));

        let c = cfg("");
        let c = Config {
            deploy: tej_core::config::DeployConfig {
                lock_dir: Some("/run/tej".into()),
                ..c.deploy
            },
            ..c
        };
        let o = options(c.deploy.service("backend").unwrap(), "shop", None);
        assert_eq!(o.probe, HealthProbe::Docker);
        assert_eq!(o.migration, None);
        assert_eq!(lock_dir(&c), PathBuf::from("/run/tej"));
        assert_eq!(
            lock_dir(&Config::default()),
            PathBuf::from("/var/lib/tej/locks")
        );
    }
}

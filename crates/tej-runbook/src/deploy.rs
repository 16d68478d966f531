//! The runbook's "Standard Deployment (Zero Downtime)" and its rollback: a
//! `[[deploy.service]]` of `tej.toml` deployed as one step under an [`Executor`] (dry run,
//! guard, audit log), the same way for the CLI and the examples.
//!
//! tej-deploy builds the options and the deployer ([`DeployOptions::from_config`],
//! [`Deployer::from_config`]); the one gate that needs another domain, "a fresh backup
//! exists" (`backup_max_age_hours`), is added here over tej-backup's catalogue
//! ([`RepositoryFreshness`]).

use crate::error::{Result, RunbookError};
use crate::procedures::context::{RepositoryTarget, RunContext, RunOptions};
use async_trait::async_trait;
use jiff::Timestamp;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tej_backup::{BackupKind, is_usable, list_backups};
use tej_core::{
    CommandRunner, Config, Executor, Plan, Procedure, ProcedureReport, Risk, Step, StepError,
    StepOutput, SystemClock,
};
use tej_deploy::{
    BackupFreshness, ContainerRuntime, DeployKind, DeployOptions, DeployReport, DeployStep,
    Deployer, FreshBackupGate, ImageStore,
};

/// The finish time of the newest usable ([`is_usable`]) database backup across the
/// repositories: file backups and backups whose verification failed do not count.
pub struct RepositoryFreshness {
    /// The repositories read.
    pub repositories: Vec<RepositoryTarget>,
}

impl std::fmt::Debug for RepositoryFreshness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.repositories.iter().map(|r| r.name.as_str()).collect();
        f.debug_struct("RepositoryFreshness")
            .field("repositories", &names)
            .finish()
    }
}

#[async_trait]
impl BackupFreshness for RepositoryFreshness {
    async fn latest_backup(&self) -> std::result::Result<Option<Timestamp>, StepError> {
        let mut latest: Option<Timestamp> = None;
        for target in &self.repositories {
            let repo = target.repo.get().await?;
            let backups = list_backups(&repo)
                .await
                .map_err(|e| format!("list backups in {}: {e}", target.name))?;
            // A database backup: file backups do not restore the database.
            for b in backups
                .iter()
                .filter(|b| b.kind != BackupKind::Files && is_usable(b))
            {
                latest = latest.max(Some(b.finished_at));
            }
        }
        Ok(latest)
    }
}

/// What to deploy.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// Deploy a new image or roll back to the previous one.
    pub kind: DeployKind,
    /// The `[[deploy.service]]` name.
    pub service: String,
    /// The image (deploy only).
    pub image: Option<String>,
    /// The Compose project (`None`: `[compose] project`).
    pub project: Option<String>,
}

/// The engine a deploy runs on.
#[derive(Clone)]
pub struct DeployEngine {
    /// Containers.
    pub containers: Arc<dyn ContainerRuntime>,
    /// Images.
    pub images: Arc<dyn ImageStore>,
    /// Runs the tests gate and nginx.
    pub runner: Arc<dyn CommandRunner>,
}

impl std::fmt::Debug for DeployEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeployEngine").finish_non_exhaustive()
    }
}

/// What a deploy did: the executor's report (plan, outcome, audit) and, when the deploy
/// ran, the deployer's full report (events, gates, the new container's last log lines).
#[derive(Debug)]
pub struct DeployRun {
    /// The procedure report of the one deploy step.
    pub procedure: ProcedureReport,
    /// The deploy's own report; `None` when the step did not run (dry run, refused).
    pub deploy: Option<DeployReport>,
}

/// The deployer of `service`: tej-deploy's from its configuration, plus the fresh-backup
/// gate when `backup_max_age_hours` is set (the repositories of `[backup] repositories`).
pub async fn deployer_from_config(
    cfg: &Config,
    service: &str,
    engine: &DeployEngine,
) -> Result<Deployer> {
    let svc = tej_deploy::deploy_service(cfg, service)?;
    let mut d = Deployer::from_config(
        cfg,
        service,
        engine.containers.clone(),
        engine.images.clone(),
        engine.runner.clone(),
    )?;
    if let Some(hours) = svc.backup_max_age_hours {
        let ctx = RunContext::from_config(cfg, RunOptions::default())?;
        if ctx.repositories.is_empty() {
            return Err(RunbookError::Refused(format!(
                "open the backup repositories for the fresh-backup gate: no repository: set [backup] repositories in tej.toml (backup_max_age_hours of [[deploy.service]] {service})"
            )));
        }
        for r in &ctx.repositories {
            r.repo.get().await.map_err(|e| {
                RunbookError::Refused(format!(
                    "open the backup repositories for the fresh-backup gate: open repository {}: {e}",
                    r.name
                ))
            })?;
        }
        d.pre_gates.push(Box::new(FreshBackupGate {
            source: Arc::new(RepositoryFreshness {
                repositories: ctx.repositories,
            }),
            max_age: Duration::from_secs(hours.saturating_mul(3600)),
            clock: Arc::new(SystemClock),
        }));
    }
    Ok(d)
}

/// Deploys (or rolls back) `req.service` as one step under `ex`: planned in a dry run,
/// audited by the executor (one entry per deploy), refused by its guard.
pub async fn deploy_service(
    cfg: &Config,
    ex: &Executor,
    engine: &DeployEngine,
    req: &DeployRequest,
) -> Result<DeployRun> {
    let options = DeployOptions::from_config(
        cfg,
        &req.service,
        req.project.as_deref(),
        req.image.as_deref(),
    )?;
    let deployer = Arc::new(deployer_from_config(cfg, &req.service, engine).await?);
    let step = ReportingDeployStep {
        inner: DeployStep {
            deployer,
            options,
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
    let procedure = ex.run(&procedure).await;
    let deploy = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    Ok(DeployRun { procedure, deploy })
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
    async fn plan(&self) -> std::result::Result<Plan, StepError> {
        self.inner.plan().await
    }
    async fn apply(&self) -> std::result::Result<StepOutput, StepError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tej_core::MockCommandRunner;
    use tej_deploy::{MockContainerRuntime, MockImageStore};

    fn engine() -> DeployEngine {
        DeployEngine {
            containers: Arc::new(MockContainerRuntime::new()),
            images: Arc::new(MockImageStore::new()),
            runner: Arc::new(MockCommandRunner::new()),
        }
    }

    fn cfg(extra: &str) -> Config {
        let text = format!(
            "{extra}\n[compose]\nproject = \"shop\"\n[[deploy.service]]\nname = \"web\"\nports = [3000, 3001]\nnginx_upstream_file = \"/u.conf\"\ntest_command = [\"true\"]\nbackup_max_age_hours = 24\n"
        );
        Config::from_toml_with_env(&text, "t.toml", &|_| None).unwrap()
    }

    #[tokio::test]
    async fn the_fresh_backup_gate_reads_the_configured_repositories() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("backups");
        std::fs::create_dir(&repo).unwrap();
        let c = cfg(&format!(
            "[backup]\nrepositories = [\"{}\"]",
            repo.display()
        ));
        let d = deployer_from_config(&c, "web", &engine()).await.unwrap();
        let gates: Vec<String> = d.pre_gates.iter().map(|g| g.name()).collect();
        assert_eq!(gates, ["tests", "backup-fresh"]);
    }

    #[tokio::test]
    async fn missing_repositories_and_services_are_named() {
        // tej.toml refuses the gate without repositories; a configuration built in code
        // is refused here, before anything runs.
        let mut c = cfg("[backup]\nrepositories = [\"/srv/backups\"]");
        c.backup.repositories.clear();
        let e = deployer_from_config(&c, "web", &engine())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("[backup] repositories"), "{e}");
        let e = deployer_from_config(&c, "worker", &engine())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("(configured: web)"), "{e}");
    }
}

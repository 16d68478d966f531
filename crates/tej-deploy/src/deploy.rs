//! Zero-downtime deploy of a new image for one service, with rollback.
//!
//! The state machine, in order (each failure point named by its [`DeployStage`]):
//!
//! 1. **Lock**: take the project's [`DeployLock`].
//! 2. **PreGates**: the pre-deployment checklist ([`Gate`]s).
//! 3. **Discover**: the service's running container and its configuration; its port
//!    (from the port environment variable) must be one of the two blue/green ports.
//! 4. **Image**: resolve the new image.
//! 5. **Migration** (when configured): a one-off container of the new image with the
//!    service's configuration runs the migration command and must exit 0.
//! 6. **Create** and 7. **Start** the new container beside the old one, on the other port.
//! 8. **Health**: wait for its health (Docker healthcheck or HTTP probe) within the deadline.
//! 9. **Switch**: the [`TrafficSwitch`] sends new connections to the new container.
//! 10. **PostGates**: the post-deployment checklist; on failure traffic goes back to the
//!     old container, which has kept running.
//! 11. **Tag**: the old image is tagged `tej-rollback/PROJECT-SERVICE:previous`.
//! 12. **Drain** the old container, 13. **StopOld**, 14. **RemoveOld**.
//!
//! Up to and including step 10 a failure removes the new container and leaves the old one
//! serving; the report carries the new container's last log lines. Failures from step 11
//! on happen after the new container serves: they are warnings on a successful deploy.

use crate::compose::{Project, as_replica, create_and_start, next_container_name};
use crate::error::DeployError;
use crate::gates::{Gate, GateContext, GateResult, run_gates};
use crate::health::{HealthProbe, HealthWait, wait_healthy};
use crate::images::{ROLLBACK_REPO_PREFIX, ROLLBACK_TAG, rollback_repo};
use crate::lock::DeployLock;
use crate::model::{
    ContainerDetails, ContainerSpec, Control, HealthcheckSpec, LABEL_ONEOFF, LogQuery, short_id,
};
use crate::runtime::{ContainerRuntime, ImageStore};
use crate::switch::TrafficSwitch;
use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tej_core::{
    AuditLog, AuditScope, Clock, Outcome, Plan, Risk, Severity, Step, StepError, StepOutput,
    StepReport,
};

/// The two loopback ports a service alternates between (blue/green) with host networking,
/// and the environment variable that tells the service which one to listen on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlueGreenPorts {
    /// The environment variable holding the listen port (`PORT`).
    pub env: String,
    /// The two ports.
    pub ports: [u16; 2],
}

impl BlueGreenPorts {
    /// The port that is not `current`, if `current` is one of the two.
    pub fn other(&self, current: u16) -> Option<u16> {
        match self.ports {
            [a, b] if a == current => Some(b),
            [a, b] if b == current => Some(a),
            _ => None,
        }
    }
}

/// What to deploy and how.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployOptions {
    /// Compose project.
    pub project: String,
    /// Service.
    pub service: String,
    /// The image to deploy (reference or id); ignored by [`Deployer::rollback`].
    pub image: String,
    /// The blue/green ports.
    pub ports: BlueGreenPorts,
    /// How health is judged.
    pub probe: HealthProbe,
    /// Health deadline and polling.
    pub health: HealthWait,
    /// Migration command run in a one-off container of the new image first
    /// (`["npx", "prisma", "migrate", "deploy"]`).
    pub migration: Option<Vec<String>>,
    /// Most time the migration may take.
    pub migration_timeout: Duration,
    /// Grace period when stopping containers.
    pub stop_timeout: Duration,
    /// Most time to wait for the old container's connections to finish.
    pub drain_timeout: Duration,
    /// Log lines of a failed new container (or migration) kept in the report.
    pub failure_log_lines: usize,
}

impl DeployOptions {
    /// Options with the defaults: Docker healthcheck, 60 s health deadline, no migration,
    /// 10 s stop grace, 30 s drain, 50 log lines.
    pub fn new(
        project: impl Into<String>,
        service: impl Into<String>,
        image: impl Into<String>,
        ports: BlueGreenPorts,
    ) -> DeployOptions {
        DeployOptions {
            project: project.into(),
            service: service.into(),
            image: image.into(),
            ports,
            probe: HealthProbe::Docker,
            health: HealthWait::default(),
            migration: None,
            migration_timeout: Duration::from_secs(600),
            stop_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            failure_log_lines: 50,
        }
    }

    fn target(&self) -> String {
        format!("{}/{}", self.project, self.service)
    }
}

/// Where a deploy is, or where it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeployStage {
    /// Taking the deploy lock.
    Lock,
    /// Pre-deployment gates.
    PreGates,
    /// Finding the running container.
    Discover,
    /// Resolving the image.
    Image,
    /// Running the migration.
    Migration,
    /// Creating the new container.
    Create,
    /// Starting it.
    Start,
    /// Waiting for its health.
    Health,
    /// Switching traffic.
    Switch,
    /// Post-deployment gates.
    PostGates,
    /// Tagging the previous image for rollback.
    Tag,
    /// Draining the old container.
    Drain,
    /// Stopping the old container.
    StopOld,
    /// Removing the old container.
    RemoveOld,
    /// Done.
    Done,
}

/// Deploy or rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployKind {
    /// A new image.
    Deploy,
    /// Back to the previous image.
    Rollback,
}

/// How a deploy ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum DeployOutcome {
    /// The new container serves; the old one is gone (see warnings for cleanup problems).
    Deployed,
    /// The deploy stopped; the old container (if there was one) still serves.
    Failed {
        /// Where it stopped.
        stage: DeployStage,
        /// Why.
        reason: String,
    },
}

/// One thing that happened during a deploy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeployEvent {
    /// When.
    pub at: Timestamp,
    /// In which stage.
    pub stage: DeployStage,
    /// What.
    pub detail: String,
}

/// What a deploy did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeployReport {
    /// Deploy or rollback.
    pub kind: DeployKind,
    /// Project.
    pub project: String,
    /// Service.
    pub service: String,
    /// The image deployed (reference).
    pub image: String,
    /// Its short id, once resolved.
    pub image_id: Option<String>,
    /// The old container's image (short id), now tagged for rollback on success.
    pub previous_image_id: Option<String>,
    /// Old container's name.
    pub old_container: Option<String>,
    /// New container's name.
    pub new_container: Option<String>,
    /// Old port.
    pub old_port: Option<u16>,
    /// New port.
    pub new_port: Option<u16>,
    /// How it ended.
    pub outcome: DeployOutcome,
    /// Gate verdicts, pre then post.
    pub gates: Vec<GateResult>,
    /// The migration's last log lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub migration_output: Vec<String>,
    /// The failed new container's last log lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub new_container_logs: Vec<String>,
    /// Problems that did not fail the deploy (old container not removed...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Everything that happened, in order.
    pub events: Vec<DeployEvent>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// The failure as a matchable error.
    #[serde(skip)]
    pub error: Option<DeployError>,
}

impl DeployReport {
    /// True when the new container serves.
    pub fn succeeded(&self) -> bool {
        self.outcome == DeployOutcome::Deployed
    }

    /// Critical when failed, warning when deployed with warnings, else OK.
    pub fn severity(&self) -> Severity {
        match (&self.outcome, self.warnings.is_empty()) {
            (DeployOutcome::Failed { .. }, _) => Severity::Critical,
            (DeployOutcome::Deployed, false) => Severity::Warning,
            (DeployOutcome::Deployed, true) => Severity::Ok,
        }
    }

    /// One line for a human.
    pub fn summary(&self) -> String {
        match &self.outcome {
            DeployOutcome::Deployed => format!(
                "{} {}/{}: {} serves {} on port {}{}",
                self.kind_word(),
                self.project,
                self.service,
                self.new_container.as_deref().unwrap_or("?"),
                self.image,
                self.new_port.map(|p| p.to_string()).unwrap_or_default(),
                if self.warnings.is_empty() {
                    String::new()
                } else {
                    format!(" ({} warnings)", self.warnings.len())
                }
            ),
            DeployOutcome::Failed { stage, reason } => format!(
                "{} {}/{} of {} failed at {stage:?}: {reason}; {}",
                self.kind_word(),
                self.project,
                self.service,
                self.image,
                match &self.old_container {
                    Some(o) => format!("{o} keeps serving"),
                    None => "nothing was changed".into(),
                }
            ),
        }
    }

    fn kind_word(&self) -> &'static str {
        match self.kind {
            DeployKind::Deploy => "deploy",
            DeployKind::Rollback => "rollback",
        }
    }

    /// The report when deployed, else its error.
    pub fn into_result(self) -> Result<DeployReport, DeployError> {
        match (&self.outcome, &self.error) {
            (DeployOutcome::Deployed, _) => Ok(self),
            (DeployOutcome::Failed { .. }, Some(e)) => Err(e.clone()),
            (DeployOutcome::Failed { stage, reason }, None) => Err(DeployError::Engine {
                status: 0,
                message: format!("{stage:?}: {reason}"),
            }),
        }
    }
}

/// Runs deploys and rollbacks of Compose services.
pub struct Deployer {
    /// Containers.
    pub containers: Arc<dyn ContainerRuntime>,
    /// Images.
    pub images: Arc<dyn ImageStore>,
    /// Where the service's traffic is switched.
    pub switch: Arc<dyn TrafficSwitch>,
    /// Directory of the deploy lock files.
    pub lock_dir: PathBuf,
    /// Where every deploy is recorded.
    pub audit: Option<AuditLog>,
    /// Environment name for the audit log (`production`).
    pub environment: String,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Pre-deployment checklist.
    pub pre_gates: Vec<Box<dyn Gate>>,
    /// Post-deployment checklist (run after the switch, while the old container still runs).
    pub post_gates: Vec<Box<dyn Gate>>,
}

impl std::fmt::Debug for Deployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployer")
            .field("lock_dir", &self.lock_dir)
            .field("audit", &self.audit)
            .field("environment", &self.environment)
            .field("pre_gates", &self.pre_gates.len())
            .field("post_gates", &self.post_gates.len())
            .finish_non_exhaustive()
    }
}

struct Failure(DeployStage, DeployError);

fn fail(stage: DeployStage) -> impl FnOnce(DeployError) -> Failure {
    move |e| Failure(stage, e)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Deployer {
    /// A deployer with no gates, no audit log and the system clock.
    pub fn new(
        containers: Arc<dyn ContainerRuntime>,
        images: Arc<dyn ImageStore>,
        switch: Arc<dyn TrafficSwitch>,
        lock_dir: impl Into<PathBuf>,
    ) -> Deployer {
        Deployer {
            containers,
            images,
            switch,
            lock_dir: lock_dir.into(),
            audit: None,
            environment: String::new(),
            clock: Arc::new(tej_core::SystemClock),
            pre_gates: Vec::new(),
            post_gates: Vec::new(),
        }
    }

    /// Deploys `opts.image` to `opts.service` with no downtime (see the module docs).
    pub async fn deploy(&self, opts: &DeployOptions) -> DeployReport {
        self.run(opts, DeployKind::Deploy).await
    }

    /// Deploys the service's previous image (tagged by the last successful deploy) the same
    /// way; `opts.image` is ignored. The image replaced becomes the new "previous".
    pub async fn rollback(&self, opts: &DeployOptions) -> DeployReport {
        self.run(opts, DeployKind::Rollback).await
    }

    async fn run(&self, opts: &DeployOptions, kind: DeployKind) -> DeployReport {
        let started = tokio::time::Instant::now();
        let mut r = DeployReport {
            kind,
            project: opts.project.clone(),
            service: opts.service.clone(),
            image: opts.image.clone(),
            image_id: None,
            previous_image_id: None,
            old_container: None,
            new_container: None,
            old_port: None,
            new_port: None,
            outcome: DeployOutcome::Deployed,
            gates: Vec::new(),
            migration_output: Vec::new(),
            new_container_logs: Vec::new(),
            warnings: Vec::new(),
            events: Vec::new(),
            duration_ms: 0,
            error: None,
        };
        let result = match DeployLock::acquire(
            &self.lock_dir,
            &opts.project,
            &format!("{} {}", r.kind_word(), opts.target()),
        ) {
            Err(e) => Err(Failure(DeployStage::Lock, e)),
            Ok(lock) => {
                let res = self.steps(opts, kind, &mut r).await;
                drop(lock);
                res
            }
        };
        if let Err(Failure(stage, e)) = result {
            self.event(&mut r, stage, format!("failed: {e}"));
            r.outcome = DeployOutcome::Failed {
                stage,
                reason: e.to_string(),
            };
            r.error = Some(e);
        } else {
            let summary = r.summary();
            self.event(&mut r, DeployStage::Done, summary);
        }
        r.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.audit(opts, &mut r);
        r
    }

    fn event(&self, r: &mut DeployReport, stage: DeployStage, detail: impl Into<String>) {
        let detail = detail.into();
        tracing::info!(stage = ?stage, %detail, "deploy");
        r.events.push(DeployEvent {
            at: self.clock.now(),
            stage,
            detail,
        });
    }

    /// Records the deploy as one step in the audit log, through the writer the Executor uses.
    fn audit(&self, opts: &DeployOptions, r: &mut DeployReport) {
        let Some(log) = &self.audit else { return };
        let summary = r.summary();
        let step = StepReport {
            step: format!("{}-service", r.kind_word()),
            target: opts.target(),
            risk: Risk::Mutating,
            outcome: if r.succeeded() {
                Outcome::Applied
            } else {
                Outcome::Failed {
                    error: summary.clone(),
                }
            },
            actions: Vec::new(),
            output: Some(StepOutput::summary(summary)),
            duration_ms: r.duration_ms,
        };
        let scope = AuditScope {
            at: self.clock.now(),
            environment: &self.environment,
            window_overridden: false,
        };
        if let Err(e) = log.record_step(r.kind_word(), &step, scope) {
            r.warnings.push(format!(
                "could not write the audit log {}: {e}",
                log.path().display()
            ));
        }
    }

    /// The image to roll back to: a human tag of the previous image when one still names
    /// it, else its id.
    async fn previous_image(&self, opts: &DeployOptions) -> Result<String, DeployError> {
        let reference = format!(
            "{}:{ROLLBACK_TAG}",
            rollback_repo(&opts.project, &opts.service)
        );
        let prev = match self.images.inspect_image(&reference).await {
            Err(DeployError::NotFound { .. }) => {
                return Err(DeployError::NotFound {
                    what: format!(
                        "previous image of {} ({reference}): no deploy recorded one",
                        opts.target()
                    ),
                });
            }
            r => r?,
        };
        for t in prev
            .repo_tags
            .iter()
            .filter(|t| !t.starts_with(ROLLBACK_REPO_PREFIX))
        {
            if let Ok(i) = self.images.inspect_image(t).await
                && i.id == prev.id
            {
                return Ok(t.clone());
            }
        }
        Ok(prev.id)
    }

    async fn steps(
        &self,
        opts: &DeployOptions,
        kind: DeployKind,
        r: &mut DeployReport,
    ) -> Result<(), Failure> {
        let rt = &*self.containers;
        let project = Project::new(opts.project.clone());
        let since = self.clock.now();
        self.event(r, DeployStage::Lock, "deploy lock taken");

        // Pre-deployment gates.
        let ctx = GateContext {
            project: opts.project.clone(),
            service: opts.service.clone(),
            new_container: None,
            new_port: None,
            since,
        };
        let (results, res) = run_gates(&self.pre_gates, &ctx).await;
        r.gates.extend(results);
        res.map_err(fail(DeployStage::PreGates))?;
        if !self.pre_gates.is_empty() {
            self.event(r, DeployStage::PreGates, "pre-deployment gates passed");
        }

        // The running container and its configuration.
        let old_listing = project
            .running_container(rt, &opts.service)
            .await
            .map_err(fail(DeployStage::Discover))?;
        let old = rt
            .inspect_container(&old_listing.id)
            .await
            .map_err(fail(DeployStage::Discover))?;
        r.old_container = Some(old.name.clone());
        r.previous_image_id = Some(short_id(&old.image_id).to_string());
        if old.spec.network_mode.as_deref() != Some("host") {
            return Err(Failure(
                DeployStage::Discover,
                DeployError::Config {
                    reason: format!(
                        "{} uses network mode {:?}; blue/green deploys need host networking",
                        old.name,
                        old.spec.network_mode.as_deref().unwrap_or("default")
                    ),
                },
            ));
        }
        let old_port = old
            .spec
            .env_var(&opts.ports.env)
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| {
                Failure(
                    DeployStage::Discover,
                    DeployError::Config {
                        reason: format!(
                            "{} has no numeric {} in its environment",
                            old.name, opts.ports.env
                        ),
                    },
                )
            })?;
        let new_port = opts.ports.other(old_port).ok_or_else(|| {
            Failure(
                DeployStage::Discover,
                DeployError::Config {
                    reason: format!(
                        "{} listens on {old_port}, which is not one of the blue/green ports {:?}",
                        old.name, opts.ports.ports
                    ),
                },
            )
        })?;
        r.old_port = Some(old_port);
        r.new_port = Some(new_port);
        if let Some(active) = self
            .switch
            .active()
            .await
            .map_err(fail(DeployStage::Discover))?
            && active != loopback(old_port)
        {
            return Err(Failure(
                DeployStage::Discover,
                DeployError::Config {
                    reason: format!(
                        "traffic goes to {active} but {} listens on {old_port}; fix the switch first",
                        old.name
                    ),
                },
            ));
        }
        self.event(
            r,
            DeployStage::Discover,
            format!(
                "{} serves on port {old_port}; the new container gets {new_port}",
                old.name
            ),
        );

        // The image.
        let image_ref = match kind {
            DeployKind::Deploy => opts.image.clone(),
            DeployKind::Rollback => self
                .previous_image(opts)
                .await
                .map_err(fail(DeployStage::Image))?,
        };
        r.image = image_ref.clone();
        let image = self
            .images
            .inspect_image(&image_ref)
            .await
            .map_err(fail(DeployStage::Image))?;
        r.image_id = Some(short_id(&image.id).to_string());
        let old_image = self
            .images
            .inspect_image(&old.image_id)
            .await
            .map_err(fail(DeployStage::Image))?;
        self.event(
            r,
            DeployStage::Image,
            format!("{image_ref} is {}", short_id(&image.id)),
        );
        let mut spec = old.spec.without_image_defaults(&old_image.defaults);
        spec.image = image_ref.clone();

        // Migration.
        if let Some(cmd) = &opts.migration {
            self.migrate(opts, &spec, cmd, r).await?;
        }

        // The new container beside the old one.
        let siblings: Vec<String> = project
            .containers(rt, Some(&opts.service))
            .await
            .map_err(fail(DeployStage::Create))?
            .into_iter()
            .map(|c| c.name)
            .collect();
        let (name, number) = next_container_name(&siblings, &old.name);
        as_replica(&mut spec, name.clone(), number);
        spec.set_env(&opts.ports.env, &new_port.to_string());
        let new_id = rt
            .create_container(&spec)
            .await
            .map_err(fail(DeployStage::Create))?;
        r.new_container = Some(name.clone());
        self.event(
            r,
            DeployStage::Create,
            format!("created {name} ({})", short_id(&new_id)),
        );
        if let Err(e) = rt.control(&new_id, Control::Start).await {
            self.discard_new(r, DeployStage::Start, &new_id, opts, false)
                .await;
            return Err(Failure(DeployStage::Start, e));
        }
        self.event(r, DeployStage::Start, format!("started {name}"));

        // Health.
        if let Err(e) = wait_healthy(rt, &new_id, &opts.probe, Some(new_port), opts.health).await {
            self.discard_new(r, DeployStage::Health, &new_id, opts, true)
                .await;
            return Err(Failure(DeployStage::Health, e));
        }
        self.event(r, DeployStage::Health, format!("{name} is healthy"));

        // Switch.
        if let Err(e) = self.switch.switch_to(loopback(new_port)).await {
            // A half-applied switch must not leave traffic on a container about to go.
            let _ = self.switch.switch_to(loopback(old_port)).await;
            self.discard_new(r, DeployStage::Switch, &new_id, opts, false)
                .await;
            return Err(Failure(DeployStage::Switch, e));
        }
        self.event(
            r,
            DeployStage::Switch,
            format!("traffic switched to 127.0.0.1:{new_port}"),
        );

        // Post-deployment gates, with the old container still running.
        let ctx = GateContext {
            new_container: Some(new_id.clone()),
            new_port: Some(new_port),
            since: self.clock.now(),
            ..ctx
        };
        let (results, res) = run_gates(&self.post_gates, &ctx).await;
        r.gates.extend(results);
        if let Err(e) = res {
            match self.switch.switch_to(loopback(old_port)).await {
                Ok(()) => self.event(
                    r,
                    DeployStage::PostGates,
                    format!("traffic switched back to 127.0.0.1:{old_port}"),
                ),
                Err(se) => r.warnings.push(format!(
                    "could not switch traffic back to {}: {se}; it still goes to {name}, which is being removed",
                    old.name
                )),
            }
            self.discard_new(r, DeployStage::PostGates, &new_id, opts, true)
                .await;
            return Err(Failure(DeployStage::PostGates, e));
        }
        if !self.post_gates.is_empty() {
            self.event(r, DeployStage::PostGates, "post-deployment gates passed");
        }

        // From here on the new container serves: problems are warnings.
        self.finish_old(opts, &old, r).await;
        Ok(())
    }

    async fn migrate(
        &self,
        opts: &DeployOptions,
        service_spec: &ContainerSpec,
        cmd: &[String],
        r: &mut DeployReport,
    ) -> Result<(), Failure> {
        let rt = &*self.containers;
        let mut spec = service_spec.clone();
        spec.name = None;
        spec.cmd = Some(cmd.to_vec());
        spec.labels.insert(LABEL_ONEOFF.to_string(), "True".into());
        spec.healthcheck = Some(HealthcheckSpec {
            test: vec!["NONE".into()],
            interval: None,
            timeout: None,
            retries: None,
            start_period: None,
        });
        spec.restart_policy = Some("no".into());
        let shown = cmd.join(" ");
        let id = create_and_start(rt, &spec)
            .await
            .map_err(fail(DeployStage::Migration))?;
        self.event(
            r,
            DeployStage::Migration,
            format!("running {shown} in {}", short_id(&id)),
        );
        let waited = rt.wait_exit(&id, opts.migration_timeout).await;
        r.migration_output = self.last_lines(&id, opts.failure_log_lines).await;
        if let Err(e) = rt.remove_container(&id, true).await {
            r.warnings.push(format!(
                "could not remove migration container {}: {e}",
                short_id(&id)
            ));
        }
        match waited {
            Ok(0) => {
                self.event(r, DeployStage::Migration, format!("{shown} succeeded"));
                Ok(())
            }
            Ok(code) => Err(Failure(
                DeployStage::Migration,
                DeployError::MigrationFailed {
                    command: shown,
                    exit_code: code,
                },
            )),
            Err(e) => Err(Failure(DeployStage::Migration, e)),
        }
    }

    async fn last_lines(&self, id: &str, n: usize) -> Vec<String> {
        match self.containers.logs(id, &LogQuery::tail(n)).await {
            Ok(lines) => lines.into_iter().map(|l| l.text).collect(),
            Err(e) => vec![format!("(logs unavailable: {e})")],
        }
    }

    /// Removes a new container that will not serve, keeping its last log lines.
    async fn discard_new(
        &self,
        r: &mut DeployReport,
        stage: DeployStage,
        id: &str,
        opts: &DeployOptions,
        logs: bool,
    ) {
        if logs {
            r.new_container_logs = self.last_lines(id, opts.failure_log_lines).await;
        }
        match self.containers.remove_container(id, true).await {
            Ok(()) => {
                let what = format!("removed new container {}", short_id(id));
                self.event(r, stage, what);
            }
            Err(e) => r.warnings.push(format!(
                "could not remove the new container {}: {e}",
                short_id(id)
            )),
        }
    }

    async fn finish_old(&self, opts: &DeployOptions, old: &ContainerDetails, r: &mut DeployReport) {
        let rt = &*self.containers;
        let repo = rollback_repo(&opts.project, &opts.service);
        match self
            .images
            .tag_image(&old.image_id, &repo, ROLLBACK_TAG)
            .await
        {
            Ok(()) => self.event(
                r,
                DeployStage::Tag,
                format!(
                    "previous image {} tagged {repo}:{ROLLBACK_TAG}",
                    short_id(&old.image_id)
                ),
            ),
            Err(e) => r.warnings.push(format!(
                "could not tag the previous image for rollback: {e}"
            )),
        }
        match self
            .switch
            .drain(loopback(r.old_port.unwrap_or_default()), opts.drain_timeout)
            .await
        {
            Ok(0) => self.event(r, DeployStage::Drain, format!("{} drained", old.name)),
            Ok(n) => r.warnings.push(format!(
                "{n} connections to {} still open after {:?}; they are cut",
                old.name, opts.drain_timeout
            )),
            Err(e) => r
                .warnings
                .push(format!("could not drain {}: {e}", old.name)),
        }
        let stopped = rt
            .control(
                &old.id,
                Control::Stop {
                    timeout: opts.stop_timeout,
                },
            )
            .await;
        let stop_failed = stopped.is_err();
        match stopped {
            Ok(()) => self.event(r, DeployStage::StopOld, format!("stopped {}", old.name)),
            Err(e) => r.warnings.push(format!(
                "could not stop the old container {}: {e}",
                old.name
            )),
        }
        // Force (kill) only when the stop failed: the old container must not keep running.
        match rt.remove_container(&old.id, stop_failed).await {
            Ok(()) => self.event(r, DeployStage::RemoveOld, format!("removed {}", old.name)),
            Err(e) => r.warnings.push(format!(
                "could not remove the old container {}: {e}; remove it by hand",
                old.name
            )),
        }
    }
}

/// A deploy as a procedure step (mutating: a failed deploy leaves the old container serving).
pub struct DeployStep {
    /// The deployer.
    pub deployer: Arc<Deployer>,
    /// What to deploy.
    pub options: DeployOptions,
    /// Deploy or rollback.
    pub kind: DeployKind,
}

#[async_trait]
impl Step for DeployStep {
    fn name(&self) -> String {
        match self.kind {
            DeployKind::Deploy => "deploy-service".into(),
            DeployKind::Rollback => "rollback-service".into(),
        }
    }
    fn risk(&self) -> Risk {
        Risk::Mutating
    }
    fn target(&self) -> String {
        self.options.target()
    }
    async fn plan(&self) -> Result<Plan, StepError> {
        let o = &self.options;
        let image = match self.kind {
            DeployKind::Deploy => o.image.clone(),
            DeployKind::Rollback => {
                format!("{}:{ROLLBACK_TAG}", rollback_repo(&o.project, &o.service))
            }
        };
        let mut actions = vec![format!(
            "check {} pre-deployment gates",
            self.deployer.pre_gates.len()
        )];
        if let Some(m) = &o.migration {
            actions.push(format!(
                "run {} in a one-off container of {image}",
                m.join(" ")
            ));
        }
        actions.extend([
            format!(
                "start a container of {image} beside the running one, on the other of ports {:?}",
                o.ports.ports
            ),
            format!(
                "wait up to {:?} for it to be healthy ({:?})",
                o.health.deadline, o.probe
            ),
            "switch traffic to it".to_string(),
            format!(
                "check {} post-deployment gates",
                self.deployer.post_gates.len()
            ),
            "tag the old image for rollback, drain, stop and remove the old container".to_string(),
        ]);
        Ok(Plan::of(self, actions))
    }
    async fn apply(&self) -> Result<StepOutput, StepError> {
        let r = match self.kind {
            DeployKind::Deploy => self.deployer.deploy(&self.options).await,
            DeployKind::Rollback => self.deployer.rollback(&self.options).await,
        };
        if !r.succeeded() {
            return Err(r.summary().into());
        }
        Ok(StepOutput {
            summary: r.summary(),
            findings: Vec::new(),
            data: serde_json::to_value(&r).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gates::MockGate;
    use crate::model::{
        ContainerListing, ContainerState, HealthStatus, ImageDefaults, ImageInfo, LABEL_NUMBER,
        LABEL_PROJECT, LABEL_SERVICE, LogLine, LogStream,
    };
    use crate::runtime::{MockContainerRuntime, MockImageStore};
    use crate::switch::MockTrafficSwitch;
    use std::sync::Mutex;
    use tej_core::FakeClock;

    #[derive(Default, Clone, Copy)]
    struct Faults {
        create: bool,
        start: bool,
        unhealthy: bool,
        never_healthy: bool,
        migration_exit: Option<i64>,
        switch: bool,
        post_gate: bool,
        stop_old: bool,
        pre_gate: bool,
        no_previous: bool,
    }

    type Journal = Arc<Mutex<Vec<String>>>;

    fn note(j: &Journal, s: impl Into<String>) {
        j.lock().unwrap().push(s.into());
    }

    fn labels() -> std::collections::BTreeMap<String, String> {
        [
            (LABEL_PROJECT.to_string(), "shop".to_string()),
            (LABEL_SERVICE.to_string(), "backend".to_string()),
            (LABEL_NUMBER.to_string(), "1".to_string()),
            ("org.example.from-image".to_string(), "yes".to_string()),
        ]
        .into()
    }

    fn old_details(image_id: &str) -> ContainerDetails {
        ContainerDetails {
            id: "old".into(),
            name: "shop-backend-1".into(),
            image_id: image_id.into(),
            state: ContainerState::Running,
            health: HealthStatus::Healthy,
            last_health_output: None,
            restart_count: 0,
            started_at: None,
            exit_code: None,
            ports: vec![],
            spec: ContainerSpec {
                name: Some("shop-backend-1".into()),
                image: "shop/backend:v1".into(),
                env: vec![
                    "PATH=/bin".into(),
                    "PORT=3000".into(),
                    "DATABASE_URL=postgres://app:pw@127.0.0.1/app".into(),
                ],
                cmd: Some(vec!["/bin/serve".into()]),
                labels: labels(),
                network_mode: Some("host".into()),
                healthcheck: Some(HealthcheckSpec {
                    test: vec![
                        "CMD-SHELL".into(),
                        "wget -q -O- http://127.0.0.1:$PORT/health".into(),
                    ],
                    interval: Some(Duration::from_secs(1)),
                    timeout: None,
                    retries: Some(2),
                    start_period: None,
                }),
                restart_policy: Some("unless-stopped".into()),
                ..ContainerSpec::default()
            },
        }
    }

    fn image(id: &str, tags: &[&str]) -> ImageInfo {
        ImageInfo {
            id: id.into(),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            created: None,
            size: 1,
            defaults: ImageDefaults {
                cmd: Some(vec!["/bin/serve".into()]),
                env: vec!["PATH=/bin".into()],
                labels: [("org.example.from-image".to_string(), "yes".to_string())].into(),
                ..ImageDefaults::default()
            },
        }
    }

    struct Harness {
        deployer: Deployer,
        journal: Journal,
        created: Arc<Mutex<Vec<ContainerSpec>>>,
        _dir: tempfile::TempDir,
    }

    /// The running container runs `running_image`; "shop/backend:v2" is the new image.
    fn harness(f: Faults, running_image: &'static str) -> Harness {
        let j: Journal = Arc::default();
        let created: Arc<Mutex<Vec<ContainerSpec>>> = Arc::default();
        let mut rt = MockContainerRuntime::new();
        rt.expect_list_containers().returning(|_| {
            Ok(vec![ContainerListing {
                id: "old".into(),
                name: "shop-backend-1".into(),
                image: "shop/backend:v1".into(),
                image_id: "sha256:old".into(),
                labels: labels(),
                state: ContainerState::Running,
            }])
        });
        rt.expect_inspect_container()
            .withf(|id| id == "old")
            .returning(move |_| Ok(old_details(running_image)));
        rt.expect_inspect_container()
            .withf(|id| id == "new")
            .returning(move |_| {
                let mut d = old_details("sha256:new");
                d.id = "new".into();
                d.name = "shop-backend-2".into();
                d.health = if f.unhealthy {
                    HealthStatus::Unhealthy
                } else if f.never_healthy {
                    HealthStatus::Starting
                } else {
                    HealthStatus::Healthy
                };
                Ok(d)
            });
        let (j2, c2) = (j.clone(), created.clone());
        rt.expect_create_container().returning(move |s| {
            c2.lock().unwrap().push(s.clone());
            if s.labels.contains_key(LABEL_ONEOFF) {
                note(
                    &j2,
                    format!(
                        "create migration {}",
                        s.cmd.clone().unwrap_or_default().join(" ")
                    ),
                );
                return Ok("mig".into());
            }
            if f.create {
                note(&j2, "create failed");
                return Err(DeployError::Conflict {
                    reason: "name in use".into(),
                });
            }
            note(
                &j2,
                format!("create {}", s.name.clone().unwrap_or_default()),
            );
            Ok("new".into())
        });
        let j2 = j.clone();
        rt.expect_control().returning(move |id, a| {
            note(&j2, format!("{a:?} {id}").replace(" { timeout: 10s }", ""));
            match (id, a) {
                ("new", Control::Start) if f.start => Err(DeployError::Engine {
                    status: 500,
                    message: "exec format error".into(),
                }),
                ("old", Control::Stop { .. }) if f.stop_old => Err(DeployError::Engine {
                    status: 500,
                    message: "cannot kill".into(),
                }),
                _ => Ok(()),
            }
        });
        let j2 = j.clone();
        rt.expect_remove_container().returning(move |id, force| {
            note(
                &j2,
                format!("remove {id}{}", if force { " force" } else { "" }),
            );
            Ok(())
        });
        rt.expect_logs().returning(|_, q| {
            assert!(q.tail.is_some());
            Ok(["listening", "GET /health 500"]
                .iter()
                .map(|t| LogLine {
                    at: None,
                    stream: LogStream::Stdout,
                    container: String::new(),
                    text: t.to_string(),
                })
                .collect())
        });
        let j2 = j.clone();
        rt.expect_wait_exit().returning(move |id, _| {
            note(&j2, format!("wait {id}"));
            Ok(f.migration_exit.unwrap_or(0))
        });

        let mut im = MockImageStore::new();
        im.expect_inspect_image().returning(move |r| match r {
            "shop/backend:v2" => Ok(image("sha256:new", &["shop/backend:v2"])),
            "sha256:new" => Ok(image("sha256:new", &["shop/backend:v2"])),
            "sha256:old" | "shop/backend:v1" => Ok(image(
                "sha256:old",
                &["shop/backend:v1", "tej-rollback/shop-backend:previous"],
            )),
            "tej-rollback/shop-backend:previous" if !f.no_previous => Ok(image(
                "sha256:old",
                &["shop/backend:v1", "tej-rollback/shop-backend:previous"],
            )),
            other => Err(DeployError::NotFound {
                what: format!("No such image: {other}"),
            }),
        });
        let j2 = j.clone();
        im.expect_tag_image().returning(move |img, repo, tag| {
            note(&j2, format!("tag {img} {repo}:{tag}"));
            Ok(())
        });

        let mut sw = MockTrafficSwitch::new();
        sw.expect_active().returning(|| Ok(Some(loopback(3000))));
        let j2 = j.clone();
        sw.expect_switch_to().returning(move |a| {
            note(&j2, format!("switch {}", a.port()));
            if f.switch && a.port() == 3001 {
                return Err(DeployError::Switch {
                    reason: "nginx -t failed".into(),
                });
            }
            Ok(())
        });
        let j2 = j.clone();
        sw.expect_drain().returning(move |a, _| {
            note(&j2, format!("drain {}", a.port()));
            Ok(0)
        });

        let dir = tempfile::tempdir().unwrap();
        let mut d = Deployer::new(
            Arc::new(rt),
            Arc::new(im),
            Arc::new(sw),
            dir.path().join("locks"),
        );
        d.audit = Some(AuditLog::new(dir.path().join("audit.jsonl")));
        d.environment = "production".into();
        d.clock = Arc::new(FakeClock::new("2025-01-16T09:00:00Z".parse().unwrap()));
        let mut pre = MockGate::new();
        pre.expect_check().returning(move |_| {
            if f.pre_gate {
                GateResult::fail("backup-fresh", "latest backup is 3 days old")
            } else {
                GateResult::pass("backup-fresh", "ok")
            }
        });
        d.pre_gates.push(Box::new(pre));
        let mut post = MockGate::new();
        post.expect_check().returning(move |ctx| {
            assert_eq!(ctx.new_container.as_deref(), Some("new"));
            assert_eq!(ctx.new_port, Some(3001));
            if f.post_gate {
                GateResult::fail("log-errors", "2 error lines")
            } else {
                GateResult::pass("log-errors", "none")
            }
        });
        d.post_gates.push(Box::new(post));
        Harness {
            deployer: d,
            journal: j,
            created,
            _dir: dir,
        }
    }

    fn opts() -> DeployOptions {
        let mut o = DeployOptions::new(
            "shop",
            "backend",
            "shop/backend:v2",
            BlueGreenPorts {
                env: "PORT".into(),
                ports: [3000, 3001],
            },
        );
        o.health = HealthWait {
            deadline: Duration::from_secs(5),
            interval: Duration::from_millis(500),
        };
        o
    }

    fn journal(h: &Harness) -> Vec<String> {
        h.journal.lock().unwrap().clone()
    }

    fn failed_at(r: &DeployReport) -> Option<DeployStage> {
        match &r.outcome {
            DeployOutcome::Failed { stage, .. } => Some(*stage),
            DeployOutcome::Deployed => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_image_switches_then_retires_the_old_container() {
        let h = harness(Faults::default(), "sha256:old");
        let r = h.deployer.deploy(&opts()).await;
        assert!(r.succeeded(), "{}", r.summary());
        assert_eq!(r.severity(), Severity::Ok);
        assert_eq!(
            journal(&h),
            [
                "create shop-backend-2",
                "Start new",
                "switch 3001",
                "tag sha256:old tej-rollback/shop-backend:previous",
                "drain 3000",
                "Stop old",
                "remove old",
            ]
        );
        let spec = h.created.lock().unwrap()[0].clone();
        assert_eq!(spec.image, "shop/backend:v2");
        assert_eq!(spec.env_var("PORT"), Some("3001"));
        assert!(spec.env_var("DATABASE_URL").is_some(), "service env kept");
        assert_eq!(
            spec.env_var("PATH"),
            None,
            "image env left to the new image"
        );
        assert_eq!(spec.cmd, None, "image cmd left to the new image");
        assert_eq!(spec.labels.get(LABEL_NUMBER).map(String::as_str), Some("2"));
        assert!(!spec.labels.contains_key("org.example.from-image"));
        assert_eq!(spec.network_mode.as_deref(), Some("host"));
        assert_eq!(spec.restart_policy.as_deref(), Some("unless-stopped"));
        assert_eq!((r.old_port, r.new_port), (Some(3000), Some(3001)));
        assert_eq!(r.gates.len(), 2);
        let audit = h.deployer.audit.as_ref().unwrap().read_all().unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].outcome, "applied");
        assert_eq!(audit[0].target, "shop/backend");
        assert!(
            !std::fs::read_to_string(h.deployer.audit.as_ref().unwrap().path())
                .unwrap()
                .contains("pw@")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn create_failure_changes_nothing() {
        let h = harness(
            Faults {
                create: true,
                ..Faults::default()
            },
            "sha256:old",
        );
        let r = h.deployer.deploy(&opts()).await;
        assert_eq!(failed_at(&r), Some(DeployStage::Create));
        assert!(matches!(r.error, Some(DeployError::Conflict { .. })));
        assert_eq!(journal(&h), ["create failed"]);
        assert!(
            r.summary().contains("shop-backend-1 keeps serving"),
            "{}",
            r.summary()
        );
        let audit = h.deployer.audit.as_ref().unwrap().read_all().unwrap();
        assert_eq!(audit[0].outcome, "failed");
    }

    #[tokio::test(start_paused = true)]
    async fn start_failure_removes_the_new_container() {
        let h = harness(
            Faults {
                start: true,
                ..Faults::default()
            },
            "sha256:old",
        );
        let r = h.deployer.deploy(&opts()).await;
        assert_eq!(failed_at(&r), Some(DeployStage::Start));
        assert_eq!(
            journal(&h),
            ["create shop-backend-2", "Start new", "remove new force"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unhealthy_image_is_removed_with_its_logs_and_old_keeps_serving() {
        let h = harness(
            Faults {
                unhealthy: true,
                ..Faults::default()
            },
            "sha256:old",
        );
        let r = h.deployer.deploy(&opts()).await;
        assert_eq!(failed_at(&r), Some(DeployStage::Health));
        assert!(matches!(r.error, Some(DeployError::Unhealthy { .. })));
        assert_eq!(r.new_container_logs, ["listening", "GET /health 500"]);
        assert_eq!(
            journal(&h),
            ["create shop-backend-2", "Start new", "remove new force"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn health_timeout_is_bounded_by_the_deadline() {
        let h = harness(
            Faults {
                never_healthy: true,
                ..Faults::default()
            },
            "sha256:old",
        );
        let start = tokio::time::Instant::now();
        let r = h.deployer.deploy(&opts()).await;
        assert!(start.elapsed() <= Duration::from_secs(5));
        assert_eq!(failed_at(&r), Some(DeployStage::Health));
        match &r.error {
            Some(DeployError::Unhealthy { reason, .. }) => {
                assert!(reason.contains("within 5s"), "{reason}")
            }
            e => panic!("unexpected {e:?}"),
        }
        assert!(
            !journal(&h)
                .iter()
                .any(|c| c.starts_with("switch") || c == "Stop old")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn migration_runs_first_and_its_failure_stops_before_create() {
        let mut o = opts();
        o.migration = Some(
            ["npx", "prisma", "migrate", "deploy"]
                .map(String::from)
                .to_vec(),
        );
        let h = harness(
            Faults {
                migration_exit: Some(1),
                ..Faults::default()
            },
            "sha256:old",
        );
        let r = h.deployer.deploy(&o).await;
        assert_eq!(failed_at(&r), Some(DeployStage::Migration));
        assert!(matches!(
            r.error,
            Some(DeployError::MigrationFailed { exit_code: 1, .. })
        ));
        assert_eq!(r.migration_output.len(), 2);
        assert_eq!(
            journal(&h),
            [
                "create migration npx prisma migrate deploy",
                "Start mig",
                "wait mig",
                "remove mig force"
            ]
        );
        let mig = h.created.lock().unwrap()[0].clone();
        assert_eq!(mig.image, "shop/backend:v2");
        assert_eq!(mig.restart_policy.as_deref(), Some("no"));
        assert_eq!(mig.name, None);

        let h = harness(Faults::default(), "sha256:old");
        let r = h.deployer.deploy(&o).await;
        assert!(r.succeeded());
        assert_eq!(
            journal(&h)[..5],
            [
                "create migration npx prisma migrate deploy",
                "Start mig",
                "wait mig",
                "remove mig force",
                "create shop-backend-2"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn switch_failure_keeps_traffic_on_the_old_container() {
        let h = harness(
            Faults {
                switch: true,
                ..Faults::default()
            },
            "sha256:old",
        );
        let r = h.deployer.deploy(&opts()).await;
        assert_eq!(failed_at(&r), Some(DeployStage::Switch));
        assert_eq!(
            journal(&h),
            [
                "create shop-backend-2",
                "Start new",
                "switch 3001",
                "switch 3000",
                "remove new force"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_post_gate_switches_back_and_removes_the_new_container() {
        let h = harness(
            Faults {
                post_gate: true,
                ..Faults::default()
            },
            "sha256:old",
        );
        let r = h.deployer.deploy(&opts()).await;
        assert_eq!(failed_at(&r), Some(DeployStage::PostGates));
        assert!(
            matches!(&r.error, Some(DeployError::GateFailed { gate, .. }) if gate == "log-errors")
        );
        assert_eq!(
            journal(&h),
            [
                "create shop-backend-2",
                "Start new",
                "switch 3001",
                "switch 3000",
                "remove new force"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_stop_of_the_old_container_is_a_warning_and_it_is_force_removed() {
        let h = harness(
            Faults {
                stop_old: true,
                ..Faults::default()
            },
            "sha256:old",
        );
        let r = h.deployer.deploy(&opts()).await;
        assert!(r.succeeded());
        assert_eq!(r.severity(), Severity::Warning);
        assert!(
            r.warnings[0].contains("could not stop the old container shop-backend-1"),
            "{:?}",
            r.warnings
        );
        assert_eq!(journal(&h)[5..], ["Stop old", "remove old force"]);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_pre_gate_touches_nothing() {
        let h = harness(
            Faults {
                pre_gate: true,
                ..Faults::default()
            },
            "sha256:old",
        );
        let r = h.deployer.deploy(&opts()).await;
        assert_eq!(failed_at(&r), Some(DeployStage::PreGates));
        assert!(
            r.summary().contains("latest backup is 3 days old"),
            "{}",
            r.summary()
        );
        assert!(journal(&h).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_lock_refuses_a_second_deploy() {
        let h = harness(Faults::default(), "sha256:old");
        let _held = DeployLock::acquire(&h.deployer.lock_dir, "shop", "deploy frontend").unwrap();
        let r = h.deployer.deploy(&opts()).await;
        assert_eq!(failed_at(&r), Some(DeployStage::Lock));
        assert!(
            matches!(&r.error, Some(DeployError::Locked { holder, .. }) if holder.contains("deploy frontend"))
        );
        assert!(journal(&h).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn rollback_deploys_the_previous_image_by_its_tag_and_swaps_previous() {
        let h = harness(Faults::default(), "sha256:new");
        let r = h.deployer.rollback(&opts()).await;
        assert!(r.succeeded(), "{}", r.summary());
        assert_eq!(r.kind, DeployKind::Rollback);
        assert_eq!(r.image, "shop/backend:v1");
        assert_eq!(h.created.lock().unwrap()[0].image, "shop/backend:v1");
        assert!(
            journal(&h).contains(&"tag sha256:new tej-rollback/shop-backend:previous".to_string())
        );

        let h = harness(
            Faults {
                no_previous: true,
                ..Faults::default()
            },
            "sha256:new",
        );
        let r = h.deployer.rollback(&opts()).await;
        assert_eq!(failed_at(&r), Some(DeployStage::Image));
        assert!(matches!(r.error, Some(DeployError::NotFound { .. })));
        assert!(journal(&h).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn ports_outside_the_pair_are_refused() {
        let h = harness(Faults::default(), "sha256:old");
        let mut o = opts();
        o.ports.ports = [4000, 4001];
        let r = h.deployer.deploy(&o).await;
        assert_eq!(failed_at(&r), Some(DeployStage::Discover));
        assert!(matches!(r.error, Some(DeployError::Config { .. })));
        assert_eq!(o.ports.other(4001), Some(4000));
        assert_eq!(o.ports.other(1), None);
    }
}

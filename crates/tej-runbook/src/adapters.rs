//! Glue between domain crates, shared by the procedures and the CLI:
//!
//! - [`RedisSessions`]: tej-secrets' [`SessionStore`] over tej-db's [`RedisAdmin`].
//! - [`ComposeService`]: tej-secrets' [`ServiceControl`] over tej-deploy's [`ContainerRuntime`].
//! - [`RotateSecretsStep`]: a [`Rotator`] run as one [`tej_core::Step`] of a procedure.
//! - [`StopServicesStep`] / [`StartServicesStep`]: stop and start Compose services
//!   (the runbook's `docker-compose stop backend frontend` and `up -d`).
//! - [`LazyContainerRuntime`]: the Docker engine, connected on first use.
//! - [`AsDestructive`]: a step run as destructive whatever its own risk.

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tej_core::{Plan, Risk, Step, StepError, StepOutput};
use tej_db::redis::{InfoReport, InvalidateOptions, RedisAdmin, invalidate_sessions};
use tej_deploy::{
    ContainerRuntime, ContainerState, Control, DeployError, EnvOverride, HealthWait, LABEL_SERVICE,
    Project, RecreateOptions,
};
use tej_secrets::{
    AppProbe, RotateOptions, RotationMode, RotationOutcome, Rotator, SecretsError, ServiceControl,
    ServiceEnv, SessionStore, value_digest,
};

/// Sessions in Redis.
#[derive(Clone)]
pub struct RedisSessions(pub Arc<dyn RedisAdmin>);

impl std::fmt::Debug for RedisSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessions").finish_non_exhaustive()
    }
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn invalidate(&self, pattern: &str) -> tej_secrets::Result<u64> {
        let opts = InvalidateOptions {
            pattern: pattern.to_string(),
            ..InvalidateOptions::default()
        };
        invalidate_sessions(self.0.as_ref(), &opts)
            .await
            .map(|r| r.removed)
            .map_err(|e| SecretsError::Sessions(e.to_string()))
    }

    async fn flush_all_sessions(&self) -> tej_secrets::Result<u64> {
        let keys = self
            .0
            .info()
            .await
            .map(|text| InfoReport::parse(&text).total_keys())
            .unwrap_or(0);
        self.0
            .flush_db()
            .await
            .map_err(|e| SecretsError::Sessions(e.to_string()))?;
        Ok(keys)
    }
}

/// A Compose service recreated through the Docker Engine API with the `.env`'s new values
/// ([`Project::recreate_with_env`]: the old container is kept until the new one is healthy).
#[derive(Clone)]
pub struct ComposeService {
    /// The engine.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// The project.
    pub project: Project,
    /// Grace period when stopping the old container.
    pub stop_timeout: Duration,
    /// How long a recreated container may take to become healthy.
    pub health: HealthWait,
}

impl std::fmt::Debug for ComposeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComposeService")
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

impl ComposeService {
    /// The services of `project` on `runtime`, stopped with a 10 s grace period.
    pub fn new(runtime: Arc<dyn ContainerRuntime>, project: Project) -> ComposeService {
        ComposeService {
            runtime,
            project,
            stop_timeout: Duration::from_secs(10),
            health: HealthWait::default(),
        }
    }
}

#[async_trait]
impl ServiceControl for ComposeService {
    async fn recreate(&self, service: &str, env: &ServiceEnv) -> tej_secrets::Result<()> {
        let options = RecreateOptions {
            env: env
                .vars
                .iter()
                .map(|v| EnvOverride {
                    key: v.key.clone(),
                    value: v.value.clone(),
                    alongside: v.alongside.clone(),
                })
                .collect(),
            stop_timeout: self.stop_timeout,
            health: self.health,
        };
        let done = self
            .project
            .recreate_with_env(self.runtime.as_ref(), service, &options)
            .await
            .map_err(|e| SecretsError::Service {
                service: service.to_string(),
                reason: e.to_string(),
            })?;
        if done.is_empty() {
            return Err(SecretsError::Service {
                service: service.to_string(),
                reason: "no container of this service".into(),
            });
        }
        Ok(())
    }

    async fn live_env_digests(
        &self,
        service: &str,
        keys: &[String],
    ) -> tej_secrets::Result<Vec<(String, Option<String>)>> {
        let err = |e: DeployError| SecretsError::Service {
            service: service.to_string(),
            reason: e.to_string(),
        };
        let c = self
            .project
            .running_container(self.runtime.as_ref(), service)
            .await
            .map_err(err)?;
        let d = self.runtime.inspect_container(&c.id).await.map_err(err)?;
        Ok(keys
            .iter()
            .map(|k| (k.clone(), d.spec.env_var(k).map(value_digest)))
            .collect())
    }
}

/// A secret rotation as one step of a procedure (quarterly rotation, security breach).
///
/// `plan` is the rotator's dry run; `apply` rotates and fails unless the rotation completed
/// (a rotation rolled back is a failure). The rotator keeps its own guard and audit log: build
/// it with the executor's guard so a confirmation given to the procedure holds for it too.
pub struct RotateSecretsStep<S, C, P> {
    /// The rotator.
    pub rotator: Rotator<S, C, P>,
    /// What to rotate, how.
    pub options: RotateOptions,
}

impl<S, C, P> RotateSecretsStep<S, C, P> {
    /// A step rotating with `rotator` as `options` say.
    pub fn new(rotator: Rotator<S, C, P>, options: RotateOptions) -> Self {
        RotateSecretsStep { rotator, options }
    }
}

#[async_trait]
impl<S, C, P> Step for RotateSecretsStep<S, C, P>
where
    S: SessionStore + 'static,
    C: ServiceControl + 'static,
    P: AppProbe + 'static,
{
    fn name(&self) -> String {
        match self.options.mode {
            RotationMode::Emergency => "rotate-secrets-emergency".into(),
            RotationMode::Graceful => "rotate-secrets-graceful".into(),
            RotationMode::Standard => "rotate-secrets".into(),
        }
    }
    fn risk(&self) -> Risk {
        if self.options.mode == RotationMode::Graceful {
            Risk::Mutating
        } else {
            Risk::Destructive
        }
    }
    fn target(&self) -> String {
        format!(
            "{} ({})",
            self.options.env_file.display(),
            self.options.keys.join(", ")
        )
    }
    async fn plan(&self) -> Result<Plan, StepError> {
        let mut dry = self.options.clone();
        dry.dry_run = true;
        let r = self.rotator.rotate(&dry).await?;
        Ok(Plan::of(self, r.plan))
    }
    async fn apply(&self) -> Result<StepOutput, StepError> {
        let mut opts = self.options.clone();
        opts.dry_run = false;
        let r = self.rotator.rotate(&opts).await?;
        if r.outcome != RotationOutcome::Completed {
            let last = r
                .steps
                .last()
                .map(|s| format!(": {} {}", s.step, s.detail))
                .unwrap_or_default();
            return Err(format!("rotation ended {:?}{last}", r.outcome).into());
        }
        Ok(StepOutput {
            summary: format!(
                "rotated {} in {}{}",
                r.keys.join(", "),
                r.env_file.display(),
                r.sessions_invalidated
                    .map(|n| format!("; {n} sessions dropped"))
                    .unwrap_or_default()
            ),
            findings: Vec::new(),
            data: serde_json::to_value(&r).unwrap_or_default(),
        })
    }
}

/// A [`ContainerRuntime`] that connects to the Docker engine on first use (so a procedure
/// can be planned, or run its other steps, without an engine).
pub struct LazyContainerRuntime {
    host: Option<String>,
    cell: tokio::sync::OnceCell<Arc<tej_deploy::BollardRuntime>>,
}

impl std::fmt::Debug for LazyContainerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyContainerRuntime")
            .field("host", &self.host)
            .field("connected", &self.cell.initialized())
            .finish()
    }
}

impl LazyContainerRuntime {
    /// The engine at `host` (`DOCKER_HOST`, then the local socket, when `None`).
    pub fn new(host: Option<String>) -> LazyContainerRuntime {
        LazyContainerRuntime {
            host,
            cell: tokio::sync::OnceCell::new(),
        }
    }

    async fn rt(&self) -> Result<&tej_deploy::BollardRuntime, DeployError> {
        self.cell
            .get_or_try_init(|| async {
                tej_deploy::BollardRuntime::connect(self.host.as_deref())
                    .await
                    .map(Arc::new)
            })
            .await
            .map(|a| a.as_ref())
    }
}

#[async_trait]
impl ContainerRuntime for LazyContainerRuntime {
    async fn list_containers(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<tej_deploy::ContainerListing>, DeployError> {
        self.rt().await?.list_containers(labels).await
    }
    async fn inspect_container(
        &self,
        id: &str,
    ) -> Result<tej_deploy::ContainerDetails, DeployError> {
        self.rt().await?.inspect_container(id).await
    }
    async fn create_container(
        &self,
        spec: &tej_deploy::ContainerSpec,
    ) -> Result<String, DeployError> {
        self.rt().await?.create_container(spec).await
    }
    async fn control(&self, id: &str, action: Control) -> Result<(), DeployError> {
        self.rt().await?.control(id, action).await
    }
    async fn remove_container(&self, id: &str, force: bool) -> Result<(), DeployError> {
        self.rt().await?.remove_container(id, force).await
    }
    async fn rename_container(&self, id: &str, new_name: &str) -> Result<(), DeployError> {
        self.rt().await?.rename_container(id, new_name).await
    }
    async fn logs(
        &self,
        id: &str,
        query: &tej_deploy::LogQuery,
    ) -> Result<Vec<tej_deploy::LogLine>, DeployError> {
        self.rt().await?.logs(id, query).await
    }
    async fn exec(&self, id: &str, cmd: &[String]) -> Result<tej_deploy::ExecOutput, DeployError> {
        self.rt().await?.exec(id, cmd).await
    }
    async fn wait_exit(&self, id: &str, timeout: Duration) -> Result<i64, DeployError> {
        self.rt().await?.wait_exit(id, timeout).await
    }
}

async fn containers_of(
    rt: &dyn ContainerRuntime,
    project: &Project,
    services: &[String],
) -> Result<Vec<(String, tej_deploy::ContainerListing)>, StepError> {
    let mut out = Vec::new();
    for s in services {
        let list = project.containers(rt, Some(s)).await?;
        if list.is_empty() {
            return Err(format!("project {} has no container of service {s}", project.name).into());
        }
        for c in list {
            let svc = c
                .labels
                .get(LABEL_SERVICE)
                .cloned()
                .unwrap_or_else(|| s.clone());
            out.push((svc, c));
        }
    }
    Ok(out)
}

/// Stops the containers of some Compose services (the application, before a restore):
/// destructive, since the application goes down.
pub struct StopServicesStep {
    /// The engine.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// The project.
    pub project: Project,
    /// Services to stop (`backend`, `frontend`).
    pub services: Vec<String>,
    /// Grace period before SIGKILL.
    pub stop_timeout: Duration,
}

#[async_trait]
impl Step for StopServicesStep {
    fn name(&self) -> String {
        "stop-services".into()
    }
    fn risk(&self) -> Risk {
        Risk::Destructive
    }
    fn target(&self) -> String {
        format!("compose:{} {}", self.project.name, self.services.join(", "))
    }
    async fn plan(&self) -> Result<Plan, StepError> {
        let list = containers_of(self.runtime.as_ref(), &self.project, &self.services).await?;
        let actions = list
            .iter()
            .map(|(svc, c)| match c.state {
                ContainerState::Running | ContainerState::Restarting | ContainerState::Paused => {
                    format!(
                        "stop {} (service {svc}, grace {} s)",
                        c.name,
                        self.stop_timeout.as_secs()
                    )
                }
                _ => format!("leave {} (service {svc}): already {:?}", c.name, c.state),
            })
            .collect();
        Ok(Plan::of(self, actions))
    }
    async fn apply(&self) -> Result<StepOutput, StepError> {
        let list = containers_of(self.runtime.as_ref(), &self.project, &self.services).await?;
        let mut stopped = Vec::new();
        for (_, c) in &list {
            if matches!(
                c.state,
                ContainerState::Running | ContainerState::Restarting | ContainerState::Paused
            ) {
                self.runtime
                    .control(
                        &c.id,
                        Control::Stop {
                            timeout: self.stop_timeout,
                        },
                    )
                    .await?;
                stopped.push(c.name.clone());
            }
        }
        Ok(StepOutput {
            summary: format!("stopped {} containers", stopped.len()),
            findings: Vec::new(),
            data: serde_json::json!({ "stopped": stopped }),
        })
    }
}

/// Starts the (stopped) containers of some Compose services again.
pub struct StartServicesStep {
    /// The engine.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// The project.
    pub project: Project,
    /// Services to start.
    pub services: Vec<String>,
}

#[async_trait]
impl Step for StartServicesStep {
    fn name(&self) -> String {
        "start-services".into()
    }
    fn risk(&self) -> Risk {
        Risk::Mutating
    }
    fn target(&self) -> String {
        format!("compose:{} {}", self.project.name, self.services.join(", "))
    }
    async fn plan(&self) -> Result<Plan, StepError> {
        // The containers may not be stopped yet when the procedure is planned.
        Ok(Plan::of(
            self,
            self.services
                .iter()
                .map(|s| format!("start every stopped container of service {s}"))
                .collect(),
        ))
    }
    async fn apply(&self) -> Result<StepOutput, StepError> {
        let list = containers_of(self.runtime.as_ref(), &self.project, &self.services).await?;
        let mut started = Vec::new();
        for (_, c) in &list {
            if matches!(
                c.state,
                ContainerState::Exited | ContainerState::Created | ContainerState::Dead
            ) {
                self.runtime.control(&c.id, Control::Start).await?;
                started.push(c.name.clone());
            }
        }
        Ok(StepOutput {
            summary: format!("started {} containers", started.len()),
            findings: Vec::new(),
            data: serde_json::json!({ "started": started }),
        })
    }
}

/// A step run as destructive whatever its own risk: what `tej emergency service-down`
/// does to the service (restart, force-recreate) takes it down meanwhile.
pub struct AsDestructive<S>(pub S);

#[async_trait]
impl<S: Step> Step for AsDestructive<S> {
    fn name(&self) -> String {
        self.0.name()
    }
    fn risk(&self) -> Risk {
        Risk::Destructive
    }
    fn target(&self) -> String {
        self.0.target()
    }
    async fn plan(&self) -> Result<Plan, StepError> {
        let mut p = self.0.plan().await?;
        p.risk = Risk::Destructive;
        Ok(p)
    }
    async fn apply(&self) -> Result<StepOutput, StepError> {
        self.0.apply().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tej_deploy::{ContainerListing, LABEL_PROJECT, MockContainerRuntime};

    fn listing(id: &str, service: &str, state: ContainerState) -> ContainerListing {
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_PROJECT.to_string(), "app".to_string());
        labels.insert(LABEL_SERVICE.to_string(), service.to_string());
        ContainerListing {
            id: id.into(),
            name: format!("app-{service}-1"),
            image: "img".into(),
            image_id: "sha256:x".into(),
            labels,
            state,
        }
    }

    #[tokio::test]
    async fn stop_stops_running_containers_only_and_start_starts_stopped_ones() {
        let mut rt = MockContainerRuntime::new();
        rt.expect_list_containers().returning(|labels| {
            let svc = labels
                .iter()
                .find(|(k, _)| k == LABEL_SERVICE)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            Ok(match svc.as_str() {
                "backend" => vec![listing("b1", "backend", ContainerState::Running)],
                _ => vec![listing("f1", "frontend", ContainerState::Exited)],
            })
        });
        rt.expect_control()
            .withf(|id, c| id == "b1" && matches!(c, Control::Stop { .. }))
            .times(1)
            .returning(|_, _| Ok(()));
        rt.expect_control()
            .withf(|id, c| id == "f1" && matches!(c, Control::Start))
            .times(1)
            .returning(|_, _| Ok(()));
        let rt: Arc<dyn ContainerRuntime> = Arc::new(rt);
        let services = vec!["backend".to_string(), "frontend".to_string()];
        let stop = StopServicesStep {
            runtime: rt.clone(),
            project: Project::new("app"),
            services: services.clone(),
            stop_timeout: Duration::from_secs(3),
        };
        let plan = stop.plan().await.unwrap();
        assert!(plan.actions[0].starts_with("stop app-backend-1"));
        assert!(plan.actions[1].starts_with("leave app-frontend-1"));
        assert_eq!(stop.apply().await.unwrap().summary, "stopped 1 containers");
        let start = StartServicesStep {
            runtime: rt,
            project: Project::new("app"),
            services,
        };
        assert_eq!(start.apply().await.unwrap().summary, "started 1 containers");
    }

    #[tokio::test]
    async fn a_missing_service_fails_the_step() {
        let mut rt = MockContainerRuntime::new();
        rt.expect_list_containers().returning(|_| Ok(vec![]));
        rt.expect_control().never();
        let stop = StopServicesStep {
            runtime: Arc::new(rt),
            project: Project::new("app"),
            services: vec!["backend".into()],
            stop_timeout: Duration::from_secs(3),
        };
        let e = stop.apply().await.unwrap_err().to_string();
        assert!(e.contains("no container of service backend"), "{e}");
    }
}

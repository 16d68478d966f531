//! The runbook's "Service Down" emergency: check, restart, force-recreate if still
//! unhealthy, reporting each step.

use crate::compose::Project;
use crate::error::DeployError;
use crate::health::{HealthProbe, HealthWait, wait_healthy};
use crate::model::{ContainerState, HealthStatus};
use crate::runtime::ContainerRuntime;
use async_trait::async_trait;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tej_core::{Finding, Plan, Risk, Severity, Step, StepError, StepOutput};

/// How to judge and restore a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverOptions {
    /// How health is judged (a container without a Docker healthcheck counts as healthy
    /// when running, under [`HealthProbe::Docker`]).
    pub probe: HealthProbe,
    /// The port an HTTP probe connects to on 127.0.0.1.
    pub port: Option<u16>,
    /// How long each restart or recreate may take to become healthy.
    pub health: HealthWait,
    /// Grace period when stopping.
    pub stop_timeout: Duration,
}

impl Default for RecoverOptions {
    fn default() -> Self {
        RecoverOptions {
            probe: HealthProbe::Docker,
            port: None,
            health: HealthWait::default(),
            stop_timeout: Duration::from_secs(10),
        }
    }
}

/// One step of the recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryAction {
    /// `check`, `restart`, `force-recreate`.
    pub action: String,
    /// Whether the service was healthy after it.
    pub healthy: bool,
    /// What happened.
    pub detail: String,
}

/// What the recovery did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// Project.
    pub project: String,
    /// Service.
    pub service: String,
    /// The steps, in order.
    pub actions: Vec<RecoveryAction>,
    /// Healthy at the end.
    pub recovered: bool,
}

impl RecoveryReport {
    /// OK when it was healthy all along, warning when a step restored it, critical when not.
    pub fn severity(&self) -> Severity {
        match (self.recovered, self.actions.len()) {
            (true, 1) => Severity::Ok,
            (true, _) => Severity::Warning,
            (false, _) => Severity::Critical,
        }
    }
}

async fn healthy(
    rt: &dyn ContainerRuntime,
    ids: &[String],
    opts: &RecoverOptions,
    wait: HealthWait,
) -> Result<(), String> {
    if ids.is_empty() {
        return Err("no containers".into());
    }
    for id in ids {
        let d = rt.inspect_container(id).await.map_err(|e| e.to_string())?;
        if matches!(opts.probe, HealthProbe::Docker)
            && d.health == HealthStatus::None
            && d.state == ContainerState::Running
        {
            continue;
        }
        wait_healthy(rt, id, &opts.probe, opts.port, wait)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Checks `service`; when unhealthy restarts it; when still unhealthy force-recreates it.
pub async fn recover_service(
    rt: &dyn ContainerRuntime,
    project: &Project,
    service: &str,
    opts: &RecoverOptions,
) -> RecoveryReport {
    let mut report = RecoveryReport {
        project: project.name.clone(),
        service: service.to_string(),
        actions: Vec::new(),
        recovered: false,
    };
    let ids: Vec<String> = match project.containers(rt, Some(service)).await {
        Ok(list) => list.into_iter().map(|c| c.id).collect(),
        Err(e) => {
            report.actions.push(RecoveryAction {
                action: "check".into(),
                healthy: false,
                detail: e.to_string(),
            });
            return report;
        }
    };
    if ids.is_empty() {
        report.actions.push(RecoveryAction {
            action: "check".into(),
            healthy: false,
            detail: DeployError::NoContainer {
                project: project.name.clone(),
                service: service.to_string(),
                state: "",
            }
            .to_string(),
        });
        return report;
    }
    let now = HealthWait {
        deadline: Duration::ZERO,
        interval: opts.health.interval,
    };
    let checked = healthy(rt, &ids, opts, now).await;
    report.actions.push(RecoveryAction {
        action: "check".into(),
        healthy: checked.is_ok(),
        detail: match &checked {
            Ok(()) => format!("{} containers healthy", ids.len()),
            Err(e) => e.clone(),
        },
    });
    if checked.is_ok() {
        report.recovered = true;
        return report;
    }
    let restarted = match project.restart(rt, service, opts.stop_timeout).await {
        Ok(names) => healthy(rt, &ids, opts, opts.health)
            .await
            .map(|()| format!("restarted {} and healthy", names.join(", "))),
        Err(e) => Err(e.to_string()),
    };
    report.actions.push(RecoveryAction {
        action: "restart".into(),
        healthy: restarted.is_ok(),
        detail: restarted.clone().unwrap_or_else(|e| e),
    });
    if restarted.is_ok() {
        report.recovered = true;
        return report;
    }
    let recreated = match project.force_recreate(rt, service, opts.stop_timeout).await {
        Ok(new_ids) => healthy(rt, &new_ids, opts, opts.health)
            .await
            .map(|()| format!("recreated {} containers, healthy", new_ids.len())),
        Err(e) => Err(e.to_string()),
    };
    report.recovered = recreated.is_ok();
    report.actions.push(RecoveryAction {
        action: "force-recreate".into(),
        healthy: recreated.is_ok(),
        detail: recreated.unwrap_or_else(|e| e),
    });
    report
}

/// [`recover_service`] as a procedure step (mutating).
pub struct RecoverServiceStep {
    /// Containers.
    pub containers: Arc<dyn ContainerRuntime>,
    /// Project.
    pub project: Project,
    /// Service.
    pub service: String,
    /// Options.
    pub options: RecoverOptions,
}

#[async_trait]
impl Step for RecoverServiceStep {
    fn name(&self) -> String {
        "recover-service".into()
    }
    fn risk(&self) -> Risk {
        Risk::Mutating
    }
    fn target(&self) -> String {
        format!("{}/{}", self.project.name, self.service)
    }
    async fn plan(&self) -> Result<Plan, StepError> {
        Ok(Plan::of(
            self,
            vec![
                "check the service's containers".into(),
                "if unhealthy: restart them and wait for health".into(),
                "if still unhealthy: force-recreate them with the same configuration".into(),
            ],
        ))
    }
    async fn apply(&self) -> Result<StepOutput, StepError> {
        let r = recover_service(
            &*self.containers,
            &self.project,
            &self.service,
            &self.options,
        )
        .await;
        let last = r
            .actions
            .last()
            .map(|a| a.detail.clone())
            .unwrap_or_default();
        let summary = format!(
            "{}: {} after {}",
            self.target(),
            if r.recovered {
                "healthy"
            } else {
                "NOT healthy"
            },
            r.actions
                .iter()
                .map(|a| a.action.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !r.recovered {
            return Err(format!("{summary}: {last}").into());
        }
        Ok(StepOutput {
            summary: summary.clone(),
            findings: vec![
                Finding::new("docker.recover", r.severity(), summary).target(self.target()),
            ],
            data: serde_json::to_value(&r).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ContainerDetails, ContainerListing, ContainerSpec, Control, LABEL_PROJECT, LABEL_SERVICE,
    };
    use crate::runtime::MockContainerRuntime;
    use std::sync::Mutex;

    fn listing() -> ContainerListing {
        ContainerListing {
            id: "c1".into(),
            name: "shop-backend-1".into(),
            image: "shop/backend:v1".into(),
            image_id: "sha256:x".into(),
            labels: [
                (LABEL_PROJECT.to_string(), "shop".to_string()),
                (LABEL_SERVICE.to_string(), "backend".to_string()),
            ]
            .into(),
            state: ContainerState::Running,
        }
    }

    /// `healthy_after`: how many mutating actions it takes to become healthy
    /// (0: healthy already, 1: after restart, 2: after recreate, 3: never).
    fn runtime(healthy_after: usize) -> (MockContainerRuntime, Arc<Mutex<Vec<String>>>) {
        let actions: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut rt = MockContainerRuntime::new();
        rt.expect_list_containers()
            .returning(|_| Ok(vec![listing()]));
        let a2 = actions.clone();
        rt.expect_inspect_container().returning(move |id| {
            let done = a2
                .lock()
                .unwrap()
                .iter()
                .filter(|a| !a.starts_with("remove"))
                .count();
            Ok(ContainerDetails {
                id: id.into(),
                name: "shop-backend-1".into(),
                image_id: "sha256:x".into(),
                state: ContainerState::Running,
                health: if done >= healthy_after {
                    HealthStatus::Healthy
                } else {
                    HealthStatus::Unhealthy
                },
                last_health_output: Some("connection refused".into()),
                restart_count: 0,
                started_at: None,
                exit_code: None,
                ports: vec![],
                spec: ContainerSpec::default(),
            })
        });
        let a2 = actions.clone();
        rt.expect_control().returning(move |id, c| {
            if !matches!(c, Control::Stop { .. }) {
                a2.lock().unwrap().push(format!("{c:?} {id}"));
            }
            Ok(())
        });
        let a2 = actions.clone();
        rt.expect_remove_container().returning(move |id, _| {
            a2.lock().unwrap().push(format!("remove {id}"));
            Ok(())
        });
        rt.expect_create_container().returning(|_| Ok("c2".into()));
        (rt, actions)
    }

    fn opts() -> RecoverOptions {
        RecoverOptions {
            health: HealthWait {
                deadline: Duration::from_secs(3),
                interval: Duration::from_secs(1),
            },
            ..RecoverOptions::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_service_is_only_checked() {
        let (rt, actions) = runtime(0);
        let r = recover_service(&rt, &Project::new("shop"), "backend", &opts()).await;
        assert!(r.recovered);
        assert_eq!(r.actions.len(), 1);
        assert_eq!(r.severity(), Severity::Ok);
        assert!(actions.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn restart_fixes_it() {
        let (rt, actions) = runtime(1);
        let r = recover_service(&rt, &Project::new("shop"), "backend", &opts()).await;
        assert!(r.recovered);
        let steps: Vec<_> = r
            .actions
            .iter()
            .map(|a| (a.action.as_str(), a.healthy))
            .collect();
        assert_eq!(steps, [("check", false), ("restart", true)]);
        assert_eq!(r.severity(), Severity::Warning);
        assert_eq!(actions.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn recreate_after_failed_restart_and_critical_when_nothing_helps() {
        let (rt, actions) = runtime(2);
        let r = recover_service(&rt, &Project::new("shop"), "backend", &opts()).await;
        assert!(r.recovered, "{r:?}");
        assert_eq!(r.actions[2].action, "force-recreate");
        assert_eq!(
            *actions.lock().unwrap(),
            ["Restart { timeout: 10s } c1", "remove c1", "Start c2"]
        );
        let (rt, _) = runtime(99);
        let r = recover_service(&rt, &Project::new("shop"), "backend", &opts()).await;
        assert!(!r.recovered);
        assert_eq!(r.actions.len(), 3);
        assert_eq!(r.severity(), Severity::Critical);
        assert!(r.actions[2].detail.contains("connection refused"), "{r:?}");
    }
}

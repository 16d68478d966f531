//! The runbook's `docker-compose restart SERVICE` as a destructive step.

use crate::compose::Project;
use crate::runtime::ContainerRuntime;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tej_core::{Plan, Risk, Step, StepError, StepOutput};

/// A service's containers restarted, as a destructive step (the service is briefly down):
/// the plan lists the containers, applying needs `--yes` and, in production, the window.
pub struct RestartServiceStep {
    /// The engine.
    pub containers: Arc<dyn ContainerRuntime>,
    /// The Compose project.
    pub project: Project,
    /// The service.
    pub service: String,
    /// How long each container may take to stop.
    pub stop_timeout: Duration,
}

#[async_trait]
impl Step for RestartServiceStep {
    fn name(&self) -> String {
        "restart-service".into()
    }
    fn risk(&self) -> Risk {
        Risk::Destructive
    }
    fn target(&self) -> String {
        format!("{}/{}", self.project.name, self.service)
    }
    async fn plan(&self) -> Result<Plan, StepError> {
        let list = self
            .project
            .containers(&*self.containers, Some(&self.service))
            .await?;
        let mut actions: Vec<String> = list
            .iter()
            .map(|c| {
                format!(
                    "restart container {} (stop timeout {} s)",
                    c.name,
                    self.stop_timeout.as_secs()
                )
            })
            .collect();
        if actions.is_empty() {
            actions.push(format!(
                "nothing to restart: service {} of project {} has no containers",
                self.service, self.project.name
            ));
        }
        Ok(Plan::of(self, actions))
    }
    async fn apply(&self) -> Result<StepOutput, StepError> {
        let names = self
            .project
            .restart(&*self.containers, &self.service, self.stop_timeout)
            .await?;
        Ok(StepOutput {
            summary: if names.is_empty() {
                "restarted nothing (no containers)".to_string()
            } else {
                format!("restarted {}", names.join(", "))
            },
            data: serde_json::to_value(&names).unwrap_or_default(),
            ..StepOutput::default()
        })
    }
}

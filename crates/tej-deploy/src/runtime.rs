//! The narrow traits at the Docker edge: containers and images.

use crate::error::DeployError;
use crate::model::{
    ContainerDetails, ContainerListing, ContainerSpec, Control, ExecOutput, ImageInfo, LogLine,
    LogQuery,
};
use async_trait::async_trait;
use std::time::Duration;

/// Containers of a Docker engine.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Every container (running or not) carrying all of `labels` (`key=value` pairs).
    async fn list_containers(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<ContainerListing>, DeployError>;

    /// One container's state and configuration.
    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails, DeployError>;

    /// Creates (does not start) a container; returns its id.
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, DeployError>;

    /// Starts, stops or restarts a container.
    async fn control(&self, id: &str, action: Control) -> Result<(), DeployError>;

    /// Removes a container (`force` kills a running one first).
    async fn remove_container(&self, id: &str, force: bool) -> Result<(), DeployError>;

    /// Renames a container (its id, labels and configuration stay).
    async fn rename_container(&self, id: &str, new_name: &str) -> Result<(), DeployError>;

    /// A container's log lines, oldest first.
    async fn logs(&self, id: &str, query: &LogQuery) -> Result<Vec<LogLine>, DeployError>;

    /// Runs `cmd` (argv) inside a running container and waits for it.
    async fn exec(&self, id: &str, cmd: &[String]) -> Result<ExecOutput, DeployError>;

    /// Waits until a container stops, at most `timeout`; returns its exit code.
    async fn wait_exit(&self, id: &str, timeout: Duration) -> Result<i64, DeployError>;
}

/// Images of a Docker engine.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait ImageStore: Send + Sync {
    /// Every image, tagged or dangling.
    async fn list_images(&self) -> Result<Vec<ImageInfo>, DeployError>;

    /// One image by reference (`repo:tag`) or id.
    async fn inspect_image(&self, reference: &str) -> Result<ImageInfo, DeployError>;

    /// Tags `image` (reference or id) as `repo:tag`, moving the tag if it exists.
    async fn tag_image(&self, image: &str, repo: &str, tag: &str) -> Result<(), DeployError>;

    /// Removes a tag, or an untagged image by id (never forced: an image a container
    /// uses is refused by the engine).
    async fn remove_image(&self, reference: &str) -> Result<(), DeployError>;
}

//! Plain types that cross the [`ContainerRuntime`](crate::ContainerRuntime) and
//! [`ImageStore`](crate::ImageStore) traits: no SDK type appears here.

use jiff::Timestamp;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Label Compose puts on every container with its project name.
pub const LABEL_PROJECT: &str = "com.docker.compose.project";
/// Label Compose puts on every container with its service name.
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
/// Label Compose puts on one-off (`docker compose run`) containers.
pub const LABEL_ONEOFF: &str = "com.docker.compose.oneoff";
/// Label Compose puts on every container with its replica number.
pub const LABEL_NUMBER: &str = "com.docker.compose.container-number";

/// A container's lifecycle state, as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Restarting (after a crash, under a restart policy).
    Restarting,
    /// Being removed.
    Removing,
    /// Exited.
    Exited,
    /// Dead (removal failed half-way).
    Dead,
    /// Anything else.
    Unknown,
}

impl ContainerState {
    /// Parses the engine's word (`running`, `exited`...).
    pub fn parse(s: &str) -> ContainerState {
        match s {
            "created" => ContainerState::Created,
            "running" => ContainerState::Running,
            "paused" => ContainerState::Paused,
            "restarting" => ContainerState::Restarting,
            "removing" => ContainerState::Removing,
            "exited" => ContainerState::Exited,
            "dead" => ContainerState::Dead,
            _ => ContainerState::Unknown,
        }
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

/// A container's health as Docker's healthcheck sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The container has no healthcheck.
    None,
    /// Within the start period, no verdict yet.
    Starting,
    /// The last checks passed.
    Healthy,
    /// The checks failed `retries` times in a row.
    Unhealthy,
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthStatus::None => "none",
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        })
    }
}

/// One line of `docker ps`: what listing containers returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerListing {
    /// Full container id.
    pub id: String,
    /// Name without the leading slash.
    pub name: String,
    /// The image reference it was created from.
    pub image: String,
    /// The image id it runs.
    pub image_id: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its state.
    pub state: ContainerState,
}

/// A container's Docker healthcheck.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthcheckSpec {
    /// The test (`["CMD-SHELL", "wget -q -O- http://127.0.0.1:3000/health"]`).
    pub test: Vec<String>,
    /// Time between checks.
    pub interval: Option<Duration>,
    /// Time one check may take.
    pub timeout: Option<Duration>,
    /// Failures in a row before `unhealthy`.
    pub retries: Option<u32>,
    /// Grace period after start.
    pub start_period: Option<Duration>,
}

/// Everything needed to create a container: what inspecting one yields, so a service
/// can be recreated or deployed "with the same configuration".
///
/// Environment values can hold credentials: this type does not derive `Serialize`,
/// and its `Debug` shows environment variable names only.
#[derive(Clone, PartialEq, Default)]
pub struct ContainerSpec {
    /// Container name (none: the engine picks one).
    pub name: Option<String>,
    /// Image reference or id.
    pub image: String,
    /// Environment, `KEY=value` each.
    pub env: Vec<String>,
    /// Command (none: the image's).
    pub cmd: Option<Vec<String>>,
    /// Entrypoint (none: the image's).
    pub entrypoint: Option<Vec<String>>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Healthcheck (none: the image's).
    pub healthcheck: Option<HealthcheckSpec>,
    /// Network mode (`host`, `bridge`, a network name).
    pub network_mode: Option<String>,
    /// Bind mounts and named volumes, `source:target[:mode]` each.
    pub binds: Vec<String>,
    /// Restart policy name (`no`, `always`, `unless-stopped`, `on-failure`).
    pub restart_policy: Option<String>,
    /// Signal that stops the container (`SIGTERM` when none).
    pub stop_signal: Option<String>,
    /// Grace period the engine gives on stop (its default when none).
    pub stop_timeout: Option<Duration>,
    /// The rest of the engine's host configuration (limits, log driver, capabilities...),
    /// carried through untouched as the engine's JSON; the typed fields above win.
    pub host_config_extra: serde_json::Value,
}

impl fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env_keys: Vec<&str> = self
            .env
            .iter()
            .map(|e| e.split_once('=').map(|(k, _)| k).unwrap_or(e))
            .collect();
        f.debug_struct("ContainerSpec")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("env_keys", &env_keys)
            .field("cmd", &self.cmd)
            .field("entrypoint", &self.entrypoint)
            .field("labels", &self.labels)
            .field("healthcheck", &self.healthcheck)
            .field("network_mode", &self.network_mode)
            .field("binds", &self.binds)
            .field("restart_policy", &self.restart_policy)
            .finish_non_exhaustive()
    }
}

impl ContainerSpec {
    /// The value of environment variable `key`, if set.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env.iter().find_map(|e| {
            let (k, v) = e.split_once('=')?;
            (k == key).then_some(v)
        })
    }

    /// Sets environment variable `key` (replacing an earlier value).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env
            .retain(|e| e.split_once('=').map(|(k, _)| k) != Some(key) && e != key);
        self.env.push(format!("{key}={value}"));
    }
}

/// A container as inspection reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerDetails {
    /// Full id.
    pub id: String,
    /// Name without the leading slash.
    pub name: String,
    /// The image id it runs.
    pub image_id: String,
    /// State.
    pub state: ContainerState,
    /// Docker health.
    pub health: HealthStatus,
    /// The last healthcheck's output, if any.
    pub last_health_output: Option<String>,
    /// How often the engine restarted it.
    pub restart_count: u64,
    /// When it was last started.
    pub started_at: Option<Timestamp>,
    /// Exit code of the last run (meaningful when exited).
    pub exit_code: Option<i64>,
    /// Published ports, `ip:public->private/proto` (empty with host networking).
    pub ports: Vec<String>,
    /// The configuration to recreate it.
    pub spec: ContainerSpec,
}

/// Start, stop or restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Start a created or stopped container.
    Start,
    /// Stop, killing after the grace period.
    Stop {
        /// Grace period before SIGKILL.
        timeout: Duration,
    },
    /// Restart, killing after the grace period.
    Restart {
        /// Grace period before SIGKILL.
        timeout: Duration,
    },
}

/// Which log lines to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// Only the last N lines (per container).
    pub tail: Option<usize>,
    /// Only lines since this time.
    pub since: Option<Timestamp>,
    /// Include stdout.
    pub stdout: bool,
    /// Include stderr.
    pub stderr: bool,
}

impl Default for LogQuery {
    fn default() -> Self {
        LogQuery {
            tail: None,
            since: None,
            stdout: true,
            stderr: true,
        }
    }
}

impl LogQuery {
    /// The last `n` lines of stdout and stderr.
    pub fn tail(n: usize) -> LogQuery {
        LogQuery {
            tail: Some(n),
            ..LogQuery::default()
        }
    }

    /// Everything since `at`.
    pub fn since(at: Timestamp) -> LogQuery {
        LogQuery {
            since: Some(at),
            ..LogQuery::default()
        }
    }
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    /// The engine's timestamp.
    pub at: Option<Timestamp>,
    /// Stream.
    pub stream: LogStream,
    /// The container's name (filled by the service-level functions).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub container: String,
    /// The text, without the trailing newline.
    pub text: String,
}

/// What a command run inside a container returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecOutput {
    /// Exit code.
    pub exit_code: i64,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// An image in the engine's store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageInfo {
    /// Id (`sha256:...`).
    pub id: String,
    /// Tags (`repo:tag`); empty for a dangling image.
    pub repo_tags: Vec<String>,
    /// When it was built.
    pub created: Option<Timestamp>,
    /// Size in bytes.
    pub size: u64,
    /// The image's own configuration (filled by `inspect_image`, empty from `list_images`).
    #[serde(skip)]
    pub defaults: ImageDefaults,
}

/// The configuration an image gives its containers unless they override it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageDefaults {
    /// Default command.
    pub cmd: Option<Vec<String>>,
    /// Default entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Environment baked into the image.
    pub env: Vec<String>,
    /// Labels baked into the image.
    pub labels: BTreeMap<String, String>,
    /// Default working directory.
    pub working_dir: Option<String>,
    /// Default user.
    pub user: Option<String>,
    /// The image's healthcheck.
    pub healthcheck: Option<HealthcheckSpec>,
}

impl ContainerSpec {
    /// The spec without what the container inherited from its image (`defaults`), so that it
    /// can be applied to another image and let that image's own defaults show through:
    /// the service's configuration, as a Compose file would state it.
    pub fn without_image_defaults(&self, defaults: &ImageDefaults) -> ContainerSpec {
        let mut s = self.clone();
        if s.cmd == defaults.cmd {
            s.cmd = None;
        }
        if s.entrypoint == defaults.entrypoint {
            s.entrypoint = None;
        }
        s.env.retain(|e| !defaults.env.contains(e));
        s.labels.retain(|k, v| defaults.labels.get(k) != Some(v));
        if s.working_dir.is_some() && s.working_dir == defaults.working_dir {
            s.working_dir = None;
        }
        if s.user.is_some() && s.user == defaults.user {
            s.user = None;
        }
        if s.healthcheck.is_some() && s.healthcheck == defaults.healthcheck {
            s.healthcheck = None;
        }
        s
    }
}

impl ImageInfo {
    /// True when no tag names the image.
    pub fn is_dangling(&self) -> bool {
        self.repo_tags.iter().all(|t| t == "<none>:<none>")
    }
}

/// The short (12 hex digit) form of a container or image id.
pub fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_env_and_debug_hide_values() {
        let mut s = ContainerSpec {
            env: vec![
                "PORT=3000".into(),
                "DATABASE_URL=postgres://u:pw@db/x".into(),
            ],
            ..ContainerSpec::default()
        };
        assert_eq!(s.env_var("PORT"), Some("3000"));
        s.set_env("PORT", "3001");
        assert_eq!(s.env_var("PORT"), Some("3001"));
        assert_eq!(s.env.len(), 2);
        let dbg = format!("{s:?}");
        assert!(
            dbg.contains("DATABASE_URL") && !dbg.contains("pw@"),
            "{dbg}"
        );
    }

    #[test]
    fn image_defaults_are_stripped_so_a_new_image_shows_its_own() {
        let defaults = ImageDefaults {
            cmd: Some(vec!["node".into(), "server.js".into()]),
            env: vec!["NODE_VERSION=20".into()],
            labels: [(
                "org.opencontainers.image.version".to_string(),
                "1".to_string(),
            )]
            .into(),
            ..ImageDefaults::default()
        };
        let spec = ContainerSpec {
            image: "shop/backend:v1".into(),
            cmd: defaults.cmd.clone(),
            env: vec!["NODE_VERSION=20".into(), "PORT=3000".into()],
            labels: [
                (
                    "org.opencontainers.image.version".to_string(),
                    "1".to_string(),
                ),
                (LABEL_SERVICE.to_string(), "backend".to_string()),
            ]
            .into(),
            ..ContainerSpec::default()
        };
        let own = spec.without_image_defaults(&defaults);
        assert_eq!(own.cmd, None);
        assert_eq!(own.env, ["PORT=3000"]);
        assert_eq!(own.labels.len(), 1);
        let custom = ContainerSpec {
            cmd: Some(vec!["npm".into(), "start".into()]),
            ..spec
        };
        assert!(custom.without_image_defaults(&defaults).cmd.is_some());
    }

    #[test]
    fn short_ids_and_states() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(ContainerState::parse("running"), ContainerState::Running);
        assert_eq!(ContainerState::Exited.to_string(), "exited");
        assert!(
            ImageInfo {
                id: "x".into(),
                repo_tags: vec![],
                created: None,
                size: 0,
                defaults: ImageDefaults::default(),
            }
            .is_dangling()
        );
    }
}

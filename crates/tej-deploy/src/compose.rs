//! A Compose project's services, found by their labels: status (`ps` and more), logs,
//! restart, force-recreate and exec.

use crate::error::DeployError;
use crate::health::{HealthProbe, HealthWait, wait_healthy};
use crate::model::{
    ContainerDetails, ContainerListing, ContainerSpec, ContainerState, Control, ExecOutput,
    HealthStatus, LABEL_NUMBER, LABEL_ONEOFF, LABEL_PROJECT, LABEL_SERVICE, LogLine, LogQuery,
    short_id,
};
use crate::runtime::{ContainerRuntime, ImageStore};
use jiff::Timestamp;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;
use tej_core::{Finding, Report, Secret, Severity};

/// A Compose project on one engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// The project name (`com.docker.compose.project`).
    pub name: String,
}

impl Project {
    /// The project called `name`.
    pub fn new(name: impl Into<String>) -> Project {
        Project { name: name.into() }
    }

    /// The project's service containers (one-off `run` containers excluded), optionally of
    /// one service, running or not, sorted by service then name.
    pub async fn containers(
        &self,
        rt: &dyn ContainerRuntime,
        service: Option<&str>,
    ) -> Result<Vec<ContainerListing>, DeployError> {
        let mut labels = vec![(LABEL_PROJECT.to_string(), self.name.clone())];
        if let Some(s) = service {
            labels.push((LABEL_SERVICE.to_string(), s.to_string()));
        }
        let mut list: Vec<ContainerListing> = rt
            .list_containers(&labels)
            .await?
            .into_iter()
            .filter(|c| {
                c.labels.get(LABEL_PROJECT) == Some(&self.name)
                    && service
                        .is_none_or(|s| c.labels.get(LABEL_SERVICE).map(String::as_str) == Some(s))
                    && !c
                        .labels
                        .get(LABEL_ONEOFF)
                        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            })
            .collect();
        list.sort_by(|a, b| {
            (a.labels.get(LABEL_SERVICE), &a.name).cmp(&(b.labels.get(LABEL_SERVICE), &b.name))
        });
        Ok(list)
    }

    /// The service names, sorted, each once.
    pub async fn services(&self, rt: &dyn ContainerRuntime) -> Result<Vec<String>, DeployError> {
        let mut s: Vec<String> = self
            .containers(rt, None)
            .await?
            .into_iter()
            .filter_map(|c| c.labels.get(LABEL_SERVICE).cloned())
            .collect();
        s.dedup();
        Ok(s)
    }

    /// The one running container of `service` (the first by name when scaled).
    pub async fn running_container(
        &self,
        rt: &dyn ContainerRuntime,
        service: &str,
    ) -> Result<ContainerListing, DeployError> {
        self.containers(rt, Some(service))
            .await?
            .into_iter()
            .find(|c| c.state == ContainerState::Running)
            .ok_or_else(|| DeployError::NoContainer {
                project: self.name.clone(),
                service: service.to_string(),
                state: "running ",
            })
    }

    async fn containers_of(
        &self,
        rt: &dyn ContainerRuntime,
        service: &str,
    ) -> Result<Vec<ContainerListing>, DeployError> {
        let list = self.containers(rt, Some(service)).await?;
        if list.is_empty() {
            return Err(DeployError::NoContainer {
                project: self.name.clone(),
                service: service.to_string(),
                state: "",
            });
        }
        Ok(list)
    }

    /// What `docker compose ps` shows and more: state, health, restarts, uptime, image and
    /// its age, ports; one entry per container.
    pub async fn status(
        &self,
        rt: &dyn ContainerRuntime,
        images: &dyn ImageStore,
        now: Timestamp,
    ) -> Result<ProjectStatus, DeployError> {
        let mut out = Vec::new();
        let mut image_created: HashMap<String, Option<Timestamp>> = HashMap::new();
        for c in self.containers(rt, None).await? {
            let d = match rt.inspect_container(&c.id).await {
                Ok(d) => d,
                // Removed between listing and inspecting.
                Err(DeployError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let created = match image_created.get(&d.image_id) {
                Some(c) => *c,
                None => {
                    let c = match images.inspect_image(&d.image_id).await {
                        Ok(i) => i.created,
                        Err(DeployError::NotFound { .. }) => None,
                        Err(e) => return Err(e),
                    };
                    image_created.insert(d.image_id.clone(), c);
                    c
                }
            };
            out.push(ContainerStatus::from_details(&c, &d, created, now));
        }
        Ok(ProjectStatus {
            project: self.name.clone(),
            containers: out,
        })
    }

    /// Log lines of one service or all, merged across containers in time order.
    pub async fn logs(
        &self,
        rt: &dyn ContainerRuntime,
        service: Option<&str>,
        query: &LogQuery,
    ) -> Result<Vec<LogLine>, DeployError> {
        let mut all = Vec::new();
        let containers = match service {
            Some(s) => self.containers_of(rt, s).await?,
            None => self.containers(rt, None).await?,
        };
        for c in containers {
            for mut l in rt.logs(&c.id, query).await? {
                l.container = c.name.clone();
                all.push(l);
            }
        }
        // Stable: lines of one container keep their order when timestamps tie.
        all.sort_by_key(|l| l.at);
        Ok(all)
    }

    /// Restarts every container of `service`; returns their names.
    pub async fn restart(
        &self,
        rt: &dyn ContainerRuntime,
        service: &str,
        stop_timeout: Duration,
    ) -> Result<Vec<String>, DeployError> {
        let mut names = Vec::new();
        for c in self.containers_of(rt, service).await? {
            rt.control(
                &c.id,
                Control::Restart {
                    timeout: stop_timeout,
                },
            )
            .await?;
            names.push(c.name);
        }
        Ok(names)
    }

    /// `up -d --force-recreate SERVICE`: stops and removes each container of `service` and
    /// creates and starts one with the same configuration and name; returns the new ids.
    /// Not zero-downtime (see [`crate::Deployer`] for that).
    pub async fn force_recreate(
        &self,
        rt: &dyn ContainerRuntime,
        service: &str,
        stop_timeout: Duration,
    ) -> Result<Vec<String>, DeployError> {
        let mut ids = Vec::new();
        for c in self.containers_of(rt, service).await? {
            let d = rt.inspect_container(&c.id).await?;
            let spec = d.spec.clone();
            rt.control(
                &c.id,
                Control::Stop {
                    timeout: stop_timeout,
                },
            )
            .await?;
            rt.remove_container(&c.id, false).await?;
            let id = create_and_start(rt, &spec).await?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// `up -d --force-recreate SERVICE` after the service's `.env` changed: each container
    /// of `service` is recreated from its own configuration with `options.env` applied to
    /// its environment (what Compose gives a service whose environment comes from the
    /// `.env`, through `env_file` or `${VAR}` interpolation), everything else unchanged,
    /// Compose labels included.
    ///
    /// The old container is stopped and kept, renamed, until the new one is healthy (its
    /// Docker healthcheck says `healthy`; running, without one); then it is removed. When the
    /// new container cannot be created or started, or is not healthy within
    /// `options.health.deadline`, it is removed and the old one gets its name back and is
    /// started again: the service is never left without its container. Returns what was
    /// recreated; an error says what failed and whether the old container is back.
    pub async fn recreate_with_env(
        &self,
        rt: &dyn ContainerRuntime,
        service: &str,
        options: &RecreateOptions,
    ) -> Result<Vec<Recreated>, DeployError> {
        let mut out = Vec::new();
        for c in self.containers_of(rt, service).await? {
            // A container parked by an interrupted recreate is not recreated itself.
            if c.name.contains(PARKED_MARK) && c.state != ContainerState::Running {
                tracing::warn!(container = %c.name, "left over from an interrupted recreate; not recreated");
                continue;
            }
            out.push(recreate_one(rt, &c.id, options).await?);
        }
        Ok(out)
    }

    /// Runs `cmd` in the running container of `service` (`pg_isready`, `redis-cli ping`).
    pub async fn exec(
        &self,
        rt: &dyn ContainerRuntime,
        service: &str,
        cmd: &[String],
    ) -> Result<ExecOutput, DeployError> {
        let c = self.running_container(rt, service).await?;
        rt.exec(&c.id, cmd).await
    }
}

/// A change [`Project::recreate_with_env`] makes to a recreated container's environment.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvOverride {
    /// The variable.
    pub key: String,
    /// Its new value; `None` removes it from the environment.
    pub value: Option<Secret>,
    /// Also add `key` (right after this variable) when the container lacks `key` but has
    /// this one: `JWT_SECRET_PREVIOUS` goes wherever `JWT_SECRET` is. Without it, a value
    /// only replaces a variable the container already has.
    pub alongside: Option<String>,
}

impl fmt::Debug for EnvOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvOverride")
            .field("key", &self.key)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("alongside", &self.alongside)
            .finish()
    }
}

/// Applies `overrides` to an environment (`KEY=value` each); returns the new environment
/// and the keys that changed (set, added or removed), in order.
pub fn apply_env_overrides(
    env: &[String],
    overrides: &[EnvOverride],
) -> (Vec<String>, Vec<String>) {
    let key_of = |e: &str| {
        e.split_once('=')
            .map(|(k, _)| k.to_string())
            .unwrap_or_else(|| e.to_string())
    };
    let mut env: Vec<String> = env.to_vec();
    let mut changed = Vec::new();
    for o in overrides {
        let pos = env.iter().position(|e| key_of(e) == o.key);
        match (&o.value, pos) {
            (Some(v), Some(i)) => {
                let line = format!("{}={}", o.key, v.expose());
                if env[i] != line {
                    env[i] = line;
                    changed.push(o.key.clone());
                }
            }
            (Some(v), None) => {
                let after = o
                    .alongside
                    .as_ref()
                    .and_then(|a| env.iter().position(|e| &key_of(e) == a));
                if let Some(i) = after {
                    env.insert(i + 1, format!("{}={}", o.key, v.expose()));
                    changed.push(o.key.clone());
                }
            }
            (None, Some(_)) => {
                env.retain(|e| key_of(e) != o.key);
                changed.push(o.key.clone());
            }
            (None, None) => {}
        }
    }
    (env, changed)
}

/// How [`Project::recreate_with_env`] recreates.
#[derive(Debug, Clone, PartialEq)]
pub struct RecreateOptions {
    /// Changes to the environment (none: the same environment).
    pub env: Vec<EnvOverride>,
    /// Grace period when stopping the old container.
    pub stop_timeout: Duration,
    /// How long the new container may take to become healthy, and the polling interval.
    pub health: HealthWait,
}

impl Default for RecreateOptions {
    fn default() -> Self {
        RecreateOptions {
            env: Vec::new(),
            stop_timeout: Duration::from_secs(10),
            health: HealthWait::default(),
        }
    }
}

/// One container recreated by [`Project::recreate_with_env`] (no values, only names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recreated {
    /// The container's name (the same before and after).
    pub name: String,
    /// The removed container's id.
    pub old_id: String,
    /// The new container's id.
    pub new_id: String,
    /// Environment variables whose value changed (names only).
    pub env_changed: Vec<String>,
}

/// What marks the name of an old container kept while its replacement proves healthy.
const PARKED_MARK: &str = "-tej-old-";

/// The name the old container holds while its replacement proves healthy.
fn parked_name(name: &str, id: &str) -> String {
    format!("{name}{PARKED_MARK}{}", short_id(id))
}

async fn recreate_one(
    rt: &dyn ContainerRuntime,
    id: &str,
    options: &RecreateOptions,
) -> Result<Recreated, DeployError> {
    let d = rt.inspect_container(id).await?;
    let name = d.name.clone();
    let mut spec = d.spec.clone();
    spec.name = Some(name.clone());
    let (env, env_changed) = apply_env_overrides(&spec.env, &options.env);
    spec.env = env;
    let was_running = matches!(
        d.state,
        ContainerState::Running | ContainerState::Restarting | ContainerState::Paused
    );
    rt.control(
        &d.id,
        Control::Stop {
            timeout: options.stop_timeout,
        },
    )
    .await?;
    let parked = parked_name(&name, &d.id);
    if let Err(e) = rt.rename_container(&d.id, &parked).await {
        if was_running {
            let _ = rt.control(&d.id, Control::Start).await;
        }
        return Err(e);
    }
    let attempt = async {
        let new_id = create_and_start(rt, &spec).await?;
        if let Err(e) = wait_new_healthy(rt, &new_id, options.health).await {
            let _ = rt.remove_container(&new_id, true).await;
            return Err(e);
        }
        Ok(new_id)
    }
    .await;
    match attempt {
        Ok(new_id) => {
            if let Err(e) = rt.remove_container(&d.id, true).await {
                tracing::warn!(container = %parked, error = %e, "cannot remove the replaced container");
            }
            Ok(Recreated {
                name,
                old_id: d.id,
                new_id,
                env_changed,
            })
        }
        Err(e) => {
            let back = async {
                rt.rename_container(&d.id, &name).await?;
                if was_running {
                    rt.control(&d.id, Control::Start).await?;
                }
                Ok::<(), DeployError>(())
            }
            .await;
            let state = match back {
                Ok(()) if was_running => "the old container is back and running".to_string(),
                Ok(()) => "the old container is back".to_string(),
                Err(b) => {
                    format!("the old container could not be brought back ({b}); it is {parked}")
                }
            };
            Err(DeployError::RecreateFailed {
                container: name,
                reason: e.to_string(),
                old: state,
            })
        }
    }
}

/// Waits until a new container is healthy: by its Docker healthcheck when it has one,
/// otherwise by running.
async fn wait_new_healthy(
    rt: &dyn ContainerRuntime,
    id: &str,
    wait: HealthWait,
) -> Result<(), DeployError> {
    let d = rt.inspect_container(id).await?;
    if d.health != HealthStatus::None {
        return wait_healthy(rt, id, &HealthProbe::Docker, None, wait).await;
    }
    let start = tokio::time::Instant::now();
    let mut d = d;
    loop {
        match d.state {
            ContainerState::Running => return Ok(()),
            ContainerState::Created | ContainerState::Restarting => {}
            s => {
                return Err(DeployError::Unhealthy {
                    container: d.name,
                    reason: format!(
                        "container {s}{}",
                        d.exit_code
                            .map(|c| format!(" with exit code {c}"))
                            .unwrap_or_default()
                    ),
                });
            }
        }
        if start.elapsed() + wait.interval > wait.deadline {
            return Err(DeployError::Unhealthy {
                container: d.name,
                reason: format!("not running within {:?}", wait.deadline),
            });
        }
        tokio::time::sleep(wait.interval).await;
        d = rt.inspect_container(id).await?;
    }
}

/// Creates and starts a container; removes it again when it does not start.
pub(crate) async fn create_and_start(
    rt: &dyn ContainerRuntime,
    spec: &ContainerSpec,
) -> Result<String, DeployError> {
    let id = rt.create_container(spec).await?;
    if let Err(e) = rt.control(&id, Control::Start).await {
        let _ = rt.remove_container(&id, true).await;
        return Err(e);
    }
    Ok(id)
}

/// One container of a project, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerStatus {
    /// Service name.
    pub service: String,
    /// Container name.
    pub name: String,
    /// Short id.
    pub id: String,
    /// State.
    pub state: ContainerState,
    /// Docker health.
    pub health: HealthStatus,
    /// Restarts by the engine.
    pub restart_count: u64,
    /// Seconds since it started (running containers only).
    pub uptime_secs: Option<u64>,
    /// Exit code when not running.
    pub exit_code: Option<i64>,
    /// The image reference it was created from.
    pub image: String,
    /// Short image id.
    pub image_id: String,
    /// When the image was built.
    pub image_created: Option<Timestamp>,
    /// Image age in seconds.
    pub image_age_secs: Option<u64>,
    /// Published ports (empty with host networking).
    pub ports: Vec<String>,
    /// Network mode (`host`...).
    pub network_mode: Option<String>,
}

fn secs_between(from: Timestamp, to: Timestamp) -> Option<u64> {
    let s = to.as_second() - from.as_second();
    u64::try_from(s).ok()
}

impl ContainerStatus {
    fn from_details(
        c: &ContainerListing,
        d: &ContainerDetails,
        image_created: Option<Timestamp>,
        now: Timestamp,
    ) -> ContainerStatus {
        let running = d.state == ContainerState::Running;
        ContainerStatus {
            service: c.labels.get(LABEL_SERVICE).cloned().unwrap_or_default(),
            name: d.name.clone(),
            id: short_id(&d.id).to_string(),
            state: d.state,
            health: d.health,
            restart_count: d.restart_count,
            uptime_secs: d
                .started_at
                .filter(|_| running)
                .and_then(|s| secs_between(s, now)),
            exit_code: d.exit_code.filter(|_| !running),
            image: c.image.clone(),
            image_id: short_id(&d.image_id).to_string(),
            image_created,
            image_age_secs: image_created.and_then(|t| secs_between(t, now)),
            ports: d.ports.clone(),
            network_mode: d.spec.network_mode.clone(),
        }
    }
}

/// The status of every container of a project.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectStatus {
    /// Project name.
    pub project: String,
    /// Its containers, by service then name.
    pub containers: Vec<ContainerStatus>,
}

impl ProjectStatus {
    /// Findings: a container not running or unhealthy is critical, one starting or
    /// restarted by the engine is a warning.
    pub fn report(&self) -> Report {
        let mut r = Report::new(format!("compose status {}", self.project));
        if self.containers.is_empty() {
            r.push(Finding::new(
                "docker.containers",
                Severity::Critical,
                format!("no containers of compose project {}", self.project),
            ));
        }
        for c in &self.containers {
            let (sev, what) = match (c.state, c.health) {
                (ContainerState::Running, HealthStatus::Unhealthy) => {
                    (Severity::Critical, "running but unhealthy".to_string())
                }
                (ContainerState::Running, HealthStatus::Starting) => {
                    (Severity::Warning, "running, health starting".to_string())
                }
                (ContainerState::Running, _) if c.restart_count > 0 => (
                    Severity::Warning,
                    format!("running, restarted {} times", c.restart_count),
                ),
                (ContainerState::Running, h) => (Severity::Ok, format!("running ({h})")),
                (s, _) => (
                    Severity::Critical,
                    match c.exit_code {
                        Some(code) => format!("{s} (exit code {code})"),
                        None => s.to_string(),
                    },
                ),
            };
            r.push(
                Finding::new(
                    "docker.container",
                    sev,
                    format!("{} {}: {what}", c.service, c.name),
                )
                .target(format!("{}/{}", self.project, c.service))
                .metric(tej_core::Metric::new(
                    "container_restart_count",
                    c.restart_count as f64,
                    "count",
                )),
            );
        }
        r
    }
}

/// The next free replica name for a service, derived from an existing container's name
/// (`proj-backend-1` -> `proj-backend-2`), and its number.
pub(crate) fn next_container_name(existing: &[String], template: &str) -> (String, u32) {
    let (base, sep) = match template.rsplit_once(['-', '_']) {
        Some((b, n)) if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => {
            let sep = &template[b.len()..b.len() + 1];
            (b.to_string(), sep.to_string())
        }
        _ => (template.to_string(), "-".to_string()),
    };
    let mut n = 1u32;
    loop {
        let candidate = format!("{base}{sep}{n}");
        if !existing.iter().any(|e| e == &candidate) {
            return (candidate, n);
        }
        n += 1;
    }
}

/// Marks a spec as the replica named `name` with Compose's container number.
pub(crate) fn as_replica(spec: &mut ContainerSpec, name: String, number: u32) {
    spec.name = Some(name);
    spec.labels
        .insert(LABEL_NUMBER.to_string(), number.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageInfo;
    use crate::model::{LABEL_ONEOFF, LogStream};
    use crate::runtime::{MockContainerRuntime, MockImageStore};
    use std::collections::BTreeMap;

    fn listing(id: &str, service: &str, state: ContainerState, oneoff: bool) -> ContainerListing {
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_PROJECT.to_string(), "shop".to_string());
        labels.insert(LABEL_SERVICE.to_string(), service.to_string());
        if oneoff {
            labels.insert(LABEL_ONEOFF.to_string(), "True".to_string());
        }
        ContainerListing {
            id: id.into(),
            name: format!("shop-{service}-{id}"),
            image: format!("shop/{service}:latest"),
            image_id: "sha256:aaaaaaaaaaaaaaaa".into(),
            labels,
            state,
        }
    }

    fn details(id: &str, state: ContainerState, health: HealthStatus) -> ContainerDetails {
        ContainerDetails {
            id: id.into(),
            name: format!("shop-backend-{id}"),
            image_id: "sha256:aaaaaaaaaaaaaaaa".into(),
            state,
            health,
            last_health_output: None,
            restart_count: 2,
            started_at: Some("2025-01-16T09:00:00Z".parse().unwrap()),
            exit_code: Some(0),
            ports: vec![],
            spec: ContainerSpec::default(),
        }
    }

    #[tokio::test]
    async fn status_excludes_oneoff_and_reports_uptime_image_age() {
        let mut rt = MockContainerRuntime::new();
        rt.expect_list_containers()
            .withf(|l| l.len() == 1 && l[0] == (LABEL_PROJECT.to_string(), "shop".to_string()))
            .returning(|_| {
                Ok(vec![
                    listing("2", "backend", ContainerState::Running, false),
                    listing("9", "backend", ContainerState::Exited, true),
                    listing("1", "frontend", ContainerState::Exited, false),
                ])
            });
        rt.expect_inspect_container()
            .withf(|id| id == "2")
            .returning(|id| Ok(details(id, ContainerState::Running, HealthStatus::Healthy)));
        rt.expect_inspect_container()
            .withf(|id| id == "1")
            .returning(|id| {
                let mut d = details(id, ContainerState::Exited, HealthStatus::None);
                d.exit_code = Some(137);
                Ok(d)
            });
        let mut im = MockImageStore::new();
        im.expect_inspect_image().times(1).returning(|_| {
            Ok(ImageInfo {
                id: "sha256:aaaaaaaaaaaaaaaa".into(),
                repo_tags: vec![],
                created: Some("2025-01-15T09:00:00Z".parse().unwrap()),
                size: 10,
                defaults: Default::default(),
            })
        });
        let now: Timestamp = "2025-01-16T10:00:00Z".parse().unwrap();
        let st = Project::new("shop").status(&rt, &im, now).await.unwrap();
        assert_eq!(st.containers.len(), 2);
        let b = &st.containers[0];
        assert_eq!(b.service, "backend");
        assert_eq!(b.uptime_secs, Some(3600));
        assert_eq!(b.image_age_secs, Some(25 * 3600));
        assert_eq!(b.exit_code, None);
        let f = &st.containers[1];
        assert_eq!(f.exit_code, Some(137));
        assert_eq!(f.uptime_secs, None);
        let r = st.report();
        assert_eq!(r.severity(), Severity::Critical);
        assert!(
            r.findings[1].summary.contains("exit code 137"),
            "{:?}",
            r.findings
        );
        assert_eq!(r.findings[0].severity, Severity::Warning, "restarted twice");
    }

    #[tokio::test]
    async fn logs_merge_in_time_order_with_container_names() {
        let mut rt = MockContainerRuntime::new();
        rt.expect_list_containers().returning(|_| {
            Ok(vec![
                listing("1", "backend", ContainerState::Running, false),
                listing("2", "backend", ContainerState::Running, false),
            ])
        });
        let line = |t: &str, s: &str| LogLine {
            at: Some(t.parse().unwrap()),
            stream: LogStream::Stdout,
            container: String::new(),
            text: s.into(),
        };
        let a = vec![
            line("2025-01-16T09:00:00Z", "a1"),
            line("2025-01-16T09:00:02Z", "a2"),
        ];
        let b = vec![line("2025-01-16T09:00:01Z", "b1")];
        rt.expect_logs()
            .withf(|id, q| id == "1" && q.tail == Some(10))
            .return_once(move |_, _| Ok(a));
        rt.expect_logs()
            .withf(|id, _| id == "2")
            .return_once(move |_, _| Ok(b));
        let lines = Project::new("shop")
            .logs(&rt, Some("backend"), &LogQuery::tail(10))
            .await
            .unwrap();
        let texts: Vec<_> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["a1", "b1", "a2"]);
        assert_eq!(lines[1].container, "shop-backend-2");
    }

    #[tokio::test]
    async fn missing_service_is_a_matchable_error() {
        let mut rt = MockContainerRuntime::new();
        rt.expect_list_containers().returning(|_| Ok(vec![]));
        let e = Project::new("shop")
            .restart(&rt, "backend", Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(e, DeployError::NoContainer { .. }), "{e}");
    }

    #[tokio::test]
    async fn force_recreate_reuses_inspected_spec() {
        let mut rt = MockContainerRuntime::new();
        rt.expect_list_containers().returning(|_| {
            Ok(vec![listing(
                "1",
                "backend",
                ContainerState::Running,
                false,
            )])
        });
        rt.expect_inspect_container().returning(|id| {
            let mut d = details(id, ContainerState::Running, HealthStatus::Healthy);
            d.spec.name = Some("shop-backend-1".into());
            d.spec.env = vec!["PORT=3000".into()];
            d.spec.network_mode = Some("host".into());
            Ok(d)
        });
        let mut seq = mockall::Sequence::new();
        rt.expect_control()
            .withf(|id, a| id == "1" && matches!(a, Control::Stop { .. }))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        rt.expect_remove_container()
            .withf(|id, force| id == "1" && !force)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        rt.expect_create_container()
            .withf(|s| {
                s.name.as_deref() == Some("shop-backend-1")
                    && s.env_var("PORT") == Some("3000")
                    && s.network_mode.as_deref() == Some("host")
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok("new".into()));
        rt.expect_control()
            .withf(|id, a| id == "new" && *a == Control::Start)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        let ids = Project::new("shop")
            .force_recreate(&rt, "backend", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(ids, ["new"]);
    }

    #[tokio::test]
    async fn a_failed_create_brings_the_old_container_back_under_its_name() {
        let mut rt = MockContainerRuntime::new();
        rt.expect_list_containers().returning(|_| {
            Ok(vec![listing(
                "1",
                "backend",
                ContainerState::Running,
                false,
            )])
        });
        rt.expect_inspect_container().returning(|id| {
            let mut d = details(id, ContainerState::Running, HealthStatus::Healthy);
            d.spec.env = vec!["JWT_SECRET=old".into(), "PORT=3000".into()];
            Ok(d)
        });
        let mut seq = mockall::Sequence::new();
        rt.expect_control()
            .withf(|id, a| id == "1" && matches!(a, Control::Stop { .. }))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        rt.expect_rename_container()
            .withf(|id, n| id == "1" && n == "shop-backend-1-tej-old-1")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        rt.expect_create_container()
            .withf(|s| {
                s.name.as_deref() == Some("shop-backend-1")
                    && s.env_var("JWT_SECRET") == Some("s3cr3t-new-value")
                    && s.env_var("PORT") == Some("3000")
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| {
                Err(DeployError::Conflict {
                    reason: "no space left on device".into(),
                })
            });
        rt.expect_rename_container()
            .withf(|id, n| id == "1" && n == "shop-backend-1")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        rt.expect_control()
            .withf(|id, a| id == "1" && *a == Control::Start)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        rt.expect_remove_container().never();
        let options = RecreateOptions {
            env: vec![EnvOverride {
                key: "JWT_SECRET".into(),
                value: Some(Secret::new("s3cr3t-new-value")),
                alongside: None,
            }],
            ..RecreateOptions::default()
        };
        let e = Project::new("shop")
            .recreate_with_env(&rt, "backend", &options)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no space left on device")
                && e.contains("the old container is back and running"),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        assert!(format!("{options:?}").contains("<redacted>"));
    }

    #[test]
    fn replica_names() {
        let existing = vec!["shop-backend-1".to_string()];
        assert_eq!(
            next_container_name(&existing, "shop-backend-1"),
            ("shop-backend-2".to_string(), 2)
        );
        assert_eq!(
            next_container_name(&[], "shop_backend_3"),
            ("shop_backend_1".to_string(), 1)
        );
        assert_eq!(
            next_container_name(&["web-1".into()], "web"),
            ("web-2".to_string(), 2)
        );
    }
}

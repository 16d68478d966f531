//! [`BollardRuntime`]: the [`ContainerRuntime`] and [`ImageStore`] of a real Docker engine,
//! over its HTTP API with bollard (never the docker CLI).

use crate::engine::{Engine, client, resolve_engine};
use crate::error::DeployError;
use crate::model::{
    ContainerDetails, ContainerListing, ContainerSpec, ContainerState, Control, ExecOutput,
    HealthStatus, HealthcheckSpec, ImageDefaults, ImageInfo, LogLine, LogQuery, LogStream,
};
use crate::runtime::{ContainerRuntime, ImageStore};
use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, HealthConfig, HealthStatusEnum, HostConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    RenameContainerOptionsBuilder, RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
    TagImageOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use jiff::Timestamp;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A Docker engine reached as the docker CLI reaches it (see [`crate::engine`]), with the
/// API version negotiated down to what the engine speaks.
#[derive(Debug, Clone)]
pub struct BollardRuntime {
    docker: Docker,
    host: String,
}

impl BollardRuntime {
    /// Connects to `host` (`unix:///path`, `tcp://h:p`, `https://h:p`, `ssh://user@h`),
    /// else `DOCKER_HOST`, else the current docker context, else the local socket (with
    /// `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`, see [`crate::engine`]); negotiates the API
    /// version and pings the engine.
    pub async fn connect(host: Option<&str>) -> Result<BollardRuntime, DeployError> {
        Self::connect_to(&resolve_engine(host)?).await
    }

    /// Connects to a resolved engine, negotiates the API version and pings it.
    pub async fn connect_to(engine: &Engine) -> Result<BollardRuntime, DeployError> {
        let host = engine.describe();
        let docker = client(engine)?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| map_err(&host, e))?;
        docker.ping().await.map_err(|e| map_err(&host, e))?;
        Ok(BollardRuntime { docker, host })
    }

    /// The engine address and where it came from (`tcp://10.0.0.5:2376 (DOCKER_HOST)`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The API version in use after negotiation (`1.41`).
    pub fn api_version(&self) -> String {
        let v = self.docker.client_version();
        format!("{}.{}", v.major_version, v.minor_version)
    }

    fn err(&self, e: BError) -> DeployError {
        map_err(&self.host, e)
    }
}

fn map_err(host: &str, e: BError) -> DeployError {
    match e {
        BError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => DeployError::NotFound { what: message },
            409 => DeployError::Conflict { reason: message },
            403 if message.contains("permission") => DeployError::PermissionDenied {
                host: host.to_string(),
            },
            s => DeployError::Engine { status: s, message },
        },
        BError::RequestTimeoutError => DeployError::Timeout {
            what: format!("request to docker engine {host}"),
            after: Duration::from_secs(120),
        },
        BError::IOError { err } if err.kind() == std::io::ErrorKind::PermissionDenied => {
            DeployError::PermissionDenied {
                host: host.to_string(),
            }
        }
        e @ (BError::IOError { .. }
        | BError::SocketNotFoundError(_)
        | BError::HyperResponseError { .. }
        | BError::HyperLegacyError { .. }) => DeployError::Unreachable {
            host: host.to_string(),
            reason: error_chain(&e),
        },
        e => DeployError::Engine {
            status: 0,
            message: e.to_string(),
        },
    }
}

/// `e` and its sources, `: `-separated (a TLS failure sits under "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

fn parse_ts(s: &str) -> Option<Timestamp> {
    let t: Timestamp = s.parse().ok()?;
    // The engine reports "never" as year 1.
    (t.as_second() > 0).then_some(t)
}

fn nanos(d: Option<i64>) -> Option<Duration> {
    d.filter(|n| *n > 0)
        .map(|n| Duration::from_nanos(n.unsigned_abs()))
}

fn to_nanos(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn healthcheck_from(h: HealthConfig) -> Option<HealthcheckSpec> {
    let test = h.test.unwrap_or_default();
    (!test.is_empty()).then(|| HealthcheckSpec {
        test,
        interval: nanos(h.interval),
        timeout: nanos(h.timeout),
        retries: h.retries.and_then(|r| u32::try_from(r).ok()),
        start_period: nanos(h.start_period),
    })
}

fn health_from(s: Option<HealthStatusEnum>) -> HealthStatus {
    match s {
        Some(HealthStatusEnum::STARTING) => HealthStatus::Starting,
        Some(HealthStatusEnum::HEALTHY) => HealthStatus::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => HealthStatus::Unhealthy,
        _ => HealthStatus::None,
    }
}

fn restart_policy_name(s: &str) -> Option<RestartPolicyNameEnum> {
    Some(match s {
        "no" => RestartPolicyNameEnum::NO,
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        _ => return None,
    })
}

/// Splits one chunk of log output with `timestamps=true` into lines.
fn parse_log_chunk(chunk: &[u8], stream: LogStream, out: &mut Vec<LogLine>) {
    let text = String::from_utf8_lossy(chunk);
    for line in text.split('\n') {
        if line.is_empty() {
            continue;
        }
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (at, text) = match line.split_once(' ') {
            Some((ts, rest)) => match ts.parse::<Timestamp>() {
                Ok(t) => (Some(t), rest),
                Err(_) => (None, line),
            },
            None => match line.parse::<Timestamp>() {
                Ok(t) => (Some(t), ""),
                Err(_) => (None, line),
            },
        };
        out.push(LogLine {
            at,
            stream,
            container: String::new(),
            text: text.to_string(),
        });
    }
}

#[async_trait]
impl ContainerRuntime for BollardRuntime {
    async fn list_containers(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<ContainerListing>, DeployError> {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        if !labels.is_empty() {
            filters.insert(
                "label".into(),
                labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            );
        }
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| self.err(e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                Some(ContainerListing {
                    id: c.id?,
                    name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .map(|n| n.trim_start_matches('/').to_string())
                        .unwrap_or_default(),
                    image: c.image.unwrap_or_default(),
                    image_id: c.image_id.unwrap_or_default(),
                    labels: c.labels.unwrap_or_default().into_iter().collect(),
                    state: c
                        .state
                        .map(|s| ContainerState::parse(s.as_ref()))
                        .unwrap_or(ContainerState::Unknown),
                })
            })
            .collect())
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails, DeployError> {
        let c = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| self.err(e))?;
        let state = c.state.unwrap_or_default();
        let config = c.config.unwrap_or_default();
        let host = c.host_config.unwrap_or_default();
        let health = state.health.clone();
        let last_health_output = health
            .as_ref()
            .and_then(|h| h.log.as_ref())
            .and_then(|l| l.last())
            .and_then(|r| r.output.clone())
            .map(|o| o.trim().to_string());
        let mut ports = Vec::new();
        if let Some(map) = c.network_settings.as_ref().and_then(|n| n.ports.as_ref()) {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for k in keys {
                match map.get(k).and_then(|b| b.as_ref()) {
                    Some(bindings) if !bindings.is_empty() => {
                        for b in bindings {
                            ports.push(format!(
                                "{}:{}->{k}",
                                b.host_ip.clone().unwrap_or_default(),
                                b.host_port.clone().unwrap_or_default()
                            ));
                        }
                    }
                    _ => ports.push(k.clone()),
                }
            }
        }
        let healthcheck = config.healthcheck.and_then(healthcheck_from);
        let host_config_extra = serde_json::to_value(&host).unwrap_or(serde_json::Value::Null);
        let spec = ContainerSpec {
            name: c
                .name
                .clone()
                .map(|n| n.trim_start_matches('/').to_string()),
            image: config.image.unwrap_or_default(),
            env: config.env.unwrap_or_default(),
            cmd: config.cmd,
            entrypoint: config.entrypoint,
            labels: config
                .labels
                .unwrap_or_default()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
            working_dir: config.working_dir.filter(|s| !s.is_empty()),
            user: config.user.filter(|s| !s.is_empty()),
            healthcheck,
            network_mode: host.network_mode.clone(),
            binds: host.binds.clone().unwrap_or_default(),
            restart_policy: host
                .restart_policy
                .as_ref()
                .and_then(|r| r.name.as_ref())
                .map(|n| n.to_string())
                .filter(|s| !s.is_empty()),
            stop_signal: config.stop_signal.filter(|s| !s.is_empty()),
            stop_timeout: config
                .stop_timeout
                .filter(|t| *t >= 0)
                .map(|t| Duration::from_secs(t.unsigned_abs())),
            host_config_extra,
        };
        Ok(ContainerDetails {
            id: c.id.unwrap_or_else(|| id.to_string()),
            name: c
                .name
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            image_id: c.image.unwrap_or_default(),
            state: state
                .status
                .map(|s| ContainerState::parse(s.as_ref()))
                .unwrap_or(ContainerState::Unknown),
            health: health_from(health.and_then(|h| h.status)),
            last_health_output,
            restart_count: c.restart_count.unwrap_or(0).max(0).unsigned_abs(),
            started_at: state.started_at.as_deref().and_then(parse_ts),
            exit_code: state.exit_code,
            ports,
            spec,
        })
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, DeployError> {
        let mut host: HostConfig = match &spec.host_config_extra {
            serde_json::Value::Null => HostConfig::default(),
            v => serde_json::from_value(v.clone()).map_err(|e| DeployError::Config {
                reason: format!("host configuration of {}: {e}", spec.image),
            })?,
        };
        host.network_mode = spec.network_mode.clone();
        host.binds = (!spec.binds.is_empty()).then(|| spec.binds.clone());
        host.restart_policy = spec.restart_policy.as_deref().map(|n| RestartPolicy {
            name: restart_policy_name(n),
            maximum_retry_count: None,
        });
        let healthcheck = spec.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: to_nanos(h.interval),
            timeout: to_nanos(h.timeout),
            retries: h.retries.map(i64::from),
            start_period: to_nanos(h.start_period),
            start_interval: None,
        });
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(spec.env.clone()),
            cmd: spec.cmd.clone(),
            entrypoint: spec.entrypoint.clone(),
            labels: Some(spec.labels.clone().into_iter().collect()),
            working_dir: spec.working_dir.clone(),
            user: spec.user.clone(),
            healthcheck,
            stop_signal: spec.stop_signal.clone(),
            stop_timeout: spec
                .stop_timeout
                .map(|t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX)),
            host_config: Some(host),
            ..ContainerCreateBody::default()
        };
        let mut opts = CreateContainerOptionsBuilder::default();
        if let Some(n) = &spec.name {
            opts = opts.name(n);
        }
        let r = self
            .docker
            .create_container(Some(opts.build()), body)
            .await
            .map_err(|e| self.err(e))?;
        Ok(r.id)
    }

    async fn control(&self, id: &str, action: Control) -> Result<(), DeployError> {
        let secs = |d: Duration| i32::try_from(d.as_secs()).unwrap_or(i32::MAX);
        match action {
            Control::Start => self.docker.start_container(id, None).await,
            Control::Stop { timeout } => {
                let o = StopContainerOptionsBuilder::default()
                    .t(secs(timeout))
                    .build();
                match self.docker.stop_container(id, Some(o)).await {
                    // 304: already stopped.
                    Err(BError::DockerResponseServerError {
                        status_code: 304, ..
                    }) => Ok(()),
                    r => r,
                }
            }
            Control::Restart { timeout } => {
                let o = RestartContainerOptionsBuilder::default()
                    .t(secs(timeout))
                    .build();
                self.docker.restart_container(id, Some(o)).await
            }
        }
        .map_err(|e| self.err(e))
    }

    async fn remove_container(&self, id: &str, force: bool) -> Result<(), DeployError> {
        let o = RemoveContainerOptionsBuilder::default()
            .force(force)
            .build();
        self.docker
            .remove_container(id, Some(o))
            .await
            .map_err(|e| self.err(e))
    }

    async fn rename_container(&self, id: &str, new_name: &str) -> Result<(), DeployError> {
        let o = RenameContainerOptionsBuilder::default()
            .name(new_name)
            .build();
        self.docker
            .rename_container(id, o)
            .await
            .map_err(|e| self.err(e))
    }

    async fn logs(&self, id: &str, query: &LogQuery) -> Result<Vec<LogLine>, DeployError> {
        let mut o = LogsOptionsBuilder::default()
            .stdout(query.stdout)
            .stderr(query.stderr)
            .timestamps(true)
            .follow(false);
        if let Some(n) = query.tail {
            o = o.tail(&n.to_string());
        }
        if let Some(since) = query.since {
            o = o.since(i32::try_from(since.as_second()).unwrap_or(0));
        }
        let mut stream = self.docker.logs(id, Some(o.build()));
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            match item.map_err(|e| self.err(e))? {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    parse_log_chunk(&message, LogStream::Stdout, &mut out)
                }
                LogOutput::StdErr { message } => {
                    parse_log_chunk(&message, LogStream::Stderr, &mut out)
                }
                LogOutput::StdIn { .. } => {}
            }
        }
        // `since` has second precision at the engine; apply the exact cut here.
        if let Some(since) = query.since {
            out.retain(|l| l.at.is_none_or(|t| t >= since));
        }
        Ok(out)
    }

    async fn exec(&self, id: &str, cmd: &[String]) -> Result<ExecOutput, DeployError> {
        let created = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd.to_vec()),
                    ..CreateExecOptions::default()
                },
            )
            .await
            .map_err(|e| self.err(e))?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| self.err(e))?
        {
            while let Some(item) = output.next().await {
                match item.map_err(|e| self.err(e))? {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        stdout.extend_from_slice(&message)
                    }
                    LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                    LogOutput::StdIn { .. } => {}
                }
            }
        }
        let inspect = self
            .docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| self.err(e))?;
        Ok(ExecOutput {
            exit_code: inspect.exit_code.unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    async fn wait_exit(&self, id: &str, timeout: Duration) -> Result<i64, DeployError> {
        let o = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut stream = self.docker.wait_container(id, Some(o));
        let waited = tokio::time::timeout(timeout, stream.next()).await;
        match waited {
            Err(_) => Err(DeployError::Timeout {
                what: format!("waiting for container {id} to exit"),
                after: timeout,
            }),
            Ok(None) => Err(DeployError::Engine {
                status: 0,
                message: format!("wait for container {id} ended without a status"),
            }),
            Ok(Some(Ok(r))) => Ok(r.status_code),
            Ok(Some(Err(BError::DockerContainerWaitError { code, .. }))) => Ok(code),
            Ok(Some(Err(e))) => Err(self.err(e)),
        }
    }
}

#[async_trait]
impl ImageStore for BollardRuntime {
    async fn list_images(&self) -> Result<Vec<ImageInfo>, DeployError> {
        let o = ListImagesOptionsBuilder::default().all(false).build();
        let list = self
            .docker
            .list_images(Some(o))
            .await
            .map_err(|e| self.err(e))?;
        Ok(list
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                repo_tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                created: Timestamp::from_second(i.created).ok(),
                size: i.size.max(0).unsigned_abs(),
                defaults: ImageDefaults::default(),
            })
            .collect())
    }

    async fn inspect_image(&self, reference: &str) -> Result<ImageInfo, DeployError> {
        let i = self
            .docker
            .inspect_image(reference)
            .await
            .map_err(|e| self.err(e))?;
        Ok(ImageInfo {
            id: i.id.unwrap_or_default(),
            repo_tags: i
                .repo_tags
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t != "<none>:<none>")
                .collect(),
            created: i.created.as_deref().and_then(parse_ts),
            size: i.size.unwrap_or(0).max(0).unsigned_abs(),
            defaults: i
                .config
                .map(|c| ImageDefaults {
                    cmd: c.cmd,
                    entrypoint: c.entrypoint,
                    env: c.env.unwrap_or_default(),
                    labels: c.labels.unwrap_or_default().into_iter().collect(),
                    working_dir: c.working_dir.filter(|s| !s.is_empty()),
                    user: c.user.filter(|s| !s.is_empty()),
                    healthcheck: c.healthcheck.and_then(healthcheck_from),
                })
                .unwrap_or_default(),
        })
    }

    async fn tag_image(&self, image: &str, repo: &str, tag: &str) -> Result<(), DeployError> {
        let o = TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        self.docker
            .tag_image(image, Some(o))
            .await
            .map_err(|e| self.err(e))
    }

    async fn remove_image(&self, reference: &str) -> Result<(), DeployError> {
        let o = RemoveImageOptionsBuilder::default()
            .force(false)
            .noprune(false)
            .build();
        self.docker
            .remove_image(reference, Some(o), None)
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_chunks_split_into_timestamped_lines() {
        let mut out = Vec::new();
        parse_log_chunk(
            b"2025-01-16T09:00:00.123456789Z hello world\n2025-01-16T09:00:01Z second\n",
            LogStream::Stderr,
            &mut out,
        );
        parse_log_chunk(b"no timestamp here\n", LogStream::Stdout, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].text, "hello world");
        assert_eq!(out[0].stream, LogStream::Stderr);
        assert_eq!(
            out[1].at,
            Some("2025-01-16T09:00:01Z".parse::<Timestamp>().unwrap())
        );
        assert_eq!(out[2].at, None);
        assert_eq!(out[2].text, "no timestamp here");
    }

    #[test]
    fn engine_errors_map_to_matchable_variants() {
        let e = map_err(
            "unix:///x",
            BError::DockerResponseServerError {
                status_code: 404,
                message: "No such container: x".into(),
            },
        );
        assert!(matches!(e, DeployError::NotFound { .. }));
        let e = map_err(
            "unix:///x",
            BError::DockerResponseServerError {
                status_code: 409,
                message: "image is being used".into(),
            },
        );
        assert!(matches!(e, DeployError::Conflict { .. }));
        assert_eq!(parse_ts("0001-01-01T00:00:00Z"), None);
        assert!(parse_ts("2025-01-16T09:00:00.5Z").is_some());
    }
}

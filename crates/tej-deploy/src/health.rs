//! Waiting for a container to become healthy: Docker's healthcheck, or an HTTP probe of
//! its health endpoint on loopback.

use crate::error::DeployError;
use crate::model::{ContainerState, HealthStatus};
use crate::runtime::ContainerRuntime;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How to decide that a container is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum HealthProbe {
    /// The container's Docker healthcheck reports `healthy`.
    Docker,
    /// `GET http://127.0.0.1:PORT{path}` answers 2xx (PORT: the container's port).
    Http {
        /// Path of the health endpoint (`/health`).
        path: String,
    },
}

/// Polling and deadline for a health wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthWait {
    /// Give up after this long.
    pub deadline: Duration,
    /// Time between polls.
    pub interval: Duration,
}

impl Default for HealthWait {
    fn default() -> Self {
        HealthWait {
            deadline: Duration::from_secs(60),
            interval: Duration::from_millis(500),
        }
    }
}

/// `GET http://{addr}{path}` over HTTP/1.0; returns the status code.
pub async fn http_get_status(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<u16, DeployError> {
    let what = format!("GET http://{addr}{path}");
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| DeployError::io(what.clone(), e))?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| DeployError::io(what.clone(), e))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| DeployError::io(what.clone(), e))?;
        parse_status(&buf).ok_or_else(|| DeployError::io(what.clone(), "no HTTP status line"))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| DeployError::Timeout {
            what: what.clone(),
            after: timeout,
        })?
}

fn parse_status(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    let proto = parts.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Waits until container `id` is healthy by `probe` (`port` is where an HTTP probe
/// connects on 127.0.0.1). Fails as soon as the container stops running or Docker calls
/// it unhealthy, or when the deadline passes; the error says why.
pub async fn wait_healthy(
    rt: &dyn ContainerRuntime,
    id: &str,
    probe: &HealthProbe,
    port: Option<u16>,
    wait: HealthWait,
) -> Result<(), DeployError> {
    let start = tokio::time::Instant::now();
    let mut last = String::from("no health verdict yet");
    loop {
        let d = rt.inspect_container(id).await?;
        match d.state {
            ContainerState::Running => {}
            ContainerState::Created | ContainerState::Restarting => {
                last = format!("container is {}", d.state);
            }
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
        if d.state == ContainerState::Running {
            match probe {
                HealthProbe::Docker => match d.health {
                    HealthStatus::Healthy => return Ok(()),
                    HealthStatus::Unhealthy => {
                        return Err(DeployError::Unhealthy {
                            container: d.name,
                            reason: format!(
                                "docker healthcheck failed{}",
                                d.last_health_output
                                    .map(|o| format!(": {o}"))
                                    .unwrap_or_default()
                            ),
                        });
                    }
                    HealthStatus::None => {
                        return Err(DeployError::Config {
                            reason: format!(
                                "container {} has no docker healthcheck; use an HTTP probe",
                                d.name
                            ),
                        });
                    }
                    HealthStatus::Starting => {
                        last = "docker health still starting".into();
                    }
                },
                HealthProbe::Http { path } => {
                    let Some(port) = port else {
                        return Err(DeployError::Config {
                            reason: "an HTTP health probe needs the container's port".into(),
                        });
                    };
                    let addr = SocketAddr::from(([127, 0, 0, 1], port));
                    match http_get_status(addr, path, wait.interval.max(Duration::from_secs(2)))
                        .await
                    {
                        Ok(s) if (200..300).contains(&s) => return Ok(()),
                        Ok(s) => last = format!("GET {path} answered {s}"),
                        Err(e) => last = e.to_string(),
                    }
                }
            }
        }
        if start.elapsed() + wait.interval > wait.deadline {
            return Err(DeployError::Unhealthy {
                container: d.name,
                reason: format!("not healthy within {:?} ({last})", wait.deadline),
            });
        }
        tokio::time::sleep(wait.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContainerDetails, ContainerSpec};
    use crate::runtime::MockContainerRuntime;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn det(state: ContainerState, health: HealthStatus) -> ContainerDetails {
        ContainerDetails {
            id: "c".into(),
            name: "shop-backend-2".into(),
            image_id: "i".into(),
            state,
            health,
            last_health_output: Some("wget: server returned error: HTTP/1.0 500".into()),
            restart_count: 0,
            started_at: None,
            exit_code: Some(1),
            ports: vec![],
            spec: ContainerSpec::default(),
        }
    }

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n\r\n"), Some(204));
        assert_eq!(parse_status(b"garbage"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[tokio::test(start_paused = true)]
    async fn docker_health_starting_then_healthy() {
        let n = Arc::new(AtomicU32::new(0));
        let mut rt = MockContainerRuntime::new();
        let n2 = n.clone();
        rt.expect_inspect_container().returning(move |_| {
            let i = n2.fetch_add(1, Ordering::SeqCst);
            Ok(det(
                ContainerState::Running,
                if i < 3 {
                    HealthStatus::Starting
                } else {
                    HealthStatus::Healthy
                },
            ))
        });
        wait_healthy(&rt, "c", &HealthProbe::Docker, None, HealthWait::default())
            .await
            .unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn docker_health_times_out_or_fails_fast() {
        let mut rt = MockContainerRuntime::new();
        rt.expect_inspect_container()
            .returning(|_| Ok(det(ContainerState::Running, HealthStatus::Starting)));
        let start = tokio::time::Instant::now();
        let wait = HealthWait {
            deadline: Duration::from_secs(10),
            interval: Duration::from_secs(1),
        };
        let e = wait_healthy(&rt, "c", &HealthProbe::Docker, None, wait)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, DeployError::Unhealthy { reason, .. } if reason.contains("within")),
            "{e}"
        );
        assert!(start.elapsed() <= Duration::from_secs(10));
        let mut rt = MockContainerRuntime::new();
        rt.expect_inspect_container()
            .times(1)
            .returning(|_| Ok(det(ContainerState::Running, HealthStatus::Unhealthy)));
        let e = wait_healthy(&rt, "c", &HealthProbe::Docker, None, wait)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("HTTP/1.0 500"), "{e}");
        let mut rt = MockContainerRuntime::new();
        rt.expect_inspect_container()
            .times(1)
            .returning(|_| Ok(det(ContainerState::Exited, HealthStatus::None)));
        let e = wait_healthy(&rt, "c", &HealthProbe::Docker, None, wait)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("exited with exit code 1"), "{e}");
    }

    #[tokio::test]
    async fn http_probe_against_a_local_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /health ");
                let reply: &[u8] = if ok {
                    b"HTTP/1.0 200 OK\r\n\r\nok"
                } else {
                    b"HTTP/1.0 404 Not Found\r\n\r\n"
                };
                let _ = s.write_all(reply).await;
            }
        });
        let mut rt = MockContainerRuntime::new();
        rt.expect_inspect_container()
            .returning(|_| Ok(det(ContainerState::Running, HealthStatus::None)));
        let probe = HealthProbe::Http {
            path: "/health".into(),
        };
        wait_healthy(&rt, "c", &probe, Some(port), HealthWait::default())
            .await
            .unwrap();
        let status = http_get_status(
            SocketAddr::from(([127, 0, 0, 1], port)),
            "/nope",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(status, 404);
    }
}

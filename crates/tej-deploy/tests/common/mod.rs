//! Shared set-up of the Docker integration tests: a private engine from the test kit,
//! images built locally from busybox (never pulled), Compose-style labelled containers on
//! host networking bound to 127.0.0.1.

#![allow(dead_code)]

use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tej_deploy::{BollardRuntime, LABEL_NUMBER, LABEL_ONEOFF, LABEL_PROJECT, LABEL_SERVICE};
use tej_testkit::DockerEngine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The base image every test image is committed from.
pub const BASE: &str = "tej-deploy-busybox:1";

/// The web image's command: print a line, then serve /www on 127.0.0.1:$PORT.
const WEB_CMD: &str = r#"CMD ["sh","-c","echo starting web on $PORT; exec busybox httpd -f -v -p 127.0.0.1:$PORT -h /www"]"#;

/// The Compose-style healthcheck of the web service (reads $PORT, so it follows the port).
pub const HEALTH_CMD: &str = "busybox wget -q -O- http://127.0.0.1:$PORT/health";

pub struct Env {
    pub engine: DockerEngine,
    pub rt: Arc<BollardRuntime>,
}

impl Env {
    pub async fn start() -> Result<Env> {
        let engine = DockerEngine::start().context("start the private docker engine")?;
        engine
            .import_busybox_image(BASE)
            .context("import the busybox image")?;
        let rt = Arc::new(
            BollardRuntime::connect(Some(&engine.host()))
                .await
                .context("connect to the private engine")?,
        );
        Ok(Env { engine, rt })
    }

    pub fn docker(&self, args: &[&str]) -> Result<String> {
        self.engine.docker(args)
    }

    /// Commits an image `tag` from the base image after running `script` in it, with the
    /// web command as its default.
    pub fn commit_image(&self, tag: &str, script: &str, change: &str) -> Result<String> {
        let name = format!("build-{}", tag.replace([':', '/'], "-"));
        self.docker(&["run", "--name", &name, BASE, "sh", "-c", script])?;
        self.docker(&["commit", "--change", change, &name, tag])?;
        self.docker(&["rm", &name])?;
        let id = self.docker(&["image", "inspect", "--format", "{{.Id}}", tag])?;
        Ok(id.trim().to_string())
    }

    /// A web image answering `version` on `/` and, when `healthy`, `ok` on `/health`.
    pub fn web_image(&self, tag: &str, version: &str, healthy: bool) -> Result<String> {
        let mut script = format!("busybox mkdir -p /www && echo {version} > /www/index.html");
        if healthy {
            script.push_str(" && echo ok > /www/health");
        }
        self.commit_image(tag, &script, WEB_CMD)
    }

    /// Runs a Compose-style container of `project`/`service` on host networking.
    pub fn run_service(
        &self,
        project: &str,
        service: &str,
        number: u32,
        image: &str,
        extra: &[&str],
        cmd: &[&str],
    ) -> Result<String> {
        let name = format!("{project}-{service}-{number}");
        let labels = [
            format!("{LABEL_PROJECT}={project}"),
            format!("{LABEL_SERVICE}={service}"),
            format!("{LABEL_NUMBER}={number}"),
            format!("{LABEL_ONEOFF}=False"),
        ];
        // Busybox as PID 1 ignores SIGTERM: a short stop timeout keeps the tests fast.
        let mut args: Vec<&str> = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "host",
            "--stop-timeout",
            "1",
        ];
        for l in &labels {
            args.extend(["--label", l]);
        }
        args.extend(extra);
        args.push(image);
        args.extend(cmd);
        Ok(self.docker(&args)?.trim().to_string())
    }

    /// Runs the web service (healthcheck every 300 ms, unhealthy after 2 failures).
    pub fn run_web(&self, project: &str, number: u32, image: &str, port: u16) -> Result<String> {
        let env = format!("PORT={port}");
        self.run_service(
            project,
            "web",
            number,
            image,
            &[
                "-e",
                &env,
                "-e",
                "APP_SECRET=not-for-logs",
                "--health-cmd",
                HEALTH_CMD,
                "--health-interval",
                "300ms",
                "--health-timeout",
                "2s",
                "--health-retries",
                "2",
                "--restart",
                "unless-stopped",
            ],
            &[],
        )
    }

    /// Waits until `docker inspect` calls the container healthy.
    pub async fn wait_healthy(&self, name: &str) -> Result<()> {
        for _ in 0..200 {
            let h = self.docker(&["inspect", "--format", "{{.State.Health.Status}}", name])?;
            if h.trim() == "healthy" {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{name} did not become healthy")
    }
}

pub fn free_port() -> u16 {
    tej_testkit::free_port()
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `GET path` over HTTP/1.0: status and body.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no status line")?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.trim().to_string())
            .unwrap_or_default();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .context("GET timed out")?
}

/// Polls `addr` in a loop until stopped; returns (successes, failures, bodies in order,
/// deduplicated runs).
pub struct Poller {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<PollResult>,
}

#[derive(Debug, Default)]
pub struct PollResult {
    pub ok: usize,
    pub failed: Vec<String>,
    /// Bodies seen, consecutive duplicates merged (`["v1", "v2"]`).
    pub versions: Vec<String>,
}

impl Poller {
    pub fn start(addr: SocketAddr) -> Poller {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let task = tokio::spawn(async move {
            let mut r = PollResult::default();
            while !s2.load(std::sync::atomic::Ordering::SeqCst) {
                match get(addr, "/").await {
                    Ok((200, body)) => {
                        r.ok += 1;
                        if r.versions.last() != Some(&body) {
                            r.versions.push(body);
                        }
                    }
                    Ok((s, body)) => r.failed.push(format!("status {s}: {body}")),
                    Err(e) => r.failed.push(format!("{e:#}")),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            r
        });
        Poller { stop, task }
    }

    pub async fn finish(self) -> Result<PollResult> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(self.task.await?)
    }
}

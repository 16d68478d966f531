//! Where traffic for a service goes: a [`TrafficSwitch`] moves it atomically from the old
//! container's port to the new one's and drains the old one.
//!
//! Two implementations: [`TcpProxy`], a small TCP proxy that tej runs in-process (and the
//! integration tests poll), and [`NginxUpstream`], which rewrites an nginx `upstream` file
//! and reloads nginx gracefully (the production front of the runbook's platform).

use crate::error::DeployError;
use async_trait::async_trait;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tej_core::{CommandRunner, CommandSpec};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Moves a service's traffic between upstreams (`127.0.0.1:PORT`).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait TrafficSwitch: Send + Sync {
    /// Where new connections go now, if known.
    async fn active(&self) -> Result<Option<SocketAddr>, DeployError>;
    /// Sends every new connection to `upstream` from now on.
    async fn switch_to(&self, upstream: SocketAddr) -> Result<(), DeployError>;
    /// Waits until no connection to `from` is open, at most `timeout`; returns how many
    /// were still open when it gave up (0: drained).
    async fn drain(&self, from: SocketAddr, timeout: Duration) -> Result<usize, DeployError>;
}

#[derive(Debug)]
struct ProxyState {
    upstream: SocketAddr,
    active: HashMap<SocketAddr, usize>,
}

#[derive(Debug)]
struct ProxyInner {
    state: Mutex<ProxyState>,
    closed: Notify,
}

impl ProxyInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, upstream: SocketAddr) {
        let mut st = self.lock();
        if let Some(n) = st.active.get_mut(&upstream) {
            *n = n.saturating_sub(1);
        }
        drop(st);
        self.closed.notify_waiters();
    }
}

/// A TCP proxy on a fixed address forwarding to one upstream at a time; switching is atomic
/// (a connection goes wholly to the old or wholly to the new upstream) and connections
/// are counted per upstream so the old one can be drained before it is stopped.
#[derive(Debug)]
pub struct TcpProxy {
    inner: Arc<ProxyInner>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on `listen` (use `127.0.0.1:0` for any free port) and forwards to `upstream`.
    pub async fn bind(listen: SocketAddr, upstream: SocketAddr) -> Result<TcpProxy, DeployError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| DeployError::io(format!("bind proxy on {listen}"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| DeployError::io("proxy local address", e))?;
        let inner = Arc::new(ProxyInner {
            state: Mutex::new(ProxyState {
                upstream,
                active: HashMap::new(),
            }),
            closed: Notify::new(),
        });
        let task = tokio::spawn(accept_loop(listener, inner.clone()));
        Ok(TcpProxy { inner, local, task })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The current upstream.
    pub fn upstream(&self) -> SocketAddr {
        self.inner.lock().upstream
    }

    /// Connections open to `upstream` right now.
    pub fn open_connections(&self, upstream: SocketAddr) -> usize {
        self.inner
            .lock()
            .active
            .get(&upstream)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<ProxyInner>) {
    loop {
        let (client, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Choose the upstream and count the connection in one critical section, so a
        // drain that starts after a switch sees every connection made before it.
        let upstream = {
            let mut st = inner.lock();
            let up = st.upstream;
            *st.active.entry(up).or_insert(0) += 1;
            up
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            if let Err(e) = forward(client, upstream).await {
                tracing::debug!(%upstream, error = %e, "proxied connection ended with an error");
            }
            inner.release(upstream);
        });
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr) -> std::io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

#[async_trait]
impl TrafficSwitch for TcpProxy {
    async fn active(&self) -> Result<Option<SocketAddr>, DeployError> {
        Ok(Some(self.upstream()))
    }

    async fn switch_to(&self, upstream: SocketAddr) -> Result<(), DeployError> {
        self.inner.lock().upstream = upstream;
        Ok(())
    }

    async fn drain(&self, from: SocketAddr, timeout: Duration) -> Result<usize, DeployError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let open = self.open_connections(from);
            if open == 0 {
                return Ok(0);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(self.open_connections(from)),
            }
        }
    }
}

/// An nginx `upstream` block in its own file (included from the site config); switching
/// rewrites it atomically, checks the config with `nginx -t` and reloads gracefully
/// (`nginx -s reload`: old workers finish their requests). A failed check or reload puts
/// the previous file back.
pub struct NginxUpstream {
    /// The file holding the `upstream` block (`/etc/nginx/conf.d/backend-upstream.conf`).
    pub conf_path: PathBuf,
    /// The upstream's name (`backend`).
    pub upstream_name: String,
    /// Runs nginx.
    pub runner: Arc<dyn CommandRunner>,
    /// The nginx program (`nginx`).
    pub program: String,
    /// How long old workers get to finish after a reload (the drain).
    pub drain_grace: Duration,
}

impl std::fmt::Debug for NginxUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NginxUpstream")
            .field("conf_path", &self.conf_path)
            .field("upstream_name", &self.upstream_name)
            .finish_non_exhaustive()
    }
}

impl NginxUpstream {
    /// The file's content for `upstream`.
    pub fn render(&self, upstream: SocketAddr) -> String {
        format!(
            "# Managed by tej-deploy: the active upstream of {name}.\nupstream {name} {{\n    server {upstream};\n}}\n",
            name = self.upstream_name
        )
    }

    async fn nginx(&self, args: &[&str]) -> Result<(), DeployError> {
        let spec = CommandSpec::new(self.program.clone())
            .args(args.iter().copied())
            .timeout(Duration::from_secs(30));
        let out = self
            .runner
            .run(spec.clone())
            .await
            .map_err(|e| DeployError::Switch {
                reason: e.to_string(),
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(DeployError::Switch {
                reason: format!(
                    "{} failed with {}: {}",
                    spec.display(),
                    out.status,
                    out.stderr.trim()
                ),
            })
        }
    }
}

#[async_trait]
impl TrafficSwitch for NginxUpstream {
    async fn active(&self) -> Result<Option<SocketAddr>, DeployError> {
        let text = match std::fs::read_to_string(&self.conf_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(DeployError::io(
                    format!("read {}", self.conf_path.display()),
                    e,
                ));
            }
        };
        Ok(text.lines().find_map(|l| {
            let rest = l.trim().strip_prefix("server ")?;
            rest.trim_end_matches(';')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        }))
    }

    async fn switch_to(&self, upstream: SocketAddr) -> Result<(), DeployError> {
        let path = &self.conf_path;
        let old = match std::fs::read(path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(DeployError::io(format!("read {}", path.display()), e)),
        };
        tej_core::atomic_write(path, self.render(upstream).as_bytes(), None)
            .map_err(|e| DeployError::io(format!("write {}", path.display()), e))?;
        let applied = match self.nginx(&["-t"]).await {
            Ok(()) => self.nginx(&["-s", "reload"]).await,
            Err(e) => Err(e),
        };
        if let Err(e) = applied {
            let restored = match &old {
                Some(b) => tej_core::atomic_write(path, b, None),
                None => std::fs::remove_file(path),
            };
            if let Err(r) = restored {
                tracing::error!(path = %path.display(), error = %r, "could not restore nginx upstream file");
            }
            return Err(e);
        }
        Ok(())
    }

    async fn drain(&self, _from: SocketAddr, timeout: Duration) -> Result<usize, DeployError> {
        tokio::time::sleep(self.drain_grace.min(timeout)).await;
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as D;
    use tej_core::{CommandOutput, MockCommandRunner};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server(tag: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(tag.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        a
    }

    async fn ask(addr: SocketAddr) -> (TcpStream, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"?").await.unwrap();
        let mut b = [0u8; 8];
        let n = s.read(&mut b).await.unwrap();
        (s, String::from_utf8_lossy(&b[..n]).into_owned())
    }

    #[tokio::test]
    async fn proxy_switches_new_connections_and_drains_old_ones() {
        let blue = echo_server("blue").await;
        let green = echo_server("green").await;
        let p = TcpProxy::bind("127.0.0.1:0".parse().unwrap(), blue)
            .await
            .unwrap();
        let (held, answer) = ask(p.local_addr()).await;
        assert_eq!(answer, "blue");
        assert_eq!(p.open_connections(blue), 1);
        p.switch_to(green).await.unwrap();
        assert_eq!(p.active().await.unwrap(), Some(green));
        let (_s, answer) = ask(p.local_addr()).await;
        assert_eq!(answer, "green");
        // The held connection keeps the old upstream until it closes.
        assert_eq!(p.drain(blue, D::from_millis(50)).await.unwrap(), 1);
        let closer = tokio::spawn(async move {
            tokio::time::sleep(D::from_millis(50)).await;
            drop(held);
        });
        assert_eq!(p.drain(blue, D::from_secs(30)).await.unwrap(), 0);
        closer.await.unwrap();
    }

    fn out(code: i32, stderr: &str) -> CommandOutput {
        CommandOutput::exited(code, "", stderr)
    }

    fn nginx(dir: &std::path::Path, runner: MockCommandRunner) -> NginxUpstream {
        NginxUpstream {
            conf_path: dir.join("backend-upstream.conf"),
            upstream_name: "backend".into(),
            runner: Arc::new(runner),
            program: "nginx".into(),
            drain_grace: D::from_millis(1),
        }
    }

    #[tokio::test]
    async fn nginx_switch_checks_then_reloads() {
        let d = tempfile::tempdir().unwrap();
        let mut r = MockCommandRunner::new();
        let mut seq = mockall::Sequence::new();
        r.expect_run()
            .withf(|s| s.program == "nginx" && s.args == ["-t"])
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(out(0, "")));
        r.expect_run()
            .withf(|s| s.args == ["-s", "reload"])
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(out(0, "")));
        let n = nginx(d.path(), r);
        assert_eq!(n.active().await.unwrap(), None);
        let up: SocketAddr = "127.0.0.1:3001".parse().unwrap();
        n.switch_to(up).await.unwrap();
        assert_eq!(n.active().await.unwrap(), Some(up));
        assert_eq!(n.drain(up, D::from_secs(1)).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn nginx_failed_check_restores_previous_file() {
        let d = tempfile::tempdir().unwrap();
        let mut r = MockCommandRunner::new();
        r.expect_run()
            .withf(|s| s.args == ["-t"])
            .returning(|_| Ok(out(1, "nginx: [emerg] unexpected }")));
        r.expect_run().withf(|s| s.args == ["-s", "reload"]).never();
        let n = nginx(d.path(), r);
        let before = n.render("127.0.0.1:3000".parse().unwrap());
        std::fs::write(&n.conf_path, &before).unwrap();
        let e = n
            .switch_to("127.0.0.1:3001".parse().unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, DeployError::Switch { reason } if reason.contains("emerg")),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&n.conf_path).unwrap(), before);
    }
}

//! # Backup service
//!
//! A small HTTP service that embeds tej-backup, as a platform's own control plane would:
//! `POST /backups` takes a logical backup of the configured database into every repository
//! of `[backup] repositories` (format, compression and encryption as `tej.toml` says) and
//! answers with its report; `GET /backups` lists the backups of every repository as JSON,
//! newest first. One request per connection (HTTP/1.1, `Connection: close`).
//!
//! Library calls: [`tej_backup::Backups::open`] (the repositories and
//! [`tej_backup::BackupSettings`] of `tej.toml`), [`tej_backup::Backups::create_logical`] and
//! [`tej_backup::Backups::list`]. Each backup runs under a [`tej_backup::CancellationToken`]
//! that Ctrl-C or SIGTERM cancels: the run stops, stores no backup and releases its locks.
//!
//! ## Run it
//!
//! ```text
//! cargo run -p tej-examples --bin backup_service -- --config tej.toml --listen 127.0.0.1:8088
//! curl -X POST http://127.0.0.1:8088/backups
//! curl http://127.0.0.1:8088/backups
//! ```
//!
//! The database is `--database NAME`, else the first `[[database]]`; its password comes from
//! `tej.toml`'s reference and reaches `pg_dump` through its environment only.
//!
//! ## What it prints and answers
//!
//! `listening on http://ADDR` once bound (`--listen 127.0.0.1:0` picks a free port), then one
//! line per request. `POST /backups`: `201` with the create report (`id`, `format`,
//! `compression`, `repositories`, ...), `409` while another backup of the database runs,
//! `500` with `{"error": "..."}` when it failed. `GET /backups`: `200` with the list. Other
//! paths `404`, other methods `405`.
//!
//! ## The same with the CLI
//!
//! `tej backup create` and `tej backup list --output json`.

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use tej_backup::{BackupError, Backups, CancellationToken, DbTarget};
use tej_core::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serve `POST /backups` and `GET /backups` over the configured repositories.
#[derive(Debug, Parser)]
struct Args {
    /// The configuration file (default: ./tej.toml when present, else the environment).
    #[arg(long, env = "TEJ_CONFIG")]
    config: Option<PathBuf>,
    /// The `[[database]]` to back up (default: the first).
    #[arg(long)]
    database: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: String,
}

/// What every request needs.
struct Service {
    backups: Backups,
    db: DbTarget,
    /// Cancelled on shutdown; each backup runs under a child of it.
    shutdown: CancellationToken,
}

/// A response: status line and JSON body.
struct Response {
    status: u16,
    body: serde_json::Value,
}

impl Response {
    fn json(status: u16, body: impl serde::Serialize) -> Response {
        Response {
            status,
            body: serde_json::to_value(body).unwrap_or_default(),
        }
    }

    fn error(status: u16, message: impl std::fmt::Display) -> Response {
        Response::json(status, serde_json::json!({ "error": message.to_string() }))
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// The request line (`METHOD PATH`) of a request whose head is at most 16 KiB; the body,
/// if any, is ignored.
async fn read_request_line(stream: &mut TcpStream) -> Result<(String, String), String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err("request head larger than 16 KiB".into());
        }
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read the request: {e}"))?;
        if n == 0 {
            return Err("the connection closed before the end of the request head".into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(p), Some(v)) if v.starts_with("HTTP/1.") => Ok((m.into(), p.into())),
        _ => Err(format!("not an HTTP/1.x request line: {line:?}")),
    }
}

impl Service {
    async fn handle(&self, method: &str, path: &str) -> Response {
        let path = path.split('?').next().unwrap_or_default();
        match (method, path.trim_end_matches('/')) {
            ("POST", "/backups") => {
                let cancel = self.shutdown.child_token();
                match self.backups.create_logical(self.db.clone(), &cancel).await {
                    Ok(r) if r.succeeded() => Response::json(201, &r),
                    Ok(r) => Response::json(500, &r),
                    Err(e @ BackupError::Locked { .. }) => Response::error(409, e),
                    Err(e) if self.shutdown.is_cancelled() => Response::error(503, e),
                    Err(e) => Response::error(500, e),
                }
            }
            ("GET", "/backups") => match self.backups.list().await {
                Ok(list) => Response::json(200, &list),
                Err(e) => Response::error(500, e),
            },
            (_, "/backups") => Response::error(405, format!("{method} is not allowed here")),
            _ => Response::error(404, format!("no such resource: {path}")),
        }
    }

    async fn serve(self: Arc<Self>, mut stream: TcpStream) {
        let response = match read_request_line(&mut stream).await {
            Ok((method, path)) => {
                let r = self.handle(&method, &path).await;
                println!("{method} {path} {}", r.status);
                r
            }
            Err(e) => Response::error(400, e),
        };
        let body = serde_json::to_vec_pretty(&response.body).unwrap_or_default();
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            response.status,
            reason(response.status),
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&body).await;
        let _ = stream.shutdown().await;
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let config = Config::load_or_env(args.config.as_deref()).context("load the configuration")?;
    let db = match &args.database {
        Some(name) => config
            .databases
            .iter()
            .find(|d| &d.name == name)
            .with_context(|| format!("no [[database]] named {name:?} in tej.toml"))?,
        None => config
            .databases
            .first()
            .context("add a [[database]] to tej.toml: it is what POST /backups backs up")?,
    };
    let service = Arc::new(Service {
        backups: Backups::open(&config)
            .await
            .context("open the backup repositories")?,
        db: tej_backup::db_target(db)?,
        shutdown: CancellationToken::new(),
    });
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    println!("listening on http://{}", listener.local_addr()?);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(service.clone().serve(stream));
                }
                Err(e) => eprintln!("accept: {e}"),
            },
        }
    }
    // Backups in progress stop (nothing is listed for them) and answer 503.
    service.shutdown.cancel();
    while connections.join_next().await.is_some() {}
    Ok(())
}

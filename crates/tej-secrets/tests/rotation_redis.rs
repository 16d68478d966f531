//! A real rotation: a Redis server from tej-testkit holds the sessions, and a small
//! HTTP service (a thread in this test) reads JWT_SECRET from the .env when it starts
//! and signs logins with it.

use anyhow::{Context, Result as AnyResult};
use async_trait::async_trait;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tej_core::{AuditLog, Calendar, Environment, Fixed, Guard, Secret, SystemClock};
use tej_secrets::{
    HttpAppProbe, HttpProbeConfig, RotateOptions, RotationOutcome, Rotator, SecretFormat,
    SecretsError, ServiceControl, SessionInvalidation, SessionStore, read_env_file,
};

/// Sessions in Redis: SCAN + UNLINK by pattern, FLUSHDB for everything.
struct RedisSessions {
    client: redis::Client,
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn invalidate(&self, pattern: &str) -> tej_secrets::Result<u64> {
        let err = |e: redis::RedisError| SecretsError::Sessions(e.to_string());
        let mut con = self
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(err)?;
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut con)
                .await
                .map_err(err)?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut con)
                    .await
                    .map_err(err)?;
                removed += n;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    async fn flush_all_sessions(&self) -> tej_secrets::Result<u64> {
        let err = |e: redis::RedisError| SecretsError::Sessions(e.to_string());
        let mut con = self
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(err)?;
        let n: u64 = redis::cmd("DBSIZE")
            .query_async(&mut con)
            .await
            .map_err(err)?;
        let _: () = redis::cmd("FLUSHDB")
            .query_async(&mut con)
            .await
            .map_err(err)?;
        Ok(n)
    }
}

/// The application: reads the .env once, at start, like a container does.
struct Backend {
    stop: Arc<AtomicBool>,
    port: u16,
    thread: Option<JoinHandle<()>>,
}

fn respond(mut s: TcpStream, status: &str, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn handle(s: TcpStream, secret: &str, generation: u64) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body);
    if line.starts_with("GET /health ") {
        respond(
            s,
            "200 OK",
            &format!(
                "{{\"generation\":{generation},\"secret_len\":{}}}",
                secret.len()
            ),
        );
    } else if line.starts_with("POST /api/v1/auth/login ") {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if v["email"] != "test@example.com" || v["password"] != "password" {
            respond(s, "401 Unauthorized", "{\"error\":\"bad credentials\"}");
        } else if secret.len() < 64 {
            respond(
                s,
                "500 Internal Server Error",
                "{\"error\":\"JWT_SECRET too short to sign tokens\"}",
            );
        } else {
            respond(s, "200 OK", "{\"token\":\"signed\"}");
        }
    } else {
        respond(s, "404 Not Found", "{}");
    }
    Ok(())
}

impl Backend {
    fn start(env: &Path, port: u16, generation: u64) -> AnyResult<Backend> {
        let secret = read_env_file(env)?
            .get("JWT_SECRET")
            .map(|s| s.expose().to_string())
            .unwrap_or_default();
        let listener = TcpListener::bind(("127.0.0.1", port)).context("bind the backend port")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            for s in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(s) = s {
                    let _ = handle(s, &secret, generation);
                }
            }
        });
        Ok(Backend {
            stop,
            port,
            thread: Some(thread),
        })
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// "docker compose up -d --force-recreate backend": stop the process, start a new one.
struct Recreate {
    env: PathBuf,
    port: u16,
    generation: AtomicU64,
    backend: Mutex<Option<Backend>>,
}

#[async_trait]
impl ServiceControl for Recreate {
    async fn recreate(
        &self,
        service: &str,
        _env: &tej_secrets::ServiceEnv,
    ) -> tej_secrets::Result<()> {
        assert_eq!(service, "backend");
        let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut slot = self.backend.lock().unwrap();
        if let Some(mut b) = slot.take() {
            b.shutdown();
        }
        let b = Backend::start(&self.env, self.port, g).map_err(|e| SecretsError::Service {
            service: service.into(),
            reason: format!("{e:#}"),
        })?;
        *slot = Some(b);
        Ok(())
    }

    /// The backend reads the `.env` file itself: its process environment holds none of the keys.
    async fn live_env_digests(
        &self,
        _service: &str,
        _keys: &[String],
    ) -> tej_secrets::Result<Vec<(String, Option<String>)>> {
        Ok(Vec::new())
    }
}

async fn health(port: u16) -> serde_json::Value {
    reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn seed(client: &redis::Client) -> AnyResult<()> {
    let mut con = client.get_multiplexed_async_connection().await?;
    for i in 0..300 {
        let _: () = redis::cmd("SET")
            .arg(format!("sess:{i}"))
            .arg("user")
            .query_async(&mut con)
            .await?;
    }
    let _: () = redis::cmd("SET")
        .arg("ratelimit:1.2.3.4")
        .arg("5")
        .query_async(&mut con)
        .await?;
    Ok(())
}

async fn keys(client: &redis::Client, pattern: &str) -> usize {
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let k: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut con)
        .await
        .unwrap();
    k.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_with_real_redis_and_a_service_that_reads_the_env() -> AnyResult<()> {
    let redis_server = tej_testkit::RedisServer::start()?;
    let client = redis::Client::open(redis_server.url())?;
    let dir = tempfile::tempdir()?;
    let env = dir.path().join(".env");
    let old = "0123456789abcdef".repeat(5);
    std::fs::write(
        &env,
        format!("# backend\nPORT=3000\nJWT_SECRET={old}\nJWT_REFRESH_SECRET={old}ff\n"),
    )?;
    let first = Backend::start(&env, 0, 0)?;
    let port = first.port;
    let service = Recreate {
        env: env.clone(),
        port,
        generation: AtomicU64::new(0),
        backend: Mutex::new(Some(first)),
    };
    let probe = HttpAppProbe::new(HttpProbeConfig::for_base_url(
        &format!("http://127.0.0.1:{port}"),
        "test@example.com",
        Secret::new("password"),
    ))?;
    let guard = Guard {
        environment: Environment::Staging,
        calendar: Calendar::runbook(),
        clock: Arc::new(SystemClock),
        confirmer: Arc::new(Fixed(true)),
        override_window: false,
    };
    let audit = AuditLog::new(dir.path().join("audit.jsonl"));
    let mut rot = Rotator::new(
        RedisSessions {
            client: client.clone(),
        },
        service,
        probe,
        guard,
    );
    rot.audit = Some(audit.clone());
    seed(&client).await?;
    assert_eq!(health(port).await["secret_len"], 80);

    // 1. a normal rotation: new secrets live, sessions gone, other keys kept
    let opts = RotateOptions {
        sessions: SessionInvalidation::Pattern("sess:*".into()),
        verify_timeout: Duration::from_secs(20),
        verify_interval: Duration::from_millis(100),
        ..RotateOptions::new(&env)
    };
    let r = rot.rotate(&opts).await?;
    assert_eq!(r.outcome, RotationOutcome::Completed, "{r:#?}");
    assert_eq!(r.sessions_invalidated, Some(300));
    assert_eq!((r.health_status, r.login_status), (Some(200), Some(200)));
    assert_eq!(keys(&client, "sess:*").await, 0);
    assert_eq!(keys(&client, "ratelimit:*").await, 1);
    let h = health(port).await;
    assert_eq!(h["generation"], 1, "the service was recreated");
    assert_eq!(h["secret_len"], 128, "and reads the new 64-byte hex secret");
    let new = read_env_file(&env)?.get("JWT_SECRET").unwrap();
    assert_ne!(new.expose(), old);

    // 2. a rotation whose secret the application cannot use: login answers 500, rolled back
    seed(&client).await?;
    let weak = RotateOptions {
        format: SecretFormat::Hex { bytes: 16 },
        ..opts.clone()
    };
    let r2 = rot.rotate(&weak).await?;
    match &r2.outcome {
        RotationOutcome::RolledBack { reason } => {
            assert!(reason.contains("answered 500"), "{reason}")
        }
        o => panic!("expected a rollback, got {o:?}"),
    }
    assert_eq!(r2.login_status, Some(500));
    assert_eq!(read_env_file(&env)?.get("JWT_SECRET").unwrap(), new);
    let h = health(port).await;
    assert_eq!(
        h["generation"], 3,
        "recreated for the rotation and again for the rollback"
    );
    assert_eq!(h["secret_len"], 128);
    let steps: Vec<String> = audit
        .read_all()?
        .into_iter()
        .map(|e| format!("{}:{}", e.step, e.outcome))
        .collect();
    assert_eq!(
        steps[6..],
        [
            "create:applied",
            "set:applied",
            "recreate:applied",
            "invalidate-sessions:applied",
            "test:failed",
            "rollback-env:applied",
            "rollback-recreate:applied"
        ]
    );

    // 3. emergency: every session and every key in the session database is dropped
    seed(&client).await?;
    let r3 = rot
        .rotate(&RotateOptions {
            mode: tej_secrets::RotationMode::Emergency,
            ..opts.clone()
        })
        .await?;
    assert_eq!(r3.outcome, RotationOutcome::Completed);
    assert_eq!(r3.sessions_invalidated, Some(301));
    assert_eq!(keys(&client, "*").await, 0);

    // nothing secret in the audit log or the reports
    let raw = std::fs::read_to_string(audit.path())?;
    let current = read_env_file(&env)?;
    for v in [
        old.clone(),
        new.expose().to_string(),
        current.get("JWT_SECRET").unwrap().expose().to_string(),
    ] {
        assert!(!raw.contains(&v));
        for rep in [&r, &r2, &r3] {
            assert!(!serde_json::to_string(rep)?.contains(&v));
            assert!(!format!("{rep:?}").contains(&v));
        }
    }
    Ok(())
}

//! [`PgAdvisoryRunLock`]: the daemon's cross-host [`RunLock`] as PostgreSQL session advisory
//! locks, so two hosts running `tej daemon` against the same database never run the same
//! procedure at once.
//!
//! Each lock taken opens its **own** connection and holds `pg_try_advisory_lock(id)` on it for
//! the run's duration; [`RunLock::unlock`] releases it and closes the connection. A holder that
//! dies (process killed, host lost, connection dropped) frees the lock with its session: the
//! server releases session locks when the backend exits. A pooled connection would not do,
//! since a session lock would stay with whichever pooled session took it.
//!
//! The lock id is [`advisory_lock_id`] of the key (a stable 64-bit FNV-1a hash), visible in
//! `pg_locks` as `classid`/`objid` of an `advisory` lock.

use crate::daemon::RunLock;
use crate::error::{Result, RunbookError};
use async_trait::async_trait;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tej_core::Secret;
use tej_core::secret::redact_url_passwords;
use tokio::task::JoinHandle;

/// The advisory lock id of `key`: 64-bit FNV-1a of its UTF-8 bytes, as a signed bigint.
pub fn advisory_lock_id(key: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// One held lock: its own session.
struct Session {
    client: tokio_postgres::Client,
    task: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closing the socket ends the session, and the server drops its advisory locks.
        self.task.abort();
    }
}

/// A [`RunLock`] held in PostgreSQL: one session advisory lock per running procedure, each on a
/// dedicated connection (see the module docs). Dropping it closes every session and so
/// releases every lock it holds.
pub struct PgAdvisoryRunLock {
    config: tokio_postgres::Config,
    tls: Option<Arc<rustls::ClientConfig>>,
    target: String,
    timeout: Duration,
    sessions: tokio::sync::Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for PgAdvisoryRunLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAdvisoryRunLock")
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn lock_err(what: &str, e: impl std::fmt::Display) -> RunbookError {
    RunbookError::Lock(redact_url_passwords(&format!("{what}: {e}")))
}

fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

impl PgAdvisoryRunLock {
    /// A lock table in the database `conn_str` names (`postgres://user@host:port/db` or a libpq
    /// keyword string), with `password` unless the string carries one. Connects only when a
    /// lock is taken; fails here only on a malformed connection string.
    pub fn new(conn_str: &str, password: Option<Secret>) -> Result<PgAdvisoryRunLock> {
        let target = redact_url_passwords(conn_str);
        let mut config = tokio_postgres::Config::from_str(conn_str)
            .map_err(|e| lock_err(&format!("cannot parse {target:?}"), e))?;
        if config.get_user().is_none() {
            let user = std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "postgres".into());
            config.user(&user);
        }
        if config.get_hosts().is_empty() {
            if std::path::Path::new("/var/run/postgresql").is_dir() {
                config.host_path("/var/run/postgresql");
            } else {
                config.host("localhost");
            }
        }
        if let (None, Some(pw)) = (config.get_password(), &password) {
            config.password(pw.expose());
        }
        if config.get_application_name().is_none() {
            config.application_name("tej-runlock");
        }
        let timeout = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(10));
        config.connect_timeout(timeout);
        let tls = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => None,
            _ => {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let cfg = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| lock_err("TLS", e))?
                    .with_root_certificates(system_roots())
                    .with_no_client_auth();
                Some(Arc::new(cfg))
            }
        };
        Ok(PgAdvisoryRunLock {
            config,
            tls,
            target,
            timeout,
            sessions: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The lock table of a `[[database]]` of `tej.toml` (its password resolved now).
    pub fn from_database(db: &tej_core::config::DatabaseConfig) -> Result<PgAdvisoryRunLock> {
        let password = match &db.password {
            Some(p) => Some(p.resolve().map_err(|e| {
                RunbookError::Lock(format!("read the password of database {:?}: {e}", db.name))
            })?),
            None => None,
        };
        PgAdvisoryRunLock::new(db.url.expose(), password)
    }

    /// Keys this holder has locked now, sorted.
    pub async fn held(&self) -> Vec<String> {
        let mut v: Vec<String> = self.sessions.lock().await.keys().cloned().collect();
        v.sort();
        v
    }

    /// True when this holder still holds `key`: its session is alive and answers.
    pub async fn still_held(&self, key: &str) -> bool {
        let sessions = self.sessions.lock().await;
        let Some(s) = sessions.get(key) else {
            return false;
        };
        if s.client.is_closed() {
            return false;
        }
        let sql = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted \
                   AND ((classid::int8 << 32) | objid::int8) = $1";
        matches!(
            tokio::time::timeout(self.timeout, s.client.query_one(sql, &[&advisory_lock_id(key)])).await,
            Ok(Ok(row)) if row.try_get::<_, i64>(0).unwrap_or(0) > 0
        )
    }

    async fn connect(&self) -> Result<Session> {
        let fut = async {
            match &self.tls {
                None => {
                    let (client, conn) = self
                        .config
                        .connect(tokio_postgres::NoTls)
                        .await
                        .map_err(|e| lock_err(&format!("connect to {}", self.target), e))?;
                    let task = tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Ok(Session { client, task })
                }
                Some(tls) => {
                    let mk = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                    let (client, conn) = self
                        .config
                        .connect(mk)
                        .await
                        .map_err(|e| lock_err(&format!("connect to {}", self.target), e))?;
                    let task = tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Ok(Session { client, task })
                }
            }
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| RunbookError::Timeout {
                what: format!("connecting to {} for the run lock", self.target),
                after: self.timeout,
            })?
    }
}

#[async_trait]
impl RunLock for PgAdvisoryRunLock {
    async fn try_lock(&self, key: &str) -> Result<bool> {
        let mut sessions = self.sessions.lock().await;
        if let Some(s) = sessions.get(key) {
            if !s.client.is_closed() {
                // Held by this holder already (session locks would stack; the daemon wants "busy").
                return Ok(false);
            }
            sessions.remove(key);
        }
        let session = self.connect().await?;
        let id = advisory_lock_id(key);
        let got = tokio::time::timeout(
            self.timeout,
            session
                .client
                .query_one("SELECT pg_try_advisory_lock($1::int8)", &[&id]),
        )
        .await
        .map_err(|_| RunbookError::Timeout {
            what: format!("pg_try_advisory_lock on {}", self.target),
            after: self.timeout,
        })?
        .map_err(|e| lock_err("pg_try_advisory_lock", e))?;
        let got: bool = got
            .try_get(0)
            .map_err(|e| lock_err("pg_try_advisory_lock reply", e))?;
        if got {
            tracing::debug!(key, id, "run lock taken");
            sessions.insert(key.to_string(), session);
        }
        // Not taken: the session is dropped (closed) here.
        Ok(got)
    }

    async fn unlock(&self, key: &str) -> Result<()> {
        let Some(session) = self.sessions.lock().await.remove(key) else {
            return Ok(());
        };
        if session.client.is_closed() {
            // The session is gone, and with it the lock.
            return Ok(());
        }
        let id = advisory_lock_id(key);
        let r = tokio::time::timeout(
            self.timeout,
            session
                .client
                .query_one("SELECT pg_advisory_unlock($1::int8)", &[&id]),
        )
        .await;
        // Whatever the answer, dropping the session closes it, which releases the lock too.
        drop(session);
        match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(lock_err("pg_advisory_unlock", e)),
            Err(_) => Err(RunbookError::Timeout {
                what: format!("pg_advisory_unlock on {}", self.target),
                after: self.timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ids_are_stable_and_distinct() {
        // FNV-1a reference values: empty input is the offset basis.
        assert_eq!(advisory_lock_id(""), 0xcbf2_9ce4_8422_2325_u64 as i64);
        assert_eq!(advisory_lock_id("a"), 0xaf63_dc4c_8601_ec8c_u64 as i64);
        let keys: Vec<String> = [
            tej_core::ProcedureKind::DailyHealth,
            tej_core::ProcedureKind::WeeklyAudit,
            tej_core::ProcedureKind::SecretRotation,
        ]
        .into_iter()
        .map(crate::lock_key)
        .collect();
        let mut ids: Vec<i64> = keys.iter().map(|k| advisory_lock_id(k)).collect();
        ids.dedup();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn bad_connection_strings_are_refused_without_the_password() {
        let e = PgAdvisoryRunLock::new("postgres://u:hunter2@h:notaport/db", None).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let l = PgAdvisoryRunLock::new("host=127.0.0.1 dbname=x sslmode=disable", None).unwrap();
        assert!(!format!("{l:?}").contains("Secret"));
    }
}

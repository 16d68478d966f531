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
use std::time::Duration;
use tej_core::Secret;
use tej_core::secret::redact_url_passwords;
use tej_db::pg::PgSession;
use tej_db::{PgClient, PgConnectOptions};

/// The advisory lock id of `key`: 64-bit FNV-1a of its UTF-8 bytes, as a signed bigint.
pub fn advisory_lock_id(key: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// A [`RunLock`] held in PostgreSQL: one session advisory lock per running procedure, each on a
/// dedicated session (tej-db's [`PgSession`], see the module docs). Dropping it closes every
/// session and so releases every lock it holds.
pub struct PgAdvisoryRunLock {
    client: PgClient,
    target: String,
    timeout: Duration,
    sessions: tokio::sync::Mutex<HashMap<String, PgSession>>,
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

impl PgAdvisoryRunLock {
    /// A lock table in the database `conn_str` names (`postgres://user@host:port/db` or a libpq
    /// keyword string), with `password` unless the string carries one; connection defaults and
    /// TLS as tej-db's [`PgConnectOptions`]. Connects only when a lock is taken; fails here only
    /// on a malformed connection string.
    pub fn new(conn_str: &str, password: Option<Secret>) -> Result<PgAdvisoryRunLock> {
        let mut opts = PgConnectOptions::new(conn_str);
        if let Some(pw) = password {
            opts = opts.with_password(pw);
        }
        opts.application_name = "tej-runlock".into();
        let timeout = opts.connect_timeout;
        let target = opts.redacted();
        let client = PgClient::new(&opts).map_err(|e| lock_err("run lock database", e))?;
        Ok(PgAdvisoryRunLock {
            client,
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
        if s.is_closed() {
            return false;
        }
        let id = advisory_lock_id(key);
        matches!(
            tokio::time::timeout(self.timeout, s.holds_advisory_lock(id)).await,
            Ok(Ok(true))
        )
    }

    /// Takes (`lock`) or releases the advisory lock of `key` on `session`, within the timeout.
    async fn lock_call(&self, session: &PgSession, lock: bool, key: &str) -> Result<bool> {
        let id = advisory_lock_id(key);
        let what = if lock {
            "pg_try_advisory_lock"
        } else {
            "pg_advisory_unlock"
        };
        let call = async {
            if lock {
                session.try_advisory_lock(id).await
            } else {
                session.advisory_unlock(id).await
            }
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| RunbookError::Timeout {
                what: format!("{what} on {}", self.target),
                after: self.timeout,
            })?
            .map_err(|e| lock_err(what, e))
    }
}

#[async_trait]
impl RunLock for PgAdvisoryRunLock {
    async fn try_lock(&self, key: &str) -> Result<bool> {
        let mut sessions = self.sessions.lock().await;
        if let Some(s) = sessions.get(key) {
            if !s.is_closed() {
                // Held by this holder already (session locks would stack; the daemon wants "busy").
                return Ok(false);
            }
            sessions.remove(key);
        }
        let session =
            self.client.session().await.map_err(|e| {
                lock_err(&format!("connect to {} for the run lock", self.target), e)
            })?;
        let got = self.lock_call(&session, true, key).await?;
        if got {
            tracing::debug!(key, id = advisory_lock_id(key), "run lock taken");
            sessions.insert(key.to_string(), session);
        }
        // Not taken: the session is dropped (closed) here.
        Ok(got)
    }

    async fn unlock(&self, key: &str) -> Result<()> {
        let Some(session) = self.sessions.lock().await.remove(key) else {
            return Ok(());
        };
        if session.is_closed() {
            // The session is gone, and with it the lock.
            return Ok(());
        }
        let r = self.lock_call(&session, false, key).await;
        // Whatever the answer, dropping the session closes it, which releases the lock too.
        drop(session);
        r.map(|_| ())
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

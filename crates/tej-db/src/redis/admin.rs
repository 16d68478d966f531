//! The narrow trait tej uses to administer Redis, and its implementation over the redis crate.

use super::error::classify;
use crate::DbError;
use async_trait::async_trait;
use serde::Serialize;
use std::fmt;
use std::time::Duration;
use tej_core::{Redactor, Secret};

/// A key's type and memory footprint (`TYPE` and `MEMORY USAGE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyStat {
    /// `string`, `hash`, `list`, `set`, `zset`, `stream`...
    pub kind: String,
    /// Bytes, as `MEMORY USAGE ... SAMPLES 0`.
    pub bytes: u64,
}

/// What tej needs from a Redis server. Keys are raw bytes (Redis keys need not be UTF-8).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait RedisAdmin: Send + Sync {
    /// `PING`, returning the round-trip time.
    async fn ping(&self) -> Result<Duration, DbError>;
    /// The text of `INFO` (default sections).
    async fn info(&self) -> Result<String, DbError>;
    /// One `SCAN cursor MATCH pattern COUNT count`; returns the next cursor (0: done) and keys.
    async fn scan(
        &self,
        cursor: u64,
        pattern: &str,
        count: u32,
    ) -> Result<(u64, Vec<Vec<u8>>), DbError>;
    /// `TYPE` and `MEMORY USAGE` for each key, pipelined; `None` for keys that vanished.
    async fn key_stats(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<KeyStat>>, DbError>;
    /// `UNLINK` the keys; returns how many existed.
    async fn unlink(&self, keys: &[Vec<u8>]) -> Result<u64, DbError>;
    /// `FLUSHDB` on the connection's database.
    async fn flush_db(&self) -> Result<(), DbError>;
    /// `FLUSHALL`.
    async fn flush_all(&self) -> Result<(), DbError>;
}

/// How to reach a server. `Debug` hides the password (also one inside the URL).
#[derive(Clone)]
pub struct RedisConnectOptions {
    /// `redis://host:port/db` or `rediss://` for TLS; `redis+unix:///path` for a socket.
    pub url: String,
    /// ACL user name (overrides one in the URL).
    pub username: Option<String>,
    /// Password (overrides one in the URL).
    pub password: Option<Secret>,
    /// Database index (overrides one in the URL).
    pub db: Option<i64>,
    /// Connection and per-command timeout.
    pub timeout: Duration,
}

impl RedisConnectOptions {
    /// Options for `url` with a 10 s timeout.
    pub fn new(url: impl Into<String>) -> RedisConnectOptions {
        RedisConnectOptions {
            url: url.into(),
            username: None,
            password: None,
            db: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// The URL with any password replaced.
    pub fn redacted_url(&self) -> String {
        tej_core::secret::redact_url_passwords(&self.url)
    }
}

impl fmt::Debug for RedisConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnectOptions")
            .field("url", &self.redacted_url())
            .field("username", &self.username)
            .field("password", &self.password)
            .field("db", &self.db)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A [`RedisAdmin`] over one multiplexed connection (cheap to share; commands pipeline).
#[derive(Clone)]
pub struct RedisClient {
    conn: redis::aio::MultiplexedConnection,
    target: String,
    redactor: Redactor,
}

impl fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisClient")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl RedisClient {
    /// Connects (and authenticates, and selects the database) now.
    pub async fn connect(opts: &RedisConnectOptions) -> Result<RedisClient, DbError> {
        let target = opts.redacted_url();
        let mut redactor = Redactor::new();
        if let Some(p) = &opts.password {
            redactor.add(p);
        }
        let redact = |s: &str| redactor.redact(&tej_core::secret::redact_url_passwords(s));
        let info = redis::IntoConnectionInfo::into_connection_info(opts.url.as_str())
            .map_err(|e| DbError::RedisInvalidConfig(redact(&e.to_string())))?;
        if let Some(url_password) = info.redis_settings().password() {
            redactor.add(&Secret::new(url_password));
        }
        let redact = |s: &str| redactor.redact(&tej_core::secret::redact_url_passwords(s));
        let mut settings = info.redis_settings().clone();
        if let Some(u) = &opts.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &opts.password {
            settings = settings.set_password(p.expose());
        }
        if let Some(db) = opts.db {
            if db < 0 {
                return Err(DbError::RedisInvalidConfig(format!(
                    "database index must not be negative, got {db}"
                )));
            }
            settings = settings.set_db(db);
        }
        let info = info.set_redis_settings(settings);
        let client =
            redis::Client::open(info).map_err(|e| classify(&e, "CONNECT", &target, &redact))?;
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(opts.timeout))
            .set_response_timeout(Some(opts.timeout));
        let conn = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| classify(&e, "CONNECT", &target, &redact))?;
        Ok(RedisClient {
            conn,
            target,
            redactor,
        })
    }

    /// Connects with a URL, an optional ACL user and an optional password.
    pub async fn connect_url(
        url: &str,
        username: Option<&str>,
        password: Option<Secret>,
    ) -> Result<RedisClient, DbError> {
        let mut opts = RedisConnectOptions::new(url);
        opts.username = username.map(str::to_string);
        opts.password = password;
        RedisClient::connect(&opts).await
    }

    /// The server, as shown in messages (password redacted).
    pub fn target(&self) -> &str {
        &self.target
    }

    fn err(&self, e: redis::RedisError, command: &str) -> DbError {
        let redact = |s: &str| {
            self.redactor
                .redact(&tej_core::secret::redact_url_passwords(s))
        };
        classify(&e, command, &self.target, &redact)
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        name: &str,
    ) -> Result<T, DbError> {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn)
            .await
            .map_err(|e| self.err(e, name))
    }
}

#[async_trait]
impl RedisAdmin for RedisClient {
    async fn ping(&self) -> Result<Duration, DbError> {
        let start = std::time::Instant::now();
        let reply: String = self.query(&redis::cmd("PING"), "PING").await?;
        if reply != "PONG" {
            return Err(DbError::RedisServer {
                command: "PING".into(),
                message: format!("unexpected reply {reply:?}"),
            });
        }
        Ok(start.elapsed())
    }

    async fn info(&self) -> Result<String, DbError> {
        let v: redis::Value = self.query(&redis::cmd("INFO"), "INFO").await?;
        match v {
            redis::Value::BulkString(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            redis::Value::VerbatimString { text, .. } => Ok(text),
            redis::Value::SimpleString(s) => Ok(s),
            other => Err(DbError::RedisServer {
                command: "INFO".into(),
                message: format!("unexpected reply type {other:?}"),
            }),
        }
    }

    async fn scan(
        &self,
        cursor: u64,
        pattern: &str,
        count: u32,
    ) -> Result<(u64, Vec<Vec<u8>>), DbError> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count.max(1));
        let (next, keys): (String, Vec<Vec<u8>>) = self.query(&cmd, "SCAN").await?;
        let next = next.parse().map_err(|_| DbError::RedisServer {
            command: "SCAN".into(),
            message: format!("cursor {next:?} is not a number"),
        })?;
        Ok((next, keys))
    }

    async fn key_stats(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<KeyStat>>, DbError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("TYPE").arg(k.as_slice());
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(k.as_slice())
                .arg("SAMPLES")
                .arg(0);
        }
        let mut conn = self.conn.clone();
        let replies: Vec<redis::Value> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e, "MEMORY USAGE"))?;
        let mut out = Vec::with_capacity(keys.len());
        for pair in replies.chunks(2) {
            let kind = match pair.first() {
                Some(redis::Value::SimpleString(s)) => s.clone(),
                Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            };
            let bytes = match pair.get(1) {
                Some(redis::Value::Int(n)) => u64::try_from(*n).ok(),
                _ => None,
            };
            out.push(match (kind.as_str(), bytes) {
                ("none", _) | (_, None) => None,
                (_, Some(bytes)) => Some(KeyStat { kind, bytes }),
            });
        }
        Ok(out)
    }

    async fn unlink(&self, keys: &[Vec<u8>]) -> Result<u64, DbError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("UNLINK");
        for k in keys {
            cmd.arg(k.as_slice());
        }
        self.query(&cmd, "UNLINK").await
    }

    async fn flush_db(&self) -> Result<(), DbError> {
        let _: () = self.query(&redis::cmd("FLUSHDB"), "FLUSHDB").await?;
        Ok(())
    }

    async fn flush_all(&self) -> Result<(), DbError> {
        let _: () = self.query(&redis::cmd("FLUSHALL"), "FLUSHALL").await?;
        Ok(())
    }
}

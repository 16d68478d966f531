//! The narrow trait over what the runbooks need from PostgreSQL, and its real implementation
//! over a deadpool-postgres pool.

use super::connect::{PgConnectOptions, Resolved};
use super::error::{ErrorContext, map_pg_error};
use super::{DbError, PgParam, PgRow, PgValue};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::types::{ToSql, Type};

/// Timeouts of a maintenance session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionLimits {
    /// `statement_timeout` (none: unlimited).
    pub statement_timeout: Option<Duration>,
    /// `lock_timeout` (none: wait forever).
    pub lock_timeout: Option<Duration>,
}

/// SQL text. Only tej-db writes it: other crates call tej-db's typed functions, and SQL an
/// operator writes in `tej.toml` runs through [`run_configured_query`](super::run_configured_query).
/// A [`PgAdmin`] mock sees it as a `str`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sql(std::borrow::Cow<'static, str>);

impl Sql {
    /// SQL written in tej-db.
    pub(crate) const fn new(sql: &'static str) -> Sql {
        Sql(std::borrow::Cow::Borrowed(sql))
    }

    /// SQL assembled in tej-db (quoted identifiers, a batch of rows).
    pub(crate) fn owned(sql: String) -> Sql {
        Sql(std::borrow::Cow::Owned(sql))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Sql {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Sql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Sql {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Sql {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// One statement of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct PgStatement {
    sql: Sql,
    params: Vec<PgParam>,
}

impl PgStatement {
    /// `sql` (with `$n` placeholders; cast them: `$1::text`) with `params`.
    pub(crate) fn new(sql: Sql, params: Vec<PgParam>) -> PgStatement {
        PgStatement { sql, params }
    }

    /// The SQL.
    pub fn sql(&self) -> &Sql {
        &self.sql
    }

    /// The parameters.
    pub fn params(&self) -> &[PgParam] {
        &self.params
    }
}

/// The answer to a reachability probe.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ping {
    /// Round trip of `SELECT 1` on an open connection, in milliseconds.
    pub round_trip_ms: f64,
    /// Time to get a connection (a new one includes connect and authentication), in milliseconds.
    pub connect_ms: f64,
}

/// What tej needs from one PostgreSQL database.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait PgAdmin: Send + Sync {
    /// What this talks to, for findings (`db:app@127.0.0.1:5432`); never a password.
    fn target(&self) -> String;
    /// Connects (if needed) and runs `SELECT 1`, the way `pg_isready` probes a server.
    async fn ping(&self) -> Result<Ping, DbError>;
    /// Runs a read query on a pooled connection; may run concurrently with other calls.
    /// The transport of tej-db's typed functions: only tej-db can make an [`Sql`].
    async fn query(&self, sql: Sql, params: &[PgParam]) -> Result<Vec<PgRow>, DbError>;
    /// Runs a maintenance statement (VACUUM, REINDEX, ANALYZE...) outside a transaction block,
    /// with the session's `statement_timeout`/`lock_timeout` set to `limits`; returns rows affected.
    async fn maintenance(&self, sql: Sql, limits: SessionLimits) -> Result<u64, DbError>;
    /// Runs statements in one transaction, committed only if all succeed; rows affected by each.
    async fn transaction(&self, statements: &[PgStatement]) -> Result<Vec<u64>, DbError>;
    /// Free bytes on the file system of the data directory, when the server is local and readable.
    async fn free_disk_bytes(&self) -> Result<Option<u64>, DbError>;
}

/// The real [`PgAdmin`]: a connection pool to one database.
pub struct PgClient {
    pool: Pool,
    ctx: ErrorContext,
    database: String,
    local: bool,
}

impl std::fmt::Debug for PgClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgClient")
            .field("target", &self.ctx.target)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl PgClient {
    /// A client for `opts`; connects lazily, so this fails only on bad settings.
    pub fn new(opts: &PgConnectOptions) -> Result<PgClient, DbError> {
        let Resolved {
            config,
            connector,
            connect_timeout,
            user,
            database,
            target,
            local,
        } = opts.resolve()?;
        let mgr_cfg = ManagerConfig {
            // Maintenance sessions never return to the pool (see `maintenance`), so a
            // liveness check is enough here.
            recycling_method: RecyclingMethod::Fast,
        };
        let mgr = Manager::from_connect(config, connector, mgr_cfg);
        // sslmode allow and prefer may take a second attempt.
        let create_timeout = connect_timeout.map(|t| t * 2);
        let pool = Pool::builder(mgr)
            .max_size(opts.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(create_timeout.map(|t| t + opts.query_timeout))
            .create_timeout(create_timeout)
            .build()
            .map_err(|e| DbError::InvalidConfig(e.to_string()))?;
        Ok(PgClient {
            pool,
            ctx: ErrorContext {
                target,
                user,
                database: database.clone(),
                sql: String::new(),
            },
            database,
            local,
        })
    }

    /// The database name.
    pub fn database(&self) -> &str {
        &self.database
    }

    fn ctx(&self, sql: &str) -> ErrorContext {
        ErrorContext {
            sql: sql.to_string(),
            ..self.ctx.clone()
        }
    }

    async fn conn(&self, sql: &str) -> Result<deadpool_postgres::Object, DbError> {
        use deadpool_postgres::PoolError;
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => map_pg_error(&e, &self.ctx(sql)),
            PoolError::Timeout(_) => DbError::Timeout {
                what: format!("connecting to {}", self.ctx.target),
            },
            other => DbError::ConnectionLost(other.to_string()),
        })
    }
}

/// Runs `sql` with `params` on `c` (statement cached per connection) and converts the rows.
async fn run_query(
    c: &deadpool_postgres::ClientWrapper,
    sql: &str,
    params: &[PgParam],
    ctx: &ErrorContext,
) -> Result<Vec<PgRow>, DbError> {
    let stmt = c
        .prepare_cached(sql)
        .await
        .map_err(|e| map_pg_error(&e, ctx))?;
    let boxed = to_sql_params(params);
    let refs: Vec<&(dyn ToSql + Sync)> = boxed
        .iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = c
        .query(&stmt, &refs)
        .await
        .map_err(|e| map_pg_error(&e, ctx))?;
    let columns: Arc<[String]> = stmt
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect::<Vec<_>>()
        .into();
    rows.iter().map(|r| convert_row(r, &columns)).collect()
}

/// One dedicated session, taken out of the pool for good: for what must stay on one
/// backend (session advisory locks, `pg_backup_start`/`pg_backup_stop`). Dropping it
/// closes the connection, which ends the session and releases its session locks.
pub struct PgSession {
    client: deadpool_postgres::ClientWrapper,
    ctx: ErrorContext,
}

impl std::fmt::Debug for PgSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSession")
            .field("target", &self.ctx.target)
            .field("database", &self.ctx.database)
            .finish_non_exhaustive()
    }
}

impl PgSession {
    /// Runs a query on this session.
    pub(crate) async fn query(&self, sql: &str, params: &[PgParam]) -> Result<Vec<PgRow>, DbError> {
        let ctx = ErrorContext {
            sql: sql.to_string(),
            ..self.ctx.clone()
        };
        run_query(&self.client, sql, params, &ctx).await
    }

    /// True once the connection is gone (server restart, network loss, backend killed).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

impl PgClient {
    /// Opens a dedicated session (see [`PgSession`]), with this client's settings
    /// (TLS, timeouts, password).
    pub async fn session(&self) -> Result<PgSession, DbError> {
        let c = deadpool_postgres::Object::take(self.conn("").await?);
        Ok(PgSession {
            client: c,
            ctx: self.ctx.clone(),
        })
    }
}

fn to_sql_params(params: &[PgParam]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    params
        .iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                PgParam::Text(s) => Box::new(s.clone()),
                PgParam::Int(i) => Box::new(*i),
                PgParam::Float(f) => Box::new(*f),
                PgParam::Bool(b) => Box::new(*b),
            }
        })
        .collect()
}

fn convert_row(row: &tokio_postgres::Row, columns: &Arc<[String]>) -> Result<PgRow, DbError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let bad = |e: tokio_postgres::Error| {
            DbError::UnexpectedReply(format!("column {:?}: {e}", col.name()))
        };
        let t = col.type_();
        let v = if *t == Type::BOOL {
            row.try_get::<_, Option<bool>>(i).map_err(bad)?.into()
        } else if *t == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)
                .map_err(bad)?
                .map(i64::from)
                .into()
        } else if *t == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)
                .map_err(bad)?
                .map(i64::from)
                .into()
        } else if *t == Type::INT8 {
            row.try_get::<_, Option<i64>>(i).map_err(bad)?.into()
        } else if *t == Type::OID {
            row.try_get::<_, Option<u32>>(i)
                .map_err(bad)?
                .map(i64::from)
                .into()
        } else if *t == Type::FLOAT4 {
            row.try_get::<_, Option<f32>>(i)
                .map_err(bad)?
                .map(f64::from)
                .into()
        } else if *t == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(i).map_err(bad)?.into()
        } else if *t == Type::CHAR {
            row.try_get::<_, Option<i8>>(i)
                .map_err(bad)?
                .map(|c| ((c as u8) as char).to_string())
                .into()
        } else if [Type::TEXT, Type::VARCHAR, Type::NAME, Type::BPCHAR].contains(t) {
            row.try_get::<_, Option<String>>(i).map_err(bad)?.into()
        } else if *t == Type::VOID {
            PgValue::Null
        } else {
            return Err(DbError::UnexpectedReply(format!(
                "column {:?} has type {t}, which tej-db does not read (cast it in SQL)",
                col.name()
            )));
        };
        values.push(v);
    }
    Ok(PgRow::new(columns.clone(), values))
}

fn interval(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

#[async_trait]
impl PgAdmin for PgClient {
    fn target(&self) -> String {
        format!("db:{}@{}", self.database, self.ctx.target)
    }

    async fn ping(&self) -> Result<Ping, DbError> {
        let t0 = Instant::now();
        let c = self.conn("SELECT 1").await?;
        let connect_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        c.simple_query("SELECT 1")
            .await
            .map_err(|e| map_pg_error(&e, &self.ctx("SELECT 1")))?;
        Ok(Ping {
            round_trip_ms: t1.elapsed().as_secs_f64() * 1e3,
            connect_ms,
        })
    }

    async fn query(&self, sql: Sql, params: &[PgParam]) -> Result<Vec<PgRow>, DbError> {
        let c = self.conn(&sql).await?;
        run_query(&c, &sql, params, &self.ctx(&sql)).await
    }

    async fn maintenance(&self, sql: Sql, limits: SessionLimits) -> Result<u64, DbError> {
        let sql = sql.as_str();
        // Taken out of the pool: if this future is dropped mid-statement, the session with its
        // timeouts is closed instead of being handed to the next caller.
        let c = deadpool_postgres::Object::take(self.conn(sql).await?);
        let set = format!(
            "SET statement_timeout = '{}'; SET lock_timeout = '{}'",
            limits.statement_timeout.map_or("0".into(), interval),
            limits.lock_timeout.map_or("0".into(), interval),
        );
        c.batch_execute(&set)
            .await
            .map_err(|e| map_pg_error(&e, &self.ctx(&set)))?;
        let msgs = c
            .simple_query(sql)
            .await
            .map_err(|e| map_pg_error(&e, &self.ctx(sql)))?;
        Ok(msgs
            .iter()
            .map(|m| match m {
                tokio_postgres::SimpleQueryMessage::CommandComplete(n) => *n,
                _ => 0,
            })
            .sum())
    }

    async fn transaction(&self, statements: &[PgStatement]) -> Result<Vec<u64>, DbError> {
        let mut c = self.conn("BEGIN").await?;
        let tx = c
            .transaction()
            .await
            .map_err(|e| map_pg_error(&e, &self.ctx("BEGIN")))?;
        let mut counts = Vec::with_capacity(statements.len());
        for st in statements {
            let boxed = to_sql_params(&st.params);
            let refs: Vec<&(dyn ToSql + Sync)> = boxed
                .iter()
                .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                .collect();
            // Dropping `tx` on error rolls the transaction back.
            let n = tx
                .execute(st.sql.as_str(), &refs)
                .await
                .map_err(|e| map_pg_error(&e, &self.ctx(&st.sql)))?;
            counts.push(n);
        }
        tx.commit()
            .await
            .map_err(|e| map_pg_error(&e, &self.ctx("COMMIT")))?;
        Ok(counts)
    }

    async fn free_disk_bytes(&self) -> Result<Option<u64>, DbError> {
        if !self.local {
            return Ok(None);
        }
        let rows = match self
            .query(
                Sql::new("SELECT current_setting('data_directory') AS dir"),
                &[],
            )
            .await
        {
            Ok(r) => r,
            // Without pg_read_all_settings the directory is hidden: unknown, not an error.
            Err(DbError::PermissionDenied { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(dir) = rows.first().map(|r| r.str("dir")).transpose()? else {
            return Ok(None);
        };
        let stat = tokio::task::spawn_blocking(move || nix::sys::statvfs::statvfs(dir.as_str()))
            .await
            .map_err(|e| DbError::UnexpectedReply(format!("statvfs task failed: {e}")))?;
        Ok(stat
            .ok()
            .map(|s| s.blocks_available().saturating_mul(s.fragment_size())))
    }
}

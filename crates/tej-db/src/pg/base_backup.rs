//! The SQL session of a base backup: `pg_backup_start` and `pg_backup_stop` in one session,
//! with what the backup asks of the server in between.

use super::DbError;
use super::connect::{PgConnectOptions, Resolved};
use super::error::{ErrorContext, map_pg_error};
use serde::Serialize;
use tej_core::Secret;

/// What the server says about itself before a base backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerFacts {
    /// `server_version` (`15.8 (Debian 15.8-0+deb12u1)`).
    pub server_version: String,
    /// `server_version_num` (`150008`).
    pub server_version_num: u32,
    /// `data_directory`.
    pub data_directory: String,
    /// WAL segment size, bytes.
    pub wal_segment_size: u64,
    /// `pg_control_system().system_identifier`.
    pub system_identifier: u64,
    /// Timeline of the latest checkpoint.
    pub timeline: u32,
    /// The server is a standby.
    pub in_recovery: bool,
}

/// What `pg_backup_stop` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStopRow {
    /// The stop LSN as the server writes it (`0/3000100`).
    pub lsn: String,
    /// The `backup_label` file's contents.
    pub backup_label: String,
    /// The `tablespace_map` file's contents (empty without tablespaces).
    pub tablespace_map: String,
}

pub use super::health::ArchiverStatus;

impl ArchiverStatus {
    /// Whether `pg_stat_archiver` reports `wal` (a segment name) or a later file archived.
    pub fn has_archived(&self, wal: &str) -> bool {
        let last = self.last_archived_wal.as_deref().and_then(|l| l.get(..24));
        let (Some(last), Some(want)) = (last, wal.get(..24)) else {
            return false;
        };
        // (segment, timeline), as replay orders them.
        (last.get(8..), last.get(..8)) >= (want.get(8..), want.get(..8))
    }

    /// One line quoting the archiver's state, its last failure first.
    pub fn describe(&self) -> String {
        let failed = match (&self.last_failed_wal, &self.last_failed_time) {
            (Some(w), t) => format!(
                "pg_stat_archiver: last failure archiving {w}{} ({} failures)",
                t.as_deref().map(|t| format!(" at {t}")).unwrap_or_default(),
                self.failed_count
            ),
            (None, _) => "pg_stat_archiver: no failure recorded (an archive_command that \
                          cannot be run at all, exit 126 or 127, or is killed by a signal makes \
                          the archiver exit before it records one: see the server log)"
                .to_string(),
        };
        let archived = match (&self.last_archived_wal, &self.last_archived_time) {
            (Some(w), t) => format!(
                "last archived {w}{}",
                t.as_deref().map(|t| format!(" at {t}")).unwrap_or_default()
            ),
            (None, _) => "nothing archived yet".to_string(),
        };
        format!("{failed}, {archived}; archive_mode = {}", self.archive_mode)
    }
}

const FACTS_SQL: &str = "SELECT current_setting('server_version'), \
        current_setting('server_version_num')::int, \
        current_setting('data_directory'), \
        (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), \
        (SELECT system_identifier FROM pg_control_system()), \
        (SELECT timeline_id FROM pg_control_checkpoint()), \
        pg_is_in_recovery()";
const START_SQL: &str = "SELECT pg_backup_start($1, true)::text";
const STOP_SQL: &str = "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop($1)";
const SWITCH_SQL: &str = "SELECT pg_walfile_name(pg_switch_wal())";
/// One PostgreSQL connection for a base backup, opened as every tej connection is (TLS
/// after `sslmode`, libpq's environment and files) and without `statement_timeout` (the
/// checkpoint of `pg_backup_start` takes what it takes). Dropping it closes the session, which aborts
/// a backup started on it.
pub struct BaseBackupSession {
    client: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<()>,
    ctx: ErrorContext,
}

impl std::fmt::Debug for BaseBackupSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseBackupSession")
            .field("target", &self.ctx.target)
            .finish_non_exhaustive()
    }
}

impl Drop for BaseBackupSession {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl BaseBackupSession {
    /// Connects to `conn` (a libpq URL or keyword string), with `password` unless the string
    /// carries one. Needs a superuser, or a role allowed to run `pg_backup_start`/
    /// `pg_backup_stop` and to read `data_directory`.
    pub async fn connect(
        conn: &str,
        password: Option<&Secret>,
    ) -> Result<BaseBackupSession, DbError> {
        let mut opts = PgConnectOptions::new(conn);
        if let Some(p) = password {
            opts = opts.with_password(p.clone());
        }
        opts.application_name = "tej base backup".into();
        opts.query_timeout = std::time::Duration::ZERO;
        let Resolved {
            config,
            connector,
            user,
            database,
            target,
            ..
        } = opts.resolve()?;
        let ctx = ErrorContext {
            target,
            user,
            database,
            sql: String::new(),
        };
        let (client, connection) = connector
            .connect(&config)
            .await
            .map_err(|e| map_pg_error(&e, &ctx))?;
        Ok(BaseBackupSession {
            client,
            connection,
            ctx,
        })
    }

    fn ctx(&self, sql: &str) -> ErrorContext {
        ErrorContext {
            sql: sql.to_string(),
            ..self.ctx.clone()
        }
    }

    async fn row(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, DbError> {
        self.client
            .query_one(sql, params)
            .await
            .map_err(|e| map_pg_error(&e, &self.ctx(sql)))
    }

    /// Version, data directory, WAL segment size, system identifier, timeline.
    pub async fn server_facts(&mut self) -> Result<ServerFacts, DbError> {
        let row = self.row(FACTS_SQL, &[]).await?;
        Ok(ServerFacts {
            server_version: get(&row, 0)?,
            server_version_num: get::<i32>(&row, 1)?.max(0) as u32,
            data_directory: get(&row, 2)?,
            wal_segment_size: get::<i64>(&row, 3)?.max(0) as u64,
            system_identifier: get::<i64>(&row, 4)? as u64,
            timeline: get::<i32>(&row, 5)?.max(0) as u32,
            in_recovery: get(&row, 6)?,
        })
    }

    /// `pg_backup_start(label, fast => true)`: the start LSN as text.
    pub async fn backup_start(&mut self, label: &str) -> Result<String, DbError> {
        let row = self.row(START_SQL, &[&label]).await?;
        get(&row, 0)
    }

    /// `pg_backup_stop(wait_for_archive)`.
    pub async fn backup_stop(&mut self, wait_for_archive: bool) -> Result<BackupStopRow, DbError> {
        let row = self.row(STOP_SQL, &[&wait_for_archive]).await?;
        Ok(BackupStopRow {
            lsn: get(&row, 0)?,
            backup_label: get::<Option<String>>(&row, 1)?.unwrap_or_default(),
            tablespace_map: get::<Option<String>>(&row, 2)?.unwrap_or_default(),
        })
    }

    /// `pg_switch_wal()`: the name of the segment it completed.
    pub async fn switch_wal(&mut self) -> Result<String, DbError> {
        let row = self.row(SWITCH_SQL, &[]).await?;
        get(&row, 0)
    }

    /// `pg_stat_archiver` and `archive_mode`.
    pub async fn archiver_status(&mut self) -> Result<ArchiverStatus, DbError> {
        let row = self.row(super::health::ARCHIVER_SQL, &[]).await?;
        Ok(ArchiverStatus {
            archive_mode: get(&row, 0)?,
            archived_count: get(&row, 1)?,
            last_archived_wal: get(&row, 2)?,
            last_archived_time: get(&row, 3)?,
            failed_count: get(&row, 4)?,
            last_failed_wal: get(&row, 5)?,
            last_failed_time: get(&row, 6)?,
            failing: get(&row, 7)?,
        })
    }
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    i: usize,
) -> Result<T, DbError> {
    row.try_get(i)
        .map_err(|e| DbError::UnexpectedReply(format!("column {i}: {e}")))
}

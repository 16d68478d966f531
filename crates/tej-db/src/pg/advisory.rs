//! Session advisory locks on a dedicated [`PgSession`]: held until unlocked or until the
//! session ends (the server releases them when the backend exits).

use super::{DbError, PgParam, PgSession};

impl PgSession {
    /// Runs `sql` (one boolean column `ok`) with `id`.
    async fn advisory_call(&self, what: &str, sql: &str, id: i64) -> Result<bool, DbError> {
        let rows = self.query(sql, &[PgParam::Int(id)]).await?;
        rows.first()
            .ok_or_else(|| DbError::UnexpectedReply(format!("{what} returned no row")))?
            .bool("ok")
    }

    /// `pg_try_advisory_lock(id)`: true when this session now holds the lock.
    pub async fn try_advisory_lock(&self, id: i64) -> Result<bool, DbError> {
        self.advisory_call(
            "pg_try_advisory_lock",
            "SELECT pg_try_advisory_lock($1::int8) AS ok",
            id,
        )
        .await
    }

    /// `pg_advisory_unlock(id)`: true when this session held the lock.
    pub async fn advisory_unlock(&self, id: i64) -> Result<bool, DbError> {
        self.advisory_call(
            "pg_advisory_unlock",
            "SELECT pg_advisory_unlock($1::int8) AS ok",
            id,
        )
        .await
    }

    /// True when `pg_locks` shows this session holding the advisory lock `id`.
    pub async fn holds_advisory_lock(&self, id: i64) -> Result<bool, DbError> {
        let rows = self
            .query(
                "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted \
                 AND ((classid::int8 << 32) | objid::int8) = $1::int8",
                &[PgParam::Int(id)],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.i64("n").ok()).unwrap_or(0) > 0)
    }
}

//! One module per noun: its clap arguments and its `dispatch`, which turns them into a
//! library call under the [`crate::context::Context`] and renders the result.

pub mod backup;
pub mod calendar;
pub mod cleanup;
pub mod config;
pub mod daemon;
pub mod db;
pub mod deploy;
pub mod docs;
pub mod drill;
pub mod emergency;
pub mod host;
pub mod images;
pub mod logs;
pub mod pitr;
pub mod redis;
pub mod restore;
pub mod run;
pub mod schedule;
pub mod secrets;
pub mod serve;
pub mod services;
pub mod tls;
pub mod wal;

use anyhow::{Context, Result};

/// The connection string and password of `--db`, else of the first `[[database]]` in tej.toml
/// (which already includes `DATABASE_URL`/`PG*`); `None` when neither names a database.
pub fn database_conn(
    cfg: &tej_core::Config,
    db: Option<&str>,
) -> Result<Option<(String, Option<tej_core::Secret>)>> {
    if let Some(s) = db {
        return Ok(Some((s.to_string(), None)));
    }
    let Some(d) = cfg.databases.first() else {
        return Ok(None);
    };
    let password = match &d.password {
        Some(p) => Some(
            p.resolve()
                .with_context(|| format!("read the password of database {:?}", d.name))?,
        ),
        None => None,
    };
    Ok(Some((d.url.expose().to_string(), password)))
}

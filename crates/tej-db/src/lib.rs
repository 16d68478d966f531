//! # tej-db
//!
//! PostgreSQL and Redis health checks and maintenance for tej, as typed async libraries.
//! Callers get report structs (`Serialize`) and [`tej_core::Finding`]s; the SQL stays here.
//!
//! The PostgreSQL half ([`pg`]) checks what a DBA checks every day (reachability, connections,
//! wraparound, who pins the xmin horizon, blocking locks, archiver, checksums, invalid indexes,
//! sequences), audits size, bloat, slow queries and indexes weekly, and runs maintenance as
//! guarded [`tej_core::Step`]s (VACUUM, REINDEX CONCURRENTLY, VACUUM FULL, amcheck, the
//! forced password reset).
//!
//! ```no_run
//! use tej_db::pg::{check_health, HealthOptions, PgClient, PgConnectOptions};
//!
//! # async fn run() -> Result<(), tej_db::pg::DbError> {
//! let client = PgClient::new(&PgConnectOptions::new("postgres://tej@127.0.0.1:5432/app"))?;
//! let report = check_health(&client, &HealthOptions::default()).await;
//! for f in report.report().problems() {
//!     println!("{}: {}", f.check, f.summary);
//! }
//! # Ok(())
//! # }
//! ```

mod error;
pub mod pg;
pub mod redis;

pub use error::DbError;
pub use pg::{PgAdmin, PgClient, PgConnectOptions, PgSession};

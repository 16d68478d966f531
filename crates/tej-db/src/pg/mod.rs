//! PostgreSQL health and maintenance: typed reports and findings over a narrow [`PgAdmin`] trait.
//!
//! The real implementation, [`PgClient`], owns a deadpool-postgres pool (TLS through rustls when
//! `sslmode` asks for it) and sets `statement_timeout`/`lock_timeout` for maintenance sessions;
//! `MockPgAdmin` (feature `mock`) lets procedures be tested without a server. All SQL of tej
//! lives in this module.
//!
//! Entry points, one per `tej db` command:
//! - `health`: [`check_health`] → [`HealthReport`]
//! - `vacuum`: [`vacuum`] / [`VacuumStep`]; `ANALYZE` alone: [`AnalyzeStep`]; `VACUUM FULL`: [`VacuumFullStep`]
//! - `size`: [`size_report`]; `bloat`: [`bloat_report`]; `slow-queries`: [`slow_queries`];
//!   `indexes`: [`index_audit`]; all four at once: [`weekly_audit`]
//! - `reindex`: [`reindex_bloated`] / [`ReindexStep`]
//! - `amcheck`: [`amcheck()`]
//! - `force-password-reset`: [`ForcePasswordResetStep`]
//!
//! What the runbooks and tej-backup read besides: [`archiver_state`], [`buffer_cache_counts`],
//! the capacity history ([`history`]), session advisory locks ([`PgSession::try_advisory_lock`]),
//! the base-backup session ([`base_backup::BaseBackupSession`]), the SQL tej-backup runs
//! through `psql` ([`psql`]), and SQL an operator configured ([`run_configured_query`]).
//! Only tej-db makes an [`Sql`]: [`PgAdmin::query`] is the transport of these functions, not a
//! way for other crates to send their own.

mod admin;
mod advisory;
pub mod amcheck;
pub mod base_backup;
pub mod bloat;
mod connect;
mod conninfo;
mod error;
pub mod health;
pub mod history;
pub mod indexes;
pub mod password_reset;
mod pgfiles;
pub mod psql;
pub mod reindex;
pub mod size;
pub mod slow;
mod stats;
mod tls;
mod util;
pub mod vacuum;
mod value;
pub mod weekly;

#[cfg(any(test, feature = "mock"))]
pub use admin::MockPgAdmin;
pub use admin::{PgAdmin, PgClient, PgSession, PgStatement, Ping, SessionLimits, Sql};
pub use amcheck::{AmcheckOptions, AmcheckReport, CREATE_AMCHECK_SQL, DamagedRelation, amcheck};
pub use bloat::{
    BloatMethod, BloatOptions, BloatReport, RelationBloat, RelationKind, bloat_report,
    extension_installed,
};
pub use connect::PgConnectOptions;
pub use error::DbError;
pub use health::{HealthOptions, HealthReport, check_health};
pub use history::{
    HISTORY_MIGRATION, MeasurementRow, delete_measurements_before, insert_measurements,
    measurement_keys, measurement_series, migrate_history,
};
pub use indexes::{IndexAudit, IndexAuditOptions, index_audit};
pub use password_reset::{ForcePasswordResetStep, PasswordResetOptions, PasswordResetOutcome};
pub use reindex::{
    ReindexCandidate, ReindexOptions, ReindexReport, ReindexResult, ReindexStep,
    drop_reindex_leftovers, reindex_bloated, reindex_candidates, reindex_index,
};
pub use size::{RelationSize, SizeOptions, SizeReport, size_report};
pub use slow::{
    ENABLE_PG_STAT_STATEMENTS, SlowQuery, SlowQueryOptions, SlowQueryOrder, SlowQueryReport,
    slow_queries,
};
pub use stats::{
    ARCHIVER_STATE_SQL, ArchiverState, BUFFER_CACHE_SQL, BufferCacheCounts, ConfiguredQuery,
    archiver_state, buffer_cache_counts, run_configured_query,
};
pub use util::{human_bytes, human_duration};
pub use vacuum::{
    AnalyzeStep, VacuumFullStep, VacuumOptions, VacuumProgress, VacuumReport, VacuumStep, vacuum,
};
pub use value::{PgParam, PgRow, PgValue, quote_ident, quote_qualified};
pub use weekly::{WeeklyAudit, WeeklyAuditOptions, weekly_audit};

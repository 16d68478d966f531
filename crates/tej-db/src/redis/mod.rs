//! Redis health and maintenance, over the `redis` crate (whose types stay inside this module).
//!
//! - [`RedisAdmin`]: the narrow trait (PING, INFO, SCAN, key stats, UNLINK, FLUSHDB, FLUSHALL)
//!   with a mockall mock (`MockRedisAdmin`, feature `mock`); [`RedisClient`] implements it
//!   from a URL (`redis://`, `rediss://` for TLS), an optional ACL user and an optional
//!   [`tej_core::Secret`] password.
//! - [`InfoReport`]: `INFO` parsed into typed sections; [`redis_findings`] judges it the way
//!   `MEMORY DOCTOR` does (small instances are never flagged).
//! - [`find_big_keys`] and [`invalidate_sessions`]: `SCAN`-based, never `KEYS`.
//! - [`FlushStep`] (destructive, refused in production unless overridden) and
//!   [`InvalidateSessionsStep`] (mutating).
//! - Errors are tej-db's one [`DbError`](crate::DbError), its `Redis*` variants.
//!
//! ```no_run
//! use tej_db::redis::{InvalidateOptions, RedisAdmin, RedisClient, invalidate_sessions};
//!
//! # async fn run() -> Result<(), tej_db::DbError> {
//! let redis = RedisClient::connect_url("redis://127.0.0.1:6379/0", None, None).await?;
//! println!("PING {:?}", redis.ping().await?);
//! let report = invalidate_sessions(&redis, &InvalidateOptions::default()).await?;
//! println!("{} sessions removed", report.removed);
//! # Ok(()) }
//! ```

mod admin;
mod error;
mod info;
mod keys;
mod steps;

pub use admin::{KeyStat, RedisAdmin, RedisClient, RedisConnectOptions};
pub use info::{
    ClientsInfo, InfoReport, KeyspaceDb, MemoryInfo, PersistenceInfo, RedisThresholds,
    ReplicationInfo, ServerInfo, StatsInfo, redis_findings,
};
pub use keys::{
    BigKey, BigKeysOptions, BigKeysReport, InvalidateOptions, InvalidationReport, StopReason,
    count_matching, find_big_keys, invalidate_sessions, validate_session_pattern,
};
pub use steps::{FlushScope, FlushStep, InvalidateSessionsStep};

#[cfg(any(test, feature = "mock"))]
pub use admin::MockRedisAdmin;

use crate::DbError;
use tej_core::{Finding, Severity};

/// A health check: PING latency plus [`redis_findings`] on `INFO`. An unreachable server or
/// refused credentials become one critical finding rather than an error.
pub async fn redis_health(
    admin: &dyn RedisAdmin,
    thresholds: &RedisThresholds,
    target: &str,
) -> (Option<InfoReport>, Vec<Finding>) {
    let latency = match admin.ping().await {
        Ok(d) => d,
        Err(e) => {
            let sev = match e {
                DbError::RedisLoading | DbError::RedisBusy(_) => Severity::Warning,
                _ => Severity::Critical,
            };
            return (
                None,
                vec![Finding::new("redis.ping", sev, e.to_string()).target(target)],
            );
        }
    };
    let mut findings = vec![
        Finding::ok(
            "redis.ping",
            format!("PONG in {:.1} ms", latency.as_secs_f64() * 1000.0),
        )
        .metric(tej_core::Metric::new(
            "redis_ping_seconds",
            latency.as_secs_f64(),
            "s",
        ))
        .target(target),
    ];
    match admin.info().await {
        Ok(text) => {
            let info = InfoReport::parse(&text);
            findings.extend(redis_findings(&info, thresholds, target));
            (Some(info), findings)
        }
        Err(e) => {
            findings
                .push(Finding::new("redis.info", Severity::Unknown, e.to_string()).target(target));
            (None, findings)
        }
    }
}

//! The runbook's scheduled procedures composed from the domain crates: a [`context::RunContext`]
//! built from `tej.toml` holds every target, and each procedure runs its checks concurrently
//! through [`crate::run_checks`] into one [`tej_core::Report`].
//!
//! ```no_run
//! use tej_core::{Config, SystemClock};
//! use tej_runbook::{RunContext, RunOptions, daily_health, performance_check, weekly_audit};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load(std::path::Path::new("/etc/tej/tej.toml"))?;
//! let ctx = RunContext::from_config(&config, RunOptions::default())?;
//! let daily = daily_health(&ctx, &SystemClock).await;
//! println!("{}: {:?}", daily.title, daily.severity());
//! let perf = performance_check(&ctx, &SystemClock).await;
//! let weekly = weekly_audit(&ctx, &SystemClock).await;
//! # let _ = (perf, weekly);
//! # Ok(()) }
//! ```

pub mod access_log;
pub mod calendar_runner;
pub mod context;
pub mod daily;
pub mod dispatch;
pub mod emergency;
pub mod monthly;
pub mod nightly;
pub mod performance;
pub mod quarterly;
mod support;
pub mod weekly;

#[cfg(test)]
mod tests;

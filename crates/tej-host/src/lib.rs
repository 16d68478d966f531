//! # tej-host
//!
//! Host checks and chores from the runbook, safe to run against a busy production host:
//!
//! - [`check_resources`]: disk space and inodes per mount, memory and swap, load against
//!   cores, as [`tej_core::Finding`]s with warn/crit thresholds.
//! - [`review_logs`]: one bounded-memory streaming pass over log files (plain or JSON lines,
//!   rotated and gzipped) counting errors, warnings, failed logins and slow queries.
//! - [`CleanupStep`] / [`plan_cleanup`]: remove old files matching a pattern under a root,
//!   never following symlinks out of it and always keeping the newest matches.
//! - [`Firewall`]: block a validated address or network with ufw through
//!   [`tej_core::CommandRunner`], and list the rules.
//!
//! ```no_run
//! use tej_host::{LogReviewOptions, review_logs};
//!
//! let report = review_logs(&["/opt/skillswap/logs".into()], &LogReviewOptions::default())?;
//! for class in &report.classes {
//!     println!("{:?}: {}", class.class, class.count);
//! }
//! # Ok::<(), tej_host::HostError>(())
//! ```

pub mod cleanup;
pub mod cleanup_config;
mod error;
pub mod firewall;
pub mod log_line;
pub mod log_review;
pub mod resources;

pub use cleanup::{
    CleanupFile, CleanupOptions, CleanupPlan, CleanupReport, CleanupStep, apply_cleanup,
    plan_cleanup,
};
pub use error::HostError;
pub use firewall::{
    BlockAddressStep, BlockOutcome, BlockTarget, Firewall, FirewallPolicy, FirewallRule,
    FirewallStatus, parse_ufw_status, validate_block_target,
};
pub use log_line::{find_ip, normalize_message, parse_timestamp};
pub use log_review::{
    AddressCount, ClassSummary, LogClass, LogFileSummary, LogFormat, LogReviewOptions,
    LogReviewReport, LogThresholds, PatternCount, collect_log_files, is_log_file_name, review_logs,
};
pub use resources::{
    LoadUsage, MemoryUsage, MountUsage, ResourceOptions, ResourceReport, ResourceThresholds,
    check_resources, resource_findings,
};

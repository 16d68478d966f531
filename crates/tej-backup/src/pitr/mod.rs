//! Point-in-time recovery (PITR) and the disaster-recovery drill.
//!
//! Built on plain inputs so that any base-backup store and WAL archive can serve it
//! (through [`BaseBackupSource`]):
//!
//! - [`RecoveryTarget`] (time, LSN, xid, restore point name, immediate, latest) with
//!   [`RecoveryAction`] and [`RecoveryTimeline`];
//! - [`choose_base_backup`]: the newest physical backup that finished before the target;
//! - [`check_target_reachable`]: a target beyond the newest archived WAL is refused
//!   before anything is touched;
//! - [`configure_recovery`]: `restore_command` and exactly one target in
//!   `postgresql.auto.conf`, stale targets removed, `recovery.signal` (never `recovery.conf`);
//! - [`run_recovery`]: starts the server and follows recovery to its end, reporting
//!   where it stopped, or that the target was not reached;
//! - [`restore_pitr`] and [`PitrRestoreStep`] (destructive: replaces a data directory
//!   only when confirmed) compose them; [`run_drill`] restores the newest backup into a
//!   scratch cluster and reports RTO and RPO.
//!
//! ```no_run
//! use tej_backup::{
//!     BaseBackupSource, PitrRestoreOptions, RecoveryConfig, RecoveryTarget, ServerOptions,
//!     restore_pitr,
//! };
//! use tej_core::TokioCommandRunner;
//!
//! # async fn run(source: &dyn BaseBackupSource) -> Result<(), tej_backup::BackupError> {
//! let target = RecoveryTarget::parse_cli("time", "2025-01-16 14:30:00+05:30")
//!     .map_err(|e| tej_backup::BackupError::InvalidOptions(e.to_string()))?;
//! let mut opts = PitrRestoreOptions::new(
//!     "/var/lib/postgresql/15/restored",
//!     RecoveryConfig::new("tej wal fetch --repo /backups %f %p", target),
//! );
//! opts.start = Some(ServerOptions::new("/var/lib/postgresql/15/restored.log"));
//! let report = restore_pitr(source, &TokioCommandRunner, &opts).await?;
//! if let Some(r) = report.recovery {
//!     println!("stopped at {:?}, last transaction {:?}", r.stopped_at_lsn, r.stopped_at_time);
//! }
//! # Ok(())
//! # }
//! ```

mod choose;
mod config;
mod drill;
mod restore;
mod server;
mod source;
mod target;

pub use choose::{
    ArchiveHorizon, check_backup_covered, check_target_reachable, choose_base_backup,
};
pub use config::{
    MANAGED_KEYS, RecoveryConfig, RecoveryConfigReport, RestoredArchiving, TARGET_KEYS,
    comment_out, conf_line_key, configure_recovery, quote_conf_value, rewrite_auto_conf,
};
pub use drill::{DrillOptions, DrillReport, SanityResult, pick_free_port, run_drill};
#[cfg(any(test, feature = "mock"))]
pub use restore::MockBaseBackupSource;
pub use restore::{
    BaseBackupSource, PitrRestoreOptions, PitrRestoreReport, PitrRestoreStep, plan_pitr_restore,
    restore_pitr,
};
pub use server::{
    RecoveryLog, RecoveryReport, ServerOptions, run_recovery, running_postmaster, stop_server,
};
pub use source::{RepositorySource, horizon_of};
pub use target::{
    InvalidTarget, MAX_RESTORE_POINT_NAME, RecoveryAction, RecoveryTarget, RecoveryTimeline,
    parse_time, postgres_time,
};

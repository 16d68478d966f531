//! WAL retention: delete archived segments no retained base backup needs.
//!
//! A backup needs every segment from its start segment on (on its timeline and the
//! timelines that follow it), so every segment, `.partial` and `.backup` file whose
//! segment number is below the oldest retained backup's start segment is deleted, on
//! every timeline. History files are always kept. Without a retained base backup nothing
//! is deleted. With a PITR window, nothing archived inside the window is deleted either
//! (and [`crate::retention::prune`] keeps the base backup the window starts from).

use super::WalArchive;
use super::continuity::BaseBackupRef;
use crate::error::BackupError;
use crate::lsn::WalFileName;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

/// Options of [`prune_wal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalPruneOptions {
    /// Only decide and report.
    pub dry_run: bool,
    /// The PITR window promised, in days: nothing archived within it is deleted.
    pub pitr_window_days: Option<u32>,
    /// The current time.
    pub now: Timestamp,
}

/// What [`prune_wal`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalPruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// The backup whose start bounds what is kept.
    pub oldest_backup: Option<String>,
    /// The first segment kept (by segment number, on every timeline).
    pub keep_from: Option<String>,
    /// Files deleted (or that would be, on a dry run).
    pub deleted: Vec<String>,
    /// Files kept.
    pub kept: usize,
    /// Why nothing was deleted, when that is the case.
    pub note: Option<String>,
}

/// Deletes archived WAL that none of `retained` needs (see the module docs).
pub async fn prune_wal(
    archive: &WalArchive,
    retained: &[BaseBackupRef],
    opts: &WalPruneOptions,
) -> Result<WalPruneReport, BackupError> {
    let entries = archive.list().await?;
    let mut report = WalPruneReport {
        dry_run: opts.dry_run,
        oldest_backup: None,
        keep_from: None,
        deleted: Vec::new(),
        kept: entries.len(),
        note: None,
    };
    let Some(oldest) = retained.iter().min_by_key(|b| b.start_segment()) else {
        report.note = Some("no base backup is retained: no WAL is deleted".into());
        return Ok(report);
    };
    let min_seg = oldest.start_segment();
    report.oldest_backup = Some(oldest.id.clone());
    report.keep_from = Some(
        WalFileName::Segment {
            timeline: oldest.physical.timeline,
            segment: min_seg,
            segment_size: oldest.physical.wal_segment_size,
        }
        .to_string(),
    );
    let window_start = opts.pitr_window_days.map(|d| {
        opts.now
            .checked_sub(SignedDuration::from_hours(24 * i64::from(d)))
            .unwrap_or(Timestamp::MIN)
    });
    for e in &entries {
        let Some(seg) = e.file.segment() else {
            continue; // history files are kept
        };
        if seg >= min_seg {
            continue;
        }
        if let (Some(ws), Some(at)) = (window_start, e.pushed_at)
            && at >= ws
        {
            continue;
        }
        if !opts.dry_run {
            archive.delete(&e.name).await?;
        }
        report.deleted.push(e.name.clone());
    }
    report.kept = entries.len() - report.deleted.len();
    Ok(report)
}

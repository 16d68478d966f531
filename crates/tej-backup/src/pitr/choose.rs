//! Which base backup serves a target, and whether the archive can reach it at all.

use super::target::RecoveryTarget;
use crate::error::BackupError;
use crate::lsn::WalFileName;
use crate::manifest::{BackupKind, Manifest};
use jiff::Timestamp;
use serde::Serialize;

/// The newest WAL the archive holds: what bounds every recovery target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ArchiveHorizon {
    /// The newest archived segment (highest segment number; on a tie, highest timeline).
    #[serde(serialize_with = "ser_display")]
    pub segment: WalFileName,
    /// When the newest segment was pushed into the archive.
    pub newest_push_time: Timestamp,
}

fn ser_display<S: serde::Serializer>(w: &WalFileName, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(w)
}

impl ArchiveHorizon {
    /// The first WAL position after the newest archived segment.
    pub fn end_lsn(&self) -> Option<crate::lsn::Lsn> {
        let start = self.segment.start_lsn()?;
        let size = match self.segment {
            WalFileName::Segment { segment_size, .. }
            | WalFileName::Partial { segment_size, .. }
            | WalFileName::BackupHistory { segment_size, .. } => segment_size,
            WalFileName::History { .. } => return None,
        };
        Some(crate::lsn::Lsn(start.0.saturating_add(size)))
    }
}

impl std::fmt::Display for ArchiveHorizon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "newest segment {} pushed at {}",
            self.segment, self.newest_push_time
        )
    }
}

fn physical(m: &Manifest) -> bool {
    m.kind == BackupKind::Physical && m.physical.is_some()
}

/// Picks the base backup to restore for `target`: the newest physical backup (a manifest
/// of kind `Physical` with [`PhysicalInfo`](crate::PhysicalInfo)) that finished before it.
///
/// - `Time(t)`: `finished_at <= t` (recovery cannot stop before the backup is consistent).
/// - `Lsn(l)`: `stop_lsn <= l`.
/// - `Xid`, `Name`, `Immediate`, `Latest`: the newest (by `finished_at`); nothing tells
///   where a transaction id or a restore point lies before replay.
///
/// Fails with [`BackupError::NoBaseBackup`] when none qualifies, naming the oldest one.
pub fn choose_base_backup<'a>(
    manifests: &'a [Manifest],
    target: &RecoveryTarget,
) -> Result<&'a Manifest, BackupError> {
    let candidates: Vec<&Manifest> = manifests.iter().filter(|m| physical(m)).collect();
    let none = |reason: String| BackupError::NoBaseBackup {
        target: target.to_string(),
        reason,
    };
    if candidates.is_empty() {
        return Err(none(
            "the repository holds no physical base backup (logical dumps cannot be replayed to a point in time)".into(),
        ));
    }
    let qualifies = |m: &Manifest| match (target, &m.physical) {
        (RecoveryTarget::Time(t), _) => m.finished_at <= *t,
        (RecoveryTarget::Lsn(l), Some(p)) => p.stop_lsn <= *l,
        (RecoveryTarget::Lsn(_), None) => false,
        _ => true,
    };
    let newest = |a: &&Manifest, b: &&Manifest| {
        a.finished_at
            .cmp(&b.finished_at)
            .then_with(|| a.id.as_str().cmp(b.id.as_str()))
    };
    if let Some(m) = candidates
        .iter()
        .copied()
        .filter(|m| qualifies(m))
        .max_by(newest)
    {
        return Ok(m);
    }
    let oldest = candidates.iter().copied().min_by(newest);
    Err(none(match (target, oldest) {
        (RecoveryTarget::Lsn(_), Some(m)) => format!(
            "every base backup ends after it; the oldest, {}, ends at {}",
            m.id,
            m.physical
                .as_ref()
                .map(|p| p.stop_lsn.to_string())
                .unwrap_or_default()
        ),
        (_, Some(m)) => format!(
            "every base backup finished after it; the oldest, {}, finished at {}",
            m.id, m.finished_at
        ),
        (_, None) => "no physical base backup".into(),
    }))
}

/// Refuses a target that lies beyond the newest archived WAL, before anything is touched.
///
/// The rule, per target kind:
/// - `Time(t)`: refused when there is no archive, or when `t > newest_push_time`. A
///   segment pushed at `P` only holds commits made before `P`, and PostgreSQL stops at
///   the first commit *after* `t`: with `t > P` no archived commit can be after `t`, so
///   recovery would end with "recovery ended before configured recovery target was
///   reached". (The converse does not hold: `t <= P` still needs a commit after `t` in
///   the archive, which only replay can tell; [`run_recovery`](super::run_recovery)
///   reports that case as [`BackupError::TargetNotReached`].)
/// - `Lsn(l)`: refused when there is no archive, or when `l >= end`, where `end` is the
///   first position after the newest archived segment (its start plus the segment
///   size): PostgreSQL stops at the first record at or after `l`, and no archived record
///   starts at or after `end`.
/// - `Xid`, `Name`, `Immediate`, `Latest`: not checked here (where they lie is only known
///   by replaying).
pub fn check_target_reachable(
    target: &RecoveryTarget,
    newest_archived: Option<ArchiveHorizon>,
) -> Result<(), BackupError> {
    let refuse = |horizon: String| BackupError::TargetBeyondArchive {
        target: target.to_string(),
        horizon,
    };
    match (target, newest_archived) {
        (RecoveryTarget::Time(_) | RecoveryTarget::Lsn(_), None) => {
            Err(refuse("the WAL archive is empty".into()))
        }
        (RecoveryTarget::Time(t), Some(h)) if *t > h.newest_push_time => Err(refuse(h.to_string())),
        (RecoveryTarget::Lsn(l), Some(h)) => match h.end_lsn() {
            Some(end) if *l >= end => Err(refuse(format!("{h}, which ends at {end}"))),
            Some(_) => Ok(()),
            None => Err(refuse(format!("{h} is not a WAL segment"))),
        },
        _ => Ok(()),
    }
}

/// Refuses a base backup whose own end (`stop_wal`) is not archived yet: recovery could
/// not even reach a consistent state. Segment numbers are compared across timelines.
pub fn check_backup_covered(
    manifest: &Manifest,
    newest_archived: Option<ArchiveHorizon>,
) -> Result<(), BackupError> {
    let Some(p) = &manifest.physical else {
        return Ok(());
    };
    let stop_segment = p.stop_lsn.segment_number(p.wal_segment_size);
    let newest = newest_archived.and_then(|h| h.segment.segment());
    match newest {
        Some(n) if n >= stop_segment => Ok(()),
        _ => Err(BackupError::TargetBeyondArchive {
            target: format!("the end of base backup {} ({})", manifest.id, p.stop_lsn),
            horizon: newest_archived
                .map(|h| h.to_string())
                .unwrap_or_else(|| "the WAL archive is empty".into()),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::id::BackupId;
    use crate::lsn::{DEFAULT_WAL_SEGMENT_SIZE, Lsn};
    use crate::manifest::{CompressionInfo, PhysicalInfo};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    pub(crate) fn manifest(kind: BackupKind, finished: &str, stop: u64) -> Manifest {
        let at = ts(finished);
        Manifest {
            version: 1,
            id: BackupId::new(at, "main"),
            kind,
            database: None,
            format: None,
            pg_dump_version: None,
            server_version: None,
            paths: Vec::new(),
            started_at: at,
            finished_at: at,
            compression: CompressionInfo {
                algorithm: crate::CompressionAlgo::None,
                level: 0,
            },
            encryption: None,
            raw_size: 0,
            stored_size: 0,
            objects: Vec::new(),
            physical: (kind == BackupKind::Physical).then(|| PhysicalInfo {
                system_identifier: 1,
                timeline: 1,
                start_lsn: Lsn(stop - 0x100),
                stop_lsn: Lsn(stop),
                start_wal: String::new(),
                stop_wal: String::new(),
                wal_segment_size: DEFAULT_WAL_SEGMENT_SIZE,
                pg_major: 15,
                data_directory: "/var/lib/postgresql/15/main".into(),
            }),
            host: String::new(),
            tool: String::new(),
        }
    }

    #[test]
    fn newest_backup_before_the_target_is_chosen() {
        let ms = vec![
            manifest(BackupKind::Physical, "2025-01-14T02:00:00Z", 0x1_0000_0000),
            manifest(BackupKind::Logical, "2025-01-16T01:00:00Z", 0),
            manifest(BackupKind::Physical, "2025-01-15T02:00:00Z", 0x2_0000_0000),
            manifest(BackupKind::Physical, "2025-01-16T02:00:00Z", 0x3_0000_0000),
        ];
        let at = |s| RecoveryTarget::Time(ts(s));
        let pick = |t: RecoveryTarget| choose_base_backup(&ms, &t).map(|m| m.finished_at);
        assert_eq!(
            pick(at("2025-01-15T12:00:00Z")).unwrap(),
            ts("2025-01-15T02:00:00Z")
        );
        // exactly at the finish time qualifies
        assert_eq!(
            pick(at("2025-01-15T02:00:00Z")).unwrap(),
            ts("2025-01-15T02:00:00Z")
        );
        // the logical dump (newer) is never chosen
        assert_eq!(
            pick(at("2025-01-16T01:30:00Z")).unwrap(),
            ts("2025-01-15T02:00:00Z")
        );
        assert_eq!(
            pick(at("2030-01-01T00:00:00Z")).unwrap(),
            ts("2025-01-16T02:00:00Z")
        );
        let e = pick(at("2025-01-13T00:00:00Z")).unwrap_err();
        assert!(
            matches!(e, BackupError::NoBaseBackup { .. })
                && e.to_string().contains("oldest")
                && e.to_string().contains("2025-01-14T02:00:00Z"),
            "{e}"
        );
        assert_eq!(
            pick(RecoveryTarget::Lsn(Lsn(0x2_8000_0000))).unwrap(),
            ts("2025-01-15T02:00:00Z")
        );
        assert_eq!(
            pick(RecoveryTarget::Lsn(Lsn(0x2_0000_0000))).unwrap(),
            ts("2025-01-15T02:00:00Z")
        );
        assert!(pick(RecoveryTarget::Lsn(Lsn(0x10))).is_err());
        for t in [
            RecoveryTarget::Xid(900),
            RecoveryTarget::Name("x".into()),
            RecoveryTarget::Immediate,
            RecoveryTarget::Latest,
        ] {
            assert_eq!(pick(t).unwrap(), ts("2025-01-16T02:00:00Z"));
        }
        let only_logical = vec![manifest(BackupKind::Logical, "2025-01-16T01:00:00Z", 0)];
        let e = choose_base_backup(&only_logical, &RecoveryTarget::Latest).unwrap_err();
        assert!(e.to_string().contains("no physical base backup"), "{e}");
        // a manifest claiming Physical without PhysicalInfo is not usable
        let mut broken = manifest(BackupKind::Physical, "2025-01-16T01:00:00Z", 0x100);
        broken.physical = None;
        assert!(choose_base_backup(&[broken], &RecoveryTarget::Latest).is_err());
    }

    fn horizon(seg: &str, pushed: &str) -> ArchiveHorizon {
        ArchiveHorizon {
            segment: WalFileName::parse(seg, DEFAULT_WAL_SEGMENT_SIZE).unwrap(),
            newest_push_time: ts(pushed),
        }
    }

    #[test]
    fn targets_beyond_the_archive_are_refused() {
        let h = horizon("000000010000000000000005", "2025-01-16T09:00:00Z");
        assert_eq!(h.end_lsn(), Some(Lsn(0x600_0000)));
        let ok = |t: RecoveryTarget| check_target_reachable(&t, Some(h));
        assert!(ok(RecoveryTarget::Time(ts("2025-01-16T09:00:00Z"))).is_ok());
        assert!(ok(RecoveryTarget::Time(ts("2025-01-16T08:00:00Z"))).is_ok());
        let e = ok(RecoveryTarget::Time(ts("2025-01-16T09:00:01Z"))).unwrap_err();
        assert!(
            matches!(e, BackupError::TargetBeyondArchive { .. })
                && e.to_string().contains("000000010000000000000005"),
            "{e}"
        );
        assert!(ok(RecoveryTarget::Lsn(Lsn(0x5FF_FFFF))).is_ok());
        assert!(ok(RecoveryTarget::Lsn(Lsn(0x600_0000))).is_err());
        for t in [
            RecoveryTarget::Xid(5),
            RecoveryTarget::Name("n".into()),
            RecoveryTarget::Immediate,
            RecoveryTarget::Latest,
        ] {
            assert!(ok(t.clone()).is_ok());
            assert!(check_target_reachable(&t, None).is_ok());
        }
        assert!(
            check_target_reachable(&RecoveryTarget::Time(ts("2020-01-01T00:00:00Z")), None)
                .is_err()
        );
        assert!(check_target_reachable(&RecoveryTarget::Lsn(Lsn(1)), None).is_err());
    }

    #[test]
    fn a_backup_whose_end_is_not_archived_is_refused() {
        let m = manifest(BackupKind::Physical, "2025-01-16T02:00:00Z", 0x500_0100);
        assert!(
            check_backup_covered(
                &m,
                Some(horizon("000000010000000000000005", "2025-01-16T03:00:00Z"))
            )
            .is_ok()
        );
        // a newer timeline's segment counts too
        assert!(
            check_backup_covered(
                &m,
                Some(horizon("000000020000000000000006", "2025-01-16T03:00:00Z"))
            )
            .is_ok()
        );
        let e = check_backup_covered(
            &m,
            Some(horizon("000000010000000000000004", "2025-01-16T03:00:00Z")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("0/5000100"), "{e}");
        assert!(check_backup_covered(&m, None).is_err());
    }
}

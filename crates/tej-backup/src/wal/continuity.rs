//! Continuity of the archived WAL chain: from each base backup's start segment to the
//! newest archived segment, following timeline switches recorded in history files, every
//! gap, and the point-in-time-recovery window that actually exists.
//!
//! Which timeline a chain follows: the highest timeline whose history file names the
//! backup's timeline with a switch point at or after the backup's start (what
//! `recovery_target_timeline = 'latest'` replays), else the backup's own timeline. On a
//! switch at LSN `P` from timeline `A` to `B`, segments before `P`'s segment come from
//! `A` and the segment holding `P` onwards from `B` (as PostgreSQL reads them).

use super::{WalArchive, WalEntry};
use crate::error::BackupError;
use crate::lsn::{Lsn, WalFileName};
use crate::manifest::{BackupKind, Manifest, PhysicalInfo};
use jiff::Timestamp;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A base backup as continuity and WAL retention see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BaseBackupRef {
    /// The backup's id.
    pub id: String,
    /// When it finished (the earliest time it can be recovered to).
    pub finished_at: Timestamp,
    /// Its WAL facts.
    pub physical: PhysicalInfo,
}

impl BaseBackupRef {
    /// From a physical backup's manifest (`None` for other kinds or without physical facts).
    pub fn from_manifest(m: &Manifest) -> Option<BaseBackupRef> {
        if m.kind != BackupKind::Physical {
            return None;
        }
        Some(BaseBackupRef {
            id: m.id.to_string(),
            finished_at: m.finished_at,
            physical: m.physical.clone()?,
        })
    }

    fn segment_size(&self) -> u64 {
        self.physical.wal_segment_size.max(1)
    }

    /// The first segment number recovery from this backup needs.
    pub fn start_segment(&self) -> u64 {
        WalFileName::parse(&self.physical.start_wal, self.segment_size())
            .ok()
            .and_then(|f| f.segment())
            .unwrap_or_else(|| self.physical.start_lsn.segment_number(self.segment_size()))
    }

    /// The last segment number recovery needs to reach consistency.
    pub fn stop_segment(&self) -> u64 {
        WalFileName::parse(&self.physical.stop_wal, self.segment_size())
            .ok()
            .and_then(|f| f.segment())
            .unwrap_or_else(|| self.physical.stop_lsn.segment_number(self.segment_size()))
    }
}

/// One line of a timeline history file: `parent` ended at `switch_lsn`, `child` began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineSwitch {
    /// The timeline that ended.
    pub parent: u32,
    /// Where it ended and the child began.
    pub switch_lsn: Lsn,
    /// The timeline that began.
    pub child: u32,
    /// The reason PostgreSQL recorded.
    pub reason: String,
}

/// Parses the history file of `timeline` (`00000003.history`): one line per ancestor,
/// `parentTLI<TAB>switchpoint<TAB>reason`, oldest first; comments and blank lines skipped.
pub fn parse_history(timeline: u32, text: &str) -> Result<Vec<TimelineSwitch>, String> {
    let mut rows: Vec<(u32, Lsn, String)> = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let mut parts = l.split_whitespace();
        let tli: u32 = parts
            .next()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("bad timeline in history line {l:?}"))?;
        let lsn: Lsn = parts
            .next()
            .ok_or_else(|| format!("no switch point in history line {l:?}"))?
            .parse()
            .map_err(|e| format!("{e}"))?;
        if let Some((prev, prev_lsn, _)) = rows.last()
            && (tli <= *prev || lsn < *prev_lsn)
        {
            return Err(format!("history lines out of order at {l:?}"));
        }
        rows.push((tli, lsn, parts.collect::<Vec<_>>().join(" ")));
    }
    if rows.last().is_some_and(|(t, _, _)| *t >= timeline) {
        return Err(format!(
            "history of timeline {timeline} names a later timeline as its ancestor"
        ));
    }
    let mut out = Vec::new();
    for (i, (parent, switch_lsn, reason)) in rows.iter().enumerate() {
        let child = rows.get(i + 1).map(|r| r.0).unwrap_or(timeline);
        out.push(TimelineSwitch {
            parent: *parent,
            switch_lsn: *switch_lsn,
            child,
            reason: reason.clone(),
        });
    }
    Ok(out)
}

/// A run of missing segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalGap {
    /// Timeline.
    pub timeline: u32,
    /// The first missing segment.
    pub first_missing: String,
    /// The last missing segment.
    pub last_missing: String,
    /// How many segments are missing.
    pub missing_segments: u64,
    /// Recovery cannot pass this LSN (the first missing segment's start)...
    pub from_lsn: Lsn,
    /// ...up to this one (the end of the last missing segment).
    pub to_lsn: Lsn,
    /// When the last segment before the gap was archived: recovery through this gap
    /// stops around this time.
    pub last_before_at: Option<Timestamp>,
    /// When the first segment after the gap was archived.
    pub first_after_at: Option<Timestamp>,
    /// The base backups whose chain it breaks.
    pub breaks: Vec<String>,
}

/// One base backup's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupChain {
    /// The backup's id.
    pub backup: String,
    /// The timelines the chain follows, in order.
    pub timelines: Vec<u32>,
    /// Its first segment.
    pub start_wal: String,
    /// Its last segment needed for consistency.
    pub stop_wal: String,
    /// Every segment from start to stop is archived (the backup can be restored at all).
    pub consistent: bool,
    /// No gap from start to the newest archived segment.
    pub unbroken: bool,
    /// The newest segment replay can reach without crossing a gap.
    pub reachable_wal: Option<String>,
    /// The LSN replay can reach (the end of `reachable_wal`).
    pub reachable_lsn: Option<Lsn>,
    /// When `reachable_wal` was archived.
    pub reachable_at: Option<Timestamp>,
    /// The gaps in this chain.
    pub gaps: Vec<WalGap>,
}

/// The span point-in-time recovery can actually reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PitrWindow {
    /// The oldest base backup with an unbroken chain.
    pub from_backup: String,
    /// The earliest recoverable time (when that backup finished).
    pub from_time: Timestamp,
    /// The earliest recoverable LSN (that backup's stop LSN).
    pub from_lsn: Lsn,
    /// The newest archived segment.
    pub to_wal: String,
    /// The end of it.
    pub to_lsn: Lsn,
    /// When it was archived (the latest recoverable time, approximately).
    pub to_time: Option<Timestamp>,
}

/// What [`wal_continuity`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContinuityReport {
    /// Repository.
    pub repository: String,
    /// Timelines with archived files.
    pub timelines: Vec<u32>,
    /// Archived segments.
    pub segments: usize,
    /// Timeline switches read from history files.
    pub switches: Vec<TimelineSwitch>,
    /// One chain per base backup, in the order given.
    pub chains: Vec<BackupChain>,
    /// Every gap found, once, with the backups it breaks.
    pub gaps: Vec<WalGap>,
    /// The PITR window that exists (`None` when no base backup has an unbroken chain).
    pub window: Option<PitrWindow>,
    /// Problems that are not gaps (an unreadable history file...).
    pub problems: Vec<String>,
}

struct Archived {
    /// timeline -> segment number -> archive time
    segments: BTreeMap<u32, BTreeMap<u64, Option<Timestamp>>>,
    /// timeline -> its ancestry
    histories: BTreeMap<u32, Vec<TimelineSwitch>>,
    segment_size: u64,
}

impl Archived {
    fn has(&self, tli: u32, seg: u64) -> bool {
        self.segments
            .get(&tli)
            .is_some_and(|m| m.contains_key(&seg))
    }
    fn time(&self, tli: u32, seg: u64) -> Option<Timestamp> {
        self.segments
            .get(&tli)
            .and_then(|m| m.get(&seg).copied().flatten())
    }
    fn name(&self, tli: u32, seg: u64) -> String {
        WalFileName::Segment {
            timeline: tli,
            segment: seg,
            segment_size: self.segment_size,
        }
        .to_string()
    }

    /// The (timeline, first segment, end segment exclusive or None for open) ranges a
    /// chain from `tli`/`start_lsn` follows.
    fn path(&self, tli: u32, start_lsn: Lsn, start_seg: u64) -> Vec<(u32, u64, Option<u64>)> {
        let target = self
            .histories
            .iter()
            .filter(|(_, h)| {
                h.iter()
                    .any(|s| s.parent == tli && s.switch_lsn >= start_lsn)
            })
            .map(|(t, _)| *t)
            .max();
        let Some(target) = target else {
            return vec![(tli, start_seg, None)];
        };
        let hist = &self.histories[&target];
        let Some(first) = hist.iter().position(|s| s.parent == tli) else {
            return vec![(tli, start_seg, None)];
        };
        let mut out = Vec::new();
        let mut begin = start_seg;
        for s in &hist[first..] {
            let end = s.switch_lsn.segment_number(self.segment_size);
            out.push((s.parent, begin, Some(end)));
            begin = begin.max(end);
        }
        out.push((target, begin, None));
        out
    }
}

/// Checks the archived chain of every base backup in `backups` (see the module docs).
pub async fn wal_continuity(
    archive: &WalArchive,
    backups: &[BaseBackupRef],
) -> Result<ContinuityReport, BackupError> {
    let entries = archive.list().await?;
    let segment_size = archive
        .info()
        .await?
        .map(|i| i.wal_segment_size)
        .or_else(|| backups.first().map(|b| b.physical.wal_segment_size))
        .unwrap_or(crate::lsn::DEFAULT_WAL_SEGMENT_SIZE);
    let mut problems = Vec::new();
    let mut archived = Archived {
        segments: BTreeMap::new(),
        histories: BTreeMap::new(),
        segment_size,
    };
    for e in &entries {
        match e.file {
            WalFileName::Segment {
                timeline, segment, ..
            } => {
                archived
                    .segments
                    .entry(timeline)
                    .or_default()
                    .insert(segment, e.pushed_at);
            }
            WalFileName::History { timeline } => match read_history(archive, e, timeline).await {
                Ok(h) => {
                    archived.histories.insert(timeline, h);
                }
                Err(p) => problems.push(p),
            },
            _ => {}
        }
    }
    Ok(analyse(
        archive.repository().name(),
        &archived,
        backups,
        problems,
        entries.len(),
    ))
}

async fn read_history(
    archive: &WalArchive,
    e: &WalEntry,
    timeline: u32,
) -> Result<Vec<TimelineSwitch>, String> {
    let bytes = archive
        .read(&e.name)
        .await
        .map_err(|err| format!("{}: {err}", e.name))?
        .ok_or_else(|| format!("{}: vanished while being read", e.name))?;
    let text = String::from_utf8_lossy(&bytes);
    parse_history(timeline, &text).map_err(|err| format!("{}: {err}", e.name))
}

fn analyse(
    repository: String,
    a: &Archived,
    backups: &[BaseBackupRef],
    problems: Vec<String>,
    _entries: usize,
) -> ContinuityReport {
    let size = a.segment_size;
    let mut chains = Vec::new();
    let mut gaps: BTreeMap<(u32, u64), WalGap> = BTreeMap::new();
    for b in backups {
        let start_seg = b.start_segment();
        let stop_seg = b.stop_segment();
        let path = a.path(b.physical.timeline, b.physical.start_lsn, start_seg);
        let mut chain_gaps = Vec::new();
        let mut reachable: Option<(u32, u64)> = None;
        let mut broken = false;
        let mut last_present: Option<(u32, u64)> = None;
        for (i, &(tli, begin, end)) in path.iter().enumerate() {
            let end_excl = match end {
                Some(e) => e,
                None => match a.segments.get(&tli).and_then(|m| m.keys().next_back()) {
                    Some(&newest) => newest + 1,
                    None if i == 0 => begin + 1, // nothing archived at all: the start is missing
                    None => begin,
                },
            };
            let mut seg = begin;
            while seg < end_excl {
                if a.has(tli, seg) {
                    last_present = Some((tli, seg));
                    if !broken {
                        reachable = Some((tli, seg));
                    }
                    seg += 1;
                    continue;
                }
                let first = seg;
                while seg < end_excl && !a.has(tli, seg) {
                    seg += 1;
                }
                broken = true;
                let g = gaps.entry((tli, first)).or_insert_with(|| WalGap {
                    timeline: tli,
                    first_missing: a.name(tli, first),
                    last_missing: a.name(tli, seg - 1),
                    missing_segments: seg - first,
                    from_lsn: Lsn(first * size),
                    to_lsn: Lsn(seg * size),
                    last_before_at: last_present.and_then(|(t, s)| a.time(t, s)),
                    first_after_at: (seg < end_excl).then(|| a.time(tli, seg)).flatten(),
                    breaks: Vec::new(),
                });
                g.breaks.push(b.id.clone());
                chain_gaps.push(g.clone());
            }
        }
        let consistent = (start_seg..=stop_seg).all(|s| {
            path.iter()
                .any(|&(tli, begin, end)| s >= begin && end.is_none_or(|e| s < e) && a.has(tli, s))
        });
        chains.push(BackupChain {
            backup: b.id.clone(),
            timelines: path.iter().map(|p| p.0).collect(),
            start_wal: b.physical.start_wal.clone(),
            stop_wal: b.physical.stop_wal.clone(),
            consistent,
            unbroken: !broken && consistent,
            reachable_wal: reachable.map(|(t, s)| a.name(t, s)),
            reachable_lsn: reachable.map(|(_, s)| Lsn((s + 1) * size)),
            reachable_at: reachable.and_then(|(t, s)| a.time(t, s)),
            gaps: chain_gaps,
        });
    }
    // The gaps' `breaks` in the per-chain copies are partial; refresh them.
    let gaps: Vec<WalGap> = gaps.into_values().collect();
    for c in chains.iter_mut() {
        for g in c.gaps.iter_mut() {
            if let Some(full) = gaps
                .iter()
                .find(|x| x.timeline == g.timeline && x.first_missing == g.first_missing)
            {
                g.breaks = full.breaks.clone();
            }
        }
    }
    let window = chains
        .iter()
        .zip(backups)
        .filter(|(c, _)| c.unbroken)
        .min_by_key(|(_, b)| b.finished_at)
        .and_then(|(c, b)| {
            Some(PitrWindow {
                from_backup: b.id.clone(),
                from_time: b.finished_at,
                from_lsn: b.physical.stop_lsn,
                to_wal: c.reachable_wal.clone()?,
                to_lsn: c.reachable_lsn?,
                to_time: c.reachable_at,
            })
        });
    let timelines: BTreeSet<u32> = a
        .segments
        .keys()
        .chain(a.histories.keys())
        .copied()
        .collect();
    let mut switches: Vec<TimelineSwitch> = Vec::new();
    for h in a.histories.values() {
        for s in h {
            if !switches.contains(s) {
                switches.push(s.clone());
            }
        }
    }
    switches.sort_by_key(|s| (s.child, s.switch_lsn));
    ContinuityReport {
        repository,
        timelines: timelines.into_iter().collect(),
        segments: a.segments.values().map(|m| m.len()).sum(),
        switches,
        chains,
        gaps,
        window,
        problems,
    }
}

impl WalArchive {
    /// [`wal_continuity`] of this archive.
    pub async fn continuity(
        &self,
        backups: &[BaseBackupRef],
    ) -> Result<ContinuityReport, BackupError> {
        wal_continuity(self, backups).await
    }
}

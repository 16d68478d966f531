//! Grandfather-father-son retention and `prune`.
//!
//! Retention works per [`Series`] (kind × what is backed up: the database of a dump, the
//! cluster of a base backup, the directories of a file backup): two databases dumped the
//! same day never share a slot. Rules, applied to the finished backups of each series (by
//! manifest time, in a configurable time zone):
//! - `newest-verified`: the newest backup whose last verification passed (or, when none
//!   was ever verified, the newest backup) is always kept.
//! - `newest`: the newest backup is always kept too, verified or not.
//! - `daily`: every backup younger than `daily_days` is kept.
//! - `weekly`: the newest backup of each ISO week younger than `weekly_days` is kept.
//! - `monthly`: the newest backup of each month younger than `monthly_days` is kept.
//! - `yearly`: the newest backup of each year younger than `yearly_days` is kept.
//! - otherwise the backup is deleted (`expired`).
//!
//! - `pitr-window`: with a PITR window (`pitr_window_days`), the newest physical backup
//!   that finished before the window began (else the oldest physical backup) is kept, so
//!   prune never cuts the window; archived WAL is then pruned with [`prune_wal`]: segments
//!   older than the oldest retained physical backup's start segment are deleted, history
//!   files and anything archived within the window are kept.
//!
//! When the newest run of a series failed (a failure record of its target, or a failed
//! verification of its newest backup), nothing of that series is deleted: every backup is
//! kept under the rule `newest-failed`. WAL retention follows the physical backups that
//! remain, and is skipped while a physical series is blocked.
//!
//! `prune` takes the repository lock exclusively (verify and restore hold it shared, see
//! [`crate::lock`]). It leaves a run in progress alone: a manifest-less run is removed only
//! when no live owner holds its target's lock, storage leftovers only when no create is
//! running, and the lock of a dead owner is removed.

use crate::error::BackupError;
use crate::id::BackupId;
use crate::lock::{LockMode, LockOptions, RepoLock};
use crate::manifest::BackupKind;
use crate::repo::{BackupSelector, BackupSummary, Repository, Series};
use crate::wal::{BaseBackupRef, WalArchive, WalPruneOptions, WalPruneReport, prune_wal};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use tej_core::Clock;

/// The retention policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy {
    /// Keep every backup this many days.
    pub daily_days: u32,
    /// Keep the newest of each ISO week this many days.
    pub weekly_days: u32,
    /// Keep the newest of each month this many days.
    pub monthly_days: u32,
    /// Keep the newest of each year this many days.
    pub yearly_days: u32,
    /// The zone whose calendar defines days, weeks, months and years (default Asia/Kolkata).
    pub time_zone: TimeZone,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy::from_config(&tej_core::config::RetentionConfig::default())
    }
}

impl RetentionPolicy {
    /// From `tej.toml`'s `[backup.retention]`, in Asia/Kolkata.
    pub fn from_config(c: &tej_core::config::RetentionConfig) -> RetentionPolicy {
        RetentionPolicy {
            daily_days: c.daily_days,
            weekly_days: c.weekly_days,
            monthly_days: c.monthly_days,
            yearly_days: c.yearly_days,
            time_zone: TimeZone::get("Asia/Kolkata").unwrap_or(TimeZone::UTC),
        }
    }
}

/// The state of one run, as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CandidateState {
    /// Finished; verification passed.
    Verified,
    /// Finished; never verified.
    Unverified,
    /// Finished; its last verification failed.
    VerifyFailed,
    /// A failed or interrupted run (no manifest).
    Failed,
}

/// One run considered by retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// Id.
    pub id: BackupId,
    /// Its time (the manifest's end time; the id's time for failed runs).
    pub time: Timestamp,
    /// State.
    pub state: CandidateState,
}

/// What retention decided for one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Id.
    pub id: BackupId,
    /// The series it was judged in (set by [`plan_series_retention`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<Series>,
    /// Time.
    pub time: Timestamp,
    /// Kept or deleted.
    pub keep: bool,
    /// The rules that keep it (`daily`, `weekly 2025-W03`...), or `expired`.
    pub rules: Vec<String>,
}

/// Retention's decisions over a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionPlan {
    /// One decision per finished backup, newest first.
    pub decisions: Vec<Decision>,
    /// Set when nothing (of some series) may be deleted, with the reason.
    pub blocked: Option<String>,
    /// The series nothing is deleted of (by [`plan_series_retention`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_series: Vec<Series>,
}

/// Decides which finished backups to keep. Failed runs only matter when they are the
/// newest (then nothing is deleted); they get no decision.
pub fn plan_retention(
    policy: &RetentionPolicy,
    candidates: &[Candidate],
    now: Timestamp,
) -> RetentionPlan {
    let mut all: Vec<&Candidate> = candidates.iter().collect();
    all.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let blocked = all.first().and_then(|c| match c.state {
        CandidateState::Failed => Some(format!(
            "the newest run {} failed: nothing is deleted until a backup succeeds",
            c.id
        )),
        CandidateState::VerifyFailed => Some(format!(
            "the newest backup {} failed verification: nothing is deleted",
            c.id
        )),
        _ => None,
    });
    let done: Vec<&Candidate> = all
        .iter()
        .copied()
        .filter(|c| c.state != CandidateState::Failed)
        .collect();
    let mut rules: Vec<Vec<String>> = vec![Vec::new(); done.len()];
    let protected = done
        .iter()
        .position(|c| c.state == CandidateState::Verified)
        .or(if done.is_empty() { None } else { Some(0) });
    if let Some(i) = protected {
        rules[i].push("newest-verified".into());
    }
    if protected != Some(0) && !done.is_empty() {
        rules[0].push("newest".into());
    }
    let day = |d: u32| SignedDuration::from_hours(24 * i64::from(d));
    let age = |c: &Candidate| now.duration_since(c.time);
    for (i, c) in done.iter().enumerate() {
        if age(c) < day(policy.daily_days) {
            rules[i].push("daily".into());
        }
    }
    let mut buckets = |window: u32, label: &dyn Fn(&jiff::Zoned) -> String| {
        let mut seen: HashMap<String, ()> = HashMap::new();
        for (i, c) in done.iter().enumerate() {
            let z = c.time.to_zoned(policy.time_zone.clone());
            let l = label(&z);
            if seen.insert(l.clone(), ()).is_none() && age(c) < day(window) {
                rules[i].push(l);
            }
        }
    };
    buckets(policy.weekly_days, &|z| {
        let w = z.date().iso_week_date();
        format!("weekly {}-W{:02}", w.year(), w.week())
    });
    buckets(policy.monthly_days, &|z| {
        format!("monthly {}-{:02}", z.year(), z.month())
    });
    buckets(policy.yearly_days, &|z| format!("yearly {}", z.year()));
    let decisions = done
        .iter()
        .zip(rules)
        .map(|(c, mut r)| {
            let keep = !r.is_empty() || blocked.is_some();
            if blocked.is_some() && r.is_empty() {
                r.push("newest-failed".into());
            }
            if r.is_empty() {
                r.push("expired".into());
            }
            Decision {
                id: c.id.clone(),
                series: None,
                time: c.time,
                keep,
                rules: r,
            }
        })
        .collect();
    RetentionPlan {
        decisions,
        blocked,
        blocked_series: Vec::new(),
    }
}

/// Retention over every series of a repository: [`plan_retention`] per series of
/// `finished`, where a failed run belongs to the series whose backups carry its id's
/// target; then, with a PITR window, per physical series the newest backup that finished
/// before the window began (else the oldest) is kept (`pitr-window`). Decisions come
/// newest first, each naming its series.
pub fn plan_series_retention(
    policy: &RetentionPolicy,
    finished: &[(Series, Candidate)],
    failed: &[Candidate],
    pitr_window_days: Option<u32>,
    now: Timestamp,
) -> RetentionPlan {
    let mut order: Vec<Series> = Vec::new();
    let mut groups: HashMap<Series, Vec<Candidate>> = HashMap::new();
    for (s, c) in finished {
        if !groups.contains_key(s) {
            order.push(s.clone());
        }
        groups.entry(s.clone()).or_default().push(c.clone());
    }
    let window_start = pitr_window_days.map(|days| {
        now.checked_sub(SignedDuration::from_hours(24 * i64::from(days)))
            .unwrap_or(Timestamp::MIN)
    });
    let mut decisions = Vec::new();
    let mut blocked = Vec::new();
    let mut blocked_series = Vec::new();
    for series in order {
        let mut members = groups.remove(&series).unwrap_or_default();
        let targets: HashSet<&str> = members.iter().map(|c| c.id.target()).collect();
        let runs: Vec<Candidate> = failed
            .iter()
            .filter(|f| targets.contains(f.id.target()))
            .cloned()
            .collect();
        let anchor = match (series.kind, window_start) {
            (BackupKind::Physical, Some(ws)) => members
                .iter()
                .filter(|c| c.time <= ws)
                .max_by_key(|c| (c.time, c.id.clone()))
                .or_else(|| members.iter().min_by_key(|c| (c.time, c.id.clone())))
                .map(|c| c.id.clone()),
            _ => None,
        };
        members.extend(runs);
        let plan = plan_retention(policy, &members, now);
        if let Some(reason) = plan.blocked {
            blocked.push(format!("{series}: {reason}"));
            blocked_series.push(series.clone());
        }
        for mut d in plan.decisions {
            if anchor.as_ref() == Some(&d.id) {
                if !d.keep {
                    d.keep = true;
                    d.rules.clear();
                }
                d.rules.push("pitr-window".into());
            }
            d.series = Some(series.clone());
            decisions.push(d);
        }
    }
    decisions.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    RetentionPlan {
        decisions,
        blocked: (!blocked.is_empty()).then(|| blocked.join("; ")),
        blocked_series,
    }
}

/// The physical backups WAL retention must keep WAL for: every one of `physical` that
/// `plan` does not delete (physical backups outside the plan included).
pub fn wal_retained<'a>(
    plan: &RetentionPlan,
    physical: impl IntoIterator<Item = &'a BackupId>,
) -> Vec<BackupId> {
    let gone: HashSet<&BackupId> = plan
        .decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| &d.id)
        .collect();
    physical
        .into_iter()
        .filter(|id| !gone.contains(id))
        .cloned()
        .collect()
}

/// Whether a listed backup can be relied on: it is finished (only finished backups are
/// listed) and its last verification, if any, passed.
pub fn is_usable(b: &BackupSummary) -> bool {
    b.verification.as_ref().is_none_or(|v| v.ok)
}

/// The newest usable backup (see [`is_usable`]) among `backups` that `selector` selects:
/// the newest of its series for `latest`, the backup itself for an id. Newest is by
/// manifest time, then id, as [`crate::list_backups`] orders them.
pub fn newest_usable<'a>(
    backups: impl IntoIterator<Item = &'a BackupSummary>,
    selector: &BackupSelector,
) -> Option<&'a BackupSummary> {
    backups
        .into_iter()
        .filter(|b| {
            selector.matches(&b.series) && selector.id.as_ref().is_none_or(|id| id == &b.id)
        })
        .filter(|b| is_usable(b))
        .max_by(|a, b| {
            a.finished_at
                .cmp(&b.finished_at)
                .then_with(|| a.id.cmp(&b.id))
        })
}

/// The newest usable backup of every series among `backups`, newest first.
pub fn newest_usable_per_series<'a>(
    backups: impl IntoIterator<Item = &'a BackupSummary>,
) -> Vec<&'a BackupSummary> {
    let mut newest: HashMap<&'a Series, &'a BackupSummary> = HashMap::new();
    for b in backups.into_iter().filter(|b| is_usable(b)) {
        let e = newest.entry(&b.series).or_insert(b);
        if (b.finished_at, &b.id) > (e.finished_at, &e.id) {
            *e = b;
        }
    }
    let mut out: Vec<_> = newest.into_values().collect();
    out.sort_by(|a, b| {
        b.finished_at
            .cmp(&a.finished_at)
            .then_with(|| b.id.cmp(&a.id))
    });
    out
}

/// Options of `prune`.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// The policy.
    pub policy: RetentionPolicy,
    /// Only decide and report.
    pub dry_run: bool,
    /// Only backups whose id carries this target (all when `None`).
    pub target: Option<String>,
    /// Lock settings (prune takes the repository lock exclusively).
    pub lock: LockOptions,
    /// Storage leftovers older than this are removed (default 1 h).
    pub cleanup_older_than: std::time::Duration,
    /// The PITR window promised, in days (`[backup] pitr_window_days`): never cut.
    pub pitr_window_days: Option<u32>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            policy: RetentionPolicy::default(),
            dry_run: false,
            target: None,
            lock: LockOptions::default(),
            cleanup_older_than: std::time::Duration::from_secs(3600),
            pitr_window_days: None,
        }
    }
}

/// What `prune` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PruneReport {
    /// Repository.
    pub repository: String,
    /// Nothing was changed.
    pub dry_run: bool,
    /// Every backup with its series, decision and rules, newest first.
    pub plan: RetentionPlan,
    /// Backups deleted.
    pub deleted: Vec<BackupId>,
    /// Unfinished runs whose leftovers were removed (their owner is gone).
    pub cleaned_runs: Vec<BackupId>,
    /// Unfinished runs left alone: a live owner holds their target's lock.
    pub in_progress: Vec<BackupId>,
    /// Targets whose lock was removed because its owner is gone.
    pub cleared_locks: Vec<String>,
    /// Old failure records removed (older than the newest backup).
    pub removed_failure_records: Vec<BackupId>,
    /// Temporary files or unfinished multipart uploads removed.
    pub cleaned_temporary: u64,
    /// WAL retention, when the repository holds a WAL archive and nothing blocked prune.
    pub wal: Option<WalPruneReport>,
}

/// `prune`: applies GFS retention per series to `repo`, and cleans what runs whose owner
/// is gone left behind.
pub async fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    clock: &dyn Clock,
) -> Result<PruneReport, BackupError> {
    let now = clock.now();
    if opts.dry_run {
        return prune_locked(repo, opts, now).await;
    }
    let pruning = prune_locked(repo, opts, now);
    RepoLock::hold(repo, LockMode::Exclusive, "prune", &opts.lock, now, pruning).await
}

async fn prune_locked(
    repo: &Repository,
    opts: &PruneOptions,
    now: Timestamp,
) -> Result<PruneReport, BackupError> {
    let wanted = |id: &BackupId| opts.target.as_deref().is_none_or(|t| t == id.target());
    // The runs are listed before their owners are judged: a run that starts later is not
    // in the listing.
    let scanned = repo.scan().await?;
    let locks = crate::lock::target_locks(repo, &opts.lock, now).await?;
    let busy: HashSet<String> = locks
        .iter()
        .filter(|l| !l.stale)
        .map(|l| l.target.clone())
        .collect();
    let mut cleaned_runs = Vec::new();
    let mut cleaned_temporary = 0;
    let mut cleared_locks = Vec::new();
    if !opts.dry_run {
        cleaned_runs = repo
            .clean_runs(scanned, |id| wanted(id) && !busy.contains(id.target()), now)
            .await?;
        for l in locks.iter().filter(|l| l.stale) {
            crate::lock::remove_stale_target_lock(repo, l).await?;
            cleared_locks.push(l.target.clone());
        }
        if busy.is_empty() {
            cleaned_temporary = repo
                .store
                .cleanup_incomplete(opts.cleanup_older_than)
                .await?;
        } else {
            tracing::info!(repo = %repo.name(), running = ?busy, "backups are running: temporary objects and multipart uploads are left to them");
        }
    }
    let inv = repo.inventory().await?;
    let finished: Vec<(Series, Candidate)> = inv
        .backups
        .iter()
        .filter(|b| wanted(&b.id))
        .map(|b| {
            (
                b.series.clone(),
                Candidate {
                    id: b.id.clone(),
                    time: b.finished_at,
                    state: match &b.verification {
                        Some(v) if v.ok => CandidateState::Verified,
                        Some(_) => CandidateState::VerifyFailed,
                        None => CandidateState::Unverified,
                    },
                },
            )
        })
        .collect();
    let running = |r: &crate::repo::IncompleteRun| {
        busy.contains(r.id.target()) && r.failure.is_none() && r.objects > 0
    };
    let in_progress: Vec<BackupId> = inv
        .incomplete
        .iter()
        .filter(|r| wanted(&r.id) && running(r))
        .map(|r| r.id.clone())
        .collect();
    let failed: Vec<&crate::repo::IncompleteRun> = inv
        .incomplete
        .iter()
        .filter(|r| wanted(&r.id) && !running(r))
        .collect();
    let failed_candidates: Vec<Candidate> = failed
        .iter()
        .map(|r| Candidate {
            id: r.id.clone(),
            time: r.id.time(),
            state: CandidateState::Failed,
        })
        .collect();
    let plan = plan_series_retention(
        &opts.policy,
        &finished,
        &failed_candidates,
        opts.pitr_window_days,
        now,
    );
    let mut deleted = Vec::new();
    let mut removed_failure_records = Vec::new();
    if !opts.dry_run {
        for d in plan.decisions.iter().filter(|d| !d.keep) {
            repo.delete_backup(&d.id).await?;
            deleted.push(d.id.clone());
        }
        // A failure record older than a backup of its target has served its purpose.
        for r in failed {
            let superseded = plan
                .decisions
                .iter()
                .any(|d| d.id.target() == r.id.target() && r.id.time() < d.time);
            if superseded {
                repo.delete_backup(&r.id).await?;
                removed_failure_records.push(r.id.clone());
            }
        }
    }
    let physical_blocked = plan
        .blocked_series
        .iter()
        .any(|s| s.kind == BackupKind::Physical);
    let wal = if physical_blocked {
        None
    } else {
        let physical = inv
            .backups
            .iter()
            .filter(|b| b.kind == BackupKind::Physical)
            .map(|b| &b.id);
        let retained = wal_retained(&plan, physical);
        prune_archived_wal(repo, &retained, opts, now).await?
    };
    Ok(PruneReport {
        wal,
        repository: repo.name(),
        dry_run: opts.dry_run,
        plan,
        deleted,
        cleaned_runs,
        in_progress,
        cleared_locks,
        removed_failure_records,
        cleaned_temporary,
    })
}

/// WAL retention after backup retention: keeps what every remaining physical backup
/// (`retained`, of every target: the archive belongs to the cluster) needs.
async fn prune_archived_wal(
    repo: &Repository,
    retained_ids: &[BackupId],
    opts: &PruneOptions,
    now: Timestamp,
) -> Result<Option<WalPruneReport>, BackupError> {
    let archive = WalArchive::new(repo.clone());
    if archive.info().await?.is_none() {
        return Ok(None);
    }
    let mut retained = Vec::new();
    for id in retained_ids {
        match repo
            .manifest(id)
            .await?
            .and_then(|m| BaseBackupRef::from_manifest(&m))
        {
            Some(r) => retained.push(r),
            None => {
                return Ok(Some(WalPruneReport {
                    dry_run: opts.dry_run,
                    oldest_backup: None,
                    keep_from: None,
                    deleted: Vec::new(),
                    kept: archive.list().await?.len(),
                    note: Some(format!(
                        "physical backup {id} records no WAL start: no WAL is deleted"
                    )),
                }));
            }
        }
    }
    let report = prune_wal(
        &archive,
        &retained,
        &WalPruneOptions {
            dry_run: opts.dry_run,
            pitr_window_days: opts.pitr_window_days,
            now,
        },
    )
    .await?;
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cand(t: &str, state: CandidateState) -> Candidate {
        Candidate {
            id: BackupId::new(at(t), "main"),
            time: at(t),
            state,
        }
    }

    #[test]
    fn runbook_policy_over_a_year_of_dailies() {
        let now = at("2025-06-30T21:00:00Z");
        let mut c = Vec::new();
        let mut t = at("2024-06-01T20:30:00Z");
        while t < now {
            c.push(Candidate {
                id: BackupId::new(t, "main"),
                time: t,
                state: CandidateState::Unverified,
            });
            t = t.checked_add(SignedDuration::from_hours(24)).unwrap();
        }
        let plan = plan_retention(&RetentionPolicy::default(), &c, now);
        assert!(plan.blocked.is_none());
        let kept: Vec<_> = plan.decisions.iter().filter(|d| d.keep).collect();
        // 30 dailies, ~13 weeks, 12 months, 2 years, with overlaps.
        let dailies = kept
            .iter()
            .filter(|d| d.rules.iter().any(|r| r == "daily"))
            .count();
        assert_eq!(dailies, 30);
        assert!(kept.len() > 40 && kept.len() < 60, "{}", kept.len());
        assert!(
            plan.decisions
                .iter()
                .any(|d| !d.keep && d.rules == ["expired"])
        );
        assert!(
            plan.decisions[0]
                .rules
                .contains(&"newest-verified".to_string())
        );
    }

    #[test]
    fn buckets_follow_the_zone_calendar() {
        // 2025-01-31T20:00Z is already 1 February in Kolkata (+05:30).
        let now = at("2025-02-01T12:00:00Z");
        let c = vec![
            cand("2025-01-31T20:00:00Z", CandidateState::Verified),
            cand("2025-01-31T10:00:00Z", CandidateState::Verified),
        ];
        let p = RetentionPolicy {
            daily_days: 0,
            weekly_days: 0,
            yearly_days: 0,
            ..RetentionPolicy::default()
        };
        let plan = plan_retention(&p, &c, now);
        assert!(
            plan.decisions[0]
                .rules
                .contains(&"monthly 2025-02".to_string())
        );
        assert!(
            plan.decisions[1]
                .rules
                .contains(&"monthly 2025-01".to_string())
        );
    }

    #[test]
    fn a_failed_newest_run_blocks_deletion() {
        let now = at("2030-01-01T00:00:00Z");
        let c = vec![
            cand("2020-01-01T00:00:00Z", CandidateState::Verified),
            cand("2020-01-02T00:00:00Z", CandidateState::Unverified),
            cand("2029-12-31T00:00:00Z", CandidateState::Failed),
        ];
        let plan = plan_retention(&RetentionPolicy::default(), &c, now);
        assert!(plan.blocked.is_some());
        assert!(plan.decisions.iter().all(|d| d.keep));
        let c = vec![
            cand("2020-01-01T00:00:00Z", CandidateState::Verified),
            cand("2020-01-02T00:00:00Z", CandidateState::VerifyFailed),
        ];
        assert!(
            plan_retention(&RetentionPolicy::default(), &c, now)
                .blocked
                .is_some()
        );
    }

    #[test]
    fn the_newest_verified_survives_everything() {
        let now = at("2030-01-01T00:00:00Z");
        let c = vec![
            cand("2020-01-01T00:00:00Z", CandidateState::Verified),
            cand("2020-01-02T00:00:00Z", CandidateState::Unverified),
        ];
        let p = RetentionPolicy {
            daily_days: 1,
            weekly_days: 1,
            monthly_days: 1,
            yearly_days: 1,
            ..RetentionPolicy::default()
        };
        let plan = plan_retention(&p, &c, now);
        let v = plan.decisions.iter().find(|d| d.id == c[0].id).unwrap();
        assert!(v.keep && v.rules == ["newest-verified"]);
        // The newest backup is kept as well, verified or not.
        let u = plan.decisions.iter().find(|d| d.id == c[1].id).unwrap();
        assert!(u.keep && u.rules == ["newest"], "{u:?}");
    }
}

#[cfg(test)]
mod newest_usable_tests {
    use super::*;
    use crate::repo::VerificationRecord;
    use proptest::prelude::*;

    fn summary(db: &str, kind: BackupKind, hour: i64, ok: Option<bool>) -> BackupSummary {
        let at = Timestamp::from_second(1_736_985_600 + hour * 3600).unwrap();
        let id = BackupId::parse(&format!("{}-{db}", at.strftime("%Y%m%dT%H%M%SZ"))).unwrap();
        BackupSummary {
            repository: "mem".into(),
            id,
            kind,
            series: Series {
                kind,
                target: db.into(),
            },
            database: Some(db.into()),
            format: None,
            started_at: at,
            finished_at: at,
            raw_size: 1,
            stored_size: 1,
            compression: "none".into(),
            encrypted: false,
            objects: 1,
            verification: ok.map(|ok| VerificationRecord {
                at,
                ok,
                restore_tested: false,
                error: None,
            }),
        }
    }

    #[test]
    fn the_newest_usable_skips_failed_verifications_and_other_series() {
        let list = vec![
            summary("app", BackupKind::Logical, 1, Some(true)),
            summary("app", BackupKind::Logical, 2, None),
            summary("app", BackupKind::Logical, 3, Some(false)),
            summary("other", BackupKind::Logical, 4, Some(true)),
            summary("files", BackupKind::Files, 5, None),
        ];
        let app = BackupSelector::latest_of(&Series::logical("app"));
        assert_eq!(newest_usable(&list, &app).unwrap().id, list[1].id);
        let any = BackupSelector::parse("latest").unwrap();
        assert_eq!(newest_usable(&list, &any).unwrap().id, list[4].id);
        let logical = BackupSelector::latest_kind(BackupKind::Logical);
        assert_eq!(newest_usable(&list, &logical).unwrap().id, list[3].id);
        // An id selects that backup only, and only while it is usable.
        let failed = BackupSelector::id_in(list[2].id.clone(), &Series::logical("app"));
        assert!(newest_usable(&list, &failed).is_none());
        let first = BackupSelector::id_in(list[0].id.clone(), &Series::logical("app"));
        assert_eq!(newest_usable(&list, &first).unwrap().id, list[0].id);
        let per: Vec<_> = newest_usable_per_series(&list)
            .into_iter()
            .map(|b| b.id.clone())
            .collect();
        assert_eq!(
            per,
            [list[4].id.clone(), list[3].id.clone(), list[1].id.clone()]
        );
    }

    proptest! {
        #[test]
        fn per_series_agrees_with_the_selector_of_each_series(
            raw in proptest::collection::vec((0usize..3, 0i64..200, proptest::option::of(any::<bool>())), 0..40)
        ) {
            let dbs = ["a", "b", "c"];
            let list: Vec<_> = raw
                .iter()
                .map(|(d, h, ok)| summary(dbs[*d], BackupKind::Logical, *h, *ok))
                .collect();
            let per = newest_usable_per_series(&list);
            for db in dbs {
                let sel = BackupSelector::latest_of(&Series::logical(db));
                let one = newest_usable(&list, &sel);
                let from_per = per.iter().find(|b| b.series.target == db).copied();
                prop_assert_eq!(one.map(|b| &b.id), from_per.map(|b| &b.id));
                if let Some(b) = one {
                    prop_assert!(is_usable(b));
                    prop_assert!(list.iter().filter(|x| x.series == b.series && is_usable(x)).all(|x| x.finished_at <= b.finished_at));
                }
            }
            prop_assert!(per.windows(2).all(|w| w[0].finished_at >= w[1].finished_at));
        }
    }
}

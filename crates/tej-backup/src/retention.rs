//! Grandfather-father-son retention and `prune`.
//!
//! Rules, applied to finished backups (by manifest time, in a configurable time zone):
//! - `newest-verified`: the newest backup whose last verification passed (or, when none
//!   was ever verified, the newest backup) is always kept.
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
//! When the newest run failed (a failure record, or a failed verification of the newest
//! backup), nothing is deleted: every backup is kept under the rule `newest-failed`.

use crate::error::BackupError;
use crate::id::BackupId;
use crate::lock::{LockOptions, RepoLock};
use crate::manifest::BackupKind;
use crate::repo::Repository;
use crate::wal::{BaseBackupRef, WalArchive, WalPruneOptions, WalPruneReport, prune_wal};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use std::collections::HashMap;
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
    /// Set when nothing may be deleted, with the reason.
    pub blocked: Option<String>,
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
                time: c.time,
                keep,
                rules: r,
            }
        })
        .collect();
    RetentionPlan { decisions, blocked }
}

/// Options of `prune`.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// The policy.
    pub policy: RetentionPolicy,
    /// Only decide and report.
    pub dry_run: bool,
    /// Only backups of this target (all when `None`).
    pub target: Option<String>,
    /// Lock settings (prune takes the target's lock, or `all`).
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
    /// Every backup with its decision and rules, newest first.
    pub plan: RetentionPlan,
    /// Backups deleted.
    pub deleted: Vec<BackupId>,
    /// Unfinished runs whose leftovers were removed.
    pub cleaned_runs: Vec<BackupId>,
    /// Old failure records removed (older than the newest backup).
    pub removed_failure_records: Vec<BackupId>,
    /// Temporary files or unfinished multipart uploads removed.
    pub cleaned_temporary: u64,
    /// WAL retention, when the repository holds a WAL archive and nothing blocked prune.
    pub wal: Option<WalPruneReport>,
}

/// `prune`: applies GFS retention to `repo`, and cleans what interrupted runs left.
pub async fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    clock: &dyn Clock,
) -> Result<PruneReport, BackupError> {
    let now = clock.now();
    let lock_target = opts.target.clone().unwrap_or_else(|| "all".into());
    let lock = if opts.dry_run {
        None
    } else {
        Some(RepoLock::acquire(repo, &lock_target, "prune", &opts.lock, now).await?)
    };
    let result = prune_locked(repo, opts, now).await;
    if let Some(l) = lock {
        l.release().await?;
    }
    result
}

async fn prune_locked(
    repo: &Repository,
    opts: &PruneOptions,
    now: Timestamp,
) -> Result<PruneReport, BackupError> {
    let mut cleaned_runs = Vec::new();
    let mut cleaned_temporary = 0;
    if !opts.dry_run {
        cleaned_runs = repo.clean_incomplete(opts.target.as_deref(), now).await?;
        cleaned_temporary = repo
            .store
            .cleanup_incomplete(opts.cleanup_older_than)
            .await?;
    }
    let inv = repo.inventory().await?;
    let wanted = |id: &BackupId| opts.target.as_deref().is_none_or(|t| t == id.target());
    let mut candidates: Vec<Candidate> = inv
        .backups
        .iter()
        .filter(|b| wanted(&b.id))
        .map(|b| Candidate {
            id: b.id.clone(),
            time: b.finished_at,
            state: match &b.verification {
                Some(v) if v.ok => CandidateState::Verified,
                Some(_) => CandidateState::VerifyFailed,
                None => CandidateState::Unverified,
            },
        })
        .collect();
    let failed: Vec<&crate::repo::IncompleteRun> =
        inv.incomplete.iter().filter(|r| wanted(&r.id)).collect();
    candidates.extend(failed.iter().map(|r| Candidate {
        id: r.id.clone(),
        time: r.id.time(),
        state: CandidateState::Failed,
    }));
    let mut plan = plan_retention(&opts.policy, &candidates, now);
    if let Some(days) = opts.pitr_window_days {
        let window_start = now
            .checked_sub(SignedDuration::from_hours(24 * i64::from(days)))
            .unwrap_or(Timestamp::MIN);
        let physical = || {
            inv.backups
                .iter()
                .filter(|b| b.kind == BackupKind::Physical && wanted(&b.id))
        };
        let anchor = physical()
            .filter(|b| b.finished_at <= window_start)
            .max_by_key(|b| b.finished_at)
            .or_else(|| physical().min_by_key(|b| b.finished_at));
        if let Some(a) = anchor
            && let Some(d) = plan.decisions.iter_mut().find(|d| d.id == a.id)
        {
            if !d.keep {
                d.keep = true;
                d.rules.clear();
            }
            d.rules.push("pitr-window".into());
        }
    }
    let mut deleted = Vec::new();
    let mut removed_failure_records = Vec::new();
    if !opts.dry_run && plan.blocked.is_none() {
        for d in plan.decisions.iter().filter(|d| !d.keep) {
            repo.delete_backup(&d.id).await?;
            deleted.push(d.id.clone());
        }
        // Failure records older than the newest backup have served their purpose.
        let newest = plan.decisions.first().map(|d| d.time);
        for r in failed {
            if newest.is_some_and(|n| r.id.time() < n) {
                repo.delete_backup(&r.id).await?;
                removed_failure_records.push(r.id.clone());
            }
        }
    }
    let wal = if plan.blocked.is_none() {
        let gone: Vec<&BackupId> = plan
            .decisions
            .iter()
            .filter(|d| !d.keep)
            .map(|d| &d.id)
            .collect();
        prune_archived_wal(repo, &inv, &gone, opts, now).await?
    } else {
        None
    };
    Ok(PruneReport {
        wal,
        repository: repo.name(),
        dry_run: opts.dry_run,
        plan,
        deleted,
        cleaned_runs,
        removed_failure_records,
        cleaned_temporary,
    })
}

/// WAL retention after backup retention: keeps what every remaining physical backup
/// needs (of every target: the archive belongs to the cluster, not to a target).
async fn prune_archived_wal(
    repo: &Repository,
    inv: &crate::repo::Inventory,
    gone: &[&BackupId],
    opts: &PruneOptions,
    now: Timestamp,
) -> Result<Option<WalPruneReport>, BackupError> {
    let archive = WalArchive::new(repo.clone());
    if archive.info().await?.is_none() {
        return Ok(None);
    }
    let mut retained = Vec::new();
    for b in &inv.backups {
        if b.kind != BackupKind::Physical || gone.contains(&&b.id) {
            continue;
        }
        match repo
            .manifest(&b.id)
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
                        "physical backup {} records no WAL start: no WAL is deleted",
                        b.id
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
        let u = plan.decisions.iter().find(|d| d.id == c[1].id).unwrap();
        assert!(!u.keep);
    }
}

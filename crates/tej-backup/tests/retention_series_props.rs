//! Property tests of retention over random histories of several series in one repository
//! (dumps of several databases, base backups of several clusters, file backups): the
//! newest backup of every series survives, a series' decisions do not depend on the other
//! series, and every retained base backup keeps the WAL it needs.

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};
use tej_backup::{
    BackupId, BackupKind, Candidate, CandidateState, RetentionPolicy, Series, plan_retention,
    plan_series_retention, wal_retained,
};

/// The series of run `n`, and the target its id carries (the lock's target).
fn series_of(n: u8) -> (Series, &'static str) {
    match n % 7 {
        0 => (Series::logical("appdb"), "appdb"),
        1 => (Series::logical("otherdb"), "otherdb"),
        2 => (Series::logical("third"), "third"),
        3 => (
            Series {
                kind: BackupKind::Physical,
                target: "7301000000000000001".into(),
            },
            "cluster",
        ),
        4 => (
            Series {
                kind: BackupKind::Physical,
                target: "7301000000000000002".into(),
            },
            "cluster2",
        ),
        5 => (
            Series {
                kind: BackupKind::Files,
                target: "/srv/uploads".into(),
            },
            "files",
        ),
        _ => (
            Series {
                kind: BackupKind::Files,
                target: "/etc/nginx".into(),
            },
            "nginx",
        ),
    }
}

fn state(n: u8) -> CandidateState {
    match n % 10 {
        0 => CandidateState::Failed,
        1 => CandidateState::VerifyFailed,
        2..=5 => CandidateState::Verified,
        _ => CandidateState::Unverified,
    }
}

/// Runs (minutes ago, series, state), windows, PITR window.
type History = (Vec<(i64, u8, u8)>, (u32, u32, u32, u32), Option<u32>);

fn history() -> impl Strategy<Value = History> {
    (
        prop::collection::vec((0i64..2 * 365 * 24 * 60, any::<u8>(), any::<u8>()), 0..120),
        (1u32..40, 0u32..120, 0u32..400, 0u32..3000),
        prop::option::of(1u32..30),
    )
}

struct Built {
    finished: Vec<(Series, Candidate)>,
    failed: Vec<Candidate>,
    /// Start and stop WAL segment of each physical backup (later backups start later).
    wal: HashMap<BackupId, (u64, u64)>,
}

fn build(raw: &[(i64, u8, u8)], now: Timestamp) -> Built {
    let mut seen = std::collections::HashSet::new();
    let mut b = Built {
        finished: Vec::new(),
        failed: Vec::new(),
        wal: HashMap::new(),
    };
    for (minutes_ago, s, st) in raw {
        let Ok(t) = now.checked_sub(SignedDuration::from_mins(*minutes_ago)) else {
            continue;
        };
        let (series, target) = series_of(*s);
        let id = BackupId::new(t, target);
        if !seen.insert(id.clone()) {
            continue;
        }
        let time = t.round(jiff::Unit::Second).unwrap_or(t);
        let c = Candidate {
            id: id.clone(),
            time,
            state: state(*st),
        };
        if c.state == CandidateState::Failed {
            b.failed.push(c);
            continue;
        }
        if series.kind == BackupKind::Physical {
            // One segment per ten minutes of history.
            let start = (2 * 365 * 24 * 60 - *minutes_ago) as u64 / 10;
            b.wal.insert(id, (start, start + 1));
        }
        b.finished.push((series, c));
    }
    b
}

fn policy((d, w, m, y): (u32, u32, u32, u32)) -> RetentionPolicy {
    RetentionPolicy {
        daily_days: d,
        weekly_days: w,
        monthly_days: m,
        yearly_days: y,
        time_zone: jiff::tz::TimeZone::get("Asia/Kolkata").unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_series_keeps_its_newest_backup_and_the_wal_it_needs(
        (raw, windows, pitr) in history()
    ) {
        let now: Timestamp = "2026-11-29T04:00:00Z".parse().unwrap();
        let built = build(&raw, now);
        let policy = policy(windows);
        let plan = plan_series_retention(&policy, &built.finished, &built.failed, pitr, now);

        // One decision per finished backup, each naming its own series.
        prop_assert_eq!(plan.decisions.len(), built.finished.len());
        let series_of_id: HashMap<&BackupId, &Series> =
            built.finished.iter().map(|(s, c)| (&c.id, s)).collect();
        for d in &plan.decisions {
            prop_assert_eq!(d.series.as_ref(), Some(series_of_id[&d.id]));
        }

        // The newest backup of every series survives.
        let mut newest: BTreeMap<String, &Candidate> = BTreeMap::new();
        for (s, c) in &built.finished {
            let e = newest.entry(s.to_string()).or_insert(c);
            if (c.time, &c.id) > (e.time, &e.id) {
                *e = c;
            }
        }
        for (s, c) in &newest {
            let d = plan.decisions.iter().find(|d| d.id == c.id).unwrap();
            prop_assert!(d.keep, "the newest backup {} of {} is deleted: {:?}", c.id, s, d.rules);
        }

        // A series is judged alone: its decisions are those of retention over its own
        // backups and the failed runs of its targets (the PITR window aside).
        if pitr.is_none() {
            for s in newest.keys() {
                let own: Vec<Candidate> = built
                    .finished
                    .iter()
                    .filter(|(x, _)| &x.to_string() == s)
                    .map(|(_, c)| c.clone())
                    .collect();
                let targets: Vec<&str> = own.iter().map(|c| c.id.target()).collect();
                let mut alone = own.clone();
                alone.extend(
                    built.failed.iter().filter(|f| targets.contains(&f.id.target())).cloned(),
                );
                let expected = plan_retention(&policy, &alone, now);
                for e in &expected.decisions {
                    let d = plan.decisions.iter().find(|d| d.id == e.id).unwrap();
                    prop_assert_eq!(d.keep, e.keep, "{} in {}", e.id, s);
                    prop_assert_eq!(&d.rules, &e.rules);
                }
            }
        }

        // WAL retention keeps from the oldest retained base backup's start: every retained
        // base backup finds every segment from its start to its stop.
        let physical: Vec<&BackupId> = built.wal.keys().collect();
        let retained = wal_retained(&plan, physical.iter().copied());
        let keep_from = retained.iter().map(|id| built.wal[id].0).min();
        for d in plan.decisions.iter().filter(|d| d.keep && built.wal.contains_key(&d.id)) {
            prop_assert!(retained.contains(&d.id), "retained base backup {} not given to WAL retention", d.id);
            let (start, stop) = built.wal[&d.id];
            let from = keep_from.unwrap();
            prop_assert!((start..=stop).all(|seg| seg >= from), "{} needs {start}..={stop}, WAL kept from {from}", d.id);
        }
        for id in &retained {
            let d = plan.decisions.iter().find(|d| &d.id == id).unwrap();
            prop_assert!(d.keep, "deleted base backup {} still holds WAL", id);
        }

        // With a PITR window, every base backup series keeps an anchor.
        if pitr.is_some() {
            for (s, _) in newest.iter().filter(|(s, _)| s.starts_with("physical")) {
                prop_assert!(
                    plan.decisions.iter().any(|d| d.series.as_ref().is_some_and(|x| &x.to_string() == s)
                        && d.rules.iter().any(|r| r == "pitr-window")),
                    "no pitr-window anchor in {}", s
                );
            }
        }
    }
}

#[test]
fn two_databases_on_one_day_keep_one_backup_each() {
    let now: Timestamp = "2026-11-29T04:00:00Z".parse().unwrap();
    let day_ago = |h: i64| {
        now.checked_sub(SignedDuration::from_hours(240 + h))
            .unwrap()
    };
    let c = |t: Timestamp, target: &str| Candidate {
        id: BackupId::new(t, target),
        time: t,
        state: CandidateState::Unverified,
    };
    let finished = vec![
        (Series::logical("appdb"), c(day_ago(3), "appdb")),
        (Series::logical("appdb"), c(day_ago(2), "appdb")),
        (Series::logical("otherdb"), c(day_ago(1), "otherdb")),
        (
            Series {
                kind: BackupKind::Files,
                target: "/srv/uploads".into(),
            },
            c(day_ago(0), "files"),
        ),
    ];
    let p = RetentionPolicy {
        daily_days: 1,
        ..RetentionPolicy::default()
    };
    let plan = plan_series_retention(&p, &finished, &[], None, now);
    let kept: Vec<&BackupId> = plan
        .decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| &d.id)
        .collect();
    assert_eq!(kept.len(), 3, "{plan:#?}");
    assert!(!kept.contains(&&finished[0].1.id));
}

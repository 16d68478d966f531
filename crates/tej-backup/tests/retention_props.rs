//! Property tests of GFS retention over random backup histories.

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use std::collections::HashMap;
use tej_backup::{BackupId, Candidate, CandidateState, RetentionPolicy, plan_retention};

fn state(n: u8) -> CandidateState {
    match n % 10 {
        0 => CandidateState::Failed,
        1 => CandidateState::VerifyFailed,
        2..=5 => CandidateState::Verified,
        _ => CandidateState::Unverified,
    }
}

/// Random runs (minutes ago, state), windows (daily, weekly, monthly, yearly), UTC or not.
type History = (Vec<(i64, u8)>, (u32, u32, u32, u32), bool);
/// A bucket labeller.
type Label<'a> = &'a dyn Fn(&jiff::Zoned) -> String;

fn history() -> impl Strategy<Value = History> {
    (
        prop::collection::vec((0i64..3 * 365 * 24 * 60, any::<u8>()), 0..80),
        (0u32..40, 0u32..120, 0u32..400, 0u32..3000),
        any::<bool>(),
    )
}

fn build(raw: &[(i64, u8)], now: Timestamp) -> Vec<Candidate> {
    let mut seen = std::collections::HashSet::new();
    raw.iter()
        .filter_map(|(minutes_ago, s)| {
            let t = now
                .checked_sub(SignedDuration::from_mins(*minutes_ago))
                .ok()?;
            let id = BackupId::new(t, "main");
            seen.insert(id.clone()).then(|| Candidate {
                id,
                time: id_time(t),
                state: state(*s),
            })
        })
        .collect()
}

fn id_time(t: Timestamp) -> Timestamp {
    t.round(jiff::Unit::Second).unwrap_or(t)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn gfs_invariants_hold((raw, (d, w, m, y), utc) in history()) {
        let now: Timestamp = "2026-11-29T04:00:00Z".parse().unwrap();
        let policy = RetentionPolicy {
            daily_days: d, weekly_days: w, monthly_days: m, yearly_days: y,
            time_zone: if utc { jiff::tz::TimeZone::UTC } else { jiff::tz::TimeZone::get("Asia/Kolkata").unwrap() },
        };
        let cands = build(&raw, now);
        let plan = plan_retention(&policy, &cands, now);
        let done: Vec<&Candidate> = cands.iter().filter(|c| c.state != CandidateState::Failed).collect();
        prop_assert_eq!(plan.decisions.len(), done.len());
        let kept = |id: &BackupId| plan.decisions.iter().find(|d| &d.id == id).map(|d| d.keep).unwrap_or(false);

        // Newest first.
        for pair in plan.decisions.windows(2) {
            prop_assert!(pair[0].time >= pair[1].time);
        }
        // The newest verified backup (or the newest backup when none is verified) is kept.
        let mut sorted = done.clone();
        sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
        let protected = sorted.iter().find(|c| c.state == CandidateState::Verified).or(sorted.first());
        if let Some(p) = protected {
            prop_assert!(kept(&p.id), "newest verified {} deleted", p.id);
        }
        // The newest backup is kept, verified or not.
        if let Some(n) = sorted.first() {
            prop_assert!(kept(&n.id), "newest {} deleted", n.id);
        }
        // Nothing younger than the daily window is deleted.
        for c in &done {
            if now.duration_since(c.time) < SignedDuration::from_hours(24 * i64::from(d)) {
                prop_assert!(kept(&c.id), "{} is inside the daily window", c.id);
            }
        }
        // Every rule's bucket keeps its newest member (when that member is inside the window).
        let rules: [(u32, Label<'_>); 3] = [
            (w, &|z| { let i = z.date().iso_week_date(); format!("{}-{}", i.year(), i.week()) }),
            (m, &|z| format!("{}-{}", z.year(), z.month())),
            (y, &|z| format!("{}", z.year())),
        ];
        for (window, label) in rules {
            let mut newest: HashMap<String, &Candidate> = HashMap::new();
            for c in &sorted {
                newest.entry(label(&c.time.to_zoned(policy.time_zone.clone()))).or_insert(c);
            }
            for c in newest.values() {
                if now.duration_since(c.time) < SignedDuration::from_hours(24 * i64::from(window)) {
                    prop_assert!(kept(&c.id), "{} is the newest of its bucket", c.id);
                }
            }
        }
        // When the newest run failed, nothing is deleted.
        let mut all = cands.clone();
        all.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
        if let Some(first) = all.first()
            && matches!(first.state, CandidateState::Failed | CandidateState::VerifyFailed)
        {
            prop_assert!(plan.blocked.is_some());
            prop_assert!(plan.decisions.iter().all(|d| d.keep));
        }
        // Every decision names the rule that decided it.
        for dcs in &plan.decisions {
            prop_assert!(!dcs.rules.is_empty());
            prop_assert_eq!(dcs.keep, dcs.rules != ["expired"]);
        }
    }
}

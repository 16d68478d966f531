//! Key-space work done with `SCAN` (never `KEYS`): big keys, and session invalidation.

use super::admin::RedisAdmin;
use crate::DbError;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// How [`find_big_keys`] samples the key space.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BigKeysOptions {
    /// `SCAN ... MATCH` pattern.
    pub pattern: String,
    /// `SCAN ... COUNT` hint per call.
    pub scan_count: u32,
    /// Stop after this many keys were measured.
    pub max_keys: u64,
    /// Stop after this much time.
    pub time_budget: Duration,
    /// Keys reported, biggest first.
    pub top: usize,
    /// Pause between `SCAN` calls, to leave the server room on a busy host.
    pub pause: Duration,
}

impl Default for BigKeysOptions {
    fn default() -> Self {
        BigKeysOptions {
            pattern: "*".into(),
            scan_count: 500,
            max_keys: 1_000_000,
            time_budget: Duration::from_secs(30),
            top: 20,
            pause: Duration::ZERO,
        }
    }
}

/// One big key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BigKey {
    /// The key (lossy UTF-8).
    pub key: String,
    /// Its type.
    pub kind: String,
    /// Its memory use in bytes.
    pub bytes: u64,
}

/// Why a scan stopped before covering the whole key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// `max_keys` was reached.
    KeyBudget,
    /// `time_budget` ran out.
    TimeBudget,
}

/// What [`find_big_keys`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BigKeysReport {
    /// Pattern scanned.
    pub pattern: String,
    /// Keys measured.
    pub scanned: u64,
    /// Bytes of all measured keys.
    pub total_bytes: u64,
    /// True when the whole key space was covered.
    pub complete: bool,
    /// Why it stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<StopReason>,
    /// The biggest keys, biggest first.
    pub top: Vec<BigKey>,
}

/// Finds the biggest keys with `SCAN` + `TYPE` + `MEMORY USAGE`, within a key and time budget.
pub async fn find_big_keys(
    admin: &dyn RedisAdmin,
    opts: &BigKeysOptions,
) -> Result<BigKeysReport, DbError> {
    let started = tokio::time::Instant::now();
    let mut heap: BinaryHeap<Reverse<(u64, Vec<u8>, String)>> = BinaryHeap::new();
    let mut cursor = 0u64;
    let mut report = BigKeysReport {
        pattern: opts.pattern.clone(),
        scanned: 0,
        total_bytes: 0,
        complete: false,
        stopped: None,
        top: Vec::new(),
    };
    loop {
        let (next, keys) = admin.scan(cursor, &opts.pattern, opts.scan_count).await?;
        let stats = admin.key_stats(&keys).await?;
        for (key, stat) in keys.into_iter().zip(stats) {
            let Some(stat) = stat else { continue };
            report.scanned += 1;
            report.total_bytes += stat.bytes;
            if opts.top > 0 {
                heap.push(Reverse((stat.bytes, key, stat.kind)));
                if heap.len() > opts.top {
                    heap.pop();
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            report.complete = true;
            break;
        }
        if report.scanned >= opts.max_keys {
            report.stopped = Some(StopReason::KeyBudget);
            break;
        }
        if started.elapsed() >= opts.time_budget {
            report.stopped = Some(StopReason::TimeBudget);
            break;
        }
        if !opts.pause.is_zero() {
            tokio::time::sleep(opts.pause).await;
        }
    }
    let mut top: Vec<_> = heap.into_iter().map(|Reverse(t)| t).collect();
    top.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    report.top = top
        .into_iter()
        .map(|(bytes, key, kind)| BigKey {
            key: String::from_utf8_lossy(&key).into_owned(),
            kind,
            bytes,
        })
        .collect();
    Ok(report)
}

/// How [`invalidate_sessions`] works through the key space.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvalidateOptions {
    /// Keys to remove (`sess:*`); must not match everything.
    pub pattern: String,
    /// `SCAN ... COUNT` hint per call.
    pub scan_count: u32,
    /// Keys per `UNLINK`.
    pub batch: usize,
}

impl Default for InvalidateOptions {
    fn default() -> Self {
        InvalidateOptions {
            pattern: "sess:*".into(),
            scan_count: 1000,
            batch: 500,
        }
    }
}

/// What [`invalidate_sessions`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvalidationReport {
    /// Pattern used.
    pub pattern: String,
    /// Keys `SCAN` returned (a key may be returned more than once).
    pub matched: u64,
    /// Keys that existed and were unlinked.
    pub removed: u64,
    /// `UNLINK` calls made.
    pub batches: u64,
}

/// Whether a Redis glob pattern pins at least one literal character every matching key
/// must contain. Wildcards (`*`, `?`), character classes of several members (`[a-z]`,
/// `[^x]`) and their combinations pin none: such a pattern can match keys of every
/// namespace. An escaped character (`\*`) and a one-member class (`[s]`) are literals.
fn has_literal(pattern: &str) -> bool {
    let b = pattern.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'*' | b'?' => i += 1,
            b'\\' => return true,
            b'[' => {
                // A class up to the closing `]`; unterminated, Redis matches to the end.
                let mut j = i + 1;
                let negated = b.get(j) == Some(&b'^');
                if negated {
                    j += 1;
                }
                let start = j;
                let mut members = 0usize;
                while j < b.len() && b[j] != b']' {
                    if b[j] == b'\\' && j + 1 < b.len() {
                        j += 1;
                    }
                    members += 1;
                    j += 1;
                }
                let one_literal = !negated && members == 1 && !b[start..j].contains(&b'-');
                if one_literal {
                    return true;
                }
                i = j + 1;
            }
            _ => return true,
        }
    }
    false
}

/// Refuses patterns that can match every key (judged by what they can match, not by their
/// spelling: `*`, `?*`, `**`, `[a-z]*`...): that is `FLUSHDB`, which has its own step.
pub fn validate_session_pattern(pattern: &str) -> Result<(), DbError> {
    if pattern.trim().is_empty() || !has_literal(pattern) {
        return Err(DbError::RedisRefused {
            command: "UNLINK".into(),
            reason: format!(
                "pattern {pattern:?} has no literal part, so it can match every key; \
                 name the session prefix (`sess:*`), or use the FLUSHDB step to remove everything"
            ),
        });
    }
    Ok(())
}

/// Removes every key matching `opts.pattern` with `SCAN` + `UNLINK` in batches; other keys stay.
pub async fn invalidate_sessions(
    admin: &dyn RedisAdmin,
    opts: &InvalidateOptions,
) -> Result<InvalidationReport, DbError> {
    validate_session_pattern(&opts.pattern)?;
    let batch = opts.batch.max(1);
    let mut report = InvalidationReport {
        pattern: opts.pattern.clone(),
        matched: 0,
        removed: 0,
        batches: 0,
    };
    let mut pending: Vec<Vec<u8>> = Vec::with_capacity(batch);
    let mut cursor = 0u64;
    loop {
        let (next, keys) = admin.scan(cursor, &opts.pattern, opts.scan_count).await?;
        report.matched += keys.len() as u64;
        for k in keys {
            pending.push(k);
            if pending.len() >= batch {
                report.removed += admin.unlink(&pending).await?;
                report.batches += 1;
                pending.clear();
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    if !pending.is_empty() {
        report.removed += admin.unlink(&pending).await?;
        report.batches += 1;
    }
    Ok(report)
}

/// Counts the keys matching `pattern` with `SCAN` (for plans; may count a key twice).
pub async fn count_matching(
    admin: &dyn RedisAdmin,
    pattern: &str,
    scan_count: u32,
) -> Result<u64, DbError> {
    let mut cursor = 0;
    let mut n = 0;
    loop {
        let (next, keys) = admin.scan(cursor, pattern, scan_count).await?;
        n += keys.len() as u64;
        cursor = next;
        if cursor == 0 {
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::admin::{KeyStat, MockRedisAdmin};
    use super::*;
    use mockall::Sequence;
    use mockall::predicate::eq;

    fn k(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[tokio::test]
    async fn invalidation_unlinks_in_batches_and_counts_removed() {
        let mut m = MockRedisAdmin::new();
        let mut seq = Sequence::new();
        m.expect_scan()
            .with(eq(0), eq("sess:*"), eq(1000))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok((7, vec![k("sess:1"), k("sess:2"), k("sess:3")])));
        m.expect_unlink()
            .withf(|keys| keys == [k("sess:1"), k("sess:2")])
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(2));
        m.expect_scan()
            .with(eq(7), eq("sess:*"), eq(1000))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok((0, vec![k("sess:4")])));
        m.expect_unlink()
            .withf(|keys| keys == [k("sess:3"), k("sess:4")])
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(1));
        let opts = InvalidateOptions {
            batch: 2,
            ..InvalidateOptions::default()
        };
        let r = invalidate_sessions(&m, &opts).await.unwrap();
        assert_eq!(r.matched, 4);
        assert_eq!(r.removed, 3);
        assert_eq!(r.batches, 2);
    }

    #[tokio::test]
    async fn match_all_patterns_are_refused_before_any_call() {
        let m = MockRedisAdmin::new();
        for p in ["*", "", "**", "  "] {
            let opts = InvalidateOptions {
                pattern: p.into(),
                ..InvalidateOptions::default()
            };
            let e = invalidate_sessions(&m, &opts).await.unwrap_err();
            assert!(matches!(e, DbError::RedisRefused { .. }), "{p:?}: {e}");
        }
    }

    #[test]
    fn patterns_are_judged_by_what_they_can_match() {
        for p in [
            "?*",
            "*?",
            "**",
            "[a-z]*",
            "*[a-z]",
            "?",
            "??*",
            "[^x]*",
            "[a-z][0-9]*",
        ] {
            let e = validate_session_pattern(p).unwrap_err().to_string();
            assert!(e.contains("every key"), "{p:?} must be refused: {e}");
        }
        for p in [
            "session:*",
            "sess:*",
            "[s]ess:*",
            "*:session:*",
            "sess:\\*",
            "user:?:sess",
        ] {
            assert!(
                validate_session_pattern(p).is_ok(),
                "{p:?} must be accepted"
            );
        }
    }

    #[tokio::test]
    async fn errors_propagate_and_stop() {
        let mut m = MockRedisAdmin::new();
        m.expect_scan()
            .returning(|_, _, _| Err(DbError::RedisLoading));
        let e = invalidate_sessions(&m, &InvalidateOptions::default())
            .await
            .unwrap_err();
        assert_eq!(e, DbError::RedisLoading);
        assert!(tej_core::Retryable::is_retryable(&e));
    }

    #[tokio::test(start_paused = true)]
    async fn big_keys_respect_time_budget_and_keep_the_biggest() {
        let mut m = MockRedisAdmin::new();
        let mut cursor = 0u64;
        m.expect_scan().returning(move |_, _, _| {
            cursor += 1;
            Ok((cursor, vec![k(&format!("k{cursor}"))]))
        });
        m.expect_key_stats().returning(|keys| {
            Ok(keys
                .iter()
                .map(|key| {
                    let n: u64 = String::from_utf8_lossy(&key[1..]).parse().unwrap_or(0);
                    Some(KeyStat {
                        kind: "string".into(),
                        bytes: n * 10,
                    })
                })
                .collect())
        });
        let opts = BigKeysOptions {
            time_budget: Duration::from_secs(5),
            pause: Duration::from_secs(1),
            top: 2,
            ..BigKeysOptions::default()
        };
        let r = find_big_keys(&m, &opts).await.unwrap();
        assert_eq!(r.stopped, Some(StopReason::TimeBudget));
        assert!(!r.complete);
        assert_eq!(r.scanned, 6);
        assert_eq!(
            r.top.iter().map(|b| b.key.as_str()).collect::<Vec<_>>(),
            vec!["k6", "k5"]
        );
        assert_eq!(r.total_bytes, 210);
    }

    #[tokio::test]
    async fn big_keys_key_budget_and_vanished_keys() {
        let mut m = MockRedisAdmin::new();
        m.expect_scan()
            .returning(|c, _, _| Ok((c + 1, vec![k("a"), k("gone")])));
        m.expect_key_stats().returning(|keys| {
            Ok(keys
                .iter()
                .map(|key| {
                    (key != b"gone").then(|| KeyStat {
                        kind: "hash".into(),
                        bytes: 100,
                    })
                })
                .collect())
        });
        let opts = BigKeysOptions {
            max_keys: 3,
            ..BigKeysOptions::default()
        };
        let r = find_big_keys(&m, &opts).await.unwrap();
        assert_eq!(r.stopped, Some(StopReason::KeyBudget));
        assert_eq!(r.scanned, 3);
    }
}

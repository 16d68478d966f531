//! Property tests of the PITR parsers and of `postgresql.auto.conf` rewriting.

use jiff::Timestamp;
use proptest::prelude::*;
use tej_backup::{Lsn, RecoveryTarget};
use tej_backup::{
    MANAGED_KEYS, RecoveryConfig, TARGET_KEYS, conf_line_key, parse_time, postgres_time,
    rewrite_auto_conf,
};

fn target() -> impl Strategy<Value = RecoveryTarget> {
    prop_oneof![
        (0i64..4_000_000_000, 0i32..1_000_000)
            .prop_map(|(s, us)| RecoveryTarget::Time(Timestamp::new(s, us * 1000).unwrap())),
        any::<u64>().prop_map(|l| RecoveryTarget::Lsn(Lsn(l))),
        (3u64..u64::MAX).prop_map(RecoveryTarget::Xid),
        "[a-z][a-z0-9 _'-]{0,40}".prop_map(RecoveryTarget::Name),
        Just(RecoveryTarget::Immediate),
        Just(RecoveryTarget::Latest),
    ]
}

/// A line of an existing auto.conf: a managed (stale) setting, another setting, or a comment.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            prop::sample::select(MANAGED_KEYS.to_vec()),
            "[a-z0-9 :/%.'-]{0,20}",
            any::<bool>()
        )
            .prop_map(|(k, v, eq)| format!(
                "{k}{}'{}'",
                if eq { " = " } else { " " },
                v.replace('\'', "''")
            )),
        (
            "(work_mem|shared_buffers|archive_timeout|my\\.custom)",
            "[a-z0-9]{1,8}"
        )
            .prop_map(|(k, v)| format!("{k} = '{v}'")),
        "# [a-z ]{0,20}",
    ]
}

proptest! {
    #[test]
    fn targets_print_as_postgres_reads_them_and_parse_back(t in target()) {
        let kind = t.kind();
        match t.setting() {
            None => prop_assert_eq!(&t, &RecoveryTarget::Latest),
            Some((key, value)) => {
                prop_assert!(TARGET_KEYS.contains(&key));
                let back = match &t {
                    RecoveryTarget::Immediate => RecoveryTarget::parse_cli("target", &value),
                    _ => RecoveryTarget::parse_cli(kind, &value),
                };
                match &t {
                    // names are trimmed on parsing
                    RecoveryTarget::Name(n) => prop_assert_eq!(back.unwrap(), RecoveryTarget::Name(n.trim().to_string())),
                    _ => prop_assert_eq!(back.unwrap(), t.clone()),
                }
            }
        }
    }

    #[test]
    fn postgres_times_round_trip_to_the_microsecond(s in 0i64..4_000_000_000, ns in 0i32..1_000_000_000) {
        let t = Timestamp::new(s, ns).unwrap();
        let printed = postgres_time(t);
        let back = parse_time(&printed).unwrap();
        prop_assert_eq!(back, Timestamp::new(s, ns / 1000 * 1000).unwrap());
        prop_assert!(back <= t);
    }

    #[test]
    fn rewriting_leaves_exactly_one_target_and_every_other_line(
        lines in prop::collection::vec(line(), 0..30),
        t in target(),
    ) {
        let old = lines.join("\n");
        let cfg = RecoveryConfig::new("cp /archive/%f %p", t.clone());
        let mut managed = MANAGED_KEYS.to_vec();
        managed.extend(["archive_mode", "archive_command", "archive_library"]);
        let (new, removed) = rewrite_auto_conf(&old, &managed, &cfg.settings());
        let targets: Vec<String> = new.lines().filter_map(conf_line_key)
            .filter(|k| TARGET_KEYS.contains(&k.as_str())).collect();
        prop_assert_eq!(targets.len(), usize::from(t != RecoveryTarget::Latest), "{}", new);
        let restore_commands = new.lines().filter_map(conf_line_key).filter(|k| k == "restore_command").count();
        prop_assert_eq!(restore_commands, 1);
        // Unmanaged lines survive, in order; managed ones are all reported removed.
        let kept: Vec<&str> = lines.iter().map(String::as_str)
            .filter(|l| !conf_line_key(l).is_some_and(|k| managed.contains(&k.as_str()))).collect();
        let new_lines: Vec<&str> = new.lines().collect();
        let mut at = 0;
        for k in &kept {
            let pos = new_lines[at..].iter().position(|l| l == k);
            prop_assert!(pos.is_some(), "lost {:?} in {}", k, new);
            at += pos.unwrap_or(0) + 1;
        }
        prop_assert_eq!(removed.len(), lines.len() - kept.len());
        // Rewriting the result again changes nothing.
        let (again, _) = rewrite_auto_conf(&new, &managed, &cfg.settings());
        prop_assert_eq!(again, new);
    }
}

//! Recovery targets and what the server does when it reaches one.

use crate::lsn::Lsn;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// PostgreSQL's limit on a restore point name (`MAXFNAMELEN - 1`).
pub const MAX_RESTORE_POINT_NAME: usize = 63;

/// Where point-in-time recovery stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum RecoveryTarget {
    /// `recovery_target_time`: replay every transaction committed at or before this
    /// instant (with the default `recovery_target_inclusive = true`).
    Time(Timestamp),
    /// `recovery_target_lsn`: replay up to this WAL position.
    Lsn(Lsn),
    /// `recovery_target_xid`: replay up to the commit of this transaction (PostgreSQL
    /// compares the low 32 bits; `txid_current()`'s 64-bit value is accepted).
    Xid(u64),
    /// `recovery_target_name`: replay up to a restore point made with
    /// `pg_create_restore_point(name)`.
    Name(String),
    /// `recovery_target = 'immediate'`: stop as soon as the base backup is consistent.
    Immediate,
    /// No target: replay every archived WAL file (what the disaster-recovery drill does).
    Latest,
}

/// A recovery target that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid recovery target {kind} {value:?}: {reason}")]
pub struct InvalidTarget {
    /// The kind asked for (`time`, `lsn`, `xid`, `name`, `immediate`).
    pub kind: String,
    /// The value given.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

/// Parses a time as RFC 3339 (`2025-01-16T09:00:00Z`) or as PostgreSQL prints and accepts
/// it (`2025-01-16 14:30:00+05:30`, `2025-01-16 09:00:00.123456+00`). An offset is
/// required: a local time without one is ambiguous for a recovery target.
pub fn parse_time(value: &str) -> Option<Timestamp> {
    let v = value.trim();
    if let Ok(t) = v.parse::<Timestamp>() {
        return Some(t);
    }
    // PostgreSQL writes a bare hour offset (`+00`, `-08`); add the minutes jiff wants.
    let bytes = v.as_bytes();
    if bytes.len() > 3 {
        let sign = bytes[bytes.len() - 3];
        if (sign == b'+' || sign == b'-') && bytes[bytes.len() - 2..].iter().all(u8::is_ascii_digit)
        {
            return format!("{v}:00").parse::<Timestamp>().ok();
        }
    }
    None
}

/// A time as `recovery_target_time` accepts it: UTC with a numeric offset and
/// microseconds (`2025-01-16 09:00:00.123456+00`). PostgreSQL checks the setting before
/// it loads time zone abbreviations, so RFC 3339's `Z` is refused there; nanoseconds
/// are truncated (PostgreSQL keeps microseconds), which keeps every commit at or
/// before the given instant.
pub fn postgres_time(t: Timestamp) -> String {
    let z = t.to_zoned(jiff::tz::TimeZone::UTC);
    format!(
        "{}.{:06}+00",
        z.strftime("%Y-%m-%d %H:%M:%S"),
        z.subsec_nanosecond() / 1000
    )
}

impl RecoveryTarget {
    /// Parses a target as the CLI gives it: `kind` is `time`, `lsn`, `xid`, `name`,
    /// `immediate` or `latest` (the value is ignored for the last two).
    pub fn parse_cli(kind: &str, value: &str) -> Result<RecoveryTarget, InvalidTarget> {
        let bad = |reason: &str| InvalidTarget {
            kind: kind.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        match kind.trim().to_ascii_lowercase().as_str() {
            "time" | "target-time" => parse_time(value).map(RecoveryTarget::Time).ok_or_else(|| {
                bad("expected a time with an offset, like 2025-01-16 14:30:00+05:30 or 2025-01-16T09:00:00Z")
            }),
            "lsn" | "target-lsn" => value
                .parse::<Lsn>()
                .map(RecoveryTarget::Lsn)
                .map_err(|_| bad("expected a WAL position like 16/B374D848")),
            "xid" | "target-xid" => value
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|x| *x >= 3)
                .map(RecoveryTarget::Xid)
                .ok_or_else(|| bad("expected a transaction id (a number of 3 or more)")),
            "name" | "target-name" => {
                let v = value.trim();
                if v.is_empty() {
                    Err(bad("a restore point name cannot be empty"))
                } else if v.len() > MAX_RESTORE_POINT_NAME {
                    Err(bad("a restore point name has at most 63 bytes"))
                } else if v.chars().any(char::is_control) {
                    Err(bad("a restore point name cannot contain control characters"))
                } else {
                    Ok(RecoveryTarget::Name(v.to_string()))
                }
            }
            "immediate" => Ok(RecoveryTarget::Immediate),
            "latest" | "end" => Ok(RecoveryTarget::Latest),
            "target" => match value.trim() {
                "immediate" => Ok(RecoveryTarget::Immediate),
                "latest" => Ok(RecoveryTarget::Latest),
                _ => Err(bad("--target takes immediate or latest")),
            },
            _ => Err(bad(
                "the kind is one of time, lsn, xid, name, immediate, latest",
            )),
        }
    }

    /// The one `postgresql.auto.conf` setting for this target (`None` for [`Latest`](Self::Latest)).
    pub fn setting(&self) -> Option<(&'static str, String)> {
        match self {
            RecoveryTarget::Time(t) => Some(("recovery_target_time", postgres_time(*t))),
            RecoveryTarget::Lsn(l) => Some(("recovery_target_lsn", l.to_string())),
            RecoveryTarget::Xid(x) => Some(("recovery_target_xid", x.to_string())),
            RecoveryTarget::Name(n) => Some(("recovery_target_name", n.clone())),
            RecoveryTarget::Immediate => Some(("recovery_target", "immediate".to_string())),
            RecoveryTarget::Latest => None,
        }
    }

    /// The kind as a word (`time`, `lsn`, `xid`, `name`, `immediate`, `latest`).
    pub fn kind(&self) -> &'static str {
        match self {
            RecoveryTarget::Time(_) => "time",
            RecoveryTarget::Lsn(_) => "lsn",
            RecoveryTarget::Xid(_) => "xid",
            RecoveryTarget::Name(_) => "name",
            RecoveryTarget::Immediate => "immediate",
            RecoveryTarget::Latest => "latest",
        }
    }
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryTarget::Time(t) => write!(f, "time {t}"),
            RecoveryTarget::Lsn(l) => write!(f, "lsn {l}"),
            RecoveryTarget::Xid(x) => write!(f, "xid {x}"),
            RecoveryTarget::Name(n) => write!(f, "restore point {n:?}"),
            RecoveryTarget::Immediate => f.write_str("immediate (end of the base backup)"),
            RecoveryTarget::Latest => f.write_str("latest (end of the archived WAL)"),
        }
    }
}

/// What the server does once it reaches the target (`recovery_target_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryAction {
    /// End recovery and accept writes on a new timeline (the default).
    #[default]
    Promote,
    /// Stay in recovery, paused, read-only, for inspection (`pg_wal_replay_resume()` promotes).
    Pause,
    /// Shut the server down; start it again with another target to go further.
    Shutdown,
}

impl RecoveryAction {
    /// Parses `promote`, `pause` or `shutdown`.
    pub fn parse(s: &str) -> Option<RecoveryAction> {
        match s.trim().to_ascii_lowercase().as_str() {
            "promote" => Some(RecoveryAction::Promote),
            "pause" => Some(RecoveryAction::Pause),
            "shutdown" => Some(RecoveryAction::Shutdown),
            _ => None,
        }
    }

    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryAction::Promote => "promote",
            RecoveryAction::Pause => "pause",
            RecoveryAction::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for RecoveryAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which timeline recovery follows (`recovery_target_timeline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryTimeline {
    /// The newest timeline found in the archive, following history files (PostgreSQL's default).
    Latest,
    /// The timeline the base backup was taken on.
    Current,
    /// A given timeline id.
    Id(u32),
}

impl RecoveryTimeline {
    /// Parses `latest`, `current` or a timeline id (decimal, or hex with `0x`).
    pub fn parse(s: &str) -> Option<RecoveryTimeline> {
        let s = s.trim();
        match s.to_ascii_lowercase().as_str() {
            "latest" => Some(RecoveryTimeline::Latest),
            "current" => Some(RecoveryTimeline::Current),
            other => {
                let id = match other.strip_prefix("0x") {
                    Some(h) => u32::from_str_radix(h, 16).ok()?,
                    None => other.parse::<u32>().ok()?,
                };
                (id >= 1).then_some(RecoveryTimeline::Id(id))
            }
        }
    }

    /// The setting's value.
    pub fn value(self) -> String {
        match self {
            RecoveryTimeline::Latest => "latest".into(),
            RecoveryTimeline::Current => "current".into(),
            RecoveryTimeline::Id(id) => id.to_string(),
        }
    }
}

impl fmt::Display for RecoveryTimeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_rfc3339_and_postgres_forms() {
        let want: Timestamp = "2025-01-16T09:00:00Z".parse().unwrap();
        for s in [
            "2025-01-16 14:30:00+05:30",
            "2025-01-16T14:30:00+05:30",
            "2025-01-16T09:00:00Z",
            " 2025-01-16 09:00:00+00 ",
            "2025-01-16 01:00:00-08",
        ] {
            assert_eq!(parse_time(s), Some(want), "{s}");
        }
        assert_eq!(
            parse_time("2025-01-16 09:00:00.123456+00")
                .unwrap()
                .subsec_microsecond(),
            123456
        );
        for bad in [
            "2025-01-16 09:00:00",
            "yesterday",
            "",
            "2025-13-01 00:00:00Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn cli_targets_parse_and_print() {
        let t = RecoveryTarget::parse_cli("time", "2025-01-16 14:30:00+05:30").unwrap();
        assert_eq!(
            t.setting(),
            Some((
                "recovery_target_time",
                "2025-01-16 09:00:00.000000+00".to_string()
            ))
        );
        assert_eq!(t.to_string(), "time 2025-01-16T09:00:00Z");
        let l = RecoveryTarget::parse_cli("lsn", "16/B374D848").unwrap();
        assert_eq!(l, RecoveryTarget::Lsn(Lsn(0x16_B374_D848)));
        assert_eq!(l.setting().unwrap().1, "16/B374D848");
        assert_eq!(
            RecoveryTarget::parse_cli("xid", "4294968296").unwrap(),
            RecoveryTarget::Xid(4_294_968_296)
        );
        assert_eq!(
            RecoveryTarget::parse_cli("name", " before-migration ").unwrap(),
            RecoveryTarget::Name("before-migration".into())
        );
        assert_eq!(
            RecoveryTarget::parse_cli("target", "immediate").unwrap(),
            RecoveryTarget::Immediate
        );
        assert_eq!(
            RecoveryTarget::Immediate.setting(),
            Some(("recovery_target", "immediate".to_string()))
        );
        assert_eq!(RecoveryTarget::Latest.setting(), None);
        for (k, v) in [
            ("time", "2025-01-16 14:30:00"),
            ("lsn", "16"),
            ("xid", "abc"),
            ("xid", "2"),
            ("name", ""),
            ("name", &"x".repeat(64)),
            ("name", "a\nb"),
            ("target", "soon"),
            ("when", "now"),
        ] {
            let e = RecoveryTarget::parse_cli(k, v).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
        let t = parse_time("1969-12-31 23:59:59.999999999+00").unwrap();
        assert_eq!(postgres_time(t), "1969-12-31 23:59:59.999999+00");
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(json, r#"{"kind":"lsn","value":"16/B374D848"}"#);
    }

    #[test]
    fn actions_and_timelines_parse() {
        assert_eq!(RecoveryAction::default(), RecoveryAction::Promote);
        for a in [
            RecoveryAction::Promote,
            RecoveryAction::Pause,
            RecoveryAction::Shutdown,
        ] {
            assert_eq!(RecoveryAction::parse(a.as_str()), Some(a));
        }
        assert_eq!(RecoveryAction::parse("resume"), None);
        assert_eq!(
            RecoveryTimeline::parse("latest"),
            Some(RecoveryTimeline::Latest)
        );
        assert_eq!(
            RecoveryTimeline::parse("CURRENT"),
            Some(RecoveryTimeline::Current)
        );
        assert_eq!(RecoveryTimeline::parse("3"), Some(RecoveryTimeline::Id(3)));
        assert_eq!(
            RecoveryTimeline::parse("0x1A"),
            Some(RecoveryTimeline::Id(26))
        );
        assert_eq!(RecoveryTimeline::parse("0"), None);
        assert_eq!(RecoveryTimeline::parse("newest"), None);
        assert_eq!(RecoveryTimeline::Id(3).value(), "3");
    }
}

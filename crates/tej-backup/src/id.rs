//! Backup identifiers: `20250116T020000Z-main`.

use jiff::Timestamp;
use std::fmt;
use std::str::FromStr;

/// A backup's identifier: its start time in UTC (to the second) and a target name,
/// like `20250116T020000Z-main`. Ids sort by time for one target; listings still order
/// by the manifest's time, never by name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupId {
    text: String,
}

/// Why a text is not a backup id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid backup id {0:?} (expected like 20250116T020000Z-main)")]
pub struct InvalidBackupId(pub String);

const TIME_FMT: &str = "%Y%m%dT%H%M%SZ";

fn parse_time(s: &str) -> Option<Timestamp> {
    let civil = s.strip_suffix('Z')?;
    let dt = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", civil).ok()?;
    dt.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

impl BackupId {
    /// The id of a backup of `target` started at `at`. `target` is reduced to
    /// `[A-Za-z0-9_.-]` (anything else becomes `_`), and `main` when empty.
    pub fn new(at: Timestamp, target: &str) -> BackupId {
        let mut t: String = target
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        if t.is_empty() || t.starts_with('.') {
            t.insert_str(0, "main");
        }
        let at = at.round(jiff::Unit::Second).unwrap_or(at);
        BackupId {
            text: format!("{}-{t}", at.strftime(TIME_FMT)),
        }
    }

    /// Parses `20250116T020000Z-main`.
    pub fn parse(s: &str) -> Result<BackupId, InvalidBackupId> {
        let bad = || InvalidBackupId(s.to_string());
        let (time, target) = s.split_once('-').ok_or_else(bad)?;
        if time.len() != 16
            || target.is_empty()
            || target.len() > 64
            || target.starts_with('.')
            || !target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(bad());
        }
        parse_time(time).ok_or_else(bad)?;
        Ok(BackupId {
            text: s.to_string(),
        })
    }

    /// The start time encoded in the id.
    pub fn time(&self) -> Timestamp {
        let time = self.text.split_once('-').map(|(t, _)| t).unwrap_or("");
        parse_time(time).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// The target part (`main`).
    pub fn target(&self) -> &str {
        self.text.split_once('-').map(|(_, t)| t).unwrap_or("")
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackupId({})", self.text)
    }
}

impl FromStr for BackupId {
    type Err = InvalidBackupId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackupId::parse(s)
    }
}

impl TryFrom<String> for BackupId {
    type Error = InvalidBackupId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        BackupId::parse(&s)
    }
}

impl From<BackupId> for String {
    fn from(id: BackupId) -> String {
        id.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects() {
        let at: Timestamp = "2025-01-16T02:00:00.4Z".parse().unwrap();
        let id = BackupId::new(at, "skill swap");
        assert_eq!(id.as_str(), "20250116T020000Z-skill_swap");
        assert_eq!(BackupId::parse(id.as_str()).unwrap(), id);
        assert_eq!(
            id.time(),
            "2025-01-16T02:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(id.target(), "skill_swap");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"20250116T020000Z-skill_swap\"");
        for bad in [
            "",
            "x",
            "20250116T020000Z-",
            "2025-main",
            "20251316T020000Z-a",
            "20250116T020000Z-a/b",
            "20250116T020000Z-..",
        ] {
            assert!(BackupId::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(BackupId::new(at, "").target(), "main");
    }
}

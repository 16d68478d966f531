//! Severities with the Nagios plugin exit-code convention.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How bad a finding is.
///
/// Ordering is "how much attention it needs": `Ok < Warning < Unknown < Critical`.
/// An unknown result (the check could not run) outranks a warning because
/// nobody knows what is hidden behind it, but a confirmed critical outranks both.
/// The Nagios exit codes are 0, 1, 3 and 2 respectively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Everything is as it should be.
    #[default]
    Ok,
    /// Needs attention soon; log and monitor.
    Warning,
    /// Needs attention now; escalate.
    Critical,
    /// The check could not determine the state.
    Unknown,
}

impl Severity {
    /// The Nagios plugin exit code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub fn exit_code(self) -> i32 {
        match self {
            Severity::Ok => 0,
            Severity::Warning => 1,
            Severity::Critical => 2,
            Severity::Unknown => 3,
        }
    }

    /// The severity for a Nagios exit code; anything unexpected is `Unknown`.
    pub fn from_exit_code(code: i32) -> Severity {
        match code {
            0 => Severity::Ok,
            1 => Severity::Warning,
            2 => Severity::Critical,
            _ => Severity::Unknown,
        }
    }

    fn rank(self) -> u8 {
        match self {
            Severity::Ok => 0,
            Severity::Warning => 1,
            Severity::Unknown => 2,
            Severity::Critical => 3,
        }
    }

    /// The worse of two severities.
    pub fn worst(self, other: Severity) -> Severity {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    /// Upper-case label as Nagios prints it (`OK`, `WARNING`, ...).
    pub fn label(self) -> &'static str {
        match self {
            Severity::Ok => "OK",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
            Severity::Unknown => "UNKNOWN",
        }
    }

    /// True for warnings, criticals and unknowns: anything a human should look at.
    pub fn needs_attention(self) -> bool {
        self != Severity::Ok
    }
}

impl PartialOrd for Severity {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Severity {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nagios_exit_codes() {
        assert_eq!(Severity::Ok.exit_code(), 0);
        assert_eq!(Severity::Warning.exit_code(), 1);
        assert_eq!(Severity::Critical.exit_code(), 2);
        assert_eq!(Severity::Unknown.exit_code(), 3);
        for s in [
            Severity::Ok,
            Severity::Warning,
            Severity::Critical,
            Severity::Unknown,
        ] {
            assert_eq!(Severity::from_exit_code(s.exit_code()), s);
        }
        assert_eq!(Severity::from_exit_code(127), Severity::Unknown);
    }

    #[test]
    fn worst_orders_critical_over_unknown_over_warning() {
        assert_eq!(Severity::Ok.worst(Severity::Warning), Severity::Warning);
        assert_eq!(
            Severity::Warning.worst(Severity::Unknown),
            Severity::Unknown
        );
        assert_eq!(
            Severity::Critical.worst(Severity::Unknown),
            Severity::Critical
        );
        assert_eq!(Severity::Unknown.worst(Severity::Ok), Severity::Unknown);
        let mut all = vec![
            Severity::Critical,
            Severity::Ok,
            Severity::Unknown,
            Severity::Warning,
        ];
        all.sort();
        assert_eq!(
            all,
            vec![
                Severity::Ok,
                Severity::Warning,
                Severity::Unknown,
                Severity::Critical
            ]
        );
    }

    #[test]
    fn serde_uses_lowercase() {
        assert_eq!(
            serde_json::to_string(&Severity::Warning).unwrap(),
            "\"warning\""
        );
        let s: Severity = serde_json::from_str("\"critical\"").unwrap();
        assert_eq!(s, Severity::Critical);
    }
}

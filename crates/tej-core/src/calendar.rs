//! The runbook's maintenance calendar as data, and the production maintenance window.
//!
//! Everything is computed in the calendar's time zone (Asia/Kolkata by default)
//! with jiff's bundled tz database, so "Sunday 02:00 IST" and "last Sunday of the
//! month" are right whatever the host's zone and across month and year ends.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The runbook's time zone.
pub const IST: &str = "Asia/Kolkata";

/// Which procedure a calendar entry runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcedureKind {
    /// Daily 09:00 system health check.
    DailyHealth,
    /// 11:00 and 17:00 performance check.
    PerformanceCheck,
    /// Sunday 02:00 full system audit (database, Redis, disk cleanup, dependencies).
    WeeklyAudit,
    /// Sunday 15:00 security review.
    SecurityReview,
    /// Sunday 16:00 performance optimisation.
    PerformanceOptimization,
    /// First Sunday 10:00 comprehensive security audit.
    SecurityAudit,
    /// Second Sunday 02:00 database deep maintenance.
    DatabaseDeepMaintenance,
    /// Last Sunday 15:00 capacity planning.
    CapacityPlanning,
    /// Quarterly secret rotation.
    SecretRotation,
    /// Quarterly disaster-recovery drill.
    DisasterRecoveryDrill,
    /// Nightly logical backup of every database into every repository (runbook: 02:00 daily).
    BackupCreate,
    /// Nightly verification of the newest backup of every repository.
    BackupVerify,
    /// Nightly removal of backups past retention (GFS) from every repository.
    BackupPrune,
    /// `certbot renew` and an nginx reload (runbook: 00:00 and 12:00 daily).
    CertificateRenewal,
}

/// How often a procedure runs, as `tej run daily|weekly|monthly|quarterly` groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cadence {
    /// Every day.
    Daily,
    /// Every week.
    Weekly,
    /// Every month.
    Monthly,
    /// Every quarter.
    Quarterly,
}

/// When an entry recurs (local time of the calendar's zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recurrence {
    /// Every day at `at`.
    Day {
        /// Local time of day.
        at: Time,
    },
    /// Every week on `weekday` at `at`.
    Week {
        /// Day of the week.
        weekday: Weekday,
        /// Local time of day.
        at: Time,
    },
    /// Every month on the `nth` `weekday` (1..=5, or -1 for the last) at `at`.
    Month {
        /// 1 = first, 2 = second, ..., -1 = last.
        nth: i8,
        /// Day of the week.
        weekday: Weekday,
        /// Local time of day.
        at: Time,
    },
    /// In January, April, July and October on the `nth` `weekday` at `at`.
    Quarter {
        /// 1 = first, 2 = second, ..., -1 = last.
        nth: i8,
        /// Day of the week.
        weekday: Weekday,
        /// Local time of day.
        at: Time,
    },
}

impl Recurrence {
    fn time(&self) -> Time {
        match *self {
            Recurrence::Day { at }
            | Recurrence::Week { at, .. }
            | Recurrence::Month { at, .. }
            | Recurrence::Quarter { at, .. } => at,
        }
    }

    /// Moves the recurrence to another local time of day.
    pub fn set_time(&mut self, t: Time) {
        match self {
            Recurrence::Day { at }
            | Recurrence::Week { at, .. }
            | Recurrence::Month { at, .. }
            | Recurrence::Quarter { at, .. } => *at = t,
        }
    }

    /// The cadence this recurrence belongs to.
    pub fn cadence(&self) -> Cadence {
        match self {
            Recurrence::Day { .. } => Cadence::Daily,
            Recurrence::Week { .. } => Cadence::Weekly,
            Recurrence::Month { .. } => Cadence::Monthly,
            Recurrence::Quarter { .. } => Cadence::Quarterly,
        }
    }

    /// True when the recurrence fires on `date` (at its time of day).
    pub fn matches(&self, date: Date) -> bool {
        match *self {
            Recurrence::Day { .. } => true,
            Recurrence::Week { weekday, .. } => date.weekday() == weekday,
            Recurrence::Month { nth, weekday, .. } => nth_weekday_is(date, nth, weekday),
            Recurrence::Quarter { nth, weekday, .. } => {
                matches!(date.month(), 1 | 4 | 7 | 10) && nth_weekday_is(date, nth, weekday)
            }
        }
    }

    /// Checks that `nth` is in range.
    pub fn validate(&self) -> Result<(), crate::Error> {
        match *self {
            Recurrence::Month { nth, .. } | Recurrence::Quarter { nth, .. }
                if !(nth == -1 || (1..=5).contains(&nth)) =>
            {
                Err(crate::Error::Invalid {
                    what: "recurrence",
                    reason: format!("nth must be 1..=5 or -1 (last), got {nth}"),
                })
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Recurrence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |t: Time| format!("{:02}:{:02}", t.hour(), t.minute());
        let ord = |n: i8| match n {
            -1 => "last".to_string(),
            1 => "1st".into(),
            2 => "2nd".into(),
            3 => "3rd".into(),
            n => format!("{n}th"),
        };
        match *self {
            Recurrence::Day { at } => write!(f, "daily {}", hm(at)),
            Recurrence::Week { weekday, at } => write!(f, "every {weekday:?} {}", hm(at)),
            Recurrence::Month { nth, weekday, at } => {
                write!(f, "{} {weekday:?} of the month {}", ord(nth), hm(at))
            }
            Recurrence::Quarter { nth, weekday, at } => {
                write!(f, "{} {weekday:?} of Jan/Apr/Jul/Oct {}", ord(nth), hm(at))
            }
        }
    }
}

fn nth_weekday_is(date: Date, nth: i8, weekday: Weekday) -> bool {
    date.weekday() == weekday
        && date
            .nth_weekday_of_month(nth, weekday)
            .map(|d| d == date)
            .unwrap_or(false)
}

/// One line of the maintenance calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarEntry {
    /// Stable identifier (`daily-health`, `performance-check-am`).
    pub id: String,
    /// The procedure it runs.
    pub procedure: ProcedureKind,
    /// When it recurs.
    pub recurrence: Recurrence,
    /// How long the runbook allots to it.
    pub duration: SignedDuration,
}

/// A weekly maintenance window (Sunday 02:00–04:00 IST in the runbook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceWindow {
    /// Day of the week the window opens.
    pub weekday: Weekday,
    /// Local opening time.
    pub start: Time,
    /// Local closing time (exclusive); may be earlier than `start` for a window across midnight.
    pub end: Time,
}

impl MaintenanceWindow {
    /// The runbook's standard window: Sundays 02:00–04:00.
    pub fn runbook_default() -> MaintenanceWindow {
        MaintenanceWindow {
            weekday: Weekday::Sunday,
            start: Time::constant(2, 0, 0, 0),
            end: Time::constant(4, 0, 0, 0),
        }
    }
}

/// The maintenance calendar in one time zone.
#[derive(Debug, Clone)]
pub struct Calendar {
    tz: TimeZone,
    tz_name: String,
    /// The entries, in the runbook's order.
    pub entries: Vec<CalendarEntry>,
    /// The production maintenance window.
    pub window: MaintenanceWindow,
    /// Entries of the runbook turned off in `tej.toml` (`[calendar.<id>] enabled = false`).
    disabled: Vec<String>,
}

/// A `tej.toml` change to one calendar entry (`[calendar.<id>]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryOverride {
    /// New local time of day, `HH:MM` (24-hour) in the calendar's zone.
    #[serde(default)]
    pub at: Option<String>,
    /// `false` removes the entry from the calendar (nothing schedules or runs it).
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Parses a local time of day written `HH:MM` (24-hour).
pub fn parse_time_of_day(s: &str) -> Result<Time, crate::Error> {
    let bad = || crate::Error::Invalid {
        what: "time of day",
        reason: format!("expected a time of day as HH:MM (24-hour, e.g. \"02:00\"), got {s:?}"),
    };
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

/// Errors building a calendar: tej-core's [`Error`](crate::Error) (its `UnknownZone`,
/// `UnknownEntry` and `BadEntry` variants).
pub type CalendarError = crate::Error;

fn entry(
    id: &str,
    procedure: ProcedureKind,
    recurrence: Recurrence,
    minutes: i64,
) -> CalendarEntry {
    CalendarEntry {
        id: id.into(),
        procedure,
        recurrence,
        duration: SignedDuration::from_mins(minutes),
    }
}

impl Calendar {
    /// The runbook's calendar in Asia/Kolkata.
    pub fn runbook() -> Calendar {
        Calendar::runbook_in(IST).expect("bundled tz database has Asia/Kolkata")
    }

    /// The runbook's calendar in another zone (same local times).
    pub fn runbook_in(zone: &str) -> Result<Calendar, CalendarError> {
        use ProcedureKind::*;
        use Recurrence::*;
        use Weekday::Sunday;
        let t = |h, m| Time::constant(h, m, 0, 0);
        let entries = vec![
            entry("daily-health", DailyHealth, Day { at: t(9, 0) }, 15),
            entry(
                "performance-check-am",
                PerformanceCheck,
                Day { at: t(11, 0) },
                10,
            ),
            entry(
                "performance-check-pm",
                PerformanceCheck,
                Day { at: t(17, 0) },
                10,
            ),
            entry(
                "weekly-audit",
                WeeklyAudit,
                Week {
                    weekday: Sunday,
                    at: t(2, 0),
                },
                120,
            ),
            entry(
                "security-review",
                SecurityReview,
                Week {
                    weekday: Sunday,
                    at: t(15, 0),
                },
                60,
            ),
            entry(
                "performance-optimization",
                PerformanceOptimization,
                Week {
                    weekday: Sunday,
                    at: t(16, 0),
                },
                60,
            ),
            entry(
                "security-audit",
                SecurityAudit,
                Month {
                    nth: 1,
                    weekday: Sunday,
                    at: t(10, 0),
                },
                180,
            ),
            entry(
                "database-deep-maintenance",
                DatabaseDeepMaintenance,
                Month {
                    nth: 2,
                    weekday: Sunday,
                    at: t(2, 0),
                },
                180,
            ),
            entry(
                "capacity-planning",
                CapacityPlanning,
                Month {
                    nth: -1,
                    weekday: Sunday,
                    at: t(15, 0),
                },
                120,
            ),
            // The runbook says "quarterly" without a day. Rotation restarts the
            // backend and drops sessions, so it runs inside the maintenance window;
            // the drill touches no production system and runs in working hours.
            entry(
                "secret-rotation",
                SecretRotation,
                Quarter {
                    nth: 1,
                    weekday: Sunday,
                    at: t(3, 0),
                },
                60,
            ),
            entry(
                "disaster-recovery-drill",
                DisasterRecoveryDrill,
                Quarter {
                    nth: 3,
                    weekday: Sunday,
                    at: t(10, 0),
                },
                120,
            ),
            // "Automated Daily Backups: cron job (runs at 2 AM daily)". The runbook gives no
            // time for verification and retention: they follow the backup, verify at 03:00 and
            // prune at 03:30, so a prune never races the night's dump.
            entry("nightly-backup", BackupCreate, Day { at: t(2, 0) }, 60),
            entry(
                "nightly-backup-verify",
                BackupVerify,
                Day { at: t(3, 0) },
                30,
            ),
            entry(
                "nightly-backup-prune",
                BackupPrune,
                Day { at: t(3, 30) },
                30,
            ),
            // "Certbot auto-renewal (runs twice daily): 0 0,12 * * *".
            entry(
                "certificate-renewal-am",
                CertificateRenewal,
                Day { at: t(0, 0) },
                15,
            ),
            entry(
                "certificate-renewal-pm",
                CertificateRenewal,
                Day { at: t(12, 0) },
                15,
            ),
        ];
        Calendar::new(zone, entries, MaintenanceWindow::runbook_default())
    }

    /// A calendar from parts, validated.
    pub fn new(
        zone: &str,
        entries: Vec<CalendarEntry>,
        window: MaintenanceWindow,
    ) -> Result<Calendar, CalendarError> {
        let tz = TimeZone::get(zone).map_err(|_| CalendarError::UnknownZone(zone.to_string()))?;
        for e in &entries {
            e.recurrence
                .validate()
                .map_err(|reason| CalendarError::BadEntry {
                    id: e.id.clone(),
                    reason: reason.to_string(),
                })?;
        }
        Ok(Calendar {
            tz,
            tz_name: zone.to_string(),
            entries,
            window,
            disabled: Vec::new(),
        })
    }

    /// The runbook's calendar as `tej.toml` configures it: its time zone and its
    /// `[calendar.<id>]` overrides.
    pub fn from_config(cfg: &crate::Config) -> Result<Calendar, CalendarError> {
        Calendar::runbook_in(cfg.zone())?.with_overrides(&cfg.calendar)
    }

    /// Applies `[calendar.<id>]` overrides: a new time of day (`at = "HH:MM"`) or
    /// `enabled = false`. An unknown id or a bad time is an error naming it.
    pub fn with_overrides(
        mut self,
        overrides: &std::collections::BTreeMap<String, EntryOverride>,
    ) -> Result<Calendar, CalendarError> {
        for (id, o) in overrides {
            let Some(e) = self.entries.iter_mut().find(|e| &e.id == id) else {
                return Err(CalendarError::UnknownEntry {
                    id: id.clone(),
                    known: self
                        .entries
                        .iter()
                        .map(|e| e.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            if let Some(at) = &o.at {
                let t = parse_time_of_day(at).map_err(|reason| CalendarError::BadEntry {
                    id: id.clone(),
                    reason: format!("at: {reason}"),
                })?;
                e.recurrence.set_time(t);
            }
        }
        let off: Vec<String> = overrides
            .iter()
            .filter(|(_, o)| o.enabled == Some(false))
            .map(|(id, _)| id.clone())
            .collect();
        self.entries.retain(|e| !off.contains(&e.id));
        self.disabled.extend(off);
        Ok(self)
    }

    /// True when `tej.toml` turned the runbook entry `id` off.
    pub fn is_disabled(&self, id: &str) -> bool {
        self.disabled.iter().any(|d| d == id)
    }

    /// The zone's name.
    pub fn zone_name(&self) -> &str {
        &self.tz_name
    }

    /// The zone.
    pub fn zone(&self) -> &TimeZone {
        &self.tz
    }

    /// Finds an entry by id.
    pub fn entry(&self, id: &str) -> Option<&CalendarEntry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// The first time strictly after `after` at which `recurrence` fires.
    pub fn next_of(&self, recurrence: &Recurrence, after: Timestamp) -> Zoned {
        let local = after.to_zoned(self.tz.clone());
        let mut date = local.date();
        // The longest gap (a quarterly rule) is under 4 months; 500 days is a safe bound.
        for _ in 0..500 {
            if recurrence.matches(date)
                && let Ok(z) = date
                    .to_datetime(recurrence.time())
                    .to_zoned(self.tz.clone())
                && z.timestamp() > after
            {
                return z;
            }
            date = match date.tomorrow() {
                Ok(d) => d,
                Err(_) => break,
            };
        }
        // Unreachable for validated recurrences; fall back to far future instead of panicking.
        Timestamp::MAX.to_zoned(self.tz.clone())
    }

    /// The next occurrence of the entry `id` strictly after `after`.
    pub fn next_occurrence(&self, id: &str, after: Timestamp) -> Option<Zoned> {
        self.entry(id).map(|e| self.next_of(&e.recurrence, after))
    }

    /// Every entry with its next occurrence after `after`, soonest first.
    pub fn upcoming(&self, after: Timestamp) -> Vec<(&CalendarEntry, Zoned)> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .map(|e| (e, self.next_of(&e.recurrence, after)))
            .collect();
        v.sort_by_key(|a| a.1.timestamp());
        v
    }

    /// True when `at` lies inside the maintenance window.
    pub fn in_window(&self, at: Timestamp) -> bool {
        let local = at.to_zoned(self.tz.clone());
        let w = &self.window;
        let t = local.time();
        if w.start < w.end {
            local.weekday() == w.weekday && t >= w.start && t < w.end
        } else {
            // Across midnight: the opening day after start, or the next day before end.
            (local.weekday() == w.weekday && t >= w.start)
                || (local.weekday() == w.weekday.next() && t < w.end)
        }
    }

    /// The next time the maintenance window opens strictly after `after`.
    pub fn next_window_start(&self, after: Timestamp) -> Zoned {
        self.next_of(
            &Recurrence::Week {
                weekday: self.window.weekday,
                at: self.window.start,
            },
            after,
        )
    }

    /// `at` shown in the calendar's zone, e.g. `2025-01-19 02:00 IST`.
    pub fn format_local(&self, at: Timestamp) -> String {
        let z = at.to_zoned(self.tz.clone());
        z.strftime("%Y-%m-%d %H:%M %Z (%a)").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn local(c: &Calendar, z: &Zoned) -> String {
        let _ = c;
        z.strftime("%Y-%m-%d %H:%M %a").to_string()
    }

    #[test]
    fn daily_health_next_day_after_nine() {
        let c = Calendar::runbook();
        // 2025-01-16 10:00 IST = 04:30Z, past today's 09:00
        let z = c
            .next_occurrence("daily-health", ts("2025-01-16T04:30:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2025-01-17 09:00 Fri");
        assert_eq!(z.timestamp(), ts("2025-01-17T03:30:00Z"));
        // exactly at 09:00 IST the next one is tomorrow (strictly after)
        let z = c
            .next_occurrence("daily-health", ts("2025-01-17T03:30:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2025-01-18 09:00 Sat");
    }

    #[test]
    fn daily_across_month_and_year_end() {
        let c = Calendar::runbook();
        let z = c
            .next_occurrence("performance-check-pm", ts("2025-12-31T12:00:00Z"))
            .unwrap(); // 17:30 IST
        assert_eq!(local(&c, &z), "2026-01-01 17:00 Thu");
        let z = c
            .next_occurrence("daily-health", ts("2025-02-28T05:00:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2025-03-01 09:00 Sat");
    }

    #[test]
    fn utc_evening_is_already_next_day_in_ist() {
        let c = Calendar::runbook();
        // Saturday 2025-01-18 21:00Z = Sunday 02:30 IST: weekly audit already started, next is a week later
        let z = c
            .next_occurrence("weekly-audit", ts("2025-01-18T21:00:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2025-01-26 02:00 Sun");
        // Saturday 20:00Z = Sunday 01:30 IST: in half an hour
        let z = c
            .next_occurrence("weekly-audit", ts("2025-01-18T20:00:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2025-01-19 02:00 Sun");
    }

    #[test]
    fn monthly_nth_and_last_sunday() {
        let c = Calendar::runbook();
        // After Jan 5 2025 (first Sunday) 10:00, the next first-Sunday audit is Feb 2.
        let z = c
            .next_occurrence("security-audit", ts("2025-01-05T05:00:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2025-02-02 10:00 Sun");
        let z = c
            .next_occurrence("database-deep-maintenance", ts("2025-01-13T00:00:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2025-02-09 02:00 Sun");
        // Last Sunday: Jan 2025 -> 26th; Feb 2025 -> 23rd; March 2025 -> 30th; after Nov 30 2025 -> Dec 28.
        let z = c
            .next_occurrence("capacity-planning", ts("2025-01-01T00:00:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2025-01-26 15:00 Sun");
        let z = c
            .next_occurrence("capacity-planning", ts("2025-01-26T10:00:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2025-02-23 15:00 Sun");
        let z = c
            .next_occurrence("capacity-planning", ts("2025-02-24T00:00:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2025-03-30 15:00 Sun");
        let z = c
            .next_occurrence("capacity-planning", ts("2025-11-30T10:00:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2025-12-28 15:00 Sun");
        // A month with five Sundays: the last is the 5th (Aug 31 2025), not the 4th.
        let z = c
            .next_occurrence("capacity-planning", ts("2025-08-25T00:00:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2025-08-31 15:00 Sun");
    }

    #[test]
    fn quarterly_entries() {
        let c = Calendar::runbook();
        let z = c
            .next_occurrence("secret-rotation", ts("2025-01-16T00:00:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2025-04-06 03:00 Sun");
        let z = c
            .next_occurrence("disaster-recovery-drill", ts("2025-10-20T00:00:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2026-01-18 10:00 Sun");
    }

    #[test]
    fn maintenance_window_membership() {
        let c = Calendar::runbook();
        assert!(c.in_window(ts("2025-01-18T20:30:00Z"))); // Sun 02:00 IST
        assert!(c.in_window(ts("2025-01-18T22:29:59Z"))); // Sun 03:59:59 IST
        assert!(!c.in_window(ts("2025-01-18T22:30:00Z"))); // Sun 04:00 IST
        assert!(!c.in_window(ts("2025-01-18T20:29:59Z"))); // Sun 01:59:59 IST
        assert!(!c.in_window(ts("2025-01-19T20:30:00Z"))); // Mon 02:00 IST
        // Sunday 02:30 UTC is Sunday 08:00 IST: outside.
        assert!(!c.in_window(ts("2025-01-19T02:30:00Z")));
        let z = c.next_window_start(ts("2025-01-16T00:00:00Z"));
        assert_eq!(local(&c, &z), "2025-01-19 02:00 Sun");
    }

    #[test]
    fn window_across_midnight() {
        let w = MaintenanceWindow {
            weekday: Weekday::Saturday,
            start: Time::constant(23, 0, 0, 0),
            end: Time::constant(1, 0, 0, 0),
        };
        let c = Calendar::new(IST, vec![], w).unwrap();
        assert!(c.in_window(ts("2025-01-18T17:45:00Z"))); // Sat 23:15 IST
        assert!(c.in_window(ts("2025-01-18T19:00:00Z"))); // Sun 00:30 IST
        assert!(!c.in_window(ts("2025-01-18T19:45:00Z"))); // Sun 01:15 IST
    }

    #[test]
    fn upcoming_is_sorted_and_complete() {
        let c = Calendar::runbook();
        let up = c.upcoming(ts("2025-01-16T00:00:00Z"));
        assert_eq!(up.len(), c.entries.len());
        assert!(
            up.windows(2)
                .all(|w| w[0].1.timestamp() <= w[1].1.timestamp())
        );
        assert_eq!(up[0].0.id, "daily-health");
    }

    #[test]
    fn nightly_backup_and_certificate_renewal_are_on_the_calendar() {
        let c = Calendar::runbook();
        let at = |id: &str| {
            let e = c.entry(id).unwrap_or_else(|| panic!("no entry {id}"));
            (e.procedure, e.recurrence)
        };
        let day = |h, m| Recurrence::Day {
            at: Time::constant(h, m, 0, 0),
        };
        // The runbook: "Cron job (runs at 2 AM daily)" and certbot "0 0,12 * * *".
        assert_eq!(
            at("nightly-backup"),
            (ProcedureKind::BackupCreate, day(2, 0))
        );
        assert_eq!(
            at("nightly-backup-verify"),
            (ProcedureKind::BackupVerify, day(3, 0))
        );
        assert_eq!(
            at("nightly-backup-prune"),
            (ProcedureKind::BackupPrune, day(3, 30))
        );
        assert_eq!(
            at("certificate-renewal-am"),
            (ProcedureKind::CertificateRenewal, day(0, 0))
        );
        assert_eq!(
            at("certificate-renewal-pm"),
            (ProcedureKind::CertificateRenewal, day(12, 0))
        );
        let z = c
            .next_occurrence("nightly-backup", ts("2025-01-16T00:00:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2025-01-17 02:00 Fri");
    }

    #[test]
    fn overrides_move_and_disable_entries() {
        let mut o = std::collections::BTreeMap::new();
        o.insert(
            "nightly-backup".to_string(),
            EntryOverride {
                at: Some("01:15".into()),
                enabled: None,
            },
        );
        o.insert(
            "weekly-audit".to_string(),
            EntryOverride {
                at: Some("03:00".into()),
                enabled: None,
            },
        );
        o.insert(
            "certificate-renewal-pm".to_string(),
            EntryOverride {
                at: None,
                enabled: Some(false),
            },
        );
        let c = Calendar::runbook().with_overrides(&o).unwrap();
        let z = c
            .next_occurrence("nightly-backup", ts("2025-01-16T00:00:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2025-01-17 01:15 Fri");
        // A weekly entry keeps its day; only the time moves.
        let z = c
            .next_occurrence("weekly-audit", ts("2025-01-16T00:00:00Z"))
            .unwrap();
        assert_eq!(local(&c, &z), "2025-01-19 03:00 Sun");
        assert!(c.entry("certificate-renewal-pm").is_none());
        assert!(c.is_disabled("certificate-renewal-pm"));
        assert!(!c.is_disabled("certificate-renewal-am"));
        assert_eq!(c.entries.len(), Calendar::runbook().entries.len() - 1);
    }

    #[test]
    fn bad_overrides_are_errors_naming_the_entry() {
        let one = |id: &str, at: &str| {
            let mut o = std::collections::BTreeMap::new();
            o.insert(
                id.to_string(),
                EntryOverride {
                    at: Some(at.into()),
                    enabled: None,
                },
            );
            Calendar::runbook()
                .with_overrides(&o)
                .unwrap_err()
                .to_string()
        };
        let e = one("nightly-bakup", "02:00");
        assert!(
            e.contains("nightly-bakup") && e.contains("no such calendar entry"),
            "{e}"
        );
        assert!(e.contains("nightly-backup"), "lists the known ids: {e}");
        for bad in ["25:00", "2:00", "02:60", "02-00", "", "02:00:00", "noon"] {
            let e = one("nightly-backup", bad);
            assert!(
                e.contains("nightly-backup") && e.contains("HH:MM"),
                "{bad}: {e}"
            );
        }
        assert_eq!(parse_time_of_day("23:59"), Ok(Time::constant(23, 59, 0, 0)));
    }

    #[test]
    fn bad_zone_and_nth_rejected() {
        assert!(matches!(
            Calendar::runbook_in("Mars/Olympus"),
            Err(CalendarError::UnknownZone(_))
        ));
        let bad = vec![entry(
            "x",
            ProcedureKind::CapacityPlanning,
            Recurrence::Month {
                nth: 7,
                weekday: Weekday::Sunday,
                at: Time::midnight(),
            },
            1,
        )];
        assert!(matches!(
            Calendar::new(IST, bad, MaintenanceWindow::runbook_default()),
            Err(CalendarError::BadEntry { .. })
        ));
    }
}

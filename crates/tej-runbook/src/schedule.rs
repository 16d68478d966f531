//! The maintenance calendar as crontab lines or systemd timer units, and the
//! "is this entry due now?" test that `tej run <entry> --if-due` applies.
//!
//! # Design
//!
//! Both formats fire in the calendar's zone (Asia/Kolkata), never in the host's:
//!
//! - **systemd** (preferred): `OnCalendar=` takes a time-zone suffix and can say
//!   "first Sunday" (`Sun *-*-01..07`) and "last Sunday" (`Sun *-*~01..07`, the
//!   last seven days of the month) exactly, so the timer calls `tej run <entry-id>`
//!   at the right instant. `AccuracySec=1s` removes systemd's default one-minute
//!   coalescing, and `Persistent=true` starts a run missed while the host was down
//!   as soon as it is back (tej's own guards then decide whether a destructive step
//!   may run outside the maintenance window).
//! - **crontab**: cron's day-of-month and day-of-week fields are OR-ed when both
//!   are restricted, so "nth Sunday" and "last Sunday" cannot be written in cron
//!   syntax. Rather than a shell guard (`[ "$(date +\%u)" = 7 ]`), every cron line
//!   calls `tej run <entry-id> --if-due`: cron wakes tej on the right weekday at the
//!   right local time and tej checks the calendar itself ([`due_occurrence`]),
//!   exiting 0 quietly when the entry is not due. The same guard means a cron
//!   daemon that ignores `CRON_TZ` never runs a procedure at the wrong time; it
//!   just runs nothing (and the daemon state shows the run as missed).
//!   `CRON_TZ=` is honoured by cronie and systemd-cron; Debian's Vixie cron
//!   documents no such variable, so on Debian prefer the systemd units, or emit
//!   [`CronZone::Utc`] lines on a host whose clock zone is UTC (possible because
//!   Asia/Kolkata has had a fixed offset since 1945, so the UTC times never drift).
//!
//! Every token written into a unit or a crontab line is checked against a strict
//! character set, so nothing a shell would interpret can reach cron.

use crate::error::{Result, RunbookError};
use jiff::civil::{Time, Weekday};
use jiff::{SignedDuration, Timestamp, Zoned};
use std::path::PathBuf;
use tej_core::{Cadence, Calendar, CalendarEntry, Recurrence};

/// In which zone crontab lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CronZone {
    /// Local times of the calendar with a `CRON_TZ=<zone>` line (cronie, systemd-cron).
    #[default]
    CronTz,
    /// UTC times, for a cron without `CRON_TZ` on a host whose zone is UTC.
    /// Only for calendar zones with a fixed UTC offset (Asia/Kolkata is).
    Utc,
}

/// How the emitted units and lines call tej.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleOptions {
    /// Absolute path of the tej binary.
    pub tej_binary: PathBuf,
    /// `--config` passed to every run, if any (absolute, so a job runs the same
    /// configuration from any working directory).
    pub config: Option<PathBuf>,
    /// The user the jobs run as: systemd `User=`, and the user field of a crontab line
    /// (`/etc/cron.d` files need one; a user's own crontab must have none).
    pub user: Option<String>,
    /// Zone of crontab lines.
    pub cron_zone: CronZone,
    /// Write the user field into crontab lines (`/etc/cron.d` format); the user is
    /// [`user`](Self::user), else `root`.
    pub cron_user_field: bool,
    /// systemd `OnFailure=`: the unit started when a run fails (`%n` is the failed unit).
    pub on_failure: Option<String>,
    /// systemd `EnvironmentFile=` with the credentials (`DATABASE_URL`, AWS keys...); a
    /// missing file is tolerated (`-` prefix), so the variables may come from elsewhere.
    pub environment_file: Option<PathBuf>,
}

impl Default for ScheduleOptions {
    fn default() -> Self {
        ScheduleOptions {
            tej_binary: PathBuf::from("/usr/local/bin/tej"),
            config: None,
            user: None,
            cron_zone: CronZone::CronTz,
            cron_user_field: false,
            on_failure: None,
            environment_file: Some(PathBuf::from("/etc/tej/tej.env")),
        }
    }
}

/// How far around an occurrence `tej run --if-due` counts the entry as due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueWindow {
    /// Accept a start this long before the occurrence (clock skew).
    pub early: SignedDuration,
    /// Accept a start this long after the occurrence (cron start latency, load).
    pub late: SignedDuration,
}

impl Default for DueWindow {
    fn default() -> Self {
        DueWindow {
            early: SignedDuration::from_secs(60),
            late: SignedDuration::from_mins(10),
        }
    }
}

/// The occurrence of `entry` that makes it due at `now`, if any: one in
/// `[now - window.late, now + window.early]`.
pub fn due_occurrence(
    cal: &Calendar,
    entry: &CalendarEntry,
    now: Timestamp,
    window: DueWindow,
) -> Option<Zoned> {
    let from = now
        .checked_sub(window.late)
        .ok()?
        .checked_sub(SignedDuration::from_nanos(1))
        .ok()?;
    let until = now.checked_add(window.early).ok()?;
    let occ = cal.next_of(&entry.recurrence, from);
    (occ.timestamp() <= until).then_some(occ)
}

/// The slot of `entry` that contains `now`: from its occurrence (or `early` before it) to
/// the occurrence plus the entry's allotted duration (at least [`DueWindow`]'s `late`, the
/// latest start `--if-due` accepts). `None` outside every slot.
pub fn scheduled_slot(
    cal: &Calendar,
    entry: &CalendarEntry,
    now: Timestamp,
    early: SignedDuration,
) -> Option<(Zoned, Timestamp)> {
    let span = entry.duration.max(DueWindow::default().late);
    let from = now
        .checked_sub(span)
        .ok()?
        .checked_sub(SignedDuration::from_nanos(1))
        .ok()?;
    let occ = cal.next_of(&entry.recurrence, from);
    let start = occ.timestamp();
    let end = start.checked_add(span).ok()?;
    (start.checked_sub(early).ok()? <= now && now < end).then_some((occ, end))
}

/// The [`Confirmer`](tej_core::Confirmer) of a scheduled run (`tej run ENTRY --scheduled`,
/// what the emitted crontab, timers and CronJobs call, and `tej daemon`): a procedure on the
/// calendar is confirmed by being scheduled. Inside the entry's slot
/// ([`scheduled_slot`], checked again for every step) a destructive step is confirmed, and
/// the confirmation is one `confirmed` line of the audit log naming the entry and its slot;
/// outside it the step is refused unless `fallback` (`--yes`) confirms it.
pub struct ScheduledConfirmer {
    /// The calendar the entry is on (its zone and times, `tej.toml` overrides applied).
    pub calendar: Calendar,
    /// The entry being run.
    pub entry: CalendarEntry,
    /// Where "now" comes from.
    pub clock: std::sync::Arc<dyn tej_core::Clock>,
    /// Where confirmations are recorded.
    pub audit: Option<tej_core::AuditLog>,
    /// The environment name written into the audit line.
    pub environment: String,
    /// The confirmer of the command line (`--yes`), asked first.
    pub fallback: std::sync::Arc<dyn tej_core::Confirmer>,
}

impl std::fmt::Debug for ScheduledConfirmer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduledConfirmer")
            .field("entry", &self.entry.id)
            .finish_non_exhaustive()
    }
}

impl ScheduledConfirmer {
    fn record(&self, plan: &tej_core::Plan, outcome: &str, detail: String) {
        let Some(log) = &self.audit else { return };
        let entry = tej_core::AuditEntry {
            at: self.clock.now(),
            procedure: self.entry.id.clone(),
            step: plan.step.clone(),
            risk: plan.risk,
            target: plan.target.clone(),
            outcome: outcome.to_string(),
            duration_ms: 0,
            detail: Some(detail),
            actor: Some(format!("schedule:{}", self.entry.id)),
            environment: self.environment.clone(),
        };
        if let Err(e) = log.append(&entry) {
            tracing::error!(path = %log.path().display(), error = %e, "cannot append to the audit log");
        }
    }
}

impl tej_core::Confirmer for ScheduledConfirmer {
    fn confirm(&self, plan: &tej_core::Plan) -> bool {
        if self.fallback.confirm(plan) {
            return true;
        }
        let now = self.clock.now();
        match scheduled_slot(&self.calendar, &self.entry, now, DueWindow::default().early) {
            Some((occ, end)) => {
                self.record(
                    plan,
                    "confirmed",
                    format!(
                        "confirmed by the schedule: calendar entry {} ({} {}), slot {} to {}",
                        self.entry.id,
                        self.entry.recurrence,
                        self.calendar.zone_name(),
                        self.calendar.format_local(occ.timestamp()),
                        self.calendar.format_local(end)
                    ),
                );
                true
            }
            None => {
                let next = self.calendar.next_of(&self.entry.recurrence, now);
                self.record(
                    plan,
                    "not-confirmed",
                    format!(
                        "not confirmed by the schedule: calendar entry {} is outside its slot (next {})",
                        self.entry.id,
                        self.calendar.format_local(next.timestamp())
                    ),
                );
                false
            }
        }
    }
}

/// `executor` for a scheduled run of `entry`: its destructive steps are confirmed by the
/// schedule ([`ScheduledConfirmer`]) and, inside the entry's slot, the slot is the guard's
/// production maintenance window (moving an entry with `[calendar.<id>]` moves its slot).
/// Outside the slot the window is the runbook's and nothing is confirmed by the schedule.
pub fn scheduled_executor(
    executor: &tej_core::Executor,
    calendar: &Calendar,
    entry: &CalendarEntry,
) -> tej_core::Executor {
    let mut ex = executor.clone();
    let now = ex.guard.clock.now();
    let early = DueWindow::default().early;
    if let Some((occ, end)) = scheduled_slot(calendar, entry, now, early)
        && let Ok(start) = occ.timestamp().checked_sub(early)
    {
        // The guard's window becomes the entry's slot: no override flag, so the audit log
        // never says `--outside-window` for what the schedule decided.
        let tz = calendar.zone().clone();
        let start = start.to_zoned(tz.clone());
        ex.guard.calendar.window = tej_core::MaintenanceWindow {
            weekday: start.weekday(),
            start: start.time(),
            end: end.to_zoned(tz).time(),
        };
    }
    ex.guard.confirmer = std::sync::Arc::new(ScheduledConfirmer {
        calendar: calendar.clone(),
        entry: entry.clone(),
        clock: ex.guard.clock.clone(),
        audit: ex.audit.clone(),
        environment: ex.guard.environment.to_string(),
        fallback: executor.guard.confirmer.clone(),
    });
    ex
}

fn check_token(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@+-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(RunbookError::Unsupported(format!(
            "{what} {s:?} must be non-empty and use only letters, digits and _./:=@+-"
        )))
    }
}

fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && !id.starts_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(RunbookError::Unsupported(format!(
            "entry id {id:?} must be lower-case letters, digits and '-'"
        )))
    }
}

/// The entries `tej run SELECTOR` means: `daily`, `weekly`, `monthly`,
/// `quarterly` (by cadence) or one entry id.
pub fn select_entries<'a>(cal: &'a Calendar, selector: &str) -> Result<Vec<&'a CalendarEntry>> {
    let cadence = match selector {
        "daily" => Some(Cadence::Daily),
        "weekly" => Some(Cadence::Weekly),
        "monthly" => Some(Cadence::Monthly),
        "quarterly" => Some(Cadence::Quarterly),
        _ => None,
    };
    match cadence {
        Some(c) => Ok(cal
            .entries
            .iter()
            .filter(|e| e.recurrence.cadence() == c)
            .collect()),
        None => cal
            .entry(selector)
            .map(|e| vec![e])
            .ok_or_else(|| RunbookError::UnknownEntry(selector.to_string())),
    }
}

/// The argv that runs `entry_id`: `tej [--config PATH] run ENTRY [--if-due] --scheduled`.
/// `--scheduled` makes the run the calendar's own: inside the entry's slot its
/// destructive steps are confirmed by being scheduled ([`ScheduledConfirmer`]).
pub fn run_argv(opts: &ScheduleOptions, entry_id: &str, if_due: bool) -> Result<Vec<String>> {
    check_id(entry_id)?;
    let bin = opts.tej_binary.to_str().unwrap_or("");
    check_token("tej binary", bin)?;
    if !opts.tej_binary.is_absolute() {
        return Err(RunbookError::Unsupported(format!(
            "tej binary {bin:?} must be an absolute path"
        )));
    }
    let mut argv = vec![bin.to_string()];
    if let Some(c) = &opts.config {
        let c = c.to_str().unwrap_or("");
        check_token("config path", c)?;
        argv.push("--config".into());
        argv.push(c.to_string());
    }
    argv.push("run".into());
    argv.push(entry_id.to_string());
    if if_due {
        argv.push("--if-due".into());
    }
    argv.push("--scheduled".into());
    Ok(argv)
}

fn at(r: &Recurrence) -> Time {
    match *r {
        Recurrence::Day { at }
        | Recurrence::Week { at, .. }
        | Recurrence::Month { at, .. }
        | Recurrence::Quarter { at, .. } => at,
    }
}

fn weekday(r: &Recurrence) -> Option<Weekday> {
    match *r {
        Recurrence::Day { .. } => None,
        Recurrence::Week { weekday, .. }
        | Recurrence::Month { weekday, .. }
        | Recurrence::Quarter { weekday, .. } => Some(weekday),
    }
}

fn check_whole_minute(id: &str, t: Time) -> Result<()> {
    if t.second() != 0 || t.subsec_nanosecond() != 0 {
        return Err(RunbookError::Unsupported(format!(
            "entry {id}: cron has minute resolution, {t} has seconds"
        )));
    }
    Ok(())
}

/// The fixed UTC offset of the calendar's zone in seconds, if it has had no
/// transition since 1970.
pub fn fixed_offset_seconds(cal: &Calendar) -> Option<i32> {
    let tz = cal.zone();
    if tz.following(Timestamp::UNIX_EPOCH).next().is_some() {
        return None;
    }
    Some(tz.to_offset(Timestamp::UNIX_EPOCH).seconds())
}

/// Converts a local time of day to UTC: (hour, minute, day shift -1/0/+1).
fn to_utc(t: Time, offset_secs: i32) -> Option<(u8, u8, i32)> {
    if offset_secs % 60 != 0 {
        return None;
    }
    let local = i32::from(t.hour()) * 60 + i32::from(t.minute());
    let utc = local - offset_secs / 60;
    let shift = utc.div_euclid(1440);
    let m = utc.rem_euclid(1440);
    Some(((m / 60) as u8, (m % 60) as u8, shift))
}

/// One crontab job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronJob {
    /// Calendar entry id.
    pub entry_id: String,
    /// Comment line describing the entry in local time and UTC.
    pub comment: String,
    /// The five time fields: minute, hour, day of month, month, day of week.
    pub fields: [String; 5],
    /// The user field (`/etc/cron.d` format), if any.
    pub user: Option<String>,
    /// The command, as argv (every token checked; joined with spaces in the crontab).
    pub argv: Vec<String>,
}

impl CronJob {
    /// The crontab line.
    pub fn line(&self) -> String {
        match &self.user {
            Some(u) => format!("{} {u} {}", self.fields.join(" "), self.argv.join(" ")),
            None => format!("{} {}", self.fields.join(" "), self.argv.join(" ")),
        }
    }
}

fn cron_dow(w: Weekday) -> i32 {
    i32::from(w.to_sunday_zero_offset())
}

fn utc_note(t: Time, off: Option<i32>) -> String {
    match off.and_then(|o| to_utc(t, o)) {
        Some((h, m, 0)) => format!("{h:02}:{m:02} UTC"),
        Some((h, m, -1)) => format!("{h:02}:{m:02} UTC the day before"),
        Some((h, m, _)) => format!("{h:02}:{m:02} UTC the day after"),
        None => "UTC offset varies".to_string(),
    }
}

/// The crontab jobs for every calendar entry.
pub fn cron_jobs(cal: &Calendar, opts: &ScheduleOptions) -> Result<Vec<CronJob>> {
    let off = fixed_offset_seconds(cal);
    let user = if opts.cron_user_field {
        let u = opts.user.clone().unwrap_or_else(|| "root".to_string());
        check_token("user", &u)?;
        Some(u)
    } else {
        None
    };
    let mut jobs = Vec::new();
    for e in &cal.entries {
        let t = at(&e.recurrence);
        check_whole_minute(&e.id, t)?;
        let (hour, minute, shift) = match opts.cron_zone {
            CronZone::CronTz => (t.hour() as u8, t.minute() as u8, 0),
            CronZone::Utc => {
                let o = off.ok_or_else(|| {
                    RunbookError::Unsupported(format!(
                        "zone {} has UTC offset changes; use CRON_TZ or systemd timers",
                        cal.zone_name()
                    ))
                })?;
                to_utc(t, o).ok_or_else(|| {
                    RunbookError::Unsupported(format!(
                        "zone {} has an offset of {o}s, not whole minutes",
                        cal.zone_name()
                    ))
                })?
            }
        };
        let dow = match weekday(&e.recurrence) {
            None => "*".to_string(),
            Some(w) => (cron_dow(w) + shift).rem_euclid(7).to_string(),
        };
        // In local time the quarter's months can be named; in UTC a shifted day
        // may fall in the previous month, so leave the month to --if-due.
        let month = match (e.recurrence, shift) {
            (Recurrence::Quarter { .. }, 0) => "1,4,7,10".to_string(),
            _ => "*".to_string(),
        };
        // Cron says "every <weekday>" exactly; nth/last weekday is checked by tej.
        // Every line carries --if-due so a cron that ignores CRON_TZ runs nothing.
        let argv = run_argv(opts, &e.id, true)?;
        let comment = format!(
            "# {}: {} {} (= {}), {} min",
            e.id,
            e.recurrence,
            cal.zone_name(),
            utc_note(t, off),
            e.duration.as_mins()
        );
        jobs.push(CronJob {
            entry_id: e.id.clone(),
            comment,
            fields: [
                minute.to_string(),
                hour.to_string(),
                "*".to_string(),
                month,
                dow,
            ],
            user: user.clone(),
            argv,
        });
    }
    Ok(jobs)
}

/// The whole crontab for the calendar.
pub fn emit_crontab(cal: &Calendar, opts: &ScheduleOptions) -> Result<String> {
    let jobs = cron_jobs(cal, opts)?;
    let mut out = String::new();
    out.push_str("# tej maintenance calendar, generated by `tej schedule --emit crontab`.\n");
    out.push_str("# Cron cannot express \"nth/last Sunday\": each line wakes tej on the right\n");
    out.push_str(
        "# weekday and `tej run ENTRY --if-due` checks the calendar, exiting 0 when not due.\n",
    );
    match opts.cron_zone {
        CronZone::CronTz => {
            check_token("zone", cal.zone_name())?;
            out.push_str(&format!(
                "# Times are {} (CRON_TZ: cronie, systemd-cron).\nCRON_TZ={}\n",
                cal.zone_name(),
                cal.zone_name()
            ));
        }
        CronZone::Utc => out.push_str(&format!(
            "# Times are UTC (for a cron daemon running in UTC); the calendar is {}.\n",
            cal.zone_name()
        )),
    }
    for j in jobs {
        out.push('\n');
        out.push_str(&j.comment);
        out.push('\n');
        out.push_str(&j.line());
        out.push('\n');
    }
    Ok(out)
}

fn weekday_abbrev(w: Weekday) -> &'static str {
    match w {
        Weekday::Monday => "Mon",
        Weekday::Tuesday => "Tue",
        Weekday::Wednesday => "Wed",
        Weekday::Thursday => "Thu",
        Weekday::Friday => "Fri",
        Weekday::Saturday => "Sat",
        Weekday::Sunday => "Sun",
    }
}

fn nth_days(month: &str, nth: i8) -> String {
    if nth < 0 {
        // The last seven days of the month; systemd counts `~01` as the last day.
        format!("*-{month}~01..07")
    } else {
        let first = (i32::from(nth) - 1) * 7 + 1;
        let last = (i32::from(nth) * 7).min(31);
        format!("*-{month}-{first:02}..{last:02}")
    }
}

/// The `OnCalendar=` expression for a recurrence in the calendar's zone.
pub fn on_calendar(cal: &Calendar, r: &Recurrence) -> String {
    let t = at(r);
    let time = format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
    let zone = cal.zone_name();
    match *r {
        Recurrence::Day { .. } => format!("*-*-* {time} {zone}"),
        Recurrence::Week { weekday, .. } => {
            format!("{} *-*-* {time} {zone}", weekday_abbrev(weekday))
        }
        Recurrence::Month { nth, weekday, .. } => {
            format!(
                "{} {} {time} {zone}",
                weekday_abbrev(weekday),
                nth_days("*", nth)
            )
        }
        Recurrence::Quarter { nth, weekday, .. } => format!(
            "{} {} {time} {zone}",
            weekday_abbrev(weekday),
            nth_days("01,04,07,10", nth)
        ),
    }
}

/// One systemd unit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdUnit {
    /// File name (`tej-weekly-audit.timer`).
    pub name: String,
    /// File content.
    pub contents: String,
}

/// A `.timer` and a `.service` unit per calendar entry.
pub fn emit_systemd(cal: &Calendar, opts: &ScheduleOptions) -> Result<Vec<SystemdUnit>> {
    check_token("zone", cal.zone_name())?;
    if let Some(u) = &opts.user {
        check_token("user", u)?;
    }
    let on_failure = match &opts.on_failure {
        Some(u) => {
            check_token("OnFailure unit", &u.replace('%', ""))?;
            if !u.contains('.') {
                return Err(RunbookError::Unsupported(format!(
                    "OnFailure unit {u:?} must be a unit name with its suffix (notify@%n.service)"
                )));
            }
            format!("OnFailure={u}\n")
        }
        None => String::new(),
    };
    let env_file = match &opts.environment_file {
        Some(p) => {
            let s = p.to_str().unwrap_or("");
            check_token("environment file", s)?;
            if !p.is_absolute() {
                return Err(RunbookError::Unsupported(format!(
                    "environment file {s:?} must be an absolute path"
                )));
            }
            format!("EnvironmentFile=-{s}\n")
        }
        None => String::new(),
    };
    let mut units = Vec::new();
    for e in &cal.entries {
        let argv = run_argv(opts, &e.id, false)?;
        let base = format!("tej-{}", e.id);
        let what = format!("{} {}", e.recurrence, cal.zone_name());
        let timer = format!(
            "# Generated by `tej schedule --emit systemd`.\n\
             [Unit]\n\
             Description=tej {id}: {what}\n\
             \n\
             [Timer]\n\
             OnCalendar={cal_expr}\n\
             AccuracySec=1s\n\
             Persistent=true\n\
             Unit={base}.service\n\
             \n\
             [Install]\n\
             WantedBy=timers.target\n",
            id = e.id,
            cal_expr = on_calendar(cal, &e.recurrence),
        );
        let user = opts
            .user
            .as_ref()
            .map(|u| format!("User={u}\n"))
            .unwrap_or_default();
        let service = format!(
            "# Generated by `tej schedule --emit systemd`.\n\
             [Unit]\n\
             Description=tej run {id} ({what})\n\
             Wants=network-online.target\n\
             After=network-online.target\n\
             {on_failure}\
             \n\
             [Service]\n\
             Type=oneshot\n\
             {user}\
             {env_file}\
             ExecStart={exec}\n\
             TimeoutStartSec={timeout}min\n",
            id = e.id,
            exec = argv.join(" "),
            // Twice the runbook's allotted duration before systemd gives up.
            timeout = (e.duration.as_mins() * 2).max(5),
        );
        units.push(SystemdUnit {
            name: format!("{base}.timer"),
            contents: timer,
        });
        units.push(SystemdUnit {
            name: format!("{base}.service"),
            contents: service,
        });
    }
    Ok(units)
}

/// An environment variable a Kubernetes CronJob takes from a Secret or ConfigMap key of
/// the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvRef {
    /// Variable (and key) name (`DATABASE_URL`).
    pub name: String,
    /// Whether the pod may start without it.
    pub optional: bool,
}

impl EnvRef {
    /// A required variable.
    pub fn required(name: &str) -> EnvRef {
        EnvRef {
            name: name.into(),
            optional: false,
        }
    }
    /// An optional variable.
    pub fn optional(name: &str) -> EnvRef {
        EnvRef {
            name: name.into(),
            optional: true,
        }
    }
}

/// How the Kubernetes CronJobs run tej: image, namespace, and where the configuration and
/// the secrets come from (a ConfigMap holding `tej.toml`, a Secret holding the credentials;
/// never a value inline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesOptions {
    /// Namespace of every CronJob.
    pub namespace: String,
    /// Container image with the tej binary and the PostgreSQL 15 client tools.
    pub image: String,
    /// Absolute path of tej inside the image.
    pub tej_binary: PathBuf,
    /// ConfigMap holding `tej.toml` (and the non-secret variables of `config_env`).
    pub config_map: String,
    /// Directory the ConfigMap's `tej.toml` is mounted in.
    pub config_dir: String,
    /// Secret holding the variables of `secret_env`.
    pub secret: String,
    /// Variables taken from the Secret (`secretKeyRef`).
    pub secret_env: Vec<EnvRef>,
    /// Variables taken from the ConfigMap (`configMapKeyRef`).
    pub config_env: Vec<EnvRef>,
    /// Writable scratch directory (an `emptyDir`) for state, audit log and dumps in flight.
    pub state_dir: String,
    /// Service account of the pods, if any.
    pub service_account: Option<String>,
    /// A run that cannot start this many seconds after its time is skipped
    /// (`startingDeadlineSeconds`; below [`DueWindow`]'s 10 minutes so `--if-due` agrees).
    pub starting_deadline_secs: u32,
}

impl Default for KubernetesOptions {
    fn default() -> Self {
        KubernetesOptions {
            namespace: "tej".into(),
            image: "tej:latest".into(),
            tej_binary: PathBuf::from("/usr/local/bin/tej"),
            config_map: "tej-config".into(),
            config_dir: "/etc/tej".into(),
            secret: "tej-secrets".into(),
            secret_env: vec![
                EnvRef::required("DATABASE_URL"),
                EnvRef::optional("REDIS_URL"),
                EnvRef::required("AWS_ACCESS_KEY_ID"),
                EnvRef::required("AWS_SECRET_ACCESS_KEY"),
                EnvRef::optional("TEJ_BACKUP_PASSPHRASE"),
                EnvRef::optional("TEJ_NOTIFY_URL"),
            ],
            config_env: vec![
                EnvRef::required("AWS_REGION"),
                EnvRef::optional("AWS_ENDPOINT_URL"),
            ],
            state_dir: "/var/lib/tej".into(),
            service_account: None,
            starting_deadline_secs: 300,
        }
    }
}

/// A YAML double-quoted scalar (JSON string syntax, which YAML 1.2 reads as such).
fn yq(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn check_k8s_name(what: &str, s: &str, max: usize) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(RunbookError::Unsupported(format!(
            "{what} {s:?} must be a DNS label: lower-case letters, digits and '-', at most {max} characters"
        )))
    }
}

fn check_env_name(s: &str) -> Result<()> {
    let ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(RunbookError::Unsupported(format!(
            "environment variable {s:?} must be upper-case letters, digits and '_'"
        )))
    }
}

fn check_abs_path(what: &str, s: &str) -> Result<()> {
    check_token(what, s)?;
    if !s.starts_with('/') {
        return Err(RunbookError::Unsupported(format!(
            "{what} {s:?} must be an absolute path"
        )));
    }
    Ok(())
}

/// One `batch/v1` CronJob per calendar entry, as a multi-document YAML stream: the entry's
/// cron schedule (the same fields as [`emit_crontab`]) in the calendar's zone
/// (`timeZone`), `concurrencyPolicy: Forbid`, no retries, and the command
/// `tej --config DIR/tej.toml run ENTRY --if-due`: Kubernetes wakes tej on the right
/// weekday and tej checks the calendar itself, so "nth/last Sunday" entries (which cron
/// cannot express) run only when due. `tej.toml` comes from a ConfigMap, credentials from
/// a Secret (`secretKeyRef` only; no value is ever written inline), and every job shares
/// the S3 backup repository named in that `tej.toml`.
pub fn emit_kubernetes(cal: &Calendar, opts: &KubernetesOptions) -> Result<String> {
    check_k8s_name("namespace", &opts.namespace, 63)?;
    check_k8s_name("ConfigMap", &opts.config_map, 253)?;
    check_k8s_name("Secret", &opts.secret, 253)?;
    if let Some(sa) = &opts.service_account {
        check_k8s_name("service account", sa, 253)?;
    }
    check_token("image", &opts.image)?;
    check_abs_path("config directory", &opts.config_dir)?;
    check_abs_path("state directory", &opts.state_dir)?;
    check_token("zone", cal.zone_name())?;
    for e in opts.secret_env.iter().chain(&opts.config_env) {
        check_env_name(&e.name)?;
    }
    let sched = ScheduleOptions {
        tej_binary: opts.tej_binary.clone(),
        config: Some(PathBuf::from(format!(
            "{}/tej.toml",
            opts.config_dir.trim_end_matches('/')
        ))),
        user: None,
        cron_zone: CronZone::CronTz,
        cron_user_field: false,
        on_failure: None,
        environment_file: None,
    };
    let jobs = cron_jobs(cal, &sched)?;
    let mut out = String::new();
    out.push_str(
        "# tej maintenance calendar as Kubernetes CronJobs, generated by\n\
         # `tej schedule --emit kubernetes`; one CronJob per calendar entry.\n\
         # Cron cannot express \"nth/last Sunday\": each job wakes tej on the right weekday\n\
         # and `tej run ENTRY --if-due` checks the calendar, exiting 0 when not due.\n",
    );
    out.push_str(&format!(
        "# Configuration: ConfigMap {cm} (tej.toml); credentials: Secret {sec} (secretKeyRef only).\n",
        cm = opts.config_map,
        sec = opts.secret
    ));
    for (e, job) in cal.entries.iter().zip(jobs) {
        let name = format!("tej-{}", e.id);
        // CronJob names are limited to 52 characters (the Job name adds a suffix).
        check_k8s_name("CronJob name", &name, 52)?;
        let deadline = (e.duration.as_secs() * 2).max(300);
        let mut env = String::new();
        for (r, source, kind) in [
            (&opts.secret_env, &opts.secret, "secretKeyRef"),
            (&opts.config_env, &opts.config_map, "configMapKeyRef"),
        ]
        .iter()
        .flat_map(|(list, src, kind)| list.iter().map(move |r| (r, *src, *kind)))
        {
            env.push_str(&format!(
                "                - name: {n}\n                  valueFrom:\n                    {kind}:\n                      name: {src}\n                      key: {n}\n                      optional: {opt}\n",
                n = r.name,
                src = yq(source),
                opt = r.optional
            ));
        }
        let command = job
            .argv
            .iter()
            .map(|a| yq(a))
            .collect::<Vec<_>>()
            .join(", ");
        let sa = opts
            .service_account
            .as_ref()
            .map(|s| format!("          serviceAccountName: {}\n", yq(s)))
            .unwrap_or_default();
        out.push_str(&format!(
            "---\n\
             apiVersion: batch/v1\n\
             kind: CronJob\n\
             metadata:\n\
             \x20 name: {name}\n\
             \x20 namespace: {ns}\n\
             \x20 labels:\n\
             \x20   app.kubernetes.io/name: tej\n\
             \x20   app.kubernetes.io/component: maintenance\n\
             \x20   tej.dev/entry: {id}\n\
             \x20 annotations:\n\
             \x20   tej.dev/recurrence: {rec}\n\
             \x20   tej.dev/duration-minutes: {mins}\n\
             spec:\n\
             \x20 schedule: {schedule}\n\
             \x20 timeZone: {zone}\n\
             \x20 concurrencyPolicy: Forbid\n\
             \x20 startingDeadlineSeconds: {start}\n\
             \x20 successfulJobsHistoryLimit: 3\n\
             \x20 failedJobsHistoryLimit: 3\n\
             \x20 jobTemplate:\n\
             \x20   spec:\n\
             \x20     backoffLimit: 0\n\
             \x20     activeDeadlineSeconds: {deadline}\n\
             \x20     template:\n\
             \x20       metadata:\n\
             \x20         labels:\n\
             \x20           app.kubernetes.io/name: tej\n\
             \x20           tej.dev/entry: {id}\n\
             \x20       spec:\n\
             \x20         restartPolicy: Never\n\
             {sa}\
             \x20         containers:\n\
             \x20           - name: tej\n\
             \x20             image: {image}\n\
             \x20             command: [{command}]\n\
             \x20             env:\n\
             {env}\
             \x20             volumeMounts:\n\
             \x20               - name: config\n\
             \x20                 mountPath: {config_dir}\n\
             \x20                 readOnly: true\n\
             \x20               - name: state\n\
             \x20                 mountPath: {state_dir}\n\
             \x20         volumes:\n\
             \x20           - name: config\n\
             \x20             configMap:\n\
             \x20               name: {cm}\n\
             \x20               items:\n\
             \x20                 - key: tej.toml\n\
             \x20                   path: tej.toml\n\
             \x20           - name: state\n\
             \x20             emptyDir: {{}}\n",
            ns = yq(&opts.namespace),
            id = e.id,
            rec = yq(&format!("{} {}", e.recurrence, cal.zone_name())),
            mins = yq(&e.duration.as_mins().to_string()),
            schedule = yq(&job.fields.join(" ")),
            zone = yq(cal.zone_name()),
            start = opts.starting_deadline_secs,
            image = yq(&opts.image),
            config_dir = yq(&opts.config_dir),
            state_dir = yq(&opts.state_dir),
            cm = yq(&opts.config_map),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::Date;
    use jiff::tz::TimeZone;
    use std::collections::BTreeSet;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    // ---- a small evaluator for the cron subset we emit (Vixie semantics) ----

    #[derive(Debug)]
    struct Field(Option<BTreeSet<i32>>); // None = '*'

    fn parse_field(s: &str, lo: i32, hi: i32) -> Field {
        if s == "*" {
            return Field(None);
        }
        let mut set = BTreeSet::new();
        for part in s.split(',') {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.parse::<i32>().unwrap(), b.parse::<i32>().unwrap()),
                None => {
                    let n = part.parse::<i32>().unwrap();
                    (n, n)
                }
            };
            assert!(lo <= a && a <= b && b <= hi, "field {s} out of range");
            set.extend(a..=b);
        }
        Field(Some(set))
    }

    impl Field {
        fn has(&self, v: i32) -> bool {
            self.0.as_ref().is_none_or(|s| s.contains(&v))
        }
        fn star(&self) -> bool {
            self.0.is_none()
        }
    }

    struct Job {
        tz: TimeZone,
        f: Vec<Field>,
        command: String,
    }

    fn parse_crontab(text: &str) -> Vec<Job> {
        let mut tz = TimeZone::get("UTC").unwrap();
        let mut jobs = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(z) = line.strip_prefix("CRON_TZ=") {
                tz = TimeZone::get(z).unwrap();
                continue;
            }
            let parts: Vec<&str> = line.splitn(6, ' ').collect();
            assert_eq!(parts.len(), 6, "{line}");
            let f = vec![
                parse_field(parts[0], 0, 59),
                parse_field(parts[1], 0, 23),
                parse_field(parts[2], 1, 31),
                parse_field(parts[3], 1, 12),
                parse_field(parts[4], 0, 7),
            ];
            jobs.push(Job {
                tz: tz.clone(),
                f,
                command: parts[5].to_string(),
            });
        }
        jobs
    }

    /// Instants in [from, until) at which cron starts `job`.
    fn firings(job: &Job, from: Timestamp, until: Timestamp) -> Vec<Timestamp> {
        let mut out = Vec::new();
        let mut date: Date = from.to_zoned(job.tz.clone()).date().yesterday().unwrap();
        let last = until.to_zoned(job.tz.clone()).date().tomorrow().unwrap();
        while date <= last {
            let dow = i32::from(date.weekday().to_sunday_zero_offset());
            let dom_ok = job.f[2].has(i32::from(date.day()));
            let dow_ok = job.f[4].has(dow) || (dow == 0 && job.f[4].has(7));
            let day_ok = if !job.f[2].star() && !job.f[4].star() {
                dom_ok || dow_ok
            } else {
                dom_ok && dow_ok
            };
            if day_ok && job.f[3].has(i32::from(date.month())) {
                for h in 0..24 {
                    for m in 0..60 {
                        if job.f[0].has(m) && job.f[1].has(h) {
                            let z = date
                                .at(h as i8, m as i8, 0, 0)
                                .to_zoned(job.tz.clone())
                                .unwrap();
                            let t = z.timestamp();
                            if t >= from && t < until {
                                out.push(t);
                            }
                        }
                    }
                }
            }
            date = date.tomorrow().unwrap();
        }
        out
    }

    fn calendar_occurrences(
        cal: &Calendar,
        e: &CalendarEntry,
        from: Timestamp,
        until: Timestamp,
    ) -> Vec<Timestamp> {
        let mut v = Vec::new();
        let mut t = from.checked_sub(SignedDuration::from_nanos(1)).unwrap();
        loop {
            let z = cal.next_of(&e.recurrence, t);
            if z.timestamp() >= until {
                return v;
            }
            v.push(z.timestamp());
            t = z.timestamp();
        }
    }

    /// Cron firings, filtered by what `tej run --if-due` does when started a few
    /// seconds later, must be exactly the calendar's occurrences.
    fn assert_crontab_matches_calendar(zone: CronZone) {
        let cal = Calendar::runbook();
        let opts = ScheduleOptions {
            cron_zone: zone,
            ..ScheduleOptions::default()
        };
        let text = emit_crontab(&cal, &opts).unwrap();
        let jobs = parse_crontab(&text);
        assert_eq!(jobs.len(), cal.entries.len());
        // A year and a bit, across month and year ends (2025 has a 5-Sunday month
        // whose last Sunday is the 31st: August).
        let from = ts("2024-12-25T00:00:00Z");
        let until = ts("2026-01-10T00:00:00Z");
        for (job, e) in jobs.iter().zip(&cal.entries) {
            assert!(
                job.command
                    .contains(&format!(" run {} --if-due --scheduled", e.id)),
                "{}",
                job.command
            );
            let started: Vec<Timestamp> = firings(job, from, until)
                .into_iter()
                .filter(|t| {
                    let now = t.checked_add(SignedDuration::from_secs(3)).unwrap();
                    due_occurrence(&cal, e, now, DueWindow::default()).is_some()
                })
                .collect();
            let want = calendar_occurrences(&cal, e, from, until);
            assert!(want.len() >= 4, "{}: {}", e.id, want.len());
            assert_eq!(started, want, "{} ({zone:?})", e.id);
        }
    }

    #[test]
    fn crontab_with_cron_tz_fires_at_calendar_times() {
        assert_crontab_matches_calendar(CronZone::CronTz);
    }

    #[test]
    fn crontab_in_utc_fires_at_calendar_times() {
        assert_crontab_matches_calendar(CronZone::Utc);
    }

    #[test]
    fn crontab_text_has_zone_utc_notes_and_no_shell() {
        let cal = Calendar::runbook();
        let text = emit_crontab(&cal, &ScheduleOptions::default()).unwrap();
        assert!(text.contains("\nCRON_TZ=Asia/Kolkata\n"));
        assert!(text.contains(
            "# weekly-audit: every Sunday 02:00 Asia/Kolkata (= 20:30 UTC the day before), 120 min\n\
             0 2 * * 0 /usr/local/bin/tej run weekly-audit --if-due --scheduled\n"
        ));
        assert!(
            text.contains("0 9 * * * /usr/local/bin/tej run daily-health --if-due --scheduled\n")
        );
        assert!(text.contains(
            "0 3 * 1,4,7,10 0 /usr/local/bin/tej run secret-rotation --if-due --scheduled\n"
        ));
        // The nightly backup (runbook: 02:00 daily), its verification, retention, and
        // certbot twice a day.
        for line in [
            "0 2 * * * /usr/local/bin/tej run nightly-backup --if-due --scheduled\n",
            "0 3 * * * /usr/local/bin/tej run nightly-backup-verify --if-due --scheduled\n",
            "30 3 * * * /usr/local/bin/tej run nightly-backup-prune --if-due --scheduled\n",
            "0 0 * * * /usr/local/bin/tej run certificate-renewal-am --if-due --scheduled\n",
            "0 12 * * * /usr/local/bin/tej run certificate-renewal-pm --if-due --scheduled\n",
        ] {
            assert!(text.contains(line), "{line}");
        }
        for bad in ['$', '`', '%', ';', '|', '&', '[', '"', '\''] {
            let jobs_part: String = text.lines().filter(|l| !l.starts_with('#')).collect();
            assert!(!jobs_part.contains(bad), "found {bad:?}");
        }
        let utc = emit_crontab(
            &cal,
            &ScheduleOptions {
                cron_zone: CronZone::Utc,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!utc.contains("CRON_TZ"));
        assert!(
            utc.contains("30 20 * * 6 /usr/local/bin/tej run weekly-audit --if-due --scheduled\n")
        );
        assert!(
            utc.contains("30 3 * * * /usr/local/bin/tej run daily-health --if-due --scheduled\n")
        );
    }

    #[test]
    fn utc_crontab_refused_for_zones_with_dst() {
        let cal = Calendar::runbook_in("Europe/Berlin").unwrap();
        let err = emit_crontab(
            &cal,
            &ScheduleOptions {
                cron_zone: CronZone::Utc,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, RunbookError::Unsupported(_)), "{err}");
        // CRON_TZ works for any zone.
        assert!(emit_crontab(&cal, &ScheduleOptions::default()).is_ok());
        assert_eq!(fixed_offset_seconds(&Calendar::runbook()), Some(19800));
    }

    #[test]
    fn unsafe_tokens_are_refused() {
        let cal = Calendar::runbook();
        for opts in [
            ScheduleOptions {
                tej_binary: "/opt/my tej".into(),
                ..Default::default()
            },
            ScheduleOptions {
                tej_binary: "tej".into(),
                ..Default::default()
            },
            ScheduleOptions {
                config: Some("/etc/tej.toml;rm -rf /".into()),
                ..Default::default()
            },
            ScheduleOptions {
                user: Some("$(id)".into()),
                ..Default::default()
            },
        ] {
            let r = emit_crontab(&cal, &opts).and_then(|_| emit_systemd(&cal, &opts));
            assert!(matches!(r, Err(RunbookError::Unsupported(_))), "{opts:?}");
        }
        assert!(run_argv(&ScheduleOptions::default(), "Weekly Audit", false).is_err());
        assert!(run_argv(&ScheduleOptions::default(), "--help", false).is_err());
    }

    #[test]
    fn on_calendar_expressions() {
        let cal = Calendar::runbook();
        let expr = |id: &str| on_calendar(&cal, &cal.entry(id).unwrap().recurrence);
        assert_eq!(expr("daily-health"), "*-*-* 09:00:00 Asia/Kolkata");
        assert_eq!(expr("weekly-audit"), "Sun *-*-* 02:00:00 Asia/Kolkata");
        assert_eq!(
            expr("security-audit"),
            "Sun *-*-01..07 10:00:00 Asia/Kolkata"
        );
        assert_eq!(
            expr("database-deep-maintenance"),
            "Sun *-*-08..14 02:00:00 Asia/Kolkata"
        );
        assert_eq!(
            expr("capacity-planning"),
            "Sun *-*~01..07 15:00:00 Asia/Kolkata"
        );
        assert_eq!(
            expr("disaster-recovery-drill"),
            "Sun *-01,04,07,10-15..21 10:00:00 Asia/Kolkata"
        );
    }

    #[test]
    fn systemd_units_pair_timer_and_service() {
        let cal = Calendar::runbook();
        let opts = ScheduleOptions {
            config: Some("/etc/tej/tej.toml".into()),
            user: Some("tej".into()),
            ..Default::default()
        };
        let units = emit_systemd(&cal, &opts).unwrap();
        assert_eq!(units.len(), 2 * cal.entries.len());
        let timer = units
            .iter()
            .find(|u| u.name == "tej-capacity-planning.timer")
            .unwrap();
        assert!(
            timer
                .contents
                .contains("\nOnCalendar=Sun *-*~01..07 15:00:00 Asia/Kolkata\n")
        );
        assert!(timer.contents.contains("\nAccuracySec=1s\n"));
        assert!(timer.contents.contains("\nPersistent=true\n"));
        assert!(
            timer
                .contents
                .contains("\nUnit=tej-capacity-planning.service\n")
        );
        let svc = units
            .iter()
            .find(|u| u.name == "tej-capacity-planning.service")
            .unwrap();
        assert!(svc.contents.contains(
            "\nExecStart=/usr/local/bin/tej --config /etc/tej/tej.toml run capacity-planning --scheduled\n"
        ));
        assert!(svc.contents.contains("\nUser=tej\n"));
        assert!(svc.contents.contains("\nType=oneshot\n"));
        assert!(!svc.contents.contains("--if-due"));
        // Credentials from an environment file by default; no OnFailure unless asked.
        assert!(
            svc.contents
                .contains("\nEnvironmentFile=-/etc/tej/tej.env\n")
        );
        assert!(!svc.contents.contains("OnFailure="));
    }

    #[test]
    fn systemd_on_failure_and_environment_file_are_configurable() {
        let cal = Calendar::runbook();
        let opts = ScheduleOptions {
            on_failure: Some("tej-notify-failure@%n.service".into()),
            environment_file: Some("/etc/tej/credentials.env".into()),
            ..Default::default()
        };
        let units = emit_systemd(&cal, &opts).unwrap();
        let svc = units
            .iter()
            .find(|u| u.name == "tej-nightly-backup.service")
            .unwrap();
        let unit_section = svc.contents.split("[Service]").next().unwrap();
        assert!(
            unit_section.contains("\nOnFailure=tej-notify-failure@%n.service\n"),
            "{}",
            svc.contents
        );
        assert!(
            svc.contents
                .contains("\nEnvironmentFile=-/etc/tej/credentials.env\n")
        );
        for bad in [
            ScheduleOptions {
                on_failure: Some("x; rm -rf /".into()),
                ..Default::default()
            },
            ScheduleOptions {
                on_failure: Some("notify".into()),
                ..Default::default()
            },
            ScheduleOptions {
                environment_file: Some("tej.env".into()),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(emit_systemd(&cal, &bad), Err(RunbookError::Unsupported(_))),
                "{bad:?}"
            );
        }
        let none = ScheduleOptions {
            environment_file: None,
            ..Default::default()
        };
        let units = emit_systemd(&cal, &none).unwrap();
        assert!(
            units
                .iter()
                .all(|u| !u.contents.contains("EnvironmentFile"))
        );
    }

    #[test]
    fn cron_d_lines_carry_a_user_field() {
        let cal = Calendar::runbook();
        let root = emit_crontab(
            &cal,
            &ScheduleOptions {
                cron_user_field: true,
                config: Some("/etc/tej/tej.toml".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(root.contains(
            "\n0 2 * * * root /usr/local/bin/tej --config /etc/tej/tej.toml run nightly-backup --if-due --scheduled\n"
        ), "{root}");
        let jobs: Vec<&str> = root
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("CRON_TZ="))
            .collect();
        assert_eq!(jobs.len(), cal.entries.len());
        assert!(
            jobs.iter().all(|l| l.split(' ').nth(5) == Some("root")),
            "{root}"
        );
        let tej = emit_crontab(
            &cal,
            &ScheduleOptions {
                cron_user_field: true,
                user: Some("tej".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(tej.contains("\n0 9 * * * tej /usr/local/bin/tej run daily-health"));
        let bad = ScheduleOptions {
            cron_user_field: true,
            user: Some("r oot".into()),
            ..Default::default()
        };
        assert!(emit_crontab(&cal, &bad).is_err());
    }

    #[test]
    fn the_schedule_confirms_inside_the_slot_only_and_audits_it() {
        use std::sync::Arc;
        use tej_core::{Confirmer, Fixed, Plan, Risk};
        let cal = Calendar::runbook();
        let entry = cal.entry("nightly-backup-prune").unwrap().clone();
        let dir = tempfile::tempdir().unwrap();
        let audit = tej_core::AuditLog::new(dir.path().join("audit.jsonl"));
        let plan = Plan {
            step: "backup-prune".into(),
            risk: Risk::Destructive,
            target: "/srv/backups".into(),
            actions: vec!["delete backup x".into()],
        };
        let confirmer = |at: &str, yes: bool| ScheduledConfirmer {
            calendar: cal.clone(),
            entry: entry.clone(),
            clock: Arc::new(tej_core::FakeClock::new(ts(at))),
            audit: Some(audit.clone()),
            environment: "production".into(),
            fallback: Arc::new(Fixed(yes)),
        };
        // 03:30 IST = 22:00Z the day before; the slot is its 30 minutes.
        assert!(confirmer("2025-01-15T22:00:00Z", false).confirm(&plan));
        assert!(confirmer("2025-01-15T21:59:01Z", false).confirm(&plan)); // 59 s early
        assert!(confirmer("2025-01-15T22:29:59Z", false).confirm(&plan));
        assert!(!confirmer("2025-01-15T22:30:00Z", false).confirm(&plan));
        assert!(!confirmer("2025-01-16T06:30:00Z", false).confirm(&plan)); // noon
        // --yes confirms anyway, and is not recorded as the schedule's.
        assert!(confirmer("2025-01-16T06:30:00Z", true).confirm(&plan));
        let lines = audit.read_all().unwrap();
        let outcomes: Vec<&str> = lines.iter().map(|l| l.outcome.as_str()).collect();
        assert_eq!(
            outcomes,
            [
                "confirmed",
                "confirmed",
                "confirmed",
                "not-confirmed",
                "not-confirmed"
            ]
        );
        let first = &lines[0];
        assert_eq!(first.procedure, "nightly-backup-prune");
        assert_eq!(first.step, "backup-prune");
        assert_eq!(
            first.actor.as_deref(),
            Some("schedule:nightly-backup-prune")
        );
        let d = first.detail.as_deref().unwrap();
        assert!(
            d.contains("confirmed by the schedule") && d.contains("2025-01-16 03:30"),
            "{d}"
        );

        // The executor of a scheduled run: inside the slot the slot is the window.
        let ex = tej_core::Executor::new(tej_core::Guard {
            environment: tej_core::Environment::Production,
            calendar: cal.clone(),
            clock: Arc::new(tej_core::FakeClock::new(ts("2025-01-15T22:05:00Z"))),
            confirmer: Arc::new(Fixed(false)),
            override_window: false,
        });
        let inside = scheduled_executor(&ex, &cal, &entry);
        assert!(!inside.guard.override_window);
        assert!(inside.guard.authorize(&plan).is_ok());
        assert!(!inside.guard.calendar.in_window(ts("2025-01-15T22:30:00Z")));
        let mut late = ex.clone();
        late.guard.clock = Arc::new(tej_core::FakeClock::new(ts("2025-01-16T06:30:00Z")));
        let outside = scheduled_executor(&late, &cal, &entry);
        assert!(!outside.guard.override_window);
        assert_eq!(outside.guard.calendar.window, cal.window);
        assert!(matches!(
            outside.guard.authorize(&plan),
            Err(tej_core::Refusal::OutsideWindow { .. })
        ));
    }

    #[test]
    fn selectors() {
        let cal = Calendar::runbook();
        let ids = |s: &str| -> Vec<String> {
            select_entries(&cal, s)
                .unwrap()
                .iter()
                .map(|e| e.id.clone())
                .collect()
        };
        assert_eq!(
            ids("daily"),
            [
                "daily-health",
                "performance-check-am",
                "performance-check-pm",
                "nightly-backup",
                "nightly-backup-verify",
                "nightly-backup-prune",
                "certificate-renewal-am",
                "certificate-renewal-pm"
            ]
        );
        assert_eq!(
            ids("weekly"),
            [
                "weekly-audit",
                "security-review",
                "performance-optimization"
            ]
        );
        assert_eq!(
            ids("monthly"),
            [
                "security-audit",
                "database-deep-maintenance",
                "capacity-planning"
            ]
        );
        assert_eq!(
            ids("quarterly"),
            ["secret-rotation", "disaster-recovery-drill"]
        );
        assert_eq!(ids("weekly-audit"), ["weekly-audit"]);
        assert!(matches!(
            select_entries(&cal, "yearly"),
            Err(RunbookError::UnknownEntry(_))
        ));
    }

    #[test]
    fn due_window_edges() {
        let cal = Calendar::runbook();
        let e = cal.entry("weekly-audit").unwrap();
        // Sunday 2025-01-19 02:00 IST = 2025-01-18T20:30Z
        let occ = ts("2025-01-18T20:30:00Z");
        let w = DueWindow::default();
        let due = |s: &str| due_occurrence(&cal, e, ts(s), w).map(|z| z.timestamp());
        assert_eq!(due("2025-01-18T20:30:00Z"), Some(occ));
        assert_eq!(due("2025-01-18T20:29:00Z"), Some(occ));
        assert_eq!(due("2025-01-18T20:28:59Z"), None);
        assert_eq!(due("2025-01-18T20:40:00Z"), Some(occ));
        assert_eq!(due("2025-01-18T20:40:01Z"), None);
        // Not due on a Sunday that is not the second Sunday.
        let deep = cal.entry("database-deep-maintenance").unwrap();
        assert!(due_occurrence(&cal, deep, ts("2025-01-18T20:30:05Z"), w).is_none());
        assert!(due_occurrence(&cal, deep, ts("2025-01-11T20:30:05Z"), w).is_some());
    }

    #[test]
    fn kubernetes_cronjobs_refuse_unsafe_names_and_follow_options() {
        let cal = Calendar::runbook();
        let ok = KubernetesOptions {
            namespace: "ops".into(),
            image: "registry.example.com/tej:0.1.0".into(),
            service_account: Some("tej-runner".into()),
            ..KubernetesOptions::default()
        };
        let y = emit_kubernetes(&cal, &ok).unwrap();
        assert_eq!(y.matches("\n---\n").count(), cal.entries.len());
        assert_eq!(
            y.matches("  namespace: \"ops\"\n").count(),
            cal.entries.len()
        );
        assert!(y.contains("image: \"registry.example.com/tej:0.1.0\""));
        assert!(y.contains("serviceAccountName: \"tej-runner\""));
        assert!(y.contains("  schedule: \"0 3 * 1,4,7,10 0\"\n"), "{y}");
        assert!(!y.contains("value:"));
        for bad in [
            KubernetesOptions {
                namespace: "Ops".into(),
                ..KubernetesOptions::default()
            },
            KubernetesOptions {
                image: "tej:latest; rm -rf /".into(),
                ..KubernetesOptions::default()
            },
            KubernetesOptions {
                secret_env: vec![EnvRef::required("database-url")],
                ..KubernetesOptions::default()
            },
            KubernetesOptions {
                config_dir: "etc/tej".into(),
                ..KubernetesOptions::default()
            },
        ] {
            assert!(
                matches!(
                    emit_kubernetes(&cal, &bad),
                    Err(RunbookError::Unsupported(_))
                ),
                "{bad:?}"
            );
        }
    }
}

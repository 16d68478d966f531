//! `tej calendar`: the next occurrence of every calendar entry, in the calendar's zone (IST).

use crate::output::{OutputFormat, json_line};
use jiff::Timestamp;
use serde::Serialize;
use std::io::{self, Write};
use tej_core::Calendar;

#[derive(Serialize)]
struct Row {
    id: String,
    procedure: String,
    recurrence: String,
    next: String,
    next_utc: String,
    duration_minutes: i64,
}

/// Prints every entry with its next occurrence after `now`, soonest first.
pub fn show(
    out: &mut dyn Write,
    cal: &Calendar,
    now: Timestamp,
    format: OutputFormat,
) -> io::Result<()> {
    let rows: Vec<Row> = cal
        .upcoming(now)
        .into_iter()
        .map(|(e, z)| Row {
            id: e.id.clone(),
            procedure: serde_json::to_value(e.procedure)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            recurrence: e.recurrence.to_string(),
            next: z.strftime("%Y-%m-%d %H:%M %Z").to_string(),
            next_utc: z.timestamp().to_string(),
            duration_minutes: e.duration.as_mins(),
        })
        .collect();
    if format == OutputFormat::Json {
        for r in &rows {
            json_line(out, "calendar_entry", r)?;
        }
        return Ok(());
    }
    let w0 = rows.iter().map(|r| r.id.len()).max().unwrap_or(2);
    let w1 = rows.iter().map(|r| r.recurrence.len()).max().unwrap_or(4);
    writeln!(
        out,
        "{:<w0$}  {:<w1$}  NEXT ({})",
        "ID",
        "WHEN",
        cal.zone_name()
    )?;
    for r in &rows {
        writeln!(out, "{:<w0$}  {:<w1$}  {}", r.id, r.recurrence, r.next)?;
    }
    let open = cal.in_window(now);
    let next = cal.next_window_start(now);
    writeln!(
        out,
        "\nmaintenance window: {}",
        if open {
            "OPEN now".to_string()
        } else {
            format!("closed; next opens {}", next.strftime("%Y-%m-%d %H:%M %Z"))
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_text_on_a_thursday() {
        let mut out = Vec::new();
        show(
            &mut out,
            &Calendar::runbook(),
            "2025-01-16T04:30:00Z".parse().unwrap(),
            OutputFormat::Text,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let expected = "\
ID                         WHEN                                 NEXT (Asia/Kolkata)
performance-check-am       daily 11:00                          2025-01-16 11:00 IST
certificate-renewal-pm     daily 12:00                          2025-01-16 12:00 IST
performance-check-pm       daily 17:00                          2025-01-16 17:00 IST
certificate-renewal-am     daily 00:00                          2025-01-17 00:00 IST
nightly-backup             daily 02:00                          2025-01-17 02:00 IST
nightly-backup-verify      daily 03:00                          2025-01-17 03:00 IST
nightly-backup-prune       daily 03:30                          2025-01-17 03:30 IST
daily-health               daily 09:00                          2025-01-17 09:00 IST
weekly-audit               every Sunday 02:00                   2025-01-19 02:00 IST
disaster-recovery-drill    3rd Sunday of Jan/Apr/Jul/Oct 10:00  2025-01-19 10:00 IST
security-review            every Sunday 15:00                   2025-01-19 15:00 IST
performance-optimization   every Sunday 16:00                   2025-01-19 16:00 IST
capacity-planning          last Sunday of the month 15:00       2025-01-26 15:00 IST
security-audit             1st Sunday of the month 10:00        2025-02-02 10:00 IST
database-deep-maintenance  2nd Sunday of the month 02:00        2025-02-09 02:00 IST
secret-rotation            1st Sunday of Jan/Apr/Jul/Oct 03:00  2025-04-06 03:00 IST

maintenance window: closed; next opens 2025-01-19 02:00 IST
";
        assert_eq!(text, expected);
    }

    #[test]
    fn json_rows() {
        let mut out = Vec::new();
        show(
            &mut out,
            &Calendar::runbook(),
            "2025-01-16T04:30:00Z".parse().unwrap(),
            OutputFormat::Json,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["type"], "calendar_entry");
        assert_eq!(first["data"]["id"], "performance-check-am");
        assert_eq!(first["data"]["next_utc"], "2025-01-16T05:30:00Z");
        assert_eq!(text.lines().count(), 16);
    }
}

/// `tej calendar`.
#[derive(Debug, clap::Args)]
pub struct CalendarArgs {
    /// Compute from this instant instead of now (RFC 3339, e.g. 2025-01-16T09:00:00+05:30).
    #[arg(long)]
    pub at: Option<String>,
}

/// Runs `tej calendar`.
pub fn dispatch(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    args: CalendarArgs,
) -> anyhow::Result<i32> {
    let cal = Calendar::from_config(ctx.config()?)?;
    let now = crate::context::instant(args.at.as_deref())?;
    show(out, &cal, now, ctx.format())?;
    Ok(0)
}

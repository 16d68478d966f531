//! Prints the runbook calendar as a crontab and as systemd units.
//!
//! `cargo run -p tej-runbook --example emit_schedule -- [crontab|crontab-utc|systemd]`

use tej_core::Calendar;
use tej_runbook::{CronZone, ScheduleOptions, emit_crontab, emit_systemd};

fn main() -> anyhow::Result<()> {
    let cal = Calendar::runbook();
    let what = std::env::args().nth(1).unwrap_or_else(|| "crontab".into());
    let opts = ScheduleOptions::default();
    match what.as_str() {
        "crontab" => print!("{}", emit_crontab(&cal, &opts)?),
        "crontab-utc" => print!(
            "{}",
            emit_crontab(
                &cal,
                &ScheduleOptions {
                    cron_zone: CronZone::Utc,
                    ..opts
                }
            )?
        ),
        "systemd" => {
            for u in emit_systemd(&cal, &opts)? {
                println!("### {}\n{}", u.name, u.contents);
            }
        }
        other => anyhow::bail!("unknown format {other:?}: crontab, crontab-utc or systemd"),
    }
    Ok(())
}

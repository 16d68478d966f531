//! Progress bars for long work (backup create, verify, restore), on a terminal only.
//!
//! The libraries emit [`tej_backup::ProgressEvent`]s; this turns them into one indicatif
//! line per object on stderr. Nothing is drawn when stderr is not a terminal, with
//! `--color never`, with `NO_COLOR` set (non-empty) under `--color auto`, with
//! `TEJ_NO_PROGRESS` set, or for machine-readable output, so cron mail, JSON Lines and
//! Nagios output stay clean.

use crate::output::OutputFormat;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use tej_backup::{ProgressEvent, ProgressSink};

/// Whether to draw: text output, stderr a terminal that gets colour (`--color`,
/// `NO_COLOR`), not disabled by `TEJ_NO_PROGRESS`.
pub fn wanted(output: OutputFormat) -> bool {
    let terminal = std::io::stderr().is_terminal();
    output == OutputFormat::Text
        && terminal
        && crate::output::use_colour(terminal)
        && std::env::var_os("TEJ_NO_PROGRESS").is_none()
}

/// A sink drawing one spinner line per object (`create dump.pgc: 1.2 GiB, 310 MiB/s`),
/// or `None` when progress should not be drawn.
pub fn sink(output: OutputFormat) -> Option<ProgressSink> {
    wanted(output).then(|| bar_sink(ProgressDrawTarget::stderr()))
}

fn bar_sink(target: ProgressDrawTarget) -> ProgressSink {
    let bar = ProgressBar::with_draw_target(None, target);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    Arc::new(move |e: &ProgressEvent| {
        let line = describe(e);
        if e.done {
            bar.println(line);
        } else {
            bar.set_message(line);
            bar.tick();
        }
    })
}

/// The text of one progress line.
pub fn describe(e: &ProgressEvent) -> String {
    format!(
        "{} {}: {}, {}/s{}",
        e.operation,
        e.object,
        HumanBytes(e.raw_bytes),
        HumanBytes(e.bytes_per_sec as u64),
        if e.done {
            format!(" in {:.1} s", e.elapsed_secs)
        } else {
            String::new()
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(done: bool) -> ProgressEvent {
        ProgressEvent {
            operation: "create".into(),
            backup: "20250116T020000Z-main".into(),
            object: "dump.pgc".into(),
            raw_bytes: 3 * 1024 * 1024,
            elapsed_secs: 2.0,
            bytes_per_sec: 1.5 * 1024.0 * 1024.0,
            done,
        }
    }

    #[test]
    fn lines_name_object_size_and_rate() {
        assert_eq!(
            describe(&event(false)),
            "create dump.pgc: 3.00 MiB, 1.50 MiB/s"
        );
        assert_eq!(
            describe(&event(true)),
            "create dump.pgc: 3.00 MiB, 1.50 MiB/s in 2.0 s"
        );
    }

    #[test]
    fn machine_output_never_gets_a_bar() {
        assert!(sink(OutputFormat::Json).is_none());
        assert!(sink(OutputFormat::Nagios).is_none());
    }

    #[test]
    fn a_hidden_bar_accepts_events() {
        let s = bar_sink(ProgressDrawTarget::hidden());
        s(&event(false));
        s(&event(true));
    }
}

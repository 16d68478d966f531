//! Rendering: text tables, JSON Lines, Nagios plugin output and Prometheus textfiles.
//!
//! # JSON Lines schema (`--output json`)
//! Every line is one object `{"type": TYPE, "data": DATA}`. Types are stable:
//! - `finding`: a [`tej_core::Finding`] (`check`, `target`, `severity`, `summary`, `detail`, `metrics`).
//! - `summary`: `{"title", "severity", "exit_code", "ok", "warning", "critical", "unknown"}`, last line of a check run.
//! - `calendar_entry`: `{"id", "procedure", "recurrence", "next", "next_utc", "duration_minutes"}`.
//! - `config`: the redacted configuration summary.
//! - `not_due`: `{"message"}`, the only line of `tej run ID --if-due` when nothing was due.
//! - `step`: a [`tej_core::StepReport`] of a procedure.
//! - `deploy`: a [`tej_deploy::DeployReport`] (`tej deploy`, `tej rollback`): `outcome.status`
//!   `deployed` or `failed` (with `stage`, `reason`), `gates`, `events`, `new_container_logs`.
//! - `container` (`tej services status`), `log_line` (`tej services logs`), `restarted` (names),
//!   `recovery` (`tej emergency service-down`): tej-deploy's container, log line and recovery reports.
//! - `rotation`: a tej-secrets rotation report (`tej secrets rotate`).
//! - `tls_probe`, `tls_renewal`: tej-secrets' probe of one endpoint and certbot renewal report.
//! - `log_review`: tej-host's log review (`tej logs review`).
//! - `redis_info`, `redis_bigkeys`: tej-db's Redis reports.
//! - `db_health`, `db_size`, `db_bloat`, `db_slow_queries`, `db_indexes`, `db_amcheck`: tej-db's
//!   PostgreSQL reports, each followed by its `finding` lines and `summary`.
//! - `backup_created`: a tej-backup create report (logical; `backup`, `physical` for
//!   `--physical`; `backup`, `files` for `--files`), one line per run.
//! - `backup`: a `BackupSummary` of `tej backup list` (`kind`: `logical`, `physical`, `files`).
//! - `backup_verified`, `backup_verify_failed` (`{"repository", "error"}`): `tej backup verify`.
//! - `prune`: a tej-backup prune report (decisions with their rule).
//! - `wal_pushed` (`tej wal push`), `wal_fetched` (`{"name", "outcome": "fetched"|"not-found"}`),
//!   `wal_file` (`tej wal list`), `wal_continuity` (`tej wal verify`: chains, gaps, switches, window).
//! - `wal_archive`: the archive marker `tej wal init` wrote or found (`version`, `system_identifier`,
//!   `wal_segment_size`, `created_at`).
//! - `drill`: a tej-backup `DrillReport` (`restore_seconds` = RTO, `rpo_seconds`, `queries`, `ok`).
//! - `daemon_started`, `daemon`: the daemon's start line and its events.
//! - `serve_started`: `{"listen", "url", "interval_seconds", "token"}` (`token`: whether a
//!   bearer token is required), printed by `tej serve` and by `tej daemon` with `[serve] listen`.
//!
//! Consumers must ignore unknown types and unknown fields.
//!
//! # HTTP API of `tej serve` (`/api/v1/...`)
//! - `GET /api/v1/checks`: one object `{"collected_at", "collection_seconds", "error",
//!   "severity", "title", "checks"}`: when the newest collection of the daily health check
//!   finished (RFC 3339, `null` before the first), how long it took, why it failed (`null`
//!   when it did not; the checks are then the previous collection's), the worst severity,
//!   the report's title, and `checks`, the findings exactly as in `finding` lines above.
//! - `GET /metrics`: the Prometheus registry (OpenMetrics text) that `--prometheus-file`
//!   and `--output prometheus` also write; `GET /healthz`, `GET /readyz` (503 with the reason
//!   when the newest collection is older than twice the interval).
//!
//! Every body is redacted (the configuration's secrets, URL passwords); with a token every
//! request needs `Authorization: Bearer TOKEN`.

use serde::Serialize;
use std::io::{self, Write};
use tej_core::{Direction, Metric, Report, Severity};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum OutputFormat {
    /// Human-readable tables.
    #[default]
    Text,
    /// JSON Lines: `{"type": ..., "data": ...}` per line.
    Json,
    /// Nagios plugin: one status line with perfdata, exit 0/1/2/3.
    Nagios,
    /// Prometheus exposition (OpenMetrics text; node_exporter's textfile collector reads it).
    Prometheus,
}

/// Writes one JSON Lines record.
pub fn json_line<T: Serialize>(out: &mut dyn Write, kind: &str, data: &T) -> io::Result<()> {
    #[derive(Serialize)]
    struct Envelope<'a, T: Serialize> {
        #[serde(rename = "type")]
        kind: &'a str,
        data: &'a T,
    }
    serde_json::to_writer(&mut *out, &Envelope { kind, data }).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

/// When to colour text and log lines (`--color`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set to a non-empty value (no-color.org).
    #[default]
    Auto,
    /// Always, even into a pipe or file and with `NO_COLOR` set.
    Always,
    /// Never: no ANSI escape anywhere, no progress bars.
    Never,
}

impl ColorChoice {
    /// Whether a stream gets colour: `always`, `never`, or (`auto`) when it is a terminal
    /// and `no_color` (the value of `NO_COLOR`) is unset or empty.
    pub fn enabled(self, is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => is_terminal && no_color.is_none_or(|v| v.is_empty()),
        }
    }
}

static COLOUR_CHOICE: std::sync::OnceLock<ColorChoice> = std::sync::OnceLock::new();

/// Sets the process's `--color` choice once, before anything is rendered.
pub fn set_colour_choice(choice: ColorChoice) {
    let _ = COLOUR_CHOICE.set(choice);
}

/// The process's `--color` choice (`auto` until [`set_colour_choice`]).
pub fn colour_choice() -> ColorChoice {
    COLOUR_CHOICE.get().copied().unwrap_or_default()
}

/// Whether to colour a stream that `is_terminal` (or not), by `--color` and `NO_COLOR`.
pub fn use_colour(is_terminal: bool) -> bool {
    colour_choice().enabled(is_terminal, std::env::var_os("NO_COLOR").as_deref())
}

fn paint(s: Severity, colour: bool) -> String {
    if !colour {
        return s.label().to_string();
    }
    let code = match s {
        Severity::Ok => "32",
        Severity::Warning => "33",
        Severity::Critical => "31",
        Severity::Unknown => "35",
    };
    format!("\x1b[{code}m{}\x1b[0m", s.label())
}

/// Renders a report in `format`.
pub fn render_report(
    out: &mut dyn Write,
    report: &Report,
    format: OutputFormat,
    colour: bool,
) -> io::Result<()> {
    match format {
        OutputFormat::Text => render_text(out, report, colour),
        OutputFormat::Json => {
            for f in &report.findings {
                json_line(out, "finding", f)?;
            }
            json_line(out, "summary", &summary(report))
        }
        OutputFormat::Nagios => render_nagios(out, report),
        OutputFormat::Prometheus => out.write_all(prometheus_text(report).as_bytes()),
    }
}

#[derive(Serialize)]
struct Summary<'a> {
    title: &'a str,
    severity: Severity,
    exit_code: i32,
    ok: usize,
    warning: usize,
    critical: usize,
    unknown: usize,
}

fn summary(report: &Report) -> Summary<'_> {
    let (ok, warning, critical, unknown) = report.counts();
    Summary {
        title: &report.title,
        severity: report.severity(),
        exit_code: report.severity().exit_code(),
        ok,
        warning,
        critical,
        unknown,
    }
}

fn render_text(out: &mut dyn Write, report: &Report, colour: bool) -> io::Result<()> {
    let rows: Vec<[String; 3]> = report
        .findings
        .iter()
        .map(|f| {
            let check = if f.target.is_empty() {
                f.check.clone()
            } else {
                format!("{} [{}]", f.check, f.target)
            };
            [f.severity.label().to_string(), check, f.summary.clone()]
        })
        .collect();
    let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0).max(8);
    let w1 = rows
        .iter()
        .map(|r| r[1].chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    writeln!(out, "{}", report.title)?;
    writeln!(out, "{:<w0$}  {:<w1$}  SUMMARY", "STATUS", "CHECK")?;
    for (r, f) in rows.iter().zip(&report.findings) {
        let pad = " ".repeat(w0.saturating_sub(r[0].len()));
        writeln!(
            out,
            "{}{pad}  {:<w1$}  {}",
            paint(f.severity, colour),
            r[1],
            r[2]
        )?;
        if let Some(d) = &f.detail {
            for line in d.lines() {
                writeln!(out, "{:<w0$}  {:<w1$}    {line}", "", "")?;
            }
        }
    }
    let (ok, w, c, u) = report.counts();
    writeln!(
        out,
        "\n{}: {ok} ok, {w} warning, {c} critical, {u} unknown",
        paint(report.severity(), colour)
    )
}

/// The perfdata label of a metric: its name and label values, `=` (which ends a label)
/// and `|` (which ends perfdata) replaced, control characters as spaces.
fn perf_label(m: &Metric) -> String {
    let mut name = m.name.clone();
    for (_, v) in &m.labels {
        name.push('_');
        name.push_str(v);
    }
    name.chars()
        .map(|c| match c {
            '=' | '|' => '_',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// A label as perfdata writes it: in single quotes (which a label with a space needs and
/// any label may have), a `'` inside doubled.
fn quote_label(label: &str) -> String {
    format!("'{}'", label.replace('\'', "''"))
}

/// The Nagios unit of measure of a tej unit: the guidelines' units (`s`, `ms`, `us`, `%`,
/// `B`, `KB`, `MB`, `GB`, `TB`, `c`) are kept; anything else (counts, ratios, hours and
/// days, which the metric's name spells out) is unitless, as the guidelines have no unit
/// for it (`c` is a continuous counter, which these gauges are not).
fn nagios_uom(unit: &str) -> &'static str {
    const UOMS: [&str; 10] = ["s", "ms", "us", "%", "B", "KB", "MB", "GB", "TB", "c"];
    UOMS.into_iter().find(|u| *u == unit).unwrap_or("")
}

/// A perfdata number; `U` (undetermined) for NaN and infinities.
fn perf_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "U".into()
    }
}

/// The warning and critical ranges of a metric in the plugin guidelines' syntax. A
/// lower-is-worse metric (free space, hit ratio, days left) alerts below W: `W:`. A
/// higher-is-worse one: `W` (outside 0..W) for non-negative values and thresholds, else
/// `~:W` (above W).
fn perf_ranges(m: &Metric) -> (String, String) {
    let lower_is_worse = m.direction == Direction::LowerIsWorse;
    let range = |t: Option<f64>| match t.filter(|t| t.is_finite()) {
        None => String::new(),
        Some(t) if lower_is_worse => format!("{t}:"),
        Some(t) if t >= 0.0 && m.value >= 0.0 => format!("{t}"),
        Some(t) => format!("~:{t}"),
    };
    (range(m.warn), range(m.crit))
}

/// One perfdata item: `'label'=value[UOM];[warn];[crit]` (trailing empty fields dropped;
/// `U` for an undetermined value, without a unit).
fn perf_item(label: &str, m: &Metric) -> String {
    let (warn, crit) = perf_ranges(m);
    let uom = if m.value.is_finite() {
        nagios_uom(&m.unit)
    } else {
        ""
    };
    let mut item = format!(
        "{}={}{uom};{warn};{crit}",
        quote_label(label),
        perf_number(m.value)
    );
    while item.ends_with(';') {
        item.pop();
    }
    item
}

/// The perfdata of a report, one item per metric, labels made unique (a repeated label
/// gets its finding's target, then a counter).
fn perfdata(report: &Report) -> Vec<String> {
    let metrics: Vec<(&tej_core::Finding, &Metric)> = report
        .findings
        .iter()
        .flat_map(|f| f.metrics.iter().map(move |m| (f, m)))
        .collect();
    let base: Vec<String> = metrics.iter().map(|(_, m)| perf_label(m)).collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut items = Vec::with_capacity(metrics.len());
    for ((f, m), label) in metrics.iter().zip(&base) {
        let mut label = label.clone();
        if base.iter().filter(|b| **b == label).count() > 1 && !f.target.is_empty() {
            label = perf_label(&Metric::new(format!("{label}_{}", f.target), 0.0, ""));
        }
        let mut unique = label.clone();
        let mut n = 2;
        while !seen.insert(unique.clone()) {
            unique = format!("{label}_{n}");
            n += 1;
        }
        items.push(perf_item(&unique, m));
    }
    items
}

/// Plugin output text: one line, no `|` (which starts perfdata).
fn plugin_text(s: &str) -> String {
    s.replace('|', "/").replace(['\n', '\r'], " ")
}

/// The plugin output of a check that could not determine the state: `UNKNOWN - reason`
/// (exit 3), on stdout where the monitoring system reads it.
pub fn render_nagios_unknown(out: &mut dyn Write, reason: &str) -> io::Result<()> {
    writeln!(out, "UNKNOWN - {}", plugin_text(reason))
}

fn render_nagios(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    let sev = report.severity();
    let problems = report.problems();
    let text = if problems.is_empty() {
        format!("{} checks ok", report.findings.len())
    } else {
        problems
            .iter()
            .map(|f| plugin_text(&f.summary))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let perf = perfdata(report);
    write!(
        out,
        "{} {} - {}",
        report.title.to_uppercase().replace(' ', "_"),
        sev.label(),
        text
    )?;
    if !perf.is_empty() {
        write!(out, " | {}", perf.join(" "))?;
    }
    writeln!(out)?;
    for f in problems.iter().skip(1) {
        writeln!(out, "{}: {}", f.severity.label(), plugin_text(&f.summary))?;
    }
    Ok(())
}

/// The report as Prometheus exposition (OpenMetrics text), from the same registry as
/// `tej serve`'s `/metrics` (tej-runbook's [`serve::registry`](tej_runbook::serve::registry)).
pub fn prometheus_text(report: &Report) -> String {
    tej_runbook::serve::exposition(&tej_runbook::serve::Snapshot::of_report(
        report.clone(),
        jiff::Timestamp::now(),
    ))
}

/// Writes a Prometheus textfile atomically (node_exporter never reads a half-written file).
pub fn write_prometheus_file(path: &std::path::Path, report: &Report) -> io::Result<()> {
    tej_core::atomic_write(path, prometheus_text(report).as_bytes(), Some(0o644))
}

/// Appends the report to a Markdown daily log ("document findings in daily log").
pub fn append_daily_log(path: &std::path::Path, report: &Report, at: &str) -> io::Result<()> {
    use std::fs::OpenOptions;
    let mut md = format!(
        "\n## {} — {} — {}\n\n| status | check | target | summary |\n|---|---|---|---|\n",
        at,
        report.title,
        report.severity().label()
    );
    for f in &report.findings {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            f.severity.label(),
            f.check,
            f.target,
            f.summary.replace('|', "\\|")
        ));
    }
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    // Redacted as stdout is: findings quote text tej does not control.
    file.write_all(crate::logging::redact(&md).as_bytes())?;
    file.sync_data()
}

/// A finding list as a report, for commands that produce findings directly.
#[cfg(test)]
pub fn report_of(title: &str, findings: Vec<tej_core::Finding>) -> Report {
    let mut r = Report::new(title);
    r.extend(findings);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tej_core::{Finding, Threshold};

    fn sample() -> Report {
        report_of(
            "db health",
            vec![
                Finding::measured(
                    "postgres.connections",
                    "connections_used_percent",
                    42.0,
                    "%",
                    Threshold::above(80.0, 90.0),
                    "21 of 50 connections used",
                )
                .target("main"),
                Finding::new(
                    "postgres.xmin_horizon",
                    Severity::Warning,
                    "horizon pinned by pid 123 for 2h",
                )
                .target("main"),
            ],
        )
    }

    /// The daily log is output too: a configured secret quoted by a finding (another session's
    /// application name, a server's reply) never reaches the file.
    #[test]
    fn the_daily_log_is_redacted_like_stdout() {
        crate::logging::register_secret(&tej_core::Secret::new("daily-log-Pa55word"));
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("daily.md");
        let report = report_of(
            "db health",
            vec![
                Finding::new(
                    "postgres.idle_in_transaction",
                    Severity::Warning,
                    "pid 7 (application \"daily-log-Pa55word\") idle in transaction",
                )
                .target("pid:7"),
            ],
        );
        append_daily_log(&path, &report, "2025-01-16 03:00 IST").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("idle in transaction"), "{text}");
        assert!(!text.contains("daily-log-Pa55word"), "{text}");
    }

    #[test]
    fn text_golden() {
        let mut out = Vec::new();
        render_report(&mut out, &sample(), OutputFormat::Text, false).unwrap();
        let expected = "db health\nSTATUS    CHECK                         SUMMARY\nOK        postgres.connections [main]   21 of 50 connections used\nWARNING   postgres.xmin_horizon [main]  horizon pinned by pid 123 for 2h\n\nWARNING: 1 ok, 1 warning, 0 critical, 0 unknown\n";
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    /// Every `{"type": ...}` the CLI writes is documented in this module's schema.
    #[test]
    fn every_json_type_written_is_documented() {
        let sources = [
            include_str!("main.rs"),
            include_str!("cmd/backup.rs"),
            include_str!("cmd/calendar.rs"),
            include_str!("cmd/cleanup.rs"),
            include_str!("cmd/config.rs"),
            include_str!("cmd/daemon.rs"),
            include_str!("cmd/db.rs"),
            include_str!("cmd/deploy.rs"),
            include_str!("cmd/docs.rs"),
            include_str!("cmd/emergency.rs"),
            include_str!("cmd/host.rs"),
            include_str!("cmd/images.rs"),
            include_str!("cmd/logs.rs"),
            include_str!("cmd/pitr.rs"),
            include_str!("cmd/redis.rs"),
            include_str!("cmd/secrets.rs"),
            include_str!("cmd/run.rs"),
            include_str!("cmd/schedule.rs"),
            include_str!("cmd/services.rs"),
            include_str!("cmd/tls.rs"),
            include_str!("output.rs"),
        ];
        let doc: String = include_str!("output.rs")
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut types = Vec::new();
        for src in sources {
            for call in ["json_line(", "emit("] {
                for (i, _) in src.match_indices(call) {
                    // The type is the first string literal among the call's arguments.
                    let rest = &src[i + call.len()..];
                    let end = rest.find(')').unwrap_or(rest.len());
                    let args = &rest[..end];
                    if let Some(q) = args.find('"') {
                        let lit = &args[q + 1..];
                        if let Some(e) = lit.find('"') {
                            types.push(lit[..e].to_string());
                        }
                    }
                }
            }
        }
        types.retain(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        types.sort();
        types.dedup();
        assert!(types.len() >= 25, "found only {types:?}");
        let missing: Vec<_> = types
            .iter()
            .filter(|t| !doc.contains(&format!("`{t}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "JSON types written but not documented: {missing:?}"
        );
    }

    #[test]
    fn json_lines_envelope() {
        let mut out = Vec::new();
        render_report(&mut out, &sample(), OutputFormat::Json, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["type"], "finding");
        assert_eq!(lines[0]["data"]["severity"], "ok");
        assert_eq!(lines[0]["data"]["metrics"][0]["warn"], 80.0);
        assert_eq!(lines[2]["type"], "summary");
        assert_eq!(lines[2]["data"]["exit_code"], 1);
    }

    #[test]
    fn nagios_line_with_perfdata() {
        let mut out = Vec::new();
        render_report(&mut out, &sample(), OutputFormat::Nagios, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "DB_HEALTH WARNING - horizon pinned by pid 123 for 2h | 'connections_used_percent'=42%;80;90\n"
        );
    }

    #[test]
    fn prometheus_textfile() {
        let t = prometheus_text(&sample());
        assert!(
            t.contains("tej_check_status{check=\"postgres.xmin_horizon\",target=\"main\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains(
                "tej_connections_used_ratio{check=\"postgres.connections\",target=\"main\"} 0.42\n"
            ),
            "{t}"
        );
        assert!(t.ends_with("# EOF\n"), "{t}");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tej.prom");
        write_prometheus_file(&p, &sample()).unwrap();
        let written = std::fs::read_to_string(&p).unwrap();
        let samples = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.starts_with("tej_last_collection"))
                .map(String::from)
                .collect()
        };
        assert_eq!(samples(&written), samples(&t));
    }

    #[test]
    fn colour_rules() {
        use std::ffi::OsStr;
        assert!(!use_colour(false));
        assert!(ColorChoice::Auto.enabled(true, None));
        assert!(ColorChoice::Auto.enabled(true, Some(OsStr::new(""))));
        assert!(!ColorChoice::Auto.enabled(true, Some(OsStr::new("1"))));
        assert!(!ColorChoice::Auto.enabled(false, None));
        assert!(ColorChoice::Always.enabled(false, Some(OsStr::new("1"))));
        assert!(!ColorChoice::Never.enabled(true, None));
    }

    fn nagios(findings: Vec<Finding>) -> String {
        let mut out = Vec::new();
        render_report(
            &mut out,
            &report_of("t", findings),
            OutputFormat::Nagios,
            false,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    fn perf_of(out: &str) -> &str {
        out.lines().next().unwrap().split_once(" | ").unwrap().1
    }

    #[test]
    fn nagios_ranges_follow_the_plugin_guidelines() {
        let out = nagios(vec![
            Finding::measured(
                "disk",
                "free",
                12.5,
                "%",
                Threshold::below(30.0, 10.0),
                "free",
            ),
            Finding::measured("load", "load", 0.5, "", Threshold::above(4.0, 8.0), "load"),
            Finding::measured(
                "t",
                "skew_s",
                -3.0,
                "s",
                Threshold::above(5.0, 10.0),
                "skew",
            ),
            Finding::new("n", Severity::Ok, "nan").metric(Metric::new("gone", f64::NAN, "B")),
            Finding::new("r", Severity::Ok, "r").metric(Metric::new("ratio", 0.25, "ratio")),
        ]);
        assert_eq!(
            perf_of(&out),
            "'free'=12.5%;30:;10: 'load'=0.5;4;8 'skew_s'=-3s;~:5;~:10 'gone'=U 'ratio'=0.25",
            "{out}"
        );
    }

    #[test]
    fn a_lower_is_worse_metric_keeps_its_direction_when_its_thresholds_are_equal() {
        let out = nagios(vec![Finding::measured(
            "tls",
            "days_left",
            20.0,
            "",
            Threshold::below(14.0, 14.0),
            "days",
        )]);
        assert_eq!(perf_of(&out), "'days_left'=20;14:;14:", "{out}");
    }

    #[test]
    fn nagios_labels_are_quoted_escaped_and_unique() {
        let m = |name: &str| Metric::new(name, 1.0, "");
        let out = nagios(vec![
            Finding::new("a", Severity::Ok, "a").metric(m("it's a=b|c")),
            Finding::new("d", Severity::Ok, "x")
                .target("/")
                .metric(m("disk")),
            Finding::new("d", Severity::Ok, "y")
                .target("/var")
                .metric(m("disk")),
            Finding::new("d", Severity::Ok, "z")
                .metric(m("disk"))
                .metric(m("disk")),
        ]);
        assert_eq!(
            perf_of(&out),
            "'it''s a_b_c'=1 'disk_/'=1 'disk_/var'=1 'disk'=1 'disk_2'=1",
            "{out}"
        );
    }

    #[test]
    fn nagios_text_never_holds_a_pipe_or_a_line_break() {
        let out = nagios(vec![
            Finding::new("a", Severity::Critical, "down | really\nnow"),
            Finding::new("b", Severity::Warning, "slow | x"),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "T CRITICAL - down / really now; slow / x",
                "WARNING: slow / x"
            ],
            "{out}"
        );
    }
}

//! The one metrics registry of `tej serve`'s `/metrics` and of `--prometheus-file`, built
//! with `prometheus-client` from the latest results ([`Snapshot`]).

use crate::daemon::{EntryState, RunHistory, StateFile};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64};
use tej_core::{Report, Severity};

/// The Content-Type of [`exposition`]'s text (OpenMetrics 1.0, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;
type IntGauge = Gauge<i64, AtomicI64>;

/// The latest results: the newest check report, the calendar entries' last runs, and how
/// the collection that produced them went.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The newest report of the checks (`None` before the first collection finished).
    pub report: Option<Report>,
    /// When the newest collection finished.
    pub collected_at: Option<jiff::Timestamp>,
    /// How long the newest collection took, in seconds (`None` for a report made
    /// elsewhere, such as one command's run).
    pub collection_seconds: Option<f64>,
    /// Why the newest collection failed, if it did (the report is then the previous one).
    pub error: Option<String>,
    /// The last run of each calendar entry, by entry id (see [`calendar_history`]).
    pub entries: BTreeMap<String, EntryState>,
}

/// The last run of each calendar entry from the history store under `state_dir`: the
/// daemon's state file (`daemon-state.json`) and the runs of `tej run` and `tej health`
/// (`runs/<key>.json`); the later finished run of an entry wins. Unreadable files are
/// skipped (the exporter shows what it can read).
pub fn calendar_history(state_dir: &Path) -> BTreeMap<String, EntryState> {
    let mut out: BTreeMap<String, EntryState> = BTreeMap::new();
    let mut merge = |id: String, st: EntryState| {
        let newer = out
            .get(&id)
            .is_none_or(|cur| st.last_finished.is_some() && st.last_finished > cur.last_finished);
        if newer {
            out.insert(id, st);
        }
    };
    if let Ok(state) = StateFile::new(state_dir.join("daemon-state.json")).load() {
        for (id, st) in state.entries {
            merge(id, st);
        }
    }
    let runs = state_dir.join("runs");
    let history = RunHistory::new(&runs);
    if let Ok(dir) = std::fs::read_dir(&runs) {
        for file in dir.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            let Some(key) = name.strip_suffix(".json") else {
                continue;
            };
            if let Ok(st) = history.last(key) {
                merge(key.to_string(), st);
            }
        }
    }
    out
}

/// A metric name made of `[a-zA-Z0-9_]`, never starting with a digit.
fn sanitize_name(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// How a unit converts to Prometheus base units: factor, base word, words it replaces.
fn base_unit(unit: &str) -> Option<(f64, &'static str, &'static [&'static str])> {
    const TIME: &[&str] = &[
        "s",
        "sec",
        "secs",
        "second",
        "seconds",
        "ms",
        "millis",
        "milliseconds",
        "h",
        "hour",
        "hours",
        "d",
        "day",
        "days",
        "min",
        "mins",
        "minutes",
    ];
    const RATIO: &[&str] = &["percent", "pct", "ratio"];
    const BYTES: &[&str] = &["b", "bytes"];
    Some(match unit {
        "s" => (1.0, "seconds", TIME),
        "ms" => (0.001, "seconds", TIME),
        "min" => (60.0, "seconds", TIME),
        "h" => (3600.0, "seconds", TIME),
        "d" | "days" => (86400.0, "seconds", TIME),
        "%" => (0.01, "ratio", RATIO),
        "ratio" => (1.0, "ratio", RATIO),
        "B" => (1.0, "bytes", BYTES),
        _ => return None,
    })
}

/// The exposed name (`tej_` + the finding metric's name in base units) and the factor that
/// converts its value: `backup_age_hours` in `h` is `tej_backup_age_seconds` × 3600,
/// `connections_used_percent` in `%` is `tej_connections_used_ratio` × 0.01.
pub fn exposed_name(name: &str, unit: &str) -> (String, f64) {
    let clean = sanitize_name(name);
    let mut parts: Vec<&str> = clean.split('_').filter(|p| !p.is_empty()).collect();
    // Suffixes Prometheus reserves for counters, histograms and summaries.
    while parts
        .last()
        .is_some_and(|p| ["total", "count", "sum", "bucket", "created"].contains(p))
    {
        parts.pop();
    }
    let (factor, name) = match base_unit(unit) {
        Some((factor, base, words)) => {
            let mut replaced = false;
            let mut out: Vec<&str> = Vec::new();
            for p in parts {
                if words.contains(&p) {
                    if !replaced {
                        out.push(base);
                        replaced = true;
                    }
                } else {
                    out.push(p);
                }
            }
            if !replaced {
                out.push(base);
            }
            (factor, out.join("_"))
        }
        None => (1.0, parts.join("_")),
    };
    let name = if name.is_empty() {
        "value".into()
    } else {
        name
    };
    (format!("tej_{name}"), factor)
}

/// A label name made of `[a-zA-Z0-9_]`, not one of `taken`, not starting with `__`.
fn label_name(raw: &str, taken: &BTreeSet<String>) -> String {
    let mut k = sanitize_name(raw).trim_start_matches('_').to_string();
    if k.is_empty() {
        k = "label".into();
    }
    while taken.contains(&k) {
        k = format!("metric_{k}");
    }
    k
}

/// A unit as words safe in a HELP line (prometheus-client writes HELP text unescaped, and
/// appends the final period): `%` is `percent`, anything but letters, digits and `/` goes.
fn unit_words(unit: &str) -> String {
    let words: String = unit
        .replace('%', "percent")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '/')
        .collect();
    if words.is_empty() {
        "units".into()
    } else {
        words
    }
}

fn status_value(s: Severity) -> i64 {
    i64::from(s.exit_code())
}

fn family<
    G: prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric
        + Default
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
>(
    registry: &mut Registry,
    reserved: &mut BTreeSet<String>,
    name: &str,
    help: &str,
) -> Family<Labels, G> {
    let f = Family::<Labels, G>::default();
    reserved.insert(name.to_string());
    registry.register(name, help.trim_end_matches('.'), f.clone());
    f
}

/// The registry of the latest results:
/// - `tej_check_status{check,target}`: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the worst
///   finding of that check and target);
/// - each metric a finding carries, in base units (`tej_<name>_seconds`, `_bytes`,
///   `_ratio`), labelled with its check, target and own labels (backup age per series is
///   `tej_backup_age_seconds{check,target,database,kind}`);
/// - each calendar entry's last run: `tej_calendar_last_run_timestamp_seconds`,
///   `tej_calendar_last_run_duration_seconds`, `tej_calendar_last_run_status` (0–3 as
///   above, 2 for a run that failed) and `tej_calendar_last_run_failed` (1 when it failed);
/// - the exporter's own health: `tej_up` (1 when the newest collection succeeded),
///   `tej_last_collection_timestamp_seconds`, `tej_collection_duration_seconds`.
///
/// Label values are escaped by `prometheus-client`; names and label names are reduced to
/// `[a-z0-9_]`, so no check name or target can break the exposition.
pub fn registry(snapshot: &Snapshot) -> Registry {
    let mut registry = Registry::default();
    let mut reserved = BTreeSet::new();
    let up = family::<IntGauge>(
        &mut registry,
        &mut reserved,
        "tej_up",
        "1 when tej's newest collection of the checks succeeded, else 0",
    );
    let last = family::<FloatGauge>(
        &mut registry,
        &mut reserved,
        "tej_last_collection_timestamp_seconds",
        "When tej's newest collection of the checks finished (Unix time)",
    );
    let took = family::<FloatGauge>(
        &mut registry,
        &mut reserved,
        "tej_collection_duration_seconds",
        "How long tej's newest collection of the checks took",
    );
    let status = family::<IntGauge>(
        &mut registry,
        &mut reserved,
        "tej_check_status",
        "Latest result of each check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
    );
    let run_at = family::<FloatGauge>(
        &mut registry,
        &mut reserved,
        "tej_calendar_last_run_timestamp_seconds",
        "When the last run of each calendar entry finished (Unix time)",
    );
    let run_took = family::<FloatGauge>(
        &mut registry,
        &mut reserved,
        "tej_calendar_last_run_duration_seconds",
        "How long the last run of each calendar entry took",
    );
    let run_status = family::<IntGauge>(
        &mut registry,
        &mut reserved,
        "tej_calendar_last_run_status",
        "Result of the last run of each calendar entry: 0 OK, 1 WARNING, 2 CRITICAL (or failed), 3 UNKNOWN",
    );
    let run_failed = family::<IntGauge>(
        &mut registry,
        &mut reserved,
        "tej_calendar_last_run_failed",
        "1 when the last run of each calendar entry failed, else 0",
    );

    let ok = snapshot.report.is_some() && snapshot.error.is_none();
    up.get_or_create(&Vec::new()).set(i64::from(ok));
    if let Some(at) = snapshot.collected_at {
        last.get_or_create(&Vec::new())
            .set(at.as_millisecond() as f64 / 1000.0);
        if let Some(secs) = snapshot.collection_seconds {
            took.get_or_create(&Vec::new()).set(secs);
        }
    }

    for (id, st) in &snapshot.entries {
        let labels = vec![("entry".to_string(), id.clone())];
        if let Some(done) = st.last_finished {
            run_at
                .get_or_create(&labels)
                .set(done.as_millisecond() as f64 / 1000.0);
            if let Some(start) = st.last_started.filter(|s| *s <= done) {
                run_took
                    .get_or_create(&labels)
                    .set(done.duration_since(start).as_secs_f64());
            }
        }
        let failed = st.last_error.is_some();
        if let Some(sev) = st.last_severity {
            let v = if failed {
                status_value(sev.worst(Severity::Critical))
            } else {
                status_value(sev)
            };
            run_status.get_or_create(&labels).set(v);
        } else if failed {
            run_status
                .get_or_create(&labels)
                .set(status_value(Severity::Critical));
        }
        if st.last_finished.is_some() || failed {
            run_failed.get_or_create(&labels).set(i64::from(failed));
        }
    }

    let Some(report) = &snapshot.report else {
        return registry;
    };
    let mut worst: BTreeMap<(String, String), Severity> = BTreeMap::new();
    for f in &report.findings {
        let e = worst
            .entry((f.check.clone(), f.target.clone()))
            .or_insert(f.severity);
        *e = e.worst(f.severity);
    }
    for ((check, target), sev) in worst {
        status
            .get_or_create(&vec![
                ("check".to_string(), check),
                ("target".to_string(), target),
            ])
            .set(status_value(sev));
    }
    let mut families: BTreeMap<String, Family<Labels, FloatGauge>> = BTreeMap::new();
    for f in &report.findings {
        for m in &f.metrics {
            let (mut name, factor) = exposed_name(&m.name, &m.unit);
            if reserved.contains(&name) {
                name = format!("tej_check_metric_{}", &name["tej_".len()..]);
            }
            let fam = families.entry(name.clone()).or_insert_with(|| {
                let fam = Family::<Labels, FloatGauge>::default();
                let unit = if m.unit.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (measured in {}, exposed in base units)",
                        unit_words(&m.unit)
                    )
                };
                registry.register(
                    name.clone(),
                    format!("The checks' {} metric{unit}", sanitize_name(&m.name)),
                    fam.clone(),
                );
                fam
            });
            let mut taken: BTreeSet<String> = ["check", "target"].map(String::from).into();
            let mut labels = vec![
                ("check".to_string(), f.check.clone()),
                ("target".to_string(), f.target.clone()),
            ];
            for (k, v) in &m.labels {
                let k = label_name(k, &taken);
                taken.insert(k.clone());
                labels.push((k, v.clone()));
            }
            fam.get_or_create(&labels).set(m.value * factor);
        }
    }
    registry
}

impl Snapshot {
    /// The snapshot of one command's report, finished at `at` (what `--prometheus-file`
    /// and `--output prometheus` expose).
    pub fn of_report(report: Report, at: jiff::Timestamp) -> Snapshot {
        Snapshot {
            report: Some(report),
            collected_at: Some(at),
            ..Snapshot::default()
        }
    }
}

/// The registry of `snapshot` as OpenMetrics text (ending in `# EOF`), each metric's
/// samples sorted (a family keeps its series in hash order; the same results always give
/// the same text, so textfiles and scrapes diff cleanly).
pub fn exposition(snapshot: &Snapshot) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail, and every name and label is valid by construction.
    let _ = encode(&mut s, &registry(snapshot));
    // Every sample is one line (label values have their newlines escaped), so sorting the
    // sample lines between two comment lines keeps the exposition valid.
    let mut out = String::with_capacity(s.len());
    let mut samples: Vec<&str> = Vec::new();
    for line in s.lines() {
        if line.starts_with('#') {
            samples.sort_unstable();
            for l in samples.drain(..) {
                out.push_str(l);
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
        } else {
            samples.push(line);
        }
    }
    samples.sort_unstable();
    for l in samples {
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tej_core::{Finding, Metric};

    fn snapshot(findings: Vec<Finding>) -> Snapshot {
        let mut r = Report::new("t");
        r.extend(findings);
        Snapshot {
            report: Some(r),
            collected_at: Some(jiff::Timestamp::from_second(1_700_000_000).unwrap()),
            collection_seconds: Some(1.5),
            ..Snapshot::default()
        }
    }

    /// The sample lines of `text` (no comments), each parsed into name, labels, value.
    /// A sample line: name, labels, value.
    type Sample = (String, Vec<(String, String)>, f64);

    fn samples(text: &str) -> Vec<Sample> {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, rest) = match line.find('{') {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => {
                    let (n, v) = line.split_once(' ').unwrap();
                    out.push((n.to_string(), Vec::new(), v.parse().unwrap()));
                    continue;
                }
            };
            let mut labels = Vec::new();
            let mut chars = rest.chars();
            loop {
                let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                assert_eq!(chars.next(), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars.next().unwrap() {
                        '\\' => match chars.next().unwrap() {
                            'n' => value.push('\n'),
                            c => value.push(c),
                        },
                        '"' => break,
                        '\n' => panic!("raw newline in {line:?}"),
                        c => value.push(c),
                    }
                }
                labels.push((key, value));
                match chars.next().unwrap() {
                    ',' => continue,
                    '}' => break,
                    c => panic!("unexpected {c:?} in {line:?}"),
                }
            }
            let value: String = chars.collect();
            out.push((name.to_string(), labels, value.trim().parse().unwrap()));
        }
        out
    }

    #[test]
    fn hostile_check_names_and_targets_are_escaped() {
        let check = "evil\"} tej_up 0\n# TYPE x counter\\";
        let target = "db:\"main\"\n\\n,x=\"y";
        let label = "a\"b\nc\\";
        let text = exposition(&snapshot(vec![
            Finding::new(check, Severity::Critical, "bad")
                .target(target)
                .metric(Metric::new("lag\"\n{x}", 3.0, "s").label("we\"ird\nkey", label))
                .metric(Metric::new("odd", 1.0, "%\n# TYPE tej_up counter\\")),
        ]));
        assert!(text.ends_with("# EOF\n"), "{text}");
        // One line per sample: nothing hostile started a line of its own.
        for line in text.lines() {
            assert!(
                line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line == "# EOF"
                    || line.starts_with("tej_"),
                "a line escaped its sample: {line:?}\n{text}"
            );
        }
        let s = samples(&text);
        let status = s.iter().find(|(n, _, _)| n == "tej_check_status").unwrap();
        assert_eq!(
            status.1,
            vec![
                ("check".to_string(), check.to_string()),
                ("target".to_string(), target.to_string())
            ]
        );
        assert_eq!(status.2, 2.0);
        let lag = s.iter().find(|(n, _, _)| n == "tej_lag_x_seconds").unwrap();
        assert_eq!(lag.1[2], ("we_ird_key".to_string(), label.to_string()));
        assert_eq!(lag.2, 3.0);
        let up: Vec<_> = s.iter().filter(|(n, _, _)| n == "tej_up").collect();
        assert_eq!(up.len(), 1, "{text}");
        assert_eq!(text.matches("# TYPE tej_up ").count(), 1, "{text}");
        assert_eq!(
            text,
            exposition(&snapshot(vec![
                Finding::new(check, Severity::Critical, "bad")
                    .target(target)
                    .metric(Metric::new("lag\"\n{x}", 3.0, "s").label("we\"ird\nkey", label))
                    .metric(Metric::new("odd", 1.0, "%\n# TYPE tej_up counter\\")),
            ])),
            "the same results give the same text"
        );
        assert!(!text.contains(".."), "one period ends each HELP: {text}");
        assert_eq!(up[0].2, 1.0);
    }

    #[test]
    fn metrics_in_base_units_and_worst_status_per_check() {
        let text = exposition(&snapshot(vec![
            Finding::ok("backups.recent", "fresh")
                .target("repo:/b")
                .metric(
                    Metric::new("backup_age_hours", 2.0, "h")
                        .label("database", "app")
                        .label("kind", "logical"),
                ),
            Finding::new("backups.recent", Severity::Warning, "not verified")
                .target("repo:/b")
                .metric(Metric::new("backup_age_hours", 0.5, "h").label("database", "other")),
            Finding::ok("postgres.connections", "fine")
                .target("db:main")
                .metric(Metric::new("connections_used_percent", 42.0, "%"))
                .metric(Metric::new("mean_exec_ms", 250.0, "ms"))
                .metric(Metric::new("requests_total", 7.0, "count"))
                .metric(Metric::new("check_status", 9.0, "")),
        ]));
        let s = samples(&text);
        let get = |name: &str, label: Option<(&str, &str)>| {
            s.iter()
                .find(|(n, l, _)| {
                    n == name && label.is_none_or(|(k, v)| l.iter().any(|(a, b)| a == k && b == v))
                })
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
                .2
        };
        assert_eq!(
            get("tej_backup_age_seconds", Some(("database", "app"))),
            7200.0
        );
        assert_eq!(
            get("tej_backup_age_seconds", Some(("database", "other"))),
            1800.0
        );
        assert_eq!(
            get("tej_check_status", Some(("check", "backups.recent"))),
            1.0
        );
        assert_eq!(get("tej_connections_used_ratio", None), 0.42);
        assert_eq!(get("tej_mean_exec_seconds", None), 0.25);
        assert_eq!(get("tej_requests", None), 7.0);
        assert_eq!(get("tej_check_metric_check_status", None), 9.0);
        assert_eq!(get("tej_last_collection_timestamp_seconds", None), 1.7e9);
        assert_eq!(
            text.matches("# TYPE tej_backup_age_seconds gauge\n")
                .count(),
            1,
            "{text}"
        );
        assert!(text.contains("# HELP tej_backup_age_seconds "), "{text}");
    }

    #[test]
    fn the_same_results_always_give_the_same_text_with_sorted_series() {
        let findings = || {
            (0..40)
                .map(|i| {
                    Finding::new("backups.recent", Severity::Ok, "ok")
                        .target(format!("repo:{i:02}"))
                        .metric(Metric::new("backup_age_hours", f64::from(i), "h"))
                })
                .collect::<Vec<_>>()
        };
        let a = exposition(&snapshot(findings()));
        let b = exposition(&snapshot(findings()));
        assert_eq!(a, b);
        let status: Vec<&str> = a
            .lines()
            .filter(|l| l.starts_with("tej_check_status{"))
            .collect();
        assert_eq!(status.len(), 40);
        assert!(status.is_sorted(), "{a}");
        assert!(status[0].contains("repo:00"), "{a}");
    }

    #[test]
    fn calendar_entries_and_a_failed_collection() {
        let t = |s| jiff::Timestamp::from_second(s).unwrap();
        let mut snap = Snapshot {
            error: Some("the configuration could not be read".into()),
            ..Snapshot::default()
        };
        snap.entries.insert(
            "daily-health".into(),
            EntryState {
                last_started: Some(t(1000)),
                last_finished: Some(t(1012)),
                last_severity: Some(Severity::Warning),
                ..EntryState::default()
            },
        );
        snap.entries.insert(
            "nightly-backup".into(),
            EntryState {
                last_started: Some(t(2000)),
                last_finished: Some(t(2001)),
                last_error: Some("no repository".into()),
                ..EntryState::default()
            },
        );
        let s = samples(&exposition(&snap));
        let get = |name: &str, entry: &str| {
            s.iter()
                .find(|(n, l, _)| n == name && l.iter().any(|(_, v)| v == entry))
                .map(|x| x.2)
        };
        assert_eq!(
            get("tej_calendar_last_run_timestamp_seconds", "daily-health"),
            Some(1012.0)
        );
        assert_eq!(
            get("tej_calendar_last_run_duration_seconds", "daily-health"),
            Some(12.0)
        );
        assert_eq!(
            get("tej_calendar_last_run_status", "daily-health"),
            Some(1.0)
        );
        assert_eq!(
            get("tej_calendar_last_run_failed", "daily-health"),
            Some(0.0)
        );
        assert_eq!(
            get("tej_calendar_last_run_status", "nightly-backup"),
            Some(2.0)
        );
        assert_eq!(
            get("tej_calendar_last_run_failed", "nightly-backup"),
            Some(1.0)
        );
        let up = s.iter().find(|(n, _, _)| n == "tej_up").unwrap();
        assert_eq!(up.2, 0.0);
        assert!(!s.iter().any(|(n, _, _)| n == "tej_check_status"));
    }

    #[test]
    fn history_from_the_daemon_state_and_run_files() {
        let d = tempfile::tempdir().unwrap();
        let t = |s| jiff::Timestamp::from_second(s).unwrap();
        let mut state = crate::daemon::DaemonState::default();
        state.entries.insert(
            "daily-health".into(),
            EntryState {
                last_finished: Some(t(100)),
                ..EntryState::default()
            },
        );
        StateFile::new(d.path().join("daemon-state.json"))
            .save(&state)
            .unwrap();
        let runs = RunHistory::new(d.path().join("runs"));
        runs.record(
            "daily-health",
            EntryState {
                last_finished: Some(t(200)),
                ..EntryState::default()
            },
        )
        .unwrap();
        runs.record(
            "weekly-audit",
            EntryState {
                last_finished: Some(t(50)),
                ..EntryState::default()
            },
        )
        .unwrap();
        let h = calendar_history(d.path());
        assert_eq!(h["daily-health"].last_finished, Some(t(200)));
        assert_eq!(h["weekly-audit"].last_finished, Some(t(50)));
        assert_eq!(h.len(), 2);
    }
}

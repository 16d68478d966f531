//! `GET /`: the status page a person reads at 03:00. Server-rendered HTML without
//! JavaScript (its Content-Security-Policy allows none), readable on a phone: the overall
//! state, every check worst first with its summary and (folded) detail, and the last run of
//! each calendar entry, times in IST. Every text is HTML-escaped; the snapshot it renders has
//! been redacted by [`super::Results::publish`], like every other body.

use super::metrics::Snapshot;
use crate::daemon::EntryState;
use std::fmt::Write as _;
use tej_core::{Finding, Severity};

/// The Content-Security-Policy the page is served with: no script, no external resource.
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `text` safe inside HTML text and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn severity_class(s: Severity) -> &'static str {
    match s {
        Severity::Ok => "ok",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
        Severity::Unknown => "unknown",
    }
}

/// Worst first: critical, unknown, warning, ok.
fn rank(s: Severity) -> u8 {
    match s {
        Severity::Critical => 0,
        Severity::Unknown => 1,
        Severity::Warning => 2,
        Severity::Ok => 3,
    }
}

fn ist(t: jiff::Timestamp) -> String {
    match jiff::tz::TimeZone::get(tej_core::calendar::IST) {
        Ok(zone) => t
            .to_zoned(zone)
            .strftime("%Y-%m-%d %H:%M:%S IST")
            .to_string(),
        Err(_) => t.to_string(),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:.5rem 1rem;line-height:1.4}\
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.5rem}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3rem .4rem;border-bottom:1px solid #ddd;vertical-align:top}\
.badge{display:inline-block;padding:.1rem .4rem;border-radius:.3rem;font-weight:600;color:#fff}\
.ok{background:#2e7d32}.warning{background:#b26a00}.critical{background:#c62828}.unknown{background:#616161}\
pre{white-space:pre-wrap;word-break:break-word;margin:.3rem 0}summary{cursor:pointer}\
@media (max-width:40rem){td:nth-child(3),th:nth-child(3){display:none}}";

fn badge(out: &mut String, s: Severity) {
    let _ = write!(
        out,
        "<span class=\"badge {0}\">{0}</span>",
        severity_class(s)
    );
}

fn check_row(out: &mut String, f: &Finding) {
    out.push_str("<tr><td>");
    badge(out, f.severity);
    let _ = write!(
        out,
        "</td><td>{}</td><td>{}</td><td>{}",
        escape(&f.check),
        escape(&f.target),
        escape(&f.summary)
    );
    if let Some(d) = f.detail.as_deref().filter(|d| !d.is_empty()) {
        let _ = write!(
            out,
            "<details><summary>detail</summary><pre>{}</pre></details>",
            escape(d)
        );
    }
    out.push_str("</td></tr>\n");
}

fn entry_row(out: &mut String, id: &str, st: &EntryState) {
    let _ = write!(out, "<tr><td>{}</td><td>", escape(id));
    match (st.last_error.as_deref(), st.last_severity) {
        (Some(_), _) => badge(out, Severity::Critical),
        (None, Some(s)) => badge(out, s),
        (None, None) => out.push_str("&ndash;"),
    }
    let finished = st.last_finished.map(ist).unwrap_or_else(|| "never".into());
    let took = match (st.last_started, st.last_finished) {
        (Some(a), Some(b)) if b >= a => format!("{:.0} s", b.duration_since(a).as_secs_f64()),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(&finished),
        escape(&took),
        escape(st.last_error.as_deref().unwrap_or(""))
    );
}

/// The page for `snapshot` (already redacted).
pub fn status_page(snapshot: &Snapshot) -> String {
    let overall = snapshot
        .report
        .as_ref()
        .map(|r| r.severity())
        .unwrap_or(Severity::Unknown);
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>tej: {}</title><style>{STYLE}</style></head><body>\n<h1>",
        severity_class(overall)
    );
    badge(&mut out, overall);
    let title = snapshot
        .report
        .as_ref()
        .map(|r| r.title.clone())
        .unwrap_or_else(|| "no results yet".into());
    let _ = write!(out, " {}</h1>\n<p>", escape(&title));
    match snapshot.collected_at {
        Some(at) => {
            let _ = write!(out, "Collected {}", escape(&ist(at)));
            if let Some(s) = snapshot.collection_seconds {
                let _ = write!(out, " in {s:.1} s");
            }
            out.push('.');
        }
        None => out.push_str("The checks have not finished a collection yet."),
    }
    out.push_str("</p>\n");
    if let Some(e) = &snapshot.error {
        let _ = writeln!(
            out,
            "<p><span class=\"badge critical\">collection failed</span> {} (the results below are the previous collection's)</p>",
            escape(e)
        );
    }
    if let Some(report) = &snapshot.report {
        let mut findings: Vec<&Finding> = report.findings.iter().collect();
        findings.sort_by_key(|f| (rank(f.severity), f.check.clone(), f.target.clone()));
        let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
        let _ = write!(
            out,
            "<h2>Checks</h2>\n<p>{} critical, {} unknown, {} warning, {} ok</p>\n\
<table><thead><tr><th>state</th><th>check</th><th>target</th><th>result</th></tr></thead><tbody>\n",
            count(Severity::Critical),
            count(Severity::Unknown),
            count(Severity::Warning),
            count(Severity::Ok)
        );
        for f in findings {
            check_row(&mut out, f);
        }
        out.push_str("</tbody></table>\n");
    }
    if !snapshot.entries.is_empty() {
        out.push_str(
            "<h2>Calendar: last runs</h2>\n<table><thead><tr><th>entry</th><th>result</th>\
<th>finished</th><th>took</th><th>error</th></tr></thead><tbody>\n",
        );
        for (id, st) in &snapshot.entries {
            entry_row(&mut out, id, st);
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str(
        "<p>Production maintenance window: Sunday 02:00&ndash;04:00 IST. \
Machine-readable: <a href=\"/metrics\">/metrics</a>, <a href=\"/api/v1/checks\">/api/v1/checks</a>.</p>\n\
</body></html>\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tej_core::Report;

    fn snapshot() -> Snapshot {
        let mut report = Report::new("daily health check");
        report.push(Finding::ok("postgres.connections", "12 of 100 connections").target("db:main"));
        report.push(
            Finding::new(
                "backups.recent",
                Severity::Critical,
                "no backup in 31 h <script>alert(1)</script>",
            )
            .target("repo:/var/lib/tej/repo")
            .detail("newest: \"2025-01-15\" & older"),
        );
        let at: jiff::Timestamp = "2025-01-15T21:30:00Z".parse().unwrap();
        let mut entries = BTreeMap::new();
        entries.insert(
            "nightly-backup".to_string(),
            EntryState {
                last_started: Some("2025-01-15T20:30:00Z".parse().unwrap()),
                last_finished: Some("2025-01-15T20:31:05Z".parse().unwrap()),
                last_severity: Some(Severity::Ok),
                ..EntryState::default()
            },
        );
        Snapshot {
            report: Some(report),
            collected_at: Some(at),
            collection_seconds: Some(2.5),
            error: None,
            entries,
        }
    }

    #[test]
    fn the_page_shows_the_worst_first_escaped_with_times_in_ist() {
        let page = status_page(&snapshot());
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("<title>tej: critical</title>"), "{page}");
        // Worst first.
        let critical = page.find("backups.recent").unwrap();
        let ok = page.find("postgres.connections").unwrap();
        assert!(critical < ok, "{page}");
        // Everything from the checks is text, never markup.
        assert!(!page.contains("<script>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(
            page.contains("newest: &quot;2025-01-15&quot; &amp; older"),
            "{page}"
        );
        assert!(
            page.contains("1 critical, 0 unknown, 0 warning, 1 ok"),
            "{page}"
        );
        // 21:30 UTC is 03:00 IST the next day.
        assert!(
            page.contains("Collected 2025-01-16 03:00:00 IST in 2.5 s."),
            "{page}"
        );
        assert!(
            page.contains("nightly-backup") && page.contains("65 s"),
            "{page}"
        );
        assert!(page.contains("<meta name=\"viewport\""));
    }

    #[test]
    fn before_the_first_collection_the_page_says_so() {
        let page = status_page(&Snapshot::default());
        assert!(page.contains("<title>tej: unknown</title>"), "{page}");
        assert!(page.contains("not finished a collection yet"), "{page}");
        let failed = Snapshot {
            error: Some("cannot reach db:main".into()),
            ..snapshot()
        };
        assert!(status_page(&failed).contains("collection failed</span> cannot reach db:main"));
    }

    #[test]
    fn escape_covers_every_html_special_character() {
        assert_eq!(
            escape("<a href='x'>\"&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&quot;&lt;/a&gt;"
        );
    }
}

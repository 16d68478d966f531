//! Notifications of warnings and criticals to a Slack-compatible webhook.
//!
//! The payload is `{"text": ..., "blocks": [...]}` (Slack, Mattermost and Rocket.Chat
//! accept `text`; Slack also renders the blocks). The webhook URL is a [`Secret`]:
//! it never appears in errors, logs or `Debug`. Transient failures (connection
//! errors, timeouts, HTTP 429 and 5xx) are retried with [`tej_core::retry()`]; a
//! notification that still fails is returned as an error and, through
//! [`notify_report`], added to the report as a finding: never silently dropped.

use crate::error::{Result, RunbookError};
use async_trait::async_trait;
use serde::Serialize;
use std::time::Duration;
use tej_core::{Backoff, Finding, Redactor, Report, Secret, Severity, retry};

/// Where reports go when they need attention.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Sends `report` if it is bad enough; says whether it was sent.
    async fn notify(&self, report: &Report) -> Result<NotifyOutcome>;

    /// Says that `report` is fine again after a run at `previous`, if `previous` was bad
    /// enough to have been sent and `report` is not; says whether it was sent.
    async fn notify_recovery(&self, report: &Report, previous: Severity) -> Result<NotifyOutcome>;
}

/// What [`Notifier::notify`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum NotifyOutcome {
    /// Delivered after this many attempts.
    Sent {
        /// Attempts, including the successful one.
        attempts: u32,
    },
    /// The report was below the notification threshold.
    BelowThreshold,
}

/// How the webhook notifier behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookOptions {
    /// Reports at least this bad are sent (`Warning`: warnings, unknowns and criticals).
    pub min_severity: Severity,
    /// Retry policy for transient failures.
    pub backoff: Backoff,
    /// Time limit for one HTTP request.
    pub timeout: Duration,
    /// Where the report comes from (host name), shown in the message.
    pub source: Option<String>,
    /// At most this many findings are listed; the rest are counted.
    pub max_findings: usize,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            min_severity: Severity::Warning,
            backoff: Backoff::default(),
            timeout: Duration::from_secs(10),
            source: None,
            max_findings: 15,
        }
    }
}

/// Posts reports to a Slack-compatible incoming webhook.
pub struct WebhookNotifier {
    client: reqwest::Client,
    url: Secret,
    redactor: Redactor,
    opts: WebhookOptions,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("url", &self.url)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

fn escape_mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn emoji(s: Severity) -> &'static str {
    match s {
        Severity::Ok => ":white_check_mark:",
        Severity::Warning => ":warning:",
        Severity::Critical => ":red_circle:",
        Severity::Unknown => ":grey_question:",
    }
}

/// The message text for a report: a headline and the problems, worst first.
pub fn report_text(report: &Report, opts: &WebhookOptions) -> String {
    let (ok, warn, crit, unknown) = report.counts();
    let sev = report.severity();
    let from = opts
        .source
        .as_deref()
        .map(|s| format!(" on {}", escape_mrkdwn(s)))
        .unwrap_or_default();
    let mut text = format!(
        "{} *{}* {}{from}: {crit} critical, {warn} warning, {unknown} unknown, {ok} ok",
        emoji(sev),
        sev.label(),
        escape_mrkdwn(&report.title)
    );
    let problems = report.problems();
    for f in problems.iter().take(opts.max_findings) {
        let target = if f.target.is_empty() {
            String::new()
        } else {
            format!(" [{}]", escape_mrkdwn(&f.target))
        };
        text.push_str(&format!(
            "\n• {} `{}`{target}: {}",
            f.severity.label(),
            escape_mrkdwn(&f.check),
            escape_mrkdwn(&f.summary)
        ));
    }
    if problems.len() > opts.max_findings {
        text.push_str(&format!(
            "\n… and {} more",
            problems.len() - opts.max_findings
        ));
    }
    text
}

/// The message text saying a run is fine again: `:white_check_mark: *RECOVERED* title: ...`.
pub fn recovery_text(report: &Report, previous: Severity, opts: &WebhookOptions) -> String {
    let (ok, warn, _, _) = report.counts();
    let from = opts
        .source
        .as_deref()
        .map(|s| format!(" on {}", escape_mrkdwn(s)))
        .unwrap_or_default();
    format!(
        "{} *RECOVERED* {}{from}: {} now ({ok} ok, {warn} warning); the previous run was {}",
        emoji(Severity::Ok),
        escape_mrkdwn(&report.title),
        report.severity().label(),
        previous.label()
    )
}

/// `value` with every string in it passed through `redactor`.
fn redact_strings(value: serde_json::Value, redactor: &Redactor) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(redactor.redact(&s)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| redact_strings(v, redactor))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, redact_strings(v, redactor)))
                .collect(),
        ),
        other => other,
    }
}

fn text_payload(text: String) -> serde_json::Value {
    serde_json::json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}}
        ]
    })
}

/// The JSON payload for a report.
pub fn slack_payload(report: &Report, opts: &WebhookOptions) -> serde_json::Value {
    let text = report_text(report, opts);
    // A section block holds at most 3000 characters.
    let block_text: String = if text.chars().count() > 3000 {
        let mut t: String = text.chars().take(2990).collect();
        t.push_str("\n…");
        t
    } else {
        text.clone()
    };
    serde_json::json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": block_text}}
        ]
    })
}

impl WebhookNotifier {
    /// A notifier posting to `url`.
    pub fn new(url: Secret, opts: WebhookOptions) -> Result<WebhookNotifier> {
        let client = reqwest::Client::builder()
            .timeout(opts.timeout)
            .build()
            .map_err(|e| RunbookError::NotifyTransport(e.without_url().to_string()))?;
        let mut redactor = Redactor::new();
        redactor.add(&url);
        Ok(WebhookNotifier {
            client,
            url,
            redactor,
            opts,
        })
    }

    /// Also masks the secrets `redactor` knows (a configuration's, see
    /// [`crate::serve::config_redactor`]) in everything posted; the webhook URL stays masked.
    pub fn with_redactor(mut self, mut redactor: Redactor) -> WebhookNotifier {
        redactor.add(&self.url);
        self.redactor = redactor;
        self
    }

    /// Posts `payload` with every string in it redacted, retrying transient failures;
    /// returns the attempts made.
    pub async fn post(&self, payload: &serde_json::Value) -> Result<u32> {
        let payload = &redact_strings(payload.clone(), &self.redactor);
        let mut attempts = 0;
        retry(
            self.opts.backoff,
            |n| {
                attempts = n;
                self.post_once(payload)
            },
            |n, e| tracing::warn!(attempt = n, error = %e, "webhook notification failed, retrying"),
        )
        .await?;
        Ok(attempts)
    }

    async fn post_once(&self, payload: &serde_json::Value) -> Result<()> {
        let resp = self
            .client
            .post(self.url.expose())
            .json(payload)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(RunbookError::NotifyRejected {
                status: status.as_u16(),
            })
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> RunbookError {
        if e.is_timeout() {
            return RunbookError::Timeout {
                what: "webhook request".into(),
                after: self.opts.timeout,
            };
        }
        let e = e.without_url();
        // The chain may still quote the URL (a redirect target, a DNS name); redact it.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        RunbookError::NotifyTransport(self.redactor.redact(&msg))
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn notify(&self, report: &Report) -> Result<NotifyOutcome> {
        if report.severity() < self.opts.min_severity {
            return Ok(NotifyOutcome::BelowThreshold);
        }
        let attempts = self.post(&slack_payload(report, &self.opts)).await?;
        Ok(NotifyOutcome::Sent { attempts })
    }

    async fn notify_recovery(&self, report: &Report, previous: Severity) -> Result<NotifyOutcome> {
        let min = self.opts.min_severity;
        if previous < min || report.severity() >= min {
            return Ok(NotifyOutcome::BelowThreshold);
        }
        let text = recovery_text(report, previous, &self.opts);
        let attempts = self.post(&text_payload(text)).await?;
        Ok(NotifyOutcome::Sent { attempts })
    }
}

/// Sends `report` the way every run does (the daemon's, and `tej run` under cron, systemd
/// or Kubernetes): a report that needs attention is sent; one that does not, after a run
/// at `previous` that did, is sent as a recovery. A failure is added to the report as a
/// `notify.webhook` finding and returned.
pub async fn notify_transition<N: Notifier + ?Sized>(
    notifier: &N,
    previous: Option<Severity>,
    report: &mut Report,
) -> Result<NotifyOutcome> {
    let sent = match notifier.notify(report).await {
        Ok(NotifyOutcome::BelowThreshold) => match previous {
            Some(p) => notifier.notify_recovery(report, p).await,
            None => Ok(NotifyOutcome::BelowThreshold),
        },
        other => other,
    };
    match sent {
        Ok(o) => Ok(o),
        Err(e) => {
            tracing::error!(error = %e, report = %report.title, "notification failed");
            report.push(notify_failure_finding(&e));
            Err(e)
        }
    }
}

/// The finding that records a failed notification (`notify.webhook`, warning).
pub fn notify_failure_finding(err: &RunbookError) -> Finding {
    Finding::new(
        "notify.webhook",
        Severity::Warning,
        format!("notification not delivered: {err}"),
    )
    .detail("the report above was NOT delivered to the webhook; read it here")
}

/// Sends `report` through `notifier`; a failure is added to the report as a
/// `notify.webhook` finding and returned.
pub async fn notify_report<N: Notifier + ?Sized>(
    notifier: &N,
    report: &mut Report,
) -> Result<NotifyOutcome> {
    match notifier.notify(report).await {
        Ok(o) => Ok(o),
        Err(e) => {
            tracing::error!(error = %e, report = %report.title, "notification failed");
            report.push(notify_failure_finding(&e));
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone)]
    struct Request {
        path: String,
        content_type: String,
        body: serde_json::Value,
    }

    /// A tiny HTTP server on 127.0.0.1 answering with `statuses` in turn (the last repeats).
    fn server(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<Request>>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for (i, conn) in l.incoming().enumerate() {
                let Ok(mut conn) = conn else { continue };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let (mut len, mut ct) = (0usize, String::new());
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    match k.to_ascii_lowercase().as_str() {
                        "content-length" => len = v.trim().parse().unwrap(),
                        "content-type" => ct = v.trim().to_string(),
                        _ => {}
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                log2.lock().unwrap().push(Request {
                    path,
                    content_type: ct,
                    body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                });
                let code = statuses[i.min(statuses.len() - 1)];
                let _ = write!(
                    conn,
                    "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        (
            format!("http://127.0.0.1:{port}/services/T0/B0/s3cr3tT0ken"),
            log,
        )
    }

    fn opts() -> WebhookOptions {
        WebhookOptions {
            backoff: Backoff {
                max_attempts: 3,
                initial: Duration::from_millis(10),
                max_delay: Duration::from_millis(40),
                factor: 2.0,
                jitter: false,
            },
            timeout: Duration::from_secs(10),
            source: Some("web-1".into()),
            ..WebhookOptions::default()
        }
    }

    fn bad_report() -> Report {
        let mut r = Report::new("daily-health");
        r.push(Finding::ok("postgres.up", "up"));
        r.push(Finding::new("disk.usage", Severity::Critical, "/var is 95% <full>").target("/var"));
        r.push(Finding::new(
            "redis.memory",
            Severity::Warning,
            "80% of maxmemory",
        ));
        r
    }

    #[tokio::test]
    async fn posts_slack_json_with_summary() {
        let (url, log) = server(vec![200]);
        let n = WebhookNotifier::new(Secret::new(url), opts()).unwrap();
        let out = n.notify(&bad_report()).await.unwrap();
        assert_eq!(out, NotifyOutcome::Sent { attempts: 1 });
        let reqs = log.lock().unwrap().clone();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].path, "/services/T0/B0/s3cr3tT0ken");
        assert_eq!(reqs[0].content_type, "application/json");
        let text = reqs[0].body["text"].as_str().unwrap();
        assert!(text.starts_with(":red_circle: *CRITICAL* daily-health on web-1: 1 critical, 1 warning, 0 unknown, 1 ok"), "{text}");
        // Worst first, mrkdwn escaped, OK findings not listed.
        let crit = text
            .find("CRITICAL `disk.usage` [/var]: /var is 95% &lt;full&gt;")
            .unwrap();
        let warn = text.find("WARNING `redis.memory`").unwrap();
        assert!(crit < warn);
        assert!(!text.contains("postgres.up"));
        assert_eq!(
            reqs[0].body["blocks"][0]["text"]["text"].as_str().unwrap(),
            text
        );
    }

    /// A finding quoting a configured secret (another session's application name, a server's
    /// reply) is posted with the secret masked, in every string of the payload.
    #[tokio::test]
    async fn configured_secrets_never_reach_the_webhook() {
        let (url, log) = server(vec![200]);
        let mut secrets = Redactor::new();
        secrets.add(&Secret::new("notify-Pa55word"));
        let n = WebhookNotifier::new(Secret::new(url), opts())
            .unwrap()
            .with_redactor(secrets);
        let mut r = Report::new("daily-health");
        r.push(Finding::new(
            "postgres.idle_in_transaction",
            Severity::Critical,
            "pid 7 (application \"notify-Pa55word\") idle in transaction",
        ));
        n.notify(&r).await.unwrap();
        let body = log.lock().unwrap()[0].body.to_string();
        assert!(body.contains("idle in transaction"), "{body}");
        assert!(!body.contains("notify-Pa55word"), "{body}");
    }

    #[tokio::test]
    async fn ok_report_is_not_sent() {
        let (url, log) = server(vec![200]);
        let n = WebhookNotifier::new(Secret::new(url), opts()).unwrap();
        let mut r = Report::new("daily-health");
        r.push(Finding::ok("a", "fine"));
        assert_eq!(n.notify(&r).await.unwrap(), NotifyOutcome::BelowThreshold);
        assert!(log.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_good_report_after_a_bad_one_is_sent_as_a_recovery() {
        let (url, log) = server(vec![200]);
        let n = WebhookNotifier::new(Secret::new(url), opts()).unwrap();
        let mut ok = Report::new("daily-health");
        ok.push(Finding::ok("a", "fine"));
        // Never bad before, or bad below the threshold: nothing.
        assert_eq!(
            notify_transition(&n, None, &mut ok).await.unwrap(),
            NotifyOutcome::BelowThreshold
        );
        assert_eq!(
            notify_transition(&n, Some(Severity::Ok), &mut ok)
                .await
                .unwrap(),
            NotifyOutcome::BelowThreshold
        );
        assert!(log.lock().unwrap().is_empty());
        assert_eq!(
            notify_transition(&n, Some(Severity::Critical), &mut ok)
                .await
                .unwrap(),
            NotifyOutcome::Sent { attempts: 1 }
        );
        let reqs = log.lock().unwrap().clone();
        assert_eq!(reqs.len(), 1);
        let text = reqs[0].body["text"].as_str().unwrap();
        assert!(
            text.starts_with(":white_check_mark: *RECOVERED* daily-health on web-1: OK now"),
            "{text}"
        );
        assert!(text.contains("the previous run was CRITICAL"), "{text}");
        // Still bad: the report itself, not a recovery.
        let mut bad = bad_report();
        let (url, log) = server(vec![200]);
        let n = WebhookNotifier::new(Secret::new(url), opts()).unwrap();
        notify_transition(&n, Some(Severity::Critical), &mut bad)
            .await
            .unwrap();
        let reqs = log.lock().unwrap().clone();
        assert!(
            reqs[0].body["text"]
                .as_str()
                .unwrap()
                .starts_with(":red_circle:")
        );
    }

    #[tokio::test]
    async fn retries_500_then_succeeds() {
        let (url, log) = server(vec![500, 200]);
        let n = WebhookNotifier::new(Secret::new(url), opts()).unwrap();
        assert_eq!(
            n.notify(&bad_report()).await.unwrap(),
            NotifyOutcome::Sent { attempts: 2 }
        );
        assert_eq!(log.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn always_failing_webhook_is_reported_not_dropped() {
        let (url, log) = server(vec![503]);
        let n = WebhookNotifier::new(Secret::new(url.clone()), opts()).unwrap();
        let mut report = bad_report();
        let err = notify_report(&n, &mut report).await.unwrap_err();
        assert!(
            matches!(err, RunbookError::NotifyRejected { status: 503 }),
            "{err}"
        );
        assert_eq!(log.lock().unwrap().len(), 3, "max_attempts");
        let last = report.findings.last().unwrap();
        assert_eq!(last.check, "notify.webhook");
        assert_eq!(last.severity, Severity::Warning);
        assert!(last.summary.contains("503"));
        // A client error is not retried.
        let (url4, log4) = server(vec![404]);
        let n = WebhookNotifier::new(Secret::new(url4), opts()).unwrap();
        assert!(matches!(
            n.notify(&bad_report()).await,
            Err(RunbookError::NotifyRejected { status: 404 })
        ));
        assert_eq!(log4.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn unreachable_webhook_never_shows_the_url() {
        // Bind then drop: nothing listens on that port any more.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/services/T0/B0/s3cr3tT0ken");
        let n = WebhookNotifier::new(Secret::new(url), opts()).unwrap();
        let mut report = bad_report();
        let err = notify_report(&n, &mut report).await.unwrap_err();
        assert!(matches!(err, RunbookError::NotifyTransport(_)), "{err:?}");
        for text in [
            err.to_string(),
            format!("{err:?}"),
            format!("{n:?}"),
            serde_json::to_string(&report).unwrap(),
        ] {
            assert!(!text.contains("s3cr3tT0ken"), "{text}");
        }
        assert_eq!(report.findings.last().unwrap().check, "notify.webhook");
    }

    #[tokio::test]
    async fn long_reports_are_truncated() {
        let mut r = Report::new("t");
        for i in 0..40 {
            r.push(Finding::new(
                format!("c{i}"),
                Severity::Warning,
                "x".repeat(200),
            ));
        }
        let p = slack_payload(&r, &WebhookOptions::default());
        let text = p["text"].as_str().unwrap();
        assert!(
            text.ends_with("… and 25 more"),
            "{}",
            &text[text.len() - 40..]
        );
        assert!(
            p["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 3000
        );
    }

    #[tokio::test]
    async fn mock_notifier_failure_lands_in_report() {
        let mut m = MockNotifier::new();
        m.expect_notify()
            .times(1)
            .returning(|_| Err(RunbookError::NotifyRejected { status: 502 }));
        let mut r = bad_report();
        assert!(notify_report(&m, &mut r).await.is_err());
        assert_eq!(r.findings.len(), 4);
    }
}

//! Certificate renewal: `certbot renew`, `nginx -t`, reload, probe again.

use super::probe::{TlsProbe, TlsProbeOptions, probe_tls};
use crate::error::Result;
use serde::Serialize;
use std::time::Duration;
use tej_core::{CommandRunner, CommandSpec, Finding, Severity, run_checked};

/// How nginx is reloaded after a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReloadMethod {
    /// `systemctl reload nginx` (the runbook's post-hook).
    #[default]
    Systemctl,
    /// `nginx -s reload`.
    NginxSignal,
}

/// An endpoint to probe after the renewal, with the file it must then serve.
#[derive(Debug, Clone, PartialEq)]
pub struct RenewTarget {
    /// `host:port`.
    pub endpoint: String,
    /// Probe options; set `cert_file` to the renewed certificate (`fullchain.pem`).
    pub probe: TlsProbeOptions,
}

/// How a renewal runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RenewOptions {
    /// `certbot renew --dry-run`: test renewal; nginx is tested but not reloaded.
    pub dry_run: bool,
    /// Only these certificates (`--cert-name`); all when empty.
    pub cert_names: Vec<String>,
    /// certbot program.
    pub certbot: String,
    /// nginx program.
    pub nginx: String,
    /// How nginx is reloaded.
    pub reload: ReloadMethod,
    /// Limit for each command.
    pub timeout: Duration,
    /// Endpoints to probe afterwards.
    pub targets: Vec<RenewTarget>,
}

impl Default for RenewOptions {
    fn default() -> Self {
        RenewOptions {
            dry_run: false,
            cert_names: Vec::new(),
            certbot: "certbot".into(),
            nginx: "nginx".into(),
            reload: ReloadMethod::Systemctl,
            timeout: Duration::from_secs(600),
            targets: Vec::new(),
        }
    }
}

/// What a renewal did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenewReport {
    /// Was it a dry run?
    pub dry_run: bool,
    /// certbot's output (stdout).
    pub certbot_output: String,
    /// `nginx -t` passed.
    pub config_test_ok: bool,
    /// nginx was reloaded.
    pub reloaded: bool,
    /// Probes after the reload.
    pub probes: Vec<TlsProbe>,
    /// Verdicts.
    pub findings: Vec<Finding>,
}

impl RenewReport {
    /// The worst finding's severity.
    pub fn severity(&self) -> Severity {
        self.findings
            .iter()
            .fold(Severity::Ok, |a, f| a.worst(f.severity))
    }
}

/// Runs `certbot renew` (or `--dry-run`), `nginx -t`, reloads nginx and probes each
/// target to confirm it serves the renewed certificate file.
/// A failing certbot is an error; a failing config test stops before the reload and is a finding.
pub async fn renew_certificates(
    runner: &dyn CommandRunner,
    opts: &RenewOptions,
) -> Result<RenewReport> {
    let mut certbot = CommandSpec::new(&opts.certbot)
        .args(["renew", "--non-interactive"])
        .timeout(opts.timeout);
    if opts.dry_run {
        certbot = certbot.arg("--dry-run");
    }
    for n in &opts.cert_names {
        certbot = certbot.arg("--cert-name").arg(n);
    }
    let out = run_checked(runner, certbot).await?;
    let mut report = RenewReport {
        dry_run: opts.dry_run,
        certbot_output: out.stdout_text(),
        config_test_ok: false,
        reloaded: false,
        probes: Vec::new(),
        findings: vec![Finding::ok(
            "tls.renew",
            if opts.dry_run {
                "certbot renew --dry-run succeeded"
            } else {
                "certbot renew succeeded"
            },
        )],
    };
    let test = CommandSpec::new(&opts.nginx)
        .arg("-t")
        .timeout(opts.timeout);
    match run_checked(runner, test).await {
        Ok(_) => report.config_test_ok = true,
        Err(e) => {
            report.findings.push(Finding::new(
                "tls.nginx_config",
                Severity::Critical,
                format!("nginx -t failed, nginx was not reloaded: {e}"),
            ));
            return Ok(report);
        }
    }
    if !opts.dry_run {
        let reload = match opts.reload {
            ReloadMethod::Systemctl => CommandSpec::new("systemctl").args(["reload", "nginx"]),
            ReloadMethod::NginxSignal => CommandSpec::new(&opts.nginx).args(["-s", "reload"]),
        }
        .timeout(opts.timeout);
        match run_checked(runner, reload).await {
            Ok(_) => report.reloaded = true,
            Err(e) => {
                report.findings.push(Finding::new(
                    "tls.nginx_reload",
                    Severity::Critical,
                    format!("reloading nginx failed: {e}"),
                ));
                return Ok(report);
            }
        }
    }
    for t in &opts.targets {
        let p = probe_tls(&t.endpoint, &t.probe).await?;
        report.findings.extend(p.findings.iter().cloned());
        report.probes.push(p);
    }
    Ok(report)
}

/// [`renew_certificates`] as a [`tej_core::Step`], so it runs under an
/// [`tej_core::Executor`] with dry-run planning, the guard and the audit log.
pub struct RenewStep {
    runner: std::sync::Arc<dyn CommandRunner>,
    options: RenewOptions,
}

impl std::fmt::Debug for RenewStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenewStep")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RenewStep {
    /// A renewal step running its commands through `runner`.
    pub fn new(runner: std::sync::Arc<dyn CommandRunner>, options: RenewOptions) -> RenewStep {
        RenewStep { runner, options }
    }
}

#[async_trait::async_trait]
impl tej_core::Step for RenewStep {
    fn name(&self) -> String {
        "tls-renew".into()
    }

    fn risk(&self) -> tej_core::Risk {
        tej_core::Risk::Mutating
    }

    fn target(&self) -> String {
        if self.options.cert_names.is_empty() {
            "all certificates".into()
        } else {
            self.options.cert_names.join(", ")
        }
    }

    async fn plan(&self) -> Result<tej_core::Plan, tej_core::StepError> {
        let o = &self.options;
        let mut actions = vec![format!(
            "{} renew --non-interactive{}",
            o.certbot,
            if o.dry_run { " --dry-run" } else { "" }
        )];
        actions.push(format!("{} -t", o.nginx));
        if !o.dry_run {
            actions.push(match o.reload {
                ReloadMethod::Systemctl => "systemctl reload nginx".into(),
                ReloadMethod::NginxSignal => format!("{} -s reload", o.nginx),
            });
        }
        actions.extend(
            o.targets
                .iter()
                .map(|t| format!("probe {} and compare with the certificate file", t.endpoint)),
        );
        Ok(tej_core::Plan::of(self, actions))
    }

    async fn apply(&self) -> Result<tej_core::StepOutput, tej_core::StepError> {
        let r = renew_certificates(self.runner.as_ref(), &self.options).await?;
        let summary = format!(
            "certbot renewed{}; nginx {}; {} endpoint(s) probed: {}",
            if r.dry_run { " (dry run)" } else { "" },
            if r.reloaded {
                "reloaded"
            } else if r.config_test_ok {
                "tested"
            } else {
                "config test failed"
            },
            r.probes.len(),
            r.severity()
        );
        Ok(tej_core::StepOutput {
            summary,
            findings: r.findings.clone(),
            data: serde_json::to_value(&r).unwrap_or_default(),
        })
    }
}

//! `tej tls check|renew`.

use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::PathBuf;
use tej_core::{Config, Report, TokioCommandRunner};
use tej_secrets::{
    ExpiryThresholds, RenewOptions, RenewTarget, TlsProbeOptions, probe_tls, renew_certificates,
    tls_report,
};

/// Endpoints and options for a probe: from the command line, else every `[[tls]]` in tej.toml.
pub fn targets(
    cfg: &Config,
    endpoints: &[String],
    ca: Option<PathBuf>,
    cert_file: Option<PathBuf>,
) -> Result<Vec<(String, TlsProbeOptions)>> {
    if !endpoints.is_empty() {
        return Ok(endpoints
            .iter()
            .map(|e| {
                let from_cfg = cfg.tls.iter().find(|t| &t.endpoint == e);
                (
                    e.clone(),
                    probe_options(from_cfg, ca.clone(), cert_file.clone()),
                )
            })
            .collect());
    }
    if cfg.tls.is_empty() {
        bail!("no endpoint: pass HOST:PORT or add [[tls]] endpoint = \"host:443\" to tej.toml");
    }
    Ok(cfg
        .tls
        .iter()
        .map(|t| {
            (
                t.endpoint.clone(),
                probe_options(Some(t), ca.clone(), cert_file.clone()),
            )
        })
        .collect())
}

fn probe_options(
    t: Option<&tej_core::config::TlsEndpointConfig>,
    ca: Option<PathBuf>,
    cert_file: Option<PathBuf>,
) -> TlsProbeOptions {
    let mut o = TlsProbeOptions {
        ca_file: ca,
        ..TlsProbeOptions::default()
    };
    if let Some(t) = t {
        o.server_name = t.server_name.clone();
        if o.ca_file.is_none() {
            o.ca_file = t.ca_file.clone();
        }
        o.cert_file = t.cert_file.clone();
        o.thresholds = ExpiryThresholds {
            warn_days: f64::from(t.warn_days),
            crit_days: f64::from(t.crit_days),
            ..ExpiryThresholds::default()
        };
    }
    if cert_file.is_some() {
        o.cert_file = cert_file;
    }
    o
}

/// Probes every target; a probe that cannot run at all becomes an Unknown finding.
pub async fn check(
    out: &mut dyn Write,
    targets: Vec<(String, TlsProbeOptions)>,
    format: OutputFormat,
) -> Result<Report> {
    let mut probes = Vec::new();
    let mut report = Report::new("tls check");
    for (endpoint, opts) in targets {
        match probe_tls(&endpoint, &opts).await {
            Ok(p) => probes.push(p),
            Err(e) => report.push(
                tej_core::Finding::new(
                    "tls.probe",
                    tej_core::Severity::Unknown,
                    format!("cannot probe {endpoint}: {e}"),
                )
                .target(endpoint),
            ),
        }
    }
    if format == OutputFormat::Json {
        for p in &probes {
            json_line(out, "tls_probe", p)?;
        }
    }
    let mut full = tls_report(&probes);
    full.extend(report.findings);
    Ok(full)
}

/// `certbot renew`, `nginx -t`, reload, probe again.
pub async fn renew(
    out: &mut dyn Write,
    cfg: &Config,
    dry_run: bool,
    format: OutputFormat,
) -> Result<Report> {
    let opts = RenewOptions {
        dry_run,
        targets: cfg
            .tls
            .iter()
            .map(|t| RenewTarget {
                endpoint: t.endpoint.clone(),
                probe: probe_options(Some(t), None, None),
            })
            .collect(),
        ..RenewOptions::default()
    };
    let rep = renew_certificates(&TokioCommandRunner, &opts)
        .await
        .context("renew certificates")?;
    if format == OutputFormat::Json {
        json_line(out, "tls_renewal", &rep)?;
    }
    let mut report = Report::new(if dry_run {
        "tls renew --dry-run"
    } else {
        "tls renew"
    });
    report.extend(rep.findings.iter().cloned());
    Ok(report)
}

/// `tej tls`.
#[derive(Debug, clap::Subcommand)]
pub enum TlsCmd {
    /// Probe HOST:PORT (default: every [[tls]] in tej.toml): chain, expiry, hostname, validity.
    Check {
        /// Endpoints.
        endpoints: Vec<String>,
        /// Trust only this CA (PEM) instead of the system roots.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The certificate file the server should serve (catches a renewal never reloaded).
        #[arg(long)]
        cert_file: Option<PathBuf>,
    },
    /// certbot renew, nginx -t, reload nginx, probe again.
    Renew {
        /// certbot renew --dry-run; nginx is not reloaded.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs `tej tls ...`; the report's Nagios exit code.
pub fn dispatch(ctx: &crate::context::Context, out: &mut dyn Write, cmd: TlsCmd) -> Result<i32> {
    let format = ctx.format();
    let cfg = ctx.config()?;
    let report = match cmd {
        TlsCmd::Check {
            endpoints,
            ca,
            cert_file,
        } => {
            let targets = targets(cfg, &endpoints, ca, cert_file)?;
            ctx.block_on(check(out, targets, format))??
        }
        TlsCmd::Renew { dry_run } => ctx.block_on(renew(out, cfg, dry_run, format))??,
    };
    ctx.finish_report(out, &report)
}

//! # Certificate check
//!
//! Automates the runbook's **"Security Maintenance › SSL Certificate Management › Certificate
//! Monitoring"**: `openssl s_client -connect skillswap.in:443 | openssl x509 -noout -dates`,
//! then "Alert if < 30 days". Each endpoint gets a real TLS handshake with SNI; the served
//! chain is checked (trusted, hostname covered) and the earliest expiry in the chain is compared
//! with the warning (30 days) and critical (7 days) thresholds, which also shrink for
//! short-lived certificates (Let's Encrypt renews at a third of the lifetime left).
//!
//! Library calls: [`tej_secrets::probe_tls`] and [`tej_secrets::tls_report`].
//!
//! ## Run it
//!
//! ```text
//! cargo run -p tej-examples --bin certificate_check -- --config tej.toml   # every [[tls]]
//! cargo run -p tej-examples --bin certificate_check -- skillswap.in:443 api.skillswap.in:443
//! cargo run -p tej-examples --bin certificate_check -- --warn-days 30 --crit-days 7 skillswap.in:443
//! cargo run -p tej-examples --bin certificate_check -- --ca ca.pem --server-name localhost 127.0.0.1:8443
//! ```
//!
//! ## What it prints
//!
//! One line per endpoint: `ENDPOINT: D.D days left (expires TIME), issuer ISSUER, chain
//! trusted|NOT trusted` (or `ENDPOINT: no TLS handshake: why`), then one line per finding (`SEVERITY  check  target  summary`) and
//! a `summary:` line. Exit code: 0 OK, 1 warning (< 30 days), 2 critical (< 7 days, expired,
//! untrusted, wrong name, nothing listening), 3 unknown (the probe could not run at all).
//!
//! ## The same with the CLI
//!
//! `tej tls check [HOST:PORT...]`.

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use tej_core::{Config, Finding, Severity};
use tej_secrets::{ExpiryThresholds, TlsProbeOptions, probe_tls, tls_report};

/// Probe TLS endpoints and report how long their certificates have left.
#[derive(Debug, Parser)]
struct Args {
    /// The configuration file (default: ./tej.toml when present, else the environment).
    #[arg(long, env = "TEJ_CONFIG")]
    config: Option<PathBuf>,
    /// Endpoints as HOST:PORT (default: every [[tls]] endpoint in tej.toml).
    endpoints: Vec<String>,
    /// Trust only this CA (PEM) instead of the system roots.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// SNI and the name the certificate must cover (default: the host, or tej.toml's).
    #[arg(long)]
    server_name: Option<String>,
    /// Warn at this many days left, as the runbook writes it ("alert if < 30 days"); without
    /// it, tej.toml's `warn_days` (30), lowered to a third of a short certificate's lifetime.
    #[arg(long, requires = "crit_days")]
    warn_days: Option<f64>,
    /// Critical at this many days left (with `--warn-days`).
    #[arg(long, requires = "warn_days")]
    crit_days: Option<f64>,
}

/// (endpoint, probe options) for each endpoint: tej.toml's settings where it lists it.
fn targets(config: &Config, args: &Args) -> Result<Vec<(String, TlsProbeOptions)>> {
    let endpoints: Vec<String> = if args.endpoints.is_empty() {
        config.tls.iter().map(|t| t.endpoint.clone()).collect()
    } else {
        args.endpoints.clone()
    };
    if endpoints.is_empty() {
        bail!("no endpoint: pass HOST:PORT or add [[tls]] endpoint = \"host:443\" to tej.toml");
    }
    Ok(endpoints
        .into_iter()
        .map(|endpoint| {
            let mut o = TlsProbeOptions {
                ca_file: args.ca.clone(),
                ..TlsProbeOptions::default()
            };
            if let Some(t) = config.tls.iter().find(|t| t.endpoint == endpoint) {
                o.server_name = t.server_name.clone();
                o.cert_file = t.cert_file.clone();
                o.thresholds = ExpiryThresholds {
                    warn_days: f64::from(t.warn_days),
                    crit_days: f64::from(t.crit_days),
                    ..ExpiryThresholds::default()
                };
            }
            if args.server_name.is_some() {
                o.server_name = args.server_name.clone();
            }
            if let (Some(warn_days), Some(crit_days)) = (args.warn_days, args.crit_days) {
                o.thresholds = ExpiryThresholds {
                    warn_days,
                    crit_days,
                    warn_fraction: None,
                    crit_fraction: None,
                };
            }
            (endpoint, o)
        })
        .collect())
}

async fn run(args: Args) -> Result<Severity> {
    let config = Config::load_or_env(args.config.as_deref()).context("load the configuration")?;
    let mut probes = Vec::new();
    let mut unreachable = Vec::new();
    for (endpoint, opts) in targets(&config, &args)? {
        match probe_tls(&endpoint, &opts).await {
            Ok(p) if !p.handshake => {
                let why = p
                    .findings
                    .first()
                    .map_or("no TLS handshake", |f| f.summary.as_str());
                println!("{endpoint}: no TLS handshake: {why}");
                probes.push(p);
            }
            Ok(p) => {
                let days = p.days_left.map_or("?".into(), |d| format!("{d:.1}"));
                let expires = p.earliest_expiry.map_or("?".into(), |t| t.to_string());
                let trusted = if p.chain_valid == Some(true) {
                    "trusted"
                } else {
                    "NOT trusted"
                };
                let issuer = p.issuer.as_deref().unwrap_or("?");
                println!(
                    "{endpoint}: {days} days left (expires {expires}), issuer {issuer}, chain {trusted}"
                );
                probes.push(p);
            }
            Err(e) => {
                println!("{endpoint}: cannot probe: {e}");
                unreachable.push(
                    Finding::new(
                        "tls.probe",
                        Severity::Unknown,
                        format!("cannot probe {endpoint}: {e}"),
                    )
                    .target(endpoint),
                );
            }
        }
    }
    let mut report = tls_report(&probes);
    report.extend(unreachable);
    tej_examples::print_findings(&report);
    Ok(report.severity())
}

#[tokio::main]
async fn main() -> ExitCode {
    tej_examples::check_exit(run(Args::parse()).await)
}

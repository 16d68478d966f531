//! Probing `host:port` over TLS with rustls, capturing the chain even when it is invalid.

use super::cert::{CertFileComparison, CertInfo, compare_with_file, hostname_matches};
use crate::error::{Result, SecretsError};
use jiff::Timestamp;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tej_core::{Finding, Severity, Threshold};

/// Expiry thresholds: absolute days and fractions of the certificate's lifetime;
/// the smaller of the two applies, so short-lived certificates do not warn from day one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ExpiryThresholds {
    /// Warn when at most this many days are left.
    pub warn_days: f64,
    /// Critical when at most this many days are left.
    pub crit_days: f64,
    /// Warn when at most this fraction of the lifetime is left (Let's Encrypt renews at 1/3).
    pub warn_fraction: Option<f64>,
    /// Critical when at most this fraction of the lifetime is left.
    pub crit_fraction: Option<f64>,
}

impl Default for ExpiryThresholds {
    fn default() -> Self {
        ExpiryThresholds {
            warn_days: 30.0,
            crit_days: 7.0,
            warn_fraction: Some(1.0 / 3.0),
            crit_fraction: Some(0.1),
        }
    }
}

impl ExpiryThresholds {
    /// The thresholds in days for a certificate valid for `lifetime_days`.
    pub fn for_lifetime(&self, lifetime_days: f64) -> Threshold {
        let pick = |days: f64, frac: Option<f64>| match frac {
            Some(f) if lifetime_days > 0.0 => days.min(f * lifetime_days),
            _ => days,
        };
        let warn = pick(self.warn_days, self.warn_fraction);
        let crit = pick(self.crit_days, self.crit_fraction).min(warn);
        Threshold::below(warn, crit)
    }
}

/// How to probe.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsProbeOptions {
    /// SNI and the name the certificate must match (default: the host).
    pub server_name: Option<String>,
    /// Trust only the CAs in this PEM file instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// The certificate file the server should be serving.
    pub cert_file: Option<PathBuf>,
    /// Limit for the TCP connect and, separately, for the handshake.
    pub timeout: Duration,
    /// Expiry thresholds.
    pub thresholds: ExpiryThresholds,
}

impl Default for TlsProbeOptions {
    fn default() -> Self {
        TlsProbeOptions {
            server_name: None,
            ca_file: None,
            cert_file: None,
            timeout: Duration::from_secs(10),
            thresholds: ExpiryThresholds::default(),
        }
    }
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsProbe {
    /// `host:port` as given.
    pub endpoint: String,
    /// The name sent as SNI and checked against the certificate.
    pub server_name: String,
    /// The TLS handshake completed.
    pub handshake: bool,
    /// Negotiated protocol (`TLSv1_3`).
    pub protocol: Option<String>,
    /// The chain the server sent, leaf first.
    pub chain: Vec<CertInfo>,
    /// The earliest `not_after` in the chain.
    pub earliest_expiry: Option<Timestamp>,
    /// Days until that expiry.
    pub days_left: Option<f64>,
    /// The leaf's issuer.
    pub issuer: Option<String>,
    /// The leaf's names.
    pub sans: Vec<String>,
    /// The leaf covers `server_name`.
    pub hostname_matches: Option<bool>,
    /// The chain verifies against the trust anchors.
    pub chain_valid: Option<bool>,
    /// Why it does not.
    pub chain_error: Option<String>,
    /// Comparison with the certificate file, when one was given.
    pub cert_file: Option<CertFileComparison>,
    /// Every finding, for the report.
    pub findings: Vec<Finding>,
}

impl TlsProbe {
    /// The worst finding's severity.
    pub fn severity(&self) -> Severity {
        self.findings
            .iter()
            .fold(Severity::Ok, |a, f| a.worst(f.severity))
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> Option<&CertInfo> {
        self.chain.first()
    }
}

/// A report over several probes (`tej tls check HOST:PORT...`).
pub fn tls_report(probes: &[TlsProbe]) -> tej_core::Report {
    let mut r = tej_core::Report::new("tls check");
    for p in probes {
        r.extend(p.findings.iter().cloned());
    }
    r
}

struct Recorded {
    chain: Vec<CertificateDer<'static>>,
    verdict: std::result::Result<(), rustls::Error>,
}

/// Records the served chain, runs the real verifier to classify it, and lets the
/// handshake finish either way (the probe sends no application data).
#[derive(Debug)]
struct RecordingVerifier {
    inner: std::result::Result<Arc<WebPkiServerVerifier>, String>,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<Recorded>>,
}

impl std::fmt::Debug for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recorded({} certs)", self.chain.len())
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        let verdict = match &self.inner {
            Ok(v) => v
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(|_| ()),
            Err(e) => Err(rustls::Error::General(e.clone())),
        };
        if let Ok(mut g) = self.seen.lock() {
            *g = Some(Recorded { chain, verdict });
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn split_endpoint(endpoint: &str) -> Result<(String, u16)> {
    let bad = || SecretsError::InvalidOptions(format!("{endpoint:?} is not HOST:PORT"));
    if let Some(rest) = endpoint.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if tail.is_empty() => 443,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    match endpoint.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.contains(':') => {
            Ok((h.to_string(), p.parse().map_err(|_| bad())?))
        }
        None if !endpoint.is_empty() => Ok((endpoint.to_string(), 443)),
        _ => Err(bad()),
    }
}

fn roots(opts: &TlsProbeOptions) -> Result<(RootCertStore, String)> {
    let mut store = RootCertStore::empty();
    match &opts.ca_file {
        Some(path) => {
            for der in super::cert::read_pem_ders(path)? {
                store
                    .add(CertificateDer::from(der))
                    .map_err(|e| SecretsError::Certificate(format!("{}: {e}", path.display())))?;
            }
            Ok((store, format!("the CA in {}", path.display())))
        }
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(loaded.certs);
            if added == 0 {
                tracing::warn!(errors = ?loaded.errors, "no system trust anchors found");
            }
            Ok((store, "the system roots".into()))
        }
    }
}

fn describe_verdict(err: &rustls::Error, chain: &[CertInfo], name: &str) -> String {
    match err {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "a certificate in the chain has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "a certificate in the chain is not valid yet".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the certificate is not valid for {name}")
            }
            CertificateError::UnknownIssuer => match chain {
                [leaf] if leaf.self_signed => "self-signed certificate, not trusted".into(),
                [_] => "unknown issuer: the server sent no intermediate certificates (incomplete chain) or its CA is not trusted".into(),
                _ => "unknown issuer: the chain does not lead to a trusted root".into(),
            },
            CertificateError::BadSignature => "a signature in the chain is invalid".into(),
            CertificateError::Revoked => "the certificate is revoked".into(),
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}

fn handshake_failure(e: &std::io::Error) -> (Severity, String) {
    use std::io::ErrorKind;
    if let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match r {
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => (
                Severity::Critical,
                format!(
                    "the port answered with something that is not TLS (plain HTTP or another protocol?): {r}"
                ),
            ),
            rustls::Error::AlertReceived(a) => (
                Severity::Critical,
                format!("the server ended the handshake with the TLS alert {a:?}"),
            ),
            other => (Severity::Critical, format!("TLS handshake failed: {other}")),
        };
    }
    match e.kind() {
        ErrorKind::ConnectionReset => (
            Severity::Critical,
            "the connection was reset during the TLS handshake".into(),
        ),
        ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => (
            Severity::Critical,
            "the server closed the connection during the TLS handshake (not a TLS port?)".into(),
        ),
        _ => (Severity::Critical, format!("TLS handshake failed: {e}")),
    }
}

/// Probes `endpoint` (`host:port`); connection and handshake problems become findings,
/// only bad options (a malformed endpoint, an unreadable CA file) are errors.
pub async fn probe_tls(endpoint: &str, opts: &TlsProbeOptions) -> Result<TlsProbe> {
    let (host, port) = split_endpoint(endpoint)?;
    let name = opts.server_name.clone().unwrap_or_else(|| host.clone());
    let server_name = ServerName::try_from(name.clone()).map_err(|_| {
        SecretsError::InvalidOptions(format!("{name:?} is not a valid server name"))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (store, anchors) = roots(opts)?;
    let inner = if store.is_empty() {
        Err(format!("no trust anchors in {anchors}"))
    } else {
        WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
            .build()
            .map_err(|e| e.to_string())
    };
    let verifier = Arc::new(RecordingVerifier {
        inner,
        provider: provider.clone(),
        seen: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SecretsError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let mut probe = TlsProbe {
        endpoint: endpoint.to_string(),
        server_name: name.clone(),
        handshake: false,
        protocol: None,
        chain: Vec::new(),
        earliest_expiry: None,
        days_left: None,
        issuer: None,
        sans: Vec::new(),
        hostname_matches: None,
        chain_valid: None,
        chain_error: None,
        cert_file: None,
        findings: Vec::new(),
    };
    let fail = |probe: &mut TlsProbe, check: &str, sev: Severity, msg: String| {
        probe
            .findings
            .push(Finding::new(check, sev, msg).target(endpoint));
    };
    let tcp = match tokio::time::timeout(
        opts.timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Err(_) => {
            fail(
                &mut probe,
                "tls.connect",
                Severity::Critical,
                format!("connecting timed out after {:?}", opts.timeout),
            );
            return Ok(probe);
        }
        Ok(Err(e)) => {
            let msg = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "connection refused (nothing listens on the port)".to_string()
                }
                _ => format!("cannot connect: {e}"),
            };
            fail(&mut probe, "tls.connect", Severity::Critical, msg);
            return Ok(probe);
        }
        Ok(Ok(s)) => s,
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let result = tokio::time::timeout(opts.timeout, connector.connect(server_name, tcp)).await;
    let now = Timestamp::now();
    let recorded = verifier.seen.lock().ok().and_then(|mut g| g.take());
    match result {
        Err(_) => fail(
            &mut probe,
            "tls.handshake",
            Severity::Critical,
            format!(
                "the TLS handshake timed out after {:?} (the port accepted the connection but never answered)",
                opts.timeout
            ),
        ),
        Ok(Err(e)) => {
            let (sev, msg) = handshake_failure(&e);
            fail(&mut probe, "tls.handshake", sev, msg);
        }
        Ok(Ok(stream)) => {
            probe.handshake = true;
            probe.protocol = stream
                .get_ref()
                .1
                .protocol_version()
                .map(|v| format!("{v:?}"));
            // a polite close; errors do not matter
            let mut stream = stream;
            let _ = tokio::time::timeout(
                Duration::from_millis(200),
                tokio::io::AsyncWriteExt::shutdown(&mut stream),
            )
            .await;
        }
    }
    if let Some(rec) = recorded {
        analyse(&mut probe, rec, now, opts, &anchors, endpoint);
    } else if probe.handshake {
        fail(
            &mut probe,
            "tls.chain",
            Severity::Unknown,
            "the server sent no certificate".into(),
        );
    }
    if let Some(file) = &opts.cert_file {
        match compare_with_file(file, probe.chain.first(), endpoint, now) {
            Ok(c) => {
                probe.findings.push(c.finding.clone());
                probe.cert_file = Some(c);
            }
            Err(e) => fail(
                &mut probe,
                "tls.cert_file",
                Severity::Unknown,
                e.to_string(),
            ),
        }
    }
    Ok(probe)
}

fn analyse(
    probe: &mut TlsProbe,
    rec: Recorded,
    now: Timestamp,
    opts: &TlsProbeOptions,
    anchors: &str,
    endpoint: &str,
) {
    let mut chain = Vec::new();
    for der in &rec.chain {
        match CertInfo::from_der(der.as_ref(), now) {
            Ok(c) => chain.push(c),
            Err(e) => probe.findings.push(
                Finding::new(
                    "tls.chain",
                    Severity::Critical,
                    format!("the server sent an unparsable certificate: {e}"),
                )
                .target(endpoint),
            ),
        }
    }
    probe.chain = chain;
    let Some(leaf) = probe.chain.first().cloned() else {
        return;
    };
    probe.issuer = Some(leaf.issuer.clone());
    probe.sans = leaf.sans.clone();
    let matches = hostname_matches(&leaf.sans, &probe.server_name);
    probe.hostname_matches = Some(matches);
    match &rec.verdict {
        Ok(()) => {
            probe.chain_valid = Some(true);
            probe.findings.push(
                Finding::ok(
                    "tls.chain",
                    format!(
                        "chain valid (issued by {}; trusted through {anchors})",
                        leaf.issuer
                    ),
                )
                .target(endpoint),
            );
        }
        Err(e) => {
            let why = describe_verdict(e, &probe.chain, &probe.server_name);
            probe.chain_valid = Some(false);
            probe.chain_error = Some(why.clone());
            probe.findings.push(
                Finding::new(
                    "tls.chain",
                    Severity::Critical,
                    format!("chain invalid: {why}"),
                )
                .target(endpoint)
                .detail(format!("checked against {anchors}; issuer {}", leaf.issuer)),
            );
        }
    }
    probe.findings.push(if matches {
        Finding::ok(
            "tls.hostname",
            format!("the certificate covers {}", probe.server_name),
        )
        .target(endpoint)
    } else {
        Finding::new(
            "tls.hostname",
            Severity::Critical,
            format!(
                "the certificate does not cover {} (names: {})",
                probe.server_name,
                leaf.sans.join(", ")
            ),
        )
        .target(endpoint)
    });
    if let Some(early) = probe.chain.iter().find(|c| c.not_before > now) {
        probe.findings.push(
            Finding::new(
                "tls.validity",
                Severity::Critical,
                format!(
                    "the certificate {} is not valid before {}",
                    early.subject, early.not_before
                ),
            )
            .target(endpoint),
        );
    }
    let Some(first) = probe
        .chain
        .iter()
        .min_by(|a, b| a.not_after.cmp(&b.not_after))
        .cloned()
    else {
        return;
    };
    probe.earliest_expiry = Some(first.not_after);
    probe.days_left = Some(first.days_left);
    let t = opts.thresholds.for_lifetime(first.lifetime_days);
    let summary = if first.days_left < 0.0 {
        format!(
            "the certificate {} expired {:.1} days ago ({})",
            first.subject, -first.days_left, first.not_after
        )
    } else {
        format!(
            "{:.1} days left until {} (certificate {})",
            first.days_left, first.not_after, first.subject
        )
    };
    probe.findings.push(
        Finding::measured(
            "tls.expiry",
            "tls_cert_days_left",
            first.days_left,
            "days",
            t,
            summary,
        )
        .target(endpoint)
        .detail(format!(
            "lifetime {:.0} days; warning at {:.1} days, critical at {:.1} days",
            first.lifetime_days, t.warn, t.crit
        )),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            split_endpoint("example.com:443").unwrap(),
            ("example.com".into(), 443)
        );
        assert_eq!(
            split_endpoint("example.com").unwrap(),
            ("example.com".into(), 443)
        );
        assert_eq!(split_endpoint("[::1]:8443").unwrap(), ("::1".into(), 8443));
        assert!(split_endpoint("example.com:x").is_err());
        assert!(split_endpoint(":443").is_err());
        assert!(split_endpoint("").is_err());
    }

    #[test]
    fn thresholds_follow_short_lifetimes() {
        let t = ExpiryThresholds::default();
        let long = t.for_lifetime(90.0);
        assert_eq!((long.warn, long.crit), (30.0, 7.0));
        let short = t.for_lifetime(6.0);
        assert!((short.warn - 2.0).abs() < 1e-9 && (short.crit - 0.6).abs() < 1e-9);
        assert_eq!(short.evaluate(3.0), Severity::Ok);
        assert_eq!(long.evaluate(3.0), Severity::Critical);
        let abs_only = ExpiryThresholds {
            warn_fraction: None,
            crit_fraction: None,
            ..t
        };
        assert_eq!(abs_only.for_lifetime(6.0).warn, 30.0);
    }
}

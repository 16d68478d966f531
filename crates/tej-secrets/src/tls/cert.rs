//! Certificate details from DER/PEM, hostname matching, and file-versus-served comparison.

use crate::error::{Result, SecretsError};
use jiff::Timestamp;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Serialize;
use std::path::{Path, PathBuf};
use tej_core::{Finding, Severity};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// What one certificate says about itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertInfo {
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
    /// Total validity, in days.
    pub lifetime_days: f64,
    /// Days until `not_after` (negative once expired).
    pub days_left: f64,
    /// DNS names and IP addresses it is valid for.
    pub sans: Vec<String>,
    /// A CA certificate?
    pub is_ca: bool,
    /// Subject and issuer are the same.
    pub self_signed: bool,
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(if secs < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

impl CertInfo {
    /// Parses a DER certificate; `now` sets `days_left`.
    pub fn from_der(der: &[u8], now: Timestamp) -> Result<CertInfo> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| SecretsError::Certificate(format!("cannot parse the certificate: {e}")))?;
        let not_before = ts(cert.validity().not_before.timestamp());
        let not_after = ts(cert.validity().not_after.timestamp());
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for n in &ext.value.general_names {
                match n {
                    GeneralName::DNSName(d) => sans.push(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => sans.push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
                        16 => {
                            let mut a = [0u8; 16];
                            a.copy_from_slice(b);
                            sans.push(std::net::Ipv6Addr::from(a).to_string());
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        let secs = |a: Timestamp, b: Timestamp| (b.as_second() - a.as_second()) as f64 / 86_400.0;
        Ok(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            not_before,
            not_after,
            lifetime_days: secs(not_before, not_after),
            days_left: secs(now, not_after),
            sans,
            is_ca: cert.is_ca(),
            self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        })
    }

    /// True when this and `other` are the same certificate (issuer and serial).
    pub fn same_as(&self, other: &CertInfo) -> bool {
        self.issuer == other.issuer && self.serial == other.serial
    }
}

/// True when `name` (DNS name or IP address) is covered by `sans`
/// (case-insensitive, `*.` wildcards cover exactly one label).
pub fn hostname_matches(sans: &[String], name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if let Ok(ip) = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        return sans
            .iter()
            .any(|s| s.parse::<std::net::IpAddr>().ok() == Some(ip));
    }
    sans.iter().any(|san| {
        let san = san.trim_end_matches('.').to_ascii_lowercase();
        if let Some(rest) = san.strip_prefix("*.") {
            match name.split_once('.') {
                Some((first, tail)) => !first.is_empty() && tail == rest,
                None => false,
            }
        } else {
            san == name
        }
    })
}

/// Reads every certificate in a PEM file (leaf first, as nginx expects).
pub fn read_pem_chain(path: &Path, now: Timestamp) -> Result<Vec<CertInfo>> {
    let ders = read_pem_ders(path)?;
    ders.iter().map(|d| CertInfo::from_der(d, now)).collect()
}

pub(crate) fn read_pem_ders(path: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).map_err(|e| SecretsError::io("read", path, &e))?;
    let ders: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&bytes)
        .map(|r| r.map(|c| c.as_ref().to_vec()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| SecretsError::Certificate(format!("{}: {e}", path.display())))?;
    if ders.is_empty() {
        return Err(SecretsError::Certificate(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(ders)
}

/// A certificate file on disk compared with what a server serves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertFileComparison {
    /// The file.
    pub file: PathBuf,
    /// Its leaf certificate.
    pub file_leaf: CertInfo,
    /// The server serves exactly this certificate.
    pub served_matches: bool,
    /// The verdict.
    pub finding: Finding,
}

/// Compares the leaf in `file` with `served` (the leaf a server sent), for `target`.
pub fn compare_with_file(
    file: &Path,
    served: Option<&CertInfo>,
    target: &str,
    now: Timestamp,
) -> Result<CertFileComparison> {
    let chain = read_pem_chain(file, now)?;
    let Some(file_leaf) = chain.into_iter().next() else {
        return Err(SecretsError::Certificate(format!(
            "{} is empty",
            file.display()
        )));
    };
    let (matches, finding) = match served {
        None => (
            false,
            Finding::new(
                "tls.cert_file",
                Severity::Unknown,
                format!(
                    "cannot compare {} with the server: no certificate was served",
                    file.display()
                ),
            ),
        ),
        Some(s) if s.same_as(&file_leaf) => (
            true,
            Finding::ok(
                "tls.cert_file",
                format!("the server serves the certificate in {}", file.display()),
            ),
        ),
        Some(s) if file_leaf.not_after > s.not_after => (
            false,
            Finding::new(
                "tls.cert_file",
                Severity::Critical,
                format!(
                    "{} was renewed (expires {}) but the server still serves the old certificate (expires {}): reload nginx",
                    file.display(),
                    file_leaf.not_after,
                    s.not_after
                ),
            ),
        ),
        Some(s) => (
            false,
            Finding::new(
                "tls.cert_file",
                Severity::Warning,
                format!(
                    "the server serves a different certificate (serial {}, expires {}) than {} (serial {}, expires {})",
                    s.serial,
                    s.not_after,
                    file.display(),
                    file_leaf.serial,
                    file_leaf.not_after
                ),
            ),
        ),
    };
    Ok(CertFileComparison {
        file: file.to_path_buf(),
        file_leaf,
        served_matches: matches,
        finding: finding.target(target),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        let sans = vec![
            "*.example.com".to_string(),
            "example.com".into(),
            "10.0.0.1".into(),
        ];
        assert!(hostname_matches(&sans, "api.example.com"));
        assert!(hostname_matches(&sans, "API.Example.com."));
        assert!(hostname_matches(&sans, "example.com"));
        assert!(!hostname_matches(&sans, "a.b.example.com"));
        assert!(!hostname_matches(&sans, "example.org"));
        assert!(hostname_matches(&sans, "10.0.0.1"));
        assert!(!hostname_matches(&sans, "10.0.0.2"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(CertInfo::from_der(b"not a certificate", Timestamp::now()).is_err());
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.pem");
        std::fs::write(
            &p,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(read_pem_chain(&p, Timestamp::now()).is_err());
        std::fs::write(&p, "hello").unwrap();
        assert!(read_pem_chain(&p, Timestamp::now()).is_err());
    }
}

//! TLS certificates: probing servers, reading PEM files, renewal.

mod cert;
mod probe;
mod renew;

pub use cert::{CertFileComparison, CertInfo, compare_with_file, hostname_matches, read_pem_chain};
pub use probe::{ExpiryThresholds, TlsProbe, TlsProbeOptions, probe_tls, tls_report};
pub use renew::{
    ReloadMethod, RenewOptions, RenewReport, RenewStep, RenewTarget, renew_certificates,
};

//! Certificates for a TLS-enabled [`PgCluster`](crate::PgCluster): a throwaway test CA that
//! signs server and client certificates, and self-signed server certificates.

use crate::scratch::ScratchDir;
use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A certificate and its private key as PEM files (the key with mode 0600).
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert_file: PathBuf,
    /// The private key (PKCS#8 PEM, mode 0600).
    pub key_file: PathBuf,
}

/// What a [`PgCluster`](crate::PgCluster) started with TLS serves: `ssl = on` with this
/// certificate and key, and `ssl_ca_file` (client certificates it trusts) when given.
#[derive(Debug, Clone)]
pub struct PgServerTls {
    /// The server's certificate and key (copied into the cluster's directory).
    pub server: CertFiles,
    /// CA certificates the server trusts for client certificates (`ssl_ca_file`).
    pub client_ca_file: Option<PathBuf>,
}

/// A throwaway certificate authority in its own temporary directory (removed on drop).
pub struct TestCa {
    key: KeyPair,
    params: CertificateParams,
    ca_file: PathBuf,
    issued: AtomicUsize,
    dir: ScratchDir,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA (`CN=tej test CA`), its certificate written to [`ca_file`](Self::ca_file).
    pub fn new() -> Result<TestCa> {
        let dir = ScratchDir::new("tej-ca-", "the test CA")?;
        let key = KeyPair::generate().context("generate the CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "tej test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).context("self-sign the CA")?;
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, cert.pem())
            .with_context(|| format!("write {}", ca_file.display()))?;
        Ok(TestCa {
            key,
            params,
            ca_file,
            issued: AtomicUsize::new(0),
            dir,
        })
    }

    /// The CA certificate (PEM): what a client's `sslrootcert` names.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A server certificate for `names` (DNS names, or IP addresses as SAN IPs), signed by
    /// this CA.
    pub fn server_cert(&self, names: &[&str]) -> Result<CertFiles> {
        let key = KeyPair::generate().context("generate the server key")?;
        let params = leaf_params(names, names.first().copied().unwrap_or("server"))?;
        let cert = params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .context("sign the server certificate")?;
        write_pair(self.dir.path(), &self.next("server"), &cert.pem(), &key)
    }

    /// A client certificate with `CN=user` (what `cert` authentication maps to the role),
    /// signed by this CA.
    pub fn client_cert(&self, user: &str) -> Result<CertFiles> {
        let key = KeyPair::generate().context("generate the client key")?;
        let params = leaf_params(&[], user)?;
        let cert = params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .context("sign the client certificate")?;
        write_pair(self.dir.path(), &self.next("client"), &cert.pem(), &key)
    }

    /// A self-signed server certificate for `names`, signed by no CA.
    pub fn self_signed_cert(&self, names: &[&str]) -> Result<CertFiles> {
        let key = KeyPair::generate().context("generate the server key")?;
        let params = leaf_params(names, names.first().copied().unwrap_or("server"))?;
        let cert = params.self_signed(&key).context("self-sign")?;
        write_pair(self.dir.path(), &self.next("selfsigned"), &cert.pem(), &key)
    }

    /// The directory holding the CA's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn next(&self, what: &str) -> String {
        format!("{what}{}", self.issued.fetch_add(1, Ordering::Relaxed))
    }
}

fn leaf_params(names: &[&str], common_name: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    for n in names {
        params.subject_alt_names.push(match n.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*n).try_into()?),
        });
    }
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    Ok(params)
}

fn write_pair(dir: &Path, stem: &str, cert_pem: &str, key: &KeyPair) -> Result<CertFiles> {
    let cert_file = dir.join(format!("{stem}.crt"));
    let key_file = dir.join(format!("{stem}.key"));
    std::fs::write(&cert_file, cert_pem)
        .with_context(|| format!("write {}", cert_file.display()))?;
    write_private(&key_file, key.serialize_pem().as_bytes())?;
    Ok(CertFiles {
        cert_file,
        key_file,
    })
}

/// Writes `bytes` to `path` with mode 0600.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))
}

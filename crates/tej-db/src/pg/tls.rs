//! TLS for PostgreSQL connections through rustls (the workspace's `ring` provider), with
//! libpq's `sslmode` meanings: `allow`, `prefer` and `require` encrypt without verifying
//! the server; `verify-ca` verifies the chain against `sslrootcert`; `verify-full` also
//! verifies the host name. `require` with a root certificate file verifies as `verify-ca`.

use super::DbError;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Not at all (`allow`, `prefer`, `require` without a root certificate).
    Nothing,
    /// The chain up to a trusted root, not the host name (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Roots {
    /// `sslrootcert=system`: the system's CA certificates.
    System,
    /// A PEM file.
    File(PathBuf),
}

/// The TLS side of a resolved connection.
#[derive(Debug, Clone)]
pub(crate) struct TlsSettings {
    pub verify: Verify,
    pub roots: Option<Roots>,
    /// Client certificate and key files (`sslcert`/`sslkey`), when the certificate exists.
    pub client: Option<(PathBuf, PathBuf)>,
    /// `sslnegotiation=direct` (TLS from the first byte, ALPN `postgresql`).
    pub direct: bool,
}

/// The provider the workspace uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's CA certificates, loaded once per process (parsing them takes milliseconds).
fn system_roots() -> &'static rustls::RootCertStore {
    static ROOTS: std::sync::OnceLock<rustls::RootCertStore> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            // A single unreadable system certificate must not stop TLS.
            let _ = roots.add(cert);
        }
        roots
    })
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, DbError> {
    let bad = |e: &dyn std::fmt::Display| {
        DbError::Tls(format!(
            "cannot read {what} file \"{}\": {e}",
            path.display()
        ))
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no PEM certificate in it"));
    }
    Ok(certs)
}

/// libpq's rule for private key files: not readable by the group or others when owned by
/// the current user (0600 or less), and at most 0640 when owned by root.
fn check_key_file(path: &Path) -> Result<(), DbError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        DbError::Tls(format!(
            "could not open private key file \"{}\": {e}",
            path.display()
        ))
    })?;
    if !meta.is_file() {
        return Err(DbError::Tls(format!(
            "private key file \"{}\" is not a regular file",
            path.display()
        )));
    }
    let mode = meta.permissions().mode();
    let euid = nix::unistd::geteuid().as_raw();
    if (meta.uid() == euid && mode & 0o077 != 0) || (meta.uid() == 0 && mode & 0o037 != 0) {
        return Err(DbError::Tls(format!(
            "private key file \"{}\" has group or world access; file must have permissions \
             u=rw (0600) or less if owned by the current user, or permissions u=rw,g=r (0640) \
             or less if owned by root",
            path.display()
        )));
    }
    Ok(())
}

/// The rustls client configuration for `tls`.
pub(crate) fn client_config(tls: &TlsSettings) -> Result<rustls::ClientConfig, DbError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Tls(e.to_string()))?;
    let roots = match &tls.roots {
        None => None,
        Some(Roots::System) => Some(system_roots().clone()),
        Some(Roots::File(path)) => {
            let mut store = rustls::RootCertStore::empty();
            for c in read_certs(path, "root certificate")? {
                store.add(c).map_err(|e| {
                    DbError::Tls(format!(
                        "bad certificate in root certificate file \"{}\": {e}",
                        path.display()
                    ))
                })?;
            }
            Some(store)
        }
    };
    let webpki = |roots: rustls::RootCertStore| {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| DbError::Tls(format!("root certificates: {e}")))
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (tls.verify, roots) {
        (Verify::Nothing, _) => Arc::new(WithoutName {
            chain: None,
            provider,
        }),
        (Verify::Chain, Some(roots)) => Arc::new(WithoutName {
            chain: Some(webpki(roots)?),
            provider,
        }),
        (Verify::Full, Some(roots)) => webpki(roots)?,
        (_, None) => {
            return Err(DbError::Tls(
                "server certificate verification needs root certificates".into(),
            ));
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match &tls.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = read_certs(cert, "client certificate")?;
            check_key_file(key)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                DbError::Tls(format!(
                    "cannot read private key file \"{}\" (an unencrypted PEM key is needed): {e}",
                    key.display()
                ))
            })?;
            builder
                .with_client_auth_cert(certs, key_der)
                .map_err(|e| DbError::Tls(format!("client certificate: {e}")))?
        }
    };
    if tls.direct {
        cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    Ok(cfg)
}

/// libpq's checks short of `verify-full`: none at all (`allow`, `prefer` and `require`
/// without a root certificate), or the chain up to a trusted root without the host name
/// (`verify-ca`; rustls checks the name after the chain, so a name mismatch means the
/// chain was good). The handshake signatures are verified either way.
#[derive(Debug)]
struct WithoutName {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for WithoutName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

//! A TLS endpoint on 127.0.0.1 serving a certificate from a throwaway CA, for tests and the
//! demo of certificate-expiry checks.

use crate::scratch::ScratchDir;
use anyhow::{Context, Result, anyhow};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A TLS server on `127.0.0.1:PORT` presenting a leaf certificate for `localhost` and
/// `127.0.0.1`, signed by its own CA, valid from a day ago for the number of days asked.
/// It completes handshakes and closes; it is stopped when dropped.
pub struct TlsEndpoint {
    port: u16,
    ca_file: PathBuf,
    cert_file: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    dir: ScratchDir,
}

/// The date `days` from today (UTC) as rcgen wants it.
fn ymd_in(days: i64) -> Result<(i32, u8, u8)> {
    use jiff::ToSpan;
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let d = today.checked_add(days.days())?;
    Ok((i32::from(d.year()), d.month() as u8, d.day() as u8))
}

impl TlsEndpoint {
    /// Starts an endpoint whose certificate expires in `valid_days` days.
    pub fn start(valid_days: u32) -> Result<TlsEndpoint> {
        let dir = ScratchDir::new("tej-tls-", "the TLS endpoint")?;
        let at = |days: i64| -> Result<_> {
            let (y, m, d) = ymd_in(days)?;
            Ok(rcgen::date_time_ymd(y, m, d))
        };
        let ca_key = KeyPair::generate().context("generate the CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tej test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.not_before = at(-1)?;
        ca_params.not_after = at(3650)?;
        let ca_cert = ca_params.self_signed(&ca_key).context("self-sign the CA")?;

        let key = KeyPair::generate().context("generate the server key")?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse()?));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.not_before = at(-1)?;
        params.not_after = at(i64::from(valid_days))?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let leaf = params.signed_by(&key, &issuer).context("sign the leaf")?;

        let ca_file = dir.path().join("ca.pem");
        let cert_file = dir.path().join("cert.pem");
        std::fs::write(&ca_file, ca_cert.pem())?;
        std::fs::write(&cert_file, leaf.pem())?;

        let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca_cert.der().clone()];
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow!("TLS versions: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, PrivateKeyDer::Pkcs8(key.serialize_der().into()))
            .map_err(|e| anyhow!("TLS server config: {e}"))?;
        let config = Arc::new(config);

        let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let _ = sock.set_nonblocking(false);
                        let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
                        let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                            continue;
                        };
                        let mut tls = rustls::StreamOwned::new(conn, sock);
                        let mut buf = [0u8; 64];
                        let _ = tls.read(&mut buf);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(TlsEndpoint {
            port,
            ca_file,
            cert_file,
            stop,
            thread: Some(thread),
            dir,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificate (PEM) that signed the served certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The served leaf certificate (PEM), as nginx's certificate file would hold it.
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// The endpoint's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TlsEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

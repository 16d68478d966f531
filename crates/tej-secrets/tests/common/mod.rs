//! Certificates made with rcgen and TLS servers on 127.0.0.1 for the tests.
#![allow(dead_code)]

use jiff::{ToSpan, Zoned, tz::TimeZone};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

fn ymd(days: i64) -> (i32, u8, u8) {
    let z: Zoned = jiff::Timestamp::now().to_zoned(TimeZone::UTC);
    let d = z.date().checked_add(days.days()).unwrap();
    (d.year() as i32, d.month() as u8, d.day() as u8)
}

pub struct Ca {
    pub key: KeyPair,
    pub params: CertificateParams,
    pub der: CertificateDer<'static>,
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        Ca::signed(name, None)
    }

    /// An intermediate (or root when `parent` is None) CA.
    pub fn signed(name: &str, parent: Option<&Ca>) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let (y, m, d) = ymd(-30);
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = ymd(3650);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        let cert = match parent {
            None => params.self_signed(&key).unwrap(),
            Some(p) => params.signed_by(&key, &p.issuer()).unwrap(),
        };
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            key,
            params,
        }
    }

    pub fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, &self.pem).unwrap();
        p
    }
}

pub struct Leaf {
    pub key: KeyPair,
    pub der: CertificateDer<'static>,
    pub pem: String,
}

/// A leaf for `names`, valid from `from` days to `to` days relative to today,
/// signed by `ca` (self-signed when None).
pub fn leaf(names: &[&str], from: i64, to: i64, ca: Option<&Ca>) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    let (y, m, d) = ymd(from);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(to);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let cert = match ca {
        Some(ca) => params.signed_by(&key, &ca.issuer()).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    Leaf {
        pem: cert.pem(),
        der: cert.der().clone(),
        key,
    }
}

pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: &KeyPair,
) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    Arc::new(cfg)
}

/// A TLS server whose configuration can be swapped (like an nginx reload).
pub struct TlsServer {
    pub port: u16,
    pub config: Arc<Mutex<Arc<rustls::ServerConfig>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsServer {
    pub async fn start(config: Arc<rustls::ServerConfig>) -> TlsServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Mutex::new(config));
        let s2 = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let cfg = s2.lock().unwrap().clone();
                tokio::spawn(async move {
                    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                    if let Ok(mut tls) = acceptor.accept(sock).await {
                        let mut buf = [0u8; 64];
                        let _ = tls.read(&mut buf).await;
                    }
                });
            }
        });
        TlsServer {
            port,
            config: shared,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn swap(&self, cfg: Arc<rustls::ServerConfig>) {
        *self.config.lock().unwrap() = cfg;
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! Which Docker engine to talk to, found the way the docker CLI finds it, and the bollard
//! client for it: the one place a bollard client is made.
//!
//! The address comes from, in this order:
//!
//! 1. the configured host (`[compose] docker_host` in `tej.toml`, or `--docker-host`);
//! 2. `DOCKER_HOST`;
//! 3. the current docker context: `DOCKER_CONTEXT`, else `currentContext` in
//!    `$DOCKER_CONFIG/config.json` (`DOCKER_CONFIG` defaults to `~/.docker`), its endpoint in
//!    `$DOCKER_CONFIG/contexts/meta/<sha256 of the name>/meta.json` and its TLS material in
//!    `$DOCKER_CONFIG/contexts/tls/<sha256 of the name>/docker/{ca,cert,key}.pem` (the
//!    context `default` is the local socket);
//! 4. `unix:///var/run/docker.sock`.
//!
//! Schemes: `unix://PATH`; `tcp://HOST:PORT` (or `http://`), in plain HTTP unless TLS is
//! asked for; `https://HOST:PORT`, always TLS; `ssh://[USER@]HOST[:PORT][/SOCKET]`.
//! For a configured host or `DOCKER_HOST`, TLS is asked for as the docker CLI asks for it:
//! `DOCKER_TLS_VERIFY` (non-empty) verifies the engine's certificate, `DOCKER_TLS` alone
//! encrypts without verifying; the files are `ca.pem`, `cert.pem` and `key.pem` in
//! `DOCKER_CERT_PATH` (default `$DOCKER_CONFIG`, else `~/.docker`), each used when it exists
//! (no `ca.pem`: the system's CAs). A context uses TLS when it has TLS material, verifying
//! unless its endpoint says `SkipTLSVerify`; the environment's TLS variables do not apply
//! to it. TLS is rustls with the ring provider, passed explicitly (no process default is
//! needed or installed); with a `ca.pem`, only that CA is trusted, as with the docker CLI.
//!
//! `ssh://` runs `ssh -o BatchMode=yes -o ConnectTimeout=30 -T [-l USER] [-p PORT] -- HOST
//! docker [--host unix://SOCKET] system dial-stdio` per connection, as the docker CLI does,
//! and speaks HTTP over its standard input and output; ssh's own messages are logged as
//! warnings. It uses the ssh client's configuration (`~/.ssh/config`, keys, agent, known
//! hosts) and never asks for a password. (bollard's `ssh` feature is not used: it starts an
//! ssh control master per connection through the `openssh` crate.)
//!
//! Errors name where the address came from (the variable, the context and the file) and
//! never contain key material.

use crate::error::DeployError;
use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tej_core::secret::redact_url_passwords;

/// The default engine address when nothing else names one.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// Seconds a request to the engine may take (bollard's default).
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// Where the engine address came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineSource {
    /// The configured host (`[compose] docker_host`, `--docker-host`).
    Configured,
    /// The `DOCKER_HOST` variable.
    DockerHostEnv,
    /// A docker context.
    Context {
        /// The context's name.
        name: String,
        /// What selected it: `DOCKER_CONTEXT`, or `currentContext in <config.json>`.
        selected_by: String,
    },
    /// Nothing named an engine: the local socket.
    Default,
}

impl fmt::Display for EngineSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineSource::Configured => f.write_str("configured docker_host"),
            EngineSource::DockerHostEnv => f.write_str("DOCKER_HOST"),
            EngineSource::Context { name, selected_by } => {
                write!(f, "docker context {name:?} selected by {selected_by}")
            }
            EngineSource::Default => f.write_str("default socket"),
        }
    }
}

/// The TLS settings of a connection: which files, and whether the engine is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineTls {
    /// The CA certificates trusted for the engine (`None`: the system's CAs).
    pub ca: Option<PathBuf>,
    /// The client certificate presented to the engine.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
    /// Whether the engine's certificate is verified.
    pub verify: bool,
    /// Where the files came from (`DOCKER_CERT_PATH=/path`, a context's TLS directory).
    pub origin: String,
}

/// An `ssh://` engine address, split into what the ssh command line needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The remote user (`-l`), when the address names one.
    pub user: Option<String>,
    /// The remote host.
    pub host: String,
    /// The remote port (`-p`), when the address names one.
    pub port: Option<u16>,
    /// The engine's socket on the remote host (`docker --host unix://SOCKET`), when the
    /// address has a path.
    pub socket: Option<String>,
}

impl SshTarget {
    /// Parses `ssh://[USER@]HOST[:PORT][/SOCKET]`; a password in the address is refused.
    pub fn parse(url: &str) -> Result<SshTarget, String> {
        let rest = url
            .strip_prefix("ssh://")
            .ok_or_else(|| format!("{url:?} is not an ssh:// address"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => {
                if u.contains(':') {
                    return Err("a password in an ssh:// address is not supported; use a key or the ssh agent".into());
                }
                if u.is_empty() {
                    return Err("empty user name in the ssh:// address".into());
                }
                (Some(u.to_string()), h)
            }
            None => (None, authority),
        };
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (h, after) = inner
                .split_once(']')
                .ok_or_else(|| "unclosed '[' in the ssh:// address".to_string())?;
            match after.strip_prefix(':') {
                Some(p) => (h.to_string(), Some(parse_port(p)?)),
                None if after.is_empty() => (h.to_string(), None),
                None => return Err(format!("unexpected {after:?} after the host")),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(parse_port(p)?)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err("no host in the ssh:// address".into());
        }
        if host.starts_with('-') || user.as_deref().is_some_and(|u| u.starts_with('-')) {
            return Err("a host or user starting with '-' is refused".into());
        }
        let socket = match path {
            "" | "/" => None,
            p => Some(p.to_string()),
        };
        Ok(SshTarget {
            user,
            host,
            port,
            socket,
        })
    }

    /// The command line that connects to the engine's API over ssh's standard input and
    /// output, program first.
    pub fn command(&self) -> Vec<String> {
        let mut argv: Vec<String> = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=30",
            "-T",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(u) = &self.user {
            argv.extend(["-l".to_string(), u.clone()]);
        }
        if let Some(p) = self.port {
            argv.extend(["-p".to_string(), p.to_string()]);
        }
        argv.extend(["--".to_string(), self.host.clone(), "docker".to_string()]);
        if let Some(s) = &self.socket {
            argv.extend(["--host".to_string(), format!("unix://{s}")]);
        }
        argv.extend(["system".to_string(), "dial-stdio".to_string()]);
        argv
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("invalid port {p:?} in the ssh:// address"))
}

/// How the engine is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineTransport {
    /// A unix socket.
    Unix {
        /// The socket's path.
        path: PathBuf,
    },
    /// Plain HTTP over TCP.
    Http {
        /// `HOST:PORT`.
        addr: String,
    },
    /// HTTPS over TCP.
    Tls {
        /// `HOST:PORT`.
        addr: String,
        /// The files and verification.
        tls: EngineTls,
    },
    /// HTTP over `ssh … docker system dial-stdio`.
    Ssh(SshTarget),
}

/// A resolved engine: its address, where the address came from and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    /// The address as given (`tcp://127.0.0.1:2376`).
    pub host: String,
    /// Where it came from.
    pub source: EngineSource,
    /// How it is reached.
    pub transport: EngineTransport,
}

impl Engine {
    /// `ADDRESS (SOURCE)`, for messages.
    pub fn describe(&self) -> String {
        format!("{} ({})", redact_url_passwords(&self.host), self.source)
    }
}

/// Resolves the engine from `configured` and the process environment.
pub fn resolve_engine(configured: Option<&str>) -> Result<Engine, DeployError> {
    resolve_engine_with(configured, &|k| std::env::var(k).ok())
}

/// Resolves the engine from `configured` and the variables `env` returns (`HOME` included),
/// as the docker CLI does (see the [module documentation](self)).
pub fn resolve_engine_with(
    configured: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Engine, DeployError> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(h) = configured.filter(|h| !h.is_empty()) {
        return from_host(h, EngineSource::Configured, env);
    }
    if let Some(h) = var("DOCKER_HOST") {
        return from_host(&h, EngineSource::DockerHostEnv, env);
    }
    let config_dir = docker_config_dir(env);
    let (name, selected_by) = match var("DOCKER_CONTEXT") {
        Some(n) => (n, "DOCKER_CONTEXT".to_string()),
        None => {
            let file = config_dir.as_ref().map(|d| d.join("config.json"));
            match file.as_deref().map(current_context).transpose()?.flatten() {
                Some(n) => (
                    n,
                    format!(
                        "currentContext in {}",
                        file.as_deref().unwrap_or(Path::new("")).display()
                    ),
                ),
                None => return from_host(DEFAULT_DOCKER_HOST, EngineSource::Default, env),
            }
        }
    };
    if name == "default" {
        return from_host(DEFAULT_DOCKER_HOST, EngineSource::Default, env);
    }
    let source = EngineSource::Context {
        name: name.clone(),
        selected_by,
    };
    let Some(dir) = config_dir else {
        return Err(engine_config(
            &source,
            "neither DOCKER_CONFIG nor HOME is set, so the context store cannot be found",
        ));
    };
    from_context(&dir, &name, source)
}

/// `$DOCKER_CONFIG`, else `$HOME/.docker`.
fn docker_config_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    var("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| Path::new(&h).join(".docker")))
}

/// `currentContext` of the docker CLI's `config.json` (`None` when the file is missing or
/// names none).
fn current_context(file: &Path) -> Result<Option<String>, DeployError> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(DeployError::Config {
                reason: format!(
                    "cannot read the docker CLI configuration {}: {e}",
                    file.display()
                ),
            });
        }
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| DeployError::Config {
        reason: format!(
            "the docker CLI configuration {} is not valid JSON: {e}",
            file.display()
        ),
    })?;
    Ok(v.get("currentContext")
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty())
        .map(str::to_string))
}

/// The docker CLI's directory name for a context: the hex SHA-256 of its name.
pub fn context_id(name: &str) -> String {
    hex::encode(Sha256::digest(name.as_bytes()))
}

fn from_context(dir: &Path, name: &str, source: EngineSource) -> Result<Engine, DeployError> {
    let id = context_id(name);
    let meta = dir.join("contexts/meta").join(&id).join("meta.json");
    let text = match std::fs::read_to_string(&meta) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(engine_config(
                &source,
                &format!("the context does not exist ({} is missing)", meta.display()),
            ));
        }
        Err(e) => {
            return Err(engine_config(
                &source,
                &format!("cannot read {}: {e}", meta.display()),
            ));
        }
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        engine_config(
            &source,
            &format!("{} is not valid JSON: {e}", meta.display()),
        )
    })?;
    let endpoint = v.pointer("/Endpoints/docker");
    let host = endpoint
        .and_then(|e| e.get("Host"))
        .and_then(|h| h.as_str())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            engine_config(
                &source,
                &format!("{} has no Endpoints.docker.Host", meta.display()),
            )
        })?
        .to_string();
    let skip_verify = endpoint
        .and_then(|e| e.get("SkipTLSVerify"))
        .and_then(|s| s.as_bool())
        .unwrap_or(false);
    let tls_dir = dir.join("contexts/tls").join(&id).join("docker");
    let file = |n: &str| Some(tls_dir.join(n)).filter(|p| p.exists());
    let (ca, cert, key) = (file("ca.pem"), file("cert.pem"), file("key.pem"));
    let tls = (ca.is_some() || cert.is_some() || key.is_some() || skip_verify).then(|| EngineTls {
        ca,
        cert,
        key,
        verify: !skip_verify,
        origin: format!("the context's TLS directory {}", tls_dir.display()),
    });
    let transport = transport_for(&host, tls, false, &source)?;
    Ok(Engine {
        host,
        source,
        transport,
    })
}

/// An address from the configuration, `DOCKER_HOST` or the default, with the environment's
/// TLS settings.
fn from_host(
    host: &str,
    source: EngineSource,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Engine, DeployError> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    let verify = var("DOCKER_TLS_VERIFY").is_some();
    let wanted = verify || var("DOCKER_TLS").is_some();
    let tls = || {
        let (dir, origin) = match var("DOCKER_CERT_PATH") {
            Some(p) => (Some(PathBuf::from(&p)), format!("DOCKER_CERT_PATH={p}")),
            None => {
                let d = docker_config_dir(env);
                let o = match &d {
                    Some(d) => format!("the default certificate directory {}", d.display()),
                    None => "no certificate directory (neither DOCKER_CERT_PATH nor HOME is set)"
                        .to_string(),
                };
                (d, o)
            }
        };
        let file = |n: &str| dir.as_ref().map(|d| d.join(n)).filter(|p| p.exists());
        EngineTls {
            ca: file("ca.pem"),
            cert: file("cert.pem"),
            key: file("key.pem"),
            verify: verify || !wanted,
            origin,
        }
    };
    let https = host.starts_with("https://");
    let tls = (wanted || https).then(tls);
    let transport = transport_for(host, tls, https, &source)?;
    Ok(Engine {
        host: host.to_string(),
        source,
        transport,
    })
}

fn transport_for(
    host: &str,
    tls: Option<EngineTls>,
    https: bool,
    source: &EngineSource,
) -> Result<EngineTransport, DeployError> {
    let shown = redact_url_passwords(host);
    let bad = |why: &str| engine_config(source, &format!("{shown:?}: {why}"));
    if let Some(path) = host.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(bad("no socket path after unix://"));
        }
        return Ok(EngineTransport::Unix {
            path: PathBuf::from(path),
        });
    }
    if host.starts_with("ssh://") {
        return SshTarget::parse(host)
            .map(EngineTransport::Ssh)
            .map_err(|e| bad(&e));
    }
    let rest = ["tcp://", "http://", "https://"]
        .iter()
        .find_map(|p| host.strip_prefix(p))
        .ok_or_else(|| bad("unsupported scheme (use unix://, tcp://, https:// or ssh://)"))?;
    let addr = rest.trim_end_matches('/');
    if addr.is_empty() || addr.contains('/') {
        return Err(bad("expected HOST:PORT after the scheme"));
    }
    let addr = if addr.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']')) {
        addr.to_string()
    } else {
        // The docker CLI's default ports: 2376 with TLS, 2375 without.
        format!(
            "{addr}:{}",
            if tls.is_some() || https { 2376 } else { 2375 }
        )
    };
    Ok(match tls {
        Some(tls) => EngineTransport::Tls { addr, tls },
        None => EngineTransport::Http { addr },
    })
}

fn engine_config(source: &EngineSource, reason: &str) -> DeployError {
    DeployError::Config {
        reason: format!("docker engine from {source}: {reason}"),
    }
}

/// A bollard client for `engine` (nothing is sent yet).
pub(crate) fn client(engine: &Engine) -> Result<Docker, DeployError> {
    let unreachable = |reason: String| DeployError::Unreachable {
        host: engine.describe(),
        reason,
    };
    match &engine.transport {
        EngineTransport::Unix { path } => Docker::connect_with_unix(
            &format!("unix://{}", path.display()),
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        )
        .map_err(|e| unreachable(e.to_string())),
        EngineTransport::Http { addr } => Docker::connect_with_http(
            &format!("tcp://{addr}"),
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        )
        .map_err(|e| unreachable(e.to_string())),
        EngineTransport::Tls { addr, tls } => {
            let config = tls_config(tls).map_err(|e| engine_config(&engine.source, &e))?;
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            let https = hyper_rustls::HttpsConnector::from((http, config));
            custom(https, format!("https://{addr}"))
        }
        EngineTransport::Ssh(target) => {
            let ssh = SshConnector {
                argv: Arc::new(target.command()),
            };
            // The address only fills the request line's Host header; ssh picks the engine.
            custom(ssh, "http://docker.example.com".to_string())
        }
    }
}

/// A bollard client sending its requests through a hyper client over `connector`.
fn custom<C>(connector: C, addr: String) -> Result<Docker, DeployError>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let client = Arc::new(Client::builder(TokioExecutor::new()).build(connector));
    Docker::connect_with_custom_transport(
        move |req: BollardRequest| {
            let client = client.clone();
            async move {
                client
                    .request(req)
                    .await
                    .map_err(bollard::errors::Error::from)
            }
        },
        Some(addr.clone()),
        REQUEST_TIMEOUT_SECS,
        API_DEFAULT_VERSION,
    )
    .map_err(|e| DeployError::Unreachable {
        host: addr,
        reason: e.to_string(),
    })
}

/// The rustls client configuration of `tls`, over the ring provider.
fn tls_config(tls: &EngineTls) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let builder = if tls.verify {
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca {
            Some(ca) => {
                for c in read_certs(ca, &tls.origin)? {
                    roots
                        .add(c)
                        .map_err(|e| format!("CA file {} ({}): {e}", ca.display(), tls.origin))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                for c in native.certs {
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err(format!(
                        "no ca.pem in {} and no system CA certificates",
                        tls.origin
                    ));
                }
            }
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    };
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let certs = read_certs(cert, &tls.origin)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                format!(
                    "client key {} ({}): {}",
                    key.display(),
                    tls.origin,
                    pem_reason(&e)
                )
            })?;
            builder.with_client_auth_cert(certs, key_der).map_err(|e| {
                format!(
                    "client certificate {} and key {} ({}): {e}",
                    cert.display(),
                    key.display(),
                    tls.origin
                )
            })
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(c), None) => Err(format!(
            "client certificate {} has no key.pem beside it ({})",
            c.display(),
            tls.origin
        )),
        (None, Some(k)) => Err(format!(
            "client key {} has no cert.pem beside it ({})",
            k.display(),
            tls.origin
        )),
    }
}

fn read_certs(path: &Path, origin: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "certificate file {} ({origin}): {}",
                path.display(),
                pem_reason(&e)
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "certificate file {} ({origin}) holds no certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// A PEM error without the file's contents.
fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => io.to_string(),
        E::NoItemsFound => "no PEM item of the expected kind".to_string(),
        _ => "not valid PEM".to_string(),
    }
}

/// The verifier of `DOCKER_TLS` without `DOCKER_TLS_VERIFY` and of `SkipTLSVerify`:
/// signatures are checked, the certificate is not.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Opens one connection to the engine per call: `ssh … docker system dial-stdio`.
#[derive(Clone)]
struct SshConnector {
    argv: Arc<Vec<String>>,
}

impl tower_service::Service<http::Uri> for SshConnector {
    type Response = TokioIo<SshStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let argv = self.argv.clone();
        Box::pin(async move {
            let mut child = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| std::io::Error::new(e.kind(), format!("run {}: {e}", argv[0])))?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(std::io::Error::other("ssh without piped stdio"));
            };
            if let Some(stderr) = child.stderr.take() {
                tokio::spawn(async move {
                    use tokio::io::AsyncBufReadExt;
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::warn!(target: "tej_deploy::engine", "ssh: {line}");
                    }
                });
            }
            Ok(TokioIo::new(SshStream {
                _child: child,
                stdin,
                stdout,
            }))
        })
    }
}

/// The standard input and output of one `docker system dial-stdio` over ssh, as one
/// stream; the process is killed when the connection is dropped.
struct SshStream {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
}

impl Connection for SshStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl tokio::io::AsyncRead for SshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// A context store under `dir` with context `name` at `host`, TLS files when `tls`.
    fn make_context(dir: &Path, name: &str, host: &str, tls: bool) {
        let id = context_id(name);
        let meta = dir.join("contexts/meta").join(&id);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            format!(
                r#"{{"Name":"{name}","Metadata":{{"Description":"test"}},"Endpoints":{{"docker":{{"Host":"{host}","SkipTLSVerify":false}}}}}}"#
            ),
        )
        .unwrap();
        if tls {
            let t = dir.join("contexts/tls").join(&id).join("docker");
            std::fs::create_dir_all(&t).unwrap();
            for f in ["ca.pem", "cert.pem", "key.pem"] {
                std::fs::write(t.join(f), "").unwrap();
            }
        }
    }

    #[test]
    fn context_ids_are_the_sha256_of_the_name() {
        // `printf %s remote | sha256sum`
        assert_eq!(
            context_id("remote"),
            "b71199ebd070b36beab7317920c2c2f1d777df8d05e5527d8458fda57cb17a7a"
        );
        assert_eq!(
            context_id("default"),
            "37a8eec1ce19687d132fe29051dca629d164e2c4958ba141d5f4133a33f0688f"
        );
    }

    #[test]
    fn precedence_is_config_then_docker_host_then_context_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        make_context(dir.path(), "ctx", "tcp://10.0.0.9:2375", false);
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"currentContext":"ctx"}"#,
        )
        .unwrap();
        let all = env_of(&[
            ("DOCKER_CONFIG", d),
            ("DOCKER_HOST", "tcp://10.0.0.8:2375"),
            ("DOCKER_CONTEXT", "ctx"),
        ]);
        let e = resolve_engine_with(Some("unix:///run/cfg.sock"), &all).unwrap();
        assert_eq!(e.source, EngineSource::Configured);
        assert_eq!(
            e.transport,
            EngineTransport::Unix {
                path: "/run/cfg.sock".into()
            }
        );
        let e = resolve_engine_with(None, &all).unwrap();
        assert_eq!(e.source, EngineSource::DockerHostEnv);
        assert_eq!(e.host, "tcp://10.0.0.8:2375");
        let no_host = env_of(&[("DOCKER_CONFIG", d), ("DOCKER_CONTEXT", "ctx")]);
        let e = resolve_engine_with(None, &no_host).unwrap();
        assert_eq!(
            e.source,
            EngineSource::Context {
                name: "ctx".into(),
                selected_by: "DOCKER_CONTEXT".into()
            }
        );
        assert_eq!(
            e.transport,
            EngineTransport::Http {
                addr: "10.0.0.9:2375".into()
            }
        );
        // Without DOCKER_CONTEXT, config.json's currentContext.
        let e = resolve_engine_with(None, &env_of(&[("DOCKER_CONFIG", d)])).unwrap();
        assert!(
            matches!(&e.source, EngineSource::Context { name, selected_by }
                if name == "ctx" && selected_by.contains("config.json")),
            "{:?}",
            e.source
        );
        // Nothing at all: the local socket; an empty variable counts as unset.
        let empty = tempfile::tempdir().unwrap();
        let e = resolve_engine_with(
            Some(""),
            &env_of(&[
                ("HOME", empty.path().to_str().unwrap()),
                ("DOCKER_HOST", ""),
            ]),
        )
        .unwrap();
        assert_eq!(e.source, EngineSource::Default);
        assert_eq!(e.host, DEFAULT_DOCKER_HOST);
        // DOCKER_CONTEXT=default is the local socket too.
        let e = resolve_engine_with(
            None,
            &env_of(&[("DOCKER_CONFIG", d), ("DOCKER_CONTEXT", "default")]),
        )
        .unwrap();
        assert_eq!(e.source, EngineSource::Default);
    }

    #[test]
    fn home_locates_the_context_store_when_docker_config_is_unset() {
        let home = tempfile::tempdir().unwrap();
        let store = home.path().join(".docker");
        make_context(&store, "prod", "tcp://10.1.1.1:2376", true);
        let e = resolve_engine_with(
            None,
            &env_of(&[
                ("HOME", home.path().to_str().unwrap()),
                ("DOCKER_CONTEXT", "prod"),
            ]),
        )
        .unwrap();
        let EngineTransport::Tls { addr, tls } = &e.transport else {
            panic!("{:?}", e.transport)
        };
        assert_eq!(addr, "10.1.1.1:2376");
        let tls_dir = store
            .join("contexts/tls")
            .join(context_id("prod"))
            .join("docker");
        assert_eq!(tls.ca.as_deref(), Some(tls_dir.join("ca.pem").as_path()));
        assert_eq!(tls.key.as_deref(), Some(tls_dir.join("key.pem").as_path()));
        assert!(tls.verify);
    }

    #[test]
    fn context_errors_name_the_context_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let e = resolve_engine_with(
            None,
            &env_of(&[("DOCKER_CONFIG", d), ("DOCKER_CONTEXT", "gone")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("\"gone\"") && e.contains("DOCKER_CONTEXT"),
            "{e}"
        );
        assert!(
            e.contains(&context_id("gone")) && e.contains("meta.json"),
            "{e}"
        );
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        let e = resolve_engine_with(None, &env_of(&[("DOCKER_CONFIG", d)]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("config.json") && e.contains("not valid JSON"),
            "{e}"
        );
    }

    #[test]
    fn tls_follows_docker_tls_verify_and_cert_path() {
        let certs = tempfile::tempdir().unwrap();
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(certs.path().join(f), "").unwrap();
        }
        let c = certs.path().to_str().unwrap();
        let e = resolve_engine_with(
            None,
            &env_of(&[
                ("DOCKER_HOST", "tcp://127.0.0.1:2376"),
                ("DOCKER_TLS_VERIFY", "1"),
                ("DOCKER_CERT_PATH", c),
            ]),
        )
        .unwrap();
        let EngineTransport::Tls { addr, tls } = e.transport else {
            panic!()
        };
        assert_eq!(addr, "127.0.0.1:2376");
        assert!(tls.verify);
        assert_eq!(tls.ca, Some(certs.path().join("ca.pem")));
        assert_eq!(tls.origin, format!("DOCKER_CERT_PATH={c}"));
        // The environment's TLS applies to a configured tcp host as to `docker -H`.
        let e = resolve_engine_with(
            Some("tcp://10.0.0.1"),
            &env_of(&[("DOCKER_TLS", "1"), ("DOCKER_CERT_PATH", c)]),
        )
        .unwrap();
        let EngineTransport::Tls { addr, tls } = e.transport else {
            panic!()
        };
        assert_eq!(addr, "10.0.0.1:2376");
        assert!(!tls.verify);
        // No TLS variable: plain HTTP on 2375; https:// is TLS without any variable.
        let e = resolve_engine_with(Some("tcp://10.0.0.1"), &env_of(&[])).unwrap();
        assert_eq!(
            e.transport,
            EngineTransport::Http {
                addr: "10.0.0.1:2375".into()
            }
        );
        let e = resolve_engine_with(Some("https://10.0.0.1:2376/"), &env_of(&[])).unwrap();
        assert!(matches!(e.transport, EngineTransport::Tls { ref tls, .. } if tls.verify));
        // Missing files are not used; DOCKER_CONFIG is the default certificate directory.
        let none = tempfile::tempdir().unwrap();
        let e = resolve_engine_with(
            Some("tcp://h:1"),
            &env_of(&[
                ("DOCKER_TLS_VERIFY", "1"),
                ("DOCKER_CONFIG", none.path().to_str().unwrap()),
            ]),
        )
        .unwrap();
        let EngineTransport::Tls { tls, .. } = e.transport else {
            panic!()
        };
        assert_eq!((tls.ca, tls.cert, tls.key), (None, None, None));
        assert!(tls.origin.contains(none.path().to_str().unwrap()));
    }

    #[test]
    fn bad_addresses_name_their_source() {
        let e = resolve_engine_with(None, &env_of(&[("DOCKER_HOST", "ftp://x")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("DOCKER_HOST") && e.contains("unsupported scheme"),
            "{e}"
        );
        let e = resolve_engine_with(Some("unix://"), &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("configured docker_host") && e.contains("socket path"),
            "{e}"
        );
        let e = resolve_engine_with(Some("tcp://h:1/x"), &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HOST:PORT"), "{e}");
    }

    #[test]
    fn ssh_addresses_parse_as_the_docker_cli_reads_them() {
        let t = SshTarget::parse("ssh://deploy@10.0.0.5:2222/run/user/1000/docker.sock").unwrap();
        assert_eq!(t.user.as_deref(), Some("deploy"));
        assert_eq!(t.host, "10.0.0.5");
        assert_eq!(t.port, Some(2222));
        assert_eq!(t.socket.as_deref(), Some("/run/user/1000/docker.sock"));
        assert_eq!(
            t.command(),
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=30",
                "-T",
                "-l",
                "deploy",
                "-p",
                "2222",
                "--",
                "10.0.0.5",
                "docker",
                "--host",
                "unix:///run/user/1000/docker.sock",
                "system",
                "dial-stdio"
            ]
        );
        let t = SshTarget::parse("ssh://host.example").unwrap();
        assert_eq!((&t.user, t.port, &t.socket), (&None, None, &None));
        assert_eq!(
            t.command()[6..],
            ["--", "host.example", "docker", "system", "dial-stdio"]
        );
        let t = SshTarget::parse("ssh://[::1]:22").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", Some(22)));
        for (bad, why) in [
            ("ssh://u:pw@h", "password"),
            ("ssh://-oProxyCommand=x", "'-'"),
            ("ssh://h:0", "port"),
            ("ssh://h:x", "port"),
            ("ssh://", "no host"),
            ("ssh://@h", "empty user"),
        ] {
            let e = SshTarget::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("pw"), "{e}");
        }
        let e = resolve_engine_with(None, &env_of(&[("DOCKER_HOST", "ssh://a:secretpw@h")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("password") && !e.contains("secretpw"), "{e}");
    }

    #[test]
    fn a_half_client_pair_is_refused_without_printing_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0a2V5Ynl0ZXM=\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let tls = EngineTls {
            ca: None,
            cert: None,
            key: Some(key.clone()),
            verify: false,
            origin: "DOCKER_CERT_PATH=x".into(),
        };
        let e = tls_config(&tls).unwrap_err();
        assert!(
            e.contains("no cert.pem") && e.contains("DOCKER_CERT_PATH=x"),
            "{e}"
        );
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        let tls = EngineTls {
            cert: Some(cert),
            ..tls
        };
        let e = tls_config(&tls).unwrap_err();
        assert!(e.contains("cert.pem") && !e.contains("c2VjcmV0"), "{e}");
    }
}

//! Connection settings: a URL or libpq keyword string, a password kept as a [`Secret`],
//! libpq's environment conventions, and TLS through rustls.

use super::DbError;
use super::error::redact_url_passwords_public;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tej_core::Secret;

/// How to reach one PostgreSQL database. `Debug` never shows the password.
#[derive(Clone)]
pub struct PgConnectOptions {
    conn_str: String,
    password: Option<Secret>,
    /// `application_name` reported to the server (when the connection string sets none).
    pub application_name: String,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// Connections in the pool (the daily check runs its queries on several at once).
    pub pool_size: usize,
    /// `statement_timeout` of ordinary read queries (maintenance statements set their own).
    pub query_timeout: Duration,
    /// Extra PEM file of CA certificates trusted for TLS, besides the system's.
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for PgConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConnectOptions")
            .field("conn_str", &redact_url_passwords_public(&self.conn_str))
            .field("password", &self.password)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_size", &self.pool_size)
            .field("query_timeout", &self.query_timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl PgConnectOptions {
    /// Options for a connection string: `postgres://user@host:port/db?sslmode=require`
    /// or `host=... port=... user=... dbname=... sslmode=...`.
    pub fn new(conn_str: impl Into<String>) -> PgConnectOptions {
        PgConnectOptions {
            conn_str: conn_str.into(),
            password: None,
            application_name: "tej".into(),
            connect_timeout: Duration::from_secs(5),
            pool_size: 8,
            query_timeout: Duration::from_secs(60),
            ca_file: None,
        }
    }

    /// Uses `password` unless the connection string carries one.
    pub fn with_password(mut self, password: Secret) -> PgConnectOptions {
        self.password = Some(password);
        self
    }

    /// From the environment: `DATABASE_URL`, else libpq's `PGHOST`, `PGPORT`, `PGUSER`,
    /// `PGDATABASE`, `PGSSLMODE`; `PGPASSWORD` supplies the password in both cases.
    pub fn from_env() -> Result<PgConnectOptions, DbError> {
        PgConnectOptions::from_env_with(&|k| std::env::var(k).ok())
    }

    /// [`from_env`](Self::from_env) with a custom variable lookup (for tests).
    pub fn from_env_with(
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PgConnectOptions, DbError> {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        let mut opts = if let Some(url) = get("DATABASE_URL") {
            PgConnectOptions::new(url)
        } else if let Some(conninfo) = tej_core::libpq::conninfo_from_env(env) {
            PgConnectOptions::new(conninfo)
        } else {
            return Err(DbError::InvalidConfig(
                "no database given: pass --db, or set DATABASE_URL or PGHOST/PGDATABASE".into(),
            ));
        };
        if let Some(pw) = get(tej_core::libpq::PASSWORD_VAR) {
            opts.password = Some(Secret::new(pw));
        }
        Ok(opts)
    }

    /// The connection string with any password masked.
    pub fn redacted(&self) -> String {
        redact_url_passwords_public(&self.conn_str)
    }

    /// Parses the settings into a driver configuration, applying libpq's defaults.
    pub(crate) fn resolve(&self) -> Result<Resolved, DbError> {
        let mut cfg = tokio_postgres::Config::from_str(&self.conn_str).map_err(|e| {
            DbError::InvalidConfig(format!(
                "cannot parse {:?}: {}",
                self.redacted(),
                redact_url_passwords_public(
                    &std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
                )
            ))
        })?;
        if cfg.get_user().is_none() {
            let user = std::env::var("PGUSER")
                .ok()
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "postgres".into());
            cfg.user(user);
        }
        if cfg.get_hosts().is_empty() {
            if Path::new("/var/run/postgresql").is_dir() {
                cfg.host_path("/var/run/postgresql");
            } else {
                cfg.host("localhost");
            }
        }
        if let (None, Some(pw)) = (cfg.get_password(), &self.password) {
            cfg.password(pw.expose());
        }
        if cfg.get_application_name().is_none() {
            cfg.application_name(&self.application_name);
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(self.connect_timeout);
        }
        let mut options = cfg.get_options().unwrap_or_default().to_string();
        if !options.contains("statement_timeout") {
            if !options.is_empty() {
                options.push(' ');
            }
            options.push_str(&format!(
                "-c statement_timeout={}",
                self.query_timeout.as_millis()
            ));
            cfg.options(&options);
        }
        let user = cfg.get_user().unwrap_or_default().to_string();
        let database = cfg
            .get_dbname()
            .map(str::to_string)
            .unwrap_or_else(|| user.clone());
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let (host, local) = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => (
                h.clone(),
                matches!(h.as_str(), "localhost" | "127.0.0.1" | "::1"),
            ),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => (p.display().to_string(), true),
            None => ("localhost".to_string(), true),
        };
        let tls = match cfg.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => None,
            _ => Some(tls_config(self.ca_file.as_deref())?),
        };
        Ok(Resolved {
            config: cfg,
            tls,
            user,
            database,
            target: format!("{host}:{port}"),
            local,
        })
    }
}

/// A parsed configuration plus what reports and errors need to know about it.
pub(crate) struct Resolved {
    pub config: tokio_postgres::Config,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub user: String,
    pub database: String,
    pub target: String,
    pub local: bool,
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

/// A rustls client configuration trusting the system's roots and `ca_file`.
fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, DbError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = system_roots().clone();
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| DbError::Tls(format!("cannot read CA file {}: {e}", path.display())))?;
        for c in certs {
            let c =
                c.map_err(|e| DbError::Tls(format!("bad certificate in {}: {e}", path.display())))?;
            roots
                .add(c)
                .map_err(|e| DbError::Tls(format!("bad certificate in {}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_prefers_database_url_then_pg_vars() {
        let env = |k: &str| match k {
            "DATABASE_URL" => Some("postgres://app@db:5433/main".to_string()),
            "PGPASSWORD" => Some("pw-from-env".to_string()),
            _ => None,
        };
        let o = PgConnectOptions::from_env_with(&env).unwrap();
        let r = o.resolve().unwrap();
        assert_eq!(r.target, "db:5433");
        assert_eq!(r.database, "main");
        assert_eq!(r.config.get_password(), Some(&b"pw-from-env"[..]));
        assert!(!format!("{o:?}").contains("pw-from-env"));

        let env = |k: &str| match k {
            "PGHOST" => Some("127.0.0.1".to_string()),
            "PGPORT" => Some("6543".to_string()),
            "PGUSER" => Some("ops".to_string()),
            "PGDATABASE" => Some("it's".to_string()),
            _ => None,
        };
        let r = PgConnectOptions::from_env_with(&env)
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(r.target, "127.0.0.1:6543");
        assert_eq!(r.user, "ops");
        assert_eq!(r.database, "it's");
        assert!(r.local);
        assert!(matches!(
            PgConnectOptions::from_env_with(&|_| None),
            Err(DbError::InvalidConfig(m)) if m.contains("DATABASE_URL")
        ));
    }

    #[test]
    fn bad_strings_are_config_errors_without_passwords() {
        let o = PgConnectOptions::new("postgres://u:sekrit99@h:notaport/db");
        match o.resolve() {
            Err(DbError::InvalidConfig(m)) => assert!(!m.contains("sekrit99"), "{m}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a bad port must not parse"),
        }
        assert!(!format!("{o:?}").contains("sekrit99"));
        assert!(!o.redacted().contains("sekrit99"));
    }

    #[test]
    fn statement_timeout_and_tls_follow_settings() {
        let r = PgConnectOptions::new("host=h user=u dbname=d sslmode=disable")
            .resolve()
            .unwrap();
        assert!(r.tls.is_none());
        assert!(
            r.config
                .get_options()
                .unwrap()
                .contains("statement_timeout=60000")
        );
        let r = PgConnectOptions::new("postgres://u@h/d?sslmode=require")
            .resolve()
            .unwrap();
        assert!(r.tls.is_some());
        assert!(!r.local);
        let missing = PgConnectOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..PgConnectOptions::new("postgres://u@h/d?sslmode=require")
        };
        assert!(matches!(missing.resolve(), Err(DbError::Tls(_))));
    }
}

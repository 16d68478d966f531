//! Connection settings as libpq reads them, and the one way tej connects to PostgreSQL.
//!
//! A connection string (URL or keyword/value), then the service it names (`service=` or
//! `PGSERVICE`, from `PGSERVICEFILE` or `~/.pg_service.conf`, then
//! `PGSYSCONFDIR/pg_service.conf`), then libpq's environment variables, then libpq's
//! defaults; the first to give a keyword wins, in that order (libpq's). Without a password,
//! the password file (`passfile`, `PGPASSFILE` or `~/.pgpass`) is read. TLS follows
//! `sslmode` with libpq's meanings (see [`super::tls`]); [`PgConnector`] is the one place a
//! connection is opened, for the pool and the base-backup session alike.

use super::DbError;
use super::conninfo::{self, Conninfo};
use super::error::redact_url_passwords_public;
use super::pgfiles;
use super::tls::{self, Roots, TlsSettings, Verify};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tej_core::Secret;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;

/// Where libpq looks for the server's unix socket by default (Debian's build).
const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// Variables read besides the keyword variables: the OS user's home and name.
const OTHER_VARS: [&str; 2] = ["HOME", "USER"];

/// How to reach one PostgreSQL database. `Debug` never shows the password.
#[derive(Clone)]
pub struct PgConnectOptions {
    conn_str: String,
    password: Option<Secret>,
    /// Variables captured by [`from_env_with`](Self::from_env_with); the process
    /// environment when `None`.
    env: Option<Arc<BTreeMap<String, String>>>,
    /// `application_name` reported to the server when neither the connection string, the
    /// service nor `PGAPPNAME` sets one (libpq's `fallback_application_name`).
    pub application_name: String,
    /// How long to wait for a connection when neither `connect_timeout` nor
    /// `PGCONNECT_TIMEOUT` says.
    pub connect_timeout: Duration,
    /// Connections in the pool (the daily check runs its queries on several at once).
    pub pool_size: usize,
    /// `statement_timeout` of ordinary read queries (maintenance statements set their own).
    pub query_timeout: Duration,
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
            .finish_non_exhaustive()
    }
}

impl PgConnectOptions {
    /// Options for a connection string: `postgres://user@host:port/db?sslmode=require`
    /// or `host=... port=... user=... dbname=... sslmode=...` (libpq's keywords; an empty
    /// string leaves everything to the service file, the environment and the defaults).
    pub fn new(conn_str: impl Into<String>) -> PgConnectOptions {
        PgConnectOptions {
            conn_str: conn_str.into(),
            password: None,
            env: None,
            application_name: "tej".into(),
            connect_timeout: Duration::from_secs(5),
            pool_size: 8,
            query_timeout: Duration::from_secs(60),
        }
    }

    /// Uses `password` unless the connection string carries one (it wins over a service
    /// file, `PGPASSWORD` and the password file).
    pub fn with_password(mut self, password: Secret) -> PgConnectOptions {
        self.password = Some(password);
        self
    }

    /// From the environment: `DATABASE_URL` as the connection string, else libpq's
    /// variables alone (`PGHOST`, `PGHOSTADDR`, `PGDATABASE` or `PGSERVICE` must name a
    /// server). libpq's variables fill in what the connection string leaves out either way.
    pub fn from_env() -> Result<PgConnectOptions, DbError> {
        PgConnectOptions::from_env_with(&|k| std::env::var(k).ok())
    }

    /// [`from_env`](Self::from_env) with a custom variable lookup (for tests); the
    /// variables tej reads are captured now and used instead of the process environment.
    pub fn from_env_with(
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PgConnectOptions, DbError> {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        let conn = if let Some(url) = get("DATABASE_URL") {
            url
        } else if tej_core::libpq::conninfo_from_env(env).is_some() {
            String::new()
        } else {
            return Err(DbError::InvalidConfig(
                "no database given: pass --db, or set DATABASE_URL, PGHOST, PGDATABASE or \
                 PGSERVICE"
                    .into(),
            ));
        };
        let names = tej_core::libpq::ENV_KEYWORDS
            .iter()
            .map(|(var, _)| *var)
            .chain([tej_core::libpq::PASSWORD_VAR])
            .chain(tej_core::libpq::FILE_VARS)
            .chain(OTHER_VARS);
        let captured = names
            .filter_map(|k| get(k).map(|v| (k.to_string(), v)))
            .collect();
        Ok(PgConnectOptions {
            env: Some(Arc::new(captured)),
            ..PgConnectOptions::new(conn)
        })
    }

    /// The connection string with any password masked.
    pub fn redacted(&self) -> String {
        redact_url_passwords_public(&self.conn_str)
    }

    /// A variable (empty ones count as unset, as tej has always read them).
    fn var(&self, k: &str) -> Option<String> {
        match &self.env {
            Some(m) => m.get(k).cloned(),
            None => std::env::var(k).ok(),
        }
        .filter(|v| !v.is_empty())
    }

    fn invalid(&self, what: impl fmt::Display) -> DbError {
        DbError::InvalidConfig(format!("{:?}: {what}", self.redacted()))
    }

    /// The OS user's home directory: `HOME`, else the password database's.
    fn home(&self) -> Option<PathBuf> {
        self.var("HOME").map(PathBuf::from).or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        })
    }

    /// Every keyword with its value after the connection string, the service file and the
    /// environment (in libpq's order of precedence), and the password they give.
    fn settings(&self) -> Result<(Conninfo, Option<Secret>), DbError> {
        let mut s = conninfo::parse(&self.conn_str).map_err(|e| self.invalid(e))?;
        let explicit_pw = s
            .remove("password")
            .map(Secret::new)
            .or_else(|| self.password.clone());
        if let Some(name) = s.get("service").cloned().or_else(|| self.var("PGSERVICE")) {
            let user_file = self
                .var("PGSERVICEFILE")
                .map(PathBuf::from)
                .or_else(|| self.home().map(|h| h.join(".pg_service.conf")));
            let sysconf = self
                .var("PGSYSCONFDIR")
                .unwrap_or_else(|| pgfiles::DEFAULT_SYSCONFDIR.into());
            let service = pgfiles::service_settings(&name, user_file.as_deref(), sysconf.as_ref())
                .map_err(|e| self.invalid(e))?;
            for (k, v) in service {
                s.entry(k).or_insert(v);
            }
        }
        let service_pw = s.remove("password").map(Secret::new);
        for (var, key) in tej_core::libpq::ENV_KEYWORDS {
            if !s.contains_key(key)
                && let Some(v) = self.var(var)
            {
                s.insert(key.to_string(), v);
            }
        }
        let password = explicit_pw
            .or(service_pw)
            .or_else(|| self.var(tej_core::libpq::PASSWORD_VAR).map(Secret::new));
        Ok((s, password))
    }

    /// Resolves the settings into a driver configuration and the connector to open it with.
    pub(crate) fn resolve(&self) -> Result<Resolved, DbError> {
        let (s, mut password) = self.settings()?;
        let get = |k: &str| s.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let mut cfg = tokio_postgres::Config::new();

        // Where: host (names or socket directories), hostaddr, port.
        let hostaddrs: Vec<std::net::IpAddr> = match get("hostaddr") {
            Some(list) => list
                .split(',')
                .map(|a| {
                    a.trim().parse().map_err(|_| {
                        self.invalid(format!("invalid hostaddr {a:?}: an IP address is needed"))
                    })
                })
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let hosts: Vec<String> = match get("host") {
            Some(list) => list.split(',').map(str::to_string).collect(),
            None if !hostaddrs.is_empty() => hostaddrs.iter().map(|a| a.to_string()).collect(),
            None if Path::new(DEFAULT_SOCKET_DIR).is_dir() => vec![DEFAULT_SOCKET_DIR.into()],
            None => vec!["localhost".into()],
        };
        if !hostaddrs.is_empty() && hostaddrs.len() != hosts.len() {
            return Err(self.invalid(format!(
                "could not match {} host names to {} hostaddr values",
                hosts.len(),
                hostaddrs.len()
            )));
        }
        for h in &hosts {
            if h.starts_with('/') {
                cfg.host_path(h);
            } else {
                cfg.host(if h.is_empty() { "localhost" } else { h });
            }
        }
        for a in &hostaddrs {
            cfg.hostaddr(*a);
        }
        let ports: Vec<u16> = match get("port") {
            Some(list) => list
                .split(',')
                .map(|p| match p.trim() {
                    "" => Ok(5432),
                    p => p
                        .parse()
                        .map_err(|_| self.invalid(format!("invalid port number: {p:?}"))),
                })
                .collect::<Result<_, _>>()?,
            None => vec![5432],
        };
        if ports.len() != 1 && ports.len() != hosts.len() {
            return Err(self.invalid(format!(
                "could not match {} port numbers to {} hosts",
                ports.len(),
                hosts.len()
            )));
        }
        for p in &ports {
            cfg.port(*p);
        }

        // Who: user (the OS user by default), database (the user's name by default).
        let user = match get("user") {
            Some(u) => u.to_string(),
            None => nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .or_else(|| self.var("USER"))
                .unwrap_or_else(|| "postgres".into()),
        };
        let database = get("dbname").unwrap_or(&user).to_string();
        cfg.user(&user).dbname(&database);
        if password.is_none() {
            let passfile = get("passfile")
                .map(PathBuf::from)
                .or_else(|| self.home().map(|h| h.join(".pgpass")));
            if let Some(file) = passfile {
                let host = match hosts[0].as_str() {
                    "" | DEFAULT_SOCKET_DIR => "localhost",
                    h => h,
                };
                password =
                    pgfiles::pgpass_password(&file, host, &ports[0].to_string(), &database, &user);
            }
        }
        if let Some(pw) = &password {
            cfg.password(pw.expose());
        }

        // Session: application_name, options with statement_timeout, timeouts.
        cfg.application_name(
            get("application_name")
                .or(get("fallback_application_name"))
                .unwrap_or(&self.application_name),
        );
        let mut options = get("options").unwrap_or_default().to_string();
        if !options.contains("statement_timeout") {
            if !options.is_empty() {
                options.push(' ');
            }
            options.push_str(&format!(
                "-c statement_timeout={}",
                self.query_timeout.as_millis()
            ));
        }
        cfg.options(&options);
        let connect_timeout = match get("connect_timeout") {
            None => Some(self.connect_timeout),
            Some(v) => match v.trim().parse::<i64>() {
                // libpq: zero or less waits forever; under 2 seconds means 2.
                Ok(n) if n <= 0 => None,
                Ok(n) => Some(Duration::from_secs(n.max(2) as u64)),
                Err(_) => return Err(self.invalid(int_error(v, "connect_timeout"))),
            },
        };
        if let Some(t) = connect_timeout {
            cfg.connect_timeout(t);
        }
        self.session_keywords(&s, &mut cfg)?;

        // TLS.
        let sslmode = get("sslmode").unwrap_or("prefer");
        let plan = match sslmode {
            "disable" => SslPlan::Disable,
            "allow" => SslPlan::Allow,
            "prefer" => SslPlan::Prefer,
            "require" | "verify-ca" | "verify-full" => SslPlan::Require,
            other => return Err(self.invalid(format!("invalid sslmode value: {other:?}"))),
        };
        let direct = match get("sslnegotiation") {
            None | Some("postgres") => false,
            Some("direct") if plan == SslPlan::Require => true,
            Some("direct") => {
                return Err(self.invalid(format!(
                    "weak sslmode {sslmode:?} may not be used with sslnegotiation=direct \
                     (use \"require\", \"verify-ca\", or \"verify-full\")"
                )));
            }
            Some(other) => {
                return Err(self.invalid(format!("invalid sslnegotiation value: {other:?}")));
            }
        };
        if direct {
            cfg.ssl_negotiation(tokio_postgres::config::SslNegotiation::Direct);
        }
        // TLS is never used over unix sockets (libpq ignores sslmode there).
        let all_unix = hosts.iter().all(|h| h.starts_with('/'));
        let tls = if plan == SslPlan::Disable || all_unix {
            None
        } else {
            let settings = self.tls_settings(&s, sslmode, direct)?;
            Some(tokio_postgres_rustls::MakeRustlsConnect::new(
                tls::client_config(&settings)?,
            ))
        };
        let plan = if tls.is_none() {
            SslPlan::Disable
        } else {
            plan
        };
        cfg.ssl_mode(match plan {
            SslPlan::Disable | SslPlan::Allow => SslMode::Disable,
            SslPlan::Prefer => SslMode::Prefer,
            SslPlan::Require => SslMode::Require,
        });

        let (host, local) = match hosts[0].as_str() {
            h if h.starts_with('/') => (h.to_string(), true),
            h => (
                h.to_string(),
                matches!(h, "localhost" | "127.0.0.1" | "::1"),
            ),
        };
        Ok(Resolved {
            config: cfg,
            connector: PgConnector { plan, tls },
            connect_timeout,
            user,
            database,
            target: format!("{host}:{}", ports[0]),
            local,
        })
    }

    /// Keepalives, TCP user timeout, target_session_attrs, channel_binding,
    /// load_balance_hosts, and the keywords tej accepts only with the values it supports.
    fn session_keywords(
        &self,
        s: &Conninfo,
        cfg: &mut tokio_postgres::Config,
    ) -> Result<(), DbError> {
        use tokio_postgres::config::{ChannelBinding, LoadBalanceHosts, TargetSessionAttrs};
        let get = |k: &str| s.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let int = |k: &str| -> Result<Option<u64>, DbError> {
            get(k)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| self.invalid(int_error(v, k)))
                })
                .transpose()
        };
        if let Some(v) = get("keepalives") {
            cfg.keepalives(match v {
                "0" => false,
                "1" => true,
                _ => return Err(self.invalid(int_error(v, "keepalives"))),
            });
        }
        if let Some(n) = int("keepalives_idle")? {
            cfg.keepalives_idle(Duration::from_secs(n));
        }
        if let Some(n) = int("keepalives_interval")? {
            cfg.keepalives_interval(Duration::from_secs(n));
        }
        if let Some(n) = int("keepalives_count")? {
            cfg.keepalives_retries(n.min(u64::from(u32::MAX)) as u32);
        }
        if let Some(n) = int("tcp_user_timeout")? {
            cfg.tcp_user_timeout(Duration::from_millis(n));
        }
        let bad = |k: &str, v: &str, hint: &str| {
            self.invalid(format!("{k}={v:?} is not supported by tej ({hint})"))
        };
        if let Some(v) = get("target_session_attrs") {
            cfg.target_session_attrs(match v {
                "any" => TargetSessionAttrs::Any,
                "read-write" => TargetSessionAttrs::ReadWrite,
                "read-only" => TargetSessionAttrs::ReadOnly,
                v => return Err(bad("target_session_attrs", v, "any, read-write, read-only")),
            });
        }
        if let Some(v) = get("channel_binding") {
            cfg.channel_binding(match v {
                "disable" => ChannelBinding::Disable,
                "prefer" => ChannelBinding::Prefer,
                "require" => ChannelBinding::Require,
                v => return Err(bad("channel_binding", v, "disable, prefer, require")),
            });
        }
        if let Some(v) = get("load_balance_hosts") {
            cfg.load_balance_hosts(match v {
                "disable" => LoadBalanceHosts::Disable,
                "random" => LoadBalanceHosts::Random,
                v => return Err(bad("load_balance_hosts", v, "disable, random")),
            });
        }
        if let Some(v) = get("client_encoding")
            && !matches!(
                v.to_ascii_uppercase().as_str(),
                "UTF8" | "UTF-8" | "UNICODE" | "AUTO"
            )
        {
            return Err(bad("client_encoding", v, "tej speaks UTF8"));
        }
        if let Some(v) = get("gssencmode")
            && !matches!(v, "disable" | "prefer")
        {
            return Err(bad("gssencmode", v, "tej has no GSSAPI: disable, prefer"));
        }
        Ok(())
    }

    /// Roots, verification and client certificate as libpq picks them: `sslrootcert`
    /// (or `~/.postgresql/root.crt`) turns verification on when the file exists, and
    /// `verify-ca`/`verify-full` need it; `sslcert`/`sslkey` default to
    /// `~/.postgresql/postgresql.crt` and `.key`, used when the certificate exists.
    fn tls_settings(
        &self,
        s: &Conninfo,
        sslmode: &str,
        direct: bool,
    ) -> Result<TlsSettings, DbError> {
        let get = |k: &str| s.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let dot = self.home().map(|h| h.join(".postgresql"));
        let in_dot = |name: &str| dot.as_ref().map(|d| d.join(name));
        let wants_verify = sslmode.starts_with("verify-");
        let roots = match get("sslrootcert") {
            Some("system") => {
                if sslmode != "verify-full" {
                    return Err(self.invalid(format!(
                        "weak sslmode {sslmode:?} may not be used with sslrootcert=system \
                         (use \"verify-full\")"
                    )));
                }
                Some(Roots::System)
            }
            explicit => {
                let path = explicit.map(PathBuf::from).or_else(|| in_dot("root.crt"));
                match path {
                    Some(p) if p.exists() => Some(Roots::File(p)),
                    p if wants_verify => {
                        let shown = p.map_or_else(
                            || "~/.postgresql/root.crt".to_string(),
                            |p| p.display().to_string(),
                        );
                        return Err(DbError::Tls(format!(
                            "root certificate file \"{shown}\" does not exist; either provide \
                             the file, use the system's trusted roots with sslrootcert=system, \
                             or change sslmode to disable server certificate verification"
                        )));
                    }
                    _ => None,
                }
            }
        };
        let verify = match (sslmode, &roots) {
            ("verify-full", _) => Verify::Full,
            (_, Some(_)) => Verify::Chain,
            (_, None) => Verify::Nothing,
        };
        let cert = get("sslcert")
            .map(PathBuf::from)
            .or_else(|| in_dot("postgresql.crt"));
        let client = match cert.filter(|c| c.exists()) {
            None => None,
            Some(cert) => {
                let key = get("sslkey")
                    .map(PathBuf::from)
                    .or_else(|| in_dot("postgresql.key"))
                    .filter(|k| k.exists())
                    .ok_or_else(|| {
                        DbError::Tls(format!(
                            "certificate present, but not private key file (sslkey) for \"{}\"",
                            cert.display()
                        ))
                    })?;
                Some((cert, key))
            }
        };
        Ok(TlsSettings {
            verify,
            roots,
            client,
            direct,
        })
    }
}

fn int_error(v: &str, k: &str) -> String {
    format!("invalid integer value {v:?} for connection option \"{k}\"")
}

/// What a connection attempt does about TLS (libpq's `sslmode`, `verify-*` being `Require`
/// with verification in the TLS configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslPlan {
    /// Plain only.
    Disable,
    /// Plain first; TLS when the server refuses the plain session.
    Allow,
    /// TLS when the server offers it; plain when the TLS session fails or is refused.
    Prefer,
    /// TLS or nothing.
    Require,
}

/// Opens connections as libpq would for the resolved settings: the one place tej connects
/// to PostgreSQL (the pool's connections and the base-backup session).
#[derive(Clone)]
pub(crate) struct PgConnector {
    plan: SslPlan,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl PgConnector {
    /// Connects with `config` and runs the connection on a task; the handle ends with it.
    pub(crate) async fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<(tokio_postgres::Client, JoinHandle<()>), tokio_postgres::Error> {
        let mut config = config.clone();
        let Some(tls) = self.tls.clone() else {
            config.ssl_mode(SslMode::Disable);
            return spawn(config.connect(tokio_postgres::NoTls).await?);
        };
        match self.plan {
            SslPlan::Disable => {
                config.ssl_mode(SslMode::Disable);
                spawn(config.connect(tokio_postgres::NoTls).await?)
            }
            SslPlan::Allow => {
                config.ssl_mode(SslMode::Disable);
                match config.connect(tokio_postgres::NoTls).await {
                    Err(plain) if plain.as_db_error().is_some() => {
                        config.ssl_mode(SslMode::Require);
                        match config.connect(tls).await {
                            // A server without TLS: its refusal of the plain session is
                            // what to report (a wrong password, say).
                            Err(e) if e.as_db_error().is_none() => Err(plain),
                            r => spawn(r?),
                        }
                    }
                    r => spawn(r?),
                }
            }
            SslPlan::Prefer => {
                config.ssl_mode(SslMode::Prefer);
                match config.connect(tls).await {
                    Err(e) if e.as_db_error().is_some() || is_tls_error(&e) => {
                        config.ssl_mode(SslMode::Disable);
                        spawn(config.connect(tokio_postgres::NoTls).await?)
                    }
                    r => spawn(r?),
                }
            }
            SslPlan::Require => {
                config.ssl_mode(SslMode::Require);
                spawn(config.connect(tls).await?)
            }
        }
    }
}

impl deadpool_postgres::Connect for PgConnector {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> futures::future::BoxFuture<
        '_,
        Result<(tokio_postgres::Client, JoinHandle<()>), tokio_postgres::Error>,
    > {
        let config = pg_config.clone();
        Box::pin(async move { PgConnector::connect(self, &config).await })
    }
}

fn is_tls_error(e: &tokio_postgres::Error) -> bool {
    e.to_string().starts_with("error performing TLS handshake")
}

/// Runs a connection on its own task.
fn spawn<S, T>(
    (client, connection): (tokio_postgres::Client, tokio_postgres::Connection<S, T>),
) -> Result<(tokio_postgres::Client, JoinHandle<()>), tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let handle = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok((client, handle))
}

/// A parsed configuration, its connector, and what reports and errors need to know.
pub(crate) struct Resolved {
    pub config: tokio_postgres::Config,
    pub connector: PgConnector,
    /// The wait for one connection attempt (`None`: forever).
    pub connect_timeout: Option<Duration>,
    pub user: String,
    pub database: String,
    pub target: String,
    pub local: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with_env(conn: &str, vars: &[(&str, &str)]) -> PgConnectOptions {
        let mut env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert("DATABASE_URL".into(), conn.into());
        env.entry("HOME".into())
            .or_insert_with(|| "/nonexistent".into());
        PgConnectOptions::from_env_with(&|k| env.get(k).cloned()).unwrap()
    }

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
    fn connection_string_beats_service_beats_environment() {
        let dir = tempfile::tempdir().unwrap();
        let svc = dir.path().join("svc.conf");
        std::fs::write(&svc, "[s]\nport=5888\nuser=svcuser\npassword=svc-pw\n").unwrap();
        let svc = svc.display().to_string();
        let vars = [
            ("PGSERVICEFILE", svc.as_str()),
            ("PGPORT", "5999"),
            ("PGUSER", "envuser"),
            ("PGDATABASE", "envdb"),
            ("PGHOST", "envhost"),
            ("PGPASSWORD", "env-pw"),
            ("PGAPPNAME", "from-env"),
            ("PGCONNECT_TIMEOUT", "1"),
            ("PGSSLMODE", "disable"),
        ];
        // The service fills what the string leaves out and beats the environment (libpq).
        let r = with_env("service=s port=5777", &vars).resolve().unwrap();
        assert_eq!(r.target, "envhost:5777");
        assert_eq!(r.user, "svcuser");
        assert_eq!(r.database, "envdb");
        assert_eq!(r.config.get_password(), Some(&b"svc-pw"[..]));
        assert_eq!(r.config.get_application_name(), Some("from-env"));
        // libpq's minimum: under 2 seconds means 2.
        assert_eq!(r.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(r.config.get_ssl_mode(), SslMode::Disable);
        // PGSERVICE names the service when the string does not.
        let mut with_service = vars.to_vec();
        with_service.push(("PGSERVICE", "s"));
        let r = with_env("", &with_service).resolve().unwrap();
        assert_eq!(r.target, "envhost:5888");
        // Without a service, the environment; a password in the string wins over all.
        let r = with_env(
            "postgres://u:url-pw@h/db?application_name=mine&connect_timeout=0",
            &vars,
        )
        .resolve()
        .unwrap();
        assert_eq!(r.target, "h:5999");
        assert_eq!(r.config.get_password(), Some(&b"url-pw"[..]));
        assert_eq!(r.config.get_application_name(), Some("mine"));
        assert_eq!(r.connect_timeout, None);
        // Nothing set: tej's name as the fallback, its own timeout, prefer.
        let r = with_env("host=h", &[]).resolve().unwrap();
        assert_eq!(r.config.get_application_name(), Some("tej"));
        assert_eq!(r.connect_timeout, Some(Duration::from_secs(5)));
        assert_eq!(r.connector.plan, SslPlan::Prefer);
        let e = with_env("service=none", &vars).resolve().err().unwrap();
        assert!(
            e.to_string()
                .contains("definition of service \"none\" not found"),
            "{e}"
        );
    }

    #[test]
    fn bad_strings_are_config_errors_without_passwords() {
        for s in [
            "postgres://u:sekrit99@h:notaport/db",
            "host=h password=sekrit99 connect_timeout=soon",
            "host=h password=sekrit99 sslmode=always",
            "host=h password=sekrit99 target_session_attrs=primary",
            "host=h password='sekrit99",
            "postgres://u:sekrit99@h/db?nosuch=1",
        ] {
            let o = PgConnectOptions::new(s);
            match o.resolve() {
                Err(DbError::InvalidConfig(m)) => assert!(!m.contains("sekrit99"), "{m}"),
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => panic!("{s} must not resolve"),
            }
            assert!(!format!("{o:?}").contains("sekrit99"));
            assert!(!o.redacted().contains("sekrit99"));
        }
    }

    #[test]
    fn sslmodes_map_to_plans_and_verification_needs_roots() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().display().to_string();
        let plan = |conn: &str| {
            with_env(conn, &[("HOME", &home)])
                .resolve()
                .map(|r| (r.connector.plan, r.connector.tls.is_some()))
        };
        assert_eq!(
            plan("host=h sslmode=disable").unwrap(),
            (SslPlan::Disable, false)
        );
        assert_eq!(
            plan("host=h sslmode=allow").unwrap(),
            (SslPlan::Allow, true)
        );
        assert_eq!(plan("host=h").unwrap(), (SslPlan::Prefer, true));
        assert_eq!(
            plan("host=h sslmode=require").unwrap(),
            (SslPlan::Require, true)
        );
        // Unix sockets never use TLS.
        assert_eq!(
            plan("host=/tmp sslmode=require").unwrap(),
            (SslPlan::Disable, false)
        );
        let e = plan("host=h sslmode=verify-full").unwrap_err();
        assert!(e.to_string().contains("root.crt"), "{e}");
        assert!(plan("host=h sslmode=require sslrootcert=system").is_err());
        assert!(plan("host=h sslmode=verify-full sslrootcert=system").is_ok());
        assert!(plan("host=h sslmode=prefer sslnegotiation=direct").is_err());
        let r = with_env("host=h hostaddr=10.0.0.1 statement_timeout=1", &[]).resolve();
        assert!(r.is_err(), "statement_timeout is not a connection keyword");
        let r = with_env("hostaddr=10.0.0.1 port=6000 user=u", &[])
            .resolve()
            .unwrap();
        assert_eq!(r.target, "10.0.0.1:6000");
        assert_eq!(r.database, "u");
        let r = with_env("host=h sslmode=disable", &[]).resolve().unwrap();
        assert!(
            r.config
                .get_options()
                .unwrap()
                .contains("statement_timeout=60000")
        );
    }
}

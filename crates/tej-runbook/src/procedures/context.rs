//! What a procedure run works on: every target of `tej.toml` as a domain-trait object or a
//! lazily connected client, each with the name it is reported under, plus the run's options.
//!
//! Nothing here connects eagerly: a dead Redis or Docker engine becomes a finding of the check
//! that needed it when it first asks ([`Lazy::get`]), never an error building the context.

use async_trait::async_trait;
use futures::future::BoxFuture;
use jiff::SignedDuration;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tej_backup::Repository;
use tej_core::config::{
    ComposeConfig, HostConfig, LogsConfig, TlsEndpointConfig, validate_repository,
};
use tej_core::secret::redact_url_passwords;
use tej_core::{Config, Finding, Severity};
use tej_db::redis::{RedisAdmin, RedisClient, RedisConnectOptions};
use tej_db::{PgAdmin, PgClient, PgConnectOptions};
use tej_deploy::{BollardRuntime, ContainerRuntime, ImageStore, Project};
use tej_host::ResourceOptions;

use crate::custom_checks::{CustomCheckOptions, QueryRunner};
use crate::error::{Result, RunbookError};
use crate::runner::RunnerOptions;

/// How a [`Lazy`] client is made: an async function run on first use.
pub type Connect<T> = Arc<dyn Fn() -> BoxFuture<'static, Result<T>> + Send + Sync>;

/// A client connected on first use and then shared; a failed connection is not cached, so a
/// later check tries again.
pub struct Lazy<T> {
    inner: Arc<LazyInner<T>>,
}

struct LazyInner<T> {
    cell: tokio::sync::OnceCell<T>,
    connect: Connect<T>,
}

impl<T> Clone for Lazy<T> {
    fn clone(&self) -> Self {
        Lazy {
            inner: self.inner.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Lazy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lazy")
            .field("connected", &self.inner.cell.initialized())
            .finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync + 'static> Lazy<T> {
    /// A client made by `connect` when first needed.
    pub fn new<F, Fut>(connect: F) -> Lazy<T>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        Lazy::from_parts(
            tokio::sync::OnceCell::new(),
            Arc::new(move || Box::pin(connect())),
        )
    }

    /// A client that is already there (tests, or one connected elsewhere).
    pub fn ready(value: T) -> Lazy<T> {
        Lazy::from_parts(
            tokio::sync::OnceCell::new_with(Some(value.clone())),
            Arc::new(move || {
                let v = value.clone();
                Box::pin(async move { Ok(v) })
            }),
        )
    }

    /// A client that can never be made, with the reason (an unreadable password file...):
    /// each [`Lazy::get`] fails with [`RunbookError::Unavailable`].
    pub fn failed(reason: impl Into<String>) -> Lazy<T> {
        let reason = reason.into();
        Lazy::from_parts(
            tokio::sync::OnceCell::new(),
            Arc::new(move || {
                let r = reason.clone();
                Box::pin(async move { Err(RunbookError::Unavailable(r)) })
            }),
        )
    }

    fn from_parts(cell: tokio::sync::OnceCell<T>, connect: Connect<T>) -> Lazy<T> {
        Lazy {
            inner: Arc::new(LazyInner { cell, connect }),
        }
    }

    /// The client, connecting now if needed; the error is the connection's own
    /// ([`RunbookError::Db`] for a database or Redis server, [`RunbookError::Backup`] for a
    /// repository, [`RunbookError::Deploy`] for the Docker engine), safe to print.
    pub async fn get(&self) -> Result<T> {
        self.inner
            .cell
            .get_or_try_init(|| (self.inner.connect)())
            .await
            .cloned()
    }
}

/// One `[[database]]`.
#[derive(Clone)]
pub struct DatabaseTarget {
    /// Its name in `tej.toml` (`main`); findings say `db:<name>`.
    pub name: String,
    /// The database (a pool that connects lazily).
    pub admin: Arc<dyn PgAdmin>,
}

impl std::fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseTarget")
            .field("name", &self.name)
            .field("target", &self.admin.target())
            .finish()
    }
}

/// One `[[redis]]`.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    /// Its name in `tej.toml` (`cache`); findings say `redis:<name>`.
    pub name: String,
    /// The server, connected on first use.
    pub client: Lazy<Arc<dyn RedisAdmin>>,
    /// How to reach it again for custom commands (password resolved, never printed).
    pub connect: Option<RedisConnectOptions>,
}

/// The Docker engine's two faces tej uses.
#[derive(Clone)]
pub struct DockerClients {
    /// Containers.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Images.
    pub images: Arc<dyn ImageStore>,
}

impl std::fmt::Debug for DockerClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerClients").finish_non_exhaustive()
    }
}

/// The `[compose]` project.
#[derive(Debug, Clone)]
pub struct ComposeTarget {
    /// The project (its name is the target, `compose:<project>`).
    pub project: Project,
    /// The application's health endpoint.
    pub health_url: Option<String>,
    /// The engine, connected on first use.
    pub docker: Lazy<DockerClients>,
}

/// One backup repository of `[backup] repositories`.
#[derive(Debug, Clone)]
pub struct RepositoryTarget {
    /// The repository as written in `tej.toml` (passwords masked); findings say `repo:<name>`.
    pub name: String,
    /// The repository, opened on first use.
    pub repo: Lazy<Arc<Repository>>,
}

/// Probes a TLS endpoint; the real one is [`RustlsProber`].
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait TlsProber: Send + Sync {
    /// The findings of probing `endpoint` (expiry, chain, host name, file served); a failure
    /// to connect is a critical finding, never an error.
    async fn probe(&self, endpoint: &TlsEndpointConfig) -> Vec<Finding>;
}

/// [`TlsProber`] over `tej_secrets::probe_tls`.
#[derive(Debug, Clone, Default)]
pub struct RustlsProber {
    /// Trust only these CAs instead of the system roots (test endpoints).
    pub ca_file: Option<PathBuf>,
    /// Connect and handshake limit.
    pub timeout: Option<Duration>,
}

#[async_trait]
impl TlsProber for RustlsProber {
    async fn probe(&self, endpoint: &TlsEndpointConfig) -> Vec<Finding> {
        let mut opts = tej_secrets::TlsProbeOptions {
            server_name: endpoint.server_name.clone(),
            ca_file: endpoint.ca_file.clone().or_else(|| self.ca_file.clone()),
            cert_file: endpoint.cert_file.clone(),
            ..Default::default()
        };
        if let Some(t) = self.timeout {
            opts.timeout = t;
        }
        opts.thresholds.warn_days = f64::from(endpoint.warn_days);
        opts.thresholds.crit_days = f64::from(endpoint.crit_days);
        match tej_secrets::probe_tls(&endpoint.endpoint, &opts).await {
            Ok(p) => p.findings,
            Err(e) => vec![
                Finding::new(
                    "tls.probe",
                    Severity::Unknown,
                    format!("cannot probe {}: {e}", endpoint.endpoint),
                )
                .target(format!("tls:{}", endpoint.endpoint)),
            ],
        }
    }
}

/// The answer to one timed HTTP probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpTiming {
    /// HTTP status code.
    pub status: u16,
    /// Time from sending the request to the end of the response body.
    pub elapsed: Duration,
}

/// Times GET requests (the performance check's fallback without an access log).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait HttpProber: Send + Sync {
    /// One GET of `url`; a transport failure is [`RunbookError::HttpProbe`].
    async fn get(&self, url: &str) -> Result<HttpTiming>;
}

/// [`HttpProber`] over reqwest.
#[derive(Debug, Clone)]
pub struct ReqwestProber {
    client: reqwest::Client,
}

impl ReqwestProber {
    /// A prober whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> ReqwestProber {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        ReqwestProber { client }
    }
}

#[async_trait]
impl HttpProber for ReqwestProber {
    async fn get(&self, url: &str) -> Result<HttpTiming> {
        let failed =
            |e: reqwest::Error| RunbookError::HttpProbe(redact_url_passwords(&e.to_string()));
        let start = Instant::now();
        let resp = self.client.get(url).send().await.map_err(failed)?;
        let status = resp.status().as_u16();
        resp.bytes().await.map_err(failed)?;
        Ok(HttpTiming {
            status,
            elapsed: start.elapsed(),
        })
    }
}

/// How a run behaves (not what it covers: that is the configuration).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Time limit of one check once started.
    pub check_timeout: Duration,
    /// Concurrency, overall and per target.
    pub runner: RunnerOptions,
    /// The newest backup must be younger than this (the runbook's daily backup plus slack: 26 h).
    pub backup_max_age: SignedDuration,
    /// Log window reviewed by the daily check.
    pub log_window: SignedDuration,
    /// Access-log window of the performance check (it runs twice a day).
    pub performance_window: SignedDuration,
    /// Last WAL archived longer ago than this while the server had WAL to archive: warning.
    pub wal_archive_max_age: SignedDuration,
    /// Timed probes of the health URL when there is no access log.
    pub health_probes: usize,
    /// Run a restore test on the newest backup in the weekly audit (needs a scratch server).
    pub restore_test: Option<tej_backup::RestoreTestOptions>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            check_timeout: Duration::from_secs(60),
            runner: RunnerOptions::default(),
            backup_max_age: SignedDuration::from_hours(26),
            log_window: SignedDuration::from_hours(24),
            performance_window: SignedDuration::from_hours(6),
            wal_archive_max_age: SignedDuration::from_hours(1),
            health_probes: 10,
            restore_test: None,
        }
    }
}

/// Everything one procedure run covers.
pub struct RunContext {
    /// The configuration the context was built from (custom checks, encryption, retention...).
    pub config: Config,
    /// Each `[[database]]`.
    pub databases: Vec<DatabaseTarget>,
    /// Each `[[redis]]`.
    pub redis: Vec<RedisTarget>,
    /// The `[compose]` project, if any.
    pub compose: Option<ComposeTarget>,
    /// Each backup repository.
    pub repositories: Vec<RepositoryTarget>,
    /// Each `[[tls]]` endpoint.
    pub tls: Vec<TlsEndpointConfig>,
    /// Probes the TLS endpoints.
    pub tls_prober: Arc<dyn TlsProber>,
    /// Times requests to the health URL.
    pub http_prober: Arc<dyn HttpProber>,
    /// Application logs and the access log.
    pub logs: LogsConfig,
    /// Host thresholds.
    pub host: HostConfig,
    /// Where host resources are read (`/proc`).
    pub resources: ResourceOptions,
    /// Runs custom checks' queries (default: [`ContextQueries`] over the targets above).
    pub queries: Option<Arc<dyn QueryRunner>>,
    /// Starts external programs (`pg_restore` of a restore test).
    pub commands: Arc<dyn tej_core::CommandRunner>,
    /// How the run behaves.
    pub options: RunOptions,
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("databases", &self.databases)
            .field("redis", &self.redis)
            .field("compose", &self.compose)
            .field("repositories", &self.repositories)
            .field("tls", &self.tls)
            .field("logs", &self.logs)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn config_error(what: String) -> RunbookError {
    RunbookError::InvalidConfig(what)
}

impl RunContext {
    /// A context with no targets (add them field by field; tests do).
    pub fn empty(config: Config) -> RunContext {
        RunContext {
            logs: config.logs.clone(),
            host: config.host.clone(),
            tls: config.tls.clone(),
            config,
            databases: Vec::new(),
            redis: Vec::new(),
            compose: None,
            repositories: Vec::new(),
            tls_prober: Arc::new(RustlsProber::default()),
            http_prober: Arc::new(ReqwestProber::new(Duration::from_secs(10))),
            resources: ResourceOptions::default(),
            queries: None,
            commands: Arc::new(tej_core::TokioCommandRunner),
            options: RunOptions::default(),
        }
    }

    /// Every target of `config`, clients made now but connected on first use. Fails only on
    /// configuration the run cannot start with (a malformed database URL, an unreadable password).
    pub fn from_config(config: &Config, options: RunOptions) -> Result<RunContext> {
        let mut ctx = RunContext::empty(config.clone());
        ctx.http_prober = Arc::new(ReqwestProber::new(options.check_timeout));
        ctx.tls_prober = Arc::new(RustlsProber {
            ca_file: None,
            timeout: Some(options.check_timeout),
        });
        ctx.options = options;
        for d in &config.databases {
            let mut opts = PgConnectOptions::new(d.url.expose());
            opts.application_name = "tej".into();
            if let Some(p) = &d.password {
                let secret = p.resolve().map_err(|e| {
                    config_error(format!("read the password of database {:?}: {e}", d.name))
                })?;
                opts = opts.with_password(secret);
            }
            let admin = PgClient::new(&opts)
                .map_err(|e| config_error(format!("database {:?}: {e}", d.name)))?;
            ctx.databases.push(DatabaseTarget {
                name: d.name.clone(),
                admin: Arc::new(admin),
            });
        }
        for r in &config.redis {
            let mut opts = RedisConnectOptions::new(r.url.expose());
            opts.username = r.username.clone();
            opts.timeout = ctx.options.check_timeout.min(Duration::from_secs(10));
            if let Some(p) = &r.password {
                let secret = p.resolve().map_err(|e| {
                    config_error(format!("read the password of redis {:?}: {e}", r.name))
                })?;
                opts.password = Some(secret);
            }
            let connect = opts.clone();
            ctx.redis.push(RedisTarget {
                name: r.name.clone(),
                client: Lazy::new(move || {
                    let opts = connect.clone();
                    async move {
                        let client = RedisClient::connect(&opts).await?;
                        Ok(Arc::new(client) as Arc<dyn RedisAdmin>)
                    }
                }),
                connect: Some(opts),
            });
        }
        if let Some(c) = &config.compose {
            ctx.compose = Some(compose_target(c));
        }
        for spec in &config.backup.repositories {
            validate_repository(spec).map_err(|e| config_error(e.to_string()))?;
            let owned = spec.clone();
            ctx.repositories.push(RepositoryTarget {
                name: redact_url_passwords(spec),
                repo: Lazy::new(move || {
                    let spec = owned.clone();
                    async move { Ok(Arc::new(Repository::open(&spec).await?)) }
                }),
            });
        }
        Ok(ctx)
    }

    /// The database called `name`.
    pub fn database(&self, name: &str) -> Option<&DatabaseTarget> {
        self.databases.iter().find(|d| d.name == name)
    }

    /// The Redis instance called `name`.
    pub fn redis_instance(&self, name: &str) -> Option<&RedisTarget> {
        self.redis.iter().find(|r| r.name == name)
    }

    /// The runner of custom checks' queries: [`RunContext::queries`], else [`ContextQueries`].
    pub fn query_runner(&self) -> Arc<dyn QueryRunner> {
        self.queries
            .clone()
            .unwrap_or_else(|| Arc::new(ContextQueries::new(self)))
    }

    /// Options for the custom checks: the configured defaults and this run's timeout.
    pub fn custom_check_options(&self) -> CustomCheckOptions {
        CustomCheckOptions {
            timeout: self.options.check_timeout,
            ..CustomCheckOptions::from_config(&self.config)
        }
    }
}

fn compose_target(c: &ComposeConfig) -> ComposeTarget {
    let host = c.docker_host.clone();
    ComposeTarget {
        project: Project::new(c.project.clone()),
        health_url: c.health_url.clone(),
        docker: Lazy::new(move || {
            let host = host.clone();
            async move {
                let rt = Arc::new(BollardRuntime::connect(host.as_deref()).await?);
                Ok(DockerClients {
                    runtime: rt.clone(),
                    images: rt,
                })
            }
        }),
    }
}

/// [`QueryRunner`] over a context's databases and Redis instances: SQL through
/// [`PgAdmin::query`], Redis commands over their own connection.
pub struct ContextQueries {
    databases: Vec<DatabaseTarget>,
    redis: Vec<(String, Option<RedisConnectOptions>)>,
}

impl std::fmt::Debug for ContextQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextQueries")
            .field("databases", &self.databases)
            .finish_non_exhaustive()
    }
}

impl ContextQueries {
    /// Queries against `ctx`'s targets.
    pub fn new(ctx: &RunContext) -> ContextQueries {
        ContextQueries {
            databases: ctx.databases.clone(),
            redis: ctx
                .redis
                .iter()
                .map(|r| (r.name.clone(), r.connect.clone()))
                .collect(),
        }
    }
}

#[async_trait]
impl QueryRunner for ContextQueries {
    async fn sql_scalar(&self, database: &str, sql: &str) -> Result<f64> {
        let db = self
            .databases
            .iter()
            .find(|d| d.name == database)
            .ok_or_else(|| RunbookError::NotConfigured {
                kind: "database",
                name: database.to_string(),
            })?;
        let r = tej_db::pg::run_configured_query(db.admin.as_ref(), sql)
            .await
            .map_err(|e| RunbookError::Query(e.to_string()))?;
        let value = r
            .first
            .ok_or_else(|| RunbookError::Query("the query returned no rows".into()))?;
        value
            .as_f64()
            .ok_or_else(|| RunbookError::Query(format!("not a number: {value:?}")))
    }

    async fn redis_integer(&self, instance: &str, argv: &[String]) -> Result<f64> {
        let (_, opts) = self
            .redis
            .iter()
            .find(|(n, _)| n == instance)
            .ok_or_else(|| RunbookError::NotConfigured {
                kind: "redis",
                name: instance.to_string(),
            })?;
        let opts = opts.as_ref().ok_or_else(|| {
            RunbookError::Query(format!("redis {instance:?} has no connection settings"))
        })?;
        super::support::redis_integer(opts, argv).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        Config::from_toml_with_env(toml, "tej.toml", &|_| None).unwrap()
    }

    #[tokio::test]
    async fn a_redis_that_cannot_be_reached_fails_get_with_the_client_s_own_error() {
        // Nothing listens on port 1: the connection is refused.
        let cfg = config("[[redis]]\nname = \"cache\"\nurl = \"redis://127.0.0.1:1\"\n");
        let ctx = RunContext::from_config(&cfg, RunOptions::default()).unwrap();
        let e = ctx.redis[0].client.get().await.err().unwrap();
        let direct = RedisClient::connect(ctx.redis[0].connect.as_ref().unwrap())
            .await
            .err()
            .unwrap();
        assert!(matches!(e, RunbookError::Db(_)), "{e:?}");
        assert_eq!(e.to_string(), direct.to_string());
        assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    }

    #[tokio::test]
    async fn a_missing_repository_fails_get_with_the_backup_error_and_is_tried_again() {
        // The repository's directory would be below a regular file: it cannot be created.
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, "not a directory").unwrap();
        let spec = blocker.join("repo").display().to_string();
        let cfg = config(&format!("[backup]\nrepositories = [{spec:?}]\n"));
        let ctx = RunContext::from_config(&cfg, RunOptions::default()).unwrap();
        let e = ctx.repositories[0].repo.get().await.err().unwrap();
        assert!(matches!(e, RunbookError::Backup(_)), "{e:?}");
        assert!(e.to_string().contains("blocker"), "{e}");
        // A failure is not cached: once the way is clear, the same Lazy opens it.
        std::fs::remove_file(&blocker).unwrap();
        ctx.repositories[0].repo.get().await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_client_gives_its_reason_each_time() {
        let lazy: Lazy<u32> = Lazy::failed("password file unreadable");
        for _ in 0..2 {
            match lazy.get().await {
                Err(RunbookError::Unavailable(m)) => assert_eq!(m, "password file unreadable"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

//! `tej.toml`: what tej manages. Flags decide how one run behaves; this file decides what exists.
//!
//! Secrets in the file are references (`{ env = "VAR" }` or `{ file = "PATH" }`), never values.
//! Users' existing conventions fill the gaps: `DATABASE_URL`, libpq's `PG*` variables,
//! `REDIS_URL`, `DOCKER_HOST`, `TEJ_ENVIRONMENT`; S3 credentials come from the AWS SDK's own
//! environment and profiles.

use crate::secret::{SecretRef, redact_url_passwords};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Which kind of environment tej runs against; production adds the maintenance-window rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Live users: destructive steps only in the maintenance window.
    Production,
    /// A pre-production copy.
    Staging,
    /// A developer's machine or sandbox.
    #[default]
    Development,
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Environment::Production => "production",
            Environment::Staging => "staging",
            Environment::Development => "development",
        })
    }
}

/// Where the environment came from, for `tej config check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentSource {
    /// `environment = ...` in the configuration file (`TEJ_ENVIRONMENT` unset or equal).
    File,
    /// `TEJ_ENVIRONMENT`, the file saying nothing.
    Variable,
    /// Neither: the default, development.
    #[default]
    Default,
}

impl fmt::Display for EnvironmentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EnvironmentSource::File => "from the configuration file",
            EnvironmentSource::Variable => "from TEJ_ENVIRONMENT",
            EnvironmentSource::Default => {
                "default: neither the configuration file nor TEJ_ENVIRONMENT sets it"
            }
        })
    }
}

impl std::str::FromStr for Environment {
    type Err = crate::Error;
    /// `production` (`prod`), `staging` (`stage`) or `development` (`dev`), in any case; else
    /// [`crate::Error::Invalid`] naming what was expected.
    fn from_str(s: &str) -> Result<Self, crate::Error> {
        match s.to_ascii_lowercase().as_str() {
            "production" | "prod" => Ok(Environment::Production),
            "staging" | "stage" => Ok(Environment::Staging),
            "development" | "dev" => Ok(Environment::Development),
            other => Err(crate::Error::Invalid {
                what: "environment",
                reason: format!("expected production, staging or development, got {other:?}"),
            }),
        }
    }
}

/// A connection URL whose `Debug` hides any password inside it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ConnUrl(String);

impl ConnUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> ConnUrl {
        ConnUrl(url.into())
    }
    /// The full URL, for the client library only.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL with any password masked, for output.
    pub fn redacted(&self) -> String {
        redact_url_passwords(&self.0)
    }
    fn has_inline_password(&self) -> bool {
        self.redacted() != self.0
    }
}

impl fmt::Debug for ConnUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// A managed PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Short name used in reports (`main`).
    pub name: String,
    /// `postgres://user@host:port/db` or a libpq keyword string, without a password.
    pub url: ConnUrl,
    /// Where the password comes from.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// Sanity queries run after restores and drills (`SELECT COUNT(*) FROM users`).
    #[serde(default)]
    pub sanity_queries: Vec<String>,
}

/// A managed Redis instance.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Short name (`cache`).
    pub name: String,
    /// `redis://host:port/db` or `rediss://` for TLS, without a password.
    pub url: ConnUrl,
    /// ACL user name, if not default.
    #[serde(default)]
    pub username: Option<String>,
    /// Where the password comes from.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// Key pattern of user sessions (`sess:*`).
    #[serde(default = "default_session_pattern")]
    pub session_pattern: String,
}

fn default_session_pattern() -> String {
    "sess:*".into()
}

/// Grandfather-father-son retention, in days per tier (the runbook's 30/90/365/2555).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep every daily backup this many days.
    pub daily_days: u32,
    /// Keep one backup per ISO week this many days.
    pub weekly_days: u32,
    /// Keep one backup per month this many days.
    pub monthly_days: u32,
    /// Keep one backup per year this many days.
    pub yearly_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            daily_days: 30,
            weekly_days: 90,
            monthly_days: 365,
            yearly_days: 7 * 365,
        }
    }
}

/// Backup encryption: age recipients and/or a passphrase.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// age X25519 recipients (`age1...`), public keys: safe to show.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Where the age identity (private key) file for decryption is.
    #[serde(default)]
    pub identity: Option<SecretRef>,
    /// Where a passphrase comes from (instead of recipients).
    #[serde(default)]
    pub passphrase: Option<SecretRef>,
}

/// Backups: where they go and how long they stay.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Repositories: a local path or `s3://bucket/prefix`; every backup goes to each.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// `custom` (default), `directory` or `plain`.
    #[serde(default = "default_format")]
    pub format: String,
    /// `zstd` (default), `gzip` or `none`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Compression level (zstd 1..=19, gzip 1..=9).
    #[serde(default)]
    pub compression_level: Option<i32>,
    /// Encryption, when wanted.
    #[serde(default)]
    pub encryption: Option<EncryptionConfig>,
    /// Directories backed up as file backups (uploads, configuration).
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// GFS retention.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// The PITR window promised, in days: prune never cuts it.
    #[serde(default)]
    pub pitr_window_days: Option<u32>,
    /// How long a base backup waits for its WAL to reach the archive, before the copy and
    /// after `pg_backup_stop`, in seconds (default 60).
    #[serde(default)]
    pub archive_timeout_secs: Option<u64>,
}

fn default_format() -> String {
    "custom".into()
}
fn default_compression() -> String {
    "zstd".into()
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            repositories: Vec::new(),
            format: default_format(),
            compression: default_compression(),
            compression_level: None,
            encryption: None,
            files: Vec::new(),
            retention: RetentionConfig::default(),
            pitr_window_days: None,
            archive_timeout_secs: None,
        }
    }
}

/// Application logs to review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// Files or directories (rotated and gzipped files included).
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// An nginx access log, for performance and security reviews.
    #[serde(default)]
    pub access_log: Option<PathBuf>,
}

/// A TLS endpoint to watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsEndpointConfig {
    /// `host:port`.
    pub endpoint: String,
    /// SNI name if it differs from the host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// The certificate file nginx serves (to catch a renewal never reloaded).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Trust only the CA certificates in this PEM file instead of the system roots (an
    /// internal CA, a staging endpoint).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Warn when fewer days are left.
    #[serde(default = "default_warn_days")]
    pub warn_days: u32,
    /// Critical when fewer days are left.
    #[serde(default = "default_crit_days")]
    pub crit_days: u32,
}

fn default_warn_days() -> u32 {
    30
}
fn default_crit_days() -> u32 {
    7
}

/// The Docker Compose project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeConfig {
    /// Project name (`com.docker.compose.project` label).
    pub project: String,
    /// The compose file, for reference in reports.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Engine address (`unix:///var/run/docker.sock`); `DOCKER_HOST` when absent.
    #[serde(default)]
    pub docker_host: Option<String>,
    /// The backend service name.
    #[serde(default = "default_backend")]
    pub backend_service: String,
    /// Health endpoint URL of the application.
    #[serde(default)]
    pub health_url: Option<String>,
    /// The services the project must have (`backend`, `frontend`, `postgres`...): one whose
    /// containers are gone altogether is critical in the daily check, not silently absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

fn default_backend() -> String {
    "backend".into()
}

/// Zero-downtime deploys (`tej deploy SERVICE --image IMAGE`, `tej rollback SERVICE`).
///
/// Each service runs blue/green on two loopback ports with host networking; the port is
/// given to the container through `port_env`, and nginx (an `upstream` file tej rewrites,
/// then `nginx -t` and `nginx -s reload`) sends traffic to the active one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    /// Directory of the deploy lock files (default: `STATE_DIR/locks`, else `/var/lib/tej/locks`).
    #[serde(default)]
    pub lock_dir: Option<PathBuf>,
    /// The deployable services.
    #[serde(default, rename = "service")]
    pub services: Vec<DeployServiceConfig>,
}

impl DeployConfig {
    /// The `[[deploy.service]]` named `name`.
    pub fn service(&self, name: &str) -> Option<&DeployServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// How traffic moves from the old container to the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DeploySwitchKind {
    /// Rewrite an nginx `upstream` file, `nginx -t`, `nginx -s reload` (old workers drain).
    #[default]
    Nginx,
    /// tej-deploy's in-process TCP proxy: only for programs that embed tej-deploy and live
    /// as long as the proxy must; refused here because `tej deploy` exits after the deploy.
    TcpProxy,
}

/// One deployable Compose service (`[[deploy.service]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployServiceConfig {
    /// Compose service name (`backend`).
    pub name: String,
    /// The two loopback ports the service alternates between (`[3000, 3001]`).
    pub ports: [u16; 2],
    /// The environment variable telling the container which port to listen on.
    #[serde(default = "default_port_env")]
    pub port_env: String,
    /// Health by `GET http://127.0.0.1:PORT{health_path}` answering 2xx; absent: the
    /// container's Docker healthcheck must report healthy.
    #[serde(default)]
    pub health_path: Option<String>,
    /// Most seconds the new container may take to become healthy.
    #[serde(default = "default_health_timeout")]
    pub health_timeout_secs: u64,
    /// The traffic switch.
    #[serde(default)]
    pub switch: DeploySwitchKind,
    /// The nginx file holding this service's `upstream` block (included by the site config).
    pub nginx_upstream_file: PathBuf,
    /// The upstream's name (default: the service name).
    #[serde(default)]
    pub nginx_upstream: Option<String>,
    /// The nginx program run as `PROGRAM -t` and `PROGRAM -s reload`.
    #[serde(default = "default_nginx_program")]
    pub nginx_program: String,
    /// Migration run first in a one-off container of the new image (argv:
    /// `["npx", "prisma", "migrate", "deploy"]`); it must exit 0.
    #[serde(default)]
    pub migrate: Option<Vec<String>>,
    /// Most seconds the migration may take.
    #[serde(default = "default_migrate_timeout")]
    pub migrate_timeout_secs: u64,
    /// Pre-deployment gate: this command (argv, `["npm", "test"]`) must exit 0.
    #[serde(default)]
    pub test_command: Option<Vec<String>>,
    /// Working directory of `test_command`.
    #[serde(default)]
    pub test_dir: Option<PathBuf>,
    /// Most seconds `test_command` may take.
    #[serde(default = "default_test_timeout")]
    pub test_timeout_secs: u64,
    /// Pre-deployment gate: a backup in `[backup] repositories` at most this many hours old.
    #[serde(default)]
    pub backup_max_age_hours: Option<u64>,
    /// Post-deployment gate: watch the new container's logs this many seconds for error
    /// lines (the runbook's "no errors in logs, first 10 min" is 600); 0 or absent: off.
    #[serde(default)]
    pub log_window_secs: Option<u64>,
    /// Post-deployment gate: `GET http://{public_addr}{health_path}` through the front
    /// (nginx) must answer 2xx after the switch.
    #[serde(default)]
    pub public_addr: Option<String>,
    /// Grace seconds when stopping the old container.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_secs: u64,
    /// Most seconds nginx's old workers get to finish their requests after the reload.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_secs: u64,
}

fn default_port_env() -> String {
    "PORT".into()
}
fn default_health_timeout() -> u64 {
    60
}
fn default_nginx_program() -> String {
    "nginx".into()
}
fn default_migrate_timeout() -> u64 {
    600
}
fn default_test_timeout() -> u64 {
    1800
}
fn default_stop_timeout() -> u64 {
    10
}
fn default_drain_timeout() -> u64 {
    30
}

impl DeployServiceConfig {
    /// The nginx upstream name: `nginx_upstream`, else the service name.
    pub fn upstream_name(&self) -> &str {
        self.nginx_upstream.as_deref().unwrap_or(&self.name)
    }
}

/// Secrets that tej rotates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// The `.env` file.
    pub env_file: PathBuf,
    /// Keys rotated quarterly.
    #[serde(default = "default_rotate")]
    pub rotate: Vec<String>,
    /// Base URL of the application, for the post-rotation checks (`/health`, `/api/v1/auth/login`).
    #[serde(default)]
    pub app_url: Option<String>,
    /// Email of the test account the post-rotation login uses.
    #[serde(default)]
    pub test_email: Option<String>,
    /// Where the test account's password comes from.
    #[serde(default)]
    pub test_password: Option<SecretRef>,
    /// How many `.env` backups (`.env.bak.*`, holding old secrets) a rotation keeps,
    /// newest first; older ones are overwritten and removed (default 5, at least 1).
    #[serde(default = "default_env_backups_keep")]
    pub env_backups_keep: usize,
}

fn default_rotate() -> Vec<String> {
    vec!["JWT_SECRET".into(), "JWT_REFRESH_SECRET".into()]
}

fn default_env_backups_keep() -> usize {
    5
}

/// Host thresholds (percent used) and which file systems the disk checks report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// File-system types never reported by the disk checks (default: tej-host's list of
    /// pseudo file systems, tmpfs, overlay, cgroup, proc..., as node_exporter excludes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_fs_types: Option<Vec<String>>,
    /// Disk use warning, percent.
    pub disk_warn_percent: f64,
    /// Disk use critical, percent.
    pub disk_crit_percent: f64,
    /// Memory use warning, percent.
    pub memory_warn_percent: f64,
    /// Memory use critical, percent.
    pub memory_crit_percent: f64,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            exclude_fs_types: None,
            disk_warn_percent: 80.0,
            disk_crit_percent: 90.0,
            memory_warn_percent: 85.0,
            memory_crit_percent: 95.0,
        }
    }
}

/// `[serve]`: the HTTP server of `tej serve` and `tej daemon` (metrics, health, JSON API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on (`127.0.0.1:9187`); `tej daemon` serves only when it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Allow an address other than loopback (then [`token`](Self::token) is required).
    #[serde(default)]
    pub allow_remote: bool,
    /// Bearer token every request must carry when set (`{ env = ... }` or `{ file = ... }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretRef>,
    /// Seconds between two collections of the checks (default 60).
    #[serde(default = "default_serve_interval")]
    pub interval: u64,
}

fn default_serve_interval() -> u64 {
    60
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: None,
            allow_remote: false,
            token: None,
            interval: default_serve_interval(),
        }
    }
}

/// A check declared in `tej.toml`: a SQL query or a Redis command whose numeric result is
/// compared with thresholds (active users, inactive admin accounts, open reports...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomCheckConfig {
    /// Check name (`active-users`), reported as `custom.<name>`.
    pub name: String,
    /// A SQL query returning one numeric value (first column of the first row).
    #[serde(default)]
    pub sql: Option<String>,
    /// Which `[[database]]` the query runs on (default: the first).
    #[serde(default)]
    pub database: Option<String>,
    /// A Redis command as argv (`["DBSIZE"]`, `["SCARD", "online-users"]`) returning an integer.
    #[serde(default)]
    pub redis: Option<Vec<String>>,
    /// Which `[[redis]]` the command runs on (default: the first).
    #[serde(default)]
    pub redis_instance: Option<String>,
    /// Warning threshold.
    pub warn: f64,
    /// Critical threshold.
    pub crit: f64,
    /// `higher_is_worse` (default) or `lower_is_worse`.
    #[serde(default)]
    pub direction: crate::finding::Direction,
    /// Unit for display (`users`, `%`).
    #[serde(default)]
    pub unit: String,
    /// What the value means, shown in the finding.
    #[serde(default)]
    pub description: Option<String>,
}

impl CustomCheckConfig {
    /// The thresholds as a [`crate::Threshold`].
    pub fn threshold(&self) -> crate::Threshold {
        crate::Threshold {
            warn: self.warn,
            crit: self.crit,
            direction: self.direction,
        }
    }
}

/// Which tool's JSON a dependency audit prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditKind {
    /// `npm audit --json` (npm 7+: `metadata.vulnerabilities`).
    Npm,
    /// `cargo audit --json` (`vulnerabilities.count` / `list`).
    Cargo,
}

/// One dependency audit of the monthly security audit (`[[audit]]`):
///
/// ```toml
/// [[audit]]
/// name = "backend"
/// command = ["npm", "audit", "--json", "--omit=dev"]
/// dir = "/opt/skillswap/backend"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Name in reports (`backend`), the finding's target.
    pub name: String,
    /// The command as argv; it must print the tool's JSON on stdout.
    pub command: Vec<String>,
    /// Working directory (the project audited).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The JSON dialect (default: from the program name, `npm` or `cargo`).
    #[serde(default)]
    pub kind: Option<AuditKind>,
    /// Time limit in seconds (default 300).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

impl AuditConfig {
    /// The JSON dialect: declared, else guessed from the program (`npm`, `pnpm`, `cargo`,
    /// `cargo-audit`).
    pub fn dialect(&self) -> Option<AuditKind> {
        self.kind.or_else(|| {
            let prog = self.command.first()?;
            let base = Path::new(prog).file_name()?.to_string_lossy().into_owned();
            match base.as_str() {
                "npm" | "pnpm" => Some(AuditKind::Npm),
                "cargo" | "cargo-audit" => Some(AuditKind::Cargo),
                _ => None,
            }
        })
    }
}

/// The whole `tej.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// production, staging or development.
    #[serde(default)]
    pub environment: Environment,
    /// Where [`environment`](Self::environment) came from (set when loading).
    #[serde(skip)]
    pub environment_source: EnvironmentSource,
    /// Calendar time zone (default Asia/Kolkata).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Audit log path.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// State directory (locks, history).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Managed databases.
    #[serde(default, rename = "database")]
    pub databases: Vec<DatabaseConfig>,
    /// Managed Redis instances.
    #[serde(default)]
    pub redis: Vec<RedisConfig>,
    /// Backups.
    #[serde(default)]
    pub backup: BackupConfig,
    /// Logs.
    #[serde(default)]
    pub logs: LogsConfig,
    /// TLS endpoints.
    #[serde(default)]
    pub tls: Vec<TlsEndpointConfig>,
    /// Compose project.
    #[serde(default)]
    pub compose: Option<ComposeConfig>,
    /// Secret rotation.
    #[serde(default)]
    pub secrets: Option<SecretsConfig>,
    /// Zero-downtime deploys.
    #[serde(default)]
    pub deploy: DeployConfig,
    /// Host thresholds.
    #[serde(default)]
    pub host: HostConfig,
    /// Webhook for notifications (Slack-compatible); the URL itself is a secret.
    #[serde(default)]
    pub notify_url: Option<SecretRef>,
    /// Checks declared in configuration.
    #[serde(default, rename = "check")]
    pub checks: Vec<CustomCheckConfig>,
    /// Dependency audits of the monthly security audit (`[[audit]]`).
    #[serde(default)]
    pub audit: Vec<AuditConfig>,
    /// Changes to the runbook's calendar entries (`[calendar.<id>]`: `at = "HH:MM"`,
    /// `enabled = false`).
    #[serde(default)]
    pub calendar: BTreeMap<String, crate::calendar::EntryOverride>,
    /// The HTTP server of `tej serve` and `tej daemon` (`[serve]`).
    #[serde(default)]
    pub serve: ServeConfig,
    /// Where each value came from, in key order (set when loading; `tej config check`).
    #[serde(skip)]
    pub origins: Vec<ValueOrigin>,
}

/// The platform a [`Config::template`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Platform {
    /// PostgreSQL, Redis and nginx run on the host.
    #[default]
    Host,
    /// The services run in a Docker Compose project (the runbook's platform).
    Compose,
}

/// Where one configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValueOrigin {
    /// The key: `backup.compression`, `database[0].url`, or a whole section (`serve`).
    pub key: String,
    /// Its source.
    pub source: OriginKind,
}

/// The source of a configuration value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OriginKind {
    /// Written in this configuration file.
    File {
        /// The file.
        file: String,
    },
    /// Taken from this environment variable (or these: libpq's `PG*`).
    Env {
        /// The variable.
        var: String,
    },
    /// Not set anywhere: the built-in default.
    Default,
}

impl fmt::Display for OriginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginKind::File { file } => write!(f, "file {file}"),
            OriginKind::Env { var } => write!(f, "env {var}"),
            OriginKind::Default => f.write_str("default"),
        }
    }
}

/// The top-level keys of `tej.toml`, in the order `tej config check` lists their sources.
const TOP_LEVEL_KEYS: &[&str] = &[
    "environment",
    "timezone",
    "audit_log",
    "state_dir",
    "notify_url",
    "database",
    "redis",
    "backup",
    "logs",
    "tls",
    "compose",
    "secrets",
    "deploy",
    "host",
    "check",
    "audit",
    "calendar",
    "serve",
];

/// The leaf keys of a TOML table as dotted paths (`backup.retention.daily_days`,
/// `database[0].url`), each with `file` as its origin.
fn file_origins(table: &toml::Table, prefix: &str, file: &str, out: &mut Vec<ValueOrigin>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) if !t.is_empty() => file_origins(t, &key, file, out),
            toml::Value::Array(items)
                if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
            {
                for (i, item) in items.iter().enumerate() {
                    if let toml::Value::Table(t) = item {
                        file_origins(t, &format!("{key}[{i}]"), file, out);
                    }
                }
            }
            _ => out.push(ValueOrigin {
                key,
                source: OriginKind::File {
                    file: file.to_string(),
                },
            }),
        }
    }
}

/// A configuration problem: tej-core's [`Error`](crate::Error), its `Config` variant
/// (which file, which key, what was expected).
pub type ConfigError = crate::Error;

fn cerr(file: &str, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Config {
        file: file.to_string(),
        key: key.into(),
        message: message.into(),
    }
}

/// Reads environment variables; a function so tests don't touch the real environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Loads `path`, applies the environment, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| cerr(&file, "-", format!("cannot read: {e}")))?;
        Config::from_toml_with_env(&text, &file, &|k| std::env::var(k).ok())
    }

    /// A commented `tej.toml` to start from for `platform`: every section and key, secrets
    /// as references, defaults shown commented out. It loads as it is.
    pub fn template(platform: Platform) -> &'static str {
        match platform {
            Platform::Host => include_str!("../templates/tej.toml"),
            Platform::Compose => include_str!("../templates/tej.compose.toml"),
        }
    }

    /// Writes [`Config::template`] to `path` atomically, never over an existing file unless
    /// `replace`.
    pub fn write_template(
        path: &Path,
        platform: Platform,
        replace: bool,
    ) -> Result<(), ConfigError> {
        let file = path.display().to_string();
        let text = Config::template(platform).as_bytes();
        let written = if replace {
            crate::fsutil::atomic_write(path, text, Some(0o644))
        } else {
            crate::fsutil::atomic_create(path, text, 0o644)
        };
        written.map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => cerr(
                &file,
                "-",
                "already exists; it is left as it is (replace it on purpose with --force)",
            ),
            _ => cerr(&file, "-", format!("cannot write: {e}")),
        })
    }

    /// Where `tej.toml` is looked for when no file is named, in order: `./tej.toml`,
    /// `$XDG_CONFIG_HOME/tej/tej.toml` (`$HOME/.config/tej/tej.toml` when unset), then
    /// `/etc/tej/tej.toml`.
    pub fn search_path(env: EnvLookup<'_>) -> Vec<PathBuf> {
        let mut v = vec![PathBuf::from("tej.toml")];
        let xdg = env("XDG_CONFIG_HOME")
            .filter(|d| Path::new(d).is_absolute())
            .map(PathBuf::from)
            .or_else(|| {
                env("HOME")
                    .filter(|h| Path::new(h).is_absolute())
                    .map(|h| Path::new(&h).join(".config"))
            });
        if let Some(dir) = xdg {
            v.push(dir.join("tej").join("tej.toml"));
        }
        v.push(PathBuf::from("/etc/tej/tej.toml"));
        v
    }

    /// The file to load: `explicit` (`--config`, `TEJ_CONFIG`) when given, else the first
    /// of [`Config::search_path`] that exists; `None` when there is none (the environment
    /// alone then describes what exists).
    pub fn locate(explicit: Option<&Path>, env: EnvLookup<'_>) -> Option<PathBuf> {
        match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => Config::search_path(env).into_iter().find(|p| p.is_file()),
        }
    }

    /// Loads [`Config::locate`]'s file, else an empty configuration; either way with the
    /// environment applied.
    pub fn load_or_env(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env = |k: &str| std::env::var(k).ok();
        match Config::locate(path, &env) {
            Some(p) => Config::load(&p),
            None => Config::from_toml_with_env("", "(no tej.toml)", &env),
        }
    }

    /// Parses TOML text (`file` names it in errors), applies `env`, validates.
    pub fn from_toml_with_env(
        text: &str,
        file: &str,
        env: EnvLookup<'_>,
    ) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| cerr(file, "-", one_line(&e.to_string())))?;
        let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            cerr(
                file,
                if key == "." { "-".to_string() } else { key },
                one_line(&e.inner().to_string()),
            )
        })?;
        let table = text.parse::<toml::Table>().unwrap_or_default();
        file_origins(&table, "", file, &mut cfg.origins);
        // Whether the file itself names the environment (serde's default cannot tell).
        let in_file = table.contains_key("environment");
        cfg.environment_source = if in_file {
            EnvironmentSource::File
        } else {
            EnvironmentSource::Default
        };
        cfg.apply_env(env, file)?;
        cfg.validate(file)?;
        for key in TOP_LEVEL_KEYS {
            let set = cfg.origins.iter().any(|o| {
                o.key == *key
                    || o.key.starts_with(&format!("{key}."))
                    || o.key.starts_with(&format!("{key}["))
            });
            if !set {
                cfg.origins.push(ValueOrigin {
                    key: key.to_string(),
                    source: OriginKind::Default,
                });
            }
        }
        let rank = |k: &str| {
            let top = k.split(['.', '[']).next().unwrap_or(k);
            TOP_LEVEL_KEYS
                .iter()
                .position(|t| *t == top)
                .unwrap_or(usize::MAX)
        };
        cfg.origins.sort_by_key(|o| rank(&o.key));
        Ok(cfg)
    }

    fn apply_env(&mut self, env: EnvLookup<'_>, file: &str) -> Result<(), ConfigError> {
        if let Some(v) = env("TEJ_ENVIRONMENT").filter(|v| !v.is_empty()) {
            let from_env: Environment = v
                .parse()
                .map_err(|e: ConfigError| cerr("environment", "TEJ_ENVIRONMENT", e.to_string()))?;
            // An explicit value in the file wins; a different one in the variable is a
            // mistake to stop at, not to resolve silently either way.
            if self.environment_source == EnvironmentSource::File {
                if from_env != self.environment {
                    return Err(cerr(
                        file,
                        "environment",
                        format!(
                            "the file says {} but TEJ_ENVIRONMENT={v}: unset TEJ_ENVIRONMENT or make them agree",
                            self.environment
                        ),
                    ));
                }
            } else {
                self.environment = from_env;
                self.environment_source = EnvironmentSource::Variable;
                self.set_env_origin("environment", "TEJ_ENVIRONMENT");
            }
        }
        if self.databases.is_empty() {
            if let Some(url) = env("DATABASE_URL").filter(|s| !s.is_empty()) {
                self.databases.push(DatabaseConfig {
                    name: "default".into(),
                    url: ConnUrl::new(url),
                    password: None,
                    sanity_queries: Vec::new(),
                });
                self.set_env_origin("database[0]", "DATABASE_URL");
            } else if let Some(conninfo) = crate::libpq::conninfo_from_env(env) {
                self.set_env_origin(
                    "database[0]",
                    "PGHOST, PGDATABASE and the other PG* variables",
                );
                let password = env(crate::libpq::PASSWORD_VAR).map(|_| SecretRef::Env {
                    env: crate::libpq::PASSWORD_VAR.into(),
                });
                self.databases.push(DatabaseConfig {
                    name: "default".into(),
                    url: ConnUrl::new(conninfo),
                    password,
                    sanity_queries: Vec::new(),
                });
            }
        }
        if self.redis.is_empty()
            && let Some(url) = env("REDIS_URL").filter(|s| !s.is_empty())
        {
            self.redis.push(RedisConfig {
                name: "default".into(),
                url: ConnUrl::new(url),
                username: None,
                password: None,
                session_pattern: default_session_pattern(),
            });
            self.set_env_origin("redis[0]", "REDIS_URL");
        }
        if let (Some(c), Some(h)) = (self.compose.as_mut(), env("DOCKER_HOST"))
            && c.docker_host.is_none()
        {
            c.docker_host = Some(h);
            self.set_env_origin("compose.docker_host", "DOCKER_HOST");
        }
        let _ = file;
        Ok(())
    }

    fn set_env_origin(&mut self, key: &str, var: &str) {
        self.origins.retain(|o| o.key != key);
        self.origins.push(ValueOrigin {
            key: key.to_string(),
            source: OriginKind::Env {
                var: var.to_string(),
            },
        });
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        if let Some(listen) = &self.serve.listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(cerr(
                file,
                "serve.listen",
                format!("{listen:?} is not an address and port such as 127.0.0.1:9187"),
            ));
        }
        if self.serve.interval == 0 {
            return Err(cerr(file, "serve.interval", "must be at least 1 second"));
        }
        if self.serve.allow_remote && self.serve.token.is_none() {
            return Err(cerr(
                file,
                "serve.token",
                "allow_remote = true needs a bearer token ({ env = \"...\" } or { file = \"...\" })",
            ));
        }
        if let Some(tz) = &self.timezone {
            jiff::tz::TimeZone::get(tz).map_err(|_| {
                cerr(
                    file,
                    "timezone",
                    format!(
                        "unknown time zone {tz:?} (expected an IANA name such as Asia/Kolkata)"
                    ),
                )
            })?;
        }
        if let Err(e) = crate::calendar::Calendar::from_config(self) {
            let key = match &e {
                crate::calendar::CalendarError::UnknownEntry { id, .. } => format!("calendar.{id}"),
                crate::calendar::CalendarError::BadEntry { id, .. } => format!("calendar.{id}.at"),
                _ => "calendar".to_string(),
            };
            let msg = match &e {
                crate::calendar::CalendarError::UnknownEntry { known, .. } => {
                    format!("no such calendar entry (expected one of: {known})")
                }
                crate::calendar::CalendarError::BadEntry { reason, .. } => {
                    reason.strip_prefix("at: ").unwrap_or(reason).to_string()
                }
                other => other.to_string(),
            };
            return Err(cerr(file, key, msg));
        }
        let mut names = BTreeMap::new();
        for (i, d) in self.databases.iter().enumerate() {
            let key = format!("database[{i}]");
            if d.name.trim().is_empty() {
                return Err(cerr(file, format!("{key}.name"), "must not be empty"));
            }
            if names.insert(d.name.clone(), ()).is_some() {
                return Err(cerr(
                    file,
                    format!("{key}.name"),
                    format!("duplicate database name {:?}", d.name),
                ));
            }
            let u = d.url.expose();
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://") || u.contains('='))
            {
                return Err(cerr(
                    file,
                    format!("{key}.url"),
                    "expected postgres://user@host:port/db or a libpq keyword string (host=... dbname=...)",
                ));
            }
            // A password written into tej.toml itself would be printed, copied and committed.
            if d.url.has_inline_password()
                && file != "(no tej.toml)"
                && !file.is_empty()
                && d.name != "default"
            {
                return Err(cerr(
                    file,
                    format!("{key}.url"),
                    "contains a password; move it to password = { env = \"PGPASSWORD\" } or { file = \"...\" }",
                ));
            }
        }
        for (i, r) in self.redis.iter().enumerate() {
            let u = r.url.expose();
            if !(u.starts_with("redis://")
                || u.starts_with("rediss://")
                || u.starts_with("unix://"))
            {
                return Err(cerr(
                    file,
                    format!("redis[{i}].url"),
                    "expected redis://host:port/db, rediss:// or unix://",
                ));
            }
            if r.url.has_inline_password() && r.name != "default" {
                return Err(cerr(
                    file,
                    format!("redis[{i}].url"),
                    "contains a password; move it to password = { env = \"REDIS_PASSWORD\" }",
                ));
            }
        }
        for (i, repo) in self.backup.repositories.iter().enumerate() {
            validate_repository(repo)
                .map_err(|m| cerr(file, format!("backup.repositories[{i}]"), m.to_string()))?;
        }
        if !["custom", "directory", "plain"].contains(&self.backup.format.as_str()) {
            return Err(cerr(
                file,
                "backup.format",
                format!(
                    "expected custom, directory or plain, got {:?}",
                    self.backup.format
                ),
            ));
        }
        let (lo, hi) = match self.backup.compression.as_str() {
            "zstd" => (1, 19),
            "gzip" => (1, 9),
            "none" => (0, 0),
            other => {
                return Err(cerr(
                    file,
                    "backup.compression",
                    format!("expected zstd, gzip or none, got {other:?}"),
                ));
            }
        };
        if let Some(l) = self.backup.compression_level
            && !(lo..=hi).contains(&l)
        {
            return Err(cerr(
                file,
                "backup.compression_level",
                format!(
                    "{l} is out of range {lo}..={hi} for {}",
                    self.backup.compression
                ),
            ));
        }
        if let Some(enc) = &self.backup.encryption {
            if enc.recipients.is_empty() && enc.passphrase.is_none() {
                return Err(cerr(
                    file,
                    "backup.encryption",
                    "needs recipients (age1...) or a passphrase reference",
                ));
            }
            for (i, r) in enc.recipients.iter().enumerate() {
                if !r.starts_with("age1") {
                    return Err(cerr(
                        file,
                        format!("backup.encryption.recipients[{i}]"),
                        "expected an age X25519 recipient starting with age1",
                    ));
                }
            }
        }
        let r = &self.backup.retention;
        if r.daily_days == 0 {
            return Err(cerr(
                file,
                "backup.retention.daily_days",
                "must be at least 1",
            ));
        }
        if !(r.daily_days <= r.weekly_days.max(r.daily_days)
            && r.weekly_days <= r.monthly_days.max(r.weekly_days))
        {
            return Err(cerr(
                file,
                "backup.retention",
                "tiers must not shrink: daily <= weekly <= monthly <= yearly",
            ));
        }
        for (i, t) in self.tls.iter().enumerate() {
            if split_host_port(&t.endpoint).is_none() {
                return Err(cerr(
                    file,
                    format!("tls[{i}].endpoint"),
                    format!("expected host:port, got {:?}", t.endpoint),
                ));
            }
            if t.crit_days > t.warn_days {
                return Err(cerr(
                    file,
                    format!("tls[{i}].crit_days"),
                    "must not exceed warn_days",
                ));
            }
        }
        let h = &self.host;
        for (k, w, c) in [
            ("disk", h.disk_warn_percent, h.disk_crit_percent),
            ("memory", h.memory_warn_percent, h.memory_crit_percent),
        ] {
            if !(0.0..=100.0).contains(&w) || !(0.0..=100.0).contains(&c) || c < w {
                return Err(cerr(
                    file,
                    format!("host.{k}_crit_percent"),
                    "percentages must be within 0..=100 with critical >= warning",
                ));
            }
        }
        for (i, c) in self.checks.iter().enumerate() {
            let key = format!("check[{i}]");
            if c.sql.is_some() == c.redis.is_some() {
                return Err(cerr(
                    file,
                    key,
                    "needs exactly one of sql = \"...\" or redis = [\"COMMAND\", ...]",
                ));
            }
            if c.redis.as_ref().is_some_and(|r| r.is_empty()) {
                return Err(cerr(file, format!("{key}.redis"), "is an empty command"));
            }
            c.threshold()
                .validate()
                .map_err(|m| cerr(file, format!("{key}.crit"), m.to_string()))?;
            if let Some(db) = &c.database
                && !self.databases.iter().any(|d| &d.name == db)
            {
                return Err(cerr(
                    file,
                    format!("{key}.database"),
                    format!("no [[database]] named {db:?}"),
                ));
            }
            if let Some(r) = &c.redis_instance
                && !self.redis.iter().any(|x| &x.name == r)
            {
                return Err(cerr(
                    file,
                    format!("{key}.redis_instance"),
                    format!("no [[redis]] named {r:?}"),
                ));
            }
        }
        if let Some(s) = &self.secrets
            && s.rotate.is_empty()
        {
            return Err(cerr(file, "secrets.rotate", "lists no keys"));
        }
        self.validate_audits(file)?;
        self.validate_deploy(file)
    }

    fn validate_audits(&self, file: &str) -> Result<(), ConfigError> {
        let mut names = BTreeMap::new();
        for (i, a) in self.audit.iter().enumerate() {
            let key = |k: &str| format!("audit[{i}].{k}");
            if a.name.trim().is_empty() {
                return Err(cerr(file, key("name"), "must not be empty"));
            }
            if names.insert(a.name.clone(), ()).is_some() {
                return Err(cerr(
                    file,
                    key("name"),
                    format!("duplicate audit name {:?}", a.name),
                ));
            }
            let Some(prog) = a.command.first().filter(|p| !p.trim().is_empty()) else {
                return Err(cerr(
                    file,
                    key("command"),
                    "empty; expected argv such as [\"npm\", \"audit\", \"--json\"]",
                ));
            };
            if a.dialect().is_none() {
                return Err(cerr(
                    file,
                    key("kind"),
                    format!(
                        "cannot tell npm from cargo output for {prog:?}: set kind = \"npm\" or \"cargo\""
                    ),
                ));
            }
            if a.timeout_secs == Some(0) {
                return Err(cerr(file, key("timeout_secs"), "must be at least 1"));
            }
        }
        Ok(())
    }

    fn validate_deploy(&self, file: &str) -> Result<(), ConfigError> {
        let mut names = BTreeMap::new();
        for (i, s) in self.deploy.services.iter().enumerate() {
            let key = |k: &str| format!("deploy.service[{i}].{k}");
            let token = |v: &str| {
                !v.is_empty()
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            };
            if !token(&s.name) {
                return Err(cerr(
                    file,
                    key("name"),
                    "must be a Compose service name (letters, digits, _.-)",
                ));
            }
            if names.insert(s.name.clone(), ()).is_some() {
                return Err(cerr(
                    file,
                    key("name"),
                    format!("duplicate deploy service {:?}", s.name),
                ));
            }
            let [a, b] = s.ports;
            if a == 0 || b == 0 || a == b {
                return Err(cerr(
                    file,
                    key("ports"),
                    "expected two different non-zero ports, e.g. [3000, 3001]",
                ));
            }
            let env_ok = s
                .port_env
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
                && s.port_env
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !env_ok {
                return Err(cerr(
                    file,
                    key("port_env"),
                    "expected an environment variable name such as PORT",
                ));
            }
            if let Some(p) = &s.health_path
                && !p.starts_with('/')
            {
                return Err(cerr(
                    file,
                    key("health_path"),
                    "expected a path starting with /",
                ));
            }
            for (k, v) in [
                ("health_timeout_secs", s.health_timeout_secs),
                ("migrate_timeout_secs", s.migrate_timeout_secs),
                ("test_timeout_secs", s.test_timeout_secs),
            ] {
                if v == 0 {
                    return Err(cerr(file, key(k), "must be at least 1"));
                }
            }
            if s.switch == DeploySwitchKind::TcpProxy {
                return Err(cerr(
                    file,
                    key("switch"),
                    "tcp-proxy lives inside one process and `tej deploy` exits after the deploy; use switch = \"nginx\" (the TCP proxy is for programs embedding tej-deploy)",
                ));
            }
            if !token(s.upstream_name()) {
                return Err(cerr(
                    file,
                    key("nginx_upstream"),
                    "must be an nginx upstream name (letters, digits, _.-)",
                ));
            }
            if s.nginx_program.trim().is_empty() {
                return Err(cerr(file, key("nginx_program"), "must not be empty"));
            }
            for (k, v) in [("migrate", &s.migrate), ("test_command", &s.test_command)] {
                if v.as_ref().is_some_and(|c| c.is_empty() || c[0].is_empty()) {
                    return Err(cerr(
                        file,
                        key(k),
                        "is an empty command; expected argv such as [\"npm\", \"test\"]",
                    ));
                }
            }
            if s.backup_max_age_hours.is_some() && self.backup.repositories.is_empty() {
                return Err(cerr(
                    file,
                    key("backup_max_age_hours"),
                    "needs [backup] repositories to look for the latest backup in",
                ));
            }
            if let Some(addr) = &s.public_addr {
                if addr.parse::<std::net::SocketAddr>().is_err() {
                    return Err(cerr(
                        file,
                        key("public_addr"),
                        format!("expected IP:PORT such as 127.0.0.1:80, got {addr:?}"),
                    ));
                }
                if s.health_path.is_none() {
                    return Err(cerr(
                        file,
                        key("public_addr"),
                        "needs health_path: the path probed through the front",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The calendar time zone.
    pub fn zone(&self) -> &str {
        self.timezone.as_deref().unwrap_or(crate::calendar::IST)
    }

    /// A summary safe to print: what is managed, secrets shown as references only.
    pub fn summary(&self) -> ConfigSummary {
        ConfigSummary {
            environment: self.environment,
            environment_source: self.environment_source,
            timezone: self.zone().to_string(),
            databases: self
                .databases
                .iter()
                .map(|d| {
                    format!(
                        "{} = {}{}",
                        d.name,
                        d.url.redacted(),
                        d.password
                            .as_ref()
                            .map(|p| format!(" (password from {})", p.describe()))
                            .unwrap_or_default()
                    )
                })
                .collect(),
            redis: self
                .redis
                .iter()
                .map(|r| {
                    format!(
                        "{} = {}{}",
                        r.name,
                        r.url.redacted(),
                        r.password
                            .as_ref()
                            .map(|p| format!(" (password from {})", p.describe()))
                            .unwrap_or_default()
                    )
                })
                .collect(),
            backup_repositories: self
                .backup
                .repositories
                .iter()
                .map(|r| redact_url_passwords(r))
                .collect(),
            backup: format!(
                "{} format, {}{}, encryption {}, retention {}d/{}d/{}d/{}d",
                self.backup.format,
                self.backup.compression,
                self.backup
                    .compression_level
                    .map(|l| format!(" level {l}"))
                    .unwrap_or_default(),
                if self.backup.encryption.is_some() {
                    "on"
                } else {
                    "off"
                },
                self.backup.retention.daily_days,
                self.backup.retention.weekly_days,
                self.backup.retention.monthly_days,
                self.backup.retention.yearly_days
            ),
            log_paths: self
                .logs
                .paths
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            tls_endpoints: self.tls.iter().map(|t| t.endpoint.clone()).collect(),
            compose_project: self.compose.as_ref().map(|c| c.project.clone()),
            secrets_file: self
                .secrets
                .as_ref()
                .map(|s| format!("{} (rotates {})", s.env_file.display(), s.rotate.join(", "))),
            dependency_audits: self
                .audit
                .iter()
                .map(|a| {
                    format!(
                        "{} = {}{}",
                        a.name,
                        a.command.join(" "),
                        a.dir
                            .as_ref()
                            .map(|d| format!(" (in {})", d.display()))
                            .unwrap_or_default()
                    )
                })
                .collect(),
            origins: self.origins.clone(),
        }
    }
}

/// What `tej config check` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigSummary {
    /// Environment.
    pub environment: Environment,
    /// Where the environment came from.
    pub environment_source: EnvironmentSource,
    /// Time zone.
    pub timezone: String,
    /// Databases, passwords masked.
    pub databases: Vec<String>,
    /// Redis instances, passwords masked.
    pub redis: Vec<String>,
    /// Backup repositories.
    pub backup_repositories: Vec<String>,
    /// Backup settings in one line.
    pub backup: String,
    /// Log paths.
    pub log_paths: Vec<String>,
    /// TLS endpoints.
    pub tls_endpoints: Vec<String>,
    /// Compose project.
    pub compose_project: Option<String>,
    /// Secrets file.
    pub secrets_file: Option<String>,
    /// Dependency audits (`name = command (in dir)`).
    pub dependency_audits: Vec<String>,
    /// Where each value came from.
    pub origins: Vec<ValueOrigin>,
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Checks a repository string: a local path (absolute or relative) or `s3://bucket[/prefix]`.
pub fn validate_repository(repo: &str) -> Result<(), crate::Error> {
    let invalid = |reason: String| crate::Error::Invalid {
        what: "repository",
        reason,
    };
    if repo.contains('\0') {
        return Err(invalid(format!("repository {repo:?} contains a NUL byte")));
    }
    if let Some(rest) = repo.strip_prefix("s3://") {
        let bucket = rest.split('/').next().unwrap_or("");
        let ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if ok {
            Ok(())
        } else {
            Err(invalid(format!(
                "invalid S3 bucket name {bucket:?} in {repo:?}"
            )))
        }
    } else if repo.contains("://") {
        Err(invalid(format!(
            "unsupported repository {repo:?}: expected a local path or s3://bucket/prefix"
        )))
    } else if repo.trim().is_empty() {
        Err(invalid("empty repository".into()))
    } else {
        Ok(())
    }
}

/// Splits `host:port` (with `[v6]:port`); None when malformed.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        s.rsplit_once(':')?
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok().filter(|p| *p != 0)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const FULL: &str = r#"
environment = "production"
audit_log = "/var/log/tej/audit.jsonl"

[[database]]
name = "main"
url = "postgres://app@db:5432/skillswap_db"
password = { env = "PGPASSWORD" }
sanity_queries = ["SELECT COUNT(*) FROM users"]

[[redis]]
name = "cache"
url = "redis://redis:6379/0"
password = { file = "/run/secrets/redis" }

[backup]
repositories = ["/opt/skillswap/backups", "s3://skillswap-backups/db"]
compression = "zstd"
compression_level = 3
encryption = { recipients = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"] }
retention = { daily_days = 30, weekly_days = 90, monthly_days = 365, yearly_days = 2555 }

[logs]
paths = ["/opt/skillswap/logs"]

[[tls]]
endpoint = "skillswap.in:443"

[compose]
project = "skillswap"

[secrets]
env_file = "/opt/skillswap/.env"

[[audit]]
name = "backend"
command = ["npm", "audit", "--json", "--omit=dev"]
dir = "/opt/skillswap/backend"

[[audit]]
name = "tej"
command = ["cargo", "audit", "--json"]
timeout_secs = 600
"#;

    #[test]
    fn the_search_path_is_the_working_directory_then_the_user_then_the_system() {
        let env = |k: &str| match k {
            "XDG_CONFIG_HOME" => Some("/home/ops/.xdg".to_string()),
            "HOME" => Some("/home/ops".to_string()),
            _ => None,
        };
        assert_eq!(
            Config::search_path(&env),
            [
                PathBuf::from("tej.toml"),
                PathBuf::from("/home/ops/.xdg/tej/tej.toml"),
                PathBuf::from("/etc/tej/tej.toml"),
            ]
        );
        // XDG_CONFIG_HOME unset or relative (the spec says to ignore it): ~/.config.
        let home = |k: &str| match k {
            "XDG_CONFIG_HOME" => Some("relative".to_string()),
            "HOME" => Some("/home/ops".to_string()),
            _ => None,
        };
        assert_eq!(
            Config::search_path(&home)[1],
            PathBuf::from("/home/ops/.config/tej/tej.toml")
        );
        let none = |_: &str| None;
        assert_eq!(Config::search_path(&none).len(), 2);
        assert_eq!(
            Config::locate(Some(Path::new("/x/t.toml")), &none),
            Some(PathBuf::from("/x/t.toml"))
        );
    }

    #[test]
    fn full_config_parses() {
        let c = Config::from_toml_with_env(FULL, "tej.toml", &no_env).unwrap();
        assert_eq!(c.environment, Environment::Production);
        assert_eq!(
            c.databases[0].sanity_queries,
            vec!["SELECT COUNT(*) FROM users"]
        );
        assert_eq!(c.redis[0].session_pattern, "sess:*");
        assert_eq!(
            c.secrets.as_ref().unwrap().rotate,
            vec!["JWT_SECRET", "JWT_REFRESH_SECRET"]
        );
        assert_eq!(c.tls[0].warn_days, 30);
        assert_eq!(c.audit.len(), 2);
        assert_eq!(c.audit[0].dialect(), Some(AuditKind::Npm));
        assert_eq!(c.audit[1].dialect(), Some(AuditKind::Cargo));
        assert_eq!(c.audit[1].timeout_secs, Some(600));
        let s = c.summary();
        assert_eq!(
            s.dependency_audits,
            vec![
                "backend = npm audit --json --omit=dev (in /opt/skillswap/backend)",
                "tej = cargo audit --json"
            ]
        );
        assert_eq!(
            s.databases[0],
            "main = postgres://app@db:5432/skillswap_db (password from env:PGPASSWORD)"
        );
        assert_eq!(
            s.redis[0],
            "cache = redis://redis:6379/0 (password from file:/run/secrets/redis)"
        );
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = Config::from_toml_with_env("[backup]\nretention = { daily_days = \"thirty\", weekly_days = 1, monthly_days = 1, yearly_days = 1 }\n", "/etc/tej.toml", &no_env).unwrap_err();
        assert_eq!(e.config_file().unwrap(), "/etc/tej.toml");
        assert_eq!(e.config_key().unwrap(), "backup.retention.daily_days");
        assert!(e.config_message().unwrap().contains("expected"), "{e}");

        let e = Config::from_toml_with_env("[backup]\ncompresion = \"zstd\"\n", "t.toml", &no_env)
            .unwrap_err();
        assert!(
            e.config_message()
                .unwrap()
                .contains("unknown field `compresion`"),
            "{e}"
        );
        assert_eq!(e.config_key().unwrap(), "backup.compresion");

        let e = Config::from_toml_with_env("[backup]\ncompression = \"lz4\"\n", "t.toml", &no_env)
            .unwrap_err();
        assert_eq!(e.config_key().unwrap(), "backup.compression");

        let e = Config::from_toml_with_env(
            "[backup]\nrepositories = [\"s3://Bad_Bucket/x\"]\n",
            "t.toml",
            &no_env,
        )
        .unwrap_err();
        assert_eq!(e.config_key().unwrap(), "backup.repositories[0]");

        let e = Config::from_toml_with_env("environment = \"prod-eu\"\n", "t.toml", &no_env)
            .unwrap_err();
        assert_eq!(e.config_key().unwrap(), "environment");

        let e =
            Config::from_toml_with_env("[[tls]]\nendpoint = \"skillswap.in\"\n", "t.toml", &no_env)
                .unwrap_err();
        assert_eq!(e.config_key().unwrap(), "tls[0].endpoint");

        let e = Config::from_toml_with_env("timezone = \"India/Delhi\"\n", "t.toml", &no_env)
            .unwrap_err();
        assert_eq!(e.config_key().unwrap(), "timezone");

        let e = Config::from_toml_with_env("this is = not toml [", "t.toml", &no_env).unwrap_err();
        assert_eq!(e.config_file().unwrap(), "t.toml");
        assert!(e.to_string().starts_with("t.toml: -: "), "{e}");
    }

    #[test]
    fn inline_passwords_in_file_are_refused_and_never_echoed() {
        let e = Config::from_toml_with_env(
            "[[database]]\nname = \"m\"\nurl = \"postgres://app:hunter22@db/x\"\n",
            "t.toml",
            &no_env,
        )
        .unwrap_err();
        assert_eq!(e.config_key().unwrap(), "database[0].url");
        assert!(!e.to_string().contains("hunter22"));
    }

    #[test]
    fn environment_file_wins_and_a_conflict_is_an_error() {
        let none = |_: &str| None;
        let dev = |k: &str| (k == "TEJ_ENVIRONMENT").then(|| "development".to_string());
        let prod = |k: &str| (k == "TEJ_ENVIRONMENT").then(|| "production".to_string());
        // Nothing anywhere: the default, and it says so.
        let c = Config::from_toml_with_env("", "(no tej.toml)", &none).unwrap();
        assert_eq!(c.environment, Environment::Development);
        assert_eq!(c.environment_source, EnvironmentSource::Default);
        assert!(c.environment_source.to_string().contains("default"));
        // Only the variable.
        let c = Config::from_toml_with_env("", "t.toml", &prod).unwrap();
        assert_eq!(c.environment, Environment::Production);
        assert_eq!(c.environment_source, EnvironmentSource::Variable);
        // Only the file, or both agreeing: the file.
        let file = "environment = \"production\"\n";
        for env in [&none as EnvLookup<'_>, &prod] {
            let c = Config::from_toml_with_env(file, "t.toml", env).unwrap();
            assert_eq!(c.environment, Environment::Production);
            assert_eq!(c.environment_source, EnvironmentSource::File);
        }
        // The file says production, the variable development: never silently either.
        let e = Config::from_toml_with_env(file, "t.toml", &dev).unwrap_err();
        assert_eq!(e.config_key().unwrap(), "environment");
        assert!(
            e.config_message().unwrap().contains("production")
                && e.config_message()
                    .unwrap()
                    .contains("TEJ_ENVIRONMENT=development"),
            "{e}"
        );
        assert_eq!(c_summary_source(file), EnvironmentSource::File);
    }

    fn c_summary_source(text: &str) -> EnvironmentSource {
        Config::from_toml_with_env(text, "t.toml", &|_| None)
            .unwrap()
            .summary()
            .environment_source
    }

    #[test]
    fn calendar_overrides_are_validated() {
        let none = |_: &str| None;
        let c = Config::from_toml_with_env(
            "[calendar.nightly-backup]\nat = \"01:30\"\n[calendar.certificate-renewal-pm]\nenabled = false\n",
            "t.toml",
            &none,
        )
        .unwrap();
        let cal = crate::Calendar::from_config(&c).unwrap();
        assert_eq!(
            cal.entry("nightly-backup").unwrap().recurrence,
            crate::Recurrence::Day {
                at: jiff::civil::Time::constant(1, 30, 0, 0)
            }
        );
        assert!(cal.entry("certificate-renewal-pm").is_none());
        let e = Config::from_toml_with_env("[calendar.nightly]\nat = \"01:30\"\n", "t.toml", &none)
            .unwrap_err();
        assert_eq!(e.config_key().unwrap(), "calendar.nightly");
        assert!(
            e.config_message()
                .unwrap()
                .contains("no such calendar entry"),
            "{e}"
        );
        let e = Config::from_toml_with_env(
            "[calendar.nightly-backup]\nat = \"1:30am\"\n",
            "t.toml",
            &none,
        )
        .unwrap_err();
        assert_eq!(e.config_key().unwrap(), "calendar.nightly-backup.at");
        assert!(e.config_message().unwrap().contains("HH:MM"), "{e}");
        let e = Config::from_toml_with_env(
            "[calendar.nightly-backup]\ntime = \"01:30\"\n",
            "t.toml",
            &none,
        )
        .unwrap_err();
        assert!(e.to_string().contains("time"), "{e}");
    }

    #[test]
    fn environment_conventions() {
        let env = |k: &str| match k {
            "DATABASE_URL" => Some("postgres://app:pw-from-env@db:5432/skillswap_db".to_string()),
            "REDIS_URL" => Some("redis://127.0.0.1:6379/0".to_string()),
            "TEJ_ENVIRONMENT" => Some("staging".to_string()),
            "DOCKER_HOST" => Some("unix:///tmp/d.sock".to_string()),
            _ => None,
        };
        let c = Config::from_toml_with_env("[compose]\nproject = \"p\"\n", "t.toml", &env).unwrap();
        assert_eq!(c.environment, Environment::Staging);
        assert_eq!(c.databases[0].name, "default");
        assert_eq!(c.redis[0].url.expose(), "redis://127.0.0.1:6379/0");
        assert_eq!(
            c.compose.as_ref().unwrap().docker_host.as_deref(),
            Some("unix:///tmp/d.sock")
        );
        assert!(!format!("{:?}", c.databases[0]).contains("pw-from-env"));
        assert!(!format!("{:?}", c.summary()).contains("pw-from-env"));

        let pg = |k: &str| match k {
            "PGHOST" => Some("127.0.0.1".to_string()),
            "PGPORT" => Some("5433".to_string()),
            "PGDATABASE" => Some("app".to_string()),
            "PGPASSWORD" => Some("x".to_string()),
            _ => None,
        };
        let c = Config::from_toml_with_env("", "t.toml", &pg).unwrap();
        assert_eq!(
            c.databases[0].url.expose(),
            "host=127.0.0.1 port=5433 dbname=app"
        );
        assert_eq!(
            c.databases[0].password,
            Some(SecretRef::Env {
                env: "PGPASSWORD".into()
            })
        );
    }

    #[test]
    fn custom_checks() {
        let ok = "[[check]]\nname = \"active-users\"\nsql = \"SELECT 1\"\nwarn = 10\ncrit = 20\n[[check]]\nname = \"online\"\nredis = [\"DBSIZE\"]\nwarn = 5\ncrit = 1\ndirection = \"lower_is_worse\"\n";
        let c = Config::from_toml_with_env(ok, "t.toml", &no_env).unwrap();
        assert_eq!(c.checks.len(), 2);
        assert_eq!(
            c.checks[1].threshold().evaluate(0.0),
            crate::Severity::Critical
        );
        let both =
            "[[check]]\nname = \"x\"\nsql = \"SELECT 1\"\nredis = [\"PING\"]\nwarn = 1\ncrit = 2\n";
        assert_eq!(
            Config::from_toml_with_env(both, "t.toml", &no_env)
                .unwrap_err()
                .config_key()
                .unwrap(),
            "check[0]"
        );
        let bad = "[[check]]\nname = \"x\"\nsql = \"SELECT 1\"\nwarn = 5\ncrit = 1\n";
        assert_eq!(
            Config::from_toml_with_env(bad, "t.toml", &no_env)
                .unwrap_err()
                .config_key()
                .unwrap(),
            "check[0].crit"
        );
        let nodb = "[[check]]\nname = \"x\"\nsql = \"SELECT 1\"\ndatabase = \"nope\"\nwarn = 1\ncrit = 2\n";
        assert_eq!(
            Config::from_toml_with_env(nodb, "t.toml", &no_env)
                .unwrap_err()
                .config_key()
                .unwrap(),
            "check[0].database"
        );
    }

    #[test]
    fn dependency_audits() {
        let ok = "[[audit]]\nname = \"web\"\ncommand = [\"sh\", \"-c\", \"cat audit.json\"]\nkind = \"npm\"\n[[audit]]\nname = \"api\"\ncommand = [\"/usr/local/bin/pnpm\", \"audit\", \"--json\"]\n";
        let c = Config::from_toml_with_env(ok, "t.toml", &no_env).unwrap();
        assert_eq!(c.audit[0].kind, Some(AuditKind::Npm));
        assert_eq!(c.audit[0].dir, None);
        assert_eq!(c.audit[1].dialect(), Some(AuditKind::Npm));
        assert!(Config::default().audit.is_empty());

        for (toml, key, needle) in [
            (
                "[[audit]]\nname = \"a\"\ncommand = []\n",
                "audit[0].command",
                "empty",
            ),
            (
                "[[audit]]\nname = \"a\"\ncommand = [\"npm\", \"audit\"]\n[[audit]]\nname = \"b\"\ncommand = [\"\"]\n",
                "audit[1].command",
                "empty",
            ),
            (
                "[[audit]]\nname = \"a\"\ncommand = [\"sh\", \"-c\", \"x\"]\n",
                "audit[0].kind",
                "set kind",
            ),
            (
                "[[audit]]\nname = \"a\"\ncommand = [\"npm\"]\nkind = \"yarn\"\n",
                "audit[0].kind",
                "unknown variant",
            ),
            (
                "[[audit]]\nname = \" \"\ncommand = [\"npm\"]\n",
                "audit[0].name",
                "empty",
            ),
            (
                "[[audit]]\nname = \"a\"\ncommand = [\"npm\"]\n[[audit]]\nname = \"a\"\ncommand = [\"cargo\"]\n",
                "audit[1].name",
                "duplicate",
            ),
            (
                "[[audit]]\nname = \"a\"\ncommand = [\"npm\"]\ntimeout_secs = 0\n",
                "audit[0].timeout_secs",
                "at least 1",
            ),
            (
                "[[audit]]\nname = \"a\"\ncommand = [\"npm\"]\ndirectory = \"/x\"\n",
                "audit[0].directory",
                "unknown field",
            ),
            ("[[audit]]\nname = \"a\"\n", "audit[0]", "command"),
        ] {
            let e = Config::from_toml_with_env(toml, "t.toml", &no_env).unwrap_err();
            assert_eq!(e.config_key().unwrap(), key, "{toml}: {e}");
            assert_eq!(e.config_file().unwrap(), "t.toml");
            assert!(e.config_message().unwrap().contains(needle), "{toml}: {e}");
        }
    }

    #[test]
    fn deploy_services() {
        let ok = r#"
[backup]
repositories = ["/opt/skillswap/backups"]

[deploy]
lock_dir = "/var/lib/tej/locks"

[[deploy.service]]
name = "backend"
ports = [3000, 3001]
health_path = "/health"
nginx_upstream_file = "/etc/nginx/conf.d/backend-upstream.conf"
migrate = ["npx", "prisma", "migrate", "deploy"]
test_command = ["npm", "test"]
test_dir = "/opt/skillswap/backend"
backup_max_age_hours = 26
log_window_secs = 600
public_addr = "127.0.0.1:80"

[[deploy.service]]
name = "frontend"
ports = [4000, 4001]
nginx_upstream_file = "/etc/nginx/conf.d/frontend-upstream.conf"
nginx_upstream = "web"
"#;
        let c = Config::from_toml_with_env(ok, "t.toml", &no_env).unwrap();
        let b = c.deploy.service("backend").unwrap();
        assert_eq!(b.ports, [3000, 3001]);
        assert_eq!(b.port_env, "PORT");
        assert_eq!(b.health_timeout_secs, 60);
        assert_eq!(b.switch, DeploySwitchKind::Nginx);
        assert_eq!(b.upstream_name(), "backend");
        assert_eq!(b.nginx_program, "nginx");
        assert_eq!(b.migrate.as_ref().unwrap().len(), 4);
        assert_eq!((b.stop_timeout_secs, b.drain_timeout_secs), (10, 30));
        let f = c.deploy.service("frontend").unwrap();
        assert_eq!(f.upstream_name(), "web");
        assert_eq!(f.health_path, None);
        assert!(c.deploy.service("worker").is_none());
        assert_eq!(Config::default().deploy, DeployConfig::default());

        let base = "[[deploy.service]]\nname = \"api\"\nnginx_upstream_file = \"/u.conf\"\n";
        for (extra, key, needle) in [
            (
                "ports = [3000, 3000]\n",
                "deploy.service[0].ports",
                "different",
            ),
            ("ports = [3000]\n", "deploy.service[0].ports", ""),
            (
                "ports = [1, 2]\nport_env = \"port\"\n",
                "deploy.service[0].port_env",
                "",
            ),
            (
                "ports = [1, 2]\nhealth_path = \"health\"\n",
                "deploy.service[0].health_path",
                "/",
            ),
            (
                "ports = [1, 2]\nswitch = \"tcp-proxy\"\n",
                "deploy.service[0].switch",
                "exits",
            ),
            (
                "ports = [1, 2]\nswitch = \"haproxy\"\n",
                "deploy.service[0].switch",
                "nginx",
            ),
            (
                "ports = [1, 2]\nmigrate = []\n",
                "deploy.service[0].migrate",
                "empty",
            ),
            (
                "ports = [1, 2]\nbackup_max_age_hours = 26\n",
                "deploy.service[0].backup_max_age_hours",
                "repositories",
            ),
            (
                "ports = [1, 2]\npublic_addr = \"localhost\"\n",
                "deploy.service[0].public_addr",
                "IP:PORT",
            ),
            (
                "ports = [1, 2]\npublic_addr = \"127.0.0.1:80\"\n",
                "deploy.service[0].public_addr",
                "health_path",
            ),
            (
                "ports = [1, 2]\nhealth_timeout_secs = 0\n",
                "deploy.service[0].health_timeout_secs",
                "at least",
            ),
            (
                "ports = [1, 2]\nhelth_path = \"/h\"\n",
                "deploy.service[0].helth_path",
                "unknown field",
            ),
        ] {
            let e = Config::from_toml_with_env(&format!("{base}{extra}"), "t.toml", &no_env)
                .unwrap_err();
            assert_eq!(e.config_key().unwrap(), key, "{extra}: {e}");
            assert_eq!(e.config_file().unwrap(), "t.toml");
            assert!(e.config_message().unwrap().contains(needle), "{extra}: {e}");
        }
        let dup = format!("{base}ports = [1, 2]\n{base}ports = [3, 4]\n");
        assert_eq!(
            Config::from_toml_with_env(&dup, "t.toml", &no_env)
                .unwrap_err()
                .config_key()
                .unwrap(),
            "deploy.service[1].name"
        );
        let missing = "[[deploy.service]]\nname = \"api\"\nports = [1, 2]\n";
        let e = Config::from_toml_with_env(missing, "t.toml", &no_env).unwrap_err();
        assert!(
            e.config_message().unwrap().contains("nginx_upstream_file"),
            "{e}"
        );
    }

    #[test]
    fn host_port_split() {
        assert_eq!(
            split_host_port("skillswap.in:443"),
            Some(("skillswap.in".into(), 443))
        );
        assert_eq!(split_host_port("[::1]:8443"), Some(("::1".into(), 8443)));
        assert_eq!(split_host_port("host"), None);
        assert_eq!(split_host_port(":443"), None);
        assert_eq!(split_host_port("h:0"), None);
    }
}

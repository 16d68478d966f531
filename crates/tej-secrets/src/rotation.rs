//! Staged, resumable rotation of `.env` secrets (create → set → test → finish),
//! with rollback, session invalidation and an audit trail.

use crate::dotenv::EnvFile;
use crate::envfile::{
    FileMeta, UpdateOptions, backup_file, list_backups, prune_backups, read_env_file, replace_file,
    resolve_target, restore_backup, update_env_file,
};
use crate::error::{Result, SecretsError};
use crate::generate::{SecretFormat, generate_secret};
use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tej_core::audit::current_actor;
use tej_core::{
    AuditLog, Guard, Outcome, Plan, Redactor, Risk, Secret, Severity, StepOutput, StepReport,
};

/// Invalidates user sessions (implemented over Redis by tej-db).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Deletes every session key matching `pattern` (glob, as `SCAN MATCH`); returns how many.
    async fn invalidate(&self, pattern: &str) -> Result<u64>;
    /// Drops the whole session database (`FLUSHDB`); returns how many keys it held.
    async fn flush_all_sessions(&self) -> Result<u64>;
}

/// One variable of the environment a recreated service gets, as the `.env` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEnvVar {
    /// The variable (`JWT_SECRET`, `JWT_SECRET_PREVIOUS`).
    pub key: String,
    /// Its value in the `.env`; `None` when the `.env` no longer has it (remove it).
    pub value: Option<Secret>,
    /// For a previous value: the key it belongs beside (`JWT_SECRET`). A service that has
    /// that key gets this one too; otherwise a value only replaces a variable the service
    /// already has, as Compose's `env_file`/`${VAR}` would.
    pub alongside: Option<String>,
}

/// The rotated part of a service's environment (values redacted in `Debug`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceEnv {
    /// The rotated keys and their previous-value keys, with the `.env`'s values.
    pub vars: Vec<ServiceEnvVar>,
}

impl ServiceEnv {
    /// The environment for `keys` (and their `KEY{previous_suffix}`) as `file` holds it.
    pub fn from_env_file(file: &EnvFile, keys: &[String], previous_suffix: &str) -> ServiceEnv {
        let mut vars = Vec::new();
        for k in keys {
            vars.push(ServiceEnvVar {
                key: k.clone(),
                value: file.get(k),
                alongside: None,
            });
            let prev = format!("{k}{previous_suffix}");
            vars.push(ServiceEnvVar {
                value: file.get(&prev),
                key: prev,
                alongside: Some(k.clone()),
            });
        }
        ServiceEnv { vars }
    }

    /// The variable names, in order.
    pub fn keys(&self) -> Vec<String> {
        self.vars.iter().map(|v| v.key.clone()).collect()
    }
}

/// The SHA-256 (hex) of a value: what [`ServiceControl::live_env_digests`] reports, so a
/// running service's secret can be compared without being shown.
pub fn value_digest(value: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(value.as_bytes()))
}

/// Recreates a service so it runs with the `.env`'s values (implemented over tej-deploy).
#[async_trait]
pub trait ServiceControl: Send + Sync {
    /// Stops, removes and creates `service` again from its definition with `env` applied
    /// (`docker compose up -d --force-recreate SERVICE` after the `.env` changed; a restart
    /// does not re-read it). The old instance must keep serving when the new one fails.
    async fn recreate(&self, service: &str, env: &ServiceEnv) -> Result<()>;

    /// For each of `keys`, the [`value_digest`] of its value in the running service's
    /// environment, `None` when it does not have it. Keys the service's environment never
    /// holds (it reads the `.env` another way) may be left out.
    async fn live_env_digests(
        &self,
        service: &str,
        keys: &[String],
    ) -> Result<Vec<(String, Option<String>)>>;
}

#[cfg(any(test, feature = "mock"))]
mockall::mock! {
    /// A mock [`ServiceControl`]: `expect_recreate` sees the service name; the mocked
    /// service's environment holds none of the rotated keys (`live_env_digests` is empty).
    pub ServiceControl {
        /// What [`ServiceControl::recreate`] calls (the environment is not passed).
        pub fn recreate(&self, service: &str) -> Result<()>;
    }
}

#[cfg(any(test, feature = "mock"))]
#[async_trait]
impl ServiceControl for MockServiceControl {
    async fn recreate(&self, service: &str, _env: &ServiceEnv) -> Result<()> {
        MockServiceControl::recreate(self, service)
    }

    async fn live_env_digests(
        &self,
        _service: &str,
        _keys: &[String],
    ) -> Result<Vec<(String, Option<String>)>> {
        Ok(Vec::new())
    }
}

/// Asks the application whether it works.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait AppProbe: Send + Sync {
    /// The HTTP status of the health endpoint; an error when nothing answers.
    async fn health(&self) -> Result<u16>;
    /// The HTTP status of a login with the configured test account; an error when nothing answers.
    async fn login(&self) -> Result<u16>;
}

/// Where [`HttpAppProbe`] sends its requests.
#[derive(Clone)]
pub struct HttpProbeConfig {
    /// Health URL (`https://api.example.com/health`).
    pub health_url: String,
    /// Login URL (`https://api.example.com/api/v1/auth/login`).
    pub login_url: String,
    /// The test account's email.
    pub email: String,
    /// The test account's password.
    pub password: Secret,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Extra trusted CA (PEM) for HTTPS endpoints with a private CA.
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for HttpProbeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProbeConfig")
            .field("health_url", &self.health_url)
            .field("login_url", &self.login_url)
            .field("email", &self.email)
            .field("password", &self.password)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpProbeConfig {
    /// Health at `BASE/health`, login at `BASE/api/v1/auth/login` (the runbook's endpoints).
    pub fn for_base_url(base: &str, email: impl Into<String>, password: Secret) -> HttpProbeConfig {
        let base = base.trim_end_matches('/');
        HttpProbeConfig {
            health_url: format!("{base}/health"),
            login_url: format!("{base}/api/v1/auth/login"),
            email: email.into(),
            password,
            timeout: Duration::from_secs(10),
            ca_pem: None,
        }
    }
}

/// The real [`AppProbe`], over HTTP(S) with reqwest and rustls.
#[derive(Debug, Clone)]
pub struct HttpAppProbe {
    client: reqwest::Client,
    config: HttpProbeConfig,
    redactor: Redactor,
}

impl HttpAppProbe {
    /// A probe for `config`.
    pub fn new(config: HttpProbeConfig) -> Result<HttpAppProbe> {
        let mut b = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &config.ca_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| SecretsError::Certificate(format!("probe CA: {e}")))?;
            b = b.add_root_certificate(cert);
        }
        let client = b
            .build()
            .map_err(|e| SecretsError::Tls(format!("cannot build the HTTP client: {e}")))?;
        let mut redactor = Redactor::new();
        redactor.add(&config.password);
        Ok(HttpAppProbe {
            client,
            config,
            redactor,
        })
    }

    fn map_err(&self, what: &str, e: reqwest::Error) -> SecretsError {
        let text = self.redactor.redact(&format!("{what}: {e}"));
        if e.is_timeout() {
            SecretsError::Timeout {
                what: text,
                after: self.config.timeout,
            }
        } else {
            SecretsError::Probe(text)
        }
    }
}

#[async_trait]
impl AppProbe for HttpAppProbe {
    async fn health(&self) -> Result<u16> {
        let r = self
            .client
            .get(&self.config.health_url)
            .send()
            .await
            .map_err(|e| self.map_err("GET health", e))?;
        Ok(r.status().as_u16())
    }

    async fn login(&self) -> Result<u16> {
        let body = serde_json::json!({
            "email": self.config.email,
            "password": self.config.password.expose(),
        });
        let r = self
            .client
            .post(&self.config.login_url)
            .json(&body)
            .send()
            .await
            .map_err(|e| self.map_err("POST login", e))?;
        Ok(r.status().as_u16())
    }
}

/// How a rotation treats users and old values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RotationMode {
    /// New values, old sessions invalidated as configured (the quarterly rotation).
    #[default]
    Standard,
    /// New values, the old ones kept as `KEY_PREVIOUS` for a grace period; sessions kept.
    Graceful,
    /// A breach: every configured key, no previous values, every session dropped.
    Emergency,
}

/// How sessions are invalidated after the new secrets are live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionInvalidation {
    /// Delete keys matching this pattern (`sess:*`).
    Pattern(String),
    /// Drop the whole session database.
    FlushDatabase,
    /// Leave sessions alone.
    Keep,
}

/// How a rotation runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RotateOptions {
    /// The `.env` file.
    pub env_file: PathBuf,
    /// Keys to rotate (`JWT_SECRET`, `JWT_REFRESH_SECRET`).
    pub keys: Vec<String>,
    /// Standard, graceful or emergency.
    pub mode: RotationMode,
    /// Suffix of the keys that keep previous values in graceful mode.
    pub previous_suffix: String,
    /// How long previous values stay valid in graceful mode.
    pub grace: SignedDuration,
    /// What new secrets look like.
    pub format: SecretFormat,
    /// The service that reads the `.env`.
    pub service: String,
    /// Session invalidation in standard mode (emergency always flushes, graceful keeps).
    pub sessions: SessionInvalidation,
    /// How long the application may take to answer `/health` after the recreate.
    pub verify_timeout: Duration,
    /// Pause between health polls.
    pub verify_interval: Duration,
    /// Require a 2xx login (the default); otherwise any answer below 500 passes except
    /// 401 and 403, which always fail: the new secret must let the test account in.
    pub login_must_succeed: bool,
    /// How many `.env` backups (`.env.bak.*`, holding old secrets) a completed rotation
    /// keeps, newest first; older ones are overwritten and removed. At least 1.
    pub backups_keep: usize,
    /// Edit a symlinked `.env`'s target instead of refusing.
    pub follow_symlink: bool,
    /// Plan only.
    pub dry_run: bool,
    /// The stage record (default: `.NAME.tej-rotation.json` beside the `.env`).
    pub state_file: Option<PathBuf>,
}

impl RotateOptions {
    /// The runbook's rotation of `JWT_SECRET` and `JWT_REFRESH_SECRET` in `env_file`.
    pub fn new(env_file: impl Into<PathBuf>) -> RotateOptions {
        RotateOptions {
            env_file: env_file.into(),
            keys: vec!["JWT_SECRET".into(), "JWT_REFRESH_SECRET".into()],
            mode: RotationMode::Standard,
            previous_suffix: "_PREVIOUS".into(),
            grace: SignedDuration::from_hours(24),
            format: SecretFormat::default(),
            service: "backend".into(),
            sessions: SessionInvalidation::Pattern("sess:*".into()),
            verify_timeout: Duration::from_secs(60),
            verify_interval: Duration::from_secs(1),
            login_must_succeed: true,
            backups_keep: 5,
            follow_symlink: false,
            dry_run: false,
            state_file: None,
        }
    }

    /// The stage record's path.
    pub fn state_path(&self) -> PathBuf {
        self.state_file
            .clone()
            .unwrap_or_else(|| default_state_path(&self.env_file))
    }

    fn validate(&self) -> Result<()> {
        if self.keys.is_empty() {
            return Err(SecretsError::InvalidOptions("no keys to rotate".into()));
        }
        for k in &self.keys {
            if !crate::dotenv::is_valid_key(k) {
                return Err(SecretsError::InvalidKey(k.clone()));
            }
        }
        if !crate::dotenv::is_valid_key(&format!("X{}", self.previous_suffix)) {
            return Err(SecretsError::InvalidOptions(format!(
                "previous suffix {:?} does not make valid keys",
                self.previous_suffix
            )));
        }
        if self.grace.is_negative() {
            return Err(SecretsError::InvalidOptions("negative grace period".into()));
        }
        if self.backups_keep == 0 {
            return Err(SecretsError::InvalidOptions(
                "backups_keep must be at least 1 (the newest backup is the rollback's)".into(),
            ));
        }
        self.format.validate()
    }
}

/// The stage record's default path for `env_file`.
pub fn default_state_path(env_file: &Path) -> PathBuf {
    let name = env_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "env".into());
    let name = name.trim_start_matches('.');
    env_file.with_file_name(format!(".{name}.tej-rotation.json"))
}

/// The rotation lock's path for `env_file`: `.NAME.tej-rotation.lock` beside it.
pub fn default_lock_path(env_file: &Path) -> PathBuf {
    let name = env_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "env".into());
    let name = name.trim_start_matches('.');
    env_file.with_file_name(format!(".{name}.tej-rotation.lock"))
}

/// A held rotation lock: an exclusive `flock` on the lock file, which names its holder;
/// released on drop or when the process dies (a crashed rotation leaves no stale lock,
/// only its stage record).
#[derive(Debug)]
pub struct RotationLock {
    file: std::fs::File,
    path: PathBuf,
}

impl RotationLock {
    /// Takes the lock at `path` for `what`, or fails with [`SecretsError::Locked`] naming
    /// the rotation that holds it.
    pub fn acquire(path: &Path, what: &str) -> Result<RotationLock> {
        use std::io::{Read, Seek, SeekFrom, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| SecretsError::io("open the rotation lock", path, &e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut held = String::new();
                let _ = file.read_to_string(&mut held);
                let holder = match held.trim() {
                    "" => "another process".to_string(),
                    h => h.to_string(),
                };
                return Err(SecretsError::Locked {
                    path: path.to_path_buf(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(SecretsError::io("lock", path, &e));
            }
        }
        let note = format!(
            "{what} (pid {}, by {}, since {})\n",
            std::process::id(),
            current_actor().unwrap_or_else(|| "unknown user".into()),
            Timestamp::now()
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| file.write_all(note.as_bytes()))
            .and_then(|()| file.sync_data())
            .map_err(|e| SecretsError::io("write the rotation lock", path, &e))?;
        Ok(RotationLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RotationLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// A rotation's recorded stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The backup of the `.env` exists.
    Created,
    /// The new values are in the `.env`.
    EnvWritten,
    /// The service was recreated with them.
    Recreated,
    /// Sessions were invalidated.
    SessionsInvalidated,
    /// The application answered.
    Verified,
    /// A rollback started.
    RollingBack,
    /// Done; previous values stay until the grace period ends.
    Grace,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

/// The stage record: never holds secret values (the new ones live only in the `.env`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotationState {
    /// Format version.
    pub version: u32,
    /// Where the rotation is.
    pub stage: Stage,
    /// The mode.
    pub mode: RotationMode,
    /// The rotated keys.
    pub keys: Vec<String>,
    /// Keys holding previous values (graceful mode).
    pub previous_keys: Vec<String>,
    /// The `.env` file.
    pub env_file: PathBuf,
    /// The backup of the `.env` before the rotation.
    pub backup: PathBuf,
    /// The service.
    pub service: String,
    /// When the rotation started.
    pub started_at: Timestamp,
    /// When the record was last written.
    pub updated_at: Timestamp,
    /// When previous values expire (graceful mode).
    #[serde(default)]
    pub grace_until: Option<Timestamp>,
    /// Why a rollback started.
    #[serde(default)]
    pub rollback_reason: Option<String>,
}

impl RotationState {
    /// Reads the record at `path`; `None` when there is none.
    pub fn load(path: &Path) -> Result<Option<RotationState>> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| SecretsError::State {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SecretsError::io("read", path, &e)),
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| SecretsError::State {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        replace_file(
            path,
            &json,
            FileMeta {
                mode: 0o600,
                uid: None,
                gid: None,
            },
        )
    }
}

/// One recorded step of a rotation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RotationStep {
    /// `create`, `set`, `recreate`, `invalidate-sessions`, `test`, `finish`, `rollback-env`, `rollback-recreate`...
    pub step: String,
    /// `applied`, `failed`, `skipped`.
    pub outcome: String,
    /// What happened (redacted).
    pub detail: String,
    /// Wall time.
    pub duration_ms: u64,
}

/// How a rotation ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RotationOutcome {
    /// Dry run: nothing changed.
    Planned,
    /// New secrets are live and verified.
    Completed,
    /// A step failed; the previous `.env` is back and the service was recreated with it.
    RolledBack {
        /// The failure (redacted).
        reason: String,
    },
    /// A step failed and the rollback failed too; the stage record stays for a resume.
    RollbackFailed {
        /// The first failure.
        reason: String,
        /// The rollback's failure.
        error: String,
    },
}

/// The result of a rotation, safe to print and serialize.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RotationReport {
    /// The `.env` file.
    pub env_file: PathBuf,
    /// The mode.
    pub mode: RotationMode,
    /// Rotated keys (names only).
    pub keys: Vec<String>,
    /// Plan only?
    pub dry_run: bool,
    /// The stage a crashed rotation was resumed from.
    pub resumed_from: Option<Stage>,
    /// What the rotation does, in order.
    pub plan: Vec<String>,
    /// What it did.
    pub steps: Vec<RotationStep>,
    /// How it ended.
    pub outcome: RotationOutcome,
    /// The backup of the previous `.env` (0600 like the original; holds the old values).
    pub backup: Option<PathBuf>,
    /// Session keys removed.
    pub sessions_invalidated: Option<u64>,
    /// The last health status seen.
    pub health_status: Option<u16>,
    /// The login status seen.
    pub login_status: Option<u16>,
    /// When previous values expire (graceful mode).
    pub previous_expires_at: Option<Timestamp>,
    /// The stage record.
    pub state_file: PathBuf,
}

impl RotationReport {
    /// Ok when completed or planned, critical otherwise.
    pub fn severity(&self) -> Severity {
        match self.outcome {
            RotationOutcome::Planned | RotationOutcome::Completed => Severity::Ok,
            _ => Severity::Critical,
        }
    }
}

/// Runs rotations against a session store, a service controller and an application probe.
pub struct Rotator<S, C, P> {
    /// Session invalidation.
    pub sessions: S,
    /// Service recreation.
    pub service: C,
    /// Application checks.
    pub probe: P,
    /// Confirmation, maintenance window and clock.
    pub guard: Guard,
    /// Where steps are recorded.
    pub audit: Option<AuditLog>,
}

impl<S, C, P> fmt::Debug for Rotator<S, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotator")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

struct Run<'a> {
    report: RotationReport,
    redactor: Redactor,
    state: Option<RotationState>,
    state_path: PathBuf,
    target: PathBuf,
    procedure: &'a str,
    /// Whether stages are written to (and removed from) the state file.
    persist: bool,
    /// The suffix of the previous-value keys.
    previous_suffix: String,
}

const PROCEDURE: &str = "secrets-rotate";

/// What a stage of the rotation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StageAction {
    /// Generates the new values and writes them into the `.env`.
    WriteNewValues,
    /// Recreates the service with the `.env`'s values.
    Recreate,
    /// Invalidates sessions as the mode and options say.
    InvalidateSessions,
    /// Checks `/health`, the live environment and a test login.
    Verify,
    /// Ends the rotation (the grace period, or the stage record removed).
    Finish,
}

/// How a failed stage is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undo {
    /// Put the backup of the `.env` back (the service never saw the new values).
    RestoreEnv,
    /// Put the backup back and recreate the service with it.
    RestoreEnvAndRecreate,
}

/// What a stage's failure is called in the rollback reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failing {
    /// A fixed phrase.
    Fixed(&'static str),
    /// The recreate of the service (named).
    RecreatingService,
}

impl Failing {
    fn describe(self, service: &str) -> String {
        match self {
            Failing::Fixed(s) => s.to_string(),
            Failing::RecreatingService => format!("recreating {service}"),
        }
    }
}

/// What the stages of one rotation share.
struct StageContext {
    keys: Vec<String>,
    mode: RotationMode,
    /// How sessions are invalidated (`None`: kept).
    sessions: Option<SessionInvalidation>,
    service: String,
}

/// One stage of a rotation after the backup: where it starts, what it does, what it records
/// and how a failure is undone.
struct StageSpec {
    /// The recorded stage it runs from.
    from: Stage,
    /// The stage recorded when it is done; `None` for the last (it ends the record itself).
    to: Option<Stage>,
    /// The step name in the report and the audit log.
    step: &'static str,
    /// Its risk.
    risk: fn(&StageContext) -> Risk,
    /// What it does.
    action: StageAction,
    /// What its failure is called.
    what: Failing,
    /// How its failure is undone.
    undo: Undo,
}

/// The rotation after the backup, in order; a resumed rotation starts at its recorded stage.
const STAGES: &[StageSpec] = &[
    StageSpec {
        from: Stage::Created,
        to: Some(Stage::EnvWritten),
        step: "set",
        risk: |_| Risk::Mutating,
        action: StageAction::WriteNewValues,
        what: Failing::Fixed("writing the .env"),
        undo: Undo::RestoreEnv,
    },
    StageSpec {
        from: Stage::EnvWritten,
        to: Some(Stage::Recreated),
        step: "recreate",
        risk: |_| Risk::Mutating,
        action: StageAction::Recreate,
        what: Failing::RecreatingService,
        undo: Undo::RestoreEnvAndRecreate,
    },
    StageSpec {
        from: Stage::Recreated,
        to: Some(Stage::SessionsInvalidated),
        step: "invalidate-sessions",
        risk: |c| {
            if c.sessions.is_some() {
                Risk::Destructive
            } else {
                Risk::ReadOnly
            }
        },
        action: StageAction::InvalidateSessions,
        what: Failing::Fixed("invalidating sessions"),
        undo: Undo::RestoreEnvAndRecreate,
    },
    StageSpec {
        from: Stage::SessionsInvalidated,
        to: Some(Stage::Verified),
        step: "test",
        risk: |_| Risk::ReadOnly,
        action: StageAction::Verify,
        what: Failing::Fixed("verification"),
        undo: Undo::RestoreEnvAndRecreate,
    },
    StageSpec {
        from: Stage::Verified,
        to: None,
        step: "finish",
        risk: |_| Risk::Mutating,
        action: StageAction::Finish,
        what: Failing::Fixed("finishing"),
        undo: Undo::RestoreEnvAndRecreate,
    },
];

/// When [`Rotator::expire_previous`] removes the previous values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expiry {
    /// Only once the grace period is over (otherwise the report is only a plan).
    #[default]
    WhenDue,
    /// Now, even inside the grace period.
    Now,
}

impl<S: SessionStore, C: ServiceControl, P: AppProbe> Rotator<S, C, P> {
    /// A rotator with no audit log.
    pub fn new(sessions: S, service: C, probe: P, guard: Guard) -> Self {
        Rotator {
            sessions,
            service,
            probe,
            guard,
            audit: None,
        }
    }

    fn now(&self) -> Timestamp {
        self.guard.clock.now()
    }

    /// Records one stage in the report, the tracing log and the audit log. The audit line
    /// is written the way the Executor writes its steps ([`Guard::record`]); every stage of a
    /// rotation is recorded, its read-only checks included, since the rollback rests on them.
    fn record(
        &self,
        run: &mut Run<'_>,
        step: &str,
        risk: Risk,
        result: std::result::Result<&str, &str>,
        started: Instant,
    ) {
        let (outcome, detail) = match result {
            Ok(d) => ("applied", run.redactor.redact(d)),
            Err(e) => ("failed", run.redactor.redact(e)),
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        if let Some(log) = &self.audit {
            let report = StepReport {
                step: step.to_string(),
                target: run.target.display().to_string(),
                risk,
                outcome: if result.is_ok() {
                    Outcome::Applied
                } else {
                    Outcome::Failed {
                        error: detail.clone(),
                    }
                },
                actions: Vec::new(),
                output: Some(StepOutput::summary(detail.clone())),
                duration_ms,
            };
            audit_through_guard(&self.guard, log, run.procedure, &report);
        }
        tracing::info!(step, outcome, detail = %detail, "rotation step");
        run.report.steps.push(RotationStep {
            step: step.to_string(),
            outcome: outcome.to_string(),
            detail,
            duration_ms,
        });
    }

    fn save_stage(&self, run: &mut Run<'_>, stage: Stage) -> Result<()> {
        let now = self.now();
        if !run.persist {
            return Ok(());
        }
        if let Some(st) = run.state.as_mut() {
            st.stage = stage;
            st.updated_at = now;
            st.save(&run.state_path)?;
        }
        Ok(())
    }

    fn plan_actions(opts: &RotateOptions, keys: &[String], mode: RotationMode) -> Vec<String> {
        let mut a = vec![
            format!("back up {} (same mode and owner)", opts.env_file.display()),
            format!(
                "generate new values for {} from the OS CSPRNG and write them atomically",
                keys.join(", ")
            ),
        ];
        match mode {
            RotationMode::Graceful => a.push(format!(
                "keep the old values as {} for {}",
                keys.iter()
                    .map(|k| format!("{k}{}", opts.previous_suffix))
                    .collect::<Vec<_>>()
                    .join(", "),
                opts.grace
            )),
            _ => a.push(format!(
                "remove any {}-suffixed previous values",
                opts.previous_suffix
            )),
        }
        a.push(format!(
            "recreate service {} with the new values in its environment (the old container is kept until the new one is healthy, and brought back otherwise)",
            opts.service
        ));
        a.push(match (mode, &opts.sessions) {
            (RotationMode::Emergency, _) => {
                "drop every session (flush the session database)".into()
            }
            (RotationMode::Graceful, _) => "keep sessions (graceful rotation)".into(),
            (_, SessionInvalidation::Pattern(p)) => format!("delete session keys matching {p}"),
            (_, SessionInvalidation::FlushDatabase) => "flush the session database".into(),
            (_, SessionInvalidation::Keep) => "keep sessions".into(),
        });
        a.push(format!(
            "check /health, that the running {} holds the new values (SHA-256 compared) and a login with the test account; roll back on failure",
            opts.service
        ));
        let old = list_backups(&opts.env_file).map(|b| b.len()).unwrap_or(0);
        let remove = (old + 1).saturating_sub(opts.backups_keep);
        a.push(format!(
            "keep the newest {} .env backups; overwrite and remove older ones ({remove} now)",
            opts.backups_keep
        ));
        a
    }

    /// Rotates (or resumes a crashed rotation of) the secrets in `opts.env_file`.
    ///
    /// Errors are returned for problems found before anything changed (bad options,
    /// a symlinked or missing `.env`, a refusal); failures after that are rolled back
    /// and described in the report's outcome.
    pub async fn rotate(&self, opts: &RotateOptions) -> Result<RotationReport> {
        opts.validate()?;
        let state_path = opts.state_path();
        let target = resolve_target(&opts.env_file, opts.follow_symlink)?;
        let _lock = if opts.dry_run {
            None
        } else {
            Some(RotationLock::acquire(
                &default_lock_path(&target),
                &format!("rotation of {}", target.display()),
            )?)
        };
        let existing = RotationState::load(&state_path)?.filter(|s| s.stage != Stage::Grace);
        let (mode, keys) = match &existing {
            Some(st) => (st.mode, st.keys.clone()),
            None => {
                let keys = opts.keys.clone();
                (opts.mode, keys)
            }
        };
        if let Some(st) = &existing
            && st.env_file != target
        {
            return Err(SecretsError::RotationInProgress {
                env_file: st.env_file.clone(),
                state_file: state_path,
                stage: st.stage.to_string(),
            });
        }
        let current = read_env_file(&target)?;
        let mut redactor = Redactor::new();
        for v in current.values() {
            redactor.add(&v);
        }
        let plan = Self::plan_actions(opts, &keys, mode);
        let mut run = Run {
            report: RotationReport {
                env_file: target.clone(),
                mode,
                keys: keys.clone(),
                dry_run: opts.dry_run,
                resumed_from: existing.as_ref().map(|s| s.stage),
                plan: plan.clone(),
                steps: Vec::new(),
                outcome: RotationOutcome::Planned,
                backup: existing.as_ref().map(|s| s.backup.clone()),
                sessions_invalidated: None,
                health_status: None,
                login_status: None,
                previous_expires_at: None,
                state_file: state_path.clone(),
            },
            redactor,
            state: existing.clone(),
            state_path,
            target: target.clone(),
            procedure: PROCEDURE,
            persist: true,
            previous_suffix: opts.previous_suffix.clone(),
        };
        if opts.dry_run {
            return Ok(run.report);
        }
        let risk = if mode == RotationMode::Graceful {
            Risk::Mutating
        } else {
            Risk::Destructive
        };
        let p = Plan {
            step: PROCEDURE.into(),
            risk,
            target: target.display().to_string(),
            actions: plan,
        };
        if let Err(refusal) = self.guard.authorize(&p) {
            if let Some(log) = &self.audit {
                let report = StepReport {
                    step: PROCEDURE.into(),
                    target: p.target.clone(),
                    risk,
                    outcome: Outcome::Refused {
                        reason: refusal.to_string(),
                    },
                    actions: p.actions.clone(),
                    output: None,
                    duration_ms: 0,
                };
                audit_through_guard(&self.guard, log, PROCEDURE, &report);
            }
            return Err(SecretsError::Refused(refusal));
        }
        if let Some(backup) = existing.as_ref().map(|s| s.backup.clone())
            && let Ok(old) = read_env_file(&backup)
        {
            for v in old.values() {
                run.redactor.add(&v);
            }
        }

        let mut stage = match &existing {
            Some(st) if st.stage == Stage::RollingBack => {
                let reason = st
                    .rollback_reason
                    .clone()
                    .unwrap_or_else(|| "resumed rollback".into());
                self.rollback(&mut run, reason, Undo::RestoreEnvAndRecreate)
                    .await;
                return Ok(run.report);
            }
            Some(st) if st.stage == Stage::Created => {
                // Did the crash happen after the write? The new values are only in the .env.
                let old = read_env_file(&st.backup)?;
                if keys.iter().any(|k| old.get(k) != current.get(k)) {
                    Stage::EnvWritten
                } else {
                    Stage::Created
                }
            }
            Some(st) => st.stage,
            None => self.begin(&mut run, opts, &keys, mode)?,
        };
        let service = run
            .state
            .as_ref()
            .map(|s| s.service.clone())
            .unwrap_or_else(|| opts.service.clone());
        let ctx = StageContext {
            keys,
            mode,
            sessions: match (mode, &opts.sessions) {
                (RotationMode::Emergency, _) => Some(SessionInvalidation::FlushDatabase),
                (RotationMode::Graceful, _) | (_, SessionInvalidation::Keep) => None,
                (_, s) => Some(s.clone()),
            },
            service,
        };
        for spec in STAGES {
            if stage != spec.from {
                continue;
            }
            let started = Instant::now();
            let risk = (spec.risk)(&ctx);
            match self.run_stage(&mut run, opts, &ctx, spec.action).await? {
                Ok(detail) => {
                    self.record(&mut run, spec.step, risk, Ok(&detail), started);
                    if let Some(next) = spec.to {
                        self.save_stage(&mut run, next)?;
                        stage = next;
                    }
                }
                Err(msg) => {
                    let msg = run.redactor.redact(&msg);
                    self.record(&mut run, spec.step, risk, Err(&msg), started);
                    let reason = format!("{} failed: {msg}", spec.what.describe(&ctx.service));
                    self.rollback(&mut run, reason, spec.undo).await;
                    return Ok(run.report);
                }
            }
            if spec.to.is_none() {
                self.prune(&mut run, opts.backups_keep);
                run.report.outcome = RotationOutcome::Completed;
            }
        }
        Ok(run.report)
    }

    /// The first stage: the backup of the `.env` and the stage record.
    fn begin(
        &self,
        run: &mut Run<'_>,
        opts: &RotateOptions,
        keys: &[String],
        mode: RotationMode,
    ) -> Result<Stage> {
        let started = Instant::now();
        let at = self.now();
        let backup = match backup_file(&run.target, at) {
            Ok(b) => b,
            Err(e) => {
                self.record(run, "create", Risk::Mutating, Err(&e.to_string()), started);
                return Err(e);
            }
        };
        let st = RotationState {
            version: 1,
            stage: Stage::Created,
            mode,
            keys: keys.to_vec(),
            previous_keys: Vec::new(),
            env_file: run.target.clone(),
            backup: backup.clone(),
            service: opts.service.clone(),
            started_at: at,
            updated_at: at,
            grace_until: None,
            rollback_reason: None,
        };
        st.save(&run.state_path)?;
        run.state = Some(st);
        run.report.backup = Some(backup.clone());
        self.record(
            run,
            "create",
            Risk::Mutating,
            Ok(&format!("backed up the .env to {}", backup.display())),
            started,
        );
        Ok(Stage::Created)
    }

    /// Does one stage of the table. `Err` stops the rotation as it is (the stage record
    /// could not be written); `Ok(Err(reason))` is a failure to roll back.
    async fn run_stage(
        &self,
        run: &mut Run<'_>,
        opts: &RotateOptions,
        ctx: &StageContext,
        action: StageAction,
    ) -> Result<std::result::Result<String, String>> {
        let service = &ctx.service;
        Ok(match action {
            StageAction::WriteNewValues => self
                .write_new_values(run, opts, &ctx.keys, ctx.mode)
                .map_err(|e| e.to_string()),
            StageAction::Recreate => {
                let recreated = match self.service_env(run, &ctx.keys, &opts.previous_suffix) {
                    Ok(env) => self.service.recreate(service, &env).await,
                    Err(e) => Err(e),
                };
                recreated
                    .map(|()| format!("recreated {service} with the new values"))
                    .map_err(|e| e.to_string())
            }
            StageAction::InvalidateSessions => {
                let result = match &ctx.sessions {
                    None => Ok(None),
                    Some(SessionInvalidation::Pattern(p)) => {
                        self.sessions.invalidate(p).await.map(Some)
                    }
                    Some(_) => self.sessions.flush_all_sessions().await.map(Some),
                };
                match result {
                    Ok(n) => {
                        run.report.sessions_invalidated = n;
                        Ok(match (&ctx.sessions, n) {
                            (Some(SessionInvalidation::Pattern(p)), Some(n)) => {
                                format!("deleted {n} session keys matching {p}")
                            }
                            (Some(_), Some(n)) => {
                                format!("flushed the session database ({n} keys)")
                            }
                            _ => "sessions kept".to_string(),
                        })
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            StageAction::Verify => self.verify(run, opts, service, &ctx.keys).await,
            StageAction::Finish => {
                let graceful = ctx.mode == RotationMode::Graceful
                    && run
                        .state
                        .as_ref()
                        .is_some_and(|s| !s.previous_keys.is_empty());
                if graceful {
                    let until = self
                        .now()
                        .checked_add(opts.grace)
                        .unwrap_or_else(|_| self.now());
                    if let Some(st) = run.state.as_mut() {
                        st.grace_until = Some(until);
                    }
                    self.save_stage(run, Stage::Grace)?;
                    run.report.previous_expires_at = Some(until);
                    Ok(format!(
                        "rotation complete; previous values valid until {until}"
                    ))
                } else {
                    remove_state(&run.state_path)?;
                    Ok("rotation complete".to_string())
                }
            }
        })
    }

    /// The rotated part of the service's environment as the `.env` holds it now.
    fn service_env(
        &self,
        run: &mut Run<'_>,
        keys: &[String],
        previous_suffix: &str,
    ) -> Result<ServiceEnv> {
        let file = read_env_file(&run.target)?;
        let env = ServiceEnv::from_env_file(&file, keys, previous_suffix);
        for v in &env.vars {
            if let Some(s) = &v.value {
                run.redactor.add(s);
            }
        }
        Ok(env)
    }

    /// Keeps the newest `keep` backups of the `.env`; records what was removed.
    fn prune(&self, run: &mut Run<'_>, keep: usize) {
        let started = Instant::now();
        match prune_backups(&run.target, keep) {
            Ok(removed) if removed.is_empty() => {}
            Ok(removed) => {
                let names: Vec<String> = removed
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect();
                self.record(
                    run,
                    "prune-backups",
                    Risk::Destructive,
                    Ok(&format!(
                        "overwrote and removed {} old .env backups ({}); kept the newest {keep}",
                        removed.len(),
                        names.join(", ")
                    )),
                    started,
                );
            }
            Err(e) => {
                let msg = run.redactor.redact(&e.to_string());
                self.record(run, "prune-backups", Risk::Destructive, Err(&msg), started);
            }
        }
    }

    /// Whether the running service holds the `.env`'s values of `keys` (digests compared).
    async fn check_live_env(
        &self,
        run: &mut Run<'_>,
        service: &str,
        keys: &[String],
        previous_suffix: &str,
    ) -> std::result::Result<String, String> {
        let env = self
            .service_env(run, keys, previous_suffix)
            .map_err(|e| format!("cannot read the .env: {e}"))?;
        let live = self
            .service
            .live_env_digests(service, &env.keys())
            .await
            .map_err(|e| format!("cannot read the environment of {service}: {e}"))?;
        let got = |k: &str| live.iter().find(|(n, _)| n == k).map(|(_, d)| d.clone());
        let mut matched = Vec::new();
        let mut wrong = Vec::new();
        for v in &env.vars {
            let Some(have) = got(&v.key) else { continue };
            match (have, &v.value) {
                (Some(h), Some(want)) if h == value_digest(want.expose()) => {
                    matched.push(v.key.clone())
                }
                (Some(_), Some(_)) => wrong.push(format!("{} is not the .env's value", v.key)),
                (Some(_), None) => wrong.push(format!("{} is still set", v.key)),
                (None, Some(_)) => {
                    let base_present = v
                        .alongside
                        .as_deref()
                        .is_some_and(|b| got(b).is_some_and(|d| d.is_some()));
                    if base_present {
                        wrong.push(format!("{} is missing", v.key));
                    }
                }
                (None, None) => {}
            }
        }
        if !wrong.is_empty() {
            return Err(format!(
                "the running {service} does not hold the new values: {}",
                wrong.join(", ")
            ));
        }
        Ok(if matched.is_empty() {
            format!("the environment of {service} holds none of the rotated keys")
        } else {
            format!(
                "the running {service} holds the .env's {} (SHA-256 compared)",
                matched.join(", ")
            )
        })
    }

    fn write_new_values(
        &self,
        run: &mut Run<'_>,
        opts: &RotateOptions,
        keys: &[String],
        mode: RotationMode,
    ) -> Result<String> {
        let mut fresh = Vec::with_capacity(keys.len());
        for k in keys {
            let s = generate_secret(&opts.format)?;
            run.redactor.add(&s);
            fresh.push((k.clone(), s));
        }
        let suffix = opts.previous_suffix.clone();
        let mut previous_keys = Vec::new();
        let mut removed = Vec::new();
        let update = UpdateOptions {
            create: false,
            follow_symlink: opts.follow_symlink,
            backup: false,
        };
        update_env_file(&run.target, &update, self.now(), |f: &mut EnvFile| {
            for (k, new) in &fresh {
                let prev_key = format!("{k}{suffix}");
                match mode {
                    RotationMode::Graceful => {
                        if let Some(old) = f.get(k).filter(|o| !o.is_empty()) {
                            f.set(k, new)?;
                            f.set_after(&prev_key, &old, k)?;
                            previous_keys.push(prev_key);
                            continue;
                        }
                    }
                    _ => {
                        if f.remove(&prev_key) {
                            removed.push(prev_key);
                        }
                    }
                }
                f.set(k, new)?;
            }
            Ok(())
        })?;
        if let Some(st) = run.state.as_mut() {
            st.previous_keys = previous_keys.clone();
        }
        let mut detail = format!("wrote new values for {}", keys.join(", "));
        if !previous_keys.is_empty() {
            detail.push_str(&format!(
                "; kept old values as {}",
                previous_keys.join(", ")
            ));
        }
        if !removed.is_empty() {
            detail.push_str(&format!("; removed {}", removed.join(", ")));
        }
        Ok(detail)
    }

    /// Polls `/health` until it answers 2xx (recorded in the report) or `verify_timeout`
    /// passes; the error quotes the last answer.
    async fn wait_healthy(
        &self,
        run: &mut Run<'_>,
        opts: &RotateOptions,
    ) -> std::result::Result<u16, String> {
        let deadline = tokio::time::Instant::now() + opts.verify_timeout;
        loop {
            let last = match self.probe.health().await {
                Ok(code) => {
                    run.report.health_status = Some(code);
                    if (200..300).contains(&code) {
                        return Ok(code);
                    }
                    format!("/health answered {code}")
                }
                Err(e) => format!("/health: {e}"),
            };
            if tokio::time::Instant::now() + opts.verify_interval > deadline {
                return Err(format!(
                    "the application was not healthy within {:?} ({last})",
                    opts.verify_timeout
                ));
            }
            tokio::time::sleep(opts.verify_interval).await;
        }
    }

    async fn verify(
        &self,
        run: &mut Run<'_>,
        opts: &RotateOptions,
        service: &str,
        keys: &[String],
    ) -> std::result::Result<String, String> {
        self.wait_healthy(run, opts).await?;
        let live = self
            .check_live_env(run, service, keys, &opts.previous_suffix)
            .await?;
        match self.probe.login().await {
            Ok(code) => {
                run.report.login_status = Some(code);
                let ok = if opts.login_must_succeed {
                    (200..300).contains(&code)
                } else {
                    code < 500 && code != 401 && code != 403
                };
                if ok {
                    Ok(format!(
                        "/health answered {}; {live}; the test login answered {code}",
                        run.report.health_status.unwrap_or_default()
                    ))
                } else if code == 401 || code == 403 {
                    Err(format!(
                        "the test login was refused ({code}): the new secret does not let the test account in"
                    ))
                } else {
                    Err(format!("the test login answered {code}"))
                }
            }
            Err(e) => Err(format!("the test login got no answer: {e}")),
        }
    }

    async fn rollback(&self, run: &mut Run<'_>, reason: String, undo: Undo) {
        if let Some(st) = run.state.as_mut() {
            st.rollback_reason = Some(reason.clone());
        }
        if let Err(e) = self.save_stage(run, Stage::RollingBack) {
            tracing::error!(error = %e, "cannot record the rollback stage");
        }
        let Some(backup) = run.state.as_ref().map(|s| s.backup.clone()) else {
            run.report.outcome = RotationOutcome::RollbackFailed {
                reason,
                error: "no backup recorded".into(),
            };
            return;
        };
        let started = Instant::now();
        let same = std::fs::read(&backup).ok() == std::fs::read(&run.target).ok();
        let restored = if same {
            Ok("the .env still holds the previous values".to_string())
        } else {
            restore_backup(&backup, &run.target)
                .map(|()| format!("restored the .env from {}", backup.display()))
        };
        match restored {
            Ok(d) => self.record(run, "rollback-env", Risk::Mutating, Ok(&d), started),
            Err(e) => {
                let msg = run.redactor.redact(&e.to_string());
                self.record(run, "rollback-env", Risk::Mutating, Err(&msg), started);
                run.report.outcome = RotationOutcome::RollbackFailed { reason, error: msg };
                return;
            }
        }
        if undo == Undo::RestoreEnvAndRecreate {
            let service = run
                .state
                .as_ref()
                .map(|s| s.service.clone())
                .unwrap_or_default();
            let started = Instant::now();
            let keys = run
                .state
                .as_ref()
                .map(|s| s.keys.clone())
                .unwrap_or_default();
            let suffix = run.previous_suffix.clone();
            let recreated = match self.service_env(run, &keys, &suffix) {
                Ok(env) => self.service.recreate(&service, &env).await,
                Err(e) => Err(e),
            };
            match recreated {
                Ok(()) => self.record(
                    run,
                    "rollback-recreate",
                    Risk::Mutating,
                    Ok(&format!("recreated {service} with the previous values")),
                    started,
                ),
                Err(e) => {
                    let msg = run.redactor.redact(&e.to_string());
                    self.record(run, "rollback-recreate", Risk::Mutating, Err(&msg), started);
                    run.report.outcome = RotationOutcome::RollbackFailed { reason, error: msg };
                    return;
                }
            }
        }
        if run.persist
            && let Err(e) = remove_state(&run.state_path)
        {
            tracing::error!(error = %e, "cannot remove the rotation state");
        }
        run.report.outcome = RotationOutcome::RolledBack {
            reason: run.redactor.redact(&reason),
        };
    }

    /// Removes the previous values kept by a graceful rotation once the grace period
    /// is over (or at once with [`Expiry::Now`]), recreates the service and checks `/health`;
    /// rolls back when it does not answer.
    pub async fn expire_previous(
        &self,
        opts: &RotateOptions,
        when: Expiry,
    ) -> Result<RotationReport> {
        opts.validate()?;
        let state_path = opts.state_path();
        let target = resolve_target(&opts.env_file, opts.follow_symlink)?;
        let _lock = if opts.dry_run {
            None
        } else {
            Some(RotationLock::acquire(
                &default_lock_path(&target),
                &format!("expiry of the previous values in {}", target.display()),
            )?)
        };
        let st = RotationState::load(&state_path)?
            .filter(|s| s.stage == Stage::Grace)
            .ok_or_else(|| {
                SecretsError::InvalidOptions(format!(
                    "no graceful rotation is waiting in {}",
                    state_path.display()
                ))
            })?;
        let current = read_env_file(&target)?;
        let mut redactor = Redactor::new();
        for v in current.values() {
            redactor.add(&v);
        }
        let mut run = Run {
            report: RotationReport {
                env_file: target.clone(),
                mode: st.mode,
                keys: st.previous_keys.clone(),
                dry_run: opts.dry_run,
                resumed_from: Some(Stage::Grace),
                plan: vec![
                    format!("remove {}", st.previous_keys.join(", ")),
                    format!("recreate service {}", st.service),
                    "check /health; roll back on failure".into(),
                ],
                steps: Vec::new(),
                outcome: RotationOutcome::Planned,
                backup: None,
                sessions_invalidated: None,
                health_status: None,
                login_status: None,
                previous_expires_at: st.grace_until,
                state_file: state_path.clone(),
            },
            redactor,
            state: None,
            state_path: state_path.clone(),
            target: target.clone(),
            procedure: "secrets-expire-previous",
            // the stage record keeps saying Grace until the removal is confirmed
            persist: false,
            previous_suffix: opts.previous_suffix.clone(),
        };
        let due = st.grace_until.is_none_or(|u| self.now() >= u);
        if opts.dry_run || (!due && when == Expiry::WhenDue) {
            return Ok(run.report);
        }
        let started = Instant::now();
        let update = UpdateOptions {
            create: false,
            follow_symlink: opts.follow_symlink,
            backup: true,
        };
        let keys = st.previous_keys.clone();
        let r = update_env_file(&target, &update, self.now(), |f| {
            for k in &keys {
                f.remove(k);
            }
            Ok(())
        });
        let backup = match r {
            Ok(rep) => {
                self.record(
                    &mut run,
                    "remove-previous",
                    Risk::Mutating,
                    Ok(&format!("removed {}", keys.join(", "))),
                    started,
                );
                rep.backup
            }
            Err(e) => {
                let msg = run.redactor.redact(&e.to_string());
                self.record(
                    &mut run,
                    "remove-previous",
                    Risk::Mutating,
                    Err(&msg),
                    started,
                );
                return Err(e);
            }
        };
        run.report.backup = backup.clone();
        run.state = Some(RotationState {
            stage: Stage::EnvWritten,
            backup: backup.clone().unwrap_or_else(|| st.backup.clone()),
            ..st.clone()
        });
        let started = Instant::now();
        let recreated = match self.service_env(&mut run, &st.keys, &opts.previous_suffix) {
            Ok(env) => self.service.recreate(&st.service, &env).await,
            Err(e) => Err(e),
        };
        let res = match recreated {
            Ok(()) => {
                self.record(
                    &mut run,
                    "recreate",
                    Risk::Mutating,
                    Ok(&format!("recreated {}", st.service)),
                    started,
                );
                async {
                    let c = self.wait_healthy(&mut run, opts).await?;
                    let started = Instant::now();
                    let detail = self
                        .check_live_env(&mut run, &st.service, &st.keys, &opts.previous_suffix)
                        .await?;
                    self.record(
                        &mut run,
                        "test",
                        Risk::ReadOnly,
                        Ok(&format!("/health answered {c}; {detail}")),
                        started,
                    );
                    Ok(())
                }
                .await
            }
            Err(e) => Err(run.redactor.redact(&e.to_string())),
        };
        match res {
            Ok(()) => {
                remove_state(&state_path)?;
                self.prune(&mut run, opts.backups_keep);
                run.report.outcome = RotationOutcome::Completed;
            }
            Err(msg) => {
                self.record(&mut run, "test", Risk::ReadOnly, Err(&msg), Instant::now());
                if backup.is_some() {
                    self.rollback(&mut run, msg, Undo::RestoreEnvAndRecreate)
                        .await;
                } else {
                    run.report.outcome = RotationOutcome::RollbackFailed {
                        reason: msg,
                        error: "no backup: the previous values had already been removed".into(),
                    };
                }
            }
        }
        Ok(run.report)
    }
}

/// Writes `report`'s audit line the way the Executor does; a failure to write is logged
/// (the rotation's own report still holds the step).
fn audit_through_guard(guard: &Guard, log: &AuditLog, procedure: &str, report: &StepReport) {
    if let Err(e) = guard.record(log, procedure, report) {
        tracing::error!(path = %log.path().display(), error = %e, "cannot append to the audit log");
    }
}

fn remove_state(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SecretsError::io("remove", path, &e)),
    }
}

#[cfg(test)]
#[path = "rotation_tests.rs"]
mod tests;

//! The runbook's emergencies as guided procedures ([`tej_core::Procedure`]s run by an
//! [`tej_core::Executor`]: dry run, confirmation of destructive steps, maintenance window in
//! production unless overridden, audit trail).
//!
//! - [`db_corruption`]: stop the application, assess with amcheck, restore the newest good
//!   backup (only when amcheck finds damage or could not run, unless told to restore anyway),
//!   verify (amcheck and the sanity queries), start the application.
//! - [`security_breach`]: block the address, rotate every secret (emergency mode), drop every
//!   session, force password resets, search the logs for the address.
//!
//! [`security_breach_from_context`] and [`db_corruption_from_context`] build them from a
//! [`RunContext`] (that is, from `tej.toml`).

use crate::adapters::{LazyContainerRuntime, StartServicesStep, StopServicesStep};
use crate::error::{Result, RunbookError};
use crate::procedures::context::RunContext;
use async_trait::async_trait;
use serde::Serialize;
use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tej_core::{
    AuditLog, CommandRunner, Finding, Guard, OnFailure, Plan, Procedure, Risk, Severity, Step,
    StepError, StepOutput,
};
use tej_db::pg::{AmcheckOptions, ForcePasswordResetStep, PasswordResetOptions, PgAdmin};
use tej_db::redis::{InvalidateOptions, InvalidateSessionsStep, RedisAdmin};
use tej_deploy::{ContainerRuntime, Project};
use tej_host::{BlockAddressStep, BlockTarget, Firewall, FirewallPolicy, validate_block_target};

/// What the corruption assessment found, shared between the steps of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Assessment {
    /// Not assessed yet (or the assessment could not run).
    #[default]
    Unknown,
    /// amcheck found no damaged relation.
    Clean,
    /// amcheck found this many damaged relations.
    Damaged(usize),
}

/// amcheck as a step: the assessment (records what it found) or the verification (fails on
/// any damage).
pub struct AmcheckStep {
    /// The database.
    pub admin: Arc<dyn PgAdmin>,
    /// amcheck options (`create_extension` makes the step mutating).
    pub options: AmcheckOptions,
    /// Fail when a relation is damaged (verification) instead of only reporting it.
    pub fail_on_damage: bool,
    /// Where the result is recorded for later steps.
    pub assessment: Arc<Mutex<Assessment>>,
}

#[async_trait]
impl Step for AmcheckStep {
    fn name(&self) -> String {
        if self.fail_on_damage {
            "amcheck-verify".into()
        } else {
            "amcheck-assess".into()
        }
    }
    fn risk(&self) -> Risk {
        if self.options.create_extension {
            Risk::Mutating
        } else {
            Risk::ReadOnly
        }
    }
    fn target(&self) -> String {
        self.admin.target()
    }
    async fn plan(&self) -> std::result::Result<Plan, StepError> {
        let mut actions = vec![format!(
            "check every btree index (bt_index_check{}){}",
            if self.options.heapallindexed {
                ", heapallindexed"
            } else {
                ""
            },
            if self.options.heap {
                " and every table (verify_heapam)"
            } else {
                ""
            }
        )];
        if self.options.create_extension {
            actions.insert(0, tej_db::pg::CREATE_AMCHECK_SQL.into());
        }
        if self.fail_on_damage {
            actions.push("fail if any relation is damaged".into());
        }
        Ok(Plan::of(self, actions))
    }
    async fn apply(&self) -> std::result::Result<StepOutput, StepError> {
        let r = tej_db::pg::amcheck(self.admin.as_ref(), &self.options).await?;
        let damaged = r.damaged.len();
        *self.assessment.lock().unwrap_or_else(|e| e.into_inner()) = if damaged == 0 {
            Assessment::Clean
        } else {
            Assessment::Damaged(damaged)
        };
        if self.fail_on_damage && damaged > 0 {
            return Err(format!(
                "{damaged} relations still damaged: {}",
                r.damaged
                    .iter()
                    .map(|d| d.relation.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .into());
        }
        Ok(StepOutput {
            summary: format!(
                "{} tables and {} indexes checked, {damaged} damaged",
                r.tables_checked, r.indexes_checked
            ),
            findings: r.findings.clone(),
            data: serde_json::to_value(&r).unwrap_or_default(),
        })
    }
}

/// Runs the configured sanity queries (`SELECT count(*) FROM users`); fails on the first error.
pub struct SanityQueriesStep {
    /// The database.
    pub admin: Arc<dyn PgAdmin>,
    /// The queries.
    pub queries: Vec<String>,
}

#[async_trait]
impl Step for SanityQueriesStep {
    fn name(&self) -> String {
        "sanity-queries".into()
    }
    fn risk(&self) -> Risk {
        Risk::ReadOnly
    }
    fn target(&self) -> String {
        self.admin.target()
    }
    async fn plan(&self) -> std::result::Result<Plan, StepError> {
        let mut actions: Vec<String> = self.queries.iter().map(|q| format!("run {q}")).collect();
        if actions.is_empty() {
            actions.push(
                "nothing: no sanity_queries configured for this database (SELECT 1 only)".into(),
            );
        }
        Ok(Plan::of(self, actions))
    }
    async fn apply(&self) -> std::result::Result<StepOutput, StepError> {
        let mut results = Vec::new();
        if self.queries.is_empty() {
            self.admin.ping().await?;
        }
        for q in &self.queries {
            let r = tej_db::pg::run_configured_query(self.admin.as_ref(), q)
                .await
                .map_err(|e| format!("sanity query {q:?} failed: {e}"))?;
            let first = r
                .first
                .map(|v| format!("{v:?}"))
                .unwrap_or_else(|| "no rows".into());
            results.push(serde_json::json!({ "query": q, "rows": r.rows, "first": first }));
        }
        Ok(StepOutput {
            summary: format!("{} sanity queries succeeded", self.queries.len()),
            findings: Vec::new(),
            data: serde_json::Value::Array(results),
        })
    }
}

/// The restore of a corrupted database, applied only when the assessment found damage or
/// could not tell (or always, when `always` is set).
pub struct RestoreIfDamagedStep {
    /// The restore (normally a [`tej_backup::RestoreStep`] of the newest backup).
    pub restore: Box<dyn Step>,
    /// The assessment's result.
    pub assessment: Arc<Mutex<Assessment>>,
    /// Restore even when amcheck found nothing.
    pub always: bool,
}

#[async_trait]
impl Step for RestoreIfDamagedStep {
    fn name(&self) -> String {
        self.restore.name()
    }
    fn risk(&self) -> Risk {
        self.restore.risk()
    }
    fn target(&self) -> String {
        self.restore.target()
    }
    async fn plan(&self) -> std::result::Result<Plan, StepError> {
        let mut p = self.restore.plan().await?;
        if !self.always {
            p.actions.insert(
                0,
                "only if amcheck found damage or could not run (--restore-anyway to force)".into(),
            );
        }
        Ok(p)
    }
    async fn apply(&self) -> std::result::Result<StepOutput, StepError> {
        let a = *self.assessment.lock().unwrap_or_else(|e| e.into_inner());
        if a == Assessment::Clean && !self.always {
            return Ok(StepOutput {
                summary: "not restored: amcheck found no damage (restore anyway on purpose if the data is wrong)".into(),
                findings: vec![Finding::new(
                    "emergency.db-corruption",
                    Severity::Warning,
                    "amcheck found no damage; the backup was not restored",
                )],
                data: serde_json::Value::Null,
            });
        }
        self.restore.apply().await
    }
}

/// Where the application runs: the Compose services stopped during a restore.
pub struct AppServices {
    /// The engine.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// The project.
    pub project: Project,
    /// The services of the application (`backend`, `frontend`); never the database's own.
    pub services: Vec<String>,
    /// Grace period when stopping.
    pub stop_timeout: Duration,
}

/// How the corruption procedure runs.
#[derive(Debug, Clone)]
pub struct DbCorruptionOptions {
    /// amcheck options of the assessment and the verification.
    pub amcheck: AmcheckOptions,
    /// Queries that must succeed after the restore.
    pub sanity_queries: Vec<String>,
    /// Restore even when amcheck finds no damage.
    pub restore_anyway: bool,
}

impl Default for DbCorruptionOptions {
    fn default() -> Self {
        DbCorruptionOptions {
            amcheck: AmcheckOptions {
                create_extension: true,
                ..AmcheckOptions::default()
            },
            sanity_queries: Vec::new(),
            restore_anyway: false,
        }
    }
}

/// The database-corruption procedure: stop the application (destructive), assess with amcheck
/// (a failure to assess does not stop: it counts as "restore"), restore (destructive), verify
/// with amcheck and the sanity queries, start the application.
pub fn db_corruption(
    database: Arc<dyn PgAdmin>,
    app: Option<AppServices>,
    restore: Box<dyn Step>,
    opts: &DbCorruptionOptions,
) -> Procedure {
    let assessment = Arc::new(Mutex::new(Assessment::Unknown));
    let mut p = Procedure::new("emergency-db-corruption");
    if let Some(a) = &app {
        p = p.step(StopServicesStep {
            runtime: a.runtime.clone(),
            project: a.project.clone(),
            services: a.services.clone(),
            stop_timeout: a.stop_timeout,
        });
    }
    p = p
        .step_continue(AmcheckStep {
            admin: database.clone(),
            options: opts.amcheck.clone(),
            fail_on_damage: false,
            assessment: assessment.clone(),
        })
        .step(RestoreIfDamagedStep {
            restore,
            assessment: assessment.clone(),
            always: opts.restore_anyway,
        })
        .step(AmcheckStep {
            admin: database.clone(),
            options: AmcheckOptions {
                create_extension: false,
                ..opts.amcheck.clone()
            },
            fail_on_damage: true,
            assessment: Arc::new(Mutex::new(Assessment::Unknown)),
        })
        .step(SanityQueriesStep {
            admin: database,
            queries: opts.sanity_queries.clone(),
        });
    if let Some(a) = app {
        p = p.step(StartServicesStep {
            runtime: a.runtime,
            project: a.project,
            services: a.services,
        });
    }
    p
}

/// A step that cannot run, with the reason (missing configuration, an unreachable engine or
/// repository); it fails at planning, so the report shows which part did not run and why, and
/// the run is not reported as a success.
#[derive(Debug, Clone)]
pub struct UnavailableStep {
    /// The step it stands for.
    pub name: String,
    /// What that step would act on (empty when unknown).
    pub target: String,
    /// The risk of the step it stands for (a planning failure of a mutating or destructive
    /// step is audited).
    pub risk: Risk,
    /// Why it cannot run.
    pub reason: String,
}

#[async_trait]
impl Step for UnavailableStep {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn risk(&self) -> Risk {
        self.risk
    }
    fn target(&self) -> String {
        self.target.clone()
    }
    async fn plan(&self) -> std::result::Result<Plan, StepError> {
        Err(self.reason.clone().into())
    }
    async fn apply(&self) -> std::result::Result<StepOutput, StepError> {
        Err(self.reason.clone().into())
    }
}

/// What [`search_logs_for_address`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AddressSearchReport {
    /// The address or network searched.
    pub address: String,
    /// Files searched, with the number of matching lines.
    pub files: Vec<(PathBuf, u64)>,
    /// Files that could not be read, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
    /// Matching lines in all files.
    pub total: u64,
    /// The last matching lines (at most the sample size), oldest first.
    pub sample: Vec<String>,
}

fn token_addrs(line: &str) -> impl Iterator<Item = IpAddr> + '_ {
    line.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
        .filter(|t| t.len() >= 2 && (t.contains('.') || t.contains(':')))
        .filter_map(|t| {
            if let Ok(ip) = t.parse::<IpAddr>() {
                return Some(ip);
            }
            let t = t.trim_end_matches(['.', ':']);
            if let Ok(ip) = t.parse::<IpAddr>() {
                return Some(ip);
            }
            // 1.2.3.4:5678
            let (host, _) = t.rsplit_once(':')?;
            host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
        })
}

fn in_network(ip: IpAddr, t: &BlockTarget) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (ip, t.addr) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if t.prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(t.prefix))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if t.prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(t.prefix))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// True when `line` mentions an address inside `target` (as a whole token: `10.0.0.1` does not
/// match `110.0.0.12`).
pub fn line_mentions(line: &str, target: &BlockTarget) -> bool {
    token_addrs(line).any(|ip| in_network(ip, target))
}

/// Searches the log files under `paths` (plain or gzipped, rotated included) for lines
/// mentioning `target`; keeps the last `sample` lines.
pub fn search_logs_for_address(
    paths: &[PathBuf],
    target: &BlockTarget,
    sample: usize,
) -> Result<AddressSearchReport> {
    let files = tej_host::collect_log_files(paths).map_err(|e| RunbookError::Io {
        action: "list log files",
        path: paths.first().cloned().unwrap_or_default(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut report = AddressSearchReport {
        address: target.to_string(),
        files: Vec::new(),
        unreadable: Vec::new(),
        total: 0,
        sample: Vec::new(),
    };
    let mut tail = std::collections::VecDeque::new();
    for path in files {
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                report.unreadable.push((path, e.to_string()));
                continue;
            }
        };
        let mut head = [0u8; 2];
        let gz = std::fs::File::open(&path)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
            && head == [0x1f, 0x8b];
        let reader: Box<dyn BufRead> = if gz {
            Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
        } else {
            Box::new(BufReader::new(file))
        };
        let mut n = 0u64;
        let mut failed = None;
        for line in reader.split(b'\n') {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            };
            let text = String::from_utf8_lossy(&line);
            if line_mentions(&text, target) {
                n += 1;
                tail.push_back(text.trim_end().chars().take(2000).collect::<String>());
                if tail.len() > sample {
                    tail.pop_front();
                }
            }
        }
        if let Some(e) = failed {
            report.unreadable.push((path.clone(), e));
        }
        report.total += n;
        report.files.push((path, n));
    }
    report.sample = tail.into_iter().collect();
    Ok(report)
}

/// The log search as a read-only step: a warning finding naming the count when the address
/// appears, OK otherwise.
pub struct SearchLogsStep {
    /// Log files or directories.
    pub paths: Vec<PathBuf>,
    /// The address or network.
    pub address: String,
    /// Validation of the address (the same policy as the firewall's).
    pub policy: FirewallPolicy,
    /// Lines kept.
    pub sample: usize,
}

#[async_trait]
impl Step for SearchLogsStep {
    fn name(&self) -> String {
        "search-logs".into()
    }
    fn risk(&self) -> Risk {
        Risk::ReadOnly
    }
    fn target(&self) -> String {
        self.address.clone()
    }
    async fn plan(&self) -> std::result::Result<Plan, StepError> {
        let t = validate_block_target(&self.address, &self.policy)?;
        if self.paths.is_empty() {
            return Err("no log paths: set [logs] paths in tej.toml".into());
        }
        Ok(Plan {
            step: self.name(),
            risk: self.risk(),
            target: t.to_string(),
            actions: vec![format!(
                "search {} for lines mentioning {t}",
                self.paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )],
        })
    }
    async fn apply(&self) -> std::result::Result<StepOutput, StepError> {
        let t = validate_block_target(&self.address, &self.policy)?;
        let paths = self.paths.clone();
        let sample = self.sample;
        let r = tokio::task::spawn_blocking(move || search_logs_for_address(&paths, &t, sample))
            .await
            .map_err(|e| format!("log search task failed: {e}"))??;
        let per_file = r
            .files
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(p, n)| format!("{}: {n}", p.display()))
            .collect::<Vec<_>>();
        let mut f = if r.total > 0 {
            Finding::new(
                "security.address-in-logs",
                Severity::Warning,
                format!("{} lines mention {}", r.total, r.address),
            )
            .detail(format!(
                "{}\nlast lines:\n{}",
                per_file.join("\n"),
                r.sample.join("\n")
            ))
        } else {
            Finding::ok(
                "security.address-in-logs",
                format!("no line mentions {}", r.address),
            )
        }
        .target(r.address.clone())
        .metric(tej_core::Metric::new(
            "address_log_lines",
            r.total as f64,
            "count",
        ));
        if !r.unreadable.is_empty() {
            f.severity = f.severity.worst(Severity::Unknown);
        }
        Ok(StepOutput {
            summary: format!(
                "{} lines in {} files mention {}",
                r.total,
                per_file.len(),
                r.address
            ),
            findings: vec![f],
            data: serde_json::to_value(&r).unwrap_or_default(),
        })
    }
}

/// One Redis instance whose sessions are dropped.
pub struct SessionTarget {
    /// Display name (`redis:cache`).
    pub name: String,
    /// The server.
    pub admin: Arc<dyn RedisAdmin>,
    /// Session key pattern (`sess:*`).
    pub pattern: String,
}

/// What the security-breach procedure acts on.
pub struct SecurityBreach {
    /// The address or network to block (`203.0.113.7`, `203.0.113.0/24`).
    pub address: String,
    /// The firewall (ufw through a command runner).
    pub firewall: Firewall,
    /// The emergency rotation (a [`crate::RotateSecretsStep`] in emergency mode), or why it
    /// cannot be built.
    pub rotation: Result<Box<dyn Step>>,
    /// Every session store.
    pub sessions: Vec<SessionTarget>,
    /// Session stores that could not be reached, with the reason: reported as failed steps
    /// that do not stop the rest (an emergency does not wait for a dead Redis).
    pub unreachable_sessions: Vec<(String, String)>,
    /// Password resets, per database.
    pub password_resets: Vec<(Arc<dyn PgAdmin>, PasswordResetOptions)>,
    /// Logs searched for the address.
    pub log_paths: Vec<PathBuf>,
    /// Matching log lines kept in the report.
    pub log_sample: usize,
}

/// The security-breach procedure: block the address, rotate every secret (emergency mode,
/// destructive), drop every session, force every user to reset their password (destructive),
/// search the logs for the address. Each step stops the procedure when it fails, except the
/// rotation when it could not even be built (reported, the rest goes on) and the log search.
pub fn security_breach(b: SecurityBreach) -> Procedure {
    let policy = *b.firewall.policy();
    let mut p = Procedure::new("emergency-security-breach")
        .step(BlockAddressStep::new(b.firewall, b.address.clone()));
    match b.rotation {
        Ok(step) => p.push(step, OnFailure::Stop),
        Err(e) => p.push(
            Box::new(UnavailableStep {
                name: "rotate-secrets-emergency".into(),
                target: String::new(),
                risk: Risk::ReadOnly,
                reason: e.to_string(),
            }),
            OnFailure::Continue,
        ),
    }
    for s in b.sessions {
        p = p.step(InvalidateSessionsStep::new(
            s.admin,
            InvalidateOptions {
                pattern: s.pattern,
                ..InvalidateOptions::default()
            },
            s.name,
        ));
    }
    for (name, reason) in b.unreachable_sessions {
        p.push(
            Box::new(UnavailableStep {
                name: format!("redis-invalidate-sessions {name}"),
                target: String::new(),
                risk: Risk::ReadOnly,
                reason,
            }),
            OnFailure::Continue,
        );
    }
    for (admin, options) in b.password_resets {
        p = p.step(ForcePasswordResetStep { admin, options });
    }
    p.step_continue(SearchLogsStep {
        paths: b.log_paths,
        address: b.address,
        policy,
        sample: b.log_sample,
    })
}

/// How [`security_breach_from_context`] builds the procedure.
#[derive(Debug, Clone)]
pub struct BreachOptions {
    /// The address or network.
    pub address: String,
    /// Which `[[database]]` gets the password reset (default: the first).
    pub database: Option<String>,
    /// Users table and flag column.
    pub password_reset: PasswordResetOptions,
    /// Firewall policy (prefix limits, sudo).
    pub firewall: FirewallPolicy,
    /// Matching log lines kept.
    pub log_sample: usize,
}

impl BreachOptions {
    /// Defaults for `address`.
    pub fn new(address: impl Into<String>) -> BreachOptions {
        BreachOptions {
            address: address.into(),
            database: None,
            password_reset: PasswordResetOptions::default(),
            firewall: FirewallPolicy::default(),
            log_sample: 20,
        }
    }
}

/// The security-breach procedure for everything `ctx` manages: every Redis instance's
/// sessions, the password reset on one database, the `[logs]` paths, the `[secrets]`
/// rotation. Connects to Redis now (the plan counts sessions); an unreachable instance
/// becomes a failed step that does not stop the others.
pub async fn security_breach_from_context(
    ctx: &RunContext,
    runner: Arc<dyn CommandRunner>,
    guard: &Guard,
    audit: Option<AuditLog>,
    opts: &BreachOptions,
) -> Result<Procedure> {
    validate_block_target(&opts.address, &opts.firewall).map_err(|e| RunbookError::Procedure {
        entry: "emergency-security-breach".into(),
        message: e.to_string(),
    })?;
    let mut sessions = Vec::new();
    let mut unreachable = Vec::new();
    for r in &ctx.redis {
        let name = format!("redis:{}", r.name);
        let admin = match r.client.get().await {
            Ok(a) => a,
            Err(e) => {
                unreachable.push((name, format!("cannot connect to redis {:?}: {e}", r.name)));
                continue;
            }
        };
        let pattern = ctx
            .config
            .redis
            .iter()
            .find(|c| c.name == r.name)
            .map(|c| c.session_pattern.clone())
            .unwrap_or_else(|| "sess:*".into());
        sessions.push(SessionTarget {
            name,
            admin,
            pattern,
        });
    }
    let db = match &opts.database {
        Some(n) => Some(ctx.database(n).ok_or_else(|| RunbookError::NotConfigured {
            kind: "database",
            name: n.clone(),
        })?),
        None => ctx.databases.first(),
    };
    let rotation = crate::procedures::quarterly::rotation_from_context(
        ctx,
        sessions.first().map(|s| s.admin.clone()),
        guard,
        audit,
        tej_secrets::RotationMode::Emergency,
    );
    Ok(security_breach(SecurityBreach {
        address: opts.address.clone(),
        firewall: Firewall::new(runner, opts.firewall),
        rotation,
        sessions,
        unreachable_sessions: unreachable,
        password_resets: db
            .map(|d| (d.admin.clone(), opts.password_reset.clone()))
            .into_iter()
            .collect(),
        log_paths: ctx.logs.paths.clone(),
        log_sample: opts.log_sample,
    }))
}

/// How [`db_corruption_from_context`] builds the procedure.
#[derive(Debug, Clone, Default)]
pub struct CorruptionOptions {
    /// Which `[[database]]` (default: the first).
    pub database: Option<String>,
    /// The application's Compose services (default: `[compose] backend_service`).
    pub services: Vec<String>,
    /// `pg_restore -j`.
    pub jobs: u32,
    /// Restore even when amcheck finds nothing.
    pub restore_anyway: bool,
}

/// The corruption procedure for a database of `ctx`: the newest dump of that database in
/// the first backup repository, the database's sanity queries, the `[compose]` application
/// services.
pub async fn db_corruption_from_context(
    ctx: &RunContext,
    runner: Arc<dyn CommandRunner>,
    opts: &CorruptionOptions,
) -> Result<Procedure> {
    let entry = || "emergency-db-corruption".to_string();
    let cfg = match &opts.database {
        Some(n) => ctx.config.databases.iter().find(|d| &d.name == n),
        None => ctx.config.databases.first(),
    }
    .ok_or_else(|| RunbookError::NotConfigured {
        kind: "database",
        name: opts.database.clone().unwrap_or_else(|| "(first)".into()),
    })?;
    let target = ctx
        .database(&cfg.name)
        .ok_or_else(|| RunbookError::NotConfigured {
            kind: "database",
            name: cfg.name.clone(),
        })?;
    let repo = ctx
        .repositories
        .first()
        .ok_or_else(|| RunbookError::Procedure {
            entry: entry(),
            message: "no backup repository: set [backup] repositories in tej.toml".into(),
        })?;
    let repo = repo.repo.get().await.map_err(|e| RunbookError::Procedure {
        entry: entry(),
        message: format!("open backup repository {}: {e}", repo.name),
    })?;
    let procedure_error = |e: tej_backup::BackupError| RunbookError::Procedure {
        entry: entry(),
        message: e.to_string(),
    };
    let settings = tej_backup::BackupSettings::from_config(&ctx.config).map_err(procedure_error)?;
    let mut ropts = settings.restore(tej_backup::db_target(cfg).map_err(procedure_error)?);
    ropts.jobs = opts.jobs.max(1);
    // The newest usable dump of this very database: never another database's, never a file
    // or base backup, never one whose verification failed. With none usable (or the
    // repository unreadable now) the newest dump, whose restore then says what is wrong.
    let series = tej_backup::Series::logical(ropts.target.database());
    let newest = tej_backup::BackupSelector::latest_of(&series);
    let listed = tej_backup::list_backups(&repo).await.unwrap_or_default();
    let selector = match tej_backup::newest_usable(&listed, &newest) {
        Some(b) => tej_backup::BackupSelector::id_in(b.id.clone(), &series),
        None => newest,
    };
    let restore = tej_backup::RestoreStep {
        runner,
        repo: (*repo).clone(),
        selector: selector.to_string(),
        opts: ropts,
    };
    let app = ctx.config.compose.as_ref().map(|c| AppServices {
        runtime: Arc::new(LazyContainerRuntime::new(c.docker_host.clone())),
        project: Project::new(c.project.clone()),
        services: if opts.services.is_empty() {
            vec![c.backend_service.clone()]
        } else {
            opts.services.clone()
        },
        stop_timeout: Duration::from_secs(10),
    });
    Ok(db_corruption(
        target.admin.clone(),
        app,
        Box::new(restore),
        &DbCorruptionOptions {
            sanity_queries: cfg.sanity_queries.clone(),
            restore_anyway: opts.restore_anyway,
            ..DbCorruptionOptions::default()
        },
    ))
}

#[cfg(test)]
mod tests;

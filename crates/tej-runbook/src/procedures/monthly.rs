//! The monthly procedures:
//!
//! - [`security_audit`] (first Sunday): the configured dependency audits ([`AuditCommand`]:
//!   `npm audit --json`, `cargo audit --json`) run through a [`CommandRunner`] and summarised by
//!   severity ([`parse_npm_audit`], [`parse_cargo_audit`]), TLS certificates, backup encryption,
//!   and the `[[check]]` custom checks (inactive admin accounts...).
//! - [`deep_maintenance`] (second Sunday): a [`Procedure`] per database: ANALYZE, REINDEX
//!   CONCURRENTLY of bloated indexes, VACUUM (ANALYZE), VACUUM FULL of listed tables
//!   (destructive: confirmed, in the maintenance window), amcheck.
//! - [`capacity_planning`] (last Sunday): records sizes and counts ([`measure_capacity`]:
//!   database and largest tables, disk, backups, Redis memory) in a [`HistoryStore`], then
//!   forecasts three months ahead and writes one SVG chart per series.

use crate::capacity::{
    CapacityOptions, CapacitySeries, HistoryStore, Limit, Measurement, capacity_review,
};
use crate::custom_checks::evaluate_custom_checks;
use crate::error::{Result, RunbookError};
use crate::procedures::context::{ContextQueries, RunContext};
use crate::procedures::emergency::{AmcheckStep, Assessment};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tej_core::{
    Clock, CommandRunner, CommandSpec, Direction, Finding, Metric, Procedure, ProcedureReport,
    Report, Severity, atomic_write,
};
use tej_db::pg::{
    AmcheckOptions, AnalyzeStep, PgAdmin, ReindexOptions, ReindexStep, SizeOptions, VacuumFullStep,
    VacuumOptions, VacuumStep,
};

// ---------------------------------------------------------------- security audit

/// One dependency audit to run: `tej.toml`'s `[[audit]]` ([`tej_core::config::AuditConfig`],
/// the same type under the name this crate has always used).
pub use tej_core::config::AuditConfig as AuditCommand;
/// Which tool's JSON an audit command prints ([`tej_core::config::AuditKind`]).
pub use tej_core::config::AuditKind;

/// The `[[audit]]` tables of a TOML document (other keys are ignored): dependency audits
/// declared in a file of their own. `tej.toml`'s own `[[audit]]` tables are parsed and
/// validated with the rest of it ([`tej_core::Config::audit`]).
pub fn parse_audit_tables(text: &str) -> Result<Vec<AuditCommand>> {
    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        audit: Vec<AuditCommand>,
    }
    let doc: Doc = toml::from_str(text).map_err(|e| RunbookError::Corrupt {
        path: PathBuf::from("[[audit]]"),
        line: 0,
        message: e.to_string().lines().next().unwrap_or_default().to_string(),
    })?;
    for (i, a) in doc.audit.iter().enumerate() {
        if a.command.first().is_none_or(|p| p.is_empty()) {
            return Err(RunbookError::Corrupt {
                path: PathBuf::from("[[audit]]"),
                line: 0,
                message: format!(
                    "audit[{i}].command is empty; expected argv such as [\"npm\", \"audit\", \"--json\"]"
                ),
            });
        }
    }
    Ok(doc.audit)
}

/// Vulnerabilities by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VulnerabilityCounts {
    /// Informational.
    pub info: u64,
    /// Low.
    pub low: u64,
    /// Moderate (medium).
    pub moderate: u64,
    /// High.
    pub high: u64,
    /// Critical.
    pub critical: u64,
    /// Without a severity (RustSec advisories carry none of their own).
    pub unrated: u64,
}

impl VulnerabilityCounts {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.info + self.low + self.moderate + self.high + self.critical + self.unrated
    }

    /// The finding severity: critical for any high or critical, warning for moderate or
    /// unrated, OK otherwise.
    pub fn severity(&self) -> Severity {
        if self.critical > 0 || self.high > 0 {
            Severity::Critical
        } else if self.moderate > 0 || self.unrated > 0 {
            Severity::Warning
        } else {
            Severity::Ok
        }
    }
}

/// What one dependency audit found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditSummary {
    /// The command's name.
    pub name: String,
    /// Counts by severity.
    pub counts: VulnerabilityCounts,
    /// Advisory ids or package names, for the report (at most 50).
    pub advisories: Vec<String>,
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Summarises `npm audit --json`: `metadata.vulnerabilities` {info, low, moderate, high,
/// critical}, and the vulnerable package names (npm 7+ `vulnerabilities` object; npm 6
/// `advisories`).
pub fn parse_npm_audit(
    json: &str,
) -> std::result::Result<(VulnerabilityCounts, Vec<String>), String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not npm audit JSON: {e}"))?;
    if let Some(err) = v.get("error") {
        return Err(format!(
            "npm audit failed: {}",
            err.get("summary")
                .and_then(|s| s.as_str())
                .unwrap_or("unknown error")
        ));
    }
    let m = v
        .pointer("/metadata/vulnerabilities")
        .ok_or("npm audit JSON has no metadata.vulnerabilities")?;
    let counts = VulnerabilityCounts {
        info: u(&m["info"]),
        low: u(&m["low"]),
        moderate: u(&m["moderate"]),
        high: u(&m["high"]),
        critical: u(&m["critical"]),
        unrated: 0,
    };
    let mut names: Vec<String> = match v.get("vulnerabilities").and_then(|x| x.as_object()) {
        Some(o) => o
            .iter()
            .map(|(name, d)| {
                format!(
                    "{name} ({})",
                    d.get("severity").and_then(|s| s.as_str()).unwrap_or("?")
                )
            })
            .collect(),
        None => v
            .get("advisories")
            .and_then(|x| x.as_object())
            .map(|o| {
                o.values()
                    .map(|a| {
                        format!(
                            "{} ({})",
                            a.get("module_name").and_then(|s| s.as_str()).unwrap_or("?"),
                            a.get("severity").and_then(|s| s.as_str()).unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    names.truncate(50);
    Ok((counts, names))
}

/// Summarises `cargo audit --json`: `vulnerabilities.count` and each advisory of
/// `vulnerabilities.list` (`RUSTSEC-… package version`), counted as unrated unless the
/// advisory carries a `severity`.
pub fn parse_cargo_audit(
    json: &str,
) -> std::result::Result<(VulnerabilityCounts, Vec<String>), String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not cargo audit JSON: {e}"))?;
    let vulns = v
        .get("vulnerabilities")
        .ok_or("cargo audit JSON has no vulnerabilities")?;
    let list = vulns
        .get("list")
        .and_then(|l| l.as_array())
        .cloned()
        .unwrap_or_default();
    let mut counts = VulnerabilityCounts::default();
    let mut names = Vec::new();
    for item in &list {
        let adv = &item["advisory"];
        match adv
            .get("severity")
            .and_then(|s| s.as_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("critical") => counts.critical += 1,
            Some("high") => counts.high += 1,
            Some("medium") | Some("moderate") => counts.moderate += 1,
            Some("low") => counts.low += 1,
            Some("none") | Some("info") => counts.info += 1,
            _ => counts.unrated += 1,
        }
        names.push(format!(
            "{} {} {}",
            adv.get("id").and_then(|s| s.as_str()).unwrap_or("?"),
            item.pointer("/package/name")
                .and_then(|s| s.as_str())
                .unwrap_or("?"),
            item.pointer("/package/version")
                .and_then(|s| s.as_str())
                .unwrap_or("")
        ));
    }
    let declared = vulns.get("count").and_then(|c| c.as_u64()).unwrap_or(0);
    if declared > counts.total() {
        counts.unrated += declared - counts.total();
    }
    names.truncate(50);
    Ok((counts, names))
}

/// Runs one audit command and turns its JSON into a `security.dependencies` finding (a
/// command that cannot run or prints no JSON is `Unknown`). Audit tools exit non-zero when
/// they find something, so the exit code alone is not a failure.
pub async fn run_dependency_audit(
    runner: &dyn CommandRunner,
    cmd: &AuditCommand,
) -> (Finding, Option<AuditSummary>) {
    let check = "security.dependencies";
    let unknown =
        |msg: String| Finding::new(check, Severity::Unknown, msg).target(cmd.name.clone());
    let Some((prog, args)) = cmd.command.split_first() else {
        return (unknown("empty audit command".into()), None);
    };
    let Some(kind) = cmd.dialect() else {
        return (
            unknown(format!(
                "cannot tell npm from cargo output for {prog}: set kind"
            )),
            None,
        );
    };
    let mut spec = CommandSpec::new(prog.clone())
        .args(args.iter().cloned())
        .timeout(Duration::from_secs(cmd.timeout_secs.unwrap_or(300)));
    if let Some(d) = &cmd.dir {
        spec = spec.cwd(d.clone());
    }
    let shown = spec.display();
    let out = match runner.run(spec).await {
        Ok(o) => o,
        Err(e) => return (unknown(format!("{shown}: {e}")), None),
    };
    let parsed = match kind {
        AuditKind::Npm => parse_npm_audit(&out.stdout_text()),
        AuditKind::Cargo => parse_cargo_audit(&out.stdout_text()),
    };
    let (counts, advisories) = match parsed {
        Ok(p) => p,
        Err(e) => {
            return (
                unknown(format!(
                    "{shown} ({}): {e}; stderr: {}",
                    out.status,
                    out.stderr.trim()
                )),
                None,
            );
        }
    };
    let c = counts;
    let mut f = Finding::new(
        check,
        c.severity(),
        format!(
            "{} vulnerabilities: {} critical, {} high, {} moderate, {} low, {} info{}",
            c.total(),
            c.critical,
            c.high,
            c.moderate,
            c.low,
            c.info,
            if c.unrated > 0 {
                format!(", {} unrated", c.unrated)
            } else {
                String::new()
            }
        ),
    )
    .target(cmd.name.clone());
    if !advisories.is_empty() {
        f = f.detail(advisories.join("\n"));
    }
    for (name, v) in [
        ("critical", c.critical),
        ("high", c.high),
        ("moderate", c.moderate),
        ("low", c.low),
        ("info", c.info),
        ("unrated", c.unrated),
    ] {
        f = f.metric(
            Metric::new("dependency_vulnerabilities", v as f64, "count")
                .label("severity", name)
                .label("project", cmd.name.clone()),
        );
    }
    (
        f,
        Some(AuditSummary {
            name: cmd.name.clone(),
            counts,
            advisories,
        }),
    )
}

/// The monthly security audit: every dependency audit, every TLS endpoint, backup encryption,
/// and the custom checks (inactive admin accounts and the like), as one report.
pub async fn security_audit(
    ctx: &RunContext,
    runner: &dyn CommandRunner,
    commands: &[AuditCommand],
) -> Report {
    let mut report = Report::new("security-audit");
    if commands.is_empty() {
        report.push(Finding::new(
            "security.dependencies",
            Severity::Warning,
            "no dependency audit configured (npm audit --json, cargo audit --json)",
        ));
    }
    let audits =
        futures::future::join_all(commands.iter().map(|c| run_dependency_audit(runner, c)));
    let tls = futures::future::join_all(ctx.tls.iter().map(|t| ctx.tls_prober.probe(t)));
    let queries: Arc<dyn crate::custom_checks::QueryRunner> = match &ctx.queries {
        Some(q) => q.clone(),
        None => Arc::new(ContextQueries::new(ctx)),
    };
    let copts = ctx.custom_check_options();
    let custom = evaluate_custom_checks(queries.as_ref(), &ctx.config.checks, &copts);
    let (audits, tls, custom) = tokio::join!(audits, tls, custom);
    report.extend(audits.into_iter().map(|(f, _)| f));
    report.extend(tls.into_iter().flatten());
    report.push(backup_encryption_finding(&ctx.config));
    report.extend(custom);
    report
}

/// Backup encryption on (`[backup.encryption]`): OK, else a warning.
pub fn backup_encryption_finding(cfg: &tej_core::Config) -> Finding {
    match &cfg.backup.encryption {
        Some(e) => Finding::ok(
            "security.backup-encryption",
            format!(
                "backups are encrypted ({} age recipients{})",
                e.recipients.len(),
                if e.passphrase.is_some() {
                    ", passphrase"
                } else {
                    ""
                }
            ),
        ),
        None => Finding::new(
            "security.backup-encryption",
            Severity::Warning,
            "backups are not encrypted: set [backup.encryption] recipients",
        ),
    }
}

// ---------------------------------------------------------------- deep maintenance

/// How the deep maintenance runs.
#[derive(Debug, Clone)]
pub struct DeepMaintenanceOptions {
    /// Indexes wasting at least this share are rebuilt (the runbook: fragmentation > 20%).
    pub reindex_bloat_percent: f64,
    /// Tables rewritten with VACUUM FULL (destructive; none by default).
    pub vacuum_full_tables: Vec<String>,
    /// Lock wait limit of the maintenance statements.
    pub lock_timeout: Duration,
    /// amcheck at the end.
    pub amcheck: Option<AmcheckOptions>,
}

impl Default for DeepMaintenanceOptions {
    fn default() -> Self {
        DeepMaintenanceOptions {
            reindex_bloat_percent: 20.0,
            vacuum_full_tables: Vec::new(),
            lock_timeout: Duration::from_secs(10),
            amcheck: Some(AmcheckOptions::default()),
        }
    }
}

/// The deep maintenance of one database as a procedure: ANALYZE, REINDEX CONCURRENTLY of
/// bloated indexes, VACUUM (ANALYZE), VACUUM FULL of the listed tables, amcheck. Each
/// maintenance step's failure is recorded and the next one still runs.
pub fn deep_maintenance(admin: Arc<dyn PgAdmin>, opts: &DeepMaintenanceOptions) -> Procedure {
    let mut p = Procedure::new("database-deep-maintenance")
        .step_continue(AnalyzeStep {
            admin: admin.clone(),
            tables: Vec::new(),
            lock_timeout: opts.lock_timeout,
        })
        .step_continue(ReindexStep {
            admin: admin.clone(),
            options: ReindexOptions {
                bloat_percent: opts.reindex_bloat_percent,
                lock_timeout: opts.lock_timeout,
                ..ReindexOptions::default()
            },
        })
        .step_continue(VacuumStep {
            admin: admin.clone(),
            options: VacuumOptions {
                analyze: true,
                lock_timeout: opts.lock_timeout,
                ..VacuumOptions::default()
            },
        });
    if !opts.vacuum_full_tables.is_empty() {
        p = p.step_continue(VacuumFullStep {
            admin: admin.clone(),
            tables: opts.vacuum_full_tables.clone(),
            lock_timeout: opts.lock_timeout,
        });
    }
    if let Some(a) = &opts.amcheck {
        p = p.step_continue(AmcheckStep {
            admin,
            options: a.clone(),
            fail_on_damage: true,
            assessment: Arc::new(Mutex::new(Assessment::Unknown)),
        });
    }
    p
}

/// The runbook's "create full backup" before deep maintenance: a logical backup into every
/// repository (mutating); fails unless every repository has it.
pub struct CreateBackupStep {
    /// Starts pg_dump.
    pub runner: Arc<dyn CommandRunner>,
    /// The repositories.
    pub repos: Vec<tej_backup::Repository>,
    /// What to dump and how (compression, encryption).
    pub options: tej_backup::LogicalBackupOptions,
    /// Backup times.
    pub clock: Arc<dyn Clock>,
}

#[async_trait::async_trait]
impl tej_core::Step for CreateBackupStep {
    fn name(&self) -> String {
        "backup-create".into()
    }
    fn risk(&self) -> tej_core::Risk {
        tej_core::Risk::Mutating
    }
    fn target(&self) -> String {
        format!("database {}", self.options.db.database())
    }
    async fn plan(&self) -> std::result::Result<tej_core::Plan, tej_core::StepError> {
        if self.repos.is_empty() {
            return Err("no backup repository: set [backup] repositories".into());
        }
        Ok(tej_core::Plan::of(
            self,
            vec![format!(
                "pg_dump {} ({}) into {}",
                self.options.db.database(),
                self.options.format,
                self.repos
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )],
        ))
    }
    async fn apply(&self) -> std::result::Result<tej_core::StepOutput, tej_core::StepError> {
        let r = tej_backup::create_logical_backup(
            self.runner.as_ref(),
            &self.repos,
            &self.options,
            self.clock.as_ref(),
        )
        .await?;
        if !r.succeeded() {
            let failed: Vec<String> = r
                .repositories
                .iter()
                .filter(|o| !o.ok)
                .map(|o| format!("{}: {}", o.repository, o.error.clone().unwrap_or_default()))
                .collect();
            return Err(format!("backup {} missing from {}", r.id, failed.join("; ")).into());
        }
        Ok(tej_core::StepOutput {
            summary: format!(
                "backup {} ({} bytes stored) in {} repositories",
                r.id,
                r.stored_size,
                r.repositories.len()
            ),
            findings: Vec::new(),
            data: serde_json::to_value(&r).unwrap_or_default(),
        })
    }
}

/// The runbook's "verify backup integrity": re-reads the newest backup a selector selects
/// in a repository (checksums, decryption, decompression) and records the result beside it.
pub struct VerifyLatestBackupStep {
    /// Starts the decoders.
    pub runner: Arc<dyn CommandRunner>,
    /// The repository.
    pub repo: tej_backup::Repository,
    /// Which backup: [`tej_backup::BackupSelector::latest`] for the newest of any series,
    /// [`tej_backup::BackupSelector::latest_logical`] for the newest dump of one database.
    pub selector: tej_backup::BackupSelector,
    /// Keys for encrypted backups.
    pub encryption: tej_backup::EncryptionOptions,
    /// Verification times.
    pub clock: Arc<dyn Clock>,
}

#[async_trait::async_trait]
impl tej_core::Step for VerifyLatestBackupStep {
    fn name(&self) -> String {
        "backup-verify".into()
    }
    fn risk(&self) -> tej_core::Risk {
        tej_core::Risk::ReadOnly
    }
    fn target(&self) -> String {
        self.repo.name()
    }
    async fn plan(&self) -> std::result::Result<tej_core::Plan, tej_core::StepError> {
        Ok(tej_core::Plan::of(
            self,
            vec![format!(
                "re-read backup {}: SHA-256, decrypt, decompress",
                self.selector
            )],
        ))
    }
    async fn apply(&self) -> std::result::Result<tej_core::StepOutput, tej_core::StepError> {
        let opts = tej_backup::VerifyOptions {
            encryption: self.encryption.clone(),
            record: true,
            restore_test: None,
            progress: None,
        };
        let r = tej_backup::verify_backup(
            self.runner.as_ref(),
            &self.repo,
            &self.selector.to_string(),
            &opts,
            self.clock.as_ref(),
        )
        .await?;
        Ok(tej_core::StepOutput {
            summary: format!("backup {} verified ({} objects)", r.id, r.objects.len()),
            findings: vec![
                Finding::ok("backup.verify", format!("backup {} verified", r.id))
                    .target(r.repository.clone()),
            ],
            data: serde_json::to_value(&r).unwrap_or_default(),
        })
    }
}

/// [`deep_maintenance`] between the runbook's "create full backup" (first; its failure stops
/// the maintenance) and "verify backup integrity" (last).
pub fn deep_maintenance_with_backup(
    admin: Arc<dyn PgAdmin>,
    backup: CreateBackupStep,
    verify: Option<VerifyLatestBackupStep>,
    opts: &DeepMaintenanceOptions,
) -> Procedure {
    let mut p = Procedure::new("database-deep-maintenance").step(backup);
    p.steps.extend(deep_maintenance(admin, opts).steps);
    if let Some(v) = verify {
        p = p.step_continue(v);
    }
    p
}

/// A procedure's outcome as a check report: its findings, plus a critical finding for every
/// failed or refused step (so the daemon notifies about them).
pub fn procedure_findings(r: &ProcedureReport, target: &str) -> Vec<Finding> {
    let mut out: Vec<Finding> = r.findings().into_iter().cloned().collect();
    for s in &r.steps {
        let (sev, what) = match &s.outcome {
            tej_core::Outcome::Failed { error } => (Severity::Critical, format!("failed: {error}")),
            tej_core::Outcome::Refused { reason } => {
                (Severity::Critical, format!("refused: {reason}"))
            }
            tej_core::Outcome::Applied => (
                Severity::Ok,
                s.output
                    .as_ref()
                    .map(|o| o.summary.clone())
                    .unwrap_or_else(|| "applied".into()),
            ),
            tej_core::Outcome::Planned => (Severity::Ok, "planned (dry run)".into()),
            tej_core::Outcome::Skipped { reason } => {
                (Severity::Warning, format!("skipped: {reason}"))
            }
        };
        out.push(Finding::new(format!("{}.{}", r.procedure, s.step), sev, what).target(target));
    }
    out
}

// ---------------------------------------------------------------- capacity planning

fn m(metric: &str, target: &str, at: jiff::Timestamp, value: f64, unit: &str) -> Measurement {
    Measurement {
        metric: metric.into(),
        target: target.into(),
        at,
        value,
        unit: unit.into(),
    }
}

/// What one capacity recording measured, with the limits that apply to each series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CapacitySnapshot {
    /// Everything measured.
    pub measurements: Vec<Measurement>,
    /// The series to review, with their limits (disk size, Redis maxmemory).
    pub series: Vec<CapacitySeries>,
    /// What could not be measured (`redis:cache: connection refused`).
    pub problems: Vec<Finding>,
}

fn series(metric: &str, target: &str, limit: Option<f64>) -> CapacitySeries {
    CapacitySeries {
        metric: metric.into(),
        target: target.into(),
        limit: limit.map(|value| Limit {
            value,
            direction: Direction::HigherIsWorse,
        }),
    }
}

/// Measures sizes and counts now: each database and its largest tables (rows and bytes), each
/// disk, each backup repository (newest backup, total, count), each Redis instance's memory.
pub async fn measure_capacity(
    ctx: &RunContext,
    now: jiff::Timestamp,
    top_tables: i64,
) -> CapacitySnapshot {
    let mut s = CapacitySnapshot::default();
    let problem = |check: &str, target: String, e: String| {
        Finding::new(format!("capacity.{check}"), Severity::Unknown, e).target(target)
    };
    for d in &ctx.databases {
        let t = format!("db:{}", d.name);
        match tej_db::pg::size_report(d.admin.as_ref(), &SizeOptions { top: top_tables }).await {
            Ok(r) => {
                s.measurements
                    .push(m("db_size_bytes", &t, now, r.database_bytes as f64, "B"));
                s.series.push(series("db_size_bytes", &t, None));
                for rel in &r.largest {
                    let rt = format!("{t}/{}", rel.relation);
                    s.measurements.push(m(
                        "table_size_bytes",
                        &rt,
                        now,
                        rel.total_bytes as f64,
                        "B",
                    ));
                    s.series.push(series("table_size_bytes", &rt, None));
                    if rel.estimated_rows >= 0.0 {
                        s.measurements
                            .push(m("table_rows", &rt, now, rel.estimated_rows, "rows"));
                        s.series.push(series("table_rows", &rt, None));
                    }
                }
            }
            Err(e) => s.problems.push(problem("database", t, e.to_string())),
        }
    }
    let resources = ctx.resources.clone();
    match tokio::task::spawn_blocking(move || tej_host::check_resources(&resources)).await {
        Ok(Ok(r)) => {
            for mu in &r.mounts {
                let t = mu.mount_point.display().to_string();
                s.measurements
                    .push(m("disk_used_bytes", &t, now, mu.used_bytes as f64, "B"));
                // The disk is full when used reaches used + available (the root reserve aside).
                let cap = (mu.used_bytes + mu.available_bytes) as f64;
                s.series.push(series("disk_used_bytes", &t, Some(cap)));
            }
        }
        Ok(Err(e)) => s
            .problems
            .push(problem("disk", "host".into(), e.to_string())),
        Err(e) => s
            .problems
            .push(problem("disk", "host".into(), e.to_string())),
    }
    for r in &ctx.repositories {
        let t = format!("repo:{}", r.name);
        let repo = match r.repo.get().await {
            Ok(x) => x,
            Err(e) => {
                s.problems.push(problem("backups", t, e.to_string()));
                continue;
            }
        };
        match tej_backup::list_backups(&repo).await {
            Ok(list) => {
                let total: u64 = list.iter().map(|b| b.stored_size).sum();
                s.measurements
                    .push(m("backup_count", &t, now, list.len() as f64, "backups"));
                s.measurements
                    .push(m("backup_total_bytes", &t, now, total as f64, "B"));
                s.series.push(series("backup_count", &t, None));
                s.series.push(series("backup_total_bytes", &t, None));
                if let Some(newest) = list.iter().max_by_key(|b| b.finished_at) {
                    s.measurements.push(m(
                        "backup_newest_bytes",
                        &t,
                        now,
                        newest.stored_size as f64,
                        "B",
                    ));
                    s.series.push(series("backup_newest_bytes", &t, None));
                }
            }
            Err(e) => s.problems.push(problem("backups", t, e.to_string())),
        }
    }
    for r in &ctx.redis {
        let t = format!("redis:{}", r.name);
        let info = match r.client.get().await {
            Ok(c) => c.info().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match info {
            Ok(text) => {
                let info = tej_db::redis::InfoReport::parse(&text);
                if let Some(used) = info.memory.used_memory {
                    s.measurements
                        .push(m("redis_used_memory_bytes", &t, now, used as f64, "B"));
                    let limit = info.memory.maxmemory.filter(|&x| x > 0).map(|x| x as f64);
                    s.series.push(series("redis_used_memory_bytes", &t, limit));
                }
                s.measurements
                    .push(m("redis_keys", &t, now, info.total_keys() as f64, "keys"));
                s.series.push(series("redis_keys", &t, None));
            }
            Err(e) => s.problems.push(problem("redis", t, e)),
        }
    }
    s
}

/// How capacity planning runs.
#[derive(Debug, Clone)]
pub struct CapacityPlanningOptions {
    /// Trend horizon and urgency.
    pub capacity: CapacityOptions,
    /// Largest tables recorded per database.
    pub top_tables: i64,
    /// Where the SVG charts are written (none: not written).
    pub chart_dir: Option<PathBuf>,
}

impl Default for CapacityPlanningOptions {
    fn default() -> Self {
        CapacityPlanningOptions {
            capacity: CapacityOptions::default(),
            top_tables: 5,
            chart_dir: None,
        }
    }
}

/// The monthly capacity planning: measures now ([`measure_capacity`]), records in `store`,
/// reviews every series measured (trend, 3-month projection, days until a limit), writes each
/// chart to `chart_dir` as `capacity-<metric>-<target>.svg`; returns the report and the charts.
pub async fn capacity_planning(
    ctx: &RunContext,
    store: &dyn HistoryStore,
    clock: &dyn Clock,
    opts: &CapacityPlanningOptions,
) -> Result<(Report, Vec<PathBuf>)> {
    let now = clock.now();
    let snap = measure_capacity(ctx, now, opts.top_tables).await;
    store.append(&snap.measurements).await?;
    let (mut report, forecasts) = capacity_review(store, &snap.series, now, &opts.capacity).await;
    report.extend(snap.problems);
    let mut charts = Vec::new();
    if let Some(dir) = &opts.chart_dir {
        std::fs::create_dir_all(dir).map_err(|source| RunbookError::Io {
            action: "create the chart directory",
            path: dir.clone(),
            source,
        })?;
        for f in &forecasts {
            let path = dir.join(chart_file_name(&f.series.metric, &f.series.target));
            atomic_write(&path, f.svg.as_bytes(), Some(0o644)).map_err(|source| {
                RunbookError::Io {
                    action: "write a capacity chart",
                    path: path.clone(),
                    source,
                }
            })?;
            charts.push(path);
        }
    }
    Ok((report, charts))
}

/// `capacity-<metric>-<target>.svg` with the target made file-name safe.
pub fn chart_file_name(metric: &str, target: &str) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>()
            .trim_matches('-')
            .to_string()
    };
    let t = clean(target);
    if t.is_empty() {
        format!("capacity-{}.svg", clean(metric))
    } else {
        format!("capacity-{}-{t}.svg", clean(metric))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tej_core::command::CommandOutput;
    use tej_core::{MockCommandRunner, TokioCommandRunner};

    const NPM: &str = r#"{"auditReportVersion":2,"vulnerabilities":{"lodash":{"name":"lodash","severity":"high"},"minimist":{"name":"minimist","severity":"moderate"}},
      "metadata":{"vulnerabilities":{"info":0,"low":1,"moderate":1,"high":1,"critical":0,"total":3},"dependencies":{"prod":10}}}"#;
    const CARGO: &str = r#"{"database":{},"lockfile":{"dependency-count":120},
      "vulnerabilities":{"found":true,"count":2,"list":[
        {"advisory":{"id":"RUSTSEC-2023-0001","package":"tokio","title":"x"},"package":{"name":"tokio","version":"1.0.0"}},
        {"advisory":{"id":"RUSTSEC-2024-0002","package":"h2","title":"y","severity":"critical"},"package":{"name":"h2","version":"0.3.0"}}]},
      "warnings":{}}"#;

    #[test]
    fn npm_and_cargo_json_are_summarised_by_severity() {
        let (c, names) = parse_npm_audit(NPM).unwrap();
        assert_eq!((c.low, c.moderate, c.high, c.critical), (1, 1, 1, 0));
        assert_eq!(c.severity(), Severity::Critical);
        assert_eq!(names, vec!["lodash (high)", "minimist (moderate)"]);
        let (c, names) = parse_cargo_audit(CARGO).unwrap();
        assert_eq!((c.unrated, c.critical, c.total()), (1, 1, 2));
        assert_eq!(names[0], "RUSTSEC-2023-0001 tokio 1.0.0");
        let clean = r#"{"vulnerabilities":{"found":false,"count":0,"list":[]}}"#;
        assert_eq!(parse_cargo_audit(clean).unwrap().0.severity(), Severity::Ok);
        assert!(parse_npm_audit("npm ERR! no lockfile").is_err());
        assert!(
            parse_npm_audit(r#"{"error":{"code":"ENOLOCK","summary":"no lockfile"}}"#)
                .unwrap_err()
                .contains("no lockfile")
        );
    }

    fn out(code: i32, stdout: &str) -> CommandOutput {
        CommandOutput::exited(code, stdout, "")
    }

    #[tokio::test]
    async fn audit_commands_run_through_the_runner_and_nonzero_exits_are_not_failures() {
        let mut r = MockCommandRunner::new();
        r.expect_run()
            .withf(|s| {
                s.program == "npm"
                    && s.args == ["audit", "--json"]
                    && s.cwd.as_deref() == Some(Path::new("/srv/backend"))
            })
            .returning(|_| Ok(out(1, NPM)));
        r.expect_run()
            .withf(|s| s.program == "cargo")
            .returning(|_| Ok(out(1, CARGO)));
        let npm = AuditCommand {
            name: "backend".into(),
            command: vec!["npm".into(), "audit".into(), "--json".into()],
            dir: Some("/srv/backend".into()),
            kind: None,
            timeout_secs: None,
        };
        let (f, s) = run_dependency_audit(&r, &npm).await;
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.target, "backend");
        assert!(
            f.summary
                .starts_with("3 vulnerabilities: 0 critical, 1 high"),
            "{}",
            f.summary
        );
        assert_eq!(s.unwrap().counts.moderate, 1);
        let cargo = AuditCommand {
            name: "tej".into(),
            command: vec!["cargo".into(), "audit".into(), "--json".into()],
            dir: None,
            kind: None,
            timeout_secs: None,
        };
        let (f, _) = run_dependency_audit(&r, &cargo).await;
        assert!(f.detail.unwrap().contains("RUSTSEC-2024-0002 h2"));
        // A tool that is not installed is unknown, never OK.
        let missing = AuditCommand {
            name: "x".into(),
            command: vec!["/nonexistent/npm".into(), "audit".into()],
            dir: None,
            kind: None,
            timeout_secs: Some(5),
        };
        let (f, s) = run_dependency_audit(&TokioCommandRunner, &missing).await;
        assert_eq!(f.severity, Severity::Unknown);
        assert!(s.is_none());
        let odd = AuditCommand {
            command: vec!["yarn".into()],
            ..missing
        };
        assert_eq!(
            run_dependency_audit(&r, &odd).await.0.severity,
            Severity::Unknown
        );
    }

    #[tokio::test]
    async fn security_audit_covers_dependencies_encryption_and_custom_checks() {
        let mut r = MockCommandRunner::new();
        r.expect_run().returning(|_| {
            Ok(out(
                0,
                r#"{"vulnerabilities":{"found":false,"count":0,"list":[]}}"#,
            ))
        });
        let cfg = tej_core::Config::from_toml_with_env(
            "[[check]]\nname = \"inactive-admins\"\nsql = \"SELECT 3\"\ndatabase = \"main\"\nwarn = 1\ncrit = 5\n[[database]]\nname = \"main\"\nurl = \"postgres://x@127.0.0.1:1/x\"\n",
            "t.toml",
            &|_| None,
        )
        .unwrap();
        let mut ctx = RunContext::empty(cfg);
        let mut q = crate::custom_checks::MockQueryRunner::new();
        q.expect_sql_scalar().returning(|_, _| Ok(3.0));
        ctx.queries = Some(Arc::new(q));
        let cmds = vec![AuditCommand {
            name: "tej".into(),
            command: vec!["cargo".into(), "audit".into(), "--json".into()],
            dir: None,
            kind: None,
            timeout_secs: None,
        }];
        let rep = security_audit(&ctx, &r, &cmds).await;
        let by = |c: &str| rep.findings.iter().find(|f| f.check == c).unwrap().severity;
        assert_eq!(by("security.dependencies"), Severity::Ok);
        assert_eq!(by("security.backup-encryption"), Severity::Warning);
        assert_eq!(by("custom.inactive-admins"), Severity::Warning);
        // No audit configured is a warning, not silence.
        let rep = security_audit(&ctx, &r, &[]).await;
        assert!(
            rep.findings
                .iter()
                .any(|f| f.check == "security.dependencies" && f.severity == Severity::Warning)
        );
    }

    #[tokio::test]
    async fn deep_maintenance_orders_steps_and_vacuum_full_needs_confirmation() {
        use tej_core::{Calendar, Environment, Executor, Fixed, Guard};
        let mut pg = tej_db::pg::MockPgAdmin::new();
        pg.expect_target().return_const("db:app".to_string());
        pg.expect_query().returning(|sql, _| {
            Ok(if sql.contains("pg_total_relation_size(to_regclass") {
                vec![tej_db::pg::PgRow::from_pairs([(
                    "bytes",
                    tej_db::pg::PgValue::Int(8192),
                )])]
            } else {
                vec![]
            })
        });
        pg.expect_maintenance().returning(|_, _| Ok(0));
        pg.expect_free_disk_bytes().returning(|| Ok(None));
        let p = deep_maintenance(
            Arc::new(pg),
            &DeepMaintenanceOptions {
                vacuum_full_tables: vec!["public.events".into()],
                amcheck: None,
                ..DeepMaintenanceOptions::default()
            },
        );
        let names: Vec<String> = p.steps.iter().map(|s| s.step.name()).collect();
        assert_eq!(
            names,
            [
                "analyze",
                "reindex-concurrently",
                "vacuum-analyze",
                "vacuum-full"
            ]
        );
        let ex = Executor::new(Guard {
            environment: Environment::Production,
            calendar: Calendar::runbook(),
            // Sunday 2025-01-19 02:30 IST: inside the window.
            clock: Arc::new(tej_core::FakeClock::new(
                "2025-01-18T21:00:00Z".parse().unwrap(),
            )),
            confirmer: Arc::new(Fixed(false)),
            override_window: false,
        });
        let r = ex.run(&p).await;
        assert!(
            matches!(r.steps[3].outcome, tej_core::Outcome::Refused { .. }),
            "{:?}",
            r.steps
        );
        let f = procedure_findings(&r, "db:app");
        assert!(
            f.iter()
                .any(|f| f.check == "database-deep-maintenance.vacuum-full"
                    && f.severity == Severity::Critical)
        );
    }

    #[test]
    fn audit_tables_parse_and_other_keys_are_ignored() {
        let cmds = parse_audit_tables(
            "environment = \"production\"\n[[audit]]\nname = \"backend\"\ncommand = [\"npm\", \"audit\", \"--json\"]\ndir = \"/srv/b\"\n\n[[audit]]\nname = \"tej\"\ncommand = [\"/usr/bin/cargo-audit\", \"audit\", \"--json\"]\ntimeout_secs = 60\n",
        )
        .unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0].dialect(), Some(AuditKind::Npm));
        assert_eq!(cmds[1].dialect(), Some(AuditKind::Cargo));
        assert_eq!(cmds[1].timeout_secs, Some(60));
        assert!(parse_audit_tables("").unwrap().is_empty());
        assert!(parse_audit_tables("[[audit]]\nname = \"x\"\ncommand = []\n").is_err());
        assert!(parse_audit_tables("[[audit]]\nname = \"x\"\ncomand = [\"npm\"]\n").is_err());
    }

    #[test]
    fn chart_names_are_file_safe() {
        assert_eq!(
            chart_file_name("disk_used_bytes", "/var/lib"),
            "capacity-disk_used_bytes-var-lib.svg"
        );
        assert_eq!(chart_file_name("users", ""), "capacity-users.svg");
        assert_eq!(
            chart_file_name("table_rows", "db:main/public.users"),
            "capacity-table_rows-db-main-public.users.svg"
        );
    }
}

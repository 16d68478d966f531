//! [`CalendarRunner`]: the [`ProcedureRunner`] of the whole calendar, for `tej daemon` (and
//! `tej run` of the monthly and quarterly entries): the check procedures through
//! [`super::dispatch::run_procedure`], the monthly and quarterly ones from [`super::monthly`]
//! and [`super::quarterly`], mutating procedures under an [`Executor`].

use super::context::RunContext;
use super::monthly::{
    AuditCommand, CapacityPlanningOptions, CreateBackupStep, DeepMaintenanceOptions,
    VerifyLatestBackupStep, capacity_planning, deep_maintenance, deep_maintenance_with_backup,
    procedure_findings, security_audit,
};
use super::quarterly::{
    DrillRequest, DrillRunner, DrillTargets, LogicalDrill, PitrDrill, disaster_recovery_drill,
    secret_rotation_from_context, server_cannot_run_tej, wal_fetch_restore_command,
};
use crate::capacity::{HistoryStore, JsonlHistoryStore};
use crate::daemon::ProcedureRunner;
use crate::error::{Result, RunbookError};
use crate::pg_history::PgHistoryStore;
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tej_core::calendar::ProcedureKind;
use tej_core::{CalendarEntry, Clock, CommandRunner, Executor, Finding, Report, Severity};

/// Runs every calendar entry's procedure over one [`RunContext`].
pub struct CalendarRunner {
    /// What the runs cover.
    pub ctx: Arc<RunContext>,
    /// Runs mutating procedures (its guard decides about destructive steps: an unattended
    /// daemon without `--yes` has them refused and reported).
    pub executor: Executor,
    /// Starts external programs (audits, pg_restore).
    pub runner: Arc<dyn CommandRunner>,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Dependency audits of the security audit (from `tej.toml`'s `[[audit]]`).
    pub audit_commands: Vec<AuditCommand>,
    /// Capacity history: `None` keeps it in the first database's `tej` schema, else in
    /// `state_dir/capacity-history.jsonl`.
    pub history: Option<Arc<dyn HistoryStore>>,
    /// Charts, history file and the like (`[state_dir]`, default `/var/lib/tej`).
    pub state_dir: PathBuf,
    /// Deep maintenance options.
    pub deep_maintenance: DeepMaintenanceOptions,
    /// Drill targets.
    pub drill_targets: DrillTargets,
    /// The drill. Default, from the first repository of `[backup] repositories`: when it
    /// holds a physical base backup and [`tej_program`](Self::tej_program) is set, a
    /// [`PitrDrill`] of its base backups and WAL archive (scratch cluster under
    /// `state_dir/drill`, WAL fetched by `tej wal fetch`, sanity queries in the first
    /// database's database); else a [`LogicalDrill`] of its newest logical backup onto the
    /// first database's server.
    pub drill: Option<Arc<dyn DrillRunner>>,
    /// The tej program the PITR drill's scratch cluster runs as its `restore_command`
    /// ([`wal_fetch_restore_command`]); the CLI sets its own path. `None`: the drill is
    /// logical.
    pub tej_program: Option<PathBuf>,
    /// The configuration file `tej wal fetch` reads in the PITR drill (`--config`, made
    /// absolute; for the keys of encrypted WAL); `None`: its default.
    pub config_path: Option<PathBuf>,
    /// Runs are the calendar's own (`tej daemon`, `tej run ENTRY --scheduled`): each entry's
    /// destructive steps are confirmed by the schedule inside its slot
    /// ([`crate::scheduled_executor`]), recorded in the audit log.
    pub scheduled: bool,
}

impl std::fmt::Debug for CalendarRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CalendarRunner")
            .field("state_dir", &self.state_dir)
            .field("audit_commands", &self.audit_commands)
            .finish_non_exhaustive()
    }
}

impl CalendarRunner {
    /// A runner over `ctx` with defaults: history in PostgreSQL when a database is configured,
    /// state in `config.state_dir` (else `/var/lib/tej`), the dependency audits of the
    /// configuration's `[[audit]]` tables.
    pub fn new(
        ctx: Arc<RunContext>,
        executor: Executor,
        runner: Arc<dyn CommandRunner>,
        clock: Arc<dyn Clock>,
    ) -> CalendarRunner {
        let state_dir = ctx
            .config
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/tej"));
        CalendarRunner {
            audit_commands: ctx.config.audit.clone(),
            ctx,
            executor,
            runner,
            clock,
            history: None,
            state_dir,
            deep_maintenance: DeepMaintenanceOptions::default(),
            drill_targets: DrillTargets::default(),
            drill: None,
            tej_program: None,
            config_path: None,
            scheduled: false,
        }
    }

    fn history(&self) -> Arc<dyn HistoryStore> {
        if let Some(h) = &self.history {
            return h.clone();
        }
        match self.ctx.databases.first() {
            Some(d) => Arc::new(PgHistoryStore::new(d.admin.clone())),
            None => Arc::new(JsonlHistoryStore::new(
                self.state_dir.join("capacity-history.jsonl"),
            )),
        }
    }

    async fn drill(&self) -> Result<Arc<dyn DrillRunner>> {
        if let Some(d) = &self.drill {
            return Ok(d.clone());
        }
        let err = |m: String| RunbookError::Procedure {
            entry: "disaster-recovery-drill".into(),
            message: m,
        };
        let target = self
            .ctx
            .repositories
            .first()
            .ok_or_else(|| err("no backup repository: set [backup] repositories".into()))?;
        let repo = target.repo.get().await.map_err(|e| err(e.to_string()))?;
        let encryption = tej_backup::BackupSettings::from_config(&self.ctx.config)
            .map_err(|e| err(e.to_string()))?
            .encryption;
        if let Some(tej) = &self.tej_program {
            let inv = repo.inventory().await.map_err(|e| err(e.to_string()))?;
            if inv
                .backups
                .iter()
                .any(|b| b.kind == tej_backup::BackupKind::Physical)
            {
                // `tej wal fetch --repo` gets the repository as tej.toml spells it.
                let spec = self
                    .ctx
                    .config
                    .backup
                    .repositories
                    .iter()
                    .find(|s| tej_core::secret::redact_url_passwords(s) == target.name)
                    .cloned()
                    .unwrap_or_else(|| repo.name());
                // The scratch server runs restore_command in its data directory.
                let config = self
                    .config_path
                    .as_deref()
                    .map(tej_core::fsutil::absolute_for_others);
                let source =
                    tej_backup::RepositorySource::new((*repo).clone()).with_encryption(encryption);
                let wal = source.wal().clone();
                let mut drill = PitrDrill::new(
                    Arc::new(source),
                    target.name.clone(),
                    self.state_dir.join("drill"),
                    wal_fetch_restore_command(tej, &spec, config.as_deref()),
                    self.runner.clone(),
                    self.clock.clone(),
                );
                drill.options.wal_archive = Some(wal);
                // Fail at once, saying why, rather than as a recovery the server cannot feed.
                if let Some(user) = drill.options.run_as.as_deref()
                    && let Some(why) = server_cannot_run_tej(tej, user, config.as_deref())
                {
                    return Err(err(why));
                }
                if let Some(db) = self.ctx.config.databases.first() {
                    drill.options.database = tej_backup::DbTarget::new(db.url.expose()).database();
                }
                return Ok(Arc::new(drill));
            }
        }
        let db = self
            .ctx
            .config
            .databases
            .first()
            .ok_or_else(|| err("no [[database]] to restore onto".into()))?;
        let server = tej_backup::db_target(db).map_err(|e| err(e.to_string()))?;
        Ok(Arc::new(LogicalDrill {
            runner: self.runner.clone(),
            repo,
            server,
            encryption,
            clock: self.clock.clone(),
        }))
    }

    /// Runs the procedure of `kind` under the runner's executor.
    pub async fn run_kind(&self, kind: ProcedureKind) -> Result<Report> {
        self.run_kind_with(kind, &self.executor).await
    }

    /// The executor a run of `entry` uses: the runner's, or for a scheduled run the one
    /// whose destructive steps the schedule confirms inside the entry's slot.
    pub fn executor_for(&self, entry: &CalendarEntry) -> Result<Executor> {
        if !self.scheduled {
            return Ok(self.executor.clone());
        }
        let cal = tej_core::Calendar::from_config(&self.ctx.config)
            .map_err(|e| RunbookError::Unsupported(e.to_string()))?;
        // The entry as the calendar has it now (tej.toml may have moved it).
        let entry = cal
            .entry(&entry.id)
            .cloned()
            .unwrap_or_else(|| entry.clone());
        Ok(crate::schedule::scheduled_executor(
            &self.executor,
            &cal,
            &entry,
        ))
    }

    /// Runs the procedure of `kind` under `executor`.
    pub async fn run_kind_with(&self, kind: ProcedureKind, executor: &Executor) -> Result<Report> {
        let ctx = self.ctx.as_ref();
        match kind {
            ProcedureKind::BackupCreate => Ok(super::nightly::nightly_backup(
                ctx,
                executor,
                self.runner.clone(),
                self.clock.clone(),
            )
            .await),
            ProcedureKind::BackupVerify => Ok(super::nightly::nightly_verify(
                ctx,
                executor,
                self.runner.clone(),
                self.clock.clone(),
            )
            .await),
            ProcedureKind::BackupPrune => {
                Ok(super::nightly::nightly_prune(ctx, executor, self.clock.clone()).await)
            }
            ProcedureKind::CertificateRenewal => {
                Ok(super::nightly::certificate_renewal(ctx, executor, self.runner.clone()).await)
            }
            ProcedureKind::SecurityAudit => {
                Ok(security_audit(ctx, self.runner.as_ref(), &self.audit_commands).await)
            }
            ProcedureKind::WeeklyAudit => {
                Ok(
                    super::weekly::weekly_maintenance(ctx, &self.executor, self.clock.clone())
                        .await,
                )
            }
            ProcedureKind::DatabaseDeepMaintenance => {
                let mut report = Report::new("database-deep-maintenance");
                let repos = super::nightly::opened_repositories(ctx, &mut report).await;
                // The pre-maintenance backup is taken as the nightly one: `[backup]`'s
                // format, compression and encryption.
                let settings = match tej_backup::BackupSettings::from_config(&ctx.config) {
                    Ok(s) => s,
                    Err(e) => {
                        report.push(Finding::new(
                            "database-deep-maintenance",
                            Severity::Critical,
                            format!("no maintenance without its backup: {e}"),
                        ));
                        return Ok(report);
                    }
                };
                for d in &ctx.databases {
                    let p = match ctx.config.databases.iter().find(|c| c.name == d.name) {
                        Some(cfg) if !repos.is_empty() => {
                            let target = match tej_backup::db_target(cfg) {
                                Ok(t) => t,
                                Err(e) => {
                                    report.push(Finding::new(
                                        "database-deep-maintenance",
                                        Severity::Critical,
                                        e.to_string(),
                                    ));
                                    continue;
                                }
                            };
                            // The backup verified afterwards is the one taken first.
                            let selector =
                                tej_backup::BackupSelector::latest_logical(target.database());
                            let options = settings.logical(target);
                            deep_maintenance_with_backup(
                                d.admin.clone(),
                                CreateBackupStep {
                                    runner: self.runner.clone(),
                                    repos: repos.clone(),
                                    options,
                                    clock: self.clock.clone(),
                                },
                                Some(VerifyLatestBackupStep {
                                    runner: self.runner.clone(),
                                    repo: repos[0].clone(),
                                    selector,
                                    encryption: settings.encryption.clone(),
                                    clock: self.clock.clone(),
                                }),
                                &self.deep_maintenance,
                            )
                        }
                        _ => deep_maintenance(d.admin.clone(), &self.deep_maintenance),
                    };
                    let r = executor.run(&p).await;
                    report.extend(procedure_findings(&r, &format!("db:{}", d.name)));
                }
                if ctx.databases.is_empty() {
                    report.push(Finding::new(
                        "database-deep-maintenance",
                        Severity::Unknown,
                        "no [[database]] configured",
                    ));
                }
                Ok(report)
            }
            ProcedureKind::CapacityPlanning => {
                let opts = CapacityPlanningOptions {
                    chart_dir: Some(self.state_dir.join("capacity")),
                    ..CapacityPlanningOptions::default()
                };
                let (report, _) =
                    capacity_planning(ctx, self.history().as_ref(), self.clock.as_ref(), &opts)
                        .await?;
                Ok(report)
            }
            ProcedureKind::SecretRotation => {
                let p = secret_rotation_from_context(ctx, &executor.guard, executor.audit.clone())
                    .await?;
                let r = executor.run(&p).await;
                let mut report = Report::new("secret-rotation");
                report.extend(procedure_findings(&r, "secrets"));
                Ok(report)
            }
            ProcedureKind::DisasterRecoveryDrill => {
                let drill = match self.drill().await {
                    Ok(d) => d,
                    Err(e) => {
                        let mut r = Report::new("disaster-recovery-drill");
                        r.push(Finding::new("dr.drill", Severity::Critical, e.to_string()));
                        return Ok(r);
                    }
                };
                let req = DrillRequest {
                    sanity_queries: ctx
                        .config
                        .databases
                        .first()
                        .map(|d| d.sanity_queries.clone())
                        .unwrap_or_default(),
                };
                let (report, _) = disaster_recovery_drill(
                    drill.as_ref(),
                    &req,
                    &self.drill_targets,
                    Duration::from_secs(6 * 3600),
                )
                .await;
                Ok(report)
            }
            other => super::dispatch::run_procedure(other, ctx, self.clock.as_ref()).await,
        }
    }
}

#[async_trait]
impl ProcedureRunner for CalendarRunner {
    async fn run(&self, entry: &CalendarEntry) -> Result<Report> {
        let executor = self.executor_for(entry)?;
        let mut r = self.run_kind_with(entry.procedure, &executor).await?;
        r.title = entry.id.clone();
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procedures::quarterly::{DrillSummary, MockDrillRunner};
    use tej_core::{Calendar, Environment, Fixed, Guard, MockCommandRunner};

    fn runner(ctx: RunContext) -> CalendarRunner {
        let ex = Executor::new(Guard {
            environment: Environment::Development,
            calendar: Calendar::runbook(),
            clock: Arc::new(tej_core::SystemClock),
            confirmer: Arc::new(Fixed(false)),
            override_window: false,
        });
        CalendarRunner::new(
            Arc::new(ctx),
            ex,
            Arc::new(MockCommandRunner::new()),
            Arc::new(tej_core::FakeClock::new(
                "2025-01-26T09:30:00Z".parse().unwrap(),
            )),
        )
    }

    #[tokio::test]
    async fn tej_toml_audits_run_in_the_monthly_security_audit() {
        let dir = tempfile::tempdir().unwrap();
        let npm = dir.path().join("npm-audit.json");
        std::fs::write(
            &npm,
            r#"{"auditReportVersion":2,"vulnerabilities":{"lodash":{"name":"lodash","severity":"high"},"minimist":{"name":"minimist","severity":"moderate"}},
               "metadata":{"vulnerabilities":{"info":0,"low":0,"moderate":1,"high":1,"critical":0,"total":2}}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("cargo-audit.json"),
            r#"{"vulnerabilities":{"found":false,"count":0,"list":[]}}"#,
        )
        .unwrap();
        let toml = format!(
            r#"
[[audit]]
name = "backend"
command = ["sh", "-c", "cat {}; exit 1"]
kind = "npm"

[[audit]]
name = "tej"
command = ["cat", "cargo-audit.json"]
dir = "{}"
kind = "cargo"
timeout_secs = 30
"#,
            npm.display(),
            dir.path().display()
        );
        let cfg = tej_core::Config::from_toml_with_env(&toml, "tej.toml", &|_| None).unwrap();
        let ctx = RunContext::from_config(&cfg, crate::RunOptions::default()).unwrap();
        let mut r = runner(ctx);
        r.runner = Arc::new(tej_core::TokioCommandRunner);
        assert_eq!(r.audit_commands, cfg.audit);
        let entry = Calendar::runbook().entry("security-audit").unwrap().clone();
        let rep = r.run(&entry).await.unwrap();
        let dep = |target: &str| {
            rep.findings
                .iter()
                .find(|f| f.check == "security.dependencies" && f.target == target)
                .unwrap_or_else(|| panic!("no audit of {target}: {:#?}", rep.findings))
        };
        let backend = dep("backend");
        assert_eq!(backend.severity, Severity::Critical, "{backend:#?}");
        assert!(
            backend
                .summary
                .starts_with("2 vulnerabilities: 0 critical, 1 high, 1 moderate"),
            "{}",
            backend.summary
        );
        assert!(backend.detail.as_deref().unwrap().contains("lodash (high)"));
        let high = backend
            .metrics
            .iter()
            .find(|m| m.labels.iter().any(|(k, v)| k == "severity" && v == "high"))
            .unwrap();
        assert_eq!(high.value, 1.0);
        let tej = dep("tej");
        assert_eq!(tej.severity, Severity::Ok, "{tej:#?}");
        assert!(
            !rep.findings
                .iter()
                .any(|f| f.summary.contains("no dependency audit"))
        );
        assert_eq!(rep.severity(), Severity::Critical);

        // Without [[audit]] the runner has none, and the report says so.
        let r = runner(RunContext::empty(tej_core::Config::default()));
        assert!(r.audit_commands.is_empty());
        let rep = r.run(&entry).await.unwrap();
        assert!(
            rep.findings
                .iter()
                .any(|f| f.check == "security.dependencies"
                    && f.severity == Severity::Warning
                    && f.summary.contains("no dependency audit"))
        );
    }

    #[tokio::test]
    async fn the_drill_is_pitr_when_the_repository_holds_base_backups_and_tej_is_known() {
        use crate::procedures::context::{Lazy, RepositoryTarget};
        use crate::procedures::quarterly::tests::pitr::base_backup;
        let store = Arc::new(tej_backup::MemoryStore::new());
        let m = base_backup("2025-01-16T02:00:00Z");
        tej_backup::put_bytes(
            store.as_ref(),
            &tej_backup::ObjectKey::new(format!("backups/{}/manifest.json", m.id)).unwrap(),
            serde_json::to_vec(&m).unwrap(),
            false,
        )
        .await
        .unwrap();
        let repo = Arc::new(tej_backup::Repository::from_store(store));
        let cfg = tej_core::Config::from_toml_with_env(
            "[[database]]\nname = \"app\"\nurl = \"postgres://x@127.0.0.1:1/app\"\n",
            "t.toml",
            &|_| None,
        )
        .unwrap();
        let mut ctx = RunContext::empty(cfg);
        ctx.repositories.push(RepositoryTarget {
            name: "mem".into(),
            repo: Lazy::ready(repo),
        });
        let dir = tempfile::tempdir().unwrap();
        let mut r = runner(ctx);
        r.state_dir = dir.path().to_path_buf();
        let mut cmds = MockCommandRunner::new();
        cmds.expect_run().returning(|spec| {
            Err(tej_core::CommandError::NotFound {
                program: spec.program,
                package: None,
            })
        });
        r.runner = Arc::new(cmds);
        let drill = |r: Report| {
            let f = r
                .findings
                .into_iter()
                .find(|f| f.check == "dr.drill")
                .unwrap();
            assert_eq!(f.severity, Severity::Critical, "{f:#?}");
            f.summary
        };
        // Without the tej program (for restore_command), the logical drill: none to drill.
        let s = drill(
            r.run_kind(ProcedureKind::DisasterRecoveryDrill)
                .await
                .unwrap(),
        );
        assert!(s.contains("no logical backup in"), "{s}");
        // With it (any program the server's user can run), the PITR drill of the base backup
        // (which has no WAL to recover with here).
        r.tej_program = Some(PathBuf::from("/bin/sh"));
        let s = drill(
            r.run_kind(ProcedureKind::DisasterRecoveryDrill)
                .await
                .unwrap(),
        );
        assert!(s.contains("point-in-time recovery drill"), "{s}");
    }

    #[tokio::test]
    async fn every_calendar_entry_has_a_procedure() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = runner(RunContext::empty(tej_core::Config::default()));
        r.state_dir = dir.path().to_path_buf();
        let mut d = MockDrillRunner::new();
        d.expect_run_drill().returning(|_| {
            Ok(DrillSummary {
                kind: "logical".into(),
                repository: "r".into(),
                backup_id: "b".into(),
                restored_into: "x".into(),
                rto_secs: 1.0,
                rpo_secs: 3600.0,
                queries: vec![],
            })
        });
        r.drill = Some(Arc::new(d));
        for e in &Calendar::runbook().entries {
            let out = r.run(e).await;
            match e.procedure {
                // Needs [secrets]: a clear error, which the daemon reports as critical.
                ProcedureKind::SecretRotation => {
                    assert!(out.unwrap_err().to_string().contains("[secrets]"))
                }
                _ => {
                    let rep = out.unwrap_or_else(|err| panic!("{}: {err}", e.id));
                    assert_eq!(rep.title, e.id);
                }
            }
        }
        // Capacity planning without a database keeps its history in the state directory.
        assert!(dir.path().join("capacity-history.jsonl").exists());
    }
}

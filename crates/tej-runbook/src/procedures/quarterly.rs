//! The quarterly procedures:
//!
//! - [`secret_rotation_from_context`]: tej-secrets' staged rotation ([`RotateSecretsStep`])
//!   over Redis sessions and the Compose backend, as a procedure.
//! - [`disaster_recovery_drill`]: restore the newest backup somewhere harmless and measure
//!   how long it took (RTO) and how old the data was (RPO), through a [`DrillRunner`].
//!   [`LogicalDrill`] drills the logical backups (tej-backup's verify with a restore test
//!   into a scratch database and the sanity queries); a PITR/physical drill plugs in through
//!   the same trait.

use crate::adapters::{ComposeService, LazyContainerRuntime, RedisSessions, RotateSecretsStep};
use crate::error::{Result, RunbookError};
use crate::procedures::context::RunContext;
use async_trait::async_trait;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tej_core::{
    AuditLog, Clock, CommandRunner, Finding, Guard, Procedure, Report, Severity, Step, Threshold,
};
use tej_db::redis::RedisAdmin;
use tej_deploy::Project;
use tej_secrets::RotationMode;

/// The rotation step for `ctx`'s `[secrets]`, `[compose]` backend and first Redis instance,
/// in `mode`; the error says which configuration is missing.
pub fn rotation_from_context(
    ctx: &RunContext,
    sessions: Option<Arc<dyn RedisAdmin>>,
    guard: &Guard,
    audit: Option<AuditLog>,
    mode: RotationMode,
) -> std::result::Result<Box<dyn Step>, String> {
    let sc = ctx
        .config
        .secrets
        .as_ref()
        .ok_or("no [secrets] in tej.toml: the secrets cannot be rotated")?;
    let compose = ctx
        .config
        .compose
        .as_ref()
        .ok_or("rotation recreates the backend: set [compose] project in tej.toml")?;
    let sessions = sessions.ok_or("rotation drops sessions: add [[redis]] to tej.toml")?;
    let base = sc
        .app_url
        .clone()
        .ok_or("set [secrets] app_url for the post-rotation checks")?;
    let email = sc
        .test_email
        .clone()
        .ok_or("set [secrets] test_email for the post-rotation login")?;
    let password = sc
        .test_password
        .as_ref()
        .ok_or("set [secrets] test_password for the post-rotation login")?
        .resolve()
        .map_err(|e| format!("read [secrets] test_password: {e}"))?;
    let probe = tej_secrets::HttpAppProbe::new(tej_secrets::HttpProbeConfig::for_base_url(
        &base, email, password,
    ))
    .map_err(|e| e.to_string())?;
    let service = ComposeService::new(
        Arc::new(LazyContainerRuntime::new(compose.docker_host.clone())),
        Project::new(compose.project.clone()),
    );
    let mut rotator =
        tej_secrets::Rotator::new(RedisSessions(sessions), service, probe, guard.clone());
    rotator.audit = audit;
    let mut opts = tej_secrets::RotateOptions::new(sc.env_file.clone());
    opts.keys = sc.rotate.clone();
    opts.mode = mode;
    opts.service = compose.backend_service.clone();
    if let Some(r) = ctx.config.redis.first() {
        opts.sessions = tej_secrets::SessionInvalidation::Pattern(r.session_pattern.clone());
    }
    Ok(Box::new(RotateSecretsStep::new(rotator, opts)))
}

/// The quarterly secret rotation (standard mode: new values, sessions matching the first
/// Redis instance's pattern dropped, backend recreated, verified, rolled back on failure).
pub async fn secret_rotation_from_context(
    ctx: &RunContext,
    guard: &Guard,
    audit: Option<AuditLog>,
) -> Result<Procedure> {
    let sessions = match ctx.redis.first() {
        Some(r) => Some(r.client.get().await.map_err(|e| RunbookError::Procedure {
            entry: "secret-rotation".into(),
            message: format!("connect to redis {:?}: {e}", r.name),
        })?),
        None => None,
    };
    let step = rotation_from_context(ctx, sessions, guard, audit, RotationMode::Standard).map_err(
        |message| RunbookError::Procedure {
            entry: "secret-rotation".into(),
            message,
        },
    )?;
    let mut p = Procedure::new("secret-rotation");
    p.push(step, tej_core::OnFailure::Stop);
    Ok(p)
}

/// What a drill is asked to check after restoring.
#[derive(Debug, Clone, Default)]
pub struct DrillRequest {
    /// Queries that must succeed on the restored copy (`SELECT count(*) FROM users`).
    pub sanity_queries: Vec<String>,
}

/// What a disaster-recovery drill measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillSummary {
    /// `logical`, `pitr`...
    pub kind: String,
    /// Where the backup came from.
    pub repository: String,
    /// The backup restored.
    pub backup_id: String,
    /// The scratch database (or instance) restored into.
    pub restored_into: String,
    /// Recovery time: seconds the restore took.
    pub rto_secs: f64,
    /// Recovery point: age of the restored data, in seconds, when the drill started.
    pub rpo_secs: f64,
    /// Sanity queries and their output.
    pub queries: Vec<(String, String)>,
}

/// Restores a backup somewhere harmless and measures it (the lead plugs the PITR drill in
/// here; [`LogicalDrill`] drills logical backups).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait DrillRunner: Send + Sync {
    /// Runs one drill.
    async fn run_drill(&self, request: &DrillRequest) -> Result<DrillSummary>;
}

/// A drill of the newest logical backup: tej-backup's verify with a restore test (a scratch
/// database beside `server`, dropped afterwards), the outcome recorded beside the backup.
pub struct LogicalDrill {
    /// Starts pg_restore and psql.
    pub runner: Arc<dyn CommandRunner>,
    /// The repository.
    pub repo: Arc<tej_backup::Repository>,
    /// A connection to the server restored onto (a scratch database is created there).
    pub server: tej_backup::DbTarget,
    /// Keys for encrypted backups.
    pub encryption: tej_backup::EncryptionOptions,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for LogicalDrill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogicalDrill")
            .field("repo", &self.repo.name())
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl DrillRunner for LogicalDrill {
    async fn run_drill(&self, request: &DrillRequest) -> Result<DrillSummary> {
        let fail = |e: tej_backup::BackupError| RunbookError::Procedure {
            entry: "disaster-recovery-drill".into(),
            message: e.to_string(),
        };
        let started = self.clock.now();
        let m = self.repo.resolve("latest").await.map_err(fail)?;
        let opts = tej_backup::VerifyOptions {
            encryption: self.encryption.clone(),
            record: true,
            restore_test: Some(tej_backup::RestoreTestOptions {
                server: self.server.clone(),
                queries: request.sanity_queries.clone(),
                jobs: 1,
            }),
            progress: None,
        };
        let id = m.id.to_string();
        let r = tej_backup::verify_backup(
            self.runner.as_ref(),
            &self.repo,
            &id,
            &opts,
            self.clock.as_ref(),
        )
        .await
        .map_err(fail)?;
        let t = r.restore_test.ok_or_else(|| RunbookError::Procedure {
            entry: "disaster-recovery-drill".into(),
            message: "verify ran no restore test".into(),
        })?;
        Ok(DrillSummary {
            kind: "logical".into(),
            repository: self.repo.name(),
            backup_id: id,
            restored_into: t.database,
            rto_secs: t.restore_secs,
            rpo_secs: started.duration_since(m.finished_at).as_secs_f64().max(0.0),
            queries: t.queries.into_iter().map(|q| (q.query, q.output)).collect(),
        })
    }
}

/// The drill's targets: RTO and RPO thresholds, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrillTargets {
    /// Restore duration (default: warning at 1 h, critical at 4 h).
    pub rto: Threshold,
    /// Age of the newest backup (default: warning at 26 h, critical at 48 h: daily backups).
    pub rpo: Threshold,
}

impl Default for DrillTargets {
    fn default() -> Self {
        DrillTargets {
            rto: Threshold::above(3600.0, 4.0 * 3600.0),
            rpo: Threshold::above(26.0 * 3600.0, 48.0 * 3600.0),
        }
    }
}

/// The quarterly disaster-recovery drill: runs `drill`, reports RTO and RPO against `targets`;
/// a drill that fails is a critical finding. Returns the summary too when it ran.
pub async fn disaster_recovery_drill(
    drill: &dyn DrillRunner,
    request: &DrillRequest,
    targets: &DrillTargets,
    timeout: Duration,
) -> (Report, Option<DrillSummary>) {
    let mut report = Report::new("disaster-recovery-drill");
    let s = match tokio::time::timeout(timeout, drill.run_drill(request)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            report.push(Finding::new(
                "dr.drill",
                Severity::Critical,
                format!("the recovery drill failed: {e}"),
            ));
            return (report, None);
        }
        Err(_) => {
            report.push(Finding::new(
                "dr.drill",
                Severity::Critical,
                format!("the recovery drill did not finish within {timeout:?}"),
            ));
            return (report, None);
        }
    };
    let target = format!("{}:{}", s.repository, s.backup_id);
    report.push(
        Finding::ok(
            "dr.drill",
            format!(
                "{} backup {} restored into {}; {} sanity queries passed",
                s.kind,
                s.backup_id,
                s.restored_into,
                s.queries.len()
            ),
        )
        .target(target.clone()),
    );
    report.push(
        Finding::measured(
            "dr.rto",
            "recovery_time_seconds",
            s.rto_secs,
            "s",
            targets.rto,
            format!("restore took {:.1} s (RTO)", s.rto_secs),
        )
        .target(target.clone()),
    );
    report.push(
        Finding::measured(
            "dr.rpo",
            "recovery_point_age_seconds",
            s.rpo_secs,
            "s",
            targets.rpo,
            format!("restored data was {:.1} h old (RPO)", s.rpo_secs / 3600.0),
        )
        .target(target),
    );
    (report, Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(rto: f64, rpo_h: f64) -> DrillSummary {
        DrillSummary {
            kind: "logical".into(),
            repository: "/backups".into(),
            backup_id: "20250116T020000Z".into(),
            restored_into: "tej_restore_test_x".into(),
            rto_secs: rto,
            rpo_secs: rpo_h * 3600.0,
            queries: vec![("SELECT 1".into(), "1".into())],
        }
    }

    #[tokio::test]
    async fn drill_reports_rto_and_rpo_against_targets() {
        let mut d = MockDrillRunner::new();
        d.expect_run_drill()
            .withf(|r| r.sanity_queries == ["SELECT count(*) FROM users"])
            .returning(|_| Ok(summary(12.0, 30.0)));
        let req = DrillRequest {
            sanity_queries: vec!["SELECT count(*) FROM users".into()],
        };
        let (r, s) =
            disaster_recovery_drill(&d, &req, &DrillTargets::default(), Duration::from_secs(60))
                .await;
        assert_eq!(s.unwrap().rto_secs, 12.0);
        let sev = |c: &str| r.findings.iter().find(|f| f.check == c).unwrap().severity;
        assert_eq!(sev("dr.drill"), Severity::Ok);
        assert_eq!(sev("dr.rto"), Severity::Ok);
        assert_eq!(
            sev("dr.rpo"),
            Severity::Warning,
            "30 h old data misses a daily RPO"
        );
    }

    #[tokio::test]
    async fn a_failed_drill_is_critical() {
        let mut d = MockDrillRunner::new();
        d.expect_run_drill().returning(|_| {
            Err(RunbookError::Procedure {
                entry: "disaster-recovery-drill".into(),
                message: "no backups".into(),
            })
        });
        let (r, s) = disaster_recovery_drill(
            &d,
            &DrillRequest::default(),
            &DrillTargets::default(),
            Duration::from_secs(60),
        )
        .await;
        assert!(s.is_none());
        assert_eq!(r.severity(), Severity::Critical);
        assert!(r.findings[0].summary.contains("no backups"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_drill_times_out() {
        struct Hang;
        #[async_trait]
        impl DrillRunner for Hang {
            async fn run_drill(&self, _: &DrillRequest) -> Result<DrillSummary> {
                std::future::pending().await
            }
        }
        let (r, _) = disaster_recovery_drill(
            &Hang,
            &DrillRequest::default(),
            &DrillTargets::default(),
            Duration::from_secs(5),
        )
        .await;
        assert!(r.findings[0].summary.contains("did not finish"));
    }

    #[tokio::test]
    async fn rotation_needs_its_configuration() {
        let ctx = RunContext::empty(tej_core::Config::default());
        let g = Guard {
            environment: tej_core::Environment::Development,
            calendar: tej_core::Calendar::runbook(),
            clock: Arc::new(tej_core::SystemClock),
            confirmer: Arc::new(tej_core::Fixed(false)),
            override_window: false,
        };
        let e = rotation_from_context(&ctx, None, &g, None, RotationMode::Standard)
            .err()
            .unwrap();
        assert!(e.contains("[secrets]"), "{e}");
        assert!(secret_rotation_from_context(&ctx, &g, None).await.is_err());
    }
}

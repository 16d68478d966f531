//! The quarterly procedures:
//!
//! - [`secret_rotation_from_context`]: tej-secrets' staged rotation ([`RotateSecretsStep`])
//!   over Redis sessions and the Compose backend, as a procedure.
//! - [`disaster_recovery_drill`]: restore the newest backup somewhere harmless and measure
//!   how long it took (RTO) and how old the data was (RPO), through a [`DrillRunner`].
//!   [`LogicalDrill`] drills the logical backups (tej-backup's verify with a restore test
//!   into a scratch database and the sanity queries); [`PitrDrill`] drills point-in-time
//!   recovery (the newest physical base backup plus every archived WAL file replayed into a
//!   scratch cluster, tej-backup's [`tej_backup::run_drill`]).

use crate::adapters::{LazyContainerRuntime, RotateSecretsStep};
use crate::error::{Result, RunbookError};
use crate::procedures::context::RunContext;
use async_trait::async_trait;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tej_core::{
    AuditLog, Clock, CommandRunner, Finding, Guard, Procedure, Report, Severity, Step, Threshold,
};
use tej_db::redis::RedisAdmin;
use tej_secrets::{RotationMode, SecretsError};

/// The rotation step for `ctx`'s `[secrets]`, `[compose]` backend and first Redis instance,
/// in `mode`; the error ([`RunbookError::Secrets`]) says which configuration is missing.
pub fn rotation_from_context(
    ctx: &RunContext,
    sessions: Option<Arc<dyn RedisAdmin>>,
    guard: &Guard,
    audit: Option<AuditLog>,
    mode: RotationMode,
) -> Result<Box<dyn Step>> {
    let Some(sessions) = sessions else {
        // The configuration's own error first (no [secrets], [compose] or [[redis]]).
        tej_secrets::RotateOptions::from_config(&ctx.config, mode)?;
        return Err(SecretsError::NotConfigured(
            "rotation drops sessions: add [[redis]] to tej.toml".into(),
        )
        .into());
    };
    let docker = ctx
        .config
        .compose
        .as_ref()
        .and_then(|c| c.docker_host.clone());
    let (rotator, opts) = crate::rotation::rotation_from_config(
        &ctx.config,
        mode,
        sessions,
        Arc::new(LazyContainerRuntime::new(docker)),
        guard,
        audit,
    )?;
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
        |e| RunbookError::Procedure {
            entry: "secret-rotation".into(),
            message: e.to_string(),
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

/// A drill of the newest logical backup (physical ones are left to [`PitrDrill`]): tej-backup's
/// verify with a restore test (a scratch database beside `server`, dropped afterwards), the
/// outcome recorded beside the backup.
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
        // The newest logical backup: physical base backups in the same repository are
        // drilled by [`PitrDrill`].
        let inv = self.repo.inventory().await.map_err(fail)?;
        let newest = inv
            .backups
            .iter()
            .find(|b| b.kind == tej_backup::BackupKind::Logical)
            .ok_or_else(|| RunbookError::Procedure {
                entry: "disaster-recovery-drill".into(),
                message: format!("no logical backup in {}", self.repo.name()),
            })?;
        let m = self
            .repo
            .resolve(&newest.id.to_string())
            .await
            .map_err(fail)?;
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

/// Why the server's OS user `run_as` could not run the `tej` commands written into it — the
/// `tej_program` of `restore_command`/`archive_command` and the `config` file passed along —
/// or `None` when it can. When tej runs as root the server runs as `run_as`, else as tej's own
/// user. A tej built inside a checkout in root's 0700 home is the usual case.
pub fn server_cannot_run_tej(
    tej_program: &Path,
    run_as: &str,
    config: Option<&Path>,
) -> Option<String> {
    use tej_core::fsutil::{Access, unreachable_for_run_as};
    if let Some(why) = unreachable_for_run_as(tej_program, run_as, Access::Execute) {
        return Some(format!(
            "the server's OS user {run_as} could not run {} in restore_command: {why}; \
             install tej where {run_as} can run it (e.g. /usr/local/bin/tej)",
            tej_program.display()
        ));
    }
    let c = config?;
    let c = tej_core::fsutil::absolute_for_others(c);
    unreachable_for_run_as(&c, run_as, Access::Read).map(|why| {
        format!(
            "the server's OS user {run_as} could not read {} passed to tej wal fetch: {why}; \
             keep tej.toml where {run_as} can read it (e.g. /etc/tej/tej.toml)",
            c.display()
        )
    })
}

/// The `restore_command` with which a drill's scratch cluster fetches archived WAL through
/// tej: `'TEJ' [--config 'CONFIG'] wal fetch --repo 'REPOSITORY' %f %p`, each value quoted
/// for the shell PostgreSQL runs it with and its `%` doubled (PostgreSQL expands `%f`/`%p`).
pub fn wal_fetch_restore_command(
    tej_program: &Path,
    repository: &str,
    config: Option<&Path>,
) -> String {
    tej_wal_command(tej_program, config, repository, "fetch %f %p")
}

/// A `tej wal` command line for PostgreSQL to run (`restore_command`, `archive_command`):
/// `'TEJ' [--config 'CONFIG'] wal VERB --repo 'REPOSITORY' PLACEHOLDERS`, where
/// `verb_and_placeholders` is e.g. `fetch %f %p` or `push %p` (kept as given); every value
/// is quoted for the shell and its `%` doubled.
pub fn tej_wal_command(
    tej_program: &Path,
    config: Option<&Path>,
    repository: &str,
    verb_and_placeholders: &str,
) -> String {
    // A NUL byte cannot reach here from a path or a validated repository; it would be
    // written as `\0` (tej_core::shell::display_word).
    let q = |v: &str| tej_core::shell::display_word(&v.replace('%', "%%"));
    let (verb, rest) = verb_and_placeholders
        .split_once(' ')
        .unwrap_or((verb_and_placeholders, ""));
    let mut cmd = q(&tej_program.to_string_lossy());
    if let Some(c) = config {
        cmd.push_str(" --config ");
        cmd.push_str(&q(&c.to_string_lossy()));
    }
    cmd.push_str(" wal ");
    cmd.push_str(verb);
    cmd.push_str(" --repo ");
    cmd.push_str(&q(repository));
    if !rest.is_empty() {
        cmd.push(' ');
        cmd.push_str(rest);
    }
    cmd
}

/// A drill of point-in-time recovery: tej-backup's physical drill ([`tej_backup::run_drill`])
/// restores the newest base backup of [`source`](Self::source) and replays every archived
/// WAL file (fetched by [`options`](Self::options)' `restore_command`, normally
/// [`wal_fetch_restore_command`]) into a scratch cluster on a free 127.0.0.1 port, runs the
/// request's sanity queries there and removes it.
///
/// RTO is the time from the start of the restore to a promoted server; RPO is the age of the
/// newest replayed transaction when the drill ends (without any transaction after the base
/// backup, the age of the base backup). A recovery that does not promote or a sanity query
/// that fails is an error, which [`disaster_recovery_drill`] reports as critical.
pub struct PitrDrill {
    /// The base backups and the WAL archive (`tej_backup::RepositorySource` over the repository).
    pub source: Arc<dyn tej_backup::BaseBackupSource>,
    /// The repository's name in reports.
    pub repository: String,
    /// Scratch directory, `restore_command`, database of the sanity queries, OS user, time
    /// limit; its `sanity_queries` are replaced by each request's.
    pub options: tej_backup::DrillOptions,
    /// Starts PostgreSQL's programs (`pg_ctl`, `psql`).
    pub runner: Arc<dyn CommandRunner>,
    /// Where "now" comes from (for RPO).
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PitrDrill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PitrDrill")
            .field("repository", &self.repository)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PitrDrill {
    /// A drill of `source` (named `repository` in reports) in `scratch_dir`, its WAL fetched
    /// by `restore_command`, with tej-backup's other drill defaults (as `postgres`, sanity
    /// queries in database `postgres`, one hour at most).
    pub fn new(
        source: Arc<dyn tej_backup::BaseBackupSource>,
        repository: impl Into<String>,
        scratch_dir: impl Into<PathBuf>,
        restore_command: impl Into<String>,
        runner: Arc<dyn CommandRunner>,
        clock: Arc<dyn Clock>,
    ) -> PitrDrill {
        PitrDrill {
            source,
            repository: repository.into(),
            options: tej_backup::DrillOptions::new(scratch_dir, restore_command),
            runner,
            clock,
        }
    }
}

#[async_trait]
impl DrillRunner for PitrDrill {
    async fn run_drill(&self, request: &DrillRequest) -> Result<DrillSummary> {
        let fail = |message: String| RunbookError::Procedure {
            entry: "disaster-recovery-drill".into(),
            message,
        };
        let mut opts = self.options.clone();
        opts.sanity_queries = request.sanity_queries.clone();
        let r = tej_backup::run_drill(
            &opts,
            self.source.as_ref(),
            self.runner.as_ref(),
            self.clock.as_ref(),
        )
        .await
        .map_err(|e| fail(format!("point-in-time recovery drill: {e}")))?;
        if let Some(q) = r.queries.iter().find(|q| q.error.is_some()) {
            return Err(fail(format!(
                "base backup {} recovered, but sanity query {:?} failed: {}",
                r.backup_id,
                q.query,
                q.error.as_deref().unwrap_or_default()
            )));
        }
        if !r.ok {
            return Err(fail(format!(
                "base backup {} restored, but recovery did not end in a promoted server",
                r.backup_id
            )));
        }
        let rpo_secs = match r.rpo_seconds {
            Some(s) => s,
            None => self
                .clock
                .now()
                .duration_since(r.backup_finished_at)
                .as_secs_f64(),
        }
        .max(0.0);
        let mut restored_into = format!("a scratch cluster on 127.0.0.1:{}", r.port);
        match (r.stopped_at_lsn, r.recovered_until) {
            (Some(lsn), Some(t)) => {
                restored_into.push_str(&format!(" (WAL replayed to {lsn}, last commit {t}"))
            }
            (Some(lsn), None) => restored_into.push_str(&format!(" (WAL replayed to {lsn}")),
            (None, _) => restored_into.push_str(" (no WAL replayed"),
        }
        if let Some(tl) = r.timeline_after {
            restored_into.push_str(&format!(", promoted on timeline {tl}"));
        }
        restored_into.push(')');
        if r.kept {
            restored_into.push_str(&format!(", kept in {}", r.scratch_dir.display()));
        }
        Ok(DrillSummary {
            kind: "pitr".into(),
            repository: self.repository.clone(),
            backup_id: r.backup_id,
            restored_into,
            rto_secs: r.restore_seconds,
            rpo_secs,
            queries: r
                .queries
                .into_iter()
                .map(|q| (q.query, q.output.unwrap_or_default()))
                .collect(),
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
    let mut done = Finding::ok(
        "dr.drill",
        format!(
            "{} backup {} restored into {}; {} sanity queries passed",
            s.kind,
            s.backup_id,
            s.restored_into,
            s.queries.len()
        ),
    )
    .target(target.clone());
    if !s.queries.is_empty() {
        done = done.detail(
            s.queries
                .iter()
                .map(|(q, out)| format!("{q}: {out}"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    report.push(done);
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
pub(crate) mod tests {
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
        assert_eq!(r.findings[0].detail.as_deref(), Some("SELECT 1: 1"));
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

    #[test]
    fn restore_command_quotes_for_the_shell_and_escapes_percent() {
        assert_eq!(
            wal_fetch_restore_command(Path::new("/usr/local/bin/tej"), "/srv/backups", None),
            "/usr/local/bin/tej wal fetch --repo /srv/backups %f %p"
        );
        assert_eq!(
            wal_fetch_restore_command(
                Path::new("/opt/my tools/tej"),
                "s3://b/db 100%",
                Some(Path::new("/etc/tej/it's.toml"))
            ),
            "'/opt/my tools/tej' --config \"/etc/tej/it's.toml\" wal fetch --repo 's3://b/db 100%%' %f %p"
        );
    }

    pub(crate) mod pitr {
        use super::*;
        use std::sync::Mutex;
        use tej_backup::MockBaseBackupSource;
        use tej_backup::{
            ArchiveHorizon, BackupId, BackupKind, CompressionAlgo, CompressionInfo, Lsn, Manifest,
            PhysicalInfo, WalFileName,
        };
        use tej_core::{CommandOutput, CommandSpec, FakeClock, MockCommandRunner};

        /// The manifest of a physical base backup finished at `finished`.
        pub(crate) fn base_backup(finished: &str) -> Manifest {
            let at: jiff::Timestamp = finished.parse().unwrap();
            Manifest {
                version: 1,
                id: BackupId::new(at, "main"),
                kind: BackupKind::Physical,
                database: None,
                format: None,
                pg_dump_version: None,
                server_version: None,
                paths: Vec::new(),
                started_at: at,
                finished_at: at,
                compression: CompressionInfo {
                    algorithm: CompressionAlgo::None,
                    level: 0,
                },
                encryption: None,
                raw_size: 0,
                stored_size: 0,
                objects: Vec::new(),
                physical: Some(PhysicalInfo {
                    system_identifier: 1,
                    timeline: 1,
                    start_lsn: Lsn(0x500_0000),
                    stop_lsn: Lsn(0x500_0100),
                    start_wal: String::new(),
                    stop_wal: String::new(),
                    wal_segment_size: tej_backup::DEFAULT_WAL_SEGMENT_SIZE,
                    pg_major: 15,
                    data_directory: "/var/lib/postgresql/15/main".into(),
                }),
                host: String::new(),
                tool: String::new(),
            }
        }

        fn source() -> MockBaseBackupSource {
            let mut s = MockBaseBackupSource::new();
            s.expect_archive_horizon().returning(|| {
                Ok(Some(ArchiveHorizon {
                    segment: WalFileName::parse(
                        "000000010000000000000009",
                        tej_backup::DEFAULT_WAL_SEGMENT_SIZE,
                    )
                    .unwrap(),
                    newest_push_time: "2025-01-16T10:00:00Z".parse().unwrap(),
                }))
            });
            s.expect_base_backups()
                .returning(|| Ok(vec![base_backup("2025-01-16T02:00:00Z")]));
            s.expect_restore_base().times(1).returning(|_, dir| {
                std::fs::write(dir.join("PG_VERSION"), "15\n").unwrap();
                Ok(())
            });
            s
        }

        fn out(code: i32, stdout: &str, stderr: &str) -> CommandOutput {
            CommandOutput::exited(code, stdout, stderr)
        }

        fn data_dir_of(spec: &CommandSpec) -> PathBuf {
            let i = spec.args.iter().position(|a| a == "-D").unwrap();
            PathBuf::from(&spec.args[i + 1])
        }

        /// A PostgreSQL that recovers up to 09:59 on timeline 2 and answers the sanity query
        /// with `answer` (stdout, or stderr with exit 1 when it starts with `ERROR`); the
        /// recovery settings it was started with land in `seen`.
        fn postgres(answer: &'static str, seen: Arc<Mutex<String>>) -> MockCommandRunner {
            let mut r = MockCommandRunner::new();
            r.expect_run()
                .withf(|s| {
                    s.display().contains("pg_ctl") && s.args.last().is_some_and(|a| a == "start")
                })
                .times(1)
                .returning(move |spec| {
                    let data = data_dir_of(&spec);
                    let conf = std::fs::read_to_string(data.join("postgresql.auto.conf"))
                        .unwrap_or_default();
                    *seen.lock().unwrap() = conf;
                    std::fs::write(
                        data.parent().unwrap().join("server.log"),
                        "LOG:  redo done at 0/9000060 system usage: CPU\n\
                         LOG:  last completed transaction was at log time 2025-01-16 09:59:00+00\n\
                         LOG:  selected new timeline ID: 2\n\
                         LOG:  database system is ready to accept connections\n",
                    )
                    .unwrap();
                    std::fs::write(
                        data.join("postmaster.pid"),
                        format!("{}\n", std::process::id()),
                    )
                    .unwrap();
                    Ok(out(0, "", ""))
                });
            r.expect_run()
                .withf(|s| s.display().contains("pg_last_wal_replay_lsn"))
                .times(1)
                .returning(|_| {
                    Ok(out(
                        0,
                        "f|0/9000060|1737021540|000000020000000000000009\n",
                        "",
                    ))
                });
            r.expect_run()
                .withf(|s| s.display().contains("count(*) FROM users"))
                .times(1)
                .returning(move |_| {
                    Ok(if answer.starts_with("ERROR") {
                        out(1, "", answer)
                    } else {
                        out(0, answer, "")
                    })
                });
            r.expect_run()
                .withf(|s| {
                    s.display().contains("pg_ctl") && s.args.last().is_some_and(|a| a == "stop")
                })
                .times(1)
                .returning(|spec| {
                    let _ = std::fs::remove_file(data_dir_of(&spec).join("postmaster.pid"));
                    Ok(out(0, "", ""))
                });
            r
        }

        fn drill(scratch: &Path, runner: MockCommandRunner) -> PitrDrill {
            let mut d = PitrDrill::new(
                Arc::new(source()),
                "/srv/backups",
                scratch,
                wal_fetch_restore_command(Path::new("/usr/local/bin/tej"), "/srv/backups", None),
                Arc::new(runner),
                Arc::new(FakeClock::new("2025-01-16T10:04:00Z".parse().unwrap())),
            );
            d.options.run_as = None;
            d
        }

        #[tokio::test]
        async fn pitr_drill_reports_rto_rpo_and_sanity_queries() {
            let scratch = tempfile::tempdir().unwrap();
            let seen = Arc::new(Mutex::new(String::new()));
            let d = drill(scratch.path(), postgres("1500\n", seen.clone()));
            let req = DrillRequest {
                sanity_queries: vec!["SELECT count(*) FROM users".into()],
            };
            let (report, s) = disaster_recovery_drill(
                &d,
                &req,
                &DrillTargets::default(),
                Duration::from_secs(60),
            )
            .await;
            let s = s.unwrap_or_else(|| panic!("{:#?}", report.findings));
            assert_eq!(s.kind, "pitr");
            assert_eq!(s.repository, "/srv/backups");
            assert_eq!(
                s.backup_id,
                BackupId::new("2025-01-16T02:00:00Z".parse().unwrap(), "main").to_string()
            );
            assert_eq!(s.rpo_secs, 300.0, "last commit 09:59, drill ended 10:04");
            assert!(s.rto_secs >= 0.0);
            assert_eq!(
                s.queries,
                vec![("SELECT count(*) FROM users".to_string(), "1500".to_string())]
            );
            assert!(
                s.restored_into.contains("WAL replayed to 0/9000060"),
                "{}",
                s.restored_into
            );
            assert!(
                s.restored_into.contains("timeline 2"),
                "{}",
                s.restored_into
            );
            // The scratch cluster fetched its WAL through `tej wal fetch`.
            let conf = seen.lock().unwrap().clone();
            assert!(
                conf.contains("/usr/local/bin/tej wal fetch --repo /srv/backups %f %p"),
                "{conf}"
            );
            let sev = |c: &str| {
                report
                    .findings
                    .iter()
                    .find(|f| f.check == c)
                    .unwrap()
                    .severity
            };
            assert_eq!(sev("dr.drill"), Severity::Ok);
            assert_eq!(sev("dr.rto"), Severity::Ok);
            assert_eq!(sev("dr.rpo"), Severity::Ok, "5 minutes of RPO");
            assert!(report.findings[0].summary.starts_with("pitr backup "));
            assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
        }

        #[tokio::test]
        async fn a_failing_sanity_query_fails_the_pitr_drill() {
            let scratch = tempfile::tempdir().unwrap();
            let seen = Arc::new(Mutex::new(String::new()));
            let d = drill(
                scratch.path(),
                postgres("ERROR:  relation \"users\" does not exist", seen),
            );
            let req = DrillRequest {
                sanity_queries: vec!["SELECT count(*) FROM users".into()],
            };
            let (report, s) = disaster_recovery_drill(
                &d,
                &req,
                &DrillTargets::default(),
                Duration::from_secs(60),
            )
            .await;
            assert!(s.is_none());
            assert_eq!(report.severity(), Severity::Critical);
            let f = &report.findings[0];
            assert!(
                f.summary.contains("sanity query") && f.summary.contains("does not exist"),
                "{}",
                f.summary
            );
        }

        #[tokio::test]
        async fn an_empty_repository_fails_the_pitr_drill() {
            let scratch = tempfile::tempdir().unwrap();
            let mut s = MockBaseBackupSource::new();
            s.expect_archive_horizon().returning(|| Ok(None));
            s.expect_base_backups().returning(|| Ok(Vec::new()));
            s.expect_restore_base().never();
            let mut d = PitrDrill::new(
                Arc::new(s),
                "/srv/backups",
                scratch.path(),
                "false",
                Arc::new(MockCommandRunner::new()),
                Arc::new(FakeClock::new("2025-01-16T10:04:00Z".parse().unwrap())),
            );
            d.options.run_as = None;
            let e = d.run_drill(&DrillRequest::default()).await.unwrap_err();
            assert!(
                e.to_string().contains("point-in-time recovery drill"),
                "{e}"
            );
        }
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
        assert!(
            matches!(e, RunbookError::Secrets(SecretsError::NotConfigured(_))),
            "{e:?}"
        );
        assert!(e.to_string().contains("[secrets]"), "{e}");
        assert!(secret_rotation_from_context(&ctx, &g, None).await.is_err());
    }
}

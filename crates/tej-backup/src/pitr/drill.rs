//! `tej drill`: the quarterly disaster-recovery drill as one command.

use super::config::RecoveryConfig;
use super::restore::{BaseBackupSource, PitrRestoreOptions, make_owned_dir, restore_pitr};
use super::server::{ServerOptions, running_postmaster, stop_server};
use super::target::RecoveryTarget;
use crate::error::BackupError;
use crate::lsn::Lsn;
use jiff::Timestamp;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tej_core::{Clock, CommandRunner};

/// Options of a drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// Where the scratch cluster is made (a fresh `tej-drill-*` directory inside it).
    /// Keep it short: the server's unix socket lives inside (paths are limited to 107 bytes).
    pub scratch_dir: PathBuf,
    /// The scratch server's port; `None` picks a free one on 127.0.0.1.
    pub port: Option<u16>,
    /// Sanity queries run on the recovered cluster (`SELECT count(*) FROM users`).
    pub sanity_queries: Vec<String>,
    /// The database the sanity queries run in.
    pub database: String,
    /// `restore_command` that fetches archived WAL (`tej wal fetch --repo R %f %p`).
    pub restore_command: String,
    /// The OS user running the scratch server (when tej runs as root).
    pub run_as: Option<String>,
    /// PostgreSQL's program directory; `None` searches the usual places.
    pub bin_dir: Option<PathBuf>,
    /// Keep the scratch cluster (stopped) for inspection instead of removing it.
    pub keep: bool,
    /// How long recovery may take.
    pub timeout: Duration,
    /// The WAL archive `restore_command` fetches from: with it, a gap in the chain from
    /// the base backup fails the drill before anything is restored (recovery would stop at
    /// the gap and promote early), and the archive's repository is held (shared lock) for
    /// the whole drill so no prune deletes what recovery still reads.
    pub wal_archive: Option<crate::wal::WalArchive>,
}

impl DrillOptions {
    /// A drill in `scratch_dir` with `restore_command`, as `postgres`, database `postgres`,
    /// no sanity query, one hour of timeout.
    pub fn new(
        scratch_dir: impl Into<PathBuf>,
        restore_command: impl Into<String>,
    ) -> DrillOptions {
        DrillOptions {
            scratch_dir: scratch_dir.into(),
            port: None,
            sanity_queries: Vec::new(),
            database: "postgres".into(),
            restore_command: restore_command.into(),
            run_as: Some("postgres".into()),
            bin_dir: None,
            keep: false,
            timeout: Duration::from_secs(3600),
            wal_archive: None,
        }
    }
}

/// One sanity query's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SanityResult {
    /// The query.
    pub query: String,
    /// Its output (psql unaligned, tuples only), when it succeeded.
    pub output: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// What a drill found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillReport {
    /// The base backup restored (the newest).
    pub backup_id: String,
    /// When it finished.
    pub backup_finished_at: Timestamp,
    /// The scratch server's port.
    pub port: u16,
    /// The scratch cluster's directory (removed unless kept).
    pub scratch_dir: PathBuf,
    /// Recovery time (RTO): seconds from the start of the restore to a promoted server.
    pub restore_seconds: f64,
    /// The newest recovered transaction's commit time (`None` when no transaction was
    /// replayed after the base backup).
    pub recovered_until: Option<Timestamp>,
    /// Recovery point (RPO): seconds between `recovered_until` and the end of the drill.
    pub rpo_seconds: Option<f64>,
    /// Where replay ended.
    pub stopped_at_lsn: Option<Lsn>,
    /// The scratch server's timeline after promotion.
    pub timeline_after: Option<u32>,
    /// Sanity query results, in order.
    pub queries: Vec<SanityResult>,
    /// Whether the scratch cluster was kept.
    pub kept: bool,
    /// Recovery promoted and every sanity query succeeded.
    pub ok: bool,
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn pick_free_port() -> Result<u16, BackupError> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| BackupError::io("bind 127.0.0.1:0 to find a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| BackupError::io("read the bound port", e))
}

/// Runs the disaster-recovery drill: restores the newest base backup from `source` plus
/// every archived WAL file into a scratch cluster (archiving off) on a free port,
/// waits for promotion, runs the sanity queries, and reports the recovery time (RTO)
/// and the age of the newest recovered transaction (RPO, against `clock`). The scratch
/// server is stopped and its directory removed afterwards, on failure too, unless
/// [`keep`](DrillOptions::keep).
///
/// With no [`port`](DrillOptions::port) given, a drill whose server could not bind the
/// picked port (taken meanwhile by another process) is run again on another one, up to
/// three times.
pub async fn run_drill(
    opts: &DrillOptions,
    source: &dyn BaseBackupSource,
    runner: &dyn CommandRunner,
    clock: &dyn Clock,
) -> Result<DrillReport, BackupError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match run_drill_once(opts, source, runner, clock).await {
            Err(BackupError::RecoveryFailed { log_excerpt, .. })
                if opts.port.is_none()
                    && attempt < 3
                    && (log_excerpt.contains("Address already in use")
                        || log_excerpt.contains("could not bind")) =>
            {
                tracing::warn!(attempt, "the drill's port was taken; trying another");
            }
            other => return other,
        }
    }
}

async fn run_drill_once(
    opts: &DrillOptions,
    source: &dyn BaseBackupSource,
    runner: &dyn CommandRunner,
    clock: &dyn Clock,
) -> Result<DrillReport, BackupError> {
    std::fs::create_dir_all(&opts.scratch_dir)
        .map_err(|e| BackupError::io(format!("create {}", opts.scratch_dir.display()), e))?;
    let scratch = tempfile::Builder::new()
        .prefix("tej-drill-")
        .tempdir_in(&opts.scratch_dir)
        .map_err(|e| {
            BackupError::io(
                format!(
                    "create a scratch directory in {}",
                    opts.scratch_dir.display()
                ),
                e,
            )
        })?;
    let base = scratch.path().to_path_buf();
    let port = match opts.port {
        Some(p) => p,
        None => pick_free_port()?,
    };
    let mut server = ServerOptions::new(base.join("server.log"));
    server.port = Some(port);
    server.socket_dir = Some(base.join("sock"));
    server.listen_addresses = Some("127.0.0.1".into());
    server.run_as = opts.run_as.clone();
    server.bin_dir = opts.bin_dir.clone();
    server.timeout = opts.timeout;
    let pgdata = base.join("data");

    let result = drill_inner(opts, source, runner, clock, &server, &base, port).await;

    if running_postmaster(&pgdata).is_some() {
        let stopped = stop_server(&pgdata, &server, runner, result.is_err()).await;
        if stopped.is_err() {
            let _ = stop_server(&pgdata, &server, runner, true).await;
        }
    }
    if opts.keep {
        let _ = scratch.keep();
    } else {
        scratch.close().map_err(|e| {
            BackupError::io(format!("remove the scratch cluster {}", base.display()), e)
        })?;
    }
    result.map(|mut r| {
        r.kept = opts.keep;
        r
    })
}

async fn drill_inner(
    opts: &DrillOptions,
    source: &dyn BaseBackupSource,
    runner: &dyn CommandRunner,
    clock: &dyn Clock,
    server: &ServerOptions,
    base: &std::path::Path,
    port: u16,
) -> Result<DrillReport, BackupError> {
    let owner = opts.run_as.as_deref();
    make_owned_dir(base, owner)?;
    if let Some(sock) = &server.socket_dir {
        make_owned_dir(sock, owner)?;
    }
    let started = Instant::now();
    let mut restore = PitrRestoreOptions::new(
        base.join("data"),
        RecoveryConfig::new(opts.restore_command.clone(), RecoveryTarget::Latest),
    );
    restore.owner = opts.run_as.clone();
    restore.start = Some(server.clone());
    restore.wal_archive = opts.wal_archive.clone();
    let r = restore_pitr(source, runner, &restore).await?;
    let restore_seconds = started.elapsed().as_secs_f64();
    let rec = r.recovery.as_ref();
    let recovered_until = rec.and_then(|x| x.stopped_at_time);
    let promoted = rec.is_some_and(|x| x.promoted);

    let mut queries = Vec::new();
    for q in &opts.sanity_queries {
        let out = runner.run(server.psql(&opts.database, q)).await;
        queries.push(match out {
            Ok(o) if o.status.success() => SanityResult {
                query: q.clone(),
                output: Some(o.stdout_text().trim().to_string()),
                error: None,
            },
            Ok(o) => SanityResult {
                query: q.clone(),
                output: None,
                error: Some(format!("{}: {}", o.status, o.stderr.trim())),
            },
            Err(e) => SanityResult {
                query: q.clone(),
                output: None,
                error: Some(e.to_string()),
            },
        });
    }
    let now = clock.now();
    let ok = promoted && queries.iter().all(|q| q.error.is_none());
    Ok(DrillReport {
        backup_id: r.backup_id,
        backup_finished_at: r.backup_finished_at,
        port,
        scratch_dir: base.to_path_buf(),
        restore_seconds,
        recovered_until,
        rpo_seconds: recovered_until.map(|t| now.duration_since(t).as_secs_f64()),
        stopped_at_lsn: rec.and_then(|x| x.stopped_at_lsn),
        timeline_after: rec.and_then(|x| x.timeline_after),
        queries,
        kept: false,
        ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::BackupKind;
    use crate::pitr::choose::tests::manifest;
    use crate::pitr::restore::MockBaseBackupSource;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tej_core::{CommandOutput, CommandSpec, FakeClock, MockCommandRunner};

    fn out(code: i32, stdout: &str, stderr: &str) -> CommandOutput {
        CommandOutput::exited(code, stdout, stderr)
    }

    fn data_dir_of(spec: &CommandSpec) -> PathBuf {
        let i = spec.args.iter().position(|a| a == "-D").unwrap();
        PathBuf::from(&spec.args[i + 1])
    }

    #[tokio::test]
    async fn a_taken_port_is_retried_and_every_scratch_cluster_removed() {
        let scratch = tempfile::tempdir().unwrap();
        let mut source = MockBaseBackupSource::new();
        source.expect_archive_horizon().returning(|| {
            Ok(Some(crate::pitr::ArchiveHorizon {
                segment: crate::lsn::WalFileName::parse(
                    "000000010000000000000009",
                    crate::lsn::DEFAULT_WAL_SEGMENT_SIZE,
                )
                .unwrap(),
                newest_push_time: "2025-01-16T10:00:00Z".parse().unwrap(),
            }))
        });
        source.expect_base_backups().returning(|| {
            Ok(vec![manifest(
                BackupKind::Physical,
                "2025-01-16T02:00:00Z",
                0x500_0100,
            )])
        });
        source.expect_restore_base().times(2).returning(|_, dir| {
            std::fs::write(dir.join("PG_VERSION"), "15\n").unwrap();
            Ok(())
        });
        let starts = Arc::new(AtomicUsize::new(0));
        let mut runner = MockCommandRunner::new();
        let n = starts.clone();
        runner
            .expect_run()
            .withf(|s| {
                s.display().contains("pg_ctl") && s.args.last().is_some_and(|a| a == "start")
            })
            .times(2)
            .returning(move |spec| {
                let data = data_dir_of(&spec);
                let log = data.parent().unwrap().join("server.log");
                if n.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::fs::write(
                        &log,
                        "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use\n\
                         FATAL:  could not create any TCP/IP sockets\n\
                         LOG:  database system is shut down\n",
                    )
                    .unwrap();
                } else {
                    std::fs::write(
                        &log,
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
                }
                Ok(out(0, "", ""))
            });
        runner
            .expect_run()
            .withf(|s| s.display().contains("pg_last_wal_replay_lsn"))
            .times(1)
            .returning(|_| {
                Ok(out(
                    0,
                    "f|0/9000060|1737021540|000000020000000000000009\n",
                    "",
                ))
            });
        runner
            .expect_run()
            .withf(|s| s.display().contains("count(*) FROM users"))
            .times(1)
            .returning(|_| Ok(out(0, "1500\n", "")));
        runner
            .expect_run()
            .withf(|s| s.display().contains("pg_ctl") && s.args.last().is_some_and(|a| a == "stop"))
            .times(1)
            .returning(|spec| {
                assert!(
                    spec.args.iter().any(|a| a == "fast"),
                    "a good drill stops cleanly"
                );
                std::fs::remove_file(data_dir_of(&spec).join("postmaster.pid")).unwrap();
                Ok(out(0, "", ""))
            });
        let mut opts = DrillOptions::new(scratch.path(), "cp /archive/%f %p");
        opts.run_as = None;
        opts.sanity_queries = vec!["SELECT count(*) FROM users".into()];
        let clock = FakeClock::new("2025-01-16T10:04:00Z".parse().unwrap());
        let r = run_drill(&opts, &source, &runner, &clock).await.unwrap();
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert!(r.ok && !r.kept, "{r:?}");
        assert_eq!(r.queries[0].output.as_deref(), Some("1500"));
        assert_eq!(
            r.recovered_until,
            Some("2025-01-16T09:59:00Z".parse().unwrap())
        );
        assert_eq!(r.rpo_seconds, Some(300.0));
        assert_eq!(r.timeline_after, Some(2));
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
    }
}

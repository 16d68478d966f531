//! Helpers shared by the point-in-time recovery integration tests: a source cluster that
//! archives with `cp %p ARCHIVE/%f`, base backups made with `pg_basebackup -X none`, and a
//! [`BaseBackupSource`] over those directories (the physical-backup and WAL-archive
//! modules are composed with the PITR module elsewhere).
#![allow(dead_code)]

use anyhow::{Context, Result, bail, ensure};
use async_trait::async_trait;
use jiff::Timestamp;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tej_backup::ServerOptions;
use tej_backup::{
    ArchiveHorizon, BackupError, BackupId, BackupKind, BaseBackupSource, CompressionAlgo,
    CompressionInfo, Manifest, PhysicalInfo,
};
use tej_backup::{DEFAULT_WAL_SEGMENT_SIZE, Lsn, WalFileName};
use tej_core::{CommandRunner, TokioCommandRunner};
use tej_testkit::{PgCluster, PgClusterOptions, run_as_postgres};

/// A directory under /tmp owned by `postgres` (when root), removed on drop.
pub fn postgres_dir(prefix: &str) -> Result<tempfile::TempDir> {
    let d = tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp")?;
    chown_postgres(d.path())?;
    Ok(d)
}

/// Gives `path` to the `postgres` OS user (when root), mode 0700.
pub fn chown_postgres(path: &Path) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    if nix::unistd::geteuid().is_root() {
        let u = nix::unistd::User::from_name("postgres")?.context("postgres OS user")?;
        nix::unistd::chown(path, Some(u.uid), Some(u.gid))?;
    }
    Ok(())
}

/// A source cluster archiving into its own archive directory, with autovacuum off so
/// that no commit happens unless a test makes it.
pub struct Source {
    pub pg: PgCluster,
    pub archive: tempfile::TempDir,
    pub backups: std::sync::Mutex<Vec<(Manifest, PathBuf)>>,
}

impl Source {
    pub fn start() -> Result<Source> {
        let archive = postgres_dir("tejarch-")?;
        let pg = PgCluster::start_with(PgClusterOptions {
            archive_mode: true,
            archive_command: Some(format!("cp %p {}/%f", archive.path().display())),
            extra_conf: vec!["autovacuum = off".into()],
            preload_pg_stat_statements: false,
            ..Default::default()
        })?;
        Ok(Source {
            pg,
            archive,
            backups: std::sync::Mutex::new(Vec::new()),
        })
    }

    pub fn sql(&self, sql: &str) -> Result<String> {
        self.pg.psql("postgres", sql)
    }

    pub fn restore_command(&self) -> String {
        format!("cp {}/%f %p", self.archive.path().display())
    }

    /// A [`BaseBackupSource`] over this archive and every base backup taken so far.
    pub fn fs_source(&self) -> FsSource {
        FsSource {
            archive: self.archive.path().to_path_buf(),
            backups: self.backups.lock().unwrap().clone(),
        }
    }

    /// `pg_basebackup -X none -c fast` of this cluster, recorded as a physical manifest.
    pub fn base_backup(&self, name: &str) -> Result<Manifest> {
        let m = base_backup_of(
            self.pg.port(),
            &self.pg.base_dir().join(format!("base-{name}")),
            name,
        )?;
        self.backups
            .lock()
            .unwrap()
            .push((m.clone(), self.pg.base_dir().join(format!("base-{name}"))));
        Ok(m)
    }
}

/// Current time on the server (UTC, microseconds), RFC 3339.
pub const NOW_SQL: &str =
    "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

pub fn ts(s: &str) -> Result<Timestamp> {
    s.trim()
        .parse()
        .with_context(|| format!("parse time {s:?}"))
}

/// `pg_basebackup -D dir -X none -c fast` (as postgres) of the server on `port`; the
/// manifest's LSNs come from the backup's `backup_manifest`.
pub fn base_backup_of(port: u16, dir: &Path, name: &str) -> Result<Manifest> {
    let started = Timestamp::now();
    let mut cmd = Command::new(PgCluster::bin_dir().join("pg_basebackup"));
    cmd.arg("-D")
        .arg(dir)
        .args([
            "-X",
            "none",
            "-c",
            "fast",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .arg("-p")
        .arg(port.to_string());
    run_as_postgres(&mut cmd);
    let out = cmd.output().context("run pg_basebackup")?;
    ensure!(
        out.status.success(),
        "pg_basebackup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let finished = Timestamp::now();
    let bm: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("backup_manifest"))?)?;
    let range = &bm["WAL-Ranges"][0];
    let lsn = |k: &str| -> Result<Lsn> {
        range[k]
            .as_str()
            .context("WAL range LSN")?
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let (start, stop) = (lsn("Start-LSN")?, lsn("End-LSN")?);
    let timeline = range["Timeline"].as_u64().context("timeline")? as u32;
    let seg = |l: Lsn| {
        l.segment_name(timeline, DEFAULT_WAL_SEGMENT_SIZE)
            .to_string()
    };
    Ok(Manifest {
        version: 1,
        id: BackupId::new(started, name),
        kind: BackupKind::Physical,
        database: None,
        format: None,
        pg_dump_version: None,
        server_version: Some("15".into()),
        paths: Vec::new(),
        started_at: started,
        finished_at: finished,
        compression: CompressionInfo {
            algorithm: CompressionAlgo::None,
            level: 0,
        },
        encryption: None,
        raw_size: 0,
        stored_size: 0,
        objects: Vec::new(),
        physical: Some(PhysicalInfo {
            system_identifier: 0,
            timeline,
            start_lsn: start,
            stop_lsn: stop,
            start_wal: seg(start),
            stop_wal: seg(stop),
            wal_segment_size: DEFAULT_WAL_SEGMENT_SIZE,
            pg_major: 15,
            data_directory: dir.display().to_string(),
        }),
        host: String::new(),
        tool: "pg_basebackup".into(),
    })
}

/// Switches to a new WAL segment on the server `psql` talks to and waits until the
/// switched segment is archived (RECIPES trap 1).
pub fn switch_and_wait(psql: impl Fn(&str) -> Result<String>) -> Result<String> {
    let seg = psql("SELECT pg_walfile_name(pg_switch_wal())")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")?;
        if last.len() == 24 && last[8..] >= seg[8..] && last[..8] >= seg[..8] {
            return Ok(seg);
        }
        if Instant::now() > deadline {
            bail!("segment {seg} not archived within 60 s (last archived {last:?})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Base backups in directories and an archive directory of WAL files.
#[derive(Debug, Clone)]
pub struct FsSource {
    pub archive: PathBuf,
    pub backups: Vec<(Manifest, PathBuf)>,
}

impl FsSource {
    pub fn only(&self, ids: &[&BackupId]) -> FsSource {
        FsSource {
            archive: self.archive.clone(),
            backups: self
                .backups
                .iter()
                .filter(|(m, _)| ids.contains(&&m.id))
                .cloned()
                .collect(),
        }
    }
}

#[async_trait]
impl BaseBackupSource for FsSource {
    async fn base_backups(&self) -> Result<Vec<Manifest>, BackupError> {
        Ok(self.backups.iter().map(|(m, _)| m.clone()).collect())
    }

    async fn archive_horizon(&self) -> Result<Option<ArchiveHorizon>, BackupError> {
        let rd = std::fs::read_dir(&self.archive)
            .map_err(|e| BackupError::InvalidOptions(format!("read archive: {e}")))?;
        let mut best: Option<ArchiveHorizon> = None;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(w @ WalFileName::Segment { .. }) =
                WalFileName::parse(&name, DEFAULT_WAL_SEGMENT_SIZE)
            else {
                continue;
            };
            let meta = e
                .metadata()
                .map_err(|e| BackupError::InvalidOptions(e.to_string()))?;
            let pushed = Timestamp::new(meta.mtime(), meta.mtime_nsec() as i32)
                .map_err(|e| BackupError::InvalidOptions(e.to_string()))?;
            let key = |w: &WalFileName| (w.segment(), w.timeline());
            if best.is_none_or(|b| key(&w) > key(&b.segment)) {
                best = Some(ArchiveHorizon {
                    segment: w,
                    newest_push_time: pushed,
                });
            }
        }
        Ok(best)
    }

    async fn restore_base(&self, backup: &Manifest, target_dir: &Path) -> Result<(), BackupError> {
        let (_, dir) = self
            .backups
            .iter()
            .find(|(m, _)| m.id == backup.id)
            .ok_or_else(|| BackupError::NotFound {
                repo: "test".into(),
                id: backup.id.to_string(),
            })?;
        let mut cmd = Command::new("cp");
        cmd.arg("-a").arg(dir.join(".")).arg(target_dir);
        run_as_postgres(&mut cmd);
        let out = cmd
            .output()
            .map_err(|e| BackupError::InvalidOptions(format!("cp: {e}")))?;
        if !out.status.success() {
            return Err(BackupError::InvalidOptions(format!(
                "cp: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }
}

/// Server options for a restored copy living in `dir` (owned by postgres): a free port
/// on 127.0.0.1, its socket in `dir/s`, its log in `dir/server.log`.
pub fn server_in(dir: &Path) -> Result<ServerOptions> {
    let sock = dir.join("s");
    std::fs::create_dir_all(&sock)?;
    chown_postgres(&sock)?;
    let mut s = ServerOptions::new(dir.join("server.log"));
    s.port = Some(tej_testkit::free_port());
    s.socket_dir = Some(sock);
    s.listen_addresses = Some("127.0.0.1".into());
    s.bin_dir = Some(PgCluster::bin_dir());
    s.timeout = Duration::from_secs(120);
    Ok(s)
}

/// Runs SQL on a restored server.
pub async fn query(server: &ServerOptions, sql: &str) -> Result<String> {
    let spec = server.psql("postgres", sql);
    let out = TokioCommandRunner.run(spec).await?;
    ensure!(out.status.success(), "{sql}: {} {}", out.status, out.stderr);
    Ok(out.stdout_text().trim().to_string())
}

/// The active recovery target lines of a configuration file.
pub fn active_targets(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter(|l| {
            tej_backup::conf_line_key(l)
                .is_some_and(|k| tej_backup::TARGET_KEYS.contains(&k.as_str()))
        })
        .map(str::to_string)
        .collect())
}

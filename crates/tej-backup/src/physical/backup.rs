//! Taking a base backup: one SQL session around a parallel copy of the data directory.

use super::layout::{
    self, BACKUP_LABEL_NAME, Cut, FILE_LIST_NAME, FILE_LIST_VERSION, FileChunk, PG_CONTROL,
    PhysicalFile, PhysicalFileList, SourceFile, TABLESPACE_MAP_NAME, WorkItem,
};
use crate::create::{CreateReport, PendingUpload, Run, RunOptions, UploadOutcome};
use crate::db::DbTarget;
use crate::error::BackupError;
use crate::lsn::Lsn;
use crate::manifest::{BackupKind, PhysicalInfo};
use crate::repo::Repository;
use async_trait::async_trait;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use tej_core::Clock;

/// Default size of the parts large files are cut into (each one object).
pub const DEFAULT_PART_SIZE: u64 = 64 << 20;
/// Default size at which a bundle of small files is closed.
pub const DEFAULT_BUNDLE_SIZE: u64 = 16 << 20;
/// Default size under which files are bundled.
pub const DEFAULT_SMALL_FILE: u64 = 1 << 20;
/// Default limit of each wait for the archive during a base backup.
pub const DEFAULT_ARCHIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until `wal` is archived per `check`, polling, for at most `limit`; the error
/// quotes `pg_stat_archiver`.
async fn wait_archived(
    session: &mut dyn BackupSession,
    repos: &[Repository],
    check: ArchiveCheck,
    wal: &str,
    limit: Option<std::time::Duration>,
    what: &str,
) -> Result<(), BackupError> {
    if check == ArchiveCheck::Off {
        return Ok(());
    }
    let started = tokio::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        let status = session.archiver().await?;
        if status.archive_mode == "off" {
            return Err(BackupError::InvalidOptions(format!(
                "archive_mode is off: a base backup without its WAL archived cannot be restored; \
                 set archive_mode = on and archive_command ({})",
                status.describe()
            )));
        }
        let done = match check {
            ArchiveCheck::Off => true,
            ArchiveCheck::Server => status.has_archived(wal),
            ArchiveCheck::Repository => {
                let mut all = true;
                for r in repos {
                    let key = crate::wal::WalArchive::new(r.clone()).key(wal)?;
                    if r.store.head(&key).await?.is_none() {
                        all = false;
                        break;
                    }
                }
                all
            }
        };
        if done {
            return Ok(());
        }
        if let Some(limit) = limit
            && started.elapsed() >= limit
        {
            let place = match check {
                ArchiveCheck::Repository => format!(
                    " into {}",
                    repos
                        .iter()
                        .map(|r| r.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => String::new(),
            };
            return Err(BackupError::Postgres {
                context: "archive check".into(),
                reason: format!(
                    "{what} {wal} was not archived{place} within {}s ({}); check archive_command \
                     (run it as the server's OS user) and the server log",
                    limit.as_secs(),
                    status.describe()
                ),
                sqlstate: None,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(1));
    }
}

pub use tej_db::pg::base_backup::{ArchiverStatus, ServerFacts};

/// What `pg_backup_stop` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStop {
    /// The stop LSN: recovery must replay at least this far.
    pub stop_lsn: Lsn,
    /// The `backup_label` file's contents.
    pub backup_label: String,
    /// The `tablespace_map` file's contents (empty without tablespaces).
    pub tablespace_map: String,
}

/// How a base backup makes sure the WAL it needs reaches the archive, before the copy
/// (a switched segment) and after `pg_backup_stop` (its last segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveCheck {
    /// No check: the backup is only as good as the archive nobody checked.
    Off,
    /// `pg_stat_archiver` reports the segment archived (any `archive_command`).
    Server,
    /// The segment is in the WAL archive of every repository the backup goes to (the
    /// repositories are the archive, as with `tej wal push`).
    Repository,
}

/// The SQL session a base backup runs in. `pg_backup_start` and `pg_backup_stop` must be
/// called in the same session; closing it in between aborts the backup on the server.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait BackupSession: Send {
    /// Version, data directory, WAL segment size, system identifier, timeline.
    async fn facts(&mut self) -> Result<ServerFacts, BackupError>;
    /// `pg_backup_start(label, fast => true)`: returns the start LSN.
    async fn start_backup(&mut self, label: &str) -> Result<Lsn, BackupError>;
    /// `pg_backup_stop(wait_for_archive)`.
    async fn stop_backup(&mut self, wait_for_archive: bool) -> Result<BackupStop, BackupError>;
    /// `pg_switch_wal()`: the name of the segment it completed.
    async fn switch_wal(&mut self) -> Result<String, BackupError>;
    /// `pg_stat_archiver` and `archive_mode`.
    async fn archiver(&mut self) -> Result<ArchiverStatus, BackupError>;
}

/// A [`BackupSession`] over tej-db's [`BaseBackupSession`](tej_db::pg::base_backup::BaseBackupSession)
/// (one PostgreSQL connection, with TLS and libpq's settings as every tej-db connection).
pub struct PgBackupSession {
    session: tej_db::pg::base_backup::BaseBackupSession,
}

impl std::fmt::Debug for PgBackupSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackupSession").finish_non_exhaustive()
    }
}

fn pg_error(context: &str) -> impl Fn(tej_db::DbError) -> BackupError + '_ {
    move |e| BackupError::Postgres {
        context: context.to_string(),
        sqlstate: e.sqlstate().map(str::to_string),
        reason: e.to_string(),
    }
}

fn parse_lsn(context: &str, text: &str) -> Result<Lsn, BackupError> {
    text.parse()
        .map_err(|e: crate::lsn::InvalidLsn| BackupError::Postgres {
            context: context.to_string(),
            reason: e.to_string(),
            sqlstate: None,
        })
}

impl PgBackupSession {
    /// Connects to `db` (a libpq URL or key/value string; the password from
    /// [`DbTarget::password`]). Needs a superuser, or a role allowed to run
    /// `pg_backup_start`/`pg_backup_stop` and to read `data_directory`.
    pub async fn connect(db: &DbTarget) -> Result<PgBackupSession, BackupError> {
        let session =
            tej_db::pg::base_backup::BaseBackupSession::connect(&db.conn, db.password.as_ref())
                .await
                .map_err(pg_error("connect"))?;
        Ok(PgBackupSession { session })
    }
}

#[async_trait]
impl BackupSession for PgBackupSession {
    async fn facts(&mut self) -> Result<ServerFacts, BackupError> {
        self.session
            .server_facts()
            .await
            .map_err(pg_error("read the server's settings"))
    }

    async fn start_backup(&mut self, label: &str) -> Result<Lsn, BackupError> {
        let text = self
            .session
            .backup_start(label)
            .await
            .map_err(pg_error("pg_backup_start"))?;
        parse_lsn("pg_backup_start", &text)
    }

    async fn stop_backup(&mut self, wait_for_archive: bool) -> Result<BackupStop, BackupError> {
        let row = self
            .session
            .backup_stop(wait_for_archive)
            .await
            .map_err(pg_error("pg_backup_stop"))?;
        Ok(BackupStop {
            stop_lsn: parse_lsn("pg_backup_stop", &row.lsn)?,
            backup_label: row.backup_label,
            tablespace_map: row.tablespace_map,
        })
    }

    async fn switch_wal(&mut self) -> Result<String, BackupError> {
        self.session
            .switch_wal()
            .await
            .map_err(pg_error("pg_switch_wal"))
    }

    async fn archiver(&mut self) -> Result<ArchiverStatus, BackupError> {
        self.session
            .archiver_status()
            .await
            .map_err(pg_error("read pg_stat_archiver"))
    }
}

/// Options of a base backup.
#[derive(Debug, Clone)]
pub struct PhysicalBackupOptions {
    /// The server (a superuser connection, or a role with `pg_backup_start` rights).
    pub db: DbTarget,
    /// The data directory to copy (default: the server's `data_directory`). It must be
    /// local: its `global/pg_control` must carry the server's system identifier.
    pub data_dir: Option<PathBuf>,
    /// Objects copied at once (0: one per core, plus one).
    pub jobs: usize,
    /// Files at least [`small_file`](Self::small_file) long are cut into parts of this size.
    pub part_size: u64,
    /// Smaller files are packed into tar bundles of about [`bundle_size`](Self::bundle_size).
    pub small_file: u64,
    /// Size at which a bundle is closed.
    pub bundle_size: u64,
    /// Wait until the WAL the backup needs is archived (default true): before the copy,
    /// a switched segment (archiving works at all); after `pg_backup_stop`, the backup's
    /// last segment. How is [`archive_check`](Self::archive_check); `false` checks nothing.
    pub wait_for_archive: bool,
    /// Where archived WAL is looked for (default [`ArchiveCheck::Server`]).
    pub archive_check: ArchiveCheck,
    /// How long each of the two waits may take (default [`DEFAULT_ARCHIVE_TIMEOUT`];
    /// `None`: no limit). A broken `archive_command` would otherwise hang the backup
    /// forever: on timeout the backup fails, quoting `pg_stat_archiver`'s last failure,
    /// and nothing is listed. `pg_backup_stop` itself is called without waiting, so no
    /// server backend is left waiting for the archive.
    pub archive_timeout: Option<std::time::Duration>,
    /// The backup label (default `tej <backup id>`).
    pub label: Option<String>,
    /// Compression (zstd 3; one thread per object unless set), encryption, lock, target
    /// name (default `cluster`), progress.
    pub run: RunOptions,
}

impl PhysicalBackupOptions {
    /// Defaults for the server `db`.
    pub fn new(db: DbTarget) -> PhysicalBackupOptions {
        PhysicalBackupOptions {
            db,
            data_dir: None,
            jobs: 0,
            part_size: DEFAULT_PART_SIZE,
            small_file: DEFAULT_SMALL_FILE,
            bundle_size: DEFAULT_BUNDLE_SIZE,
            wait_for_archive: true,
            archive_check: ArchiveCheck::Server,
            archive_timeout: Some(DEFAULT_ARCHIVE_TIMEOUT),
            label: None,
            run: RunOptions::default(),
        }
    }

    /// One job per core plus one: a job whose object is being fsynced in the repository
    /// uses no CPU, and the extra one compresses meanwhile.
    fn jobs(&self) -> usize {
        if self.jobs > 0 {
            self.jobs
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                + 1
        }
    }
}

/// What a base backup reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhysicalBackupReport {
    /// The run (id, sizes, repositories).
    pub backup: CreateReport,
    /// LSNs, timeline, system identifier (as in the manifest).
    pub physical: PhysicalInfo,
    /// The server's version.
    pub server_version: String,
    /// Files copied.
    pub files: u64,
    /// Directories recorded.
    pub directories: u64,
    /// Files that vanished during the copy (dropped tables; not an error).
    pub vanished: u64,
    /// Entries left out that no rule covers (symbolic links, sockets).
    pub ignored: Vec<String>,
}

/// Takes a base backup of the server `opts.db` into every repository: connects, then
/// [`create_physical_backup_with`].
pub async fn create_physical_backup(
    repos: &[Repository],
    opts: &PhysicalBackupOptions,
    clock: &dyn Clock,
) -> Result<PhysicalBackupReport, BackupError> {
    let mut session = PgBackupSession::connect(&opts.db).await?;
    create_physical_backup_with(&mut session, repos, opts, clock).await
}

/// Takes a base backup through `session` (`opts.db` is not used): locks the repositories,
/// `pg_backup_start`, copies the data directory in parallel, copies `global/pg_control`
/// last, `pg_backup_stop`, stores `backup_label`, `tablespace_map` and the file list,
/// then the manifest. A failure removes what was stored.
pub async fn create_physical_backup_with(
    session: &mut dyn BackupSession,
    repos: &[Repository],
    opts: &PhysicalBackupOptions,
    clock: &dyn Clock,
) -> Result<PhysicalBackupReport, BackupError> {
    let facts = session.facts().await?;
    if facts.in_recovery {
        return Err(BackupError::InvalidOptions(
            "the server is a standby: base backups are taken from the primary".into(),
        ));
    }
    if facts.server_version_num < 150000 {
        return Err(BackupError::InvalidOptions(format!(
            "PostgreSQL {} is too old: base backups need 15 or later (pg_backup_start)",
            facts.server_version
        )));
    }
    if facts.wal_segment_size == 0 {
        return Err(BackupError::InvalidOptions(
            "the server reports a WAL segment size of 0".into(),
        ));
    }
    let data_dir = opts
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&facts.data_directory));
    check_control_file(&data_dir, facts.system_identifier)?;
    // The repositories hold this cluster's WAL archive: its marker first (so that
    // `tej wal push` archives into them), then a switched segment must arrive, as
    // pgBackRest's check does, before anything is copied.
    for r in repos {
        crate::wal::WalArchive::new(r.clone())
            .init(facts.system_identifier, facts.wal_segment_size)
            .await?;
    }
    if opts.wait_for_archive && opts.archive_check != ArchiveCheck::Off {
        let wal = session.switch_wal().await?;
        wait_archived(
            session,
            repos,
            opts.archive_check,
            &wal,
            opts.archive_timeout,
            "the switched WAL segment",
        )
        .await?;
    }
    let target = opts.run.target.clone().unwrap_or_else(|| "cluster".into());
    let mut run_opts = opts.run.clone();
    // Per-file checksums of the raw content are what restore and verify check.
    run_opts.hash_raw = true;
    if run_opts.compression.threads == 0 {
        // Parallelism comes from copying several objects at once.
        run_opts.compression.threads = 1;
    }
    let mut run = Run::start(repos, &target, &run_opts, clock).await?;
    // Whether the server still has this session's backup running.
    let mut started = false;
    match copy(
        session,
        repos,
        &mut run,
        opts,
        &facts,
        &data_dir,
        &mut started,
    )
    .await
    {
        Ok(done) => {
            let info = done.info.clone();
            let version = facts.server_version.clone();
            let backup = run
                .finish(
                    BackupKind::Physical,
                    |m| {
                        m.physical = Some(info);
                        m.server_version = Some(version);
                    },
                    clock,
                )
                .await?;
            Ok(PhysicalBackupReport {
                backup,
                physical: done.info,
                server_version: facts.server_version,
                files: done.files,
                directories: done.directories,
                vanished: done.vanished,
                ignored: done.ignored,
            })
        }
        Err(e) => {
            if started {
                // Best effort: ends the backup on the server if the session still lives.
                let _ = session.stop_backup(false).await;
            }
            Err(run.abort(e, clock).await)
        }
    }
}

/// The first 8 bytes of `global/pg_control` are the system identifier.
fn check_control_file(data_dir: &Path, system_identifier: u64) -> Result<(), BackupError> {
    let path = data_dir.join(PG_CONTROL);
    let mut buf = [0u8; 8];
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| {
            BackupError::io(
                format!(
                    "read {} (the data directory must be local and readable)",
                    path.display()
                ),
                e,
            )
        })?;
    let found = u64::from_le_bytes(buf);
    if found != system_identifier {
        return Err(BackupError::InvalidOptions(format!(
            "{} belongs to cluster {found}, the server is cluster {system_identifier}: wrong data directory",
            data_dir.display()
        )));
    }
    Ok(())
}

struct Copied {
    info: PhysicalInfo,
    files: u64,
    directories: u64,
    vanished: u64,
    ignored: Vec<String>,
}

/// `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)` and
/// `START TIMELINE: 1` from a backup label.
pub(crate) fn parse_label(label: &str) -> (Option<Lsn>, Option<String>, Option<u32>) {
    let mut lsn = None;
    let mut file = None;
    let mut timeline = None;
    for line in label.lines() {
        if let Some(rest) = line.strip_prefix("START WAL LOCATION: ") {
            let mut it = rest.split_whitespace();
            lsn = it.next().and_then(|s| s.parse().ok());
            file = rest
                .split_once("(file ")
                .and_then(|(_, f)| f.strip_suffix(')'))
                .map(str::to_string);
        } else if let Some(rest) = line.strip_prefix("START TIMELINE: ") {
            timeline = rest.trim().parse().ok();
        }
    }
    (lsn, file, timeline)
}

/// A file copied into a bundle: path, size, SHA-256.
type Bundled = (String, u64, String);

enum ItemDone {
    Bundle {
        outcome: Option<UploadOutcome>,
        files: Vec<Bundled>,
    },
    Part {
        outcome: Option<UploadOutcome>,
        rel: String,
        offset: u64,
    },
}

fn build_bundle(data_dir: &Path, files: &[SourceFile]) -> std::io::Result<(Vec<u8>, Vec<Bundled>)> {
    let capacity: u64 = files.iter().map(|f| f.size + 1024).sum::<u64>() + 1024;
    let mut builder = tar::Builder::new(Vec::with_capacity(capacity as usize));
    let mut done = Vec::new();
    for f in files {
        let data = match std::fs::read(data_dir.join(&f.rel)) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("read {}: {e}", f.rel),
                ));
            }
        };
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(f.mode);
        header.set_mtime(f.mtime.max(0) as u64);
        builder.append_data(&mut header, &f.rel, &data[..])?;
        done.push((
            f.rel.clone(),
            data.len() as u64,
            hex::encode(Sha256::digest(&data)),
        ));
    }
    let buf = builder.into_inner()?;
    Ok((buf, done))
}

async fn copy_item(
    data_dir: PathBuf,
    item: WorkItem,
    pending: PendingUpload,
) -> Result<ItemDone, BackupError> {
    let ready = async { Ok::<(), BackupError>(()) };
    match item {
        WorkItem::Bundle { files, .. } => {
            let (buf, copied) =
                tokio::task::spawn_blocking(move || build_bundle(&data_dir, &files))
                    .await
                    .map_err(|e| {
                        BackupError::io("bundle thread", std::io::Error::other(e.to_string()))
                    })?
                    .map_err(|e| BackupError::io("bundle small files", e))?;
            if copied.is_empty() {
                return Ok(ItemDone::Bundle {
                    outcome: None,
                    files: copied,
                });
            }
            let outcome = pending
                .run(move || Ok(std::io::Cursor::new(buf)), ready)
                .await;
            Ok(ItemDone::Bundle {
                outcome: Some(outcome),
                files: copied,
            })
        }
        WorkItem::Part {
            file,
            index,
            parts,
            offset,
            len,
        } => {
            let path = data_dir.join(&file.rel);
            let f = match tokio::fs::File::open(&path).await {
                Ok(f) => f.into_std().await,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(ItemDone::Part {
                        outcome: None,
                        rel: file.rel,
                        offset,
                    });
                }
                Err(e) => return Err(BackupError::io(format!("open {}", path.display()), e)),
            };
            let last = index + 1 == parts;
            let outcome = pending
                .run(
                    move || {
                        let mut f = f;
                        f.seek(SeekFrom::Start(offset))?;
                        let r: Box<dyn Read> = if last {
                            Box::new(f)
                        } else {
                            Box::new(f.take(len))
                        };
                        Ok(r)
                    },
                    ready,
                )
                .await;
            Ok(ItemDone::Part {
                outcome: Some(outcome),
                rel: file.rel,
                offset,
            })
        }
    }
}

async fn upload_bytes(run: &mut Run, base: &str, bytes: Vec<u8>) -> Result<String, BackupError> {
    let name = run.object_name(base);
    let pending = run.prepare(&name)?;
    let outcome = pending
        .run(move || Ok(std::io::Cursor::new(bytes)), async {
            Ok::<(), BackupError>(())
        })
        .await;
    Ok(run.complete(outcome)?.name)
}

async fn copy(
    session: &mut dyn BackupSession,
    repos: &[Repository],
    run: &mut Run,
    opts: &PhysicalBackupOptions,
    facts: &ServerFacts,
    data_dir: &Path,
    started: &mut bool,
) -> Result<Copied, BackupError> {
    let label = opts
        .label
        .clone()
        .unwrap_or_else(|| format!("tej {}", run.id));
    let start_lsn = session.start_backup(&label).await?;
    *started = true;
    let root = data_dir.to_path_buf();
    let scan = tokio::task::spawn_blocking(move || layout::scan(&root))
        .await
        .map_err(|e| BackupError::io("scan thread", std::io::Error::other(e.to_string())))??;
    let cut = Cut {
        small_file: opts.small_file.max(1),
        bundle_size: opts.bundle_size.max(1),
        part_size: opts.part_size.max(1 << 20),
    };
    let items = layout::plan(&scan.files, cut);
    let mut chunks: BTreeMap<String, Vec<FileChunk>> = BTreeMap::new();
    let jobs = opts.jobs().max(1);
    let mut queue = items.into_iter();
    let mut set = tokio::task::JoinSet::new();
    let mut first_err: Option<BackupError> = None;
    loop {
        while first_err.is_none() && set.len() < jobs {
            let Some(item) = queue.next() else { break };
            match run.prepare(&run.object_name(&item.base_name())) {
                Ok(p) => {
                    set.spawn(copy_item(data_dir.to_path_buf(), item, p));
                }
                Err(e) => first_err = Some(e),
            }
        }
        // On an error, the items in flight are waited for (not dropped), so none of
        // their uploads finishes after the run's cleanup.
        let Some(joined) = set.join_next().await else {
            break;
        };
        let done = match joined {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
                continue;
            }
            Err(e) => {
                first_err.get_or_insert(BackupError::io(
                    "copy task",
                    std::io::Error::other(e.to_string()),
                ));
                continue;
            }
        };
        if first_err.is_some() {
            continue;
        }
        if let Err(e) = record(run, &mut chunks, done) {
            first_err = Some(e);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    // The control file last, as pg_basebackup does.
    let control_path = data_dir.join(PG_CONTROL);
    let control = tokio::fs::read(&control_path)
        .await
        .map_err(|e| BackupError::io(format!("read {}", control_path.display()), e))?;
    let size = control.len() as u64;
    let sha = hex::encode(Sha256::digest(&control));
    let object = upload_bytes(
        run,
        &format!("{}{PG_CONTROL}", layout::DATA_PREFIX),
        control,
    )
    .await?;
    chunks.insert(
        PG_CONTROL.to_string(),
        vec![FileChunk {
            object,
            offset: 0,
            size,
            sha256: sha,
        }],
    );

    // Whatever happens now, the backup is no longer running on the server. The stop does
    // not wait for the archive (a broken archive_command would hang it, and its backend,
    // forever): the wait for the last segment is ours, bounded.
    *started = false;
    let stop = session.stop_backup(false).await?;
    let (label_lsn, label_wal, label_tli) = parse_label(&stop.backup_label);
    if stop.backup_label.trim().is_empty() {
        return Err(BackupError::Postgres {
            context: "pg_backup_stop".into(),
            reason: "the server returned an empty backup label".into(),
            sqlstate: None,
        });
    }
    upload_bytes(
        run,
        BACKUP_LABEL_NAME,
        stop.backup_label.clone().into_bytes(),
    )
    .await?;
    if !stop.tablespace_map.trim().is_empty() {
        upload_bytes(
            run,
            TABLESPACE_MAP_NAME,
            stop.tablespace_map.clone().into_bytes(),
        )
        .await?;
    }

    let mut files = Vec::new();
    let mut vanished = 0u64;
    for f in &scan.files {
        match chunks.remove(&f.rel) {
            Some(mut c) => {
                c.sort_by_key(|c| c.offset);
                files.push(PhysicalFile {
                    path: f.rel.clone(),
                    size: c.iter().map(|c| c.size).sum(),
                    mode: f.mode,
                    mtime: f.mtime,
                    chunks: c,
                });
            }
            None => vanished += 1,
        }
    }
    let list = PhysicalFileList {
        version: FILE_LIST_VERSION,
        directories: scan.dirs.clone(),
        files,
    };
    let file_count = list.files.len() as u64;
    let json = serde_json::to_vec(&list).map_err(|e| BackupError::io("file list", e.into()))?;
    upload_bytes(run, FILE_LIST_NAME, json).await?;

    let seg = facts.wal_segment_size;
    let timeline = label_tli.unwrap_or(facts.timeline);
    let start_lsn = label_lsn.unwrap_or(start_lsn);
    let start_wal = label_wal.unwrap_or_else(|| start_lsn.segment_name(timeline, seg).to_string());
    let stop_wal = Lsn(stop.stop_lsn.0.saturating_sub(1))
        .segment_name(timeline, seg)
        .to_string();
    if opts.wait_for_archive {
        wait_archived(
            session,
            repos,
            opts.archive_check,
            &stop_wal,
            opts.archive_timeout,
            "the backup's last WAL segment",
        )
        .await?;
    }
    Ok(Copied {
        info: PhysicalInfo {
            system_identifier: facts.system_identifier,
            timeline,
            start_lsn,
            stop_lsn: stop.stop_lsn,
            start_wal,
            stop_wal,
            wal_segment_size: seg,
            pg_major: facts.server_version_num / 10000,
            data_directory: data_dir.display().to_string(),
        },
        files: file_count,
        directories: list.directories.len() as u64,
        vanished,
        ignored: scan.ignored,
    })
}

fn record(
    run: &mut Run,
    chunks: &mut BTreeMap<String, Vec<FileChunk>>,
    done: ItemDone,
) -> Result<(), BackupError> {
    match done {
        ItemDone::Bundle { outcome, files } => {
            let Some(outcome) = outcome else {
                return Ok(());
            };
            let obj = run.complete(outcome)?;
            for (rel, size, sha256) in files {
                chunks.entry(rel).or_default().push(FileChunk {
                    object: obj.name.clone(),
                    offset: 0,
                    size,
                    sha256,
                });
            }
        }
        ItemDone::Part {
            outcome,
            rel,
            offset,
        } => {
            let Some(outcome) = outcome else {
                return Ok(());
            };
            let obj = run.complete(outcome)?;
            chunks.entry(rel).or_default().push(FileChunk {
                object: obj.name,
                offset,
                size: obj.raw_size,
                sha256: obj.raw_sha256,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_parsed() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                     CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\n\
                     BACKUP FROM: primary\nSTART TIME: 2025-01-16 02:00:00 UTC\n\
                     LABEL: tej x\nSTART TIMELINE: 3\n";
        let (lsn, wal, tli) = parse_label(label);
        assert_eq!(lsn, Some(Lsn(0x2000028)));
        assert_eq!(wal.as_deref(), Some("000000010000000000000002"));
        assert_eq!(tli, Some(3));
        assert_eq!(parse_label(""), (None, None, None));
    }
}

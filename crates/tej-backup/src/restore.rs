//! Restoring a logical backup into a database: destructive, run as a [`tej_core::Step`].

use crate::db::DbTarget;
use crate::error::BackupError;
use crate::manifest::{BackupKind, DumpFormat, Manifest};
use crate::pipeline::{EncryptionOptions, ProgressSink, Ticker};
use crate::read::decode_object;
use crate::repo::Repository;
use async_trait::async_trait;
use serde::Serialize;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tej_core::{CommandError, CommandRunner, CommandSpec, Plan, Risk, Step, StepError, StepOutput};

/// Options of a restore.
#[derive(Clone)]
pub struct RestoreOptions {
    /// The database restored into (it must exist).
    pub target: DbTarget,
    /// `pg_restore -j` jobs (custom and directory formats). With more than one job a custom
    /// archive is first decoded to `scratch_dir`; with one it streams into `pg_restore`
    /// in a single transaction.
    pub jobs: u32,
    /// Drop objects before recreating them (`pg_restore --clean --if-exists`). Plain
    /// dumps have no DROP statements: restore them into an empty database.
    pub clean: bool,
    /// Keys for encrypted backups.
    pub encryption: EncryptionOptions,
    /// Scratch space for parallel restores (default: the system temp dir).
    pub scratch_dir: Option<PathBuf>,
    /// Progress events.
    pub progress: Option<ProgressSink>,
}

impl std::fmt::Debug for RestoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreOptions")
            .field("target", &self.target)
            .field("jobs", &self.jobs)
            .field("clean", &self.clean)
            .field("encryption", &self.encryption)
            .finish_non_exhaustive()
    }
}

impl RestoreOptions {
    /// One job, clean, no keys.
    pub fn new(target: DbTarget) -> RestoreOptions {
        RestoreOptions {
            target,
            jobs: 1,
            clean: true,
            encryption: EncryptionOptions::default(),
            scratch_dir: None,
            progress: None,
        }
    }
}

/// What a restore reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestoreReport {
    /// Repository.
    pub repository: String,
    /// Backup.
    pub id: String,
    /// The database restored into.
    pub database: String,
    /// Format.
    pub format: DumpFormat,
    /// Uncompressed bytes fed to pg_restore or psql.
    pub raw_size: u64,
    /// Wall time.
    pub duration_secs: f64,
    /// Where the dump was decoded before `pg_restore` read it (removed afterwards);
    /// `None` when it streamed straight into `psql`.
    pub scratch_dir: Option<String>,
}

fn restore_spec(
    opts: &RestoreOptions,
    format: DumpFormat,
    input: Option<&std::path::Path>,
) -> CommandSpec {
    let t = &opts.target;
    match format {
        DumpFormat::Plain => t.command(
            CommandSpec::new("psql")
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"])
                .args(["-f", "-"]),
        ),
        DumpFormat::Custom | DumpFormat::Directory => {
            let mut s = t
                .command(CommandSpec::new("pg_restore").args(["--no-password", "--exit-on-error"]));
            if opts.clean {
                s = s.args(["--clean", "--if-exists"]);
            }
            s = if opts.jobs <= 1 {
                s.arg("--single-transaction")
            } else {
                s.arg(format!("--jobs={}", opts.jobs))
            };
            s = s.arg(format!(
                "--format={}",
                if format == DumpFormat::Directory {
                    "directory"
                } else {
                    "custom"
                }
            ));
            match input {
                Some(p) => s.arg(p.as_os_str()),
                None => s,
            }
        }
    }
}

/// Restores `manifest`'s backup from `repo` into `opts.target`, touching the target only
/// with content whose SHA-256 matched the manifest.
///
/// A plain dump streams into `psql --single-transaction`, whose end of input (and so its
/// COMMIT) comes only after the last byte was checked; a failed check kills `psql` first,
/// so the server rolls the transaction back. `psql` runs restricted (`\restrict` with a
/// key of this run): a meta-command in the dump (`\!` runs a shell) fails the restore
/// before it runs. Custom and directory dumps are decoded and checked into a scratch
/// directory first (see [`scratch_parent`]; its free space is checked first and it is
/// removed on every exit path), then `pg_restore` reads them: in one transaction with one
/// job, in parallel with more.
pub async fn restore_manifest(
    runner: &dyn CommandRunner,
    repo: &Repository,
    m: &Manifest,
    opts: &RestoreOptions,
) -> Result<RestoreReport, BackupError> {
    let started = Instant::now();
    let format = match (m.kind, m.format) {
        (BackupKind::Logical, Some(f)) => f,
        _ => {
            return Err(BackupError::InvalidOptions(format!(
                "backup {} is a {} backup, not a database dump",
                m.id, m.kind
            )));
        }
    };
    if m.objects.is_empty() {
        return Err(BackupError::Corrupt {
            repo: repo.name(),
            id: m.id.to_string(),
            object: format!("backups/{}/manifest.json", m.id),
            reason: "the manifest lists no object".into(),
        });
    }
    let ticker = |name: &str| Ticker::new(opts.progress.clone(), "restore", m.id.as_str(), name);
    let mut scratch_used = None;
    if format == DumpFormat::Plain {
        restore_plain(runner, repo, m, opts, ticker(&m.objects[0].name)).await?;
    } else {
        let parent = scratch_parent(repo, opts)?;
        let needed: u64 = m.objects.iter().map(|o| o.raw_size).sum();
        check_free_space(&parent, needed, &m.id.to_string())?;
        let scratch = tempfile::Builder::new()
            .prefix("tej-restore-")
            .tempdir_in(&parent)
            .map_err(|e| {
                BackupError::io(
                    format!("create a scratch directory in {}", parent.display()),
                    e,
                )
            })?;
        tracing::info!(
            backup = %m.id,
            scratch = %scratch.path().display(),
            bytes = needed,
            "decoding the dump into a scratch directory before pg_restore reads it"
        );
        scratch_used = Some(scratch.path().display().to_string());
        let suffix = format!(
            "{}{}",
            m.compression.algorithm.suffix(),
            if m.encryption.is_some() { ".age" } else { "" }
        );
        let input = if format == DumpFormat::Directory {
            let dir = scratch.path().join("dump");
            std::fs::create_dir(&dir)
                .map_err(|e| BackupError::io(format!("create {}", dir.display()), e))?;
            for obj in &m.objects {
                let base = obj.name.strip_prefix("dir/").unwrap_or(&obj.name);
                let base = base.strip_suffix(&suffix).unwrap_or(base);
                if base.is_empty() || base.contains('/') || base.starts_with('.') {
                    return Err(BackupError::Corrupt {
                        repo: repo.name(),
                        id: m.id.to_string(),
                        object: obj.key.clone(),
                        reason: "unexpected object name in a directory dump".into(),
                    });
                }
                let path = dir.join(base);
                decode_to_file(repo, m, obj, opts, &path, ticker(&obj.name)).await?;
            }
            dir
        } else {
            let obj = &m.objects[0];
            let path = scratch.path().join("dump.pgc");
            decode_to_file(repo, m, obj, opts, &path, ticker(&obj.name)).await?;
            path
        };
        tej_core::run_checked(runner, restore_spec(opts, format, Some(&input))).await?;
        scratch.close().map_err(|e| {
            BackupError::io(
                format!("remove the scratch directory {}", input.display()),
                e,
            )
        })?;
    }
    Ok(RestoreReport {
        repository: repo.name(),
        id: m.id.to_string(),
        database: opts.target.database(),
        format,
        raw_size: m.raw_size,
        duration_secs: started.elapsed().as_secs_f64(),
        scratch_dir: scratch_used,
    })
}

/// Where a custom or directory dump is decoded before `pg_restore` reads it:
/// `opts.scratch_dir` when set, else the local repository's `.tej-scratch` directory
/// (created 0700), else (an S3 repository) the system temporary directory.
pub fn scratch_parent(repo: &Repository, opts: &RestoreOptions) -> Result<PathBuf, BackupError> {
    if let Some(d) = &opts.scratch_dir {
        return Ok(d.clone());
    }
    match &repo.local_path {
        Some(root) => {
            let dir = root.join(crate::storage::local::SCRATCH_DIR);
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(BackupError::io(format!("create {}", dir.display()), e)),
            }
            Ok(dir)
        }
        None => Ok(std::env::temp_dir()),
    }
}

/// Fails unless `dir`'s file system has room for `needed` decoded bytes (plus 1%
/// and 64 MiB of headroom).
fn check_free_space(dir: &Path, needed: u64, id: &str) -> Result<(), BackupError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| {
        BackupError::io(
            format!("check the free space of {}", dir.display()),
            std::io::Error::from(e),
        )
    })?;
    let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
    let want = needed.saturating_add(needed / 100).saturating_add(64 << 20);
    if free < want {
        return Err(BackupError::InvalidOptions(format!(
            "the scratch directory {} has {free} bytes free; restoring backup {id} decodes \
             {needed} bytes there first: free space or choose another scratch directory",
            dir.display()
        )));
    }
    Ok(())
}

async fn decode_to_file(
    repo: &Repository,
    m: &Manifest,
    obj: &crate::manifest::ManifestObject,
    opts: &RestoreOptions,
    path: &Path,
    ticker: Ticker,
) -> Result<(), BackupError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| BackupError::io(format!("create {}", path.display()), e))?;
    decode_object(
        repo,
        m,
        obj,
        &opts.encryption,
        std::io::BufWriter::new(file),
        ticker,
    )
    .await
}

/// A key nobody could have written into a dump: 32 random hex digits.
fn restrict_key() -> Result<String, BackupError> {
    let mut b = [0u8; 16];
    let mut f =
        std::fs::File::open("/dev/urandom").map_err(|e| BackupError::io("open /dev/urandom", e))?;
    std::io::Read::read_exact(&mut f, &mut b)
        .map_err(|e| BackupError::io("read /dev/urandom", e))?;
    Ok(hex::encode(b))
}

/// Streams a plain dump into restricted `psql`; ends its input only once checked.
async fn restore_plain(
    runner: &dyn CommandRunner,
    repo: &Repository,
    m: &Manifest,
    opts: &RestoreOptions,
    ticker: Ticker,
) -> Result<(), BackupError> {
    use tokio::io::AsyncWriteExt;
    let obj = &m.objects[0];
    let key = restrict_key()?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let spec = restore_spec(opts, DumpFormat::Plain, None)
        .stdin_piped()
        .cancel_on(cancel.clone());
    let mut child = runner.spawn(spec.clone()).await?;
    let mut stdin = child.stdin.take().ok_or_else(|| CommandError::Io {
        command: spec.display(),
        reason: "no stdin pipe".into(),
    })?;
    // psql's own output is small; drain it so it never blocks.
    let drain = child.stdout.take().map(|mut out| {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut out, &mut tokio::io::sink()).await;
        })
    });
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let header = format!("\\restrict {key}\n");
    // Feeds psql and hands its stdin back open: closing it is what commits.
    let feeder = tokio::spawn(async move {
        let r = async {
            stdin.write_all(header.as_bytes()).await?;
            while let Some(chunk) = rx.recv().await {
                stdin.write_all(&chunk).await?;
            }
            stdin.flush().await
        }
        .await;
        (stdin, r)
    });
    let sink = PlainFilter::new(ChannelWriter(tx));
    let fed = decode_object(repo, m, obj, &opts.encryption, sink, ticker).await;
    let (stdin, written) = match feeder.await {
        Ok(v) => v,
        Err(e) => {
            cancel.cancel();
            let _ = child.wait().await;
            return Err(BackupError::io(
                "feed psql",
                std::io::Error::other(e.to_string()),
            ));
        }
    };
    match &fed {
        Ok(()) => {}
        // psql stopped reading: its own error says why.
        Err(BackupError::Io { .. }) if written.is_err() => {}
        Err(_) => {
            // Kill psql while its input is still open: it never reads an end of input,
            // so it never sends COMMIT, and the server rolls the transaction back when
            // the connection drops.
            cancel.cancel();
            let _ = child.wait().await;
            drop(stdin);
            if let Some(d) = drain {
                let _ = d.await;
            }
            return fed;
        }
    }
    drop(stdin);
    let out = child.wait().await;
    if let Some(d) = drain {
        let _ = d.await;
    }
    let out = out?;
    if !out.status.success() {
        let stderr = out.stderr.clone();
        if stderr.contains("backslash commands are restricted") {
            return Err(BackupError::Corrupt {
                repo: repo.name(),
                id: m.id.to_string(),
                object: obj.key.clone(),
                reason: format!(
                    "the dump holds a psql meta-command, which pg_dump never writes: refused \
                     before it ran, nothing restored (psql: {})",
                    stderr.trim()
                ),
            });
        }
    }
    CommandError::check(&spec, out)?;
    fed?;
    written.map_err(|e| BackupError::io("feed psql", e))?;
    Ok(())
}

/// A blocking writer into a channel (the decoder's thread to the async feeder).
struct ChannelWriter(tokio::sync::mpsc::Sender<bytes::Bytes>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(bytes::Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "psql stopped"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Longest line start kept to decide whether a line is one of pg_dump's `\restrict`
/// lines or a `COPY ... FROM stdin;` header.
const HEAD_MAX: usize = 1 << 16;

/// Drops the dump's own `\restrict KEY` and `\unrestrict KEY` lines (outside COPY data),
/// so that only the restriction of this run applies; passes everything else through.
pub(crate) struct PlainFilter<W> {
    inner: W,
    head: Vec<u8>,
    passing: bool,
    in_copy: bool,
}

impl<W: std::io::Write> PlainFilter<W> {
    pub(crate) fn new(inner: W) -> PlainFilter<W> {
        PlainFilter {
            inner,
            head: Vec::new(),
            passing: false,
            in_copy: false,
        }
    }

    fn is_restrict_line(line: &[u8]) -> bool {
        let rest = line
            .strip_prefix(b"\\restrict ")
            .or_else(|| line.strip_prefix(b"\\unrestrict "));
        matches!(rest, Some(k) if !k.is_empty() && k.iter().all(u8::is_ascii_alphanumeric))
    }

    /// Decides on the complete line in `head` (with its newline, when it has one).
    fn line_done(&mut self) -> std::io::Result<()> {
        let mut line = &self.head[..];
        if let Some(l) = line.strip_suffix(b"\n") {
            line = l;
        }
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if self.in_copy {
            if line == b"\\." {
                self.in_copy = false;
            }
        } else if Self::is_restrict_line(line) {
            self.head.clear();
            return Ok(());
        } else if line.starts_with(b"COPY ") && line.ends_with(b" FROM stdin;") {
            self.in_copy = true;
        }
        self.inner.write_all(&self.head)?;
        self.head.clear();
        Ok(())
    }
}

impl<W: std::io::Write> std::io::Write for PlainFilter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.passing {
                match memchr::memchr(b'\n', rest) {
                    Some(i) => {
                        self.inner.write_all(&rest[..=i])?;
                        self.passing = false;
                        rest = &rest[i + 1..];
                    }
                    None => {
                        self.inner.write_all(rest)?;
                        rest = &[];
                    }
                }
                continue;
            }
            if self.head.is_empty() && rest[0] != b'\\' && rest[0] != b'C' {
                self.passing = true;
                continue;
            }
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    self.head.extend_from_slice(&rest[..=i]);
                    rest = &rest[i + 1..];
                    self.line_done()?;
                }
                None => {
                    self.head.extend_from_slice(rest);
                    rest = &[];
                    if self.head.len() >= HEAD_MAX {
                        // Too long to be a line the filter acts on.
                        self.inner.write_all(&self.head)?;
                        self.head.clear();
                        self.passing = true;
                    }
                }
            }
        }
        Ok(buf.len())
    }

    /// Ends the stream: a last line without a newline is decided on here.
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.head.is_empty() {
            self.line_done()?;
        }
        self.inner.flush()
    }
}

/// `restore ID|latest`: resolves the selector and restores.
pub async fn restore_backup(
    runner: &dyn CommandRunner,
    repo: &Repository,
    selector: &str,
    opts: &RestoreOptions,
) -> Result<RestoreReport, BackupError> {
    crate::lock::RepoLock::hold_reading(repo, "restore", jiff::Timestamp::now(), async {
        restore_manifest(runner, repo, &repo.resolve(selector).await?, opts).await
    })
    .await
}

/// The restore as a destructive [`Step`]: run it through a [`tej_core::Executor`] so it
/// is confirmed (and refused in production outside the maintenance window).
pub struct RestoreStep {
    /// Starts pg_restore and psql.
    pub runner: Arc<dyn CommandRunner>,
    /// Where the backup is.
    pub repo: Repository,
    /// `latest` or an id.
    pub selector: String,
    /// Options.
    pub opts: RestoreOptions,
}

#[async_trait]
impl Step for RestoreStep {
    fn name(&self) -> String {
        "backup-restore".into()
    }

    fn risk(&self) -> Risk {
        Risk::Destructive
    }

    fn target(&self) -> String {
        format!("database {}", self.opts.target.database())
    }

    async fn plan(&self) -> Result<Plan, StepError> {
        let m = self.repo.resolve(&self.selector).await?;
        let format = m.format.map(|f| f.to_string()).unwrap_or_default();
        Ok(Plan::of(
            self,
            vec![
                format!(
                    "read backup {} ({} {}, {} bytes, taken {}) from {}",
                    m.id,
                    m.database.clone().unwrap_or_default(),
                    format,
                    m.raw_size,
                    m.finished_at,
                    self.repo.name()
                ),
                format!(
                    "{} database {}: existing objects of the dump are dropped and replaced",
                    if format == "plain" {
                        "psql into"
                    } else {
                        "pg_restore into"
                    },
                    self.opts.target.database()
                ),
            ],
        ))
    }

    async fn apply(&self) -> Result<StepOutput, StepError> {
        let r = restore_backup(&*self.runner, &self.repo, &self.selector, &self.opts).await?;
        Ok(StepOutput {
            summary: format!(
                "restored {} into {} in {:.1}s",
                r.id, r.database, r.duration_secs
            ),
            findings: Vec::new(),
            data: serde_json::to_value(&r).unwrap_or_default(),
        })
    }
}

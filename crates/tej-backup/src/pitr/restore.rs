//! `tej restore --target-...`: choose a base backup, lay it into a data directory,
//! configure recovery, optionally start the server and follow recovery.

use super::choose::{
    ArchiveHorizon, check_backup_covered, check_target_reachable, choose_base_backup,
};
use super::config::{
    RecoveryConfig, RecoveryConfigReport, RestoredArchiving, conf_line_key, configure_recovery,
};
use super::server::{RecoveryReport, ServerOptions, run_recovery, running_postmaster};
use super::target::RecoveryTarget;
use crate::error::BackupError;
use crate::manifest::Manifest;
use crate::wal::{BackupChain, BaseBackupRef, WalArchive, wal_continuity};
use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tej_core::{CommandRunner, Plan, Risk, Step, StepError, StepOutput};

/// Where base backups and the WAL archive come from: the repository with its physical
/// backups and WAL archive in production, prepared directories in tests.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait BaseBackupSource: Send + Sync {
    /// The manifests of the available backups (only physical ones are used).
    async fn base_backups(&self) -> Result<Vec<Manifest>, BackupError>;

    /// The newest archived WAL segment and when it was pushed; `None` for an empty archive.
    async fn archive_horizon(&self) -> Result<Option<ArchiveHorizon>, BackupError>;

    /// Lays the files of base backup `backup` into `target_dir` (an existing, empty
    /// directory, mode 0700, owned by the server's OS user): the data directory as it was
    /// copied, with its `backup_label`, without recovery settings, owned by that user.
    async fn restore_base(&self, backup: &Manifest, target_dir: &Path) -> Result<(), BackupError>;
}

/// Options of a point-in-time restore.
#[derive(Debug, Clone)]
pub struct PitrRestoreOptions {
    /// The data directory to create or replace.
    pub pgdata: PathBuf,
    /// `restore_command`, target, action, timeline, archiving.
    pub recovery: RecoveryConfig,
    /// Replace a non-empty data directory (destructive; [`PitrRestoreStep`] sets it only
    /// after confirmation). A directory a server runs on is never replaced.
    pub replace_existing: bool,
    /// The OS user that owns the data directory (when tej runs as root); `postgres` by default.
    pub owner: Option<String>,
    /// Start the server and follow recovery to its end; `None` only prepares the directory.
    pub start: Option<ServerOptions>,
    /// Restore this base backup (an id) instead of the newest one that qualifies: for
    /// an xid or restore point older than the newest base backup, which replay from a
    /// newer one would never meet. It must still qualify for a time or LSN target.
    pub base_backup: Option<String>,
    /// The WAL archive `restore_command` reads. When set, the chain from the chosen base
    /// backup to the newest archived segment is checked before anything is touched: a
    /// gap would end replay there and, for `latest`, promote early without a word. Its
    /// repository is held (shared lock) from the checks to the end of recovery, so a
    /// prune never deletes the base backup or WAL the restore still reads.
    pub wal_archive: Option<WalArchive>,
}

impl PitrRestoreOptions {
    /// Restore into `pgdata` per `recovery`, owned by `postgres`, without starting it.
    pub fn new(pgdata: impl Into<PathBuf>, recovery: RecoveryConfig) -> PitrRestoreOptions {
        PitrRestoreOptions {
            pgdata: pgdata.into(),
            recovery,
            replace_existing: false,
            owner: Some("postgres".into()),
            start: None,
            base_backup: None,
            wal_archive: None,
        }
    }
}

/// What a point-in-time restore did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PitrRestoreReport {
    /// The base backup restored.
    pub backup_id: String,
    /// When it finished.
    pub backup_finished_at: Timestamp,
    /// The recovery target.
    pub target: RecoveryTarget,
    /// The data directory.
    pub pgdata: PathBuf,
    /// Whether a non-empty data directory was replaced.
    pub replaced_existing: bool,
    /// Where the replaced data directory was kept (renamed beside it, its `pg_wal`
    /// included, which may hold WAL never archived): remove it once the restored server
    /// is verified.
    pub replaced_kept_at: Option<PathBuf>,
    /// The replaced data directory's `archive_mode`, written back over the restore's
    /// default of switching archiving off (the restored server takes its place).
    pub archiving_restored: Option<String>,
    /// The recovery settings written.
    pub config: RecoveryConfigReport,
    /// Seconds spent laying the base backup's files.
    pub restore_secs: f64,
    /// The recovery, when the server was started.
    pub recovery: Option<RecoveryReport>,
}

/// Entries in a directory (0 when it does not exist).
fn entries(dir: &Path) -> Result<usize, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(rd) => Ok(rd.count()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(BackupError::io(format!("read {}", dir.display()), e)),
    }
}

/// Creates `dir` (mode 0700) owned by `owner` when tej runs as root.
pub(crate) fn make_owned_dir(dir: &Path, owner: Option<&str>) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(BackupError::io(format!("create {}", dir.display()), e)),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| BackupError::io(format!("set the mode of {}", dir.display()), e))?;
    if let Some(name) = owner
        && nix::unistd::geteuid().is_root()
    {
        let user = nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(|| BackupError::InvalidOptions(format!("no OS user {name}")))?;
        nix::unistd::chown(dir, Some(user.uid), Some(user.gid))
            .map_err(|e| BackupError::io(format!("chown {} to {name}", dir.display()), e.into()))?;
    }
    Ok(())
}

/// A visible, unused name beside `pgdata` for the data directory it replaces.
fn kept_name(pgdata: &Path) -> PathBuf {
    let name = pgdata
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pgdata".into());
    let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let mut candidate = pgdata.with_file_name(format!("{name}.tej-replaced-{stamp}"));
    let mut n = 1;
    while candidate.exists() {
        n += 1;
        candidate = pgdata.with_file_name(format!("{name}.tej-replaced-{stamp}-{n}"));
    }
    candidate
}

/// A configuration value as written (`'quoted'`, with `''` for a quote, or a bare word).
fn conf_value(line: &str) -> Option<String> {
    let t = line.trim_start();
    let end = t.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))?;
    let rest = t[end..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    if let Some(q) = rest.strip_prefix('\'') {
        let mut out = String::new();
        let mut chars = q.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    out.push('\'');
                }
                '\'' => return Some(out),
                '\\' => out.push(chars.next()?),
                c => out.push(c),
            }
        }
        None
    } else {
        rest.split(|c: char| c.is_whitespace() || c == '#')
            .next()
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }
}

/// The archiving a data directory was configured with: the last `archive_mode`,
/// `archive_command` and `archive_library` of `postgresql.conf`, then
/// `postgresql.auto.conf` (which overrides it), lines tej disabled excluded.
pub fn archive_settings(pgdata: &Path) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    for file in ["postgresql.conf", "postgresql.auto.conf"] {
        let Ok(text) = std::fs::read_to_string(pgdata.join(file)) else {
            continue;
        };
        for line in text.lines() {
            let Some(key) = conf_line_key(line) else {
                continue;
            };
            if !matches!(
                key.as_str(),
                "archive_mode" | "archive_command" | "archive_library"
            ) {
                continue;
            }
            if let Some(v) = conf_value(line) {
                found.retain(|(k, _)| *k != key);
                found.push((key, v));
            }
        }
    }
    found
}

/// What the restored copy archives with when it replaces `old`: the old directory's
/// `archive_command` when it archived with one; `None` to keep the restore's choice.
fn archiving_of_replaced(old: &Path) -> Option<(String, String)> {
    let s = archive_settings(old);
    let get = |k: &str| s.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    let mode = get("archive_mode")?;
    if !matches!(
        mode.to_ascii_lowercase().as_str(),
        "on" | "always" | "true" | "yes" | "1"
    ) {
        return None;
    }
    if get("archive_library").is_some_and(|l| !l.is_empty()) {
        return None;
    }
    let command = get("archive_command").filter(|c| !c.trim().is_empty())?;
    Some((mode, command))
}

/// Refuses a restore whose WAL chain (from its base backup) has a gap replay would stop
/// at before the target: for `latest` that would be an early promotion without a word.
fn check_chain(target: &RecoveryTarget, m: &Manifest, c: &BackupChain) -> Result<(), BackupError> {
    if c.unbroken {
        return Ok(());
    }
    let Some(g) = c.gaps.first() else {
        return Ok(());
    };
    let reachable_lsn = c.reachable_lsn;
    let blocks = match target {
        RecoveryTarget::Latest => true,
        RecoveryTarget::Lsn(l) => reachable_lsn.is_none_or(|r| *l > r),
        RecoveryTarget::Immediate => !c.consistent,
        // PostgreSQL refuses to promote when it ends recovery before these targets.
        _ => !c.consistent,
    };
    if !blocks {
        return Ok(());
    }
    Err(BackupError::WalGap {
        target: target.to_string(),
        backup: m.id.to_string(),
        gap: format!(
            "{} segment(s) missing on timeline {}, {}..{} (WAL {}..{})",
            g.missing_segments, g.timeline, g.first_missing, g.last_missing, g.from_lsn, g.to_lsn
        ),
        reachable_wal: c
            .reachable_wal
            .clone()
            .unwrap_or_else(|| "none: the backup's first segment is missing".into()),
        reachable_lsn: reachable_lsn
            .map(|l| l.to_string())
            .unwrap_or_else(|| "the backup's start".into()),
    })
}

fn sibling(pgdata: &Path, what: &str) -> PathBuf {
    let name = pgdata
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pgdata".into());
    pgdata.with_file_name(format!(".{name}.tej-{what}-{}", std::process::id()))
}

/// The checks every restore makes before touching anything: the target is within the
/// archive, a base backup serves it and its end is archived, and the data directory is
/// free (empty, or `replace_existing`, and no server running on it).
pub async fn plan_pitr_restore(
    source: &dyn BaseBackupSource,
    opts: &PitrRestoreOptions,
) -> Result<(Manifest, usize), BackupError> {
    let target = &opts.recovery.target;
    let horizon = source.archive_horizon().await?;
    check_target_reachable(target, horizon)?;
    let mut manifests = source.base_backups().await?;
    if let Some(id) = &opts.base_backup {
        manifests.retain(|m| m.id.as_str() == id);
        if manifests.is_empty() {
            return Err(BackupError::NoBaseBackup {
                target: target.to_string(),
                reason: format!("base backup {id} does not exist"),
            });
        }
    }
    let m = choose_base_backup(&manifests, target)?.clone();
    check_backup_covered(&m, horizon)?;
    if let (Some(archive), Some(b)) = (&opts.wal_archive, BaseBackupRef::from_manifest(&m)) {
        let r = wal_continuity(archive, std::slice::from_ref(&b)).await?;
        if let Some(c) = r.chains.first() {
            check_chain(target, &m, c)?;
        }
    }
    if let Some(pid) = running_postmaster(&opts.pgdata) {
        return Err(BackupError::DataDirInUse {
            path: opts.pgdata.display().to_string(),
            reason: format!("has a running server (pid {pid}); stop it first"),
        });
    }
    let n = entries(&opts.pgdata)?;
    if n > 0 && !opts.replace_existing {
        return Err(BackupError::DataDirInUse {
            path: opts.pgdata.display().to_string(),
            reason: format!("is not empty ({n} entries); replacing it needs confirmation"),
        });
    }
    Ok((m, n))
}

/// Restores to a point in time:
///
/// 1. [`plan_pitr_restore`]'s checks; a refusal leaves everything untouched.
/// 2. The base backup is laid by `source` into `pgdata` when it is missing or empty;
///    a non-empty `pgdata` (with `replace_existing`) is replaced only once the new copy
///    is complete: the copy goes to a sibling directory, then the old directory is
///    renamed away (to `NAME.tej-replaced-TIME`, kept: its `pg_wal` may hold WAL never
///    archived) and the copy renamed in (this needs room for both). A failed copy is
///    removed and the old directory stays as it was. The restored copy archives as the
///    replaced directory did (unless [`RestoredArchiving`] other than the default `Off`
///    was asked for): it takes that server's place.
/// 3. [`configure_recovery`] writes `restore_command` and exactly one target.
/// 4. With [`start`](PitrRestoreOptions::start), [`run_recovery`] starts the server and
///    follows recovery to its end.
pub async fn restore_pitr(
    source: &dyn BaseBackupSource,
    runner: &dyn CommandRunner,
    opts: &PitrRestoreOptions,
) -> Result<PitrRestoreReport, BackupError> {
    // The archive recovery reads from is held (shared) from the first check to the end of
    // recovery: a prune waits for it rather than deleting WAL or the base backup in use.
    let restoring = restore_pitr_locked(source, runner, opts);
    match &opts.wal_archive {
        Some(a) => {
            crate::lock::RepoLock::hold_reading(
                a.repository(),
                "pitr-restore",
                Timestamp::now(),
                restoring,
            )
            .await
        }
        None => restoring.await,
    }
}

async fn restore_pitr_locked(
    source: &dyn BaseBackupSource,
    runner: &dyn CommandRunner,
    opts: &PitrRestoreOptions,
) -> Result<PitrRestoreReport, BackupError> {
    let (m, existing) = plan_pitr_restore(source, opts).await?;
    tracing::info!(
        backup = %m.id,
        target = %opts.recovery.target,
        pgdata = %opts.pgdata.display(),
        replace = existing > 0,
        "restoring base backup for point-in-time recovery"
    );
    let owner = opts.owner.as_deref();
    let started = Instant::now();
    let pgdata = &opts.pgdata;
    let mut recovery_cfg = opts.recovery.clone();
    let mut kept = None;
    let mut archiving_restored = None;
    if existing == 0 {
        make_owned_dir(pgdata, owner)?;
        if let Err(e) = source.restore_base(&m, pgdata).await {
            // Leave the directory as empty as it was.
            if let Ok(rd) = std::fs::read_dir(pgdata) {
                for entry in rd.flatten() {
                    let p = entry.path();
                    let _ = if p.is_dir() && !p.is_symlink() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
            return Err(e);
        }
    } else {
        let staging = sibling(pgdata, "restore");
        let _ = std::fs::remove_dir_all(&staging);
        make_owned_dir(&staging, owner)?;
        if let Err(e) = source.restore_base(&m, &staging).await {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        let old = kept_name(pgdata);
        std::fs::rename(pgdata, &old).map_err(|e| {
            let _ = std::fs::remove_dir_all(&staging);
            BackupError::io(format!("move {} aside", pgdata.display()), e)
        })?;
        if let Err(e) = std::fs::rename(&staging, pgdata) {
            let _ = std::fs::rename(&old, pgdata);
            let _ = std::fs::remove_dir_all(&staging);
            return Err(BackupError::io(
                format!("move the restored copy to {}", pgdata.display()),
                e,
            ));
        }
        if let Some(parent) = pgdata.parent() {
            let _ = tej_core::fsutil::fsync_dir(parent);
        }
        tracing::warn!(
            kept = %old.display(),
            "the replaced data directory is kept (its pg_wal may hold WAL never archived); remove it once the restored server is verified"
        );
        if recovery_cfg.archiving == RestoredArchiving::Off
            && let Some((mode, command)) = archiving_of_replaced(&old)
        {
            recovery_cfg.archiving = RestoredArchiving::Command(command);
            archiving_restored = Some(mode);
        }
        kept = Some(old);
    }
    let restore_secs = started.elapsed().as_secs_f64();
    let kept_note = |e: BackupError| match &kept {
        Some(k) => BackupError::RecoveryFailed {
            pgdata: pgdata.display().to_string(),
            reason: format!(
                "{e}; the replaced data directory is kept at {}",
                k.display()
            ),
            log_excerpt: String::new(),
        },
        None => e,
    };
    let config = configure_recovery(pgdata, &recovery_cfg).map_err(kept_note)?;
    let recovery = match &opts.start {
        Some(server) => Some(
            run_recovery(pgdata, server, runner)
                .await
                .map_err(kept_note)?,
        ),
        None => None,
    };
    Ok(PitrRestoreReport {
        backup_id: m.id.to_string(),
        backup_finished_at: m.finished_at,
        target: opts.recovery.target.clone(),
        pgdata: pgdata.clone(),
        replaced_existing: existing > 0,
        replaced_kept_at: kept,
        archiving_restored,
        config,
        restore_secs,
        recovery,
    })
}

/// The point-in-time restore as a destructive [`Step`]: run it through a
/// [`tej_core::Executor`] so replacing a data directory is confirmed (and refused in
/// production outside the maintenance window). `plan` makes every check of
/// [`plan_pitr_restore`] (a target beyond the archive is refused there) and touches nothing.
pub struct PitrRestoreStep {
    /// Base backups and the WAL archive.
    pub source: Arc<dyn BaseBackupSource>,
    /// Starts pg_ctl and psql.
    pub runner: Arc<dyn CommandRunner>,
    /// Options; `replace_existing` is implied by confirmation.
    pub opts: PitrRestoreOptions,
}

impl PitrRestoreStep {
    fn confirmed_opts(&self) -> PitrRestoreOptions {
        PitrRestoreOptions {
            replace_existing: true,
            ..self.opts.clone()
        }
    }
}

#[async_trait]
impl Step for PitrRestoreStep {
    fn name(&self) -> String {
        "pitr-restore".into()
    }

    fn risk(&self) -> Risk {
        Risk::Destructive
    }

    fn target(&self) -> String {
        format!("data directory {}", self.opts.pgdata.display())
    }

    async fn plan(&self) -> Result<Plan, StepError> {
        let opts = self.confirmed_opts();
        let (m, existing) = plan_pitr_restore(&*self.source, &opts).await?;
        let mut actions = vec![format!(
            "restore base backup {} (finished {}{})",
            m.id,
            m.finished_at,
            m.physical
                .as_ref()
                .map(|p| format!(
                    ", WAL {}..{} on timeline {}",
                    p.start_lsn, p.stop_lsn, p.timeline
                ))
                .unwrap_or_default()
        )];
        actions.push(if existing > 0 {
            format!(
                "REPLACE the existing data directory {} ({existing} entries): once the restored copy is complete the old one is renamed to {}.tej-replaced-TIME and kept (with its pg_wal), and its archive settings are carried over",
                opts.pgdata.display(),
                opts.pgdata.display()
            )
        } else {
            format!("into the empty data directory {}", opts.pgdata.display())
        });
        actions.push(format!(
            "write into postgresql.auto.conf: {}",
            opts.recovery
                .settings()
                .iter()
                .map(
                    |(k, v)| if k == "restore_command" || k == "archive_command" {
                        format!("{k} = '{}'", tej_core::secret::redact_url_passwords(v))
                    } else {
                        format!("{k} = '{v}'")
                    }
                )
                .collect::<Vec<_>>()
                .join(", ")
        ));
        actions.push(
            "remove stale recovery targets and standby.signal; create recovery.signal".into(),
        );
        if let Some(s) = &opts.start {
            actions.push(format!(
                "start the server{} and follow recovery to {} (then {})",
                s.port.map(|p| format!(" on port {p}")).unwrap_or_default(),
                opts.recovery.target,
                opts.recovery.action
            ));
        }
        Ok(Plan::of(self, actions))
    }

    async fn apply(&self) -> Result<StepOutput, StepError> {
        let r = restore_pitr(&*self.source, &*self.runner, &self.confirmed_opts()).await?;
        let summary = match &r.recovery {
            Some(rec) => format!(
                "restored {} into {} and recovered to {} (stopped at {}, last transaction {}){}",
                r.backup_id,
                r.pgdata.display(),
                r.target,
                rec.stopped_at_lsn
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "?".into()),
                rec.stopped_at_time
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "?".into()),
                if rec.promoted {
                    ", promoted"
                } else if rec.paused {
                    ", paused"
                } else {
                    ""
                }
            ),
            None => format!(
                "restored {} into {}, recovery to {} configured (start the server to replay)",
                r.backup_id,
                r.pgdata.display(),
                r.target
            ),
        };
        let mut summary = summary;
        if let Some(k) = &r.replaced_kept_at {
            summary.push_str(&format!(
                "; the replaced data directory is kept at {} (its pg_wal may hold WAL never archived: remove it once the restored server is verified)",
                k.display()
            ));
        }
        if let Some(mode) = &r.archiving_restored {
            summary.push_str(&format!(
                "; archive_mode = {mode} and archive_command carried over from it"
            ));
        }
        Ok(StepOutput {
            summary,
            findings: Vec::new(),
            data: serde_json::to_value(&r).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::{DEFAULT_WAL_SEGMENT_SIZE, WalFileName};
    use crate::manifest::BackupKind;
    use crate::pitr::choose::tests::manifest;
    use tej_core::{Calendar, Environment, Executor, FakeClock, Fixed, Guard, Outcome, Procedure};

    fn horizon() -> ArchiveHorizon {
        ArchiveHorizon {
            segment: WalFileName::parse("000000010000000000000009", DEFAULT_WAL_SEGMENT_SIZE)
                .unwrap(),
            newest_push_time: "2025-01-16T10:00:00Z".parse().unwrap(),
        }
    }

    /// A source with one base backup (ending in segment 5) and an archive up to segment 9,
    /// whose `restore_base` writes a tiny data directory (or fails) `calls` times.
    fn source(calls: usize, fail: bool) -> MockBaseBackupSource {
        let mut s = MockBaseBackupSource::new();
        s.expect_archive_horizon().returning(|| Ok(Some(horizon())));
        s.expect_base_backups().returning(|| {
            Ok(vec![manifest(
                BackupKind::Physical,
                "2025-01-16T02:00:00Z",
                0x500_0100,
            )])
        });
        s.expect_restore_base()
            .times(calls)
            .returning(move |_, dir| {
                std::fs::write(dir.join("PG_VERSION"), "15\n").unwrap();
                std::fs::write(
                    dir.join("postgresql.auto.conf"),
                    "recovery_target_name = 'stale'\n",
                )
                .unwrap();
                if fail {
                    return Err(BackupError::Corrupt {
                        repo: "r".into(),
                        id: "b".into(),
                        object: "base.tar".into(),
                        reason: "checksum mismatch".into(),
                    });
                }
                std::fs::write(dir.join("backup_label"), "START WAL LOCATION: 0/5000028\n")
                    .unwrap();
                Ok(())
            });
        s
    }

    fn opts(pgdata: &Path, target: RecoveryTarget) -> PitrRestoreOptions {
        let mut o = PitrRestoreOptions::new(pgdata, RecoveryConfig::new("cp /a/%f %p", target));
        o.owner = None;
        o
    }

    fn old_cluster(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("PG_VERSION"), "15\n").unwrap();
        std::fs::write(dir.join("old-only"), "x").unwrap();
    }

    #[tokio::test]
    async fn refusals_happen_before_anything_is_touched() {
        let d = tempfile::tempdir().unwrap();
        let pgdata = d.path().join("main");
        old_cluster(&pgdata);
        let s = source(0, false);
        let runner = tej_core::MockCommandRunner::new();
        let beyond = RecoveryTarget::Time("2025-01-16T10:00:01Z".parse().unwrap());
        let mut o = opts(&pgdata, beyond);
        o.replace_existing = true;
        let e = restore_pitr(&s, &runner, &o).await.unwrap_err();
        assert!(matches!(e, BackupError::TargetBeyondArchive { .. }), "{e}");
        let before = RecoveryTarget::Time("2025-01-16T01:00:00Z".parse().unwrap());
        let mut o = opts(&pgdata, before);
        o.replace_existing = true;
        let e = restore_pitr(&s, &runner, &o).await.unwrap_err();
        assert!(matches!(e, BackupError::NoBaseBackup { .. }), "{e}");
        let e = restore_pitr(&s, &runner, &opts(&pgdata, RecoveryTarget::Immediate))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, BackupError::DataDirInUse { reason, .. } if reason.contains("2 entries")),
            "{e}"
        );
        assert!(pgdata.join("old-only").exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn a_named_base_backup_is_used_or_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut s = MockBaseBackupSource::new();
        s.expect_archive_horizon().returning(|| Ok(Some(horizon())));
        s.expect_base_backups().returning(|| {
            Ok(vec![
                manifest(BackupKind::Physical, "2025-01-15T02:00:00Z", 0x300_0100),
                manifest(BackupKind::Physical, "2025-01-16T02:00:00Z", 0x500_0100),
            ])
        });
        let mut o = opts(&d.path().join("x"), RecoveryTarget::Name("before".into()));
        let (m, _) = plan_pitr_restore(&s, &o).await.unwrap();
        assert!(m.id.as_str().starts_with("20250116"));
        o.base_backup = Some("20250115T020000Z-main".into());
        let (m, _) = plan_pitr_restore(&s, &o).await.unwrap();
        assert!(m.id.as_str().starts_with("20250115"));
        o.recovery.target = RecoveryTarget::Time("2025-01-15T01:00:00Z".parse().unwrap());
        assert!(matches!(
            plan_pitr_restore(&s, &o).await.unwrap_err(),
            BackupError::NoBaseBackup { .. }
        ));
        o.base_backup = Some("20250101T000000Z-main".into());
        let e = plan_pitr_restore(&s, &o).await.unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    /// A runner that, when recovery starts the server, tries to take prune's exclusive lock
    /// of `repo` (recording whether it was refused), then fails the start.
    struct PruneProbe {
        repo: crate::repo::Repository,
        refused: std::sync::Mutex<Option<bool>>,
    }

    #[async_trait]
    impl CommandRunner for PruneProbe {
        async fn run(
            &self,
            spec: tej_core::CommandSpec,
        ) -> Result<tej_core::CommandOutput, tej_core::CommandError> {
            let taken = crate::lock::RepoLock::acquire_repository(
                &self.repo,
                crate::lock::LockMode::Exclusive,
                "prune",
                &crate::lock::LockOptions::default(),
                Timestamp::now(),
            )
            .await;
            if let Ok(l) = taken {
                *self.refused.lock().unwrap() = Some(false);
                l.release().await.unwrap();
            } else {
                *self.refused.lock().unwrap() = Some(true);
            }
            Err(tej_core::CommandError::NotFound {
                program: spec.program.clone(),
                package: None,
            })
        }
        async fn spawn(
            &self,
            _spec: tej_core::CommandSpec,
        ) -> Result<tej_core::RunningCommand, tej_core::CommandError> {
            unreachable!("recovery spawns nothing")
        }
    }

    #[tokio::test]
    async fn the_archive_is_held_from_the_checks_to_the_end_of_recovery() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        let repo = crate::repo::Repository::open(root.to_str().unwrap())
            .await
            .unwrap();
        for seg in 5..=9 {
            let p = root.join(format!("wal/1/00000001000000000000000{seg}.tejwal"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let probe = PruneProbe {
            repo: repo.clone(),
            refused: std::sync::Mutex::new(None),
        };
        let mut o = opts(&d.path().join("new"), RecoveryTarget::Latest);
        o.wal_archive = Some(WalArchive::new(repo.clone()));
        o.start = Some(ServerOptions::new(d.path().join("server.log")));
        let e = restore_pitr(&source(1, false), &probe, &o)
            .await
            .unwrap_err();
        assert_eq!(
            *probe.refused.lock().unwrap(),
            Some(true),
            "a prune could take the repository while recovery read its WAL ({e})"
        );
        // Released at the end, on failure too.
        crate::lock::RepoLock::acquire_repository(
            &repo,
            crate::lock::LockMode::Exclusive,
            "prune",
            &crate::lock::LockOptions::default(),
            Timestamp::now(),
        )
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn an_empty_directory_is_filled_and_configured() {
        let d = tempfile::tempdir().unwrap();
        let pgdata = d.path().join("new");
        let s = source(1, false);
        let runner = tej_core::MockCommandRunner::new();
        let r = restore_pitr(&s, &runner, &opts(&pgdata, RecoveryTarget::Xid(1234)))
            .await
            .unwrap();
        assert!(!r.replaced_existing && r.recovery.is_none());
        assert_eq!(r.config.removed, vec!["recovery_target_name = 'stale'"]);
        let auto = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
        assert!(auto.contains("recovery_target_xid = '1234'") && !auto.contains("stale"));
        assert!(pgdata.join("recovery.signal").is_file());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&pgdata).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[tokio::test]
    async fn a_failed_copy_leaves_the_old_directory_as_it_was() {
        let d = tempfile::tempdir().unwrap();
        let pgdata = d.path().join("main");
        old_cluster(&pgdata);
        let s = source(1, true);
        let runner = tej_core::MockCommandRunner::new();
        let mut o = opts(&pgdata, RecoveryTarget::Latest);
        o.replace_existing = true;
        let e = restore_pitr(&s, &runner, &o).await.unwrap_err();
        assert!(matches!(e, BackupError::Corrupt { .. }), "{e}");
        assert!(pgdata.join("old-only").exists() && !pgdata.join("recovery.signal").exists());
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "staging left behind"
        );
        // and a failed copy into an empty directory leaves it empty
        let fresh = d.path().join("fresh");
        let s = source(1, true);
        assert!(
            restore_pitr(&s, &runner, &opts(&fresh, RecoveryTarget::Latest))
                .await
                .is_err()
        );
        assert_eq!(std::fs::read_dir(&fresh).unwrap().count(), 0);
    }

    fn guard(yes: bool) -> Guard {
        Guard {
            environment: Environment::Staging,
            calendar: Calendar::runbook(),
            clock: Arc::new(FakeClock::new("2025-01-16T06:30:00Z".parse().unwrap())),
            confirmer: Arc::new(Fixed(yes)),
            override_window: false,
        }
    }

    #[tokio::test]
    async fn the_step_replaces_only_when_confirmed() {
        let d = tempfile::tempdir().unwrap();
        let pgdata = d.path().join("main");
        old_cluster(&pgdata);
        let step = |calls| PitrRestoreStep {
            source: Arc::new(source(calls, false)),
            runner: Arc::new(tej_core::MockCommandRunner::new()),
            opts: opts(&pgdata, RecoveryTarget::Name("before-migration".into())),
        };
        let s = step(0);
        assert_eq!(s.risk(), Risk::Destructive);
        let plan = s.plan().await.unwrap();
        assert!(
            plan.actions
                .iter()
                .any(|a| a.starts_with("REPLACE the existing data directory")),
            "{plan:?}"
        );
        assert!(
            plan.actions
                .iter()
                .any(|a| a.contains("recovery_target_name = 'before-migration'"))
        );
        let refused = Executor::new(guard(false))
            .run(&Procedure::new("restore").step(s))
            .await;
        assert!(
            matches!(refused.steps[0].outcome, Outcome::Refused { .. }),
            "{refused:?}"
        );
        assert!(pgdata.join("old-only").exists());

        let done = Executor::new(guard(true))
            .run(&Procedure::new("restore").step(step(1)))
            .await;
        assert!(done.succeeded(), "{done:?}");
        assert!(!pgdata.join("old-only").exists() && pgdata.join("backup_label").exists());
        let out = done.steps[0].output.as_ref().unwrap();
        assert!(out.summary.contains("configured"), "{}", out.summary);
        assert_eq!(out.data["replaced_existing"], true);
    }
}

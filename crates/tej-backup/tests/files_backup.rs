//! File backups: round trips (local, encrypted, S3), corruption, refusing to overwrite.

mod logical_support;

use anyhow::{Context, Result, bail, ensure};
use logical_support::{age_keys, run_opts, s3_repo};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tej_backup::{
    BackupError, BackupKind, FileBackupOptions, FileRestoreOptions, FileRestoreStep, ObjectKey,
    Repository, VerifyOptions, create_file_backup, get_bytes, list_backups, put_bytes,
    restore_file_backup, verify_backup,
};
use tej_core::config::Environment;
use tej_core::{
    Calendar, Executor, FakeClock, Fixed, Guard, Outcome, Procedure, SystemClock,
    TokioCommandRunner,
};
use tej_testkit::S3Server;

fn set_mtime(p: &Path, secs: u64) -> Result<()> {
    let f = std::fs::File::open(p)?;
    f.set_modified(UNIX_EPOCH + Duration::from_secs(secs))?;
    Ok(())
}

/// A tree with nested directories, a relative and an absolute symlink, modes, an empty
/// directory, a 0-byte file and a 6 MiB file; and a second configured root (a config file).
fn make_tree(base: &Path) -> Result<(PathBuf, PathBuf)> {
    let up = base.join("uploads");
    std::fs::create_dir_all(up.join("avatars/2025/01"))?;
    std::fs::create_dir_all(up.join("empty"))?;
    std::fs::write(up.join("avatars/2025/01/u1.png"), b"\x89PNG fake avatar")?;
    std::fs::write(up.join("zero.bin"), b"")?;
    let mut big = Vec::with_capacity(6 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while big.len() < 6 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(format!("{x:016x} line of text {}\n", x % 977).as_bytes());
    }
    std::fs::write(up.join("avatars/big.log"), &big)?;
    std::fs::write(up.join("script.sh"), b"#!/bin/sh\necho hi\n")?;
    std::fs::set_permissions(up.join("script.sh"), std::fs::Permissions::from_mode(0o750))?;
    std::fs::write(up.join("private.key"), b"not really")?;
    std::fs::set_permissions(
        up.join("private.key"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    std::os::unix::fs::symlink("avatars/2025/01/u1.png", up.join("latest.png"))?;
    std::os::unix::fs::symlink("/nonexistent/target", up.join("dangling"))?;
    std::fs::write(up.join("cache.tmp"), b"excluded")?;
    std::fs::create_dir_all(up.join("cache"))?;
    std::fs::write(up.join("cache/x"), b"excluded too")?;
    set_mtime(&up.join("avatars/2025/01/u1.png"), 1_600_000_000)?;
    std::fs::set_permissions(
        up.join("avatars/2025"),
        std::fs::Permissions::from_mode(0o710),
    )?;
    set_mtime(&up.join("avatars/2025"), 1_500_000_000)?;
    let conf = base.join("etc/app.toml");
    std::fs::create_dir_all(conf.parent().context("parent")?)?;
    std::fs::write(&conf, b"[app]\nname = \"skillswap\"\n")?;
    Ok((up, conf))
}

fn options(paths: Vec<PathBuf>, target: &str) -> FileBackupOptions {
    let mut o = FileBackupOptions::new(paths);
    o.exclude = vec!["**/*.tmp".into(), "**/uploads/cache".into()];
    o.run = run_opts(target);
    o
}

/// One entry of a tree: relative path, kind, mode, mtime, content or link target.
type Entry = (PathBuf, String, u32, i64, Vec<u8>);

/// Everything under `root`, sorted by path.
fn snapshot(root: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p)?;
        let rel = p.strip_prefix(root)?.to_path_buf();
        let (kind, data) = if m.file_type().is_symlink() {
            (
                "link",
                std::fs::read_link(&p)?
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else if m.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
            ("dir", Vec::new())
        } else {
            ("file", std::fs::read(&p)?)
        };
        // Symlink modes and times are not meaningful on Linux.
        let (mode, mtime) = if kind == "link" {
            (0, 0)
        } else {
            (m.mode() & 0o7777, m.mtime())
        };
        out.push((rel, kind.to_string(), mode, mtime, data));
    }
    out.sort();
    Ok(out)
}

/// Checks that `restored` holds `src` (as stored: under its absolute name), minus excludes.
fn assert_restored(src: &Path, restored: &Path) -> Result<()> {
    let name: PathBuf = src.components().skip(1).collect();
    let want: Vec<_> = snapshot(src)?
        .into_iter()
        .filter(|(p, ..)| {
            let s = p.to_string_lossy();
            !s.ends_with(".tmp") && !s.starts_with("cache")
        })
        .collect();
    let got = snapshot(&restored.join(name))?;
    if want.len() != got.len() {
        bail!(
            "restored tree differs: {:?} vs {:?}",
            want.iter().map(|w| &w.0).collect::<Vec<_>>(),
            got.iter().map(|w| &w.0).collect::<Vec<_>>()
        );
    }
    for (w, g) in want.iter().zip(&got) {
        ensure!(
            w.0 == g.0 && w.1 == g.1 && w.4 == g.4,
            "{:?} ({}) differs",
            w.0,
            w.1
        );
        // The root directory's own mode/time come from the staging dir's rename only when
        // the root is the restore target itself; here the root is below it.
        ensure!(w.2 == g.2, "{:?}: mode {:o} vs {:o}", w.0, w.2, g.2);
        ensure!(w.3 == g.3, "{:?}: mtime {} vs {}", w.0, w.3, g.3);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_round_trips_with_links_modes_times_and_excludes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (up, conf) = make_tree(&dir.path().join("src"))?;
    // A FIFO is left out, and reported.
    nix::unistd::mkfifo(
        &up.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )?;
    set_mtime(&up, 1_700_000_000)?;
    let repo = Repository::open(dir.path().join("repo").to_str().context("utf-8")?).await?;
    let r = create_file_backup(
        std::slice::from_ref(&repo),
        &options(vec![up.clone(), conf.clone()], "files"),
        &SystemClock,
    )
    .await?;
    std::fs::remove_file(up.join("pipe"))?;
    set_mtime(&up, 1_700_000_000)?;
    ensure!(r.backup.succeeded(), "{:?}", r.backup.repositories);
    ensure!(r.backup.kind == BackupKind::Files);
    ensure!(r.symlinks == 2, "{r:?}");
    ensure!(r.files == 6 && r.directories == 5, "files: {r:?}");
    ensure!(r.skipped_special.len() == 1 && r.skipped_special[0].ends_with("/pipe"));
    ensure!(r.backup.raw_size > 6 << 20);
    ensure!(r.backup.stored_size < r.backup.raw_size / 2, "compressed");
    ensure!(r.backup.objects == vec!["files.tar.zst".to_string()]);
    let listed = list_backups(&repo).await?;
    ensure!(listed.len() == 1 && listed[0].kind == BackupKind::Files);
    let m = repo.resolve("latest").await?;
    ensure!(m.paths == vec![up.display().to_string(), conf.display().to_string()]);
    verify_backup(
        &TokioCommandRunner,
        &repo,
        "latest",
        &VerifyOptions::default(),
        &SystemClock,
    )
    .await?;

    // Restore into a directory that does not exist yet.
    let out = dir.path().join("restored");
    let rr = restore_file_backup(&repo, "latest", &out, &FileRestoreOptions::default()).await?;
    ensure!(rr.files == 6 && rr.symlinks == 2, "{rr:?}");
    assert_restored(&up, &out)?;
    let conf_rel: PathBuf = conf.components().skip(1).collect();
    ensure!(std::fs::read(out.join(conf_rel))? == std::fs::read(&conf)?);
    // Nothing is left beside it.
    let siblings: Vec<_> = std::fs::read_dir(dir.path())?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tej-restore"))
        .collect();
    ensure!(siblings.is_empty(), "staging left behind");

    // Into an empty existing directory too.
    let empty = dir.path().join("empty-target");
    std::fs::create_dir(&empty)?;
    restore_file_backup(&repo, "latest", &empty, &FileRestoreOptions::default()).await?;
    assert_restored(&up, &empty)?;

    // A restore of a file backup is not a database restore, and vice versa.
    ensure!(matches!(
        tej_backup::restore_backup(
            &TokioCommandRunner,
            &repo,
            "latest",
            &tej_backup::RestoreOptions::new(tej_backup::DbTarget::new("postgres://x@127.0.0.1/x")),
        )
        .await,
        Err(BackupError::InvalidOptions(_))
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_fail_before_anything_is_stored() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = Repository::open(dir.path().join("repo").to_str().context("utf-8")?).await?;
    let missing = dir.path().join("no-such-dir");
    let r = create_file_backup(
        std::slice::from_ref(&repo),
        &options(vec![missing], "files"),
        &SystemClock,
    )
    .await;
    match r {
        Err(BackupError::InvalidOptions(m)) if m.contains("no-such-dir") => {}
        other => bail!("expected a clear error naming the path, got {other:?}"),
    }
    let r = create_file_backup(
        std::slice::from_ref(&repo),
        &options(Vec::new(), "files"),
        &SystemClock,
    )
    .await;
    ensure!(matches!(r, Err(BackupError::InvalidOptions(_))));
    ensure!(list_backups(&repo).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_to_s3_round_trips_and_a_wrong_key_fails() -> Result<()> {
    let s3 = S3Server::start()?;
    let dir = tempfile::tempdir()?;
    let (up, _conf) = make_tree(&dir.path().join("src"))?;
    let keys = age_keys(dir.path())?;
    let local = Repository::open(dir.path().join("repo").to_str().context("utf-8")?).await?;
    let remote = s3_repo(&s3, "files").await?;
    let mut opts = options(vec![up.clone()], "uploads");
    opts.run.encryption = keys.clone();
    let repos = vec![local.clone(), remote.clone()];
    let r = create_file_backup(&repos, &opts, &SystemClock).await?;
    ensure!(r.backup.succeeded() && r.backup.encrypted);
    ensure!(r.backup.objects == vec!["files.tar.zst.age".to_string()]);
    for repo in &repos {
        let v = VerifyOptions {
            encryption: keys.clone(),
            ..VerifyOptions::default()
        };
        verify_backup(&TokioCommandRunner, repo, "latest", &v, &SystemClock).await?;
    }
    let out = dir.path().join("from-s3");
    let ro = FileRestoreOptions {
        encryption: keys.clone(),
        ..FileRestoreOptions::default()
    };
    restore_file_backup(&remote, r.backup.id.as_str(), &out, &ro).await?;
    assert_restored(&up, &out)?;

    // A wrong key: a decryption error, and no directory appears.
    let wrong = age_keys(&dir.path().join("src"))?;
    let bad = dir.path().join("wrong-key");
    let ro = FileRestoreOptions {
        encryption: wrong,
        ..FileRestoreOptions::default()
    };
    match restore_file_backup(&remote, "latest", &bad, &ro).await {
        Err(BackupError::Decrypt { object, .. }) if object.ends_with("files.tar.zst.age") => {}
        other => bail!("expected a decryption error, got {other:?}"),
    }
    ensure!(!bad.exists(), "a failed restore left {}", bad.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_is_detected_by_verify_and_restore() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (up, _conf) = make_tree(&dir.path().join("src"))?;
    let repo = Repository::open(dir.path().join("repo").to_str().context("utf-8")?).await?;
    for algo in [
        tej_backup::CompressionAlgo::Zstd,
        tej_backup::CompressionAlgo::None,
    ] {
        let mut opts = options(vec![up.clone()], "files");
        opts.run.compression.algorithm = algo;
        let r = create_file_backup(std::slice::from_ref(&repo), &opts, &SystemClock).await?;
        let key = ObjectKey::new(format!("backups/{}/{}", r.backup.id, r.backup.objects[0]))?;
        let mut bytes = get_bytes(&*repo.store, &key, None).await?;
        let i = bytes.len() / 2;
        bytes[i] ^= 0x01;
        put_bytes(&*repo.store, &key, bytes, false).await?;
        let v = verify_backup(
            &TokioCommandRunner,
            &repo,
            r.backup.id.as_str(),
            &VerifyOptions::default(),
            &SystemClock,
        )
        .await;
        match v {
            Err(BackupError::Corrupt { object, .. }) if object == key.as_str() => {}
            other => bail!("{algo}: expected corruption of {key:?}, got {other:?}"),
        }
        let out = dir.path().join(format!("restored-{algo}"));
        let rr = restore_file_backup(
            &repo,
            r.backup.id.as_str(),
            &out,
            &FileRestoreOptions::default(),
        )
        .await;
        match rr {
            Err(BackupError::Corrupt { object, .. }) if object == key.as_str() => {}
            other => bail!("{algo}: restore: expected corruption, got {other:?}"),
        }
        ensure!(!out.exists(), "a corrupt backup was moved in place");
    }
    Ok(())
}

fn executor(yes: bool) -> Executor {
    Executor::new(Guard {
        environment: Environment::Staging,
        calendar: Calendar::runbook(),
        clock: Arc::new(FakeClock::new(
            "2025-01-16T06:30:00Z".parse().unwrap_or_default(),
        )),
        confirmer: Arc::new(Fixed(yes)),
        override_window: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_over_existing_files_needs_confirmation() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (up, _conf) = make_tree(&dir.path().join("src"))?;
    let repo = Repository::open(dir.path().join("repo").to_str().context("utf-8")?).await?;
    create_file_backup(
        std::slice::from_ref(&repo),
        &options(vec![up.clone()], "files"),
        &SystemClock,
    )
    .await?;
    let target = dir.path().join("live");
    let rel: PathBuf = up.components().skip(1).collect();
    let victim = target.join(&rel).join("avatars/2025/01/u1.png");
    std::fs::create_dir_all(victim.parent().context("parent")?)?;
    std::fs::write(&victim, b"newer upload")?;

    // The plain call refuses a non-empty target.
    match restore_file_backup(&repo, "latest", &target, &FileRestoreOptions::default()).await {
        Err(BackupError::Refused(_)) => {}
        other => bail!("expected a refusal, got {other:?}"),
    }
    ensure!(std::fs::read(&victim)? == b"newer upload");

    // The step, unconfirmed: refused, nothing touched.
    let step = || FileRestoreStep {
        repo: repo.clone(),
        selector: "latest".into(),
        target_dir: target.clone(),
        opts: FileRestoreOptions::default(),
    };
    let report = executor(false)
        .run(&Procedure::new("restore-files").step(step()))
        .await;
    ensure!(
        matches!(report.steps[0].outcome, Outcome::Refused { .. }),
        "{:?}",
        report.steps[0].outcome
    );
    ensure!(
        report.steps[0]
            .actions
            .iter()
            .any(|a| a.contains("NOT empty"))
    );
    ensure!(std::fs::read(&victim)? == b"newer upload");

    // Confirmed: the backup's files replace the existing ones.
    let report = executor(true)
        .run(&Procedure::new("restore-files").step(step()))
        .await;
    ensure!(
        matches!(report.steps[0].outcome, Outcome::Applied),
        "{:?}",
        report.steps[0].outcome
    );
    ensure!(std::fs::read(&victim)? == b"\x89PNG fake avatar");
    assert_restored(&up, &target)?;
    Ok(())
}

/// Every path below `dir` with its content (files), target (symlinks) or nothing (dirs).
fn contents(dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            let p = e.path();
            let content = if ft.is_dir() {
                todo.push(p.clone());
                Vec::new()
            } else if ft.is_symlink() {
                std::fs::read_link(&p)?
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                std::fs::read(&p)?
            };
            out.push((p, content));
        }
    }
    out.sort();
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_backup_restored_over_existing_files_leaves_them_untouched() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (up, _conf) = make_tree(&dir.path().join("src"))?;
    let repo = Repository::open(dir.path().join("repo").to_str().context("utf-8")?).await?;
    for algo in [
        tej_backup::CompressionAlgo::None,
        tej_backup::CompressionAlgo::Zstd,
    ] {
        for damage in ["flip", "truncate"] {
            let mut opts = options(vec![up.clone()], "files");
            opts.run.compression.algorithm = algo;
            let r = create_file_backup(std::slice::from_ref(&repo), &opts, &SystemClock).await?;
            let key = ObjectKey::new(format!("backups/{}/{}", r.backup.id, r.backup.objects[0]))?;
            let mut bytes = get_bytes(&*repo.store, &key, None).await?;
            if damage == "flip" {
                // Late in the archive: the members before it extract fine.
                let i = bytes.len() * 9 / 10;
                bytes[i] ^= 0x01;
            } else {
                bytes.truncate(bytes.len() * 9 / 10);
            }
            put_bytes(&*repo.store, &key, bytes, false).await?;
            // The destination holds older copies of the backed-up files, and others.
            let target = dir.path().join(format!("live-{algo}-{damage}"));
            let rel: PathBuf = up.components().skip(1).collect();
            let mine = target.join(&rel);
            std::fs::create_dir_all(mine.join("avatars/2025/01"))?;
            std::fs::write(mine.join("avatars/2025/01/u1.png"), b"older upload")?;
            std::fs::write(mine.join("script.sh"), b"old script")?;
            std::fs::write(mine.join("only-here.txt"), b"not in the backup")?;
            let before = contents(&target)?;
            let ro = FileRestoreOptions {
                overwrite: true,
                ..FileRestoreOptions::default()
            };
            let rr = restore_file_backup(&repo, r.backup.id.as_str(), &target, &ro).await;
            ensure!(rr.is_err(), "{algo}/{damage}: a damaged backup restored");
            ensure!(
                contents(&target)? == before,
                "{algo}/{damage}: the destination changed"
            );
            let stray: Vec<_> = std::fs::read_dir(dir.path())?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tej-"))
                .collect();
            ensure!(stray.is_empty(), "{algo}/{damage}: staging left: {stray:?}");
        }
    }
    // Undamaged, the same restore replaces the backed-up files and keeps the others.
    let r = create_file_backup(
        std::slice::from_ref(&repo),
        &options(vec![up.clone()], "files"),
        &SystemClock,
    )
    .await?;
    let target = dir.path().join("live-good");
    let rel: PathBuf = up.components().skip(1).collect();
    let mine = target.join(&rel);
    std::fs::create_dir_all(mine.join("avatars/2025/01"))?;
    std::fs::write(mine.join("avatars/2025/01/u1.png"), b"older upload")?;
    std::fs::write(mine.join("only-here.txt"), b"not in the backup")?;
    let ro = FileRestoreOptions {
        overwrite: true,
        ..FileRestoreOptions::default()
    };
    restore_file_backup(&repo, r.backup.id.as_str(), &target, &ro).await?;
    ensure!(std::fs::read(mine.join("avatars/2025/01/u1.png"))? == b"\x89PNG fake avatar");
    ensure!(std::fs::read(mine.join("only-here.txt"))? == b"not in the backup");
    ensure!(std::fs::read_link(mine.join("latest.png"))? == Path::new("avatars/2025/01/u1.png"));
    ensure!(
        std::fs::metadata(mine.join("script.sh"))?
            .permissions()
            .mode()
            & 0o777
            == 0o750
    );
    Ok(())
}

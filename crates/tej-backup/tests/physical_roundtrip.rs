//! Base backups of a real PostgreSQL 15 cluster: backed up to a local and an S3
//! repository (encrypted and not), restored into fresh data directories that a server
//! then recovers from (with WAL from the cluster's archive) and whose data must equal
//! the source's; verify catches a flipped byte; a killed run is never listed and the
//! next run cleans it up.

mod logical_support;

use anyhow::{Context, Result, bail, ensure};
use logical_support::{age_keys, s3_repo};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tej_backup::{
    ArchiveCheck, BackupError, BackupKind, BackupSelector, Backups, CancellationToken, DbTarget,
    EncryptionOptions, LogicalBackupOptions, PhysicalBackupOptions, PhysicalRestoreOptions,
    Repository, RunOptions, VerifyOptions, create_physical_backup, list_backups,
    restore_physical_backup, verify_backup,
};
use tej_core::{SystemClock, TokioCommandRunner};
use tej_testkit::{PgCluster, PgClusterOptions, S3Server};

const DATA_SQL: &str = r#"
CREATE TABLE items (
  id serial PRIMARY KEY,
  name text NOT NULL,
  body text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT '2025-01-01T00:00:00Z'
);
INSERT INTO items (name, body)
  SELECT 'item ' || i, repeat(md5(i::text) || ' teaches ' || (i % 97)::text || ' ', 1 + i % 4)
  FROM generate_series(1, 30000) i;
CREATE INDEX items_name ON items (name);
CREATE UNLOGGED TABLE scratch (id int);
INSERT INTO scratch SELECT generate_series(1, 1000);
"#;

const CHECKSUM: &str =
    "SELECT count(*) || ':' || md5(string_agg(id || name || body, ',' ORDER BY id)) FROM items";

/// A cluster archiving WAL with `cp` into a directory, with database `app` filled.
fn archiving_cluster() -> Result<(PgCluster, tempfile::TempDir)> {
    use std::os::unix::fs::PermissionsExt;
    let archive = tempfile::tempdir()?;
    std::fs::set_permissions(archive.path(), std::fs::Permissions::from_mode(0o777))?;
    let pg = PgCluster::start_with(PgClusterOptions {
        archive_mode: true,
        archive_command: Some(format!("cp %p {}/%f", archive.path().display())),
        ..PgClusterOptions::default()
    })?;
    pg.create_database("app")?;
    pg.psql("app", DATA_SQL)?;
    Ok((pg, archive))
}

fn postgres_ids() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let u = nix::unistd::User::from_name("postgres").ok().flatten()?;
    Some((u.uid.as_raw(), u.gid.as_raw()))
}

fn run_opts(target: &str) -> RunOptions {
    RunOptions {
        target: Some(target.into()),
        cleanup_older_than: Duration::ZERO,
        ..RunOptions::default()
    }
}

fn restore_opts(keys: &EncryptionOptions) -> PhysicalRestoreOptions {
    PhysicalRestoreOptions {
        encryption: keys.clone(),
        owner: postgres_ids(),
        ..PhysicalRestoreOptions::default()
    }
}

fn psql_port(port: u16, db: &str, sql: &str) -> Result<String> {
    let out = Command::new(PgCluster::bin_dir().join("psql"))
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .arg(format!("postgres://postgres@127.0.0.1:{port}/{db}"))
        .args(["-c", sql])
        .output()
        .context("run psql")?;
    ensure!(
        out.status.success(),
        "psql on port {port}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A server started on a restored data directory. Recovery settings are written here,
/// by the test (the PITR module owns them in the library).
struct Restored {
    data: PathBuf,
    port: u16,
    pg_ctl: Command,
}

impl Restored {
    fn start(pg: &PgCluster, data: &Path, archive: &Path) -> Result<Restored> {
        use std::io::Write;
        let port = tej_testkit::free_port();
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        writeln!(
            conf,
            "\nport = {port}\narchive_mode = off\nrestore_command = 'cp {}/%f %p'\n\
             recovery_target = 'immediate'\nrecovery_target_action = 'promote'",
            archive.display()
        )?;
        std::fs::write(data.join("recovery.signal"), b"")?;
        if let Some((uid, gid)) = postgres_ids() {
            std::os::unix::fs::chown(data.join("recovery.signal"), Some(uid), Some(gid))?;
        }
        let log = data.with_extension("log");
        let mut start = pg.pg_command("pg_ctl");
        start
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "start"]);
        let out = start.output()?;
        if !out.status.success() {
            bail!(
                "start the restored server: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let mut stop = pg.pg_command("pg_ctl");
        stop.arg("-D")
            .arg(data)
            .args(["-m", "immediate", "-w", "stop"]);
        let r = Restored {
            data: data.to_path_buf(),
            port,
            pg_ctl: stop,
        };
        // Recovery to the backup's consistency point, then promotion.
        for _ in 0..300 {
            if psql_port(port, "postgres", "SELECT pg_is_in_recovery()")
                .ok()
                .as_deref()
                == Some("f")
            {
                return Ok(r);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "the restored server never left recovery:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    }

    fn psql(&self, db: &str, sql: &str) -> Result<String> {
        psql_port(self.port, db, sql)
    }

    fn stop(mut self) -> Result<()> {
        let out = self.pg_ctl.output()?;
        ensure!(
            out.status.success(),
            "stop the server on {}: {}",
            self.data.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

fn options(pg: &PgCluster, target: &str) -> PhysicalBackupOptions {
    let mut o = PhysicalBackupOptions::new(DbTarget::new(pg.url("postgres")));
    o.run = run_opts(target);
    o
}

/// For a cluster without archiving (the copy itself is under test): no archive check,
/// which would refuse `archive_mode = off`.
fn unarchived_options(pg: &PgCluster, target: &str) -> PhysicalBackupOptions {
    let mut o = options(pg, target);
    o.archive_check = ArchiveCheck::Off;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_backups_round_trip_via_local_and_s3_with_and_without_encryption() -> Result<()> {
    let (pg, archive) = archiving_cluster()?;
    let s3 = S3Server::start()?;
    let dir = tempfile::tempdir()?;
    let keys = age_keys(dir.path())?;
    let local = Repository::open(dir.path().join("repo").to_str().context("utf-8")?).await?;
    let remote = s3_repo(&s3, "cluster/base").await?;
    let source = pg.psql("app", CHECKSUM)?;
    ensure!(source.starts_with("30000:"), "{source}");

    // 1. Encrypted, into both repositories, cut small so large files come in parts.
    let mut opts = options(&pg, "main");
    opts.run.encryption = keys.clone();
    opts.part_size = 1 << 20;
    opts.small_file = 256 * 1024;
    let r = create_physical_backup(&[local.clone(), remote.clone()], &opts, &SystemClock).await?;
    ensure!(r.backup.succeeded(), "{:?}", r.backup.repositories);
    ensure!(r.backup.encrypted);
    let sysid = pg.psql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    )?;
    let p = &r.physical;
    ensure!(
        p.system_identifier.to_string() == sysid,
        "{} != {sysid}",
        p.system_identifier
    );
    ensure!(
        p.timeline == 1 && p.pg_major == 15 && p.wal_segment_size == 16 << 20,
        "{p:?}"
    );
    ensure!(p.start_lsn < p.stop_lsn, "{p:?}");
    ensure!(
        p.start_wal <= p.stop_wal && p.start_wal.starts_with("00000001"),
        "{p:?}"
    );
    ensure!(
        archive.path().join(&p.stop_wal).exists(),
        "pg_backup_stop waited for {} to be archived",
        p.stop_wal
    );
    ensure!(
        r.backup.objects.iter().any(|o| o.contains(".part0001")),
        "no file was cut into parts: {:?}",
        r.backup.objects
    );
    for repo in [&local, &remote] {
        let list = list_backups(repo).await?;
        ensure!(
            list.len() == 1 && list[0].kind == BackupKind::Physical,
            "{list:?}"
        );
        let m = repo.resolve("latest").await?;
        ensure!(m.physical.as_ref() == Some(p), "manifest {:?}", m.physical);
    }
    let v = verify_backup(
        &TokioCommandRunner,
        &remote,
        "latest",
        &VerifyOptions {
            encryption: keys.clone(),
            ..VerifyOptions::default()
        },
        &SystemClock,
    )
    .await?;
    ensure!(v.objects.len() == r.backup.objects.len());

    // Without the key, a restore fails before writing anything useful.
    let no_key = pg.base_dir().join("no-key");
    let e = restore_physical_backup(
        &remote,
        "latest",
        &no_key,
        &restore_opts(&EncryptionOptions::default()),
    )
    .await
    .err()
    .context("restore without a key succeeded")?;
    ensure!(matches!(e, BackupError::Decrypt { .. }), "{e}");

    // Restore from S3, recover, compare.
    let a = pg.base_dir().join("restored-a");
    let rr = restore_physical_backup(&remote, "latest", &a, &restore_opts(&keys)).await?;
    ensure!(rr.files > 500, "{rr:?}");
    ensure!(a.join("backup_label").exists() && a.join("pg_wal/archive_status").is_dir());
    let server = Restored::start(&pg, &a, archive.path())?;
    ensure!(
        server.psql("app", CHECKSUM)? == source,
        "restored data differs"
    );
    ensure!(
        server.psql("app", "SELECT count(*) FROM scratch")? == "0",
        "an unlogged table comes back empty"
    );
    server.psql(
        "app",
        "CREATE EXTENSION amcheck; SELECT bt_index_check('items_pkey', true); \
         SELECT bt_index_check('items_name', true)",
    )?;
    server.stop()?;

    // A non-empty directory is refused without confirmation.
    let e = restore_physical_backup(&remote, "latest", &a, &restore_opts(&keys))
        .await
        .err()
        .context("restore into a non-empty directory succeeded")?;
    ensure!(matches!(e, BackupError::Refused(_)), "{e}");

    // 2. More rows, then a default (unencrypted) backup into the local repository.
    pg.psql(
        "app",
        "INSERT INTO items (name, body) SELECT 'late ' || i, 'after the first backup' FROM generate_series(1, 500) i",
    )?;
    let source2 = pg.psql("app", CHECKSUM)?;
    let r2 = create_physical_backup(
        std::slice::from_ref(&local),
        &options(&pg, "main"),
        &SystemClock,
    )
    .await?;
    ensure!(r2.backup.succeeded() && !r2.backup.encrypted);
    ensure!(list_backups(&local).await?.len() == 2);
    let b = pg.base_dir().join("restored-b");
    restore_physical_backup(
        &local,
        "latest",
        &b,
        &restore_opts(&EncryptionOptions::default()),
    )
    .await?;
    let server = Restored::start(&pg, &b, archive.path())?;
    let got = server.psql("app", CHECKSUM)?;
    ensure!(
        got == source2 && got.starts_with("30500:"),
        "{got} != {source2}"
    );
    server.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_corrupt_object_and_restore_refuses_it() -> Result<()> {
    let pg = PgCluster::start()?;
    pg.create_database("app")?;
    pg.psql("app", DATA_SQL)?;
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("repo");
    let repo = Repository::open(root.to_str().context("utf-8")?).await?;
    let mut opts = unarchived_options(&pg, "main");
    opts.part_size = 1 << 20;
    let r = create_physical_backup(std::slice::from_ref(&repo), &opts, &SystemClock).await?;
    ensure!(r.backup.succeeded());
    let ok = verify_backup(
        &TokioCommandRunner,
        &repo,
        "latest",
        &VerifyOptions::default(),
        &SystemClock,
    )
    .await?;
    ensure!(ok.objects.len() == r.backup.objects.len());

    let m = repo.resolve("latest").await?;
    let victim = m
        .objects
        .iter()
        .find(|o| o.name.starts_with("bundles/"))
        .context("a bundle")?;
    let path = root.join(&victim.key);
    let mut bytes = std::fs::read(&path)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes)?;

    let e = verify_backup(
        &TokioCommandRunner,
        &repo,
        "latest",
        &VerifyOptions {
            record: true,
            ..VerifyOptions::default()
        },
        &SystemClock,
    )
    .await
    .err()
    .context("verify passed a flipped byte")?;
    match &e {
        BackupError::Corrupt { object, .. } => ensure!(object == &victim.key, "{e}"),
        other => bail!("expected Corrupt, got {other}"),
    }
    let listed = list_backups(&repo).await?;
    ensure!(
        listed[0].verification.as_ref().is_some_and(|v| !v.ok),
        "the failed verification is recorded: {:?}",
        listed[0].verification
    );
    let target = pg.base_dir().join("restored");
    let e = restore_physical_backup(&repo, "latest", &target, &PhysicalRestoreOptions::default())
        .await
        .err()
        .context("restore used a corrupt object")?;
    ensure!(matches!(e, BackupError::Corrupt { .. }), "{e}");
    Ok(())
}

const CHILD_VAR: &str = "TEJ_TEST_PHYSICAL_KILLED_CHILD";

/// The child's role: a slow backup (each object's end waits) until the parent kills it.
async fn slow_backup_child(spec: &str) -> Result<()> {
    let (url, repo) = spec.split_once('|').context("child spec")?;
    let repo = Repository::open(repo).await?;
    let mut opts = PhysicalBackupOptions::new(DbTarget::new(url));
    opts.run = run_opts("main");
    opts.archive_check = ArchiveCheck::Off;
    opts.jobs = 1;
    opts.run.progress = Some(std::sync::Arc::new(|e: &tej_backup::ProgressEvent| {
        if e.done {
            std::thread::sleep(Duration::from_millis(300));
        }
    }));
    create_physical_backup(&[repo], &opts, &SystemClock).await?;
    bail!("the backup finished before it was killed")
}

fn stored_data_objects(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.join("backups")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "zst") {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backup_is_not_listed_and_the_next_run_cleans_up() -> Result<()> {
    if let Ok(spec) = std::env::var(CHILD_VAR) {
        return slow_backup_child(&spec).await;
    }
    let pg = PgCluster::start()?;
    pg.create_database("app")?;
    pg.psql("app", DATA_SQL)?;
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("repo");
    let repo = Repository::open(root.to_str().context("utf-8")?).await?;
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "a_killed_backup_is_not_listed_and_the_next_run_cleans_up",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_VAR,
            format!("{}|{}", pg.url("postgres"), root.display()),
        )
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let mut seen = false;
    for _ in 0..1200 {
        if stored_data_objects(&root) >= 2 {
            seen = true;
            break;
        }
        if let Some(st) = child.try_wait()? {
            bail!("the child ended ({st}) before it stored anything");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    child.kill()?;
    child.wait()?;
    ensure!(seen, "the child stored no object within 30 s");

    // Not a backup: not listed, seen as an unfinished run.
    ensure!(list_backups(&repo).await?.is_empty());
    let inv = repo.inventory().await?;
    ensure!(
        inv.incomplete.len() == 1 && inv.incomplete[0].objects >= 2,
        "{inv:?}"
    );
    let killed = inv.incomplete[0].id.clone();

    // The next run takes over the dead run's lock, removes its objects, and succeeds
    // (the server ended the killed session's backup).
    let r = create_physical_backup(
        std::slice::from_ref(&repo),
        &unarchived_options(&pg, "main"),
        &SystemClock,
    )
    .await?;
    ensure!(r.backup.succeeded(), "{:?}", r.backup.repositories);
    ensure!(
        r.backup.repositories[0].cleaned_runs == vec![killed.clone()],
        "{:?}",
        r.backup.repositories[0]
    );
    let list = list_backups(&repo).await?;
    ensure!(list.len() == 1 && list[0].id == r.backup.id, "{list:?}");
    let inv = repo.inventory().await?;
    ensure!(
        inv.incomplete.len() == 1
            && inv.incomplete[0].id == killed
            && inv.incomplete[0].objects == 0,
        "{inv:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_door_restores_a_base_backup_and_refuses_a_logical_one() -> Result<()> {
    let (pg, archive) = archiving_cluster()?;
    let dir = tempfile::tempdir()?;
    let repo = Repository::open(dir.path().join("repo").to_str().context("utf-8")?).await?;
    let backups = Backups::builder().repository(repo).build().await?;
    let cancel = CancellationToken::new();
    let source = pg.psql("app", CHECKSUM)?;
    let base = backups
        .create_physical_with(&options(&pg, "cluster"), &cancel)
        .await?;
    ensure!(base.backup.succeeded(), "{:?}", base.backup.repositories);
    let mut logical = LogicalBackupOptions::new(DbTarget::new(pg.url("app")));
    logical.run = run_opts("app");
    let dump = backups.create_logical_with(&logical, &cancel).await?;
    ensure!(dump.succeeded(), "{:?}", dump.repositories);

    // The newest backup is the logical one; the typed selector picks the base backup.
    let data = pg.base_dir().join("restored-front-door");
    let mut opts = backups.settings().physical_restore();
    opts.owner = postgres_ids();
    let r = backups
        .restore_physical_with(&BackupSelector::latest_physical(), &data, &opts, &cancel)
        .await?;
    ensure!(
        r.id == base.backup.id.to_string(),
        "{} restored, not {}",
        r.id,
        base.backup.id
    );
    ensure!(r.files > 500, "{r:?}");
    let server = Restored::start(&pg, &data, archive.path())?;
    ensure!(
        server.psql("app", CHECKSUM)? == source,
        "restored data differs"
    );
    server.stop()?;

    // A logical backup is no base backup: refused, and nothing is written.
    let other = pg.base_dir().join("restored-logical");
    let e = backups
        .restore_physical(&BackupSelector::by_id(dump.id.clone()), &other, &cancel)
        .await
        .err()
        .context("a logical backup restored as a data directory")?;
    ensure!(
        e.to_string().contains("not a base backup"),
        "the error says what is wrong: {e}"
    );
    ensure!(!other.exists(), "{} was created", other.display());

    // Cancelled before it starts: nothing is written either.
    cancel.cancel();
    let e = backups
        .restore_physical(&BackupSelector::latest_physical(), &other, &cancel)
        .await
        .err()
        .context("a cancelled restore ran")?;
    ensure!(matches!(e, BackupError::Cancelled { .. }), "{e}");
    ensure!(!other.exists(), "{} was created", other.display());
    Ok(())
}

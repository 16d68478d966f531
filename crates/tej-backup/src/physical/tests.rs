//! Hermetic tests of base backups: a fake data directory, a mocked SQL session and
//! in-memory repositories.

use super::*;
use crate::lsn::Lsn;
use crate::manifest::BackupKind;
use crate::repo::Repository;
use crate::retention::{PruneOptions, RetentionPolicy, prune};
use crate::storage::MemoryStore;
use crate::{BackupError, RunOptions, VerifyOptions, list_backups, verify_backup};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use tej_core::{FakeClock, MockCommandRunner};

const SYSID: u64 = 7_311_234_567_890_123_456;
const LABEL: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
START TIME: 2025-01-16 02:00:00 UTC\nLABEL: tej test\nSTART TIMELINE: 1\n";

fn put(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn varied(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Text-like: compressible but not trivially.
            b"abcdefghij klmnop\n"[(x % 18) as usize]
        })
        .collect()
}

/// A data directory with every kind of entry the rules care about.
fn fake_data_dir(root: &Path) {
    let mut control = vec![0u8; 8192];
    control[..8].copy_from_slice(&SYSID.to_le_bytes());
    put(root, "PG_VERSION", b"15\n");
    put(root, "global/pg_control", &control);
    put(root, "global/1260", &varied(8192, 1));
    put(root, "base/1/1259", &varied(3 * 1024 * 1024 + 777, 2));
    put(root, "base/1/2600", &varied(40_000, 3));
    put(root, "base/1/2601", &varied(100_000, 4));
    put(root, "base/1/empty", b"");
    put(root, "base/1/16400", &varied(8192, 5));
    put(root, "base/1/16400_init", &[0u8; 8192]);
    put(root, "pg_xact/0000", &varied(8192, 6));
    put(root, "postgresql.auto.conf", b"# auto\n");
    put(root, "postmaster.pid", b"999999\n");
    put(root, "pg_wal/000000010000000000000002", &[1u8; 4096]);
    put(
        root,
        "pg_wal/archive_status/000000010000000000000001.done",
        b"",
    );
    put(root, "pg_stat_tmp/global.stat", b"x");
    for d in [
        "base",
        "base/1",
        "global",
        "pg_xact",
        "pg_wal",
        "pg_stat_tmp",
    ] {
        std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

fn session(stop_ok: bool) -> MockBackupSession {
    let mut s = MockBackupSession::new();
    s.expect_facts().returning(|| {
        Ok(ServerFacts {
            server_version: "15.8".into(),
            server_version_num: 150008,
            data_directory: "/ignored".into(),
            wal_segment_size: 16 << 20,
            system_identifier: SYSID,
            timeline: 1,
            in_recovery: false,
        })
    });
    s.expect_switch_wal()
        .times(1)
        .returning(|| Ok("000000010000000000000001".into()));
    // Archiving keeps up: everything up to the backup's last segment is archived.
    s.expect_archiver()
        .returning(|| Ok(archiving("000000010000000000000002")));
    s.expect_start_backup()
        .times(1)
        .returning(|_| Ok(Lsn(0x200_0028)));
    if stop_ok {
        // The stop never waits on the server; the wait for the archive is tej's.
        s.expect_stop_backup()
            .withf(|w| !*w)
            .times(1)
            .returning(|_| {
                Ok(BackupStop {
                    stop_lsn: Lsn(0x300_0000),
                    backup_label: LABEL.into(),
                    tablespace_map: String::new(),
                })
            });
    } else {
        // A failed stop is not retried.
        s.expect_stop_backup().times(1).returning(|_| {
            Err(BackupError::Postgres {
                context: "pg_backup_stop".into(),
                reason: "canceling statement".into(),
                sqlstate: Some("57014".into()),
            })
        });
    }
    s
}

/// `pg_stat_archiver` with `last` archived and an old failure.
fn archiving(last: &str) -> ArchiverStatus {
    ArchiverStatus {
        archive_mode: "on".into(),
        archived_count: 2,
        last_archived_wal: Some(last.into()),
        last_archived_time: Some("2025-01-16 02:00:00+00".into()),
        failed_count: 0,
        last_failed_wal: None,
        last_failed_time: None,
        failing: false,
    }
}

fn options(dir: &Path) -> PhysicalBackupOptions {
    let mut o = PhysicalBackupOptions::new(crate::DbTarget::new("postgres://unused"));
    o.data_dir = Some(dir.to_path_buf());
    o.jobs = 3;
    o.part_size = 1 << 20;
    o.small_file = 512 * 1024;
    o.bundle_size = 64 * 1024;
    o.run = RunOptions {
        cleanup_older_than: std::time::Duration::ZERO,
        ..RunOptions::default()
    };
    o
}

fn repo() -> Repository {
    Repository::from_store(Arc::new(MemoryStore::named("mem")))
}

fn at(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

#[tokio::test]
async fn manifest_records_the_backup_and_restore_recreates_the_tree() {
    let src = tempfile::tempdir().unwrap();
    fake_data_dir(src.path());
    let repo = repo();
    let clock = FakeClock::new(at("2025-01-16T02:00:00Z"));
    let mut s = session(true);
    let r = create_physical_backup_with(
        &mut s,
        std::slice::from_ref(&repo),
        &options(src.path()),
        &clock,
    )
    .await
    .unwrap();
    assert!(r.backup.succeeded());
    assert_eq!(r.vanished, 0);
    let m = repo.resolve("latest").await.unwrap();
    assert_eq!(m.kind, BackupKind::Physical);
    assert_eq!(m.id.target(), "cluster");
    assert_eq!(m.server_version.as_deref(), Some("15.8"));
    let p = m.physical.clone().unwrap();
    assert_eq!(p.system_identifier, SYSID);
    assert_eq!(p.timeline, 1);
    assert_eq!(p.start_lsn, Lsn(0x200_0028));
    assert_eq!(p.stop_lsn, Lsn(0x300_0000));
    assert_eq!(p.start_wal, "000000010000000000000002");
    // The stop LSN is the first byte of segment 3: the last WAL needed is segment 2.
    assert_eq!(p.stop_wal, "000000010000000000000002");
    assert_eq!(p.wal_segment_size, 16 << 20);
    assert_eq!(p.pg_major, 15);
    assert_eq!(p.data_directory, src.path().display().to_string());
    let mut names: Vec<_> = m.objects.iter().map(|o| o.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "backup_label.zst",
            "bundles/00000.tar.zst",
            "bundles/00001.tar.zst",
            "files.json.zst",
            "pg_data/base/1/1259.part0000.zst",
            "pg_data/base/1/1259.part0001.zst",
            "pg_data/base/1/1259.part0002.zst",
            "pg_data/base/1/1259.part0003.zst",
            "pg_data/global/pg_control.zst",
        ]
    );
    assert_eq!(
        m.raw_size,
        m.objects.iter().map(|o| o.raw_size).sum::<u64>()
    );
    assert_eq!(list_backups(&repo).await.unwrap().len(), 1);

    // Verify checks every object and every bundled file.
    let v = verify_backup(
        &MockCommandRunner::new(),
        &repo,
        "latest",
        &VerifyOptions::default(),
        &clock,
    )
    .await
    .unwrap();
    assert_eq!(v.objects.len(), m.objects.len());

    // Restore.
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("data");
    let rr = restore_physical_backup(&repo, "latest", &target, &PhysicalRestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(rr.physical, p);
    for rel in [
        "PG_VERSION",
        "global/pg_control",
        "global/1260",
        "base/1/1259",
        "base/1/2600",
        "base/1/2601",
        "base/1/empty",
        "base/1/16400_init",
        "pg_xact/0000",
        "postgresql.auto.conf",
    ] {
        let a = std::fs::read(src.path().join(rel)).unwrap();
        let b = std::fs::read(target.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(a == b, "{rel} differs");
        let mode = std::fs::metadata(target.join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{rel}");
    }
    for gone in [
        "postmaster.pid",
        "base/1/16400",
        "pg_wal/000000010000000000000002",
        "pg_stat_tmp/global.stat",
        "pg_wal/archive_status/000000010000000000000001.done",
    ] {
        assert!(!target.join(gone).exists(), "{gone} restored");
    }
    for d in ["pg_wal/archive_status", "pg_stat_tmp", "base/1"] {
        assert!(target.join(d).is_dir(), "{d}");
    }
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(
        std::fs::read_to_string(target.join("backup_label")).unwrap(),
        LABEL
    );
    assert!(!target.join("tablespace_map").exists());
    assert!(!target.join("recovery.signal").exists());

    // A non-empty directory is refused without confirmation, replaced with it.
    let e = restore_physical_backup(&repo, "latest", &target, &PhysicalRestoreOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::Refused(tej_core::Refusal::NotConfirmed { .. })
        ),
        "{e}"
    );
    std::fs::write(target.join("stray"), b"x").unwrap();
    let replace = PhysicalRestoreOptions {
        replace: true,
        ..Default::default()
    };
    restore_physical_backup(&repo, "latest", &target, &replace)
        .await
        .unwrap();
    assert!(!target.join("stray").exists());
    assert!(target.join("base/1/1259").exists());
}

#[tokio::test]
async fn a_running_servers_directory_is_refused_even_with_replace() {
    let src = tempfile::tempdir().unwrap();
    fake_data_dir(src.path());
    let repo = repo();
    let clock = FakeClock::new(at("2025-01-16T02:00:00Z"));
    create_physical_backup_with(
        &mut session(true),
        std::slice::from_ref(&repo),
        &options(src.path()),
        &clock,
    )
    .await
    .unwrap();
    let busy = tempfile::tempdir().unwrap();
    std::fs::write(
        busy.path().join("postmaster.pid"),
        format!("{}\n/data\n", std::process::id()),
    )
    .unwrap();
    let replace = PhysicalRestoreOptions {
        replace: true,
        ..Default::default()
    };
    let e = restore_physical_backup(&repo, "latest", busy.path(), &replace)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("running server"), "{e}");
    assert!(busy.path().join("postmaster.pid").exists());
}

#[tokio::test]
async fn a_failed_stop_leaves_no_backup() {
    let src = tempfile::tempdir().unwrap();
    fake_data_dir(src.path());
    let store = Arc::new(MemoryStore::named("mem"));
    let repo = Repository::from_store(store.clone());
    let clock = FakeClock::new(at("2025-01-16T02:00:00Z"));
    let e = create_physical_backup_with(
        &mut session(false),
        std::slice::from_ref(&repo),
        &options(src.path()),
        &clock,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, BackupError::Postgres { .. }), "{e}");
    assert!(list_backups(&repo).await.unwrap().is_empty());
    let inv = repo.inventory().await.unwrap();
    assert_eq!(inv.incomplete.len(), 1);
    assert_eq!(inv.incomplete[0].objects, 0, "data objects were removed");
    // Nothing but the failure record is left.
    let keys: Vec<_> = store
        .keys()
        .into_iter()
        .map(|k| k.to_string())
        .filter(|k| k.starts_with("backups/"))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].ends_with("/failed.json"));
}

#[tokio::test]
async fn a_wrong_data_directory_is_refused_before_anything_is_stored() {
    let src = tempfile::tempdir().unwrap();
    fake_data_dir(src.path());
    let mut control = vec![0u8; 8192];
    control[..8].copy_from_slice(&42u64.to_le_bytes());
    put(src.path(), "global/pg_control", &control);
    let store = Arc::new(MemoryStore::named("mem"));
    let repo = Repository::from_store(store.clone());
    let mut s = MockBackupSession::new();
    s.expect_facts().returning(|| {
        Ok(ServerFacts {
            server_version: "15.8".into(),
            server_version_num: 150008,
            data_directory: "/x".into(),
            wal_segment_size: 16 << 20,
            system_identifier: SYSID,
            timeline: 1,
            in_recovery: false,
        })
    });
    s.expect_start_backup().never();
    let e = create_physical_backup_with(
        &mut s,
        std::slice::from_ref(&repo),
        &options(src.path()),
        &FakeClock::new(at("2025-01-16T02:00:00Z")),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("wrong data directory"), "{e}");
    assert!(store.is_empty());
}

#[tokio::test]
async fn prune_applies_retention_to_base_backups() {
    let src = tempfile::tempdir().unwrap();
    fake_data_dir(src.path());
    let store = Arc::new(MemoryStore::named("mem"));
    let repo = Repository::from_store(store.clone());
    let clock = FakeClock::new(at("2025-01-01T02:00:00Z"));
    let mut ids = Vec::new();
    for day in [0, 10, 20] {
        clock.set(at("2025-01-01T02:00:00Z") + jiff::SignedDuration::from_hours(24 * day));
        let r = create_physical_backup_with(
            &mut session(true),
            std::slice::from_ref(&repo),
            &options(src.path()),
            &clock,
        )
        .await
        .unwrap();
        ids.push(r.backup.id);
    }
    let policy = RetentionPolicy {
        daily_days: 7,
        weekly_days: 0,
        monthly_days: 0,
        yearly_days: 0,
        time_zone: jiff::tz::TimeZone::UTC,
    };
    let report = prune(
        &repo,
        &PruneOptions {
            policy,
            ..PruneOptions::default()
        },
        &clock,
    )
    .await
    .unwrap();
    let mut deleted = report.deleted.clone();
    deleted.sort();
    assert_eq!(deleted, ids[..2].to_vec());
    let left: Vec<_> = list_backups(&repo)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(left, [ids[2].clone()]);
    for id in &ids[..2] {
        assert!(
            store
                .keys()
                .iter()
                .all(|k| !k.as_str().starts_with(&format!("backups/{id}/"))),
            "{id} left objects"
        );
    }
}

#[tokio::test]
async fn the_restore_step_is_destructive_plans_the_deletion_and_replaces() {
    use tej_core::Step;
    let src = tempfile::tempdir().unwrap();
    fake_data_dir(src.path());
    let repo = repo();
    let clock = FakeClock::new(at("2025-01-16T02:00:00Z"));
    create_physical_backup_with(
        &mut session(true),
        std::slice::from_ref(&repo),
        &options(src.path()),
        &clock,
    )
    .await
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("old-file"), b"x").unwrap();
    let step = PhysicalRestoreStep {
        repo: repo.clone(),
        selector: "latest".into(),
        target_dir: out.path().to_path_buf(),
        opts: PhysicalRestoreOptions::default(),
    };
    assert_eq!(step.risk(), tej_core::Risk::Destructive);
    let plan = step.plan().await.unwrap();
    assert!(
        plan.actions
            .iter()
            .any(|a| a.starts_with("DELETE everything")),
        "{:?}",
        plan.actions
    );
    // Planning changed nothing.
    assert!(out.path().join("old-file").exists());
    let done = step.apply().await.unwrap();
    assert!(done.summary.contains("restored"), "{}", done.summary);
    assert!(!out.path().join("old-file").exists());
    assert!(out.path().join("base/1/1259").exists());
}

/// A session whose `pg_backup_stop` never returns (archiving is broken).
/// A session whose archive_command fails from `archived_until` on.
struct StuckSession {
    archived_until: &'static str,
    stops: usize,
}

#[async_trait::async_trait]
impl BackupSession for StuckSession {
    async fn facts(&mut self) -> Result<ServerFacts, BackupError> {
        Ok(ServerFacts {
            server_version: "15.8".into(),
            server_version_num: 150008,
            data_directory: "/x".into(),
            wal_segment_size: 16 << 20,
            system_identifier: SYSID,
            timeline: 1,
            in_recovery: false,
        })
    }
    async fn start_backup(&mut self, _label: &str) -> Result<Lsn, BackupError> {
        Ok(Lsn(0x200_0028))
    }
    async fn stop_backup(&mut self, wait: bool) -> Result<BackupStop, BackupError> {
        assert!(!wait, "pg_backup_stop must not wait for the archive");
        self.stops += 1;
        Ok(BackupStop {
            stop_lsn: Lsn(0x300_0000),
            backup_label: LABEL.into(),
            tablespace_map: String::new(),
        })
    }
    async fn switch_wal(&mut self) -> Result<String, BackupError> {
        Ok("000000010000000000000001".into())
    }
    async fn archiver(&mut self) -> Result<ArchiverStatus, BackupError> {
        Ok(ArchiverStatus {
            failed_count: 7,
            last_failed_wal: Some("000000010000000000000002".into()),
            last_failed_time: Some("2025-01-16 02:00:05+00".into()),
            failing: true,
            ..archiving(self.archived_until)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_stuck_archive_times_out_instead_of_hanging() {
    let src = tempfile::tempdir().unwrap();
    fake_data_dir(src.path());
    let repo = repo();
    let mut opts = options(src.path());
    opts.archive_timeout = Some(std::time::Duration::from_secs(30));
    // Before the copy: the switched segment never arrives; nothing is started or stored.
    let mut before = StuckSession {
        archived_until: "000000010000000000000000",
        stops: 0,
    };
    let e = create_physical_backup_with(
        &mut before,
        std::slice::from_ref(&repo),
        &opts,
        &FakeClock::new(at("2025-01-16T02:00:00Z")),
    )
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("000000010000000000000001 was not archived within 30s"),
        "{text}"
    );
    assert!(
        text.contains(
            "last failure archiving 000000010000000000000002 at 2025-01-16 02:00:05+00 (7 failures)"
        ),
        "the error quotes pg_stat_archiver: {text}"
    );
    assert_eq!(before.stops, 0);
    assert!(list_backups(&repo).await.unwrap().is_empty());
    // After pg_backup_stop: the backup's last segment never arrives.
    let mut after = StuckSession {
        archived_until: "000000010000000000000001",
        stops: 0,
    };
    let e = create_physical_backup_with(
        &mut after,
        std::slice::from_ref(&repo),
        &opts,
        &FakeClock::new(at("2025-01-16T02:10:00Z")),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("last WAL segment 000000010000000000000002 was not archived within 30s"),
        "{e}"
    );
    assert_eq!(after.stops, 1);
    assert!(list_backups(&repo).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_base_backup_initialises_the_wal_archive_and_refuses_another_clusters() {
    let src = tempfile::tempdir().unwrap();
    fake_data_dir(src.path());
    let repo = repo();
    let clock = FakeClock::new(at("2025-01-16T02:00:00Z"));
    let wal = crate::wal::WalArchive::new(repo.clone());
    assert!(wal.info().await.unwrap().is_none());
    create_physical_backup_with(
        &mut session(true),
        std::slice::from_ref(&repo),
        &options(src.path()),
        &clock,
    )
    .await
    .unwrap();
    let info = wal.info().await.unwrap().expect("the archive marker");
    assert_eq!(info.system_identifier, SYSID);
    assert_eq!(info.wal_segment_size, 16 << 20);
    // The repository's archive belongs to this cluster: another one is refused.
    let other = crate::wal::WalArchive::new(repo.clone());
    assert!(matches!(
        other.init(SYSID + 1, 16 << 20).await,
        Err(BackupError::WalForeignCluster { .. })
    ));
    assert_eq!(other.init(SYSID, 16 << 20).await.unwrap(), info);
}

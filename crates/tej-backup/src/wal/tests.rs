//! Unit tests of the WAL archive over the in-memory and fault-injecting stores
//! (1 MiB segments, as `initdb --wal-segsize=1` makes, to keep them fast).

use super::header::fake_segment;
use super::*;
use crate::lsn::Lsn;
use crate::manifest::PhysicalInfo;
use crate::storage::{Fault, FaultyStore, MemoryStore, ObjectStore, Op, PutCut};
use std::path::PathBuf;
use std::sync::Arc;

const MIB: u64 = 1 << 20;
const SYSID: u64 = 7_713_479_375_855_153_938;

fn seg_name(tli: u32, seg: u64) -> String {
    WalFileName::Segment {
        timeline: tli,
        segment: seg,
        segment_size: MIB,
    }
    .to_string()
}

/// Writes segment `seg` of timeline `tli` into `dir`.
fn seg_file(dir: &Path, tli: u32, seg: u64, sysid: u64, fill: u8) -> PathBuf {
    let p = dir.join(seg_name(tli, seg));
    let mut data = fake_segment(sysid, tli, Lsn(seg * MIB), MIB as usize, fill);
    // Some varied content after the header, so compression has work to do.
    for (i, b) in data.iter_mut().enumerate().skip(64).step_by(7) {
        *b = (i as u8).wrapping_mul(31) ^ fill;
    }
    std::fs::write(&p, data).unwrap();
    p
}

fn archive_over(store: Arc<dyn ObjectStore>) -> WalArchive {
    WalArchive::new(Repository::from_store(store))
}

fn mem() -> (Arc<MemoryStore>, WalArchive) {
    let m = Arc::new(MemoryStore::named("mem"));
    let a = archive_over(m.clone());
    (m, a)
}

fn opts() -> PushOptions {
    PushOptions {
        system_identifier: Some(SYSID),
        ..PushOptions::default()
    }
}

#[tokio::test]
async fn push_then_fetch_round_trips_segments_and_history_files() {
    let dir = tempfile::tempdir().unwrap();
    let (store, a) = mem();
    let p = seg_file(dir.path(), 1, 3, SYSID, 1);
    let r = a.push(&p, &opts()).await.unwrap();
    assert_eq!(r.status, PushStatus::Archived);
    assert_eq!(r.key, "wal/00000001/000000010000000000000003.tejwal");
    assert!(r.stored_size > 0 && r.stored_size < r.raw_size);
    let info = a.info().await.unwrap().unwrap();
    assert_eq!(info.system_identifier, SYSID);
    assert_eq!(info.wal_segment_size, MIB);
    assert!(
        store
            .object(&ObjectKey::new(WAL_INFO_KEY).unwrap())
            .is_some()
    );

    let hist = dir.path().join("00000002.history");
    std::fs::write(&hist, "1\t0/3000120\tno recovery target specified\n").unwrap();
    let r = a.push(&hist, &PushOptions::default()).await.unwrap();
    assert_eq!(r.key, "wal/00000002/00000002.history.tejwal");

    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("RECOVERYXLOG");
    let res = a.fetch(&seg_name(1, 3), &dest).await;
    assert_eq!(fetch_exit_code(&res), 0);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&p).unwrap());
    let dest2 = out.path().join("RECOVERYHISTORY");
    assert_eq!(
        a.fetch("00000002.history", &dest2).await.unwrap(),
        FetchOutcome::Fetched
    );
    assert_eq!(
        std::fs::read(&dest2).unwrap(),
        std::fs::read(&hist).unwrap()
    );
    // Nothing but the two files is left in the destination directory.
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 2);

    let names: Vec<String> = a
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["000000010000000000000003", "00000002.history"]);
}

#[tokio::test]
async fn same_content_twice_is_ok_and_different_content_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, a) = mem();
    let p = seg_file(dir.path(), 1, 5, SYSID, 1);
    assert_eq!(
        a.push(&p, &opts()).await.unwrap().status,
        PushStatus::Archived
    );
    let key = a.key(&seg_name(1, 5)).unwrap();
    let before = store.object(&key).unwrap();
    let again = a.push(&p, &opts()).await;
    assert_eq!(push_exit_code(&again), 0);
    assert_eq!(again.unwrap().status, PushStatus::AlreadyArchived);
    // Same name, different content.
    let other = tempfile::tempdir().unwrap();
    let q = seg_file(other.path(), 1, 5, SYSID, 9);
    let err = a.push(&q, &opts()).await;
    assert_eq!(push_exit_code(&err), 1);
    assert!(
        matches!(err, Err(BackupError::WalConflict { ref name, .. }) if *name == seg_name(1, 5)),
        "{err:?}"
    );
    assert_eq!(store.object(&key).unwrap(), before, "stored object changed");
    let dest = other.path().join("x");
    a.fetch(&seg_name(1, 5), &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&p).unwrap());
}

#[tokio::test]
async fn a_missing_file_is_not_found_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, a) = mem();
    let dest = dir.path().join("RECOVERYXLOG");
    // No archive marker: an outage (a wrong or unmounted repository), never "not found".
    let res = a.fetch("000000010000000000000009", &dest).await;
    assert!(
        matches!(res, Err(BackupError::WalArchiveNotInitialised { .. })),
        "{res:?}"
    );
    assert_eq!(fetch_exit_code(&res), FETCH_FATAL_EXIT_CODE);
    assert!(!dest.exists());
    let strict = PushOptions {
        require_archive_info: true,
        ..opts()
    };
    let res = a.push(&seg_file(dir.path(), 1, 3, SYSID, 1), &strict).await;
    assert!(
        matches!(res, Err(BackupError::WalArchiveNotInitialised { .. })),
        "{res:?}"
    );
    assert!(
        a.info().await.unwrap().is_none(),
        "the refused push wrote the marker"
    );
    a.init(SYSID, MIB).await.unwrap();
    assert_eq!(
        a.push(&seg_file(dir.path(), 1, 3, SYSID, 1), &strict)
            .await
            .unwrap()
            .status,
        PushStatus::Archived
    );
    let res = a.fetch("000000010000000000000009", &dest).await;
    assert!(matches!(res, Ok(FetchOutcome::NotFound)));
    assert_eq!(fetch_exit_code(&res), 1);
    assert!(!dest.exists());
    let res = a.fetch("00000005.history", &dest).await;
    assert_eq!(fetch_exit_code(&res), 1);
    // A name that is no WAL file is an error, not "not found".
    let res = a.fetch("../etc/passwd", &dest).await;
    assert_eq!(fetch_exit_code(&res), FETCH_FATAL_EXIT_CODE);
}

#[tokio::test]
async fn segments_of_another_cluster_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, a) = mem();
    a.push(&seg_file(dir.path(), 1, 1, SYSID, 1), &opts())
        .await
        .unwrap();
    // The archive belongs to SYSID now: a segment of another cluster is refused...
    let foreign = seg_file(dir.path(), 1, 2, 42, 1);
    let err = a.push(&foreign, &PushOptions::default()).await.unwrap_err();
    assert!(
        matches!(
            err,
            BackupError::WalForeignCluster {
                expected: SYSID,
                found: 42,
                ..
            }
        ),
        "{err}"
    );
    // ...and so is one that does not match the data directory's identifier.
    let err = a.push(&foreign, &opts()).await.unwrap_err();
    assert!(
        matches!(
            err,
            BackupError::WalForeignCluster {
                expected: SYSID,
                found: 42,
                ..
            }
        ),
        "{err}"
    );
    assert!(store.object(&a.key(&seg_name(1, 2)).unwrap()).is_none());
    // A fresh archive records the first cluster it sees.
    let (_, b) = mem();
    let err = b
        .push(&foreign, &opts())
        .await
        .expect_err("sysid 42 is not the data directory's");
    assert!(matches!(err, BackupError::WalForeignCluster { .. }));
    assert!(b.info().await.unwrap().is_none());
}

#[tokio::test]
async fn renamed_or_malformed_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, a) = mem();
    let p = seg_file(dir.path(), 1, 4, SYSID, 1);
    let renamed = dir.path().join(seg_name(1, 6));
    std::fs::copy(&p, &renamed).unwrap();
    let err = a.push(&renamed, &opts()).await.unwrap_err();
    assert!(matches!(err, BackupError::InvalidWal { .. }), "{err}");
    let short = dir.path().join(seg_name(1, 7));
    std::fs::write(&short, &std::fs::read(&p).unwrap()[..4096]).unwrap();
    assert!(a.push(&short, &opts()).await.is_err());
    let junk = dir.path().join("pg_hba.conf");
    std::fs::write(&junk, "local all all trust").unwrap();
    assert!(matches!(
        a.push(&junk, &opts()).await,
        Err(BackupError::InvalidWal { .. })
    ));
    // A history file before any segment: no cluster to check against.
    let hist = dir.path().join("00000002.history");
    std::fs::write(&hist, "1\t0/3000120\tx\n").unwrap();
    assert!(matches!(
        a.push(&hist, &PushOptions::default()).await,
        Err(BackupError::InvalidOptions(_))
    ));
}

#[tokio::test]
async fn damaged_or_misplaced_objects_are_fatal_on_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let (store, a) = mem();
    a.push(&seg_file(dir.path(), 1, 3, SYSID, 1), &opts())
        .await
        .unwrap();
    let key = a.key(&seg_name(1, 3)).unwrap();
    let good = store.object(&key).unwrap().to_vec();
    // A flipped byte in the compressed payload.
    let mut bad = good.clone();
    bad[good.len() / 4] ^= 0x55;
    store.insert(key.clone(), bad);
    let dest = dir.path().join("out");
    let res = a.fetch(&seg_name(1, 3), &dest).await;
    assert!(
        matches!(res, Err(BackupError::WalCorrupt { .. })),
        "{res:?}"
    );
    assert_eq!(fetch_exit_code(&res), FETCH_FATAL_EXIT_CODE);
    assert!(!dest.exists());
    // A truncated object.
    store.insert(key.clone(), good[..good.len() - 5].to_vec());
    assert!(matches!(
        a.fetch(&seg_name(1, 3), &dest).await,
        Err(BackupError::WalCorrupt { .. })
    ));
    // The right object copied under another name.
    store.insert(key.clone(), good.clone());
    store.insert(a.key(&seg_name(1, 4)).unwrap(), good.clone());
    let res = a.fetch(&seg_name(1, 4), &dest).await;
    assert!(
        matches!(&res, Err(BackupError::WalCorrupt { reason, .. }) if reason.contains("wrong key")),
        "{res:?}"
    );
    assert!(!dest.exists());
    assert_eq!(
        a.fetch(&seg_name(1, 3), &dest).await.unwrap(),
        FetchOutcome::Fetched
    );
}

#[tokio::test]
async fn storage_outages_fail_push_and_are_fatal_for_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemoryStore::named("mem"));
    let a = archive_over(mem.clone());
    a.push(&seg_file(dir.path(), 1, 3, SYSID, 1), &opts())
        .await
        .unwrap();
    let faulty = Arc::new(
        FaultyStore::new(mem.clone())
            .fail_always(Op::Get, Fault::Unavailable)
            .fail_always(Op::Put, Fault::Unavailable),
    );
    let down = archive_over(faulty.clone());
    let dest = dir.path().join("out");
    let res = down.fetch(&seg_name(1, 3), &dest).await;
    assert!(
        matches!(res, Err(BackupError::Unavailable { .. })),
        "{res:?}"
    );
    assert_eq!(fetch_exit_code(&res), FETCH_FATAL_EXIT_CODE);
    assert!(!dest.exists());
    let res = down
        .push(&seg_file(dir.path(), 1, 4, SYSID, 1), &opts())
        .await;
    assert_eq!(push_exit_code(&res), 1);
    assert!(mem.object(&a.key(&seg_name(1, 4)).unwrap()).is_none());
    // Missing from a reachable store stays "not found" even with other faults around.
    let get_ok = archive_over(Arc::new(
        FaultyStore::new(mem.clone()).fail_always(Op::Put, Fault::Permanent),
    ));
    assert_eq!(
        get_ok.fetch(&seg_name(1, 9), &dest).await.unwrap(),
        FetchOutcome::NotFound
    );
}

#[tokio::test]
async fn an_interrupted_upload_leaves_no_object() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemoryStore::named("mem"));
    let p = seg_file(dir.path(), 1, 3, SYSID, 1);
    // Establish the archive first, so the cut hits the segment's upload.
    archive_over(mem.clone())
        .push(&seg_file(dir.path(), 1, 2, SYSID, 1), &opts())
        .await
        .unwrap();
    for cut in [
        PutCut::Error { after: 100 },
        PutCut::Truncate { after: 100 },
    ] {
        let faulty = Arc::new(FaultyStore::new(mem.clone()).cut_puts(1, cut));
        let a = archive_over(faulty.clone());
        let res = a.push(&p, &opts()).await;
        assert!(faulty.injected() == 1);
        let key = a.key(&seg_name(1, 3)).unwrap();
        assert!(
            res.is_err(),
            "push reported success over a cut stream: {res:?}"
        );
        assert!(mem.object(&key).is_none(), "{cut:?} left an object");
        // PostgreSQL retries: the next push succeeds.
        assert_eq!(
            a.push(&p, &opts()).await.unwrap().status,
            PushStatus::Archived
        );
        mem.delete(&key).await.unwrap();
    }
}

#[tokio::test]
async fn encrypted_archives_need_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let id = age::x25519::Identity::generate();
    let key_file = dir.path().join("key.txt");
    {
        use age::secrecy::ExposeSecret;
        std::fs::write(&key_file, id.to_string().expose_secret()).unwrap();
    }
    let mem = Arc::new(MemoryStore::named("mem"));
    let enc = EncryptionOptions {
        recipients: vec![id.to_public().to_string()],
        ..EncryptionOptions::default()
    };
    let a = archive_over(mem.clone()).with_encryption(enc.clone());
    let p = seg_file(dir.path(), 1, 3, SYSID, 1);
    a.push(&p, &opts()).await.unwrap();
    let dest = dir.path().join("out");
    // No identity: fatal, nothing written.
    let res = a.fetch(&seg_name(1, 3), &dest).await;
    assert_eq!(fetch_exit_code(&res), FETCH_FATAL_EXIT_CODE, "{res:?}");
    assert!(!dest.exists());
    // A wrong identity: fatal.
    let other = age::x25519::Identity::generate();
    let wrong_file = dir.path().join("wrong.txt");
    {
        use age::secrecy::ExposeSecret;
        std::fs::write(&wrong_file, other.to_string().expose_secret()).unwrap();
    }
    let wrong = archive_over(mem.clone()).with_encryption(EncryptionOptions {
        identity: Some(tej_core::SecretRef::File {
            file: wrong_file.clone(),
        }),
        ..enc.clone()
    });
    let res = wrong.fetch(&seg_name(1, 3), &dest).await;
    assert!(matches!(res, Err(BackupError::Decrypt { .. })), "{res:?}");
    let right = archive_over(mem.clone()).with_encryption(EncryptionOptions {
        identity: Some(tej_core::SecretRef::File { file: key_file }),
        ..enc
    });
    right.fetch(&seg_name(1, 3), &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&p).unwrap());
}

fn backup(id: &str, tli: u32, start_seg: u64, stop_seg: u64, finished: &str) -> BaseBackupRef {
    BaseBackupRef {
        id: id.into(),
        finished_at: finished.parse().unwrap(),
        physical: PhysicalInfo {
            system_identifier: SYSID,
            timeline: tli,
            start_lsn: Lsn(start_seg * MIB + 40),
            stop_lsn: Lsn(stop_seg * MIB + 200),
            start_wal: seg_name(tli, start_seg),
            stop_wal: seg_name(tli, stop_seg),
            wal_segment_size: MIB,
            pg_major: 15,
            data_directory: "/var/lib/postgresql/15/main".into(),
        },
    }
}

/// Pushes segments `segs` of `tli`, each stored at a distinct time (minute = segment).
async fn push_segments(a: &WalArchive, store: &MemoryStore, dir: &Path, tli: u32, segs: &[u64]) {
    for &s in segs {
        a.push(&seg_file(dir, tli, s, SYSID, tli as u8), &opts())
            .await
            .unwrap();
        let at: Timestamp = format!("2025-01-16T10:{:02}:00Z", s + u64::from(tli) * 10)
            .parse()
            .unwrap();
        store.set_last_modified(&a.key(&seg_name(tli, s)).unwrap(), at);
    }
}

#[tokio::test]
async fn continuity_reports_gaps_and_the_window_they_break() {
    let dir = tempfile::tempdir().unwrap();
    let (store, a) = mem();
    push_segments(&a, &store, dir.path(), 1, &[2, 3, 4, 6, 7, 8, 9, 10]).await;
    let b1 = backup("b1", 1, 2, 3, "2025-01-16T10:03:30Z");
    let b2 = backup("b2", 1, 7, 7, "2025-01-16T10:07:30Z");
    let r = a.continuity(&[b1.clone(), b2.clone()]).await.unwrap();
    assert_eq!(r.segments, 8);
    assert_eq!(r.gaps.len(), 1);
    let g = &r.gaps[0];
    assert_eq!(g.first_missing, seg_name(1, 5));
    assert_eq!(
        (g.missing_segments, g.from_lsn, g.to_lsn),
        (1, Lsn(5 * MIB), Lsn(6 * MIB))
    );
    assert_eq!(g.breaks, ["b1"]);
    assert_eq!(
        g.last_before_at,
        Some("2025-01-16T10:14:00Z".parse().unwrap())
    );
    assert_eq!(
        g.first_after_at,
        Some("2025-01-16T10:16:00Z".parse().unwrap())
    );
    let c1 = &r.chains[0];
    assert!(c1.consistent && !c1.unbroken);
    assert_eq!(c1.reachable_wal.as_deref(), Some(seg_name(1, 4).as_str()));
    assert_eq!(c1.reachable_lsn, Some(Lsn(5 * MIB)));
    assert!(r.chains[1].unbroken);
    let w = r.window.as_ref().unwrap();
    assert_eq!(w.from_backup, "b2");
    assert_eq!(w.to_wal, seg_name(1, 10));
    assert_eq!(w.to_time, Some("2025-01-16T10:20:00Z".parse().unwrap()));
    // Fill the gap: b1's chain is whole and the window starts at b1.
    push_segments(&a, &store, dir.path(), 1, &[5]).await;
    let r = a.continuity(&[b1.clone(), b2]).await.unwrap();
    assert!(r.gaps.is_empty() && r.chains.iter().all(|c| c.unbroken));
    assert_eq!(r.window.unwrap().from_backup, "b1");
    // A backup whose own segments are gone is not consistent.
    store
        .delete(&a.key(&seg_name(1, 3)).unwrap())
        .await
        .unwrap();
    let r = a.continuity(&[b1]).await.unwrap();
    assert!(!r.chains[0].consistent && r.window.is_none());
    assert_eq!(
        r.chains[0].reachable_wal.as_deref(),
        Some(seg_name(1, 2).as_str())
    );
}

#[tokio::test]
async fn continuity_follows_timeline_switches() {
    let dir = tempfile::tempdir().unwrap();
    let (store, a) = mem();
    // Timeline 1 up to segment 5 (the switch is inside 5), timeline 2 from 5 on.
    push_segments(&a, &store, dir.path(), 1, &[2, 3, 4]).await;
    let partial = dir.path().join(format!("{}.partial", seg_name(1, 5)));
    std::fs::write(
        &partial,
        fake_segment(SYSID, 1, Lsn(5 * MIB), MIB as usize, 0),
    )
    .unwrap();
    a.push(&partial, &opts()).await.unwrap();
    let hist = dir.path().join("00000002.history");
    std::fs::write(
        &hist,
        format!("1\t0/{:X}\tno recovery target specified\n", 5 * MIB + 0x120),
    )
    .unwrap();
    a.push(&hist, &opts()).await.unwrap();
    push_segments(&a, &store, dir.path(), 2, &[5, 6, 7]).await;
    let b1 = backup("b1", 1, 2, 2, "2025-01-16T10:12:30Z");
    let r = a.continuity(std::slice::from_ref(&b1)).await.unwrap();
    assert_eq!(r.timelines, [1, 2]);
    assert_eq!(r.switches.len(), 1);
    assert_eq!((r.switches[0].parent, r.switches[0].child), (1, 2));
    let c = &r.chains[0];
    assert_eq!(c.timelines, [1, 2]);
    assert!(c.unbroken, "{c:?}");
    assert_eq!(c.reachable_wal.as_deref(), Some(seg_name(2, 7).as_str()));
    assert_eq!(r.window.unwrap().to_wal, seg_name(2, 7));
    // Without timeline 2's first segment, the chain breaks at the switch.
    store
        .delete(&a.key(&seg_name(2, 5)).unwrap())
        .await
        .unwrap();
    let r = a.continuity(&[b1]).await.unwrap();
    assert_eq!(r.gaps.len(), 1);
    assert_eq!(
        (r.gaps[0].timeline, r.gaps[0].first_missing.clone()),
        (2, seg_name(2, 5))
    );
    assert_eq!(
        r.chains[0].reachable_wal.as_deref(),
        Some(seg_name(1, 4).as_str())
    );
}

#[test]
fn history_files_parse() {
    let text = "1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tbefore 2025-01-16 14:30:00+05:30\n";
    let h = parse_history(3, text).unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(
        (h[0].parent, h[0].child, h[0].switch_lsn),
        (1, 2, Lsn(0x3000158))
    );
    assert_eq!((h[1].parent, h[1].child), (2, 3));
    assert_eq!(h[1].reason, "before 2025-01-16 14:30:00+05:30");
    assert!(parse_history(2, "x\t0/1\n").is_err());
    assert!(parse_history(2, "1\tnope\n").is_err());
    assert!(
        parse_history(2, "2\t0/1\n").is_err(),
        "own timeline as ancestor"
    );
    assert!(
        parse_history(3, "2\t0/5\n1\t0/9\n").is_err(),
        "out of order"
    );
    assert!(parse_history(1, "").unwrap().is_empty());
}

#[tokio::test]
async fn wal_retention_keeps_what_retained_backups_need() {
    let dir = tempfile::tempdir().unwrap();
    let (store, a) = mem();
    push_segments(&a, &store, dir.path(), 1, &[1, 2, 3, 4, 5, 6, 7, 8]).await;
    let hist = dir.path().join("00000002.history");
    std::fs::write(&hist, "1\t0/300000\tx\n").unwrap();
    a.push(&hist, &opts()).await.unwrap();
    let now: Timestamp = "2025-01-20T00:00:00Z".parse().unwrap();
    let keep = [
        backup("b5", 1, 5, 5, "2025-01-16T10:15:30Z"),
        backup("b7", 1, 7, 7, "2025-01-16T10:17:30Z"),
    ];
    // Without a retained backup nothing goes.
    let r = prune_wal(
        &a,
        &[],
        &WalPruneOptions {
            dry_run: false,
            pitr_window_days: None,
            now,
        },
    )
    .await
    .unwrap();
    assert!(r.deleted.is_empty() && r.note.is_some());
    // A window that covers everything keeps everything.
    let r = prune_wal(
        &a,
        &keep,
        &WalPruneOptions {
            dry_run: false,
            pitr_window_days: Some(7),
            now,
        },
    )
    .await
    .unwrap();
    assert!(r.deleted.is_empty(), "{r:?}");
    let dry = prune_wal(
        &a,
        &keep,
        &WalPruneOptions {
            dry_run: true,
            pitr_window_days: Some(1),
            now,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        dry.deleted,
        [
            seg_name(1, 1),
            seg_name(1, 2),
            seg_name(1, 3),
            seg_name(1, 4)
        ]
    );
    assert_eq!(a.list().await.unwrap().len(), 9);
    let r = prune_wal(
        &a,
        &keep,
        &WalPruneOptions {
            dry_run: false,
            pitr_window_days: None,
            now,
        },
    )
    .await
    .unwrap();
    assert_eq!(r.deleted, dry.deleted);
    assert_eq!(r.keep_from.as_deref(), Some(seg_name(1, 5).as_str()));
    let left: Vec<String> = a
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(left.len(), 5);
    assert!(left.contains(&"00000002.history".to_string()));
    let c = a.continuity(&keep).await.unwrap();
    assert!(c.chains.iter().all(|c| c.unbroken));
}

#[tokio::test]
async fn async_push_archives_ready_files_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let pg_wal = dir.path().join("pg_wal");
    let status = pg_wal.join("archive_status");
    std::fs::create_dir_all(&status).unwrap();
    let spool = dir.path().join("spool");
    let files: Vec<PathBuf> = (1..=5)
        .map(|s| seg_file(&pg_wal, 1, s, SYSID, s as u8))
        .collect();
    for s in 1..=5 {
        std::fs::write(status.join(format!("{}.ready", seg_name(1, s))), "").unwrap();
    }
    let faulty = Arc::new(FaultyStore::new(MemoryStore::named("mem")));
    let a = archive_over(faulty.clone());
    let o = AsyncPushOptions::new(&spool, 2);
    let r = a.push_async(&files[0], &pg_wal, &o).await.unwrap();
    assert_eq!(r.status, PushStatus::Archived);
    assert_eq!(a.list().await.unwrap().len(), 5);
    let puts = faulty.calls(Op::Put);
    // PostgreSQL marks the first done and asks for the next: answered from the spool.
    std::fs::remove_file(status.join(format!("{}.ready", seg_name(1, 1)))).unwrap();
    for f in &files[1..4] {
        let r = a.push_async(f, &pg_wal, &o).await.unwrap();
        assert_eq!(r.status, PushStatus::ArchivedAhead);
        std::fs::remove_file(status.join(format!("{}.ready", r.name))).unwrap();
    }
    assert_eq!(faulty.calls(Op::Put), puts, "no upload for spooled files");
    // A spooled file whose content changed since is not trusted: it is pushed and conflicts.
    seg_file(&pg_wal, 1, 5, SYSID, 77);
    let res = a.push_async(&files[4], &pg_wal, &o).await;
    assert!(
        matches!(res, Err(BackupError::WalConflict { .. })),
        "{res:?}"
    );
    assert!(!spool.join(format!("{}.ok", seg_name(1, 5))).exists());
}

#[tokio::test]
async fn async_push_never_records_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let pg_wal = dir.path().join("pg_wal");
    let status = pg_wal.join("archive_status");
    std::fs::create_dir_all(&status).unwrap();
    let spool = dir.path().join("spool");
    let mem = Arc::new(MemoryStore::named("mem"));
    let first = seg_file(&pg_wal, 1, 1, SYSID, 1);
    archive_over(mem.clone())
        .push(&first, &opts())
        .await
        .unwrap();
    for s in 2..=4 {
        seg_file(&pg_wal, 1, s, SYSID, 1);
        std::fs::write(status.join(format!("{}.ready", seg_name(1, s))), "").unwrap();
    }
    // The asked-for file's put succeeds, the others fail.
    let faulty = Arc::new(FaultyStore::new(mem.clone()).fail_always(Op::Put, Fault::Unavailable));
    let a = archive_over(faulty);
    let res = a
        .push_async(
            &pg_wal.join(seg_name(1, 2)),
            &pg_wal,
            &AsyncPushOptions::new(&spool, 2),
        )
        .await;
    assert!(res.is_err());
    let spooled: Vec<_> = std::fs::read_dir(&spool).unwrap().collect();
    assert!(spooled.is_empty(), "a failed push left a spool record");
}

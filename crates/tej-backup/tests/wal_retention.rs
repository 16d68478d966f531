//! `prune` with physical backups and a WAL archive: WAL retention follows the retained
//! base backups, and a configured PITR window is never cut.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, ensure};
use jiff::{SignedDuration, Timestamp};
use tej_backup::{
    BackupId, BackupKind, CompressionAlgo, CompressionInfo, Lsn, Manifest, MemoryStore, ObjectKey,
    PhysicalInfo, PruneOptions, PushOptions, Repository, RetentionPolicy, WalArchive, WalFileName,
    list_backups, prune, put_bytes,
};
use tej_core::FakeClock;

const MIB: u64 = 1 << 20;
const SYSID: u64 = 7_000_000_000_000_000_001;

fn seg_name(seg: u64) -> String {
    WalFileName::Segment {
        timeline: 1,
        segment: seg,
        segment_size: MIB,
    }
    .to_string()
}

/// A 1 MiB WAL segment with a valid long page header.
fn write_segment(dir: &Path, seg: u64) -> Result<std::path::PathBuf> {
    let mut b = vec![0u8; MIB as usize];
    b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    b[2..4].copy_from_slice(&2u16.to_le_bytes());
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    b[8..16].copy_from_slice(&(seg * MIB).to_le_bytes());
    b[24..32].copy_from_slice(&SYSID.to_le_bytes());
    b[32..36].copy_from_slice(&(MIB as u32).to_le_bytes());
    b[36..40].copy_from_slice(&8192u32.to_le_bytes());
    b[100] = seg as u8;
    let p = dir.join(seg_name(seg));
    std::fs::write(&p, b)?;
    Ok(p)
}

async fn physical_backup(store: &MemoryStore, at: Timestamp, start_seg: u64) -> Result<BackupId> {
    let id = BackupId::new(at, "main");
    let m = Manifest {
        version: 1,
        id: id.clone(),
        kind: BackupKind::Physical,
        database: None,
        format: None,
        pg_dump_version: None,
        server_version: Some("15".into()),
        paths: Vec::new(),
        started_at: at,
        finished_at: at,
        compression: CompressionInfo {
            algorithm: CompressionAlgo::Zstd,
            level: 3,
        },
        encryption: None,
        raw_size: 1,
        stored_size: 1,
        objects: Vec::new(),
        physical: Some(PhysicalInfo {
            system_identifier: SYSID,
            timeline: 1,
            start_lsn: Lsn(start_seg * MIB + 40),
            stop_lsn: Lsn(start_seg * MIB + 4000),
            start_wal: seg_name(start_seg),
            stop_wal: seg_name(start_seg),
            wal_segment_size: MIB,
            pg_major: 15,
            data_directory: "/data".into(),
        }),
        host: "h".into(),
        tool: "test".into(),
    };
    let key = ObjectKey::new(format!("backups/{id}/manifest.json"))?;
    put_bytes(store, &key, m.to_json(), true).await?;
    Ok(id)
}

struct Fixture {
    store: Arc<MemoryStore>,
    repo: Repository,
    ids: Vec<BackupId>,
    now: Timestamp,
    _dir: tempfile::TempDir,
}

/// Physical backups 40, 20 and 1 days old starting at segments 2, 5 and 9; segments 1..=12
/// archived two months ago.
async fn fixture() -> Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(MemoryStore::named("mem"));
    let repo = Repository::from_store(store.clone());
    let now: Timestamp = "2025-06-30T12:00:00Z".parse()?;
    let days = |d: i64| now.checked_sub(SignedDuration::from_hours(24 * d));
    let mut ids = Vec::new();
    for (age, seg) in [(40, 2), (20, 5), (1, 9)] {
        ids.push(physical_backup(&store, days(age)?, seg).await?);
    }
    let wal = WalArchive::new(repo.clone());
    let opts = PushOptions {
        system_identifier: Some(SYSID),
        ..PushOptions::default()
    };
    for seg in 1..=12 {
        let r = wal.push(&write_segment(dir.path(), seg)?, &opts).await?;
        store.set_last_modified(&ObjectKey::new(r.key)?, days(60)?);
    }
    let hist = dir.path().join("00000002.history");
    std::fs::write(&hist, "1\t0/C00000\tno recovery target specified\n")?;
    wal.push(&hist, &opts).await?;
    Ok(Fixture {
        store,
        repo,
        ids,
        now,
        _dir: dir,
    })
}

fn policy() -> RetentionPolicy {
    RetentionPolicy {
        daily_days: 7,
        weekly_days: 0,
        monthly_days: 0,
        yearly_days: 0,
        ..RetentionPolicy::default()
    }
}

#[tokio::test]
async fn prune_deletes_wal_older_than_the_oldest_retained_base_backup() -> Result<()> {
    let f = fixture().await?;
    let opts = PruneOptions {
        policy: policy(),
        ..PruneOptions::default()
    };
    let r = prune(&f.repo, &opts, &FakeClock::new(f.now)).await?;
    let mut deleted = r.deleted.clone();
    deleted.sort();
    ensure!(deleted == f.ids[..2], "{:?}", r.deleted);
    let wal = r.wal.expect("a WAL report");
    let expected: Vec<String> = (1..9).map(seg_name).collect();
    ensure!(wal.deleted == expected, "{wal:?}");
    let left: Vec<String> = WalArchive::new(f.repo.clone())
        .list()
        .await?
        .into_iter()
        .map(|e| e.name)
        .collect();
    ensure!(
        left.len() == 5 && left.contains(&"00000002.history".to_string()),
        "{left:?}"
    );
    ensure!(list_backups(&f.repo).await?.len() == 1);
    ensure!(f.store.len() > 0);
    Ok(())
}

#[tokio::test]
async fn prune_never_cuts_the_pitr_window() -> Result<()> {
    let f = fixture().await?;
    let opts = PruneOptions {
        policy: policy(),
        pitr_window_days: Some(30),
        dry_run: true,
        ..PruneOptions::default()
    };
    let dry = prune(&f.repo, &opts, &FakeClock::new(f.now)).await?;
    ensure!(dry.deleted.is_empty() && dry.wal.as_ref().is_some_and(|w| w.deleted == [seg_name(1)]));
    let r = prune(
        &f.repo,
        &PruneOptions {
            dry_run: false,
            ..opts
        },
        &FakeClock::new(f.now),
    )
    .await?;
    // The 40-day-old backup starts the 30-day window: kept; the 20-day-old one goes.
    ensure!(r.deleted == [f.ids[1].clone()], "{:?}", r.deleted);
    let anchor = r
        .plan
        .decisions
        .iter()
        .find(|d| d.id == f.ids[0])
        .expect("decision");
    ensure!(
        anchor.keep && anchor.rules.contains(&"pitr-window".to_string()),
        "{anchor:?}"
    );
    ensure!(r.wal.expect("WAL report").deleted == [seg_name(1)]);
    // What is left is an unbroken chain from the anchor to the newest segment.
    let refs: Vec<_> = {
        let mut v = Vec::new();
        for b in list_backups(&f.repo).await? {
            let m = f.repo.manifest(&b.id).await?.expect("manifest");
            v.extend(tej_backup::BaseBackupRef::from_manifest(&m));
        }
        v
    };
    let c = WalArchive::new(f.repo.clone()).continuity(&refs).await?;
    ensure!(
        c.gaps.is_empty()
            && c.window
                .as_ref()
                .is_some_and(|w| w.from_backup == f.ids[0].to_string()),
        "{c:?}"
    );
    Ok(())
}

#[tokio::test]
async fn logical_only_repositories_have_no_wal_report() -> Result<()> {
    let store = Arc::new(MemoryStore::named("mem"));
    let repo = Repository::from_store(store);
    let r = prune(
        &repo,
        &PruneOptions::default(),
        &FakeClock::new(Timestamp::now()),
    )
    .await?;
    ensure!(r.wal.is_none());
    Ok(())
}

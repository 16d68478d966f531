//! `prune` over a repository: dry run, deletion order, failed runs, leftovers.

use anyhow::{Result, ensure};
use jiff::{SignedDuration, Timestamp};
use std::sync::Arc;
use tej_backup::{
    BackupId, BackupKind, CompressionAlgo, CompressionInfo, MANIFEST_VERSION, Manifest,
    ManifestObject, PruneOptions, Repository, RetentionPolicy, list_backups, prune,
};
use tej_backup::{MemoryStore, ObjectKey, ObjectStore, put_bytes};
use tej_core::FakeClock;

async fn fake_backup(
    store: &MemoryStore,
    at: Timestamp,
    manifest: bool,
    verified: Option<bool>,
) -> Result<BackupId> {
    let id = BackupId::new(at, "main");
    let data = ObjectKey::new(format!("backups/{id}/dump.pgc.zst"))?;
    put_bytes(store, &data, vec![7u8; 64], false).await?;
    if manifest {
        let m = Manifest {
            version: MANIFEST_VERSION,
            id: id.clone(),
            kind: BackupKind::Logical,
            database: Some("main".into()),
            format: None,
            pg_dump_version: None,
            server_version: None,
            paths: vec![],
            started_at: at,
            finished_at: at,
            compression: CompressionInfo {
                algorithm: CompressionAlgo::Zstd,
                level: 3,
            },
            encryption: None,
            raw_size: 64,
            stored_size: 64,
            objects: vec![ManifestObject {
                name: "dump.pgc.zst".into(),
                key: data.to_string(),
                stored_size: 64,
                stored_sha256: String::new(),
                raw_size: 64,
                raw_sha256: String::new(),
            }],
            physical: None,
            host: "h".into(),
            tool: "t".into(),
        };
        put_bytes(
            store,
            &ObjectKey::new(format!("backups/{id}/manifest.json"))?,
            m.to_json(),
            true,
        )
        .await?;
    }
    if let Some(ok) = verified {
        let rec = serde_json::json!({ "at": at, "ok": ok });
        put_bytes(
            store,
            &ObjectKey::new(format!("backups/{id}/verify.json"))?,
            serde_json::to_vec(&rec)?,
            false,
        )
        .await?;
    }
    Ok(id)
}

fn days_ago(now: Timestamp, d: i64) -> Timestamp {
    now.checked_sub(SignedDuration::from_hours(24 * d)).unwrap()
}

#[tokio::test]
async fn prune_applies_gfs_and_dry_run_changes_nothing() -> Result<()> {
    let now: Timestamp = "2026-06-30T21:00:00Z".parse()?;
    let store = Arc::new(MemoryStore::new());
    let mut ids = Vec::new();
    for d in 0..400 {
        ids.push(fake_backup(&store, days_ago(now, d), true, Some(true)).await?);
    }
    let repo = Repository::from_store(store.clone());
    let clock = FakeClock::new(now);
    let opts = PruneOptions {
        policy: RetentionPolicy::default(),
        dry_run: true,
        ..PruneOptions::default()
    };
    let dry = prune(&repo, &opts, &clock).await?;
    ensure!(dry.deleted.is_empty() && list_backups(&repo).await?.len() == 400);
    let to_delete: Vec<_> = dry
        .plan
        .decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.id.clone())
        .collect();
    ensure!(to_delete.len() > 300, "{}", to_delete.len());
    ensure!(dry.plan.decisions.iter().all(|d| !d.rules.is_empty()));
    let real = prune(
        &repo,
        &PruneOptions {
            dry_run: false,
            ..opts
        },
        &clock,
    )
    .await?;
    ensure!(real.deleted == to_delete);
    let left = list_backups(&repo).await?;
    ensure!(left.len() == 400 - to_delete.len());
    ensure!(left[0].id == ids[0], "the newest backup stays");
    // Deleted backups leave no object behind.
    for id in &to_delete {
        ensure!(store.list(&format!("backups/{id}/")).await?.is_empty());
    }
    Ok(())
}

#[tokio::test]
async fn failed_newest_runs_block_deletion_and_leftovers_are_cleaned() -> Result<()> {
    let now: Timestamp = "2026-06-30T21:00:00Z".parse()?;
    let store = Arc::new(MemoryStore::new());
    let old = fake_backup(&store, days_ago(now, 100), true, Some(true)).await?;
    let older = fake_backup(&store, days_ago(now, 800), true, None).await?;
    // The newest run was interrupted: data, no manifest.
    let broken = fake_backup(&store, days_ago(now, 1), false, None).await?;
    let repo = Repository::from_store(store.clone());
    let clock = FakeClock::new(now);
    let policy = RetentionPolicy {
        daily_days: 7,
        weekly_days: 7,
        monthly_days: 7,
        yearly_days: 7,
        ..RetentionPolicy::default()
    };
    let r = prune(
        &repo,
        &PruneOptions {
            policy: policy.clone(),
            ..PruneOptions::default()
        },
        &clock,
    )
    .await?;
    ensure!(r.plan.blocked.is_some(), "{:?}", r.plan);
    ensure!(r.deleted.is_empty());
    ensure!(
        r.cleaned_runs == vec![broken.clone()],
        "{:?}",
        r.cleaned_runs
    );
    ensure!(
        store
            .object(&ObjectKey::new(format!("backups/{broken}/dump.pgc.zst"))?)
            .is_none()
    );
    ensure!(list_backups(&repo).await?.len() == 2);
    // Still blocked on the next prune: the failure record stays until a backup succeeds.
    let r = prune(
        &repo,
        &PruneOptions {
            policy: policy.clone(),
            ..PruneOptions::default()
        },
        &clock,
    )
    .await?;
    ensure!(r.plan.blocked.is_some() && r.deleted.is_empty());
    // A new good backup: the old unverified one expires, the verified one is protected
    // only while it is the newest verified.
    let fresh = fake_backup(&store, now, true, None).await?;
    let r = prune(
        &repo,
        &PruneOptions {
            policy,
            ..PruneOptions::default()
        },
        &clock,
    )
    .await?;
    ensure!(r.plan.blocked.is_none());
    ensure!(r.deleted == vec![older.clone()], "{:?}", r.plan);
    let kept: Vec<_> = list_backups(&repo)
        .await?
        .into_iter()
        .map(|b| b.id)
        .collect();
    ensure!(kept == vec![fresh, old], "{kept:?}");
    ensure!(r.removed_failure_records == vec![broken.clone()]);
    ensure!(store.list(&format!("backups/{broken}/")).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_failed_verification_of_the_newest_backup_blocks_deletion() -> Result<()> {
    let now: Timestamp = "2026-06-30T21:00:00Z".parse()?;
    let store = Arc::new(MemoryStore::new());
    fake_backup(&store, days_ago(now, 900), true, Some(true)).await?;
    fake_backup(&store, now, true, Some(false)).await?;
    let repo = Repository::from_store(store.clone());
    let policy = RetentionPolicy {
        daily_days: 1,
        weekly_days: 1,
        monthly_days: 1,
        yearly_days: 1,
        ..RetentionPolicy::default()
    };
    let r = prune(
        &repo,
        &PruneOptions {
            policy,
            ..PruneOptions::default()
        },
        &FakeClock::new(now),
    )
    .await?;
    ensure!(r.plan.blocked.is_some() && r.deleted.is_empty());
    ensure!(list_backups(&repo).await?.len() == 2);
    Ok(())
}

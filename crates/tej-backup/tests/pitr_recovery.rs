//! Point-in-time recovery on real PostgreSQL 15 clusters: exactness for time, LSN, xid,
//! restore point and immediate targets; refusals before anything is touched; a target
//! the archive cannot reach; replacing a data directory.

mod pitr_support;

use anyhow::{Context, Result, ensure};
use jiff::Timestamp;
use pitr_support::*;
use std::path::PathBuf;
use tej_backup::pitr::{PitrRestoreOptions, RecoveryConfig, plan_pitr_restore};
use tej_backup::{
    BackupError, BaseBackupSource, PitrRestoreReport, RecoveryTarget, ServerOptions, restore_pitr,
};
use tej_core::TokioCommandRunner;

#[derive(Debug)]
struct Restored {
    report: PitrRestoreReport,
    server: ServerOptions,
}

async fn restore_to(
    source: &FsSource,
    dir: PathBuf,
    restore_command: String,
    target: RecoveryTarget,
) -> Result<Restored> {
    std::fs::create_dir_all(&dir)?;
    chown_postgres(&dir)?;
    let server = server_in(&dir)?;
    let mut opts = PitrRestoreOptions::new(
        dir.join("data"),
        RecoveryConfig::new(restore_command, target.clone()),
    );
    opts.start = Some(server.clone());
    let report = restore_pitr(source, &TokioCommandRunner, &opts)
        .await
        .with_context(|| format!("restore to {target}"))?;
    Ok(Restored { report, server })
}

async fn ids(r: &Restored) -> Result<String> {
    query(
        &r.server,
        "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM t",
    )
    .await
}

fn expected(batches: &[i32]) -> String {
    batches
        .iter()
        .flat_map(|&b| {
            if b == 0 {
                vec![1, 2]
            } else {
                (b * 10 + 1..=b * 10 + 5).collect::<Vec<_>>()
            }
        })
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_stops_exactly_at_each_target_kind() -> Result<()> {
    let src = Source::start()?;
    src.sql(
        "CREATE TABLE t (id int PRIMARY KEY, batch int, at timestamptz DEFAULT clock_timestamp());
         INSERT INTO t (id, batch) VALUES (1, 0), (2, 0);",
    )?;
    src.base_backup("b1")?;
    // Three batches, each in its own transaction and its own WAL segment; after each,
    // the time (after the commit, before the next), the LSN, and after batch 1 a
    // restore point.
    let mut times = Vec::new();
    let mut lsns = Vec::new();
    let mut xids = Vec::new();
    let mut last_insert_at = Vec::new();
    for b in 1..=3 {
        let xid = src.sql(&format!(
            "BEGIN; INSERT INTO t (id, batch) SELECT g, {b} FROM generate_series({}, {}) g;
             SELECT txid_current(); COMMIT;",
            b * 10 + 1,
            b * 10 + 5
        ))?;
        xids.push(xid.trim().parse::<u64>()?);
        last_insert_at.push(ts(&src.sql(&format!(
            "SELECT to_char(max(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM t WHERE batch = {b}"
        ))?)?);
        times.push(ts(&src.sql(NOW_SQL)?)?);
        lsns.push(src.sql("SELECT pg_current_wal_lsn()")?);
        if b == 1 {
            src.sql("SELECT pg_create_restore_point('after-batch-1')")?;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        src.sql("SELECT pg_switch_wal()")?;
    }
    // A commit after every target, archived (RECIPES trap 1).
    src.sql("INSERT INTO t (id, batch) VALUES (99, 4)")?;
    switch_and_wait(|q| src.sql(q))?;

    let source = src.fs_source();
    let base = src.pg.base_dir().to_path_buf();
    let rc = src.restore_command();
    let cases: Vec<(&str, RecoveryTarget, Vec<i32>)> = vec![
        ("time1", RecoveryTarget::Time(times[0]), vec![0, 1]),
        ("time2", RecoveryTarget::Time(times[1]), vec![0, 1, 2]),
        ("time3", RecoveryTarget::Time(times[2]), vec![0, 1, 2, 3]),
        (
            "lsn2",
            RecoveryTarget::parse_cli("lsn", &lsns[1])?,
            vec![0, 1, 2],
        ),
        ("xid3", RecoveryTarget::Xid(xids[2]), vec![0, 1, 2, 3]),
        (
            "name1",
            RecoveryTarget::Name("after-batch-1".into()),
            vec![0, 1],
        ),
        ("immediate", RecoveryTarget::Immediate, vec![0]),
    ];
    // Restore in parallel, four at a time.
    for chunk in cases.chunks(4) {
        let runs = chunk.iter().map(|(name, target, _)| {
            restore_to(
                &source,
                base.join(format!("r-{name}")),
                rc.clone(),
                target.clone(),
            )
        });
        let restored = futures::future::join_all(runs).await;
        for ((name, target, want), r) in chunk.iter().zip(restored) {
            let r = r.with_context(|| format!("case {name}"))?;
            let got = ids(&r).await?;
            ensure!(
                got == expected(want),
                "{name} ({target}): rows {got}, want {}",
                expected(want)
            );
            let rec = r.report.recovery.as_ref().context("recovery report")?;
            ensure!(
                rec.reached_target && rec.promoted && !rec.paused,
                "{name}: {rec:?}"
            );
            ensure!(rec.timeline_after == Some(2), "{name}: {rec:?}");
            ensure!(rec.stopped_at_lsn.is_some(), "{name}: {rec:?}");
            if let RecoveryTarget::Time(t) = target {
                // The last replayed commit is the last batch kept: after its last insert,
                // at or before the target.
                let kept = *want.last().unwrap_or(&0) as usize;
                let at = rec.stopped_at_time.context("stopped_at_time")?;
                ensure!(at <= *t, "{name}: stopped at {at}, after the target {t}");
                ensure!(
                    at >= last_insert_at[kept - 1],
                    "{name}: stopped at {at}, before batch {kept}"
                );
            }
            if let RecoveryTarget::Lsn(l) = target {
                ensure!(rec.stopped_at_lsn >= Some(*l), "{name}: {rec:?}");
            }
            // Exactly one recovery target in the restored auto.conf, archiving off.
            let auto = r.report.pgdata.join("postgresql.auto.conf");
            let targets = active_targets(&auto)?;
            ensure!(targets.len() == 1, "{name}: {targets:?}");
            let auto_text = std::fs::read_to_string(&auto)?;
            ensure!(auto_text.contains("archive_mode = 'off'"), "{auto_text}");
            ensure!(!r.report.pgdata.join("recovery.conf").exists());
            tej_backup::pitr::stop_server(&r.report.pgdata, &r.server, &TokioCommandRunner, true)
                .await?;
        }
    }

    // A time beyond the newest archived WAL is refused before the directory is touched.
    let victim = base.join("victim");
    std::fs::create_dir_all(&victim)?;
    std::fs::write(victim.join("keep-me"), "precious")?;
    let beyond = Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let horizon = source.archive_horizon().await?.context("horizon")?;
    for target in [
        RecoveryTarget::Time(beyond),
        RecoveryTarget::Lsn(horizon.end_lsn().context("end")?),
    ] {
        for replace in [false, true] {
            let mut opts =
                PitrRestoreOptions::new(&victim, RecoveryConfig::new(rc.clone(), target.clone()));
            opts.replace_existing = replace;
            let e = restore_pitr(&source, &TokioCommandRunner, &opts)
                .await
                .unwrap_err();
            ensure!(
                matches!(e, BackupError::TargetBeyondArchive { .. }),
                "{target}: {e}"
            );
        }
        let missing = base.join("never-created");
        let opts =
            PitrRestoreOptions::new(&missing, RecoveryConfig::new(rc.clone(), target.clone()));
        ensure!(
            restore_pitr(&source, &TokioCommandRunner, &opts)
                .await
                .is_err()
        );
        ensure!(!missing.exists(), "{} was created", missing.display());
    }
    let names: Vec<_> = std::fs::read_dir(&victim)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    ensure!(names.len() == 1 && std::fs::read_to_string(victim.join("keep-me"))? == "precious");

    // A non-empty data directory is refused without confirmation...
    let opts = PitrRestoreOptions::new(
        &victim,
        RecoveryConfig::new(rc.clone(), RecoveryTarget::Immediate),
    );
    let e = restore_pitr(&source, &TokioCommandRunner, &opts)
        .await
        .unwrap_err();
    ensure!(matches!(e, BackupError::DataDirInUse { .. }), "{e}");
    ensure!(victim.join("keep-me").exists());
    // ... and replaced with it, once the new copy is complete.
    let mut opts = opts;
    opts.replace_existing = true;
    let (m, existing) = plan_pitr_restore(&source, &opts).await?;
    ensure!(existing == 1 && m.id.as_str().ends_with("-b1"));
    let r = restore_pitr(&source, &TokioCommandRunner, &opts).await?;
    ensure!(r.replaced_existing && r.recovery.is_none());
    ensure!(!victim.join("keep-me").exists() && victim.join("PG_VERSION").is_file());
    ensure!(victim.join("recovery.signal").is_file() && victim.join("backup_label").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(&base)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tej-"))
        .collect();
    ensure!(leftovers.is_empty(), "{leftovers:?}");

    // A time after the last commit but before the newest push passes the horizon check,
    // yet no archived commit lies after it: PostgreSQL says so and so does tej.
    let late = ts(&src.sql(NOW_SQL)?)?;
    std::thread::sleep(std::time::Duration::from_millis(20));
    src.sql("SELECT pg_create_restore_point('filler')")?;
    switch_and_wait(|q| src.sql(q))?;
    let e = restore_to(
        &source,
        base.join("r-late"),
        rc.clone(),
        RecoveryTarget::Time(late),
    )
    .await
    .unwrap_err();
    let e = e.downcast::<BackupError>()?;
    ensure!(matches!(e, BackupError::TargetNotReached { .. }), "{e}");
    ensure!(
        e.to_string()
            .contains("recovery ended before configured recovery target was reached"),
        "{e}"
    );
    Ok(())
}

//! Point-in-time recovery on real PostgreSQL 15 clusters: exactness for time, LSN, xid,
//! restore point and immediate targets; refusals before anything is touched; a target
//! the archive cannot reach; replacing a data directory.

mod pitr_support;

use anyhow::{Context, Result, ensure};
use jiff::Timestamp;
use pitr_support::*;
use std::path::PathBuf;
use tej_backup::{
    BackupError, BaseBackupSource, PitrRestoreReport, RecoveryTarget, ServerOptions, restore_pitr,
};
use tej_backup::{
    PitrRestoreOptions, RecoveryAction, RecoveryConfig, plan_pitr_restore, running_postmaster,
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
    action: RecoveryAction,
) -> Result<Restored> {
    std::fs::create_dir_all(&dir)?;
    chown_postgres(&dir)?;
    let server = server_in(&dir)?;
    let mut cfg = RecoveryConfig::new(restore_command, target.clone());
    cfg.action = action;
    let mut opts = PitrRestoreOptions::new(dir.join("data"), cfg);
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
                RecoveryAction::Promote,
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
            tej_backup::stop_server(&r.report.pgdata, &r.server, &TokioCommandRunner, true).await?;
        }
    }

    // Pause at a time target: read-only, in recovery, the same rows; shut down at an
    // xid target: the server is down and the log names the last replayed commit.
    let (paused, shut) = futures::future::join(
        restore_to(
            &source,
            base.join("r-pause"),
            rc.clone(),
            RecoveryTarget::Time(times[1]),
            RecoveryAction::Pause,
        ),
        restore_to(
            &source,
            base.join("r-shutdown"),
            rc.clone(),
            RecoveryTarget::Xid(xids[1]),
            RecoveryAction::Shutdown,
        ),
    )
    .await;
    let paused = paused?;
    let rec = paused.report.recovery.as_ref().context("recovery")?;
    ensure!(
        rec.paused && !rec.promoted && rec.running && rec.reached_target,
        "{rec:?}"
    );
    ensure!(rec.timeline_after.is_none(), "{rec:?}");
    ensure!(ids(&paused).await? == expected(&[0, 1, 2]));
    ensure!(query(&paused.server, "SELECT pg_is_in_recovery()").await? == "t");
    let at = rec.stopped_at_time.context("paused stopped_at_time")?;
    ensure!(at >= last_insert_at[1] && at <= times[1], "{at}");
    tej_backup::stop_server(
        &paused.report.pgdata,
        &paused.server,
        &TokioCommandRunner,
        true,
    )
    .await?;
    let shut = shut?;
    let rec = shut.report.recovery.as_ref().context("recovery")?;
    ensure!(
        !rec.running && !rec.promoted && !rec.paused && rec.reached_target,
        "{rec:?}"
    );
    ensure!(running_postmaster(&shut.report.pgdata).is_none());
    let msg = rec.stop_message.as_deref().unwrap_or_default();
    ensure!(
        msg.contains(&format!("after commit of transaction {}", xids[1])),
        "{msg}"
    );
    let at = rec.stopped_at_time.context("shutdown stopped_at_time")?;
    ensure!(at >= last_insert_at[1] && at <= times[1], "{at}");

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
    // The replaced directory is kept, renamed beside it; no staging leftovers.
    let leftovers: Vec<_> = std::fs::read_dir(&base)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tej-"))
        .collect();
    let kept = r
        .replaced_kept_at
        .clone()
        .context("the replaced directory is kept")?;
    ensure!(
        leftovers.len() == 1
            && kept.ends_with(&leftovers[0])
            && leftovers[0].starts_with("victim.tej-replaced-"),
        "{leftovers:?}"
    );
    ensure!(std::fs::read_to_string(kept.join("keep-me"))? == "precious");
    std::fs::remove_dir_all(&kept)?;

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
        RecoveryAction::Promote,
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

/// Restore, promote (timeline 2), keep archiving into the same archive, then restore
/// again past the switch: once from the timeline-1 base backup, following the history
/// file (`recovery_target_timeline = latest`), and once from a base backup of the
/// promoted copy, whose `postgresql.auto.conf` still carries the first restore's target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_follows_a_timeline_switch_and_replaces_stale_targets() -> Result<()> {
    let src = Source::start()?;
    src.sql("CREATE TABLE t (id int PRIMARY KEY)")?;
    let b1 = src.base_backup("tl1")?;
    src.sql("INSERT INTO t SELECT generate_series(1, 3)")?;
    let t_a = ts(&src.sql(NOW_SQL)?)?;
    std::thread::sleep(std::time::Duration::from_millis(20));
    src.sql("INSERT INTO t SELECT generate_series(4, 6)")?;
    switch_and_wait(|q| src.sql(q))?;

    // R1: back to t_a, promoted on timeline 2, archiving where the original does.
    let base = src.pg.base_dir().to_path_buf();
    let rc = src.restore_command();
    let dir1 = base.join("r1");
    std::fs::create_dir_all(&dir1)?;
    chown_postgres(&dir1)?;
    let server1 = server_in(&dir1)?;
    let mut cfg = RecoveryConfig::new(rc.clone(), RecoveryTarget::Time(t_a));
    cfg.archiving = tej_backup::RestoredArchiving::Keep;
    let mut opts = PitrRestoreOptions::new(dir1.join("data"), cfg);
    opts.start = Some(server1.clone());
    let r1 = restore_pitr(&src.fs_source(), &TokioCommandRunner, &opts).await?;
    let rec1 = r1.recovery.context("recovery")?;
    ensure!(rec1.promoted && rec1.timeline_after == Some(2), "{rec1:?}");
    let q1 = |sql: &str| -> Result<String> {
        let mut cmd = std::process::Command::new(tej_testkit::PgCluster::bin_dir().join("psql"));
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .arg("-p")
        .arg(server1.port.context("port")?.to_string())
        .args(["-d", "postgres", "-c", sql]);
        let out = cmd.output()?;
        ensure!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    ensure!(q1("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")? == "1,2,3");

    // A base backup of the promoted copy (its auto.conf has recovery_target_time = t_a).
    let b2 = base_backup_of(server1.port.context("port")?, &base.join("base-tl2"), "tl2")?;
    ensure!(b2.physical.as_ref().map(|p| p.timeline) == Some(2));
    ensure!(active_targets(&base.join("base-tl2").join("postgresql.auto.conf"))?.len() == 1);
    src.backups
        .lock()
        .unwrap()
        .push((b2.clone(), base.join("base-tl2")));

    q1("INSERT INTO t SELECT generate_series(100, 102)")?;
    let t_b = ts(&q1(NOW_SQL)?)?;
    std::thread::sleep(std::time::Duration::from_millis(20));
    q1("INSERT INTO t VALUES (200)")?;
    let seg = switch_and_wait(q1)?;
    ensure!(seg.starts_with("00000002"), "{seg}");
    ensure!(src.archive.path().join("00000002.history").is_file());
    let want = "1,2,3,100,101,102";

    // R2: from the timeline-1 backup, past the switch, following 00000002.history.
    let only_b1 = src.fs_source().only(&[&b1.id]);
    let dir2 = base.join("r2");
    std::fs::create_dir_all(&dir2)?;
    chown_postgres(&dir2)?;
    let server2 = server_in(&dir2)?;
    let mut cfg = RecoveryConfig::new(rc.clone(), RecoveryTarget::Time(t_b));
    cfg.timeline = Some(tej_backup::RecoveryTimeline::Latest);
    let mut opts = PitrRestoreOptions::new(dir2.join("data"), cfg);
    opts.start = Some(server2.clone());
    let r2 = restore_pitr(&only_b1, &TokioCommandRunner, &opts).await?;
    ensure!(r2.backup_id == b1.id.to_string());
    let rec2 = r2.recovery.context("recovery")?;
    ensure!(rec2.promoted && rec2.timeline_after == Some(3), "{rec2:?}");
    let got = query(
        &server2,
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM t",
    )
    .await?;
    ensure!(got == want, "from the timeline-1 backup: {got}");

    // R3: the newest backup before t_b is the timeline-2 one, with a stale target.
    let dir3 = base.join("r3");
    std::fs::create_dir_all(&dir3)?;
    chown_postgres(&dir3)?;
    let server3 = server_in(&dir3)?;
    let mut opts = PitrRestoreOptions::new(
        dir3.join("data"),
        RecoveryConfig::new(rc.clone(), RecoveryTarget::Time(t_b)),
    );
    opts.start = Some(server3.clone());
    let r3 = restore_pitr(&src.fs_source(), &TokioCommandRunner, &opts).await?;
    ensure!(r3.backup_id == b2.id.to_string(), "{}", r3.backup_id);
    ensure!(
        r3.config
            .removed
            .iter()
            .any(|l| l.starts_with("recovery_target_time")),
        "{:?}",
        r3.config.removed
    );
    let targets = active_targets(&dir3.join("data").join("postgresql.auto.conf"))?;
    ensure!(
        targets.len() == 1 && targets[0].contains(&t_b.strftime("%H:%M:%S").to_string()),
        "{targets:?}"
    );
    let got = query(
        &server3,
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM t",
    )
    .await?;
    ensure!(got == want, "from the timeline-2 backup: {got}");

    for (dir, server) in [(&dir1, &server1), (&dir2, &server2), (&dir3, &server3)] {
        tej_backup::stop_server(&dir.join("data"), server, &TokioCommandRunner, true).await?;
    }
    Ok(())
}

/// The drill end to end: newest backup plus WAL into a scratch cluster, sanity query,
/// RTO and RPO, scratch removed; and removed as well when recovery fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_reports_rto_rpo_and_sanity_results_and_cleans_up() -> Result<()> {
    let src = Source::start()?;
    src.sql("CREATE TABLE users (id int PRIMARY KEY, name text); INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 3) g;")?;
    src.base_backup("drill")?;
    let before = ts(&src.sql(NOW_SQL)?)?;
    src.sql("INSERT INTO users VALUES (4, 'late'), (5, 'later')")?;
    let after = ts(&src.sql(NOW_SQL)?)?;
    switch_and_wait(|q| src.sql(q))?;

    let scratch = src.pg.base_dir().join("drills");
    std::fs::create_dir_all(&scratch)?;
    chown_postgres(&scratch)?;
    let mut opts = tej_backup::DrillOptions::new(&scratch, src.restore_command());
    opts.sanity_queries = vec![
        "SELECT count(*) FROM users".into(),
        "SELECT max(name) FROM users WHERE id > 3".into(),
        "SELECT * FROM no_such_table".into(),
    ];
    opts.bin_dir = Some(tej_testkit::PgCluster::bin_dir());
    opts.timeout = std::time::Duration::from_secs(120);
    let fake_now = after + jiff::SignedDuration::from_secs(600);
    let clock = tej_core::FakeClock::new(fake_now);
    let report =
        tej_backup::run_drill(&opts, &src.fs_source(), &TokioCommandRunner, &clock).await?;
    eprintln!("drill report: {}", serde_json::to_string(&report)?);
    ensure!(report.backup_id.ends_with("-drill"), "{report:?}");
    ensure!(
        report.queries[0].output.as_deref() == Some("5"),
        "{:?}",
        report.queries
    );
    ensure!(
        report.queries[1].output.as_deref() == Some("later"),
        "{:?}",
        report.queries
    );
    ensure!(
        report.queries[2].output.is_none()
            && report.queries[2]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("no_such_table"))
    );
    ensure!(!report.ok, "a failed sanity query fails the drill");
    let until = report.recovered_until.context("recovered_until")?;
    ensure!(
        before < until && until <= after,
        "{until} not in ({before}, {after}]"
    );
    let rpo = report.rpo_seconds.context("rpo")?;
    ensure!(
        (rpo - fake_now.duration_since(until).as_secs_f64()).abs() < 1e-6,
        "{rpo}"
    );
    ensure!(
        report.restore_seconds > 0.0 && report.timeline_after == Some(2),
        "{report:?}"
    );
    ensure!(
        !report.scratch_dir.exists(),
        "scratch {} left behind",
        report.scratch_dir.display()
    );
    ensure!(std::fs::read_dir(&scratch)?.count() == 0);

    // All sanity queries good: ok.
    opts.sanity_queries.truncate(1);
    let report =
        tej_backup::run_drill(&opts, &src.fs_source(), &TokioCommandRunner, &clock).await?;
    ensure!(report.ok && report.queries.len() == 1, "{report:?}");

    // A restore_command that finds nothing: recovery fails, the scratch cluster goes anyway.
    opts.restore_command = format!("cp {}/missing/%f %p", src.archive.path().display());
    let e = tej_backup::run_drill(&opts, &src.fs_source(), &TokioCommandRunner, &clock)
        .await
        .unwrap_err();
    ensure!(matches!(e, BackupError::RecoveryFailed { .. }), "{e}");
    ensure!(
        std::fs::read_dir(&scratch)?.count() == 0,
        "scratch left after a failed drill"
    );
    Ok(())
}

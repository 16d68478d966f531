//! The WAL archive contract on real PostgreSQL 15 clusters: `archive_command` and
//! `restore_command` run the `wal_archive_cmd` example (the same library calls as
//! `tej wal push|fetch`) against a local repository; one test runs against the S3 server.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tej_backup::{
    BaseBackupRef, FETCH_FATAL_EXIT_CODE, FaultyStore, FetchOutcome, LocalStore, Lsn, ObjectStore,
    PhysicalInfo, PushOptions, PushStatus, PutCut, Repository, S3Location, S3Options, S3Store,
    WalArchive, WalFileName, fetch_exit_code, system_identifier_from_pgdata,
};
use tej_core::Secret;
use tej_testkit::{PgCluster, PgClusterOptions, S3Server};

const SEG: u64 = 16 << 20;

/// Builds the example once (the test may run without `cargo test` having built examples).
fn cmd_bin() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // <target>/debug/deps/wal_archive-HASH
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or("no target dir")?
            .to_path_buf();
        let target = profile_dir.parent().ok_or("no target dir")?.to_path_buf();
        let bin = profile_dir.join("examples").join("wal_archive_cmd");
        // Fresh when built after this test binary (which was built from the same sources):
        // skip cargo then, it may have to wait for the shared target directory's lock.
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if let (Some(b), Some(t)) = (mtime(&bin), mtime(&exe))
            && b >= t
        {
            return reachable(&bin);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "tej-backup",
                "--example",
                "wal_archive_cmd",
            ])
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("building wal_archive_cmd failed: {status}"));
        }
        reachable(&bin)
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// The program where the server's OS user can run it, wherever the checkout is.
fn reachable(bin: &Path) -> std::result::Result<PathBuf, String> {
    tej_testkit::Reachable::shared(bin).map_err(|e| format!("{e:#}"))
}

/// A directory the `postgres` OS user can write (the server runs archive_command as it).
fn shared_dir() -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir()?;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777))?;
    Ok(d)
}

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Result<Output> {
    let mut c = Command::new(cmd_bin()?);
    for a in args {
        c.arg(a);
    }
    Ok(c.output()?)
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn archiving_cluster(repo: &Path, extra: &str) -> Result<PgCluster> {
    let bin = cmd_bin()?;
    PgCluster::start_with(PgClusterOptions {
        archive_mode: true,
        archive_command: Some(format!(
            "{} push {} %p --pgdata .{extra}",
            bin.display(),
            repo.display()
        )),
        extra_conf: vec!["wal_keep_size = '1GB'".into()],
        ..PgClusterOptions::default()
    })
}

/// Writes some rows and switches to a new segment; returns the completed segment.
fn switch(pg: &PgCluster) -> Result<String> {
    pg.psql(
        "postgres",
        "CREATE TABLE IF NOT EXISTS t(id serial, v text); INSERT INTO t(v) SELECT md5(g::text) FROM generate_series(1, 2000) g;",
    )?;
    pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
}

/// Waits (bounded) until PostgreSQL reports `name` archived.
fn wait_archived(pg: &PgCluster, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = pg.psql(
            "postgres",
            "SELECT coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver",
        )?;
        let cols: Vec<&str> = row.split('|').collect();
        let archived = cols.first().copied().unwrap_or("");
        if archived.len() >= 24 && archived[..24] >= *name && archived[..8] == name[..8] {
            return Ok(());
        }
        if archived[..archived.len().min(8)] > name[..8] && !archived.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name} not archived after 60 s (pg_stat_archiver: {row}); server log:\n{}",
                pg.server_log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A base backup's WAL facts, from the non-exclusive backup API (no files copied: these
/// tests need only where its WAL starts and stops).
fn base_backup_ref(pg: &PgCluster, id: &str) -> Result<BaseBackupRef> {
    let out = pg.psql(
        "postgres",
        "SELECT pg_backup_start('wal-test', true); SELECT lsn FROM pg_backup_stop(false); SELECT timeline_id FROM pg_control_checkpoint(); SELECT system_identifier FROM pg_control_system();",
    )?;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(lines.len() == 4, "unexpected output {out:?}");
    let start: Lsn = lines[0].parse()?;
    let stop: Lsn = lines[1].parse()?;
    let timeline: u32 = lines[2].parse()?;
    Ok(BaseBackupRef {
        id: id.into(),
        finished_at: jiff::Timestamp::now(),
        physical: PhysicalInfo {
            system_identifier: lines[3].parse()?,
            timeline,
            start_lsn: start,
            stop_lsn: stop,
            start_wal: start.segment_name(timeline, SEG).to_string(),
            stop_wal: stop.segment_name(timeline, SEG).to_string(),
            wal_segment_size: SEG,
            pg_major: 15,
            data_directory: pg.data_dir().display().to_string(),
        },
    })
}

fn object_path(repo: &Path, name: &str) -> PathBuf {
    repo.join("wal")
        .join(&name[..8])
        .join(format!("{name}.tejwal"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_command_and_restore_command_contract() -> Result<()> {
    let repo_dir = shared_dir()?;
    let repo = repo_dir.path().join("repo");
    let pg = archiving_cluster(&repo, "")?;
    let names = [switch(&pg)?, switch(&pg)?];
    wait_archived(&pg, &names[1])?;

    // The archive recorded this cluster, as pg_control and the server say.
    let wal = WalArchive::new(Repository::open(repo.to_str().context("utf-8")?).await?);
    let info = wal.info().await?.context("no archive info")?;
    let server_sysid: u64 = pg
        .psql(
            "postgres",
            "SELECT system_identifier FROM pg_control_system()",
        )?
        .parse()?;
    ensure!(info.system_identifier == server_sysid);
    ensure!(system_identifier_from_pgdata(pg.data_dir())? == server_sysid);
    ensure!(info.wal_segment_size == SEG);
    let listed: Vec<String> = wal.list().await?.into_iter().map(|e| e.name).collect();
    for n in &names {
        ensure!(listed.contains(n), "{n} not listed in {listed:?}");
    }

    // restore_command: every archived segment comes back byte for byte.
    let out = tempfile::tempdir()?;
    for n in &names {
        let dest = out.path().join("RECOVERYXLOG");
        let o = run(&[&"fetch", &repo, n, &dest])?;
        ensure!(code(&o) == 0, "fetch {n}: {o:?}");
        let original = std::fs::read(pg.data_dir().join("pg_wal").join(n))?;
        ensure!(std::fs::read(&dest)? == original, "{n} differs");
    }
    // Missing: exit 1, nothing written.
    let dest = out.path().join("missing");
    let o = run(&[&"fetch", &repo, &"0000000100000000000000FE", &dest])?;
    ensure!(code(&o) == 1 && !dest.exists(), "{o:?}");

    // The same segment again: success, nothing rewritten.
    let first = pg.data_dir().join("pg_wal").join(&names[0]);
    let stored_before = std::fs::read(object_path(&repo, &names[0]))?;
    let o = run(&[&"push", &repo, &first])?;
    ensure!(code(&o) == 0, "{o:?}");
    // Different content under the same name: refused, the stored one intact.
    let changed_dir = tempfile::tempdir()?;
    let changed = changed_dir.path().join(&names[0]);
    let mut bytes = std::fs::read(&first)?;
    bytes[SEG as usize / 2] ^= 0xFF;
    std::fs::write(&changed, &bytes)?;
    let o = run(&[&"push", &repo, &changed])?;
    ensure!(code(&o) != 0, "a different segment was accepted");
    let stderr = String::from_utf8_lossy(&o.stderr);
    ensure!(stderr.contains("different content"), "{stderr}");
    ensure!(std::fs::read(object_path(&repo, &names[0]))? == stored_before);

    // A segment of another cluster is refused.
    let other = PgCluster::start()?;
    let foreign_name = switch(&other)?;
    let foreign = changed_dir.path().join(&foreign_name);
    std::fs::copy(
        other.data_dir().join("pg_wal").join(&foreign_name),
        &foreign,
    )?;
    let o = run(&[&"push", &repo, &foreign])?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    ensure!(
        code(&o) == 1 && stderr.contains("belongs to cluster"),
        "{o:?}"
    );
    // ...also when pushed with that cluster's pg_control (the archive's identity wins).
    let o = run(&[&"push", &repo, &foreign, &"--pgdata", &other.data_dir()])?;
    ensure!(code(&o) == 1, "{o:?}");
    // ...and this cluster's pg_control refuses it before the archive is even asked.
    let o = run(&[&"push", &repo, &foreign, &"--pgdata", &pg.data_dir()])?;
    ensure!(code(&o) == 1, "{o:?}");

    // A damaged object is fatal for restore_command (above 125), never a partial file.
    let victim = object_path(&repo, &names[1]);
    let good = std::fs::read(&victim)?;
    let mut bad = good.clone();
    bad[100] ^= 0x01;
    std::fs::write(&victim, &bad)?;
    let dest = out.path().join("damaged");
    let o = run(&[&"fetch", &repo, &names[1], &dest])?;
    ensure!(code(&o) == FETCH_FATAL_EXIT_CODE && !dest.exists(), "{o:?}");
    std::fs::write(&victim, &good)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuity_reports_a_deleted_segment_and_the_window_it_breaks() -> Result<()> {
    let repo_dir = shared_dir()?;
    let repo = repo_dir.path().join("repo");
    let pg = archiving_cluster(&repo, "")?;
    switch(&pg)?;
    let b = base_backup_ref(&pg, "b1")?;
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(switch(&pg)?);
    }
    wait_archived(&pg, names.last().context("names")?)?;
    let wal = WalArchive::new(Repository::open(repo.to_str().context("utf-8")?).await?);
    let r = wal.continuity(std::slice::from_ref(&b)).await?;
    ensure!(r.gaps.is_empty() && r.chains[0].unbroken, "{r:?}");
    let w = r.window.as_ref().context("no window")?;
    ensure!(
        w.from_backup == "b1" && w.to_wal == *names.last().context("names")?,
        "{w:?}"
    );

    // Delete a segment in the middle of the chain.
    let victim = &names[1];
    std::fs::remove_file(object_path(&repo, victim))?;
    let r = wal.continuity(std::slice::from_ref(&b)).await?;
    ensure!(r.gaps.len() == 1, "{r:?}");
    let g = &r.gaps[0];
    ensure!(
        g.first_missing == *victim && g.missing_segments == 1,
        "{g:?}"
    );
    ensure!(g.breaks == ["b1"], "{g:?}");
    let victim_file = WalFileName::parse(victim, SEG)?;
    ensure!(Some(g.from_lsn) == victim_file.start_lsn());
    ensure!(
        g.last_before_at.is_some() && g.first_after_at.is_some(),
        "{g:?}"
    );
    ensure!(r.window.is_none(), "a broken chain gives no window: {r:?}");
    let c = &r.chains[0];
    ensure!(!c.unbroken && c.consistent, "{c:?}");
    ensure!(
        c.reachable_wal.as_deref() == Some(names[0].as_str()),
        "{c:?}"
    );

    // Push it again from pg_wal: the chain is whole again.
    let pushed = wal
        .push(
            &pg.data_dir().join("pg_wal").join(victim),
            &PushOptions::default(),
        )
        .await?;
    ensure!(pushed.status == PushStatus::Archived);
    let r = wal.continuity(std::slice::from_ref(&b)).await?;
    ensure!(r.gaps.is_empty() && r.window.is_some(), "{r:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeline_switch_is_followed_through_the_history_file() -> Result<()> {
    let repo_dir = shared_dir()?;
    let repo = repo_dir.path().join("repo");
    let mut pg = archiving_cluster(&repo, "")?;
    switch(&pg)?;
    let b = base_backup_ref(&pg, "b1")?;
    let last = switch(&pg)?;
    wait_archived(&pg, &last)?;
    let rows_before = pg.psql("postgres", "SELECT count(*) FROM t")?;

    // Archive recovery in place with our restore_command, ending in a new timeline.
    pg.stop()?;
    let signal = pg.data_dir().join("recovery.signal");
    std::fs::write(&signal, "")?;
    let conf = pg.data_dir().join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf)?;
    text.push_str(&format!(
        "\nrestore_command = '{} fetch {} %f %p'\nrecovery_target_timeline = 'latest'\n",
        cmd_bin()?.display(),
        repo.display()
    ));
    std::fs::write(&conf, text)?;
    chown_postgres(&signal)?;
    pg.start_again()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg.psql("postgres", "SELECT pg_is_in_recovery()")? != "f" {
        ensure!(
            Instant::now() < deadline,
            "still in recovery:\n{}",
            pg.server_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(pg.psql("postgres", "SELECT count(*) FROM t")? == rows_before);
    let tli = pg.psql(
        "postgres",
        "SELECT timeline_id FROM pg_control_checkpoint()",
    )?;
    ensure!(tli == "2", "timeline {tli}");
    let mut on_two = Vec::new();
    for _ in 0..2 {
        on_two.push(switch(&pg)?);
    }
    let newest = on_two.last().context("names")?.clone();
    ensure!(newest.starts_with("00000002"), "{newest}");
    wait_archived(&pg, &newest)?;

    let wal = WalArchive::new(Repository::open(repo.to_str().context("utf-8")?).await?);
    let listed: Vec<String> = wal.list().await?.into_iter().map(|e| e.name).collect();
    ensure!(
        listed.contains(&"00000002.history".to_string()),
        "{listed:?}"
    );
    let r = wal.continuity(std::slice::from_ref(&b)).await?;
    ensure!(r.problems.is_empty(), "{:?}", r.problems);
    ensure!(r.switches.len() == 1 && r.switches[0].parent == 1 && r.switches[0].child == 2);
    let c = &r.chains[0];
    ensure!(c.timelines == [1, 2] && c.unbroken, "{r:?}");
    ensure!(c.reachable_wal.as_deref() == Some(newest.as_str()), "{c:?}");
    // The history file comes back through restore_command too.
    let out = tempfile::tempdir()?;
    let dest = out.path().join("RECOVERYHISTORY");
    ensure!(fetch_exit_code(&wal.fetch("00000002.history", &dest).await) == 0);
    ensure!(std::fs::read_to_string(&dest)?.starts_with("1\t"));
    Ok(())
}

fn chown_postgres(p: &Path) -> Result<()> {
    let user = nix::unistd::User::from_name("postgres")?.context("no postgres user")?;
    nix::unistd::chown(p, Some(user.uid), Some(user.gid))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_archive_command_keeps_the_chain_whole() -> Result<()> {
    let repo_dir = shared_dir()?;
    let repo = repo_dir.path().join("repo");
    let spool = repo_dir.path().join("spool");
    let bin = cmd_bin()?;
    let pg = PgCluster::start_with(PgClusterOptions {
        archive_mode: true,
        archive_command: Some(format!(
            "{} push-async {} %p pg_wal {} 2 --pgdata .",
            bin.display(),
            repo.display(),
            spool.display()
        )),
        extra_conf: vec!["wal_keep_size = '1GB'".into()],
        ..PgClusterOptions::default()
    })?;
    switch(&pg)?;
    let b = base_backup_ref(&pg, "b1")?;
    let mut last = String::new();
    for _ in 0..4 {
        last = switch(&pg)?;
    }
    wait_archived(&pg, &last)?;
    let wal = WalArchive::new(Repository::open(repo.to_str().context("utf-8")?).await?);
    let r = wal.continuity(std::slice::from_ref(&b)).await?;
    ensure!(r.chains[0].unbroken && r.gaps.is_empty(), "{r:?}");
    ensure!(r.window.as_ref().is_some_and(|w| w.to_wal >= last), "{r:?}");
    // Every file PostgreSQL asked for consumed its spool record.
    let left: Vec<_> = std::fs::read_dir(&spool)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ok") && n.get(..24).is_some_and(|p| p <= last.as_str()))
        .collect();
    ensure!(left.is_empty(), "{left:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_archive_and_outages() -> Result<()> {
    let pg = PgCluster::start()?;
    let names = [switch(&pg)?, switch(&pg)?];
    let segs = tempfile::tempdir()?;
    for n in &names {
        std::fs::copy(pg.data_dir().join("pg_wal").join(n), segs.path().join(n))?;
    }
    let server = S3Server::start()?;
    let bucket = server.unique_bucket("wal")?;
    let opts = S3Options {
        endpoint: Some(server.endpoint()),
        region: Some(server.region().to_string()),
        force_path_style: true,
        access_key: Some(server.access_key().to_string()),
        secret_key: Some(Secret::new(server.secret_key())),
        max_attempts: 2,
        retry_initial_delay: Duration::from_millis(10),
        ..S3Options::default()
    };
    let store = S3Store::connect(S3Location::new(&bucket, "cluster-a")?, opts).await?;
    let wal = WalArchive::new(Repository::from_store(Arc::new(store)));
    let push = PushOptions {
        system_identifier: Some(system_identifier_from_pgdata(pg.data_dir())?),
        ..PushOptions::default()
    };
    for n in &names {
        let r = wal.push(&segs.path().join(n), &push).await?;
        ensure!(r.status == PushStatus::Archived, "{r:?}");
        let r = wal.push(&segs.path().join(n), &push).await?;
        ensure!(r.status == PushStatus::AlreadyArchived, "{r:?}");
    }
    let out = tempfile::tempdir()?;
    for n in &names {
        let dest = out.path().join(n);
        ensure!(wal.fetch(n, &dest).await? == FetchOutcome::Fetched);
        ensure!(std::fs::read(&dest)? == std::fs::read(segs.path().join(n))?);
    }
    ensure!(
        wal.fetch("0000000100000000000000FE", &out.path().join("x"))
            .await?
            == FetchOutcome::NotFound
    );
    // The command-line path with S3 settings from the environment.
    let dest = out.path().join("via-cmd");
    let o = Command::new(cmd_bin()?)
        .args(["fetch", &format!("s3://{bucket}/cluster-a"), &names[0]])
        .arg(&dest)
        .env("AWS_ENDPOINT_URL", server.endpoint())
        .env("AWS_REGION", server.region())
        .env("AWS_ACCESS_KEY_ID", server.access_key())
        .env("AWS_SECRET_ACCESS_KEY", server.secret_key())
        .output()?;
    ensure!(code(&o) == 0, "{o:?}");
    ensure!(std::fs::read(&dest)? == std::fs::read(segs.path().join(&names[0]))?);

    // Storage down: fetch is fatal (above 125), push fails, nothing partial appears.
    let endpoint = server.endpoint();
    drop(server);
    let res = wal.fetch(&names[0], &out.path().join("down")).await;
    ensure!(res.is_err(), "{res:?}");
    ensure!(fetch_exit_code(&res) > 125);
    ensure!(!out.path().join("down").exists());
    let o = Command::new(cmd_bin()?)
        .args(["fetch", &format!("s3://{bucket}/cluster-a"), &names[0]])
        .arg(out.path().join("down"))
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .output()?;
    ensure!(code(&o) == FETCH_FATAL_EXIT_CODE, "{o:?}");
    ensure!(!out.path().join("down").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_push_leaves_no_object_in_a_local_repository() -> Result<()> {
    let pg = PgCluster::start()?;
    let name = switch(&pg)?;
    let seg = pg.data_dir().join("pg_wal").join(&name);
    let dir = tempfile::tempdir()?;
    let local = Arc::new(LocalStore::create(dir.path())?);
    let push = PushOptions::default();
    // Establish the archive with another segment first.
    let other = switch(&pg)?;
    WalArchive::new(Repository::from_store(local.clone()))
        .push(&pg.data_dir().join("pg_wal").join(&other), &push)
        .await?;
    let faulty =
        Arc::new(FaultyStore::new(local.clone()).cut_puts(1, PutCut::Error { after: 64 << 10 }));
    let wal = WalArchive::new(Repository::from_store(faulty));
    ensure!(wal.push(&seg, &push).await.is_err());
    ensure!(local.head(&wal.key(&name)?).await?.is_none());
    let out = tempfile::tempdir()?;
    ensure!(wal.fetch(&name, &out.path().join("x")).await? == FetchOutcome::NotFound);
    // No stray file carries the segment's name anywhere in the repository.
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                let n = e.file_name().to_string_lossy().into_owned();
                ensure!(!n.contains(&name), "left behind: {}", e.path().display());
            }
        }
    }
    ensure!(wal.push(&seg, &push).await?.status == PushStatus::Archived);
    Ok(())
}

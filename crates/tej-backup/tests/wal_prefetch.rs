//! WAL prefetch against segments of a real PostgreSQL 15 cluster archived in a local
//! repository: what the spool serves is byte for byte what was archived, a spooled file
//! that does not match its record (or its name, or the cluster) is never used, a damaged
//! archived segment stops the prefetch without failing the fetch, the spool stays within its
//! bounds and is gone when recovery looks for a timeline the archive does not hold; with a
//! background worker, the same, and one worker per spool that stops with the spool, at the
//! end of the archive and after a crash leaves no half-written segment in use.

use anyhow::{Context, Result, ensure};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tej_backup::{
    FetchOutcome, PREFETCH_SPOOL_NAME, PrefetchOptions, PushOptions, Repository, WalArchive,
    WorkerCommand, system_identifier_from_pgdata,
};
use tej_testkit::PgCluster;

/// `n` consecutive completed segments of `pg`, copied out of pg_wal, in order.
fn segments(pg: &PgCluster, dir: &Path, n: usize) -> Result<Vec<(String, PathBuf)>> {
    pg.psql("postgres", "CREATE TABLE IF NOT EXISTS t (v text)")?;
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    while out.len() < n {
        pg.psql(
            "postgres",
            "INSERT INTO t SELECT md5(g::text) FROM generate_series(1, 200) g",
        )?;
        let name = pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")?;
        if out.last().is_some_and(|(last, _)| *last == name) {
            continue;
        }
        let copy = dir.join(&name);
        std::fs::copy(pg.data_dir().join("pg_wal").join(&name), &copy)
            .with_context(|| format!("copy {name}"))?;
        out.push((name, copy));
    }
    for w in out.windows(2) {
        ensure!(
            u64::from_str_radix(&w[1].0[16..], 16)? == u64::from_str_radix(&w[0].0[16..], 16)? + 1,
            "segments not consecutive: {} then {}",
            w[0].0,
            w[1].0
        );
    }
    Ok(out)
}

struct Setup {
    _pg: PgCluster,
    dir: tempfile::TempDir,
    repo_dir: PathBuf,
    wal: WalArchive,
    segs: Vec<(String, PathBuf)>,
}

async fn setup(n: usize) -> Result<Setup> {
    let pg = PgCluster::start()?;
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    std::fs::create_dir(&src)?;
    let segs = segments(&pg, &src, n)?;
    let repo_dir = dir.path().join("repo");
    std::fs::create_dir(&repo_dir)?;
    let wal = WalArchive::new(Repository::open(repo_dir.to_str().context("path")?).await?);
    let opts = PushOptions {
        system_identifier: Some(system_identifier_from_pgdata(pg.data_dir())?),
        ..PushOptions::default()
    };
    for (_, p) in &segs {
        wal.push(p, &opts).await?;
    }
    Ok(Setup {
        _pg: pg,
        dir,
        repo_dir,
        wal,
        segs,
    })
}

impl Setup {
    fn pg_wal(&self) -> PathBuf {
        let d = self.dir.path().join("restore/pg_wal");
        std::fs::create_dir_all(&d).unwrap();
        d
    }
    fn spool(&self) -> PathBuf {
        self.pg_wal().join(PREFETCH_SPOOL_NAME)
    }
    /// The archived object of segment `i`, in the local repository.
    fn object(&self, i: usize) -> Result<PathBuf> {
        Ok(self.repo_dir.join(self.wal.key(&self.segs[i].0)?.as_str()))
    }
    async fn fetch(&self, i: usize, opts: &PrefetchOptions) -> Result<FetchOutcome> {
        let dest = self.pg_wal().join("RECOVERYXLOG");
        let o = self
            .wal
            .fetch_prefetching(&self.segs[i].0, &dest, opts)
            .await?;
        if o == FetchOutcome::Fetched {
            ensure!(
                std::fs::read(&dest)? == std::fs::read(&self.segs[i].1)?,
                "segment {i} ({}) restored with other bytes",
                self.segs[i].0
            );
        }
        Ok(o)
    }
    fn spooled(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.spool())
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.len() == 24)
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetched_segments_come_from_the_spool_byte_for_byte() -> Result<()> {
    let s = setup(11).await?;
    let opts = PrefetchOptions::default();
    ensure!(s.fetch(0, &opts).await? == FetchOutcome::Fetched);
    let names: Vec<String> = s.segs[1..9].iter().map(|(n, _)| n.clone()).collect();
    ensure!(
        s.spooled() == names,
        "spool after the first fetch: {:?}",
        s.spooled()
    );

    // Segments 1..=5 now exist only in the spool.
    for i in 1..=5 {
        std::fs::remove_file(s.object(i)?)?;
    }
    for i in 1..=4 {
        ensure!(
            s.fetch(i, &opts).await? == FetchOutcome::Fetched,
            "segment {i}"
        );
    }
    // Used segments are gone from the spool, and with half of it left nothing is fetched.
    let spooled = s.spooled();
    let names: Vec<String> = s.segs[5..9].iter().map(|(n, _)| n.clone()).collect();
    ensure!(spooled == names, "{spooled:?}");
    // Fewer than half left: topped up to the end of the archive.
    ensure!(s.fetch(5, &opts).await? == FetchOutcome::Fetched);
    let names: Vec<String> = s.segs[6..11].iter().map(|(n, _)| n.clone()).collect();
    ensure!(s.spooled() == names, "not topped up: {:?}", s.spooled());
    for i in 6..11 {
        ensure!(
            s.fetch(i, &opts).await? == FetchOutcome::Fetched,
            "segment {i}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_segment_that_does_not_match_is_never_restored() -> Result<()> {
    let s = setup(6).await?;
    let opts = PrefetchOptions::default();
    s.fetch(0, &opts).await?;
    let spool = s.spool();
    // A flipped byte in segment 1; segment 3's file and record spooled under segment 2's
    // name (both hash right: only its header tells it starts elsewhere).
    let p1 = spool.join(&s.segs[1].0);
    let mut b = std::fs::read(&p1)?;
    b[8192 + 100] ^= 0xff;
    std::fs::write(&p1, &b)?;
    std::fs::copy(spool.join(&s.segs[3].0), spool.join(&s.segs[2].0))?;
    std::fs::copy(
        spool.join(format!("{}.sha256", s.segs[3].0)),
        spool.join(format!("{}.sha256", s.segs[2].0)),
    )?;
    // `fetch` checks the restored bytes equal what was archived.
    s.fetch(1, &opts).await.context("tampered segment 1")?;
    s.fetch(2, &opts)
        .await
        .context("segment 3 under 2's name")?;

    // Without the archive's copy, a spooled segment that does not match is not restored
    // either: the fetch says what the archive says.
    let p4 = spool.join(&s.segs[4].0);
    let mut b = std::fs::read(&p4)?;
    b[100] ^= 0xff;
    std::fs::write(&p4, &b)?;
    std::fs::remove_file(s.object(4)?)?;
    ensure!(s.fetch(4, &opts).await? == FetchOutcome::NotFound);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_archived_segment_stops_the_prefetch_but_not_the_fetch() -> Result<()> {
    let s = setup(6).await?;
    let obj = s.object(3)?;
    let mut b = std::fs::read(&obj)?;
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&obj, &b)?;
    let opts = PrefetchOptions::default();
    ensure!(s.fetch(0, &opts).await? == FetchOutcome::Fetched);
    let spooled = s.spooled();
    ensure!(
        spooled == vec![s.segs[1].0.clone(), s.segs[2].0.clone()],
        "{spooled:?}"
    );
    s.fetch(1, &opts).await?;
    s.fetch(2, &opts).await?;
    let r = s.fetch(3, &opts).await;
    ensure!(
        r.as_ref()
            .is_err_and(|e| e.to_string().contains("SHA-256") || e.to_string().contains("damaged")),
        "a damaged segment must fail the fetch, not read as restored or absent: {r:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_keeps_its_bounds_and_ends_with_the_recovery() -> Result<()> {
    let s = setup(8).await?;
    let opts = PrefetchOptions {
        max_bytes: 3 * (16 << 20),
        ..PrefetchOptions::default()
    };
    s.fetch(0, &opts).await?;
    ensure!(s.spooled().len() == 3, "{:?}", s.spooled());

    // Recovery restarted from an earlier segment is served from the archive; spooled
    // segments before the one asked for are deleted.
    s.fetch(2, &opts).await?;
    ensure!(!s.spooled().contains(&s.segs[1].0), "{:?}", s.spooled());
    s.fetch(1, &opts).await?;

    // No prefetch: nothing spooled beyond what exists.
    let off = PrefetchOptions {
        ahead: 0,
        ..PrefetchOptions::default()
    };
    s.fetch(7, &off).await?;

    // Looking for a timeline the archive does not hold ends the spool.
    let dest = s.pg_wal().join("RECOVERYHISTORY");
    let o = s
        .wal
        .fetch_prefetching("00000002.history", &dest, &opts)
        .await?;
    ensure!(o == FetchOutcome::NotFound);
    ensure!(!s.spool().exists(), "the spool outlived the recovery");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_left_by_another_archive_is_emptied_before_use() -> Result<()> {
    let a = setup(4).await?;
    let b = setup(4).await?;
    let opts = PrefetchOptions {
        spool_dir: Some(a.dir.path().join("shared-spool")),
        ..PrefetchOptions::default()
    };
    a.fetch(0, &opts).await?;
    let spool = opts.spool_dir.clone().unwrap();
    let left: Vec<_> = std::fs::read_dir(&spool)?.collect();
    ensure!(left.len() > 2, "nothing spooled by the first archive");
    // The other cluster's archive: none of the first one's segments may be restored.
    for i in 0..4 {
        b.fetch(i, &opts)
            .await
            .with_context(|| format!("segment {i} of the other cluster"))?;
    }
    Ok(())
}

/// Options whose worker command starts nothing: the test runs the worker itself
/// ([`WalArchive::prefetch_worker`]) and decides when.
fn with_test_worker() -> PrefetchOptions {
    PrefetchOptions {
        worker: Some(WorkerCommand {
            program: "/bin/true".into(),
            args: Vec::new(),
        }),
        ..PrefetchOptions::default()
    }
}

impl Setup {
    fn dest(&self) -> PathBuf {
        self.pg_wal().join("RECOVERYXLOG")
    }
    /// Runs the prefetch worker for this setup's spool in the background.
    fn worker(&self, opts: &PrefetchOptions) -> tokio::task::JoinHandle<Result<(), String>> {
        let (wal, dest, opts) = (self.wal.clone(), self.dest(), opts.clone());
        tokio::spawn(async move {
            wal.prefetch_worker(&dest, &opts)
                .await
                .map_err(|e| e.to_string())
        })
    }
    /// Waits (60 s at most) until the spool holds exactly `want`.
    async fn wait_spooled(&self, want: &[String]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.spooled() != want {
            ensure!(
                Instant::now() < deadline,
                "spool {:?}, want {want:?}",
                self.spooled()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
    fn names(&self, r: std::ops::Range<usize>) -> Vec<String> {
        self.segs[r].iter().map(|(n, _)| n.clone()).collect()
    }
}

/// Waits (60 s at most) for a worker to end.
async fn ended(w: tokio::task::JoinHandle<Result<(), String>>) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(60), w)
        .await
        .context("the worker did not stop")??
        .map_err(anyhow::Error::msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_the_window_spooled_and_stops_at_the_end_of_the_archive() -> Result<()> {
    let s = setup(12).await?;
    let opts = with_test_worker();
    // No worker yet: the first call fetches its segment itself and asks for the next ones.
    ensure!(s.fetch(0, &opts).await? == FetchOutcome::Fetched);
    ensure!(s.spooled().is_empty(), "the call filled the spool itself");
    let worker = s.worker(&opts);
    s.wait_spooled(&s.names(1..9)).await?;

    // Served from the spool: segments 1..=3 exist nowhere else now.
    for i in 1..=3 {
        std::fs::remove_file(s.object(i)?)?;
    }
    // A flipped byte in spooled segment 4: it must come from the archive instead.
    let p4 = s.spool().join(&s.segs[4].0);
    let mut b = std::fs::read(&p4)?;
    b[8192 + 100] ^= 0xff;
    std::fs::write(&p4, &b)?;
    for i in 1..12 {
        ensure!(
            s.fetch(i, &opts).await? == FetchOutcome::Fetched,
            "segment {i}"
        );
    }
    // The segment after the last one is not archived: the worker stops there, and the call
    // says what the archive says.
    let after = format!(
        "{}{:08X}",
        &s.segs[11].0[..16],
        u32::from_str_radix(&s.segs[11].0[16..], 16)? + 1
    );
    let o = s.wal.fetch_prefetching(&after, &s.dest(), &opts).await?;
    ensure!(o == FetchOutcome::NotFound, "{o:?}");
    ended(worker).await?;
    ensure!(s.spooled().is_empty(), "{:?}", s.spooled());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waits_for_the_segment_the_running_worker_brings() -> Result<()> {
    // Eight segments: after the sixth, the window (6 and 7) is still in the archive, so the
    // worker keeps running.
    let s = setup(8).await?;
    let opts = PrefetchOptions {
        ahead: 2,
        ..with_test_worker()
    };
    s.fetch(0, &opts).await?;
    let worker = s.worker(&opts);
    s.wait_spooled(&s.names(1..3)).await?;
    // The window holds 1 and 2; segment 3 is in the archive only. Asked for while the worker
    // runs, it is brought by the worker, then deleted from the archive to show where 4 and 5
    // come from.
    s.fetch(1, &opts).await?;
    s.fetch(2, &opts).await?;
    s.wait_spooled(&s.names(3..5)).await?;
    std::fs::remove_file(s.object(3)?)?;
    std::fs::remove_file(s.object(4)?)?;
    s.fetch(3, &opts).await?;
    s.fetch(4, &opts).await?;
    s.fetch(5, &opts).await?;
    s.wait_spooled(&s.names(6..8)).await?;
    // Another worker for the same spool returns at once: one worker per spool.
    let second = s.worker(&opts);
    ended(second).await?;
    ensure!(!worker.is_finished(), "the first worker stopped");
    // Recovery ends (a timeline the archive does not hold): spool and worker are gone.
    let o = s
        .wal
        .fetch_prefetching(
            "00000002.history",
            &s.pg_wal().join("RECOVERYHISTORY"),
            &opts,
        )
        .await?;
    ensure!(o == FetchOutcome::NotFound);
    ended(worker).await?;
    let left: Vec<String> = std::fs::read_dir(s.pg_wal())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(PREFETCH_SPOOL_NAME))
        .collect();
    ensure!(left.is_empty(), "left after the recovery: {left:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_killed_worker_left_half_written_is_never_used() -> Result<()> {
    let s = setup(6).await?;
    let opts = with_test_worker();
    s.fetch(0, &opts).await?;
    let spool = s.spool();
    // A worker killed mid-write leaves a temporary file, or a segment without its record;
    // its lock died with it.
    let partial = std::fs::read(&s.segs[1].1)?;
    std::fs::write(
        tej_core::fsutil::temp_path_for(&spool.join(&s.segs[2].0)),
        &partial[..1 << 20],
    )?;
    std::fs::write(spool.join(&s.segs[1].0), &partial[..1 << 20])?;
    std::fs::remove_file(s.object(1)?)?;
    // Without its record the half-written segment 1 is not used: the archive says absent.
    ensure!(s.fetch(1, &opts).await? == FetchOutcome::NotFound);
    let worker = s.worker(&opts);
    s.wait_spooled(&s.names(2..6)).await?;
    let tmp: Vec<String> = std::fs::read_dir(&spool)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| tej_core::fsutil::is_temp_name(n))
        .collect();
    ensure!(tmp.is_empty(), "temporary files kept: {tmp:?}");
    for i in 2..6 {
        s.fetch(i, &opts).await?;
    }
    ended(worker).await?;
    Ok(())
}

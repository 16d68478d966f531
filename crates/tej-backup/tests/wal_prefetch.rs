//! WAL prefetch against segments of a real PostgreSQL 15 cluster archived in a local
//! repository: what the spool serves is byte for byte what was archived, a spooled file
//! that does not match its record (or its name, or the cluster) is never used, a damaged
//! archived segment stops the prefetch without failing the fetch, the spool stays within its
//! bounds and is gone when recovery looks for a timeline the archive does not hold.

use anyhow::{Context, Result, ensure};
use std::path::{Path, PathBuf};
use tej_backup::{
    FetchOutcome, PREFETCH_SPOOL_NAME, PrefetchOptions, PushOptions, Repository, WalArchive,
    system_identifier_from_pgdata,
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

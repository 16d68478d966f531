//! One conformance suite for every storage backend: local directory, in-memory fake,
//! S3 (the real s3s-fs server from tej-testkit), and the fault-injecting wrapper under
//! the retrying layer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use tej_backup::{
    BackupError, ByteStream, Fault, FaultyStore, LocalStore, MemoryStore, ObjectKey, ObjectStore,
    Op, PutOptions, RetryingStore, S3Location, S3Options, S3Store, bytes_stream, get_bytes,
    put_bytes,
};
use tej_core::{Backoff, Secret};
use tej_testkit::S3Server;
use tokio::io::{AsyncRead, ReadBuf};

const MIB: usize = 1 << 20;
const PART: u64 = 5 << 20;

/// What a backend is asked to prove.
struct Suite {
    /// Keys for the pagination check (more than the S3 page size used).
    many_keys: usize,
    /// Run the concurrent `if_not_exists` race (backends whose check is atomic).
    race: bool,
}

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).expect("valid key")
}

/// Deterministic, incompressible-looking data.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A stream that yields `data`, then fails (a producer that crashed mid-way).
struct FailsAfter {
    data: io::Cursor<Vec<u8>>,
}

impl AsyncRead for FailsAfter {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.data).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before => {
                Poll::Ready(Err(io::Error::other("producer crashed")))
            }
            other => other,
        }
    }
}

async fn expect_not_found<S: ObjectStore + ?Sized>(store: &S, k: &ObjectKey) -> Result<()> {
    match store.get(k, None).await {
        Err(BackupError::ObjectNotFound { key, .. }) => {
            ensure!(key == k.as_str(), "NotFound names {key}, not {k}");
        }
        Err(e) => bail!("get {k}: expected NotFound, got {e:?}"),
        Ok(_) => bail!("get {k}: expected NotFound, got an object"),
    }
    ensure!(store.head(k).await?.is_none(), "head {k} found an object");
    Ok(())
}

async fn run_suite<S: ObjectStore + ?Sized + 'static>(store: Arc<S>, suite: Suite) -> Result<()> {
    let store = &*store;

    // put / get / head
    let r = put_bytes(store, &key("small/hello.txt"), "hello, world", false).await?;
    ensure!(r.size == 12, "put reported {} bytes", r.size);
    ensure!(get_bytes(store, &key("small/hello.txt"), None).await? == b"hello, world");
    let meta = store
        .head(&key("small/hello.txt"))
        .await?
        .context("head of a stored object")?;
    ensure!(
        meta.key == key("small/hello.txt") && meta.size == 12,
        "{meta:?}"
    );
    ensure!(
        meta.last_modified.is_some(),
        "no modification time: {meta:?}"
    );

    // empty objects
    put_bytes(store, &key("small/empty"), Vec::new(), false).await?;
    ensure!(
        get_bytes(store, &key("small/empty"), None)
            .await?
            .is_empty()
    );
    ensure!(
        store
            .head(&key("small/empty"))
            .await?
            .context("empty")?
            .size
            == 0
    );

    // ranges, clamped at the end
    let k = key("small/hello.txt");
    ensure!(get_bytes(store, &k, Some(0..5)).await? == b"hello");
    ensure!(get_bytes(store, &k, Some(7..12)).await? == b"world");
    ensure!(get_bytes(store, &k, Some(7..100)).await? == b"world");
    ensure!(get_bytes(store, &k, Some(12..20)).await?.is_empty());
    ensure!(get_bytes(store, &k, Some(3..3)).await?.is_empty());

    // overwrite
    put_bytes(store, &k, "replaced", false).await?;
    ensure!(get_bytes(store, &k, None).await? == b"replaced");

    // missing objects
    expect_not_found(store, &key("small/missing")).await?;
    expect_not_found(store, &key("nowhere/at/all")).await?;
    match store.get(&key("small/missing"), Some(0..10)).await {
        Err(BackupError::ObjectNotFound { .. }) => {}
        other => bail!("range get of a missing object: {:?}", other.err()),
    }
    match store.get(&key("small/missing"), Some(4..4)).await {
        Err(BackupError::ObjectNotFound { .. }) => {}
        other => bail!("empty range get of a missing object: {:?}", other.err()),
    }
    store.delete(&key("small/missing")).await?;

    // if_not_exists
    let k = key("cond/once");
    put_bytes(store, &k, "first", true).await?;
    match put_bytes(store, &k, "second", true).await {
        Err(BackupError::ObjectExists { key, .. }) => ensure!(key == "cond/once"),
        other => bail!("second if_not_exists put: {other:?}"),
    }
    ensure!(
        get_bytes(store, &k, None).await? == b"first",
        "object was replaced"
    );
    if suite.race {
        let race_key = key("cond/race");
        let contenders: Vec<_> = (0..8u8)
            .map(|i| put_bytes(store, &race_key, vec![i; 1000], true))
            .collect();
        let results = futures::future::join_all(contenders).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        let lost = results
            .iter()
            .filter(|r| matches!(r, Err(BackupError::ObjectExists { .. })))
            .count();
        ensure!(
            won == 1 && lost == 7,
            "race: {won} won, {lost} lost: {results:?}"
        );
    }

    // list: string prefixes, sorted, keys relative to the repository
    for k in ["list/b/d", "list/a", "list/b/c", "listx", "other/z"] {
        put_bytes(store, &key(k), k.as_bytes().to_vec(), false).await?;
    }
    let names = |v: Vec<tej_backup::ObjectMeta>| {
        v.into_iter().map(|m| m.key.to_string()).collect::<Vec<_>>()
    };
    ensure!(names(store.list("list/").await?) == ["list/a", "list/b/c", "list/b/d"]);
    ensure!(names(store.list("list").await?) == ["list/a", "list/b/c", "list/b/d", "listx"]);
    ensure!(names(store.list("list/b").await?) == ["list/b/c", "list/b/d"]);
    ensure!(names(store.list("nothing/").await?).is_empty());
    let all = store.list("").await?;
    ensure!(
        all.windows(2).all(|w| w[0].key < w[1].key),
        "not sorted: {all:?}"
    );
    let listed = all
        .iter()
        .find(|m| m.key == key("list/b/c"))
        .context("list/b/c")?;
    ensure!(
        listed.size == 8 && listed.last_modified.is_some(),
        "{listed:?}"
    );

    // pagination: many keys, stored out of order
    let mut want: Vec<String> = (0..suite.many_keys)
        .map(|i| format!("many/{i:05}"))
        .collect();
    let mut order = want.clone();
    order.reverse();
    let order: Vec<ObjectKey> = order.iter().map(|k| key(k)).collect();
    let puts = order.iter().map(|k| put_bytes(store, k, "x", false));
    for r in futures::future::join_all(puts).await {
        r?;
    }
    want.sort();
    let got = names(store.list("many/").await?);
    ensure!(
        got.len() == want.len(),
        "listed {} of {}",
        got.len(),
        want.len()
    );
    ensure!(got == want, "pagination lost or reordered keys");

    // a large object: multipart on S3 (5 + 5 + 1 MiB with 5 MiB parts), streamed
    let big = pattern(11 * MIB, 7);
    let k = key("big/base.tar");
    let r = store
        .put(&k, bytes_stream(big.clone()), PutOptions::default())
        .await?;
    ensure!(r.size == big.len() as u64);
    ensure!(store.head(&k).await?.context("big")?.size == big.len() as u64);
    let back = get_bytes(store, &k, None).await?;
    ensure!(
        back.len() == big.len() && back == big,
        "large object differs"
    );
    // a range across the first part boundary
    let (a, b) = (PART - 1000, PART + 1000);
    let slice = get_bytes(store, &k, Some(a..b)).await?;
    ensure!(
        slice == big[a as usize..b as usize],
        "range across a part boundary differs"
    );
    let tail = get_bytes(store, &k, Some(10 * MIB as u64..u64::MAX)).await?;
    ensure!(tail == big[10 * MIB..], "open-ended tail range differs");

    // a put whose stream fails mid-way leaves no object, and the old one intact
    for (k, len) in [
        ("crash/small", 1000usize),
        ("crash/big", 7 * MIB),
        ("big/base.tar", 6 * MIB),
    ] {
        let body: ByteStream = Box::pin(FailsAfter {
            data: io::Cursor::new(pattern(len, 3)),
        });
        let err = store
            .put(&key(k), body, PutOptions::default())
            .await
            .err()
            .with_context(|| format!("put of a failing stream to {k} succeeded"))?;
        ensure!(
            err.to_string().contains("producer crashed"),
            "the error does not say why: {err}"
        );
    }
    expect_not_found(store, &key("crash/small")).await?;
    expect_not_found(store, &key("crash/big")).await?;
    ensure!(store.list("crash").await?.is_empty());
    ensure!(
        get_bytes(store, &key("big/base.tar"), None).await? == big,
        "old object damaged"
    );

    // delete
    store.delete(&key("big/base.tar")).await?;
    expect_not_found(store, &key("big/base.tar")).await?;
    store.delete(&key("big/base.tar")).await?;
    ensure!(store.list("big/").await?.is_empty());
    ensure!(names(store.list("list/").await?) == ["list/a", "list/b/c", "list/b/d"]);

    // invalid keys never reach a backend
    ensure!(ObjectKey::new("../escape").is_err());
    Ok(())
}

fn local_suite() -> Suite {
    Suite {
        many_keys: 60,
        race: true,
    }
}

#[tokio::test]
async fn local_store_conforms() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(LocalStore::open(dir.path())?);
    run_suite(store.clone(), local_suite()).await?;
    // nothing temporary left behind by the failed puts
    ensure!(store.cleanup_incomplete(Duration::ZERO).await? == 0);
    Ok(())
}

#[tokio::test]
async fn memory_store_conforms() -> Result<()> {
    run_suite(Arc::new(MemoryStore::new()), local_suite()).await
}

#[tokio::test]
async fn faulty_store_under_retries_conforms() -> Result<()> {
    let faulty = FaultyStore::new(MemoryStore::new())
        .fail_first(Op::Put, 3, Fault::Unavailable)
        .fail_first(Op::Get, 2, Fault::Unavailable)
        .fail_first(Op::Head, 2, Fault::Unavailable)
        .fail_first(Op::List, 2, Fault::Unavailable)
        .fail_first(Op::Delete, 2, Fault::Unavailable);
    let backoff = Backoff {
        max_attempts: 4,
        initial: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        factor: 2.0,
        jitter: false,
    };
    let store = Arc::new(RetryingStore::new(faulty, backoff));
    run_suite(store.clone(), local_suite()).await?;
    ensure!(
        store.inner().injected() == 11,
        "{} faults",
        store.inner().injected()
    );
    Ok(())
}

/// A fresh s3s-fs server (it starts in milliseconds), so each test sees only its own
/// uploads in the server's directory.
fn s3_server() -> Result<S3Server> {
    S3Server::start().context("start s3s-fs")
}

async fn s3_store(server: &S3Server, bucket_prefix: &str, page: Option<u32>) -> Result<S3Store> {
    let bucket = server.unique_bucket(bucket_prefix)?;
    let location = S3Location::new(bucket, "tej/repo")?;
    let opts = S3Options {
        endpoint: Some(server.endpoint()),
        region: Some(server.region().to_string()),
        force_path_style: true,
        access_key: Some(server.access_key().to_string()),
        secret_key: Some(Secret::new(server.secret_key())),
        part_size: PART,
        list_page_size: page,
        max_attempts: 3,
        retry_initial_delay: Duration::from_millis(10),
        ..S3Options::default()
    };
    Ok(S3Store::connect(location, opts).await?)
}

#[tokio::test]
async fn s3_store_conforms() -> Result<()> {
    let server = s3_server()?;
    let store = Arc::new(s3_store(&server, "conform", Some(7)).await?);
    run_suite(
        store.clone(),
        Suite {
            many_keys: 40,
            race: false,
        },
    )
    .await?;
    // The failed multipart puts were aborted: s3s-fs keeps no upload state.
    let leftovers = upload_files(server.root_dir())?;
    ensure!(
        leftovers.is_empty(),
        "unfinished uploads left: {leftovers:?}"
    );
    Ok(())
}

#[tokio::test]
async fn s3_store_under_faults_and_retries_conforms() -> Result<()> {
    let server = s3_server()?;
    let faulty = FaultyStore::new(s3_store(&server, "faulty", Some(9)).await?)
        .fail_first(Op::Put, 2, Fault::Unavailable)
        .fail_first(Op::Get, 1, Fault::Unavailable)
        .fail_first(Op::List, 1, Fault::Unavailable);
    let backoff = Backoff {
        max_attempts: 3,
        initial: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        factor: 2.0,
        jitter: false,
    };
    let store = Arc::new(RetryingStore::new(faulty, backoff));
    run_suite(
        store.clone(),
        Suite {
            many_keys: 20,
            race: false,
        },
    )
    .await?;
    ensure!(store.inner().injected() == 4);
    Ok(())
}

/// s3s-fs's files for unfinished multipart uploads (`.upload-ID.json`, `.upload_id-ID.part-N`).
fn upload_files(root: &std::path::Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type()?.is_dir() {
                dirs.push(e.path());
            } else if name.starts_with(".upload") {
                found.push(e.path().display().to_string());
            }
        }
    }
    Ok(found)
}

/// The same suite against moto, a second S3 implementation, which also lists multipart
/// uploads: after the suite's failed multipart puts, none is left unfinished.
#[tokio::test]
async fn s3_store_on_moto_conforms() -> Result<()> {
    let server = tej_testkit::MotoServer::start().context("start moto")?;
    let bucket = server.unique_bucket("conform")?;
    let opts = S3Options {
        endpoint: Some(server.endpoint()),
        region: Some(server.region().to_string()),
        force_path_style: true,
        access_key: Some(server.access_key().to_string()),
        secret_key: Some(Secret::new(server.secret_key())),
        part_size: PART,
        list_page_size: Some(7),
        max_attempts: 3,
        retry_initial_delay: Duration::from_millis(10),
        ..S3Options::default()
    };
    let store = Arc::new(S3Store::connect(S3Location::new(bucket, "tej/repo")?, opts).await?);
    run_suite(
        store.clone(),
        Suite {
            many_keys: 40,
            race: false,
        },
    )
    .await?;
    ensure!(
        store.cleanup_incomplete(Duration::ZERO).await? == 0,
        "a failed multipart put was left unfinished"
    );
    Ok(())
}

/// Modes of `root` and of every directory and file below it.
fn modes_below(root: &std::path::Path) -> Result<Vec<(String, u32, bool)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let m = std::fs::symlink_metadata(&dir)?;
        out.push((
            dir.display().to_string(),
            m.permissions().mode() & 0o7777,
            true,
        ));
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let m = e.metadata()?;
            if m.is_dir() {
                todo.push(e.path());
            } else {
                let mode = m.permissions().mode() & 0o7777;
                out.push((e.path().display().to_string(), mode, false));
            }
        }
    }
    Ok(out)
}

#[tokio::test]
async fn local_objects_are_private_and_a_setgid_root_shares_with_its_group() -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // A permissive umask: the modes come from the store, not from the umask.
    // umask is process-wide; no other test here checks the modes of the files it creates.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o002));
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("new/repo");
    let store = LocalStore::create(&root)?;
    for k in [
        "backups/20250116T020000Z-db/manifest.json",
        "wal/0000000100000000/x",
        "top",
    ] {
        put_bytes(&store, &key(k), b"secret rows".to_vec(), false).await?;
    }
    put_bytes(&store, &key("wal/y"), b"x".to_vec(), true).await?;
    for (path, mode, is_dir) in modes_below(&root)? {
        let want = if is_dir { 0o700 } else { 0o600 };
        ensure!(mode == want, "{path}: mode {mode:o}, expected {want:o}");
    }
    // A root with the setgid bit shares with its group: files 0640, directories 2750.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared)?;
    let gid = 4242;
    std::os::unix::fs::chown(&shared, None, Some(gid))?;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o2750))?;
    let store = LocalStore::open(&shared)?;
    put_bytes(
        &store,
        &key("backups/a/manifest.json"),
        b"m".to_vec(),
        false,
    )
    .await?;
    for (path, mode, is_dir) in modes_below(&shared)? {
        let want = if is_dir { 0o2750 } else { 0o640 };
        ensure!(mode == want, "{path}: mode {mode:o}, expected {want:o}");
        ensure!(std::fs::metadata(&path)?.gid() == gid, "{path}: group");
    }
    Ok(())
}

#[tokio::test]
async fn cancellable_store_conforms_while_its_token_is_live() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let token = tej_backup::CancellationToken::new();
    let store = Arc::new(tej_backup::CancellableStore::new(
        LocalStore::open(dir.path())?,
        token.clone(),
    ));
    run_suite(store.clone(), local_suite()).await?;
    ensure!(store.cleanup_incomplete(Duration::ZERO).await? == 0);
    token.cancel();
    ensure!(matches!(
        store.list("").await,
        Err(BackupError::Cancelled { .. })
    ));
    Ok(())
}

//! S3-specific behaviour against the real s3s-fs server from tej-testkit: prefixes,
//! multipart aborts on failure and cancellation, conditional writes, error mapping.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use tej_backup::{
    BackupError, Fault, FaultyStore, ObjectKey, ObjectStore, Op, PutCut, PutOptions, RetryingStore,
    S3Location, S3Options, S3Store, bytes_stream, get_bytes, put_bytes,
};
use tej_core::{Backoff, Secret};
use tej_testkit::S3Server;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::oneshot;

const MIB: usize = 1 << 20;

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).expect("valid key")
}

fn options(server: &S3Server) -> S3Options {
    S3Options {
        endpoint: Some(server.endpoint()),
        region: Some(server.region().to_string()),
        force_path_style: true,
        access_key: Some(server.access_key().to_string()),
        secret_key: Some(Secret::new(server.secret_key())),
        part_size: 5 << 20,
        max_attempts: 3,
        retry_initial_delay: Duration::from_millis(10),
        ..S3Options::default()
    }
}

async fn store_in(server: &S3Server, bucket: &str, prefix: &str) -> Result<S3Store> {
    Ok(S3Store::connect(S3Location::new(bucket, prefix)?, options(server)).await?)
}

/// s3s-fs's files for unfinished multipart uploads (`.upload-ID.json`, `.upload_id-ID.part-N`).
fn upload_files(root: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(root)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with(".upload") {
            found.push(name);
        }
    }
    Ok(found)
}

/// Waits (bounded) until `cond` holds; an error if it never does.
async fn eventually(what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    for _ in 0..600 {
        if cond()? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("gave up waiting for: {what}")
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Yields `data`; before its first byte it reports that it was polled and waits for a gate.
/// With `hang`, it never ends after the data (a producer that stalls forever).
struct Gated {
    data: io::Cursor<Vec<u8>>,
    polled: Option<oneshot::Sender<()>>,
    gate: Option<oneshot::Receiver<()>>,
    hang: bool,
}

impl Gated {
    fn new(data: Vec<u8>, hang: bool) -> (Gated, oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (polled_tx, polled_rx) = oneshot::channel();
        let (gate_tx, gate_rx) = oneshot::channel();
        let g = Gated {
            data: io::Cursor::new(data),
            polled: Some(polled_tx),
            gate: Some(gate_rx),
            hang,
        };
        (g, polled_rx, gate_tx)
    }
}

impl AsyncRead for Gated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(tx) = self.polled.take() {
            let _ = tx.send(());
        }
        if let Some(gate) = self.gate.as_mut() {
            match Pin::new(gate).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(_) => self.gate = None,
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.data).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before && self.hang => Poll::Pending,
            other => other,
        }
    }
}

#[tokio::test]
async fn keys_are_relative_to_the_prefix() -> Result<()> {
    let server = S3Server::start()?;
    let bucket = server.unique_bucket("prefix")?;
    let store = store_in(&server, &bucket, "/team/prod/").await?;
    ensure!(store.describe() == format!("s3://{bucket}/team/prod"));
    put_bytes(&store, &key("base/manifest.json"), "{}", false).await?;
    let file = server
        .root_dir()
        .join(&bucket)
        .join("team/prod/base/manifest.json");
    ensure!(file.is_file(), "{} missing", file.display());

    // Objects beside the prefix are not part of the repository.
    let outside = store_in(&server, &bucket, "").await?;
    put_bytes(&outside, &key("team/production/x"), "no", false).await?;
    put_bytes(&outside, &key("team/prod-old/y"), "no", false).await?;
    put_bytes(&outside, &key("top"), "no", false).await?;
    let listed: Vec<_> = store.list("").await?.into_iter().map(|m| m.key).collect();
    ensure!(listed == [key("base/manifest.json")], "{listed:?}");
    ensure!(outside.list("team/").await?.len() == 3);
    Ok(())
}

#[tokio::test]
async fn a_stream_cut_mid_upload_is_aborted_and_leaves_nothing() -> Result<()> {
    let server = S3Server::start()?;
    let bucket = server.unique_bucket("cut")?;
    let faulty = FaultyStore::new(store_in(&server, &bucket, "repo").await?).cut_puts(
        1,
        PutCut::Error {
            after: 7 * MIB as u64,
        },
    );
    let err = faulty
        .put(
            &key("base/big.tar"),
            bytes_stream(pattern(11 * MIB)),
            PutOptions::default(),
        )
        .await
        .err()
        .context("a put whose stream was cut succeeded")?;
    ensure!(err.to_string().contains("input stream cut"), "{err}");
    ensure!(faulty.head(&key("base/big.tar")).await?.is_none());
    ensure!(faulty.list("").await?.is_empty());
    let left = upload_files(server.root_dir())?;
    ensure!(left.is_empty(), "unfinished upload left: {left:?}");
    // The next put through the same store works.
    faulty
        .put(
            &key("base/big.tar"),
            bytes_stream(pattern(6 * MIB)),
            PutOptions::default(),
        )
        .await?;
    ensure!(get_bytes(&faulty, &key("base/big.tar"), None).await? == pattern(6 * MIB));
    Ok(())
}

#[tokio::test]
async fn a_cancelled_multipart_put_is_aborted() -> Result<()> {
    let server = S3Server::start()?;
    let bucket = server.unique_bucket("cancel")?;
    let store = Arc::new(store_in(&server, &bucket, "repo").await?);
    // 6 MiB, then the producer stalls: part 1 goes up, part 2 never completes.
    let (body, _polled, gate) = Gated::new(pattern(6 * MIB), true);
    let _ = gate.send(());
    let s = store.clone();
    let task = tokio::spawn(async move {
        s.put(&key("wal/stalled"), Box::pin(body), PutOptions::default())
            .await
    });
    let root = server.root_dir().to_path_buf();
    eventually("the first part to be uploaded", || {
        Ok(upload_files(&root)?.iter().any(|n| n.contains(".part-1")))
    })
    .await?;
    task.abort();
    ensure!(task.await.is_err_and(|e| e.is_cancelled()));
    eventually("the cancelled upload to be aborted", || {
        Ok(upload_files(&root)?.is_empty())
    })
    .await?;
    ensure!(store.head(&key("wal/stalled")).await?.is_none());
    Ok(())
}

/// `if_not_exists` is enforced by the server's `If-None-Match: *` even when another
/// writer creates the object after our existence check.
#[tokio::test]
async fn if_not_exists_is_atomic_on_the_server() -> Result<()> {
    let server = S3Server::start()?;
    let bucket = server.unique_bucket("cond")?;
    let store = Arc::new(store_in(&server, &bucket, "repo").await?);
    let rival = store_in(&server, &bucket, "repo").await?;
    for (name, len) in [("single", 1000usize), ("multipart", 6 * MIB)] {
        let k = key(&format!("cond/{name}"));
        let (body, polled, gate) = Gated::new(pattern(len), false);
        let s = store.clone();
        let k2 = k.clone();
        let ours = tokio::spawn(async move {
            let opts = PutOptions {
                if_not_exists: true,
                size_hint: None,
            };
            s.put(&k2, Box::pin(body), opts).await
        });
        // Our put checked that the key is free and started reading: now a rival writes.
        polled.await.context("the put never read its stream")?;
        put_bytes(&rival, &k, "rival", false).await?;
        let _ = gate.send(());
        match ours.await? {
            Err(BackupError::ObjectExists { key, .. }) => ensure!(key == k.as_str()),
            other => bail!("{name}: expected AlreadyExists, got {other:?}"),
        }
        ensure!(
            get_bytes(&*store, &k, None).await? == b"rival",
            "{name}: rival's object replaced"
        );
    }
    let left = upload_files(server.root_dir())?;
    ensure!(left.is_empty(), "unfinished upload left: {left:?}");
    Ok(())
}

#[tokio::test]
async fn transient_failures_are_retried_and_permanent_ones_are_not() -> Result<()> {
    let server = S3Server::start()?;
    let bucket = server.unique_bucket("retry")?;
    let backoff = Backoff {
        max_attempts: 4,
        initial: Duration::from_millis(1),
        max_delay: Duration::from_millis(10),
        factor: 2.0,
        jitter: false,
    };
    let store = RetryingStore::new(
        FaultyStore::new(store_in(&server, &bucket, "repo").await?)
            .fail_first(Op::Put, 3, Fault::Unavailable)
            .fail_first(Op::Head, 3, Fault::Unavailable),
        backoff,
    );
    put_bytes(&store, &key("a"), "after three 503s", false).await?;
    ensure!(store.inner().calls(Op::Put) == 4);
    ensure!(store.head(&key("a")).await?.context("a")?.size == 16);
    ensure!(get_bytes(&store, &key("a"), None).await? == b"after three 503s");

    let broken = RetryingStore::new(
        FaultyStore::new(store_in(&server, &bucket, "repo").await?)
            .fail_always(Op::Put, Fault::Permanent),
        backoff,
    );
    let err = put_bytes(&broken, &key("b"), "never", false)
        .await
        .err()
        .context("a permanently failing put succeeded")?;
    ensure!(!tej_core::Retryable::is_retryable(&err));
    ensure!(err.to_string().contains("permanent"), "{err}");
    ensure!(
        broken.inner().calls(Op::Put) == 1,
        "a permanent failure was retried"
    );
    ensure!(store.head(&key("b")).await?.is_none());

    // Always unavailable: gives up after max_attempts with the retryable error.
    let down = RetryingStore::new(
        FaultyStore::new(store_in(&server, &bucket, "repo").await?)
            .fail_always(Op::List, Fault::Unavailable),
        backoff,
    );
    match down.list("").await {
        Err(BackupError::Unavailable { .. }) => {}
        other => bail!("expected Unavailable, got {other:?}"),
    }
    ensure!(down.inner().calls(Op::List) == 4);
    Ok(())
}

#[tokio::test]
async fn server_errors_map_to_storage_errors() -> Result<()> {
    let server = S3Server::start()?;
    let bucket = server.unique_bucket("errors")?;

    // Wrong secret: 403, not retried.
    let wrong = S3Store::connect(
        S3Location::new(&bucket, "repo")?,
        S3Options {
            secret_key: Some(Secret::new("not-the-secret")),
            ..options(&server)
        },
    )
    .await?;
    for err in [
        wrong.head(&key("x")).await.err(),
        put_bytes(&wrong, &key("x"), "x", false).await.err(),
        wrong.list("").await.err(),
    ] {
        match err {
            Some(e @ BackupError::AccessDenied { .. }) => {
                ensure!(
                    !e.to_string().contains("not-the-secret"),
                    "secret in error: {e}"
                );
            }
            other => bail!("expected AccessDenied, got {other:?}"),
        }
    }

    // A bucket that does not exist.
    let missing = store_in(&server, "no-such-bucket-here", "repo").await?;
    match missing.list("").await {
        Err(BackupError::Storage { reason, .. }) => {
            ensure!(reason.contains("does not exist"), "{reason}")
        }
        other => bail!("expected a missing-bucket error, got {other:?}"),
    }

    // A server that is gone: retryable Unavailable after the configured attempts.
    let gone = S3Store::connect(
        S3Location::new(&bucket, "repo")?,
        S3Options {
            endpoint: Some(format!("http://127.0.0.1:{}", tej_testkit::free_port())),
            ..options(&server)
        },
    )
    .await?;
    match gone.head(&key("x")).await {
        Err(e @ BackupError::Unavailable { .. }) => {
            ensure!(tej_core::Retryable::is_retryable(&e))
        }
        other => bail!("expected Unavailable, got {other:?}"),
    }

    // s3s-fs has no ListMultipartUploads: cleanup says so instead of claiming success.
    let store = store_in(&server, &bucket, "repo").await?;
    match store.cleanup_incomplete(Duration::ZERO).await {
        Err(BackupError::Storage { reason, .. }) => {
            ensure!(reason.contains("ListMultipartUploads"), "{reason}")
        }
        other => bail!("expected the unsupported-listing error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn open_repository_opens_local_paths() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("new/repo");
    let store = tej_backup::open_repository(path.to_str().context("utf-8")?).await?;
    put_bytes(&*store, &key("x"), "1", false).await?;
    ensure!(path.join("x").is_file());
    ensure!(tej_backup::open_repository("ftp://host/x").await.is_err());
    ensure!(
        tej_backup::open_repository("s3://Bad_Bucket/x")
            .await
            .is_err()
    );
    Ok(())
}

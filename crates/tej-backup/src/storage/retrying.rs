//! A wrapper that retries retryable storage failures with [`tej_core::retry()`].

use super::{BackupError, ByteStream, ObjectKey, ObjectMeta, ObjectStore, PutOptions, PutResult};
use async_trait::async_trait;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tej_core::{Backoff, Retryable, retry};
use tokio::io::{AsyncRead, ReadBuf};

/// Wraps a store and retries calls that fail with a retryable error
/// ([`BackupError::Unavailable`]) with exponential backoff.
///
/// A put is retried only while its input stream has not been read from: a stream cannot be
/// rewound, so a put that failed after reading data returns its error (the failed put left
/// no object). The S3 backend already retries each request (and each part) internally.
#[derive(Debug, Clone)]
pub struct RetryingStore<S> {
    inner: S,
    backoff: Backoff,
}

impl<S: ObjectStore> RetryingStore<S> {
    /// Wraps `inner`, retrying with `backoff`.
    pub fn new(inner: S, backoff: Backoff) -> RetryingStore<S> {
        RetryingStore { inner, backoff }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, BackupError>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, BackupError>>,
    {
        retry(self.backoff, op, |attempt, e: &BackupError| {
            tracing::warn!(attempt, error = %e, "{what} failed; retrying");
        })
        .await
    }
}

/// An attempt's error and whether retrying it is possible.
struct Attempt(BackupError, bool);

impl Retryable for Attempt {
    fn is_retryable(&self) -> bool {
        self.1
    }
}

/// A handle on the caller's stream that records whether it was ever read.
struct SharedBody {
    stream: Arc<Mutex<ByteStream>>,
    touched: Arc<AtomicBool>,
}

impl AsyncRead for SharedBody {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.touched.store(true, Ordering::SeqCst);
        let mut guard = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_mut().poll_read(cx, buf)
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for RetryingStore<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        opts: PutOptions,
    ) -> Result<PutResult, BackupError> {
        let stream = Arc::new(Mutex::new(body));
        let touched = Arc::new(AtomicBool::new(false));
        let result = retry(
            self.backoff,
            |_| {
                let body: ByteStream = Box::pin(SharedBody {
                    stream: stream.clone(),
                    touched: touched.clone(),
                });
                let touched = touched.clone();
                async move {
                    self.inner.put(key, body, opts).await.map_err(|e| {
                        let again = e.is_retryable() && !touched.load(Ordering::SeqCst);
                        Attempt(e, again)
                    })
                }
            },
            |attempt, e: &Attempt| {
                tracing::warn!(attempt, error = %e.0, %key, "put failed; retrying");
            },
        )
        .await;
        result.map_err(|Attempt(e, _)| e)
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackupError> {
        self.run("get", |_| self.inner.get(key, range.clone()))
            .await
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, BackupError> {
        self.run("head", |_| self.inner.head(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BackupError> {
        self.run("list", |_| self.inner.list(prefix)).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackupError> {
        self.run("delete", |_| self.inner.delete(key)).await
    }

    async fn cleanup_incomplete(
        &self,
        older_than: std::time::Duration,
    ) -> Result<u64, BackupError> {
        self.run("cleanup", |_| self.inner.cleanup_incomplete(older_than))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Fault, FaultyStore, MemoryStore, Op, PutCut, get_bytes, put_bytes};
    use std::time::Duration;

    fn key(s: &str) -> ObjectKey {
        ObjectKey::new(s).unwrap()
    }

    fn quick() -> Backoff {
        Backoff {
            max_attempts: 4,
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            factor: 2.0,
            jitter: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_of_every_operation() {
        let mem = MemoryStore::new();
        let faulty = FaultyStore::new(mem.clone())
            .fail_first(Op::Put, 2, Fault::Unavailable)
            .fail_first(Op::Get, 3, Fault::Unavailable)
            .fail_first(Op::Head, 1, Fault::Unavailable)
            .fail_first(Op::List, 1, Fault::Unavailable)
            .fail_first(Op::Delete, 1, Fault::Unavailable);
        let store = RetryingStore::new(faulty, quick());
        let start = tokio::time::Instant::now();
        put_bytes(&store, &key("a"), "hello", false).await.unwrap();
        // 100 ms + 200 ms of backoff before the third put attempt
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert_eq!(store.inner().calls(Op::Put), 3);
        assert_eq!(get_bytes(&store, &key("a"), None).await.unwrap(), b"hello");
        assert_eq!(store.inner().calls(Op::Get), 4);
        assert_eq!(store.head(&key("a")).await.unwrap().unwrap().size, 5);
        assert_eq!(store.list("").await.unwrap().len(), 1);
        store.delete(&key("a")).await.unwrap();
        assert!(mem.is_empty());
        assert_eq!(store.inner().injected(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_on_permanent_failures_and_after_max_attempts() {
        let mem = MemoryStore::new();
        let store = RetryingStore::new(
            FaultyStore::new(mem.clone()).fail_first(Op::Put, 1, Fault::Permanent),
            quick(),
        );
        let err = put_bytes(&store, &key("a"), "x", false).await.unwrap_err();
        assert!(matches!(err, BackupError::Storage { .. }), "{err}");
        assert!(
            err.to_string().contains("injected permanent fault"),
            "{err}"
        );
        assert_eq!(store.inner().calls(Op::Put), 1);
        assert!(mem.is_empty());

        let store = RetryingStore::new(
            FaultyStore::new(mem.clone()).fail_always(Op::Head, Fault::Unavailable),
            quick(),
        );
        let err = store.head(&key("a")).await.unwrap_err();
        assert!(matches!(err, BackupError::Unavailable { .. }), "{err}");
        assert_eq!(store.inner().calls(Op::Head), 4);
    }

    /// A store that reads a little of the stream, then fails with a retryable error.
    struct ReadsThenFails;

    #[async_trait]
    impl ObjectStore for ReadsThenFails {
        fn describe(&self) -> String {
            "test".into()
        }
        async fn put(
            &self,
            _key: &ObjectKey,
            mut body: ByteStream,
            _opts: PutOptions,
        ) -> Result<PutResult, BackupError> {
            use tokio::io::AsyncReadExt;
            let mut b = [0u8; 2];
            let _ = body.read(&mut b).await;
            Err(BackupError::Unavailable {
                repo: "test".into(),
                reason: "503".into(),
            })
        }
        async fn get(
            &self,
            _key: &ObjectKey,
            _range: Option<Range<u64>>,
        ) -> Result<ByteStream, BackupError> {
            unreachable!()
        }
        async fn head(&self, _key: &ObjectKey) -> Result<Option<ObjectMeta>, BackupError> {
            unreachable!()
        }
        async fn list(&self, _prefix: &str) -> Result<Vec<ObjectMeta>, BackupError> {
            unreachable!()
        }
        async fn delete(&self, _key: &ObjectKey) -> Result<(), BackupError> {
            unreachable!()
        }
        async fn cleanup_incomplete(&self, _d: Duration) -> Result<u64, BackupError> {
            unreachable!()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_put_whose_stream_was_read_is_not_retried() {
        let store = RetryingStore::new(ReadsThenFails, quick());
        let start = tokio::time::Instant::now();
        let err = put_bytes(&store, &key("a"), "hello", false)
            .await
            .unwrap_err();
        assert!(matches!(err, BackupError::Unavailable { .. }), "{err}");
        assert_eq!(start.elapsed(), Duration::ZERO, "no backoff: not retried");
    }

    #[tokio::test]
    async fn a_cut_stream_leaves_no_object() {
        let mem = MemoryStore::new();
        let store = FaultyStore::new(mem.clone()).cut_puts(1, PutCut::Error { after: 3 });
        let err = put_bytes(&store, &key("a"), "hello", false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("input stream cut"), "{err}");
        assert!(mem.is_empty());
        // Only the first put was cut.
        put_bytes(&store, &key("a"), "hello", false).await.unwrap();
        assert_eq!(mem.object(&key("a")).unwrap(), "hello");

        let store = FaultyStore::new(mem.clone()).cut_puts(1, PutCut::Truncate { after: 2 });
        let r = put_bytes(&store, &key("b"), "hello", false).await.unwrap();
        assert_eq!(r.size, 2);
        assert_eq!(mem.object(&key("b")).unwrap(), "he");
    }
}

//! A wrapper that makes every call of a store honour a [`CancellationToken`].

use super::{BackupError, ByteStream, ObjectKey, ObjectMeta, ObjectStore, PutOptions, PutResult};
use async_trait::async_trait;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Wraps a store so that once `token` is cancelled every call returns
/// [`BackupError::Cancelled`]: a call in flight is abandoned at once, and the streams of
/// `put` and `get` stop between chunks. An abandoned put leaves no object under its key
/// (its temporary file or multipart upload is what `cleanup_incomplete` removes).
///
/// Lock objects (`locks/...`) and failure records (`.../failed.json`) are exempt, so an
/// operation that was cancelled still releases its locks and marks its unfinished run.
#[derive(Debug, Clone)]
pub struct CancellableStore<S> {
    inner: S,
    token: CancellationToken,
}

impl<S: ObjectStore> CancellableStore<S> {
    /// Wraps `inner`, cancelled by `token`.
    pub fn new(inner: S, token: CancellationToken) -> CancellableStore<S> {
        CancellableStore { inner, token }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn cancelled(&self) -> BackupError {
        BackupError::Cancelled {
            repo: self.inner.describe(),
        }
    }

    async fn run<T>(
        &self,
        exempt: bool,
        op: impl Future<Output = Result<T, BackupError>>,
    ) -> Result<T, BackupError> {
        if exempt {
            return op.await;
        }
        if self.token.is_cancelled() {
            return Err(self.cancelled());
        }
        tokio::select! {
            biased;
            () = self.token.cancelled() => Err(self.cancelled()),
            r = op => r,
        }
    }

    fn stream(&self, inner: ByteStream) -> ByteStream {
        Box::pin(CancellableRead {
            inner,
            cancelled: Box::pin(self.token.clone().cancelled_owned()),
        })
    }
}

/// Keys whose writes and deletes always go through (see [`CancellableStore`]).
fn exempt(key: &ObjectKey) -> bool {
    key.as_str().starts_with("locks/") || key.as_str().ends_with("/failed.json")
}

/// A stream that fails with a `cancelled` error once the token is cancelled (checked before
/// every read, and woken by the cancellation).
struct CancellableRead {
    inner: ByteStream,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl AsyncRead for CancellableRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.cancelled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::other("cancelled")));
        }
        self.inner.as_mut().poll_read(cx, buf)
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for CancellableStore<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        opts: PutOptions,
    ) -> Result<PutResult, BackupError> {
        if exempt(key) {
            return self.inner.put(key, body, opts).await;
        }
        let body = self.stream(body);
        let r = self.run(false, self.inner.put(key, body, opts)).await;
        // A put whose body was cut by the token failed because of it.
        match r {
            Err(_) if self.token.is_cancelled() => Err(self.cancelled()),
            r => r,
        }
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackupError> {
        if exempt(key) {
            return self.inner.get(key, range).await;
        }
        let s = self.run(false, self.inner.get(key, range)).await?;
        Ok(self.stream(s))
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, BackupError> {
        self.run(exempt(key), self.inner.head(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BackupError> {
        self.run(prefix.starts_with("locks/"), self.inner.list(prefix))
            .await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackupError> {
        self.run(exempt(key), self.inner.delete(key)).await
    }

    async fn cleanup_incomplete(
        &self,
        older_than: std::time::Duration,
    ) -> Result<u64, BackupError> {
        self.run(false, self.inner.cleanup_incomplete(older_than))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryStore, get_bytes, put_bytes};
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;

    fn key(k: &str) -> ObjectKey {
        ObjectKey::new(k).unwrap()
    }

    #[tokio::test]
    async fn a_put_in_flight_is_abandoned_and_leaves_no_object() {
        let mem = Arc::new(MemoryStore::new());
        let token = CancellationToken::new();
        let store = CancellableStore::new(mem.clone(), token.clone());
        // A body that never ends: the put waits for more until the token is cancelled.
        let (mut tx, rx) = tokio::io::duplex(64);
        tx.write_all(b"first chunk").await.unwrap();
        let put = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .put(&key("backups/x/data"), Box::pin(rx), PutOptions::default())
                    .await
            }
        });
        tokio::task::yield_now().await;
        token.cancel();
        let r = put.await.unwrap();
        assert!(matches!(r, Err(BackupError::Cancelled { .. })), "{r:?}");
        assert!(mem.object(&key("backups/x/data")).is_none());
        drop(tx);
    }

    #[tokio::test]
    async fn after_cancellation_data_calls_fail_and_lock_calls_go_through() {
        let mem = Arc::new(MemoryStore::new());
        put_bytes(&*mem, &key("backups/x/manifest.json"), "{}", false)
            .await
            .unwrap();
        let token = CancellationToken::new();
        let store = CancellableStore::new(mem.clone(), token.clone());
        // A stream opened before the cancellation stops at the next read.
        let mut s = store
            .get(&key("backups/x/manifest.json"), None)
            .await
            .unwrap();
        token.cancel();
        let mut buf = Vec::new();
        let e = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut buf)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "cancelled");
        for r in [
            get_bytes(&store, &key("backups/x/manifest.json"), None)
                .await
                .map(|_| ()),
            store.list("backups/").await.map(|_| ()),
            store.delete(&key("backups/x/manifest.json")).await,
            put_bytes(&store, &key("backups/y/data"), "z", false)
                .await
                .map(|_| ()),
        ] {
            assert!(matches!(r, Err(BackupError::Cancelled { .. })), "{r:?}");
        }
        assert!(mem.object(&key("backups/x/manifest.json")).is_some());
        put_bytes(&store, &key("locks/appdb.lock"), "owner", true)
            .await
            .unwrap();
        put_bytes(&store, &key("backups/y/failed.json"), "{}", false)
            .await
            .unwrap();
        assert_eq!(store.list("locks/").await.unwrap().len(), 1);
        store.delete(&key("locks/appdb.lock")).await.unwrap();
        assert!(mem.object(&key("locks/appdb.lock")).is_none());
    }
}

//! A wrapper that injects storage failures, for tests of retries and interrupted writes.

use super::{BackupError, ByteStream, ObjectKey, ObjectMeta, ObjectStore, PutOptions, PutResult};
use async_trait::async_trait;
use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// The operations of [`ObjectStore`], to choose which ones fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`ObjectStore::put`].
    Put,
    /// [`ObjectStore::get`].
    Get,
    /// [`ObjectStore::head`].
    Head,
    /// [`ObjectStore::list`].
    List,
    /// [`ObjectStore::delete`].
    Delete,
    /// [`ObjectStore::cleanup_incomplete`].
    Cleanup,
}

/// The failure to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// [`BackupError::Unavailable`], retryable, like S3's `503 SlowDown`.
    Unavailable,
    /// [`BackupError::Storage`], not retryable.
    Permanent,
}

/// How to damage a put's input stream (the wrapped store sees the damaged stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutCut {
    /// After `after` bytes the stream fails with an I/O error, like a crashed producer.
    Error {
        /// Bytes delivered before the failure.
        after: u64,
    },
    /// After `after` bytes the stream ends early, as if the data were shorter.
    Truncate {
        /// Bytes delivered before the end.
        after: u64,
    },
}

#[derive(Debug, Default)]
struct State {
    /// Per operation: the fault and how many more calls get it (`None`: every call).
    rules: HashMap<Op, (Fault, Option<u32>)>,
    cuts: Option<(PutCut, u32)>,
    calls: HashMap<Op, u32>,
    injected: u32,
}

/// Wraps a store and makes chosen calls fail (see [`Fault`]) or damages put streams
/// (see [`PutCut`]). Calls that are not failed go to the wrapped store unchanged.
///
/// An injected failure happens before the wrapped store is called and before the put
/// stream is read, like a request refused by the server.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    state: Mutex<State>,
}

impl<S: ObjectStore> FaultyStore<S> {
    /// Wraps `inner`, injecting nothing yet.
    pub fn new(inner: S) -> FaultyStore<S> {
        FaultyStore {
            inner,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `n` calls of `op` fail with `fault` (replaces an earlier rule for `op`).
    pub fn fail_first(self, op: Op, n: u32, fault: Fault) -> Self {
        self.lock().rules.insert(op, (fault, Some(n)));
        self
    }

    /// Every call of `op` fails with `fault` from now on.
    pub fn fail_always(self, op: Op, fault: Fault) -> Self {
        self.lock().rules.insert(op, (fault, None));
        self
    }

    /// Every call of `op` fails with `fault` from now on, on a store already in use (shared
    /// behind an `Arc`).
    pub fn start_failing(&self, op: Op, fault: Fault) {
        self.lock().rules.insert(op, (fault, None));
    }

    /// The next `n` puts that reach the wrapped store get their stream damaged by `cut`.
    pub fn cut_puts(self, n: u32, cut: PutCut) -> Self {
        self.lock().cuts = Some((cut, n));
        self
    }

    /// Stops injecting anything.
    pub fn heal(&self) {
        let mut s = self.lock();
        s.rules.clear();
        s.cuts = None;
    }

    /// How many calls of `op` this wrapper received (failed or not).
    pub fn calls(&self, op: Op) -> u32 {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// How many failures were injected so far (cut streams included).
    pub fn injected(&self) -> u32 {
        self.lock().injected
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn check(&self, op: Op) -> Result<(), BackupError> {
        let mut s = self.lock();
        *s.calls.entry(op).or_default() += 1;
        let fault = match s.rules.get_mut(&op) {
            Some((fault, None)) => Some(*fault),
            Some((fault, Some(n))) if *n > 0 => {
                *n -= 1;
                Some(*fault)
            }
            _ => None,
        };
        let Some(fault) = fault else { return Ok(()) };
        s.injected += 1;
        let repo = self.inner.describe();
        Err(match fault {
            Fault::Unavailable => BackupError::Unavailable {
                repo,
                reason: format!("injected fault in {op:?}: 503 SlowDown"),
            },
            Fault::Permanent => BackupError::Storage {
                repo,
                reason: format!("injected permanent fault in {op:?}"),
            },
        })
    }

    fn take_cut(&self) -> Option<PutCut> {
        let mut s = self.lock();
        match &mut s.cuts {
            Some((cut, n)) if *n > 0 => {
                *n -= 1;
                let cut = *cut;
                s.injected += 1;
                Some(cut)
            }
            _ => None,
        }
    }
}

/// A stream that delivers `remaining` bytes of `inner`, then fails or ends.
struct CutStream {
    inner: ByteStream,
    remaining: u64,
    fail: bool,
    scratch: Vec<u8>,
}

impl CutStream {
    fn new(inner: ByteStream, after: u64, fail: bool) -> CutStream {
        CutStream {
            inner,
            remaining: after,
            fail,
            scratch: vec![0; 64 << 10],
        }
    }
}

impl AsyncRead for CutStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return if this.fail {
                Poll::Ready(Err(io::Error::other("injected fault: input stream cut")))
            } else {
                Poll::Ready(Ok(()))
            };
        }
        let limit = usize::try_from(this.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.remaining())
            .min(this.scratch.len());
        let mut sub = ReadBuf::new(&mut this.scratch[..limit]);
        match this.inner.as_mut().poll_read(cx, &mut sub) {
            Poll::Ready(Ok(())) => {
                let n = sub.filled().len();
                buf.put_slice(&this.scratch[..n]);
                this.remaining -= n as u64;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for FaultyStore<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        opts: PutOptions,
    ) -> Result<PutResult, BackupError> {
        self.check(Op::Put)?;
        let body: ByteStream = match self.take_cut() {
            None => body,
            Some(PutCut::Error { after }) => Box::pin(CutStream::new(body, after, true)),
            Some(PutCut::Truncate { after }) => Box::pin(CutStream::new(body, after, false)),
        };
        self.inner.put(key, body, opts).await
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackupError> {
        self.check(Op::Get)?;
        self.inner.get(key, range).await
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, BackupError> {
        self.check(Op::Head)?;
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BackupError> {
        self.check(Op::List)?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackupError> {
        self.check(Op::Delete)?;
        self.inner.delete(key).await
    }

    async fn cleanup_incomplete(
        &self,
        older_than: std::time::Duration,
    ) -> Result<u64, BackupError> {
        self.check(Op::Cleanup)?;
        self.inner.cleanup_incomplete(older_than).await
    }
}

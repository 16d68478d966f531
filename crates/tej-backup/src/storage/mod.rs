//! Object storage for backups: one narrow trait and its backends
//! (local directory, S3, in-memory fake, fault-injecting wrapper).
//!
//! - [`LocalStore`]: a directory; writes go to a temporary name, are fsynced and renamed.
//! - [`S3Store`]: a bucket and prefix on S3 or an S3-compatible server (multipart, retries).
//! - [`MemoryStore`]: an in-memory fake for tests of code built on [`ObjectStore`].
//! - [`FaultyStore`]: wraps a store and injects failures (for retry and crash tests).
//! - [`RetryingStore`]: wraps a store and retries retryable failures with [`tej_core::retry()`].
//! - [`CancellableStore`]: wraps a store so that its calls honour a `CancellationToken`.
//!
//! [`open_repository`] opens a local path or an `s3://bucket/prefix` URL.

pub(crate) use crate::error::BackupError;
use async_trait::async_trait;
use std::fmt;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};

pub mod cancel;
pub mod faulty;
pub mod local;
pub mod memory;
pub mod retrying;
pub mod s3;
pub(crate) mod throttle;

pub use cancel::CancellableStore;
pub use faulty::{Fault, FaultyStore, Op, PutCut};
pub use local::LocalStore;
pub use memory::MemoryStore;
pub use retrying::RetryingStore;
pub use s3::{S3Location, S3Options, S3RetryMode, S3Store};

/// A stream of bytes read from or written to storage.
pub type ByteStream = Pin<Box<dyn AsyncRead + Send>>;

/// A validated, relative object key (`base/20250116T020000Z-main/manifest.json`).
///
/// No leading `/`, no empty, `.` or `..` segments, no backslash or NUL, at most 1024 bytes,
/// so a key can never escape a local repository's root.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates `key`.
    pub fn new(key: impl Into<String>) -> Result<ObjectKey, BackupError> {
        let key = key.into();
        let bad = key.is_empty()
            || key.len() > 1024
            || key.starts_with('/')
            || key.contains('\\')
            || key.contains('\0')
            || key
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..");
        if bad {
            Err(BackupError::InvalidKey { key })
        } else {
            Ok(ObjectKey(key))
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This key with `/name` appended.
    pub fn join(&self, name: &str) -> Result<ObjectKey, BackupError> {
        ObjectKey::new(format!("{}/{name}", self.0))
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = BackupError;
    fn try_from(s: String) -> Result<Self, BackupError> {
        ObjectKey::new(s)
    }
}

impl From<ObjectKey> for String {
    fn from(k: ObjectKey) -> String {
        k.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What `head` and `list` report about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its key.
    pub key: ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, when the backend knows it.
    pub last_modified: Option<jiff::Timestamp>,
}

/// Options for `put`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Fail with [`BackupError::ObjectExists`] instead of replacing an existing object.
    pub if_not_exists: bool,
    /// The size when known in advance (lets S3 use a single PUT for small objects).
    pub size_hint: Option<u64>,
}

/// What `put` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// Bytes stored.
    pub size: u64,
}

/// A place backups live: a local directory, an S3 prefix, or a test fake.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// A description for reports (`/opt/skillswap/backups`, `s3://bucket/prefix`).
    fn describe(&self) -> String;

    /// Stores `body` under `key`, streaming. Success means durable (fsync and rename
    /// locally, a completed upload on S3); a failed put leaves no object under `key`.
    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        opts: PutOptions,
    ) -> Result<PutResult, BackupError>;

    /// Reads an object, or the byte `range` of it (a range reaching past the end is cut
    /// at the end; one starting at or past the end reads nothing).
    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackupError>;

    /// Size and time of an object; `None` when it does not exist.
    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, BackupError>;

    /// Every object whose key starts with `prefix` (pagination handled inside), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BackupError>;

    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, key: &ObjectKey) -> Result<(), BackupError>;

    /// Removes what interrupted writes left behind (temporary files, unfinished multipart
    /// uploads) older than `older_than`; returns how many were removed.
    async fn cleanup_incomplete(&self, older_than: std::time::Duration)
    -> Result<u64, BackupError>;
}

#[async_trait]
impl<T: ObjectStore + ?Sized> ObjectStore for Arc<T> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        opts: PutOptions,
    ) -> Result<PutResult, BackupError> {
        (**self).put(key, body, opts).await
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackupError> {
        (**self).get(key, range).await
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, BackupError> {
        (**self).head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BackupError> {
        (**self).list(prefix).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackupError> {
        (**self).delete(key).await
    }

    async fn cleanup_incomplete(
        &self,
        older_than: std::time::Duration,
    ) -> Result<u64, BackupError> {
        (**self).cleanup_incomplete(older_than).await
    }
}

/// Opens the repository named by `spec`: `s3://bucket/prefix` (endpoint, region and
/// credentials from the AWS SDK's environment and profiles, see [`S3Options::from_env`])
/// or a local directory path (created when missing).
pub async fn open_repository(spec: &str) -> Result<Arc<dyn ObjectStore>, BackupError> {
    if spec.starts_with("s3://") {
        let location = S3Location::parse(spec)?;
        let store = S3Store::connect(location, S3Options::from_env().await?).await?;
        Ok(Arc::new(store))
    } else if spec.contains("://") {
        Err(BackupError::Storage {
            repo: spec.to_string(),
            reason: "unsupported repository URL: use a local path or s3://bucket/prefix".into(),
        })
    } else if spec.is_empty() {
        Err(BackupError::Storage {
            repo: spec.to_string(),
            reason: "empty repository path".into(),
        })
    } else {
        Ok(Arc::new(LocalStore::create(spec)?))
    }
}

/// A [`ByteStream`] reading `bytes`.
pub fn bytes_stream(bytes: impl Into<bytes::Bytes>) -> ByteStream {
    Box::pin(std::io::Cursor::new(bytes.into()))
}

/// Stores `bytes` under `key` (a convenience over [`ObjectStore::put`] with the size hint set).
pub async fn put_bytes<S: ObjectStore + ?Sized>(
    store: &S,
    key: &ObjectKey,
    bytes: impl Into<bytes::Bytes>,
    if_not_exists: bool,
) -> Result<PutResult, BackupError> {
    let bytes = bytes.into();
    let opts = PutOptions {
        if_not_exists,
        size_hint: Some(bytes.len() as u64),
    };
    store.put(key, bytes_stream(bytes), opts).await
}

/// Reads a whole object (or `range` of it) into memory.
pub async fn get_bytes<S: ObjectStore + ?Sized>(
    store: &S,
    key: &ObjectKey,
    range: Option<Range<u64>>,
) -> Result<Vec<u8>, BackupError> {
    let mut stream = store.get(key, range).await?;
    let mut out = Vec::new();
    stream
        .read_to_end(&mut out)
        .await
        .map_err(|e| BackupError::Storage {
            repo: store.describe(),
            reason: format!("reading {key}: {e}"),
        })?;
    Ok(out)
}

/// Clamps `range` to an object of `size` bytes.
pub(crate) fn clamp_range(range: Option<Range<u64>>, size: u64) -> Range<u64> {
    match range {
        None => 0..size,
        Some(r) => {
            let end = r.end.min(size);
            let start = r.start.min(end);
            start..end
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape() {
        for bad in [
            "", "/abs", "a//b", "a/../b", "..", "./a", "a\\b", "a/\0", "a/",
        ] {
            assert!(ObjectKey::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "a",
            "base/2025/x.tar.zst",
            "wal/000000010000000000000001.zst",
            "a..b/c",
        ] {
            assert!(ObjectKey::new(good).is_ok(), "{good:?} refused");
        }
        let k = ObjectKey::new("backups").unwrap().join("m.json").unwrap();
        assert_eq!(k.as_str(), "backups/m.json");
        assert!(k.join("..").is_err());
    }
}

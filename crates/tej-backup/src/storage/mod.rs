//! Object storage for backups: one narrow trait and its backends
//! (local directory, S3, in-memory fake, fault-injecting wrapper).

use async_trait::async_trait;
use std::fmt;
use std::ops::Range;
use std::pin::Pin;
use tokio::io::AsyncRead;

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
    pub fn new(key: impl Into<String>) -> Result<ObjectKey, StorageError> {
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
            Err(StorageError::InvalidKey { key })
        } else {
            Ok(ObjectKey(key))
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This key with `/name` appended.
    pub fn join(&self, name: &str) -> Result<ObjectKey, StorageError> {
        ObjectKey::new(format!("{}/{name}", self.0))
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = StorageError;
    fn try_from(s: String) -> Result<Self, StorageError> {
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
    /// Fail with [`StorageError::AlreadyExists`] instead of replacing an existing object.
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

/// Storage failures callers act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The key is not a valid relative key.
    #[error("invalid object key {key:?}")]
    InvalidKey {
        /// The rejected key.
        key: String,
    },
    /// No such object.
    #[error("{repo}: object {key} not found")]
    NotFound {
        /// Repository description.
        repo: String,
        /// Key.
        key: String,
    },
    /// `if_not_exists` and the object is there.
    #[error("{repo}: object {key} already exists")]
    AlreadyExists {
        /// Repository description.
        repo: String,
        /// Key.
        key: String,
    },
    /// Credentials refused or missing permission.
    #[error("{repo}: access denied: {reason}")]
    AccessDenied {
        /// Repository description.
        repo: String,
        /// Detail from the backend.
        reason: String,
    },
    /// Temporarily unavailable (5xx, SlowDown, timeout, connection refused): retryable.
    #[error("{repo}: temporarily unavailable: {reason}")]
    Unavailable {
        /// Repository description.
        repo: String,
        /// Detail.
        reason: String,
    },
    /// Any other failure.
    #[error("{repo}: {reason}")]
    Other {
        /// Repository description.
        repo: String,
        /// Detail.
        reason: String,
    },
}

impl tej_core::Retryable for StorageError {
    fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Unavailable { .. })
    }
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
    ) -> Result<PutResult, StorageError>;

    /// Reads an object, or the byte `range` of it.
    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StorageError>;

    /// Size and time of an object; `None` when it does not exist.
    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError>;

    /// Every object whose key starts with `prefix` (pagination handled inside), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError>;

    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError>;

    /// Removes what interrupted writes left behind (temporary files, unfinished multipart
    /// uploads) older than `older_than`; returns how many were removed.
    async fn cleanup_incomplete(
        &self,
        older_than: std::time::Duration,
    ) -> Result<u64, StorageError>;
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

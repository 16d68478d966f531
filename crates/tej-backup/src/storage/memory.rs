//! An in-memory [`ObjectStore`] for tests: state-based, so a test asserts what is stored.

use super::{
    BackupError, ByteStream, ObjectKey, ObjectMeta, ObjectStore, PutOptions, PutResult,
    bytes_stream, clamp_range,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::AsyncReadExt;

#[derive(Debug, Clone)]
struct Entry {
    data: Bytes,
    last_modified: jiff::Timestamp,
}

/// An in-memory object store. Clones share the same objects.
///
/// A put reads its whole stream before storing, so a stream that fails leaves no object;
/// `if_not_exists` is checked and the object stored under one lock (race-free).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    name: String,
    objects: Arc<Mutex<BTreeMap<ObjectKey, Entry>>>,
}

impl MemoryStore {
    /// An empty store described as `memory://`.
    pub fn new() -> MemoryStore {
        MemoryStore::named("memory://")
    }

    /// An empty store described as `name` in reports and errors.
    pub fn named(name: impl Into<String>) -> MemoryStore {
        MemoryStore {
            name: name.into(),
            objects: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<ObjectKey, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts).
        self.objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.lock().keys().cloned().collect()
    }

    /// How many objects are stored.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The content of an object, if present.
    pub fn object(&self, key: &ObjectKey) -> Option<Bytes> {
        self.lock().get(key).map(|e| e.data.clone())
    }

    /// Stores an object directly (test setup), dated now.
    pub fn insert(&self, key: ObjectKey, data: impl Into<Bytes>) {
        self.lock().insert(
            key,
            Entry {
                data: data.into(),
                last_modified: jiff::Timestamp::now(),
            },
        );
    }

    /// Changes an object's modification time (for retention tests); false when it is missing.
    pub fn set_last_modified(&self, key: &ObjectKey, at: jiff::Timestamp) -> bool {
        match self.lock().get_mut(key) {
            Some(e) => {
                e.last_modified = at;
                true
            }
            None => false,
        }
    }

    fn not_found(&self, key: &ObjectKey) -> BackupError {
        BackupError::ObjectNotFound {
            repo: self.name.clone(),
            key: key.to_string(),
        }
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn put(
        &self,
        key: &ObjectKey,
        mut body: ByteStream,
        opts: PutOptions,
    ) -> Result<PutResult, BackupError> {
        if opts.if_not_exists && self.lock().contains_key(key) {
            return Err(BackupError::ObjectExists {
                repo: self.name.clone(),
                key: key.to_string(),
            });
        }
        let mut data = Vec::with_capacity(
            opts.size_hint
                .map_or(0, |s| usize::try_from(s.min(64 << 20)).unwrap_or(0)),
        );
        body.read_to_end(&mut data)
            .await
            .map_err(|e| BackupError::Storage {
                repo: self.name.clone(),
                reason: format!("reading the data for {key}: {e}"),
            })?;
        let size = data.len() as u64;
        let mut objects = self.lock();
        if opts.if_not_exists && objects.contains_key(key) {
            return Err(BackupError::ObjectExists {
                repo: self.name.clone(),
                key: key.to_string(),
            });
        }
        objects.insert(
            key.clone(),
            Entry {
                data: Bytes::from(data),
                last_modified: jiff::Timestamp::now(),
            },
        );
        Ok(PutResult { size })
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackupError> {
        let data = self.object(key).ok_or_else(|| self.not_found(key))?;
        let r = clamp_range(range, data.len() as u64);
        // Bounded by data.len(), which fits in usize.
        let slice = data.slice(r.start as usize..r.end as usize);
        Ok(bytes_stream(slice))
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, BackupError> {
        Ok(self.lock().get(key).map(|e| ObjectMeta {
            key: key.clone(),
            size: e.data.len() as u64,
            last_modified: Some(e.last_modified),
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BackupError> {
        Ok(self
            .lock()
            .iter()
            .filter(|(k, _)| k.as_str().starts_with(prefix))
            .map(|(k, e)| ObjectMeta {
                key: k.clone(),
                size: e.data.len() as u64,
                last_modified: Some(e.last_modified),
            })
            .collect())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackupError> {
        self.lock().remove(key);
        Ok(())
    }

    async fn cleanup_incomplete(
        &self,
        _older_than: std::time::Duration,
    ) -> Result<u64, BackupError> {
        // Puts are all-or-nothing in memory: nothing is ever left half-written.
        Ok(0)
    }
}

//! A repository: an [`ObjectStore`] plus the key layout of backups in it.
//!
//! Layout: `backups/<id>/<object>` data first, `backups/<id>/manifest.json` last;
//! `backups/<id>/verify.json` holds the latest verification, `backups/<id>/failed.json`
//! marks a run that failed or was interrupted (its data objects removed); `locks/` holds the
//! locks (see [`crate::lock`]).
//!
//! Every backup belongs to a [`Series`] (its kind and what it backs up); retention works
//! per series and a [`BackupSelector`] (`latest` of a series, or an id that must belong to
//! one) picks what verify and restore read.

use crate::error::BackupError;
use crate::id::BackupId;
use crate::manifest::{BackupKind, Manifest};
use crate::storage::{ObjectKey, ObjectStore, get_bytes, open_repository, put_bytes};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Prefix of every backup's objects.
pub const BACKUPS_PREFIX: &str = "backups/";
/// Name of the manifest object inside a backup.
pub const MANIFEST_NAME: &str = "manifest.json";
/// Name of the verification record inside a backup.
pub const VERIFY_NAME: &str = "verify.json";
/// Name of the failure record of a failed or interrupted run.
pub const FAILED_NAME: &str = "failed.json";

/// A configured repository.
#[derive(Clone)]
pub struct Repository {
    /// The storage.
    pub store: Arc<dyn ObjectStore>,
    /// The local directory, when the repository is one (enables the local `flock`).
    pub local_path: Option<PathBuf>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("store", &self.store.describe())
            .field("local_path", &self.local_path)
            .finish()
    }
}

impl Repository {
    /// Opens a local path or `s3://bucket/prefix` (see [`open_repository`]).
    pub async fn open(spec: &str) -> Result<Repository, BackupError> {
        let store = open_repository(spec).await?;
        let local_path = (!spec.contains("://")).then(|| PathBuf::from(spec));
        Ok(Repository { store, local_path })
    }

    /// A repository over any store (no local lock file).
    pub fn from_store(store: Arc<dyn ObjectStore>) -> Repository {
        Repository {
            store,
            local_path: None,
        }
    }

    /// The description used in reports.
    pub fn name(&self) -> String {
        self.store.describe()
    }

    pub(crate) fn key(&self, id: &BackupId, name: &str) -> Result<ObjectKey, BackupError> {
        ObjectKey::new(format!("{BACKUPS_PREFIX}{id}/{name}"))
    }

    /// Reads and parses a backup's manifest; `None` when it has none.
    pub async fn manifest(&self, id: &BackupId) -> Result<Option<Manifest>, BackupError> {
        let key = self.key(id, MANIFEST_NAME)?;
        let bytes = match get_bytes(&*self.store, &key, None).await {
            Ok(b) => b,
            Err(BackupError::ObjectNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let m = Manifest::parse(&bytes).map_err(|reason| BackupError::InvalidManifest {
            repo: self.name(),
            key: key.to_string(),
            reason,
        })?;
        if &m.id != id {
            return Err(BackupError::InvalidManifest {
                repo: self.name(),
                key: key.to_string(),
                reason: format!("it names backup {} instead", m.id),
            });
        }
        Ok(Some(m))
    }

    /// Writes the manifest: last, and only if none exists (a backup is never overwritten).
    pub(crate) async fn write_manifest(&self, m: &Manifest) -> Result<(), BackupError> {
        let key = self.key(&m.id, MANIFEST_NAME)?;
        put_bytes(&*self.store, &key, m.to_json(), true).await?;
        Ok(())
    }

    async fn read_json<T: for<'de> Deserialize<'de>>(
        &self,
        key: &ObjectKey,
    ) -> Result<Option<T>, BackupError> {
        match get_bytes(&*self.store, key, None).await {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(BackupError::ObjectNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn write_json<T: Serialize>(
        &self,
        key: &ObjectKey,
        value: &T,
    ) -> Result<(), BackupError> {
        let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
        put_bytes(&*self.store, key, bytes, false).await?;
        Ok(())
    }

    /// Everything under `backups/`, grouped by backup id (keys that are not ids are ignored).
    pub(crate) async fn scan(
        &self,
    ) -> Result<BTreeMap<BackupId, Vec<crate::storage::ObjectMeta>>, BackupError> {
        let mut out: BTreeMap<BackupId, Vec<_>> = BTreeMap::new();
        for meta in self.store.list(BACKUPS_PREFIX).await? {
            let rest = &meta.key.as_str()[BACKUPS_PREFIX.len()..];
            let Some((id, _)) = rest.split_once('/') else {
                continue;
            };
            let Ok(id) = BackupId::parse(id) else {
                continue;
            };
            out.entry(id).or_default().push(meta);
        }
        Ok(out)
    }

    /// The state of every backup and leftover run in the repository.
    pub async fn inventory(&self) -> Result<Inventory, BackupError> {
        let mut inv = Inventory::default();
        for (id, objects) in self.scan().await? {
            let has = |name: &str| {
                objects
                    .iter()
                    .any(|o| o.key.as_str().ends_with(&format!("/{name}")))
            };
            if has(MANIFEST_NAME) {
                let manifest = self
                    .manifest(&id)
                    .await?
                    .ok_or_else(|| BackupError::NotFound {
                        repo: self.name(),
                        id: id.to_string(),
                    })?;
                let verification = if has(VERIFY_NAME) {
                    self.read_json::<VerificationRecord>(&self.key(&id, VERIFY_NAME)?)
                        .await?
                } else {
                    None
                };
                inv.backups
                    .push(BackupSummary::new(&self.name(), manifest, verification));
            } else {
                let failure = if has(FAILED_NAME) {
                    self.read_json::<FailureRecord>(&self.key(&id, FAILED_NAME)?)
                        .await?
                } else {
                    None
                };
                let data: Vec<_> = objects
                    .iter()
                    .filter(|o| !o.key.as_str().ends_with(&format!("/{FAILED_NAME}")))
                    .collect();
                inv.incomplete.push(IncompleteRun {
                    id: id.clone(),
                    objects: data.len() as u64,
                    bytes: data.iter().map(|o| o.size).sum(),
                    failure,
                });
            }
        }
        inv.backups.sort_by(|a, b| {
            b.finished_at
                .cmp(&a.finished_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        inv.incomplete
            .sort_by_key(|r| std::cmp::Reverse(r.id.time()));
        Ok(inv)
    }

    /// Removes the data objects of unfinished runs of `target` (all targets when `None`),
    /// leaving a `failed.json` record behind so retention knows the run failed.
    /// Call only while holding the target's lock (or when no run can be going on).
    pub async fn clean_incomplete(
        &self,
        target: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<BackupId>, BackupError> {
        let scanned = self.scan().await?;
        self.clean_runs(scanned, |id| target.is_none_or(|t| t == id.target()), now)
            .await
    }

    /// Removes the data objects of the unfinished runs among `scanned` (a [`Self::scan`]
    /// taken earlier) that `gone` says are provably abandoned.
    pub(crate) async fn clean_runs(
        &self,
        scanned: BTreeMap<BackupId, Vec<crate::storage::ObjectMeta>>,
        gone: impl Fn(&BackupId) -> bool,
        now: Timestamp,
    ) -> Result<Vec<BackupId>, BackupError> {
        let mut cleaned = Vec::new();
        for (id, objects) in scanned {
            if !gone(&id) {
                continue;
            }
            let manifest = objects
                .iter()
                .any(|o| o.key.as_str().ends_with(&format!("/{MANIFEST_NAME}")));
            if manifest {
                continue;
            }
            let failed_key = self.key(&id, FAILED_NAME)?;
            let data: Vec<_> = objects.iter().filter(|o| o.key != failed_key).collect();
            if data.is_empty() {
                continue;
            }
            if !objects.iter().any(|o| o.key == failed_key) {
                let rec = FailureRecord {
                    id: id.clone(),
                    at: now,
                    reason: "interrupted: the run ended before writing its manifest".into(),
                };
                self.write_json(&failed_key, &rec).await?;
            }
            for o in data {
                self.store.delete(&o.key).await?;
            }
            tracing::info!(repo = %self.name(), backup = %id, "removed the objects of an unfinished run");
            cleaned.push(id);
        }
        Ok(cleaned)
    }

    /// Deletes a whole backup: the manifest first (so it stops being a backup at once),
    /// then its other objects.
    pub(crate) async fn delete_backup(&self, id: &BackupId) -> Result<(), BackupError> {
        self.store.delete(&self.key(id, MANIFEST_NAME)?).await?;
        for o in self.store.list(&format!("{BACKUPS_PREFIX}{id}/")).await? {
            self.store.delete(&o.key).await?;
        }
        Ok(())
    }

    /// Resolves a selector's text (see [`BackupSelector`]: `latest`, an id, either
    /// optionally typed with `@kind` and `:target`) to a manifest.
    pub async fn resolve(&self, selector: &str) -> Result<Manifest, BackupError> {
        let sel = BackupSelector::parse(selector)?;
        self.resolve_selector(&sel).await
    }

    /// Resolves a selector to a manifest: the newest backup (by manifest time) of the
    /// series for `latest`, or the id, refused when it is not of the selector's kind and
    /// target.
    pub async fn resolve_selector(&self, sel: &BackupSelector) -> Result<Manifest, BackupError> {
        let Some(id) = sel.id.clone() else {
            let inv = self.inventory().await?;
            let newest = inv
                .backups
                .iter()
                .find(|b| sel.matches(&b.series))
                .ok_or_else(|| BackupError::NotFound {
                    repo: self.name(),
                    id: sel.describe_latest(),
                })?;
            return self
                .manifest(&newest.id)
                .await?
                .ok_or_else(|| BackupError::NotFound {
                    repo: self.name(),
                    id: newest.id.to_string(),
                });
        };
        match self.manifest(&id).await? {
            Some(m) => {
                let series = Series::of(&m);
                if !sel.matches(&series) {
                    return Err(BackupError::WrongSeries {
                        repo: self.name(),
                        id: id.to_string(),
                        found: series.describe(),
                        expected: sel.describe_expected(),
                    });
                }
                Ok(m)
            }
            None => {
                let leftovers = self.store.list(&format!("{BACKUPS_PREFIX}{id}/")).await?;
                if leftovers.is_empty() {
                    Err(BackupError::NotFound {
                        repo: self.name(),
                        id: id.to_string(),
                    })
                } else {
                    Err(BackupError::Corrupt {
                        repo: self.name(),
                        id: id.to_string(),
                        object: self.key(&id, MANIFEST_NAME)?.to_string(),
                        reason:
                            "the manifest is missing: this run never finished and is not a backup"
                                .into(),
                    })
                }
            }
        }
    }
}

/// A backup series: one kind of backup of one thing. Retention keeps the newest backup
/// of every series, and `latest` means the newest of one series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Series {
    /// The kind.
    pub kind: BackupKind,
    /// What is backed up: the database name (logical), the cluster's system identifier
    /// (physical), the directories joined with `,` (files).
    pub target: String,
}

impl Series {
    /// The logical series of database `database`.
    pub fn logical(database: impl Into<String>) -> Series {
        Series {
            kind: BackupKind::Logical,
            target: database.into(),
        }
    }

    /// The series a backup belongs to, from its manifest (the id's target when the
    /// manifest does not record what it backed up).
    pub fn of(m: &Manifest) -> Series {
        let target = match m.kind {
            BackupKind::Logical => m.database.clone(),
            BackupKind::Physical => m.physical.as_ref().map(|p| p.system_identifier.to_string()),
            BackupKind::Files => (!m.paths.is_empty()).then(|| {
                let mut p = m.paths.clone();
                p.sort();
                p.join(",")
            }),
        };
        Series {
            kind: m.kind,
            target: target.unwrap_or_else(|| m.id.target().to_string()),
        }
    }

    /// `a logical backup of database appdb`, for messages.
    pub fn describe(&self) -> String {
        match self.kind {
            BackupKind::Logical => format!("a logical backup of database {}", self.target),
            BackupKind::Physical => {
                format!("a physical base backup of cluster {}", self.target)
            }
            BackupKind::Files => format!("a file backup of {}", self.target),
        }
    }
}

impl std::fmt::Display for Series {
    /// `logical appdb`, `physical 7301234567890123456`, `files /srv/uploads`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.target)
    }
}

/// What verify and restore read: the newest backup of a series, or an id that must belong
/// to it. Its text form (for [`Repository::resolve`] and the string selectors of the
/// restore steps) is `latest` or an id, optionally followed by `@KIND` and `:TARGET`:
/// `latest@logical:appdb`, `20250116T020000Z-appdb@logical:appdb`, `latest@files`. A bare
/// `latest` is the newest backup of any series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSelector {
    /// The id; `None` for `latest`.
    pub id: Option<BackupId>,
    /// The kind required (any when `None`).
    pub kind: Option<BackupKind>,
    /// The series target required (any when `None`).
    pub target: Option<String>,
}

impl BackupSelector {
    /// The newest backup of `series`.
    pub fn latest_of(series: &Series) -> BackupSelector {
        BackupSelector {
            id: None,
            kind: Some(series.kind),
            target: Some(series.target.clone()),
        }
    }

    /// The newest backup of `kind`, whatever it backs up.
    pub fn latest_kind(kind: BackupKind) -> BackupSelector {
        BackupSelector {
            id: None,
            kind: Some(kind),
            target: None,
        }
    }

    /// Backup `id`, which must belong to `series`.
    pub fn id_in(id: BackupId, series: &Series) -> BackupSelector {
        BackupSelector {
            id: Some(id),
            kind: Some(series.kind),
            target: Some(series.target.clone()),
        }
    }

    /// `latest` or an id (untyped) made to belong to `series`.
    pub fn typed(selector: &str, series: &Series) -> Result<BackupSelector, BackupError> {
        let mut sel = BackupSelector::parse(selector)?;
        sel.kind = Some(series.kind);
        sel.target = Some(series.target.clone());
        Ok(sel)
    }

    /// Parses the text form (see the type's docs).
    pub fn parse(s: &str) -> Result<BackupSelector, BackupError> {
        let bad =
            |why: String| BackupError::InvalidOptions(format!("backup selector {s:?}: {why}"));
        let (head, typed) = match s.split_once('@') {
            Some((h, t)) => (h, Some(t)),
            None => (s, None),
        };
        let id = if head == "latest" {
            None
        } else {
            Some(BackupId::parse(head).map_err(|e| bad(e.to_string()))?)
        };
        let (kind, target) = match typed {
            None => (None, None),
            Some(t) => {
                let (k, target) = match t.split_once(':') {
                    Some((k, target)) => (k, Some(target.to_string())),
                    None => (t, None),
                };
                let kind = match k {
                    "logical" => BackupKind::Logical,
                    "physical" => BackupKind::Physical,
                    "files" => BackupKind::Files,
                    other => {
                        return Err(bad(format!(
                            "unknown kind {other:?}: expected logical, physical or files"
                        )));
                    }
                };
                if target.as_deref() == Some("") {
                    return Err(bad("empty target after ':'".into()));
                }
                (Some(kind), target)
            }
        };
        Ok(BackupSelector { id, kind, target })
    }

    /// Whether a backup of `series` satisfies the kind and target.
    pub fn matches(&self, series: &Series) -> bool {
        self.kind.is_none_or(|k| k == series.kind)
            && self.target.as_deref().is_none_or(|t| t == series.target)
    }

    fn describe_expected(&self) -> String {
        match (self.kind, &self.target) {
            (Some(k), Some(t)) => Series {
                kind: k,
                target: t.clone(),
            }
            .describe(),
            (Some(BackupKind::Logical), None) => "a logical backup".into(),
            (Some(BackupKind::Physical), None) => "a physical base backup".into(),
            (Some(BackupKind::Files), None) => "a file backup".into(),
            (None, _) => "a backup".into(),
        }
    }

    fn describe_latest(&self) -> String {
        match self.kind {
            None => "latest".into(),
            Some(_) => format!("latest ({})", self.describe_expected()),
        }
    }
}

impl std::fmt::Display for BackupSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{id}")?,
            None => f.write_str("latest")?,
        }
        if let Some(k) = self.kind {
            write!(f, "@{k}")?;
            if let Some(t) = &self.target {
                write!(f, ":{t}")?;
            }
        }
        Ok(())
    }
}

/// The latest verification of a backup, stored beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationRecord {
    /// When.
    pub at: Timestamp,
    /// Whether every check passed.
    pub ok: bool,
    /// A restore test was run too.
    #[serde(default)]
    pub restore_tested: bool,
    /// The first problem found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The record a failed or interrupted run leaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// The run's id.
    pub id: BackupId,
    /// When the failure was recorded.
    pub at: Timestamp,
    /// Why it failed.
    pub reason: String,
}

/// One backup as `list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupSummary {
    /// Repository.
    pub repository: String,
    /// Id.
    pub id: BackupId,
    /// Kind.
    pub kind: BackupKind,
    /// The series it belongs to (retention and `latest` work per series).
    pub series: Series,
    /// Database (logical).
    pub database: Option<String>,
    /// Format (logical).
    pub format: Option<crate::manifest::DumpFormat>,
    /// Start.
    pub started_at: Timestamp,
    /// End (the order of `list`).
    pub finished_at: Timestamp,
    /// Uncompressed bytes.
    pub raw_size: u64,
    /// Stored bytes.
    pub stored_size: u64,
    /// `zstd-3`, `gzip-6`, `none`.
    pub compression: String,
    /// Encrypted with age.
    pub encrypted: bool,
    /// Number of data objects.
    pub objects: usize,
    /// The latest verification, if any.
    pub verification: Option<VerificationRecord>,
}

impl BackupSummary {
    fn new(repo: &str, m: Manifest, verification: Option<VerificationRecord>) -> BackupSummary {
        BackupSummary {
            repository: repo.to_string(),
            id: m.id.clone(),
            kind: m.kind,
            series: Series::of(&m),
            database: m.database.clone(),
            format: m.format,
            started_at: m.started_at,
            finished_at: m.finished_at,
            raw_size: m.raw_size,
            stored_size: m.stored_size,
            compression: match m.compression.algorithm {
                crate::manifest::CompressionAlgo::None => "none".into(),
                a => format!("{a}-{}", m.compression.level),
            },
            encrypted: m.encryption.is_some(),
            objects: m.objects.len(),
            verification,
        }
    }
}

/// A run that left objects but no manifest, or only a failure record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncompleteRun {
    /// Its id.
    pub id: BackupId,
    /// Data objects left (0 once cleaned).
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The failure record, when one was written.
    pub failure: Option<FailureRecord>,
}

/// Backups and leftovers of a repository.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Inventory {
    /// Finished backups, newest first by manifest time.
    pub backups: Vec<BackupSummary>,
    /// Failed or interrupted runs, newest first.
    pub incomplete: Vec<IncompleteRun>,
}

/// `list`: every finished backup in `repo`, newest first by manifest time.
pub async fn list_backups(repo: &Repository) -> Result<Vec<BackupSummary>, BackupError> {
    Ok(repo.inventory().await?.backups)
}

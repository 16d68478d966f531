//! The manifest: the one object that makes a backup exist.
//!
//! It is written last, atomically, after every data object is stored and checked.
//! A backup without a manifest is an interrupted run, never listed, and cleaned up by the
//! next run or by `prune`.

use crate::error::BackupError;
use crate::id::BackupId;
use crate::lsn::Lsn;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The manifest format version this crate writes.
pub const MANIFEST_VERSION: u32 = 1;

/// What a backup contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// A `pg_dump` of one database.
    Logical,
    /// A physical base backup (reserved for base backups and WAL).
    Physical,
    /// A tar of configured directories.
    Files,
}

impl fmt::Display for BackupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackupKind::Logical => "logical",
            BackupKind::Physical => "physical",
            BackupKind::Files => "files",
        })
    }
}

/// `pg_dump`'s output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DumpFormat {
    /// `-Fc`: one archive, restored with `pg_restore` (the default).
    #[default]
    Custom,
    /// `-Fd -j N`: a directory of files dumped in parallel, restored with `pg_restore -j`.
    Directory,
    /// Plain SQL, restorable with `gunzip | psql` when gzip-compressed and unencrypted.
    Plain,
}

impl DumpFormat {
    /// Parses `custom`, `directory` or `plain` (as in `tej.toml`).
    pub fn parse(s: &str) -> Option<DumpFormat> {
        match s {
            "custom" | "c" => Some(DumpFormat::Custom),
            "directory" | "d" | "dir" => Some(DumpFormat::Directory),
            "plain" | "p" | "sql" => Some(DumpFormat::Plain),
            _ => None,
        }
    }
}

impl fmt::Display for DumpFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DumpFormat::Custom => "custom",
            DumpFormat::Directory => "directory",
            DumpFormat::Plain => "plain",
        })
    }
}

/// A compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CompressionAlgo {
    /// Zstandard, multi-threaded (the default).
    #[default]
    Zstd,
    /// gzip (`.gz`), readable by `gunzip`.
    Gzip,
    /// No compression.
    None,
}

impl CompressionAlgo {
    /// Parses `zstd`, `gzip` or `none`.
    pub fn parse(s: &str) -> Option<CompressionAlgo> {
        match s {
            "zstd" | "zst" => Some(CompressionAlgo::Zstd),
            "gzip" | "gz" => Some(CompressionAlgo::Gzip),
            "none" => Some(CompressionAlgo::None),
            _ => None,
        }
    }

    /// The file name suffix (`.zst`, `.gz`, or empty).
    pub fn suffix(self) -> &'static str {
        match self {
            CompressionAlgo::Zstd => ".zst",
            CompressionAlgo::Gzip => ".gz",
            CompressionAlgo::None => "",
        }
    }
}

impl fmt::Display for CompressionAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CompressionAlgo::Zstd => "zstd",
            CompressionAlgo::Gzip => "gzip",
            CompressionAlgo::None => "none",
        })
    }
}

/// How the objects were compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionInfo {
    /// The algorithm.
    pub algorithm: CompressionAlgo,
    /// The level used.
    pub level: i32,
}

/// How the objects were encrypted (public facts only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionInfo {
    /// Always `age`.
    pub scheme: String,
    /// X25519 recipients (public keys), empty for a passphrase.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Encrypted with a passphrase (scrypt).
    #[serde(default)]
    pub passphrase: bool,
}

/// One stored object of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestObject {
    /// Its name inside the backup (`dump.pgc`, `toc.dat`, `3456.dat`, `files.tar`).
    pub name: String,
    /// Its key in the repository.
    pub key: String,
    /// Bytes stored (after compression and encryption).
    pub stored_size: u64,
    /// SHA-256 of the stored bytes, hex.
    pub stored_sha256: String,
    /// Bytes before compression and encryption.
    pub raw_size: u64,
    /// SHA-256 of the bytes before compression and encryption, hex; empty when the run did
    /// not compute it (`RunOptions::hash_raw` off: the codec's checksum or age's
    /// authentication covers the decoded content).
    pub raw_sha256: String,
}

/// What a physical base backup's manifest records beyond the common fields: what
/// point-in-time recovery and WAL retention need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalInfo {
    /// The cluster's system identifier (`pg_control_system()`); WAL from another cluster
    /// is refused.
    pub system_identifier: u64,
    /// The timeline the backup started on.
    pub timeline: u32,
    /// WAL position where the backup started (`pg_backup_start`).
    pub start_lsn: Lsn,
    /// WAL position where it stopped (`pg_backup_stop`): recovery must replay at least to here.
    pub stop_lsn: Lsn,
    /// The first WAL segment recovery needs.
    pub start_wal: String,
    /// The last WAL segment recovery needs to reach consistency.
    pub stop_wal: String,
    /// WAL segment size of the cluster, bytes.
    pub wal_segment_size: u64,
    /// The server's `PG_VERSION` major version (`15`).
    pub pg_major: u32,
    /// The data directory that was copied.
    pub data_directory: String,
}

/// Everything known about a finished backup. Written last, as `backups/<id>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// The backup's id.
    pub id: BackupId,
    /// What it contains.
    pub kind: BackupKind,
    /// The database dumped (logical backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The dump format (logical backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DumpFormat>,
    /// `pg_dump --version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_dump_version: Option<String>,
    /// The server's `server_version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// The directories archived (file backups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// When the run started.
    pub started_at: Timestamp,
    /// When the last data object was stored.
    pub finished_at: Timestamp,
    /// Compression.
    pub compression: CompressionInfo,
    /// Encryption, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
    /// Total bytes before compression and encryption.
    pub raw_size: u64,
    /// Total bytes stored.
    pub stored_size: u64,
    /// The data objects.
    pub objects: Vec<ManifestObject>,
    /// Facts of a physical base backup (physical backups only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical: Option<PhysicalInfo>,
    /// The host that took it.
    #[serde(default)]
    pub host: String,
    /// The tej-backup version that wrote it.
    #[serde(default)]
    pub tool: String,
}

impl Manifest {
    /// Parses a manifest, rejecting versions this crate does not know
    /// ([`BackupError::MalformedManifest`] says what is wrong).
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, BackupError> {
        Manifest::parse(bytes).map_err(|reason| BackupError::MalformedManifest { reason })
    }

    /// [`Manifest::from_json`], with the reason alone as the error.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if m.version == 0 || m.version > MANIFEST_VERSION {
            return Err(format!(
                "manifest version {} is not supported (this tej knows up to {MANIFEST_VERSION})",
                m.version
            ));
        }
        Ok(m)
    }

    /// Serializes it (pretty JSON).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_json_names_what_is_wrong() {
        let e = Manifest::from_json(b"{not json").unwrap_err();
        assert!(matches!(e, BackupError::MalformedManifest { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with("not a tej backup manifest: "),
            "{e}"
        );
        let e = Manifest::from_json(br#"{"version": 99}"#).unwrap_err();
        assert!(e.to_string().contains("not a tej backup manifest"), "{e}");
    }
}

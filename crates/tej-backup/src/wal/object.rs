//! The stored form of one archived WAL file: a self-describing object.
//!
//! ```text
//! payload (compressed, then optionally age-encrypted)
//! trailer: JSON of WalObjectMeta
//! u32 little-endian: trailer length
//! b"TEJWAL01"
//! ```
//!
//! One object per file, so a push is one atomic put: the checksum and cluster identity
//! can never be separated from the data they describe.

use crate::error::BackupError;
use crate::manifest::{CompressionInfo, EncryptionInfo};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The magic at the end of every archived WAL object.
pub const WAL_OBJECT_MAGIC: &[u8; 8] = b"TEJWAL01";
/// The largest trailer accepted (a sanity bound against garbage).
const MAX_TRAILER: usize = 64 * 1024;

/// What an archived WAL object says about itself (its trailer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalObjectMeta {
    /// Trailer format version (1).
    pub format: u32,
    /// The WAL file name (`000000010000000000000003`, `00000002.history`).
    pub name: String,
    /// System identifier of the cluster that wrote it.
    pub system_identifier: u64,
    /// Bytes of the original file.
    pub raw_size: u64,
    /// SHA-256 of the original file, hex.
    pub raw_sha256: String,
    /// Compression of the payload.
    pub compression: CompressionInfo,
    /// Encryption of the payload, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
    /// When it was pushed.
    pub pushed_at: Timestamp,
    /// The host that pushed it.
    #[serde(default)]
    pub host: String,
}

/// Appends the trailer to `payload`, giving the object to store.
pub(crate) fn seal(mut payload: Vec<u8>, meta: &WalObjectMeta) -> Vec<u8> {
    let json = serde_json::to_vec(meta).unwrap_or_default();
    payload.extend_from_slice(&json);
    payload.extend_from_slice(&(json.len() as u32).to_le_bytes());
    payload.extend_from_slice(WAL_OBJECT_MAGIC);
    payload
}

/// Splits a stored object into its payload and trailer: an error (never a panic) for
/// anything that is not a complete tej WAL object ([`BackupError::MalformedWalObject`]
/// says what is wrong).
pub fn open_object(object: &[u8]) -> Result<(&[u8], WalObjectMeta), BackupError> {
    open(object).map_err(|reason| BackupError::MalformedWalObject { reason })
}

/// Splits a stored object into its payload and trailer.
pub(crate) fn open(object: &[u8]) -> Result<(&[u8], WalObjectMeta), String> {
    let n = object.len();
    if n < 12 || &object[n - 8..] != WAL_OBJECT_MAGIC {
        return Err("no tej WAL trailer (truncated or not a tej WAL object)".into());
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&object[n - 12..n - 8]);
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_TRAILER || len > n - 12 {
        return Err(format!("trailer length {len} is impossible"));
    }
    let start = n - 12 - len;
    let meta: WalObjectMeta = serde_json::from_slice(&object[start..n - 12])
        .map_err(|e| format!("trailer is not valid: {e}"))?;
    if meta.format != 1 {
        return Err(format!(
            "trailer format {} is not supported (this tej knows 1)",
            meta.format
        ));
    }
    Ok((&object[..start], meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::CompressionAlgo;

    fn meta() -> WalObjectMeta {
        WalObjectMeta {
            format: 1,
            name: "000000010000000000000003".into(),
            system_identifier: 42,
            raw_size: 3,
            raw_sha256: "ab".into(),
            compression: CompressionInfo {
                algorithm: CompressionAlgo::Zstd,
                level: 3,
            },
            encryption: None,
            pushed_at: Timestamp::UNIX_EPOCH,
            host: "h".into(),
        }
    }

    #[test]
    fn seal_and_open_round_trip() {
        let obj = seal(b"payload".to_vec(), &meta());
        let (p, m) = open(&obj).unwrap();
        assert_eq!(p, b"payload");
        assert_eq!(m, meta());
    }

    #[test]
    fn damaged_trailers_are_refused() {
        let obj = seal(b"payload".to_vec(), &meta());
        assert!(open(&obj[..obj.len() - 1]).is_err());
        assert!(open(&obj[1..obj.len() - 20]).is_err());
        assert!(open(b"").is_err());
        let mut bad = obj.clone();
        let n = bad.len();
        bad[n - 12..n - 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(open(&bad).is_err());
        let mut bad = obj.clone();
        bad[8] = b'{'; // inside the JSON
        assert!(open(&bad).is_err());
    }

    #[test]
    fn open_object_names_what_is_wrong() {
        let e = open_object(b"payload").unwrap_err();
        assert!(matches!(e, BackupError::MalformedWalObject { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "not a tej WAL object: no tej WAL trailer (truncated or not a tej WAL object)"
        );
        let mut m = meta();
        m.format = 2;
        let e = open_object(&seal(b"p".to_vec(), &m)).unwrap_err();
        assert!(
            e.to_string().contains("trailer format 2 is not supported"),
            "{e}"
        );
    }
}

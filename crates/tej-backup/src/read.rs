//! Reading a stored object back through the stages, checking it against the manifest.

use crate::error::BackupError;
use crate::manifest::{Manifest, ManifestObject};
use crate::pipeline::{DecodeError, EncryptionOptions, Ticker};
use crate::repo::Repository;
use crate::storage::ObjectKey;
use std::io::Write;

/// Reads `obj` of backup `m` from `repo`, decrypts and decompresses it into `sink`, and
/// checks sizes and SHA-256 on both sides against the manifest. Errors name the object.
pub(crate) async fn decode_object<W: Write + Send + 'static>(
    repo: &Repository,
    m: &Manifest,
    obj: &ManifestObject,
    keys: &EncryptionOptions,
    sink: W,
    ticker: Ticker,
) -> Result<(), BackupError> {
    let corrupt = |reason: String| BackupError::Corrupt {
        repo: repo.name(),
        id: m.id.to_string(),
        object: obj.key.clone(),
        reason,
    };
    let key = ObjectKey::new(obj.key.clone())?;
    let stream = match repo.store.get(&key, None).await {
        Ok(s) => s,
        Err(BackupError::ObjectNotFound { .. }) => {
            return Err(corrupt("the object is missing".into()));
        }
        Err(e) => return Err(e),
    };
    let algorithm = m.compression.algorithm;
    let encrypted = m.encryption.is_some();
    let keys = keys.clone();
    let bridge = tokio_util::io::SyncIoBridge::new(stream);
    let res = tokio::task::spawn_blocking(move || {
        let keys = keys.decryptor()?;
        let mut input = bridge;
        let mut sink = sink;
        let r = crate::pipeline::decode(
            &mut input,
            algorithm,
            encrypted,
            &keys,
            &mut sink,
            &mut |raw, _| ticker.tick(raw, false),
        );
        if let Ok(d) = &r {
            ticker.tick(d.raw_size, true);
        }
        Ok::<_, BackupError>(r)
    })
    .await
    .map_err(|e| BackupError::io("decompression thread", std::io::Error::other(e.to_string())))??;
    let d = match res {
        Ok(d) => d,
        Err(DecodeError::Decrypt(reason)) => {
            return Err(BackupError::Decrypt {
                object: obj.key.clone(),
                reason,
            });
        }
        Err(DecodeError::Data(reason)) => {
            return Err(corrupt(format!("cannot be decoded: {reason}")));
        }
        Err(DecodeError::Input(e)) => {
            return Err(BackupError::Storage {
                repo: repo.name(),
                reason: format!("reading {}: {e}", obj.key),
            });
        }
        Err(DecodeError::Output(e)) => {
            return Err(BackupError::io(
                format!("writing the decoded {}", obj.key),
                e,
            ));
        }
    };
    if d.stored_size != obj.stored_size {
        return Err(corrupt(format!(
            "{} bytes stored, the manifest says {} (truncated or extended)",
            d.stored_size, obj.stored_size
        )));
    }
    if d.stored_sha256 != obj.stored_sha256 {
        return Err(corrupt(format!(
            "SHA-256 {} does not match the manifest's {}",
            d.stored_sha256, obj.stored_sha256
        )));
    }
    // An empty raw SHA-256: not computed at backup time (the codec's checksum or age's
    // authentication covered the content, and the decoder checked it).
    if d.raw_size != obj.raw_size || (!obj.raw_sha256.is_empty() && d.raw_sha256 != obj.raw_sha256)
    {
        return Err(corrupt(format!(
            "decoded content ({} bytes, SHA-256 {}) does not match the manifest ({} bytes, {})",
            d.raw_size, d.raw_sha256, obj.raw_size, obj.raw_sha256
        )));
    }
    Ok(())
}

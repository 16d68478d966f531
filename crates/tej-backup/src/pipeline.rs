//! Reusable stream stages: compression, age encryption and SHA-256, as a writer chain
//! (encode) and a reader chain (decode), both run on a blocking thread with bounded
//! buffers, plus a fan-out that feeds one encoded stream to several repositories.

use crate::error::BackupError;
use crate::manifest::{CompressionAlgo, CompressionInfo, EncryptionInfo};
use crate::storage::ByteStream;
use age::secrecy::SecretString;
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;
use tej_core::{Secret, SecretRef};
use tokio::sync::mpsc;

/// Size of one chunk read from a producer and sent to a repository.
pub const CHUNK: usize = 1 << 20;
/// Chunks buffered per repository before the producer waits (bounded memory).
pub const CHANNEL_DEPTH: usize = 4;

/// Compression settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionOptions {
    /// The algorithm (zstd by default).
    pub algorithm: CompressionAlgo,
    /// The level; `None` takes [`CompressionOptions::default_level`].
    pub level: Option<i32>,
    /// zstd worker threads (0: one per available core).
    pub threads: u32,
}

impl Default for CompressionOptions {
    fn default() -> Self {
        CompressionOptions {
            algorithm: CompressionAlgo::Zstd,
            level: None,
            threads: 0,
        }
    }
}

impl CompressionOptions {
    /// The default level of an algorithm: zstd 3 (measured on the text-heavy benchmark
    /// database: output smaller than `gzip -6` at a fraction of its CPU), gzip 6, none 0.
    pub fn default_level(algorithm: CompressionAlgo) -> i32 {
        match algorithm {
            CompressionAlgo::Zstd => 3,
            CompressionAlgo::Gzip => 6,
            CompressionAlgo::None => 0,
        }
    }

    /// The level actually used, checked against the algorithm's range.
    pub fn info(&self) -> Result<CompressionInfo, BackupError> {
        let level = self.level.unwrap_or(Self::default_level(self.algorithm));
        let ok = match self.algorithm {
            CompressionAlgo::Zstd => (1..=19).contains(&level),
            CompressionAlgo::Gzip => (1..=9).contains(&level),
            CompressionAlgo::None => true,
        };
        if !ok {
            return Err(BackupError::InvalidOptions(format!(
                "compression level {level} is out of range for {}",
                self.algorithm
            )));
        }
        Ok(CompressionInfo {
            algorithm: self.algorithm,
            level: if self.algorithm == CompressionAlgo::None {
                0
            } else {
                level
            },
        })
    }

    fn threads(&self) -> u32 {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(2)
        }
    }
}

/// age encryption and decryption keys. Holds only references to secrets
/// (environment variables or files), resolved when used.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncryptionOptions {
    /// X25519 recipients (`age1...`) to encrypt to.
    pub recipients: Vec<String>,
    /// A passphrase to encrypt to and to decrypt with. Objects are age files to the
    /// X25519 identity derived from it (scrypt, once per process: see
    /// [`passphrase_derivations`](crate::passphrase_derivations)); older objects with age's per-file scrypt stanza are
    /// read with it too.
    pub passphrase: Option<SecretRef>,
    /// An age identity (`AGE-SECRET-KEY-1...` lines) to decrypt with: a file, or an
    /// environment variable holding the key text.
    pub identity: Option<SecretRef>,
    /// scrypt work factor (log2 N) of the passphrase derivation; `None`:
    /// [`DEFAULT_WORK_FACTOR`]. Reading needs the value that writing used.
    pub scrypt_work_factor: Option<u8>,
}

impl EncryptionOptions {
    /// From `tej.toml`'s `[backup.encryption]`.
    pub fn from_config(c: &tej_core::config::EncryptionConfig) -> EncryptionOptions {
        EncryptionOptions {
            recipients: c.recipients.clone(),
            passphrase: c.passphrase.clone(),
            identity: c.identity.clone(),
            scrypt_work_factor: None,
        }
    }

    /// True when backups are to be encrypted.
    pub fn encrypts(&self) -> bool {
        !self.recipients.is_empty() || self.passphrase.is_some()
    }

    /// Resolves what encrypting needs (recipients parsed, passphrase read).
    pub(crate) fn encryptor(&self) -> Result<Option<Encrypt>, BackupError> {
        if !self.recipients.is_empty() && self.passphrase.is_some() {
            return Err(BackupError::InvalidOptions(
                "age cannot mix recipients and a passphrase: choose one".into(),
            ));
        }
        if let Some(p) = &self.passphrase {
            let secret = p.resolve().map_err(|e| {
                BackupError::InvalidOptions(format!("backup passphrase ({}): {e}", p.describe()))
            })?;
            if secret.is_empty() {
                return Err(BackupError::InvalidOptions(format!(
                    "backup passphrase ({}) is empty",
                    p.describe()
                )));
            }
            let wf = self.scrypt_work_factor.unwrap_or(DEFAULT_WORK_FACTOR);
            return Ok(Some(Encrypt::Passphrase(derive_passphrase_identity(
                &secret, wf,
            )?)));
        }
        if self.recipients.is_empty() {
            return Ok(None);
        }
        let mut parsed = Vec::new();
        for r in &self.recipients {
            let rec: age::x25519::Recipient = r.trim().parse().map_err(|e: &str| {
                BackupError::InvalidOptions(format!("age recipient {r:?}: {e}"))
            })?;
            parsed.push(rec);
        }
        Ok(Some(Encrypt::Recipients(parsed, self.recipients.clone())))
    }

    /// Resolves the identities for decryption.
    pub(crate) fn decryptor(&self) -> Result<Decrypt, BackupError> {
        let mut d = Decrypt::default();
        if let Some(p) = &self.passphrase {
            let s = p.resolve().map_err(|e| {
                BackupError::InvalidOptions(format!("backup passphrase ({}): {e}", p.describe()))
            })?;
            d.passphrase = Some(s);
            d.work_factor = self.scrypt_work_factor.unwrap_or(DEFAULT_WORK_FACTOR);
        }
        if let Some(i) = &self.identity {
            let text = match i {
                SecretRef::File { file } => std::fs::read_to_string(file).map_err(|e| {
                    BackupError::InvalidOptions(format!(
                        "age identity file {}: {}",
                        file.display(),
                        e.kind()
                    ))
                })?,
                SecretRef::Env { .. } => i
                    .resolve()
                    .map_err(|e| BackupError::InvalidOptions(format!("age identity: {e}")))?
                    .expose()
                    .to_string(),
            };
            let file = age::IdentityFile::from_buffer(text.as_bytes()).map_err(|_| {
                BackupError::InvalidOptions(format!(
                    "age identity ({}) is not a valid identity file",
                    i.describe()
                ))
            })?;
            let ids = file.into_identities().map_err(|_| {
                BackupError::InvalidOptions(format!(
                    "age identity ({}) holds no usable identity",
                    i.describe()
                ))
            })?;
            d.identities = ids;
        }
        Ok(d)
    }
}

/// scrypt work factor (log2 N) of passphrase derivations when none is configured: age's
/// own default (N = 2^18, 256 MiB with r = 8).
pub const DEFAULT_WORK_FACTOR: u8 = 18;

/// Salt of the passphrase derivation (fixed: one stream is encrypted once for every
/// repository of a run, so it cannot depend on the repository).
const PASSPHRASE_SALT: &[u8] = b"tej-backup/v1 passphrase to X25519 identity";

/// The X25519 identity a passphrase stands for.
pub(crate) struct DerivedIdentity {
    identity: age::x25519::Identity,
    recipient: age::x25519::Recipient,
}

type DerivationKey = [u8; 32];

/// Identities derived in this process, and how many times each was derived.
type DerivedCache = std::collections::HashMap<DerivationKey, (Arc<DerivedIdentity>, u64)>;
static DERIVED: std::sync::Mutex<Option<DerivedCache>> = std::sync::Mutex::new(None);

fn derivation_key(passphrase: &Secret, work_factor: u8) -> DerivationKey {
    let mut h = Sha256::new();
    h.update(PASSPHRASE_SALT);
    h.update([work_factor]);
    h.update(passphrase.expose().as_bytes());
    h.finalize().into()
}

/// The X25519 identity of `passphrase`: scrypt (log2 N = `work_factor`, r = 8, p = 1,
/// salt [`PASSPHRASE_SALT`]) gives its 32-byte secret key. Derived once per process and
/// cached in memory: passphrase-encrypted objects are age files to its recipient, so
/// encrypting and decrypting them costs no further scrypt run (age's scrypt recipient
/// runs one per file). Objects written with age's scrypt recipient stay readable.
pub(crate) fn derive_passphrase_identity(
    passphrase: &Secret,
    work_factor: u8,
) -> Result<Arc<DerivedIdentity>, BackupError> {
    use bech32::ToBase32;
    let key = derivation_key(passphrase, work_factor);
    // Held during the derivation: concurrent callers wait for the one run.
    let mut cache = DERIVED.lock().unwrap_or_else(|e| e.into_inner());
    let map = cache.get_or_insert_with(Default::default);
    if let Some((id, _)) = map.get(&key) {
        return Ok(id.clone());
    }
    let params = scrypt::Params::new(work_factor, 8, 1, 32).map_err(|e| {
        BackupError::InvalidOptions(format!("scrypt work factor {work_factor}: {e}"))
    })?;
    let mut secret = [0u8; 32];
    scrypt::scrypt(
        passphrase.expose().as_bytes(),
        PASSPHRASE_SALT,
        &params,
        &mut secret,
    )
    .map_err(|e| BackupError::InvalidOptions(format!("scrypt: {e}")))?;
    let text = bech32::encode(
        "age-secret-key-",
        secret.to_base32(),
        bech32::Variant::Bech32,
    )
    .map_err(|e| BackupError::InvalidOptions(format!("derived identity: {e}")))?
    .to_uppercase();
    secret.fill(0);
    let identity: age::x25519::Identity = text
        .parse()
        .map_err(|e: &str| BackupError::InvalidOptions(format!("derived identity: {e}")))?;
    drop(text);
    let recipient = identity.to_public();
    let id = Arc::new(DerivedIdentity {
        identity,
        recipient,
    });
    map.insert(key, (id.clone(), 1));
    Ok(id)
}

/// How many times this process derived the identity of `passphrase` (0 or 1).
pub fn passphrase_derivations(passphrase: &Secret, work_factor: u8) -> u64 {
    let key = derivation_key(passphrase, work_factor);
    DERIVED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|m| m.get(&key).map(|(_, n)| *n))
        .unwrap_or(0)
}

/// Resolved encryption.
pub(crate) enum Encrypt {
    Recipients(Vec<age::x25519::Recipient>, Vec<String>),
    Passphrase(Arc<DerivedIdentity>),
}

impl Encrypt {
    pub(crate) fn info(&self) -> EncryptionInfo {
        match self {
            Encrypt::Recipients(_, text) => EncryptionInfo {
                scheme: "age".into(),
                recipients: text.clone(),
                passphrase: false,
            },
            Encrypt::Passphrase(d) => EncryptionInfo {
                scheme: "age".into(),
                recipients: vec![d.recipient.to_string()],
                passphrase: true,
            },
        }
    }

    fn encryptor(&self) -> io::Result<age::Encryptor> {
        let r = match self {
            Encrypt::Recipients(recs, _) => {
                age::Encryptor::with_recipients(recs.iter().map(|r| r as &dyn age::Recipient))
            }
            Encrypt::Passphrase(d) => age::Encryptor::with_recipients(std::iter::once(
                &d.recipient as &dyn age::Recipient,
            )),
        };
        r.map_err(|e| io::Error::other(format!("age: {e}")))
    }
}

/// Resolved decryption keys.
#[derive(Default)]
pub(crate) struct Decrypt {
    identities: Vec<Box<dyn age::Identity>>,
    passphrase: Option<Secret>,
    work_factor: u8,
}

/// What the encoder saw: sizes and SHA-256 on both sides of the stages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Digests {
    pub raw_size: u64,
    pub raw_sha256: String,
    pub stored_size: u64,
    pub stored_sha256: String,
}

/// A writer that hashes and counts what passes through.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what passes through.
struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

enum EncW<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Write for EncW<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            EncW::Plain(w) => w.write(buf),
            EncW::Age(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            EncW::Plain(w) => w.flush(),
            EncW::Age(w) => w.flush(),
        }
    }
}

impl<W: Write> EncW<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            EncW::Plain(w) => Ok(w),
            EncW::Age(w) => w.finish(),
        }
    }
}

enum CompW<W: Write> {
    None(W),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
}

impl<W: Write> Write for CompW<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            CompW::None(w) => w.write(buf),
            CompW::Zstd(w) => w.write(buf),
            CompW::Gzip(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            CompW::None(w) => w.flush(),
            CompW::Zstd(w) => w.flush(),
            CompW::Gzip(w) => w.flush(),
        }
    }
}

impl<W: Write> CompW<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            CompW::None(w) => Ok(w),
            CompW::Zstd(w) => w.finish(),
            CompW::Gzip(w) => w.finish(),
        }
    }
}

/// Reports bytes as they go by.
pub(crate) type Tick<'a> = &'a mut dyn FnMut(u64, u64);

/// Reads `input` to its end through compression and encryption into `out`, hashing both
/// sides. `tick(raw_bytes, stored_bytes)` is called after every chunk.
pub(crate) fn encode(
    input: &mut dyn Read,
    compression: &CompressionOptions,
    encrypt: Option<&Encrypt>,
    out: &mut dyn Write,
    tick: Tick<'_>,
) -> io::Result<Digests> {
    encode_with(input, compression, encrypt, true, out, tick)
}

/// Size of the reads from the producer (a pipe from pg_dump, a tar stream).
const READ_BUF: usize = 1 << 20;

/// [`encode`], hashing the uncompressed side only when `hash_raw` (otherwise
/// `raw_sha256` is empty). The stored side is always hashed; the uncompressed content is
/// covered by the codec's own checksum (zstd's content checksum, gzip's CRC-32) or age's
/// authentication, so the second SHA-256 pass is optional.
pub(crate) fn encode_with(
    input: &mut dyn Read,
    compression: &CompressionOptions,
    encrypt: Option<&Encrypt>,
    hash_raw: bool,
    out: &mut dyn Write,
    tick: Tick<'_>,
) -> io::Result<Digests> {
    let info = compression
        .info()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let stored = HashWriter {
        inner: out,
        hasher: Sha256::new(),
        count: 0,
    };
    let enc = match encrypt {
        None => EncW::Plain(stored),
        Some(e) => EncW::Age(e.encryptor()?.wrap_output(stored)?),
    };
    let mut comp = match info.algorithm {
        CompressionAlgo::None => CompW::None(enc),
        CompressionAlgo::Zstd => {
            let mut z = zstd::stream::write::Encoder::new(enc, info.level)?;
            z.include_checksum(true)?;
            let threads = compression.threads();
            if threads > 1 {
                z.multithread(threads)?;
            }
            CompW::Zstd(z)
        }
        CompressionAlgo::Gzip => CompW::Gzip(flate2::write::GzEncoder::new(
            enc,
            flate2::Compression::new(info.level as u32),
        )),
    };
    let mut raw = hash_raw.then(Sha256::new);
    let mut raw_size = 0u64;
    let mut buf = vec![0u8; READ_BUF];
    let mut since_tick = 0usize;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(h) = raw.as_mut() {
            h.update(&buf[..n]);
        }
        raw_size += n as u64;
        comp.write_all(&buf[..n])?;
        since_tick += n;
        if since_tick >= 4 * CHUNK {
            since_tick = 0;
            tick(raw_size, 0);
        }
    }
    let enc = comp.finish()?;
    let stored = enc.finish()?;
    let d = Digests {
        raw_size,
        raw_sha256: raw.map(|h| hex::encode(h.finalize())).unwrap_or_default(),
        stored_size: stored.count,
        stored_sha256: hex::encode(stored.hasher.finalize()),
    };
    tick(d.raw_size, d.stored_size);
    Ok(d)
}

/// How a decode failed.
#[derive(Debug)]
pub(crate) enum DecodeError {
    /// The key is wrong or missing, or the age header is damaged.
    Decrypt(String),
    /// The data is damaged (authentication tag, compressed frame, truncation).
    Data(String),
    /// Reading the object from storage failed.
    Input(io::Error),
    /// Writing the decoded bytes failed (the consumer went away).
    Output(io::Error),
}

/// Marks errors of the underlying reader so they are not blamed on the data.
struct TagReader<R> {
    inner: R,
    failed: Arc<std::sync::atomic::AtomicBool>,
}

impl<R: Read> Read for TagReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| {
            self.failed.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    }
}

/// Reads a stored object from `input` through decryption and decompression into `out`,
/// hashing both sides.
pub(crate) fn decode(
    input: &mut dyn Read,
    algorithm: CompressionAlgo,
    encrypted: bool,
    keys: &Decrypt,
    out: &mut dyn Write,
    tick: Tick<'_>,
) -> Result<Digests, DecodeError> {
    let input_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut stored = HashReader {
        inner: TagReader {
            inner: input,
            failed: input_failed.clone(),
        },
        hasher: Sha256::new(),
        count: 0,
    };
    let data_err = |e: io::Error| {
        if input_failed.load(std::sync::atomic::Ordering::SeqCst) {
            DecodeError::Input(e)
        } else {
            DecodeError::Data(e.to_string())
        }
    };
    let mut raw = Sha256::new();
    let mut raw_size = 0u64;
    {
        let dec: Box<dyn Read + '_> = if encrypted {
            let d = age::Decryptor::new(&mut stored).map_err(|e| match e {
                age::DecryptError::Io(e) => data_err(e),
                other => DecodeError::Decrypt(other.to_string()),
            })?;
            let scrypt_id;
            let derived;
            let mut ids: Vec<&dyn age::Identity> =
                keys.identities.iter().map(|b| b.as_ref()).collect();
            if !d.is_scrypt()
                && let Some(p) = &keys.passphrase
            {
                derived = derive_passphrase_identity(p, keys.work_factor)
                    .map_err(|e| DecodeError::Decrypt(e.to_string()))?;
                ids.push(&derived.identity);
            }
            if d.is_scrypt() {
                let Some(p) = &keys.passphrase else {
                    return Err(DecodeError::Decrypt(
                        "encrypted with a passphrase, and none was given".into(),
                    ));
                };
                scrypt_id = age::scrypt::Identity::new(SecretString::from(p.expose().to_string()));
                ids = vec![&scrypt_id];
            } else if ids.is_empty() {
                return Err(DecodeError::Decrypt(
                    "encrypted to age recipients, and no identity or passphrase was given".into(),
                ));
            }
            let r = d
                .decrypt(ids.into_iter())
                .map_err(|e| DecodeError::Decrypt(e.to_string()))?;
            Box::new(r)
        } else {
            Box::new(&mut stored)
        };
        let mut dec: Box<dyn Read + '_> = match algorithm {
            CompressionAlgo::None => dec,
            CompressionAlgo::Zstd => {
                Box::new(zstd::stream::read::Decoder::new(dec).map_err(data_err)?)
            }
            CompressionAlgo::Gzip => Box::new(flate2::read::GzDecoder::new(dec)),
        };
        let mut buf = vec![0u8; 256 * 1024];
        let mut since_tick = 0usize;
        loop {
            let n = match dec.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(data_err(e)),
            };
            raw.update(&buf[..n]);
            raw_size += n as u64;
            out.write_all(&buf[..n]).map_err(DecodeError::Output)?;
            since_tick += n;
            if since_tick >= 4 * CHUNK {
                since_tick = 0;
                tick(raw_size, 0);
            }
        }
    }
    // Trailing bytes after the compressed stream are damage too: drain and hash them.
    let mut rest = Vec::new();
    stored.read_to_end(&mut rest).map_err(data_err)?;
    out.flush().map_err(DecodeError::Output)?;
    let d = Digests {
        raw_size,
        raw_sha256: hex::encode(raw.finalize()),
        stored_size: stored.count,
        stored_sha256: hex::encode(stored.hasher.finalize()),
    };
    tick(d.raw_size, d.stored_size);
    Ok(d)
}

/// One receiving end per repository, fed by a [`Fanout`].
type Chunk = io::Result<Bytes>;

/// Feeds one stream of bytes to several consumers through bounded channels.
/// A consumer that goes away is dropped; when all are gone, writes fail.
pub(crate) struct Fanout {
    senders: Vec<Option<mpsc::Sender<Chunk>>>,
    buf: BytesMut,
}

impl Fanout {
    /// A fan-out to `n` consumers and their byte streams.
    pub(crate) fn new(n: usize) -> (Fanout, Vec<ByteStream>) {
        let mut senders = Vec::new();
        let mut streams = Vec::new();
        for _ in 0..n {
            let (tx, rx) = mpsc::channel::<Chunk>(CHANNEL_DEPTH);
            senders.push(Some(tx));
            streams.push(receiver_stream(rx));
        }
        (
            Fanout {
                senders,
                buf: BytesMut::with_capacity(CHUNK),
            },
            streams,
        )
    }

    fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        for s in self.senders.iter_mut() {
            if let Some(tx) = s
                && tx.blocking_send(Ok(chunk.clone())).is_err()
            {
                *s = None;
            }
        }
        if self.senders.iter().all(Option::is_none) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "every repository stopped receiving",
            ));
        }
        Ok(())
    }

    /// Sends what is buffered (call before [`Fanout::close`]).
    pub(crate) fn flush_all(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = self.buf.split().freeze();
            self.send(chunk)?;
        }
        Ok(())
    }

    /// Ends every stream with an error, so no consumer stores a partial object.
    pub(crate) async fn fail(mut self, reason: &str) {
        for tx in self.senders.iter_mut().flatten() {
            let _ = tx.send(Err(io::Error::other(reason.to_string()))).await;
        }
    }

    /// Ends every stream normally.
    pub(crate) fn close(self) {
        drop(self);
    }
}

impl Write for Fanout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = buf.len().min(room);
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() >= CHUNK {
            let chunk = self.buf.split().freeze();
            self.send(chunk)?;
            self.buf.reserve(CHUNK);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn receiver_stream(rx: mpsc::Receiver<Chunk>) -> ByteStream {
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Box::pin(tokio_util::io::StreamReader::new(stream))
}

/// Progress of a running operation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProgressEvent {
    /// `create`, `verify` or `restore`.
    pub operation: String,
    /// The backup id.
    pub backup: String,
    /// The object being processed.
    pub object: String,
    /// Uncompressed bytes processed so far in this object.
    pub raw_bytes: u64,
    /// Seconds since the operation started.
    pub elapsed_secs: f64,
    /// Average uncompressed bytes per second.
    pub bytes_per_sec: f64,
    /// True on the last event of an object.
    pub done: bool,
}

/// Receives progress events (for a progress bar); called from worker threads.
pub type ProgressSink = Arc<dyn Fn(&ProgressEvent) + Send + Sync>;

/// Builds progress events for one object.
pub(crate) struct Ticker {
    sink: Option<ProgressSink>,
    operation: &'static str,
    backup: String,
    object: String,
    started: Instant,
}

impl Ticker {
    pub(crate) fn new(
        sink: Option<ProgressSink>,
        operation: &'static str,
        backup: &str,
        object: &str,
    ) -> Ticker {
        Ticker {
            sink,
            operation,
            backup: backup.to_string(),
            object: object.to_string(),
            started: Instant::now(),
        }
    }

    pub(crate) fn tick(&self, raw: u64, done: bool) {
        let Some(sink) = &self.sink else { return };
        let elapsed = self.started.elapsed().as_secs_f64();
        sink(&ProgressEvent {
            operation: self.operation.to_string(),
            backup: self.backup.clone(),
            object: self.object.clone(),
            raw_bytes: raw,
            elapsed_secs: elapsed,
            bytes_per_sec: if elapsed > 0.0 {
                raw as f64 / elapsed
            } else {
                0.0
            },
            done,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        let mut i = 0u64;
        while v.len() < n {
            v.extend_from_slice(
                format!("user {i} likes rust and postgres {}\n", i * 7919 % 1013).as_bytes(),
            );
            i += 1;
        }
        v.truncate(n);
        v
    }

    fn roundtrip(algo: CompressionAlgo, enc: &EncryptionOptions) {
        let data = text(3 << 20);
        let comp = CompressionOptions {
            algorithm: algo,
            level: None,
            threads: 2,
        };
        let e = enc.encryptor().unwrap();
        let mut stored = Vec::new();
        let d = encode(
            &mut &data[..],
            &comp,
            e.as_ref(),
            &mut stored,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(d.raw_size, data.len() as u64);
        assert_eq!(d.stored_size, stored.len() as u64);
        assert_eq!(d.raw_sha256, hex::encode(Sha256::digest(&data)));
        assert_eq!(d.stored_sha256, hex::encode(Sha256::digest(&stored)));
        let keys = enc.decryptor().unwrap();
        let mut back = Vec::new();
        let d2 = decode(
            &mut &stored[..],
            algo,
            e.is_some(),
            &keys,
            &mut back,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(back, data);
        assert_eq!(d2, d);
        // A flipped byte in the middle is caught (by age's tag, the codec, or the hash).
        let mut bad = stored.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        let mut sink = Vec::new();
        match decode(
            &mut &bad[..],
            algo,
            e.is_some(),
            &keys,
            &mut sink,
            &mut |_, _| {},
        ) {
            Err(_) => {}
            Ok(d3) => assert_ne!(d3.stored_sha256, d.stored_sha256),
        }
    }

    #[test]
    fn every_codec_round_trips_with_and_without_age() {
        let id = age::x25519::Identity::generate();
        let dir = tempfile::tempdir().unwrap();
        let idfile = dir.path().join("key.txt");
        {
            use age::secrecy::ExposeSecret;
            std::fs::write(&idfile, id.to_string().expose_secret()).unwrap();
        }
        let enc = EncryptionOptions {
            recipients: vec![id.to_public().to_string()],
            identity: Some(SecretRef::File { file: idfile }),
            ..Default::default()
        };
        for algo in [
            CompressionAlgo::Zstd,
            CompressionAlgo::Gzip,
            CompressionAlgo::None,
        ] {
            roundtrip(algo, &EncryptionOptions::default());
            roundtrip(algo, &enc);
        }
    }

    #[test]
    fn wrong_key_and_missing_key_fail_as_decrypt_errors() {
        let right = age::x25519::Identity::generate();
        let wrong = age::x25519::Identity::generate();
        let dir = tempfile::tempdir().unwrap();
        let idfile = dir.path().join("wrong.txt");
        {
            use age::secrecy::ExposeSecret;
            std::fs::write(&idfile, wrong.to_string().expose_secret()).unwrap();
        }
        let enc = EncryptionOptions {
            recipients: vec![right.to_public().to_string()],
            ..Default::default()
        };
        let e = enc.encryptor().unwrap().unwrap();
        let mut stored = Vec::new();
        encode(
            &mut &b"secret rows"[..],
            &CompressionOptions::default(),
            Some(&e),
            &mut stored,
            &mut |_, _| {},
        )
        .unwrap();
        let wrong_keys = EncryptionOptions {
            identity: Some(SecretRef::File { file: idfile }),
            ..Default::default()
        }
        .decryptor()
        .unwrap();
        let mut out = Vec::new();
        let r = decode(
            &mut &stored[..],
            CompressionAlgo::Zstd,
            true,
            &wrong_keys,
            &mut out,
            &mut |_, _| {},
        );
        assert!(matches!(r, Err(DecodeError::Decrypt(_))), "{r:?}");
        let r = decode(
            &mut &stored[..],
            CompressionAlgo::Zstd,
            true,
            &Decrypt::default(),
            &mut out,
            &mut |_, _| {},
        );
        assert!(matches!(r, Err(DecodeError::Decrypt(_))), "{r:?}");
        assert!(out.is_empty());
    }

    #[test]
    fn passphrase_from_env_round_trips() {
        // SAFETY of the test: a variable name unique to this test.
        let var = "TEJ_BACKUP_TEST_PASSPHRASE_PIPELINE";
        let enc = EncryptionOptions {
            passphrase: Some(SecretRef::File {
                file: {
                    let dir = tempfile::tempdir().unwrap().keep();
                    let p = dir.join(var);
                    std::fs::write(&p, "correct horse battery staple\n").unwrap();
                    p
                },
            }),
            scrypt_work_factor: Some(10),
            ..Default::default()
        };
        let e = enc.encryptor().unwrap().unwrap();
        assert!(e.info().passphrase);
        let mut stored = Vec::new();
        encode(
            &mut &b"rows"[..],
            &CompressionOptions::default(),
            Some(&e),
            &mut stored,
            &mut |_, _| {},
        )
        .unwrap();
        let mut out = Vec::new();
        decode(
            &mut &stored[..],
            CompressionAlgo::Zstd,
            true,
            &enc.decryptor().unwrap(),
            &mut out,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(out, b"rows");
    }

    #[test]
    fn a_passphrase_is_derived_once_per_process_for_many_objects() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pass");
        std::fs::write(&file, "once per process, many objects\n").unwrap();
        let enc = EncryptionOptions {
            passphrase: Some(SecretRef::File { file }),
            scrypt_work_factor: Some(10),
            ..Default::default()
        };
        let mut objects = Vec::new();
        for i in 0..12u32 {
            // A fresh encryptor per object, as every `tej wal push` of one process makes.
            let e = enc.encryptor().unwrap().unwrap();
            let mut stored = Vec::new();
            encode(
                &mut format!("object {i}").as_bytes(),
                &CompressionOptions::default(),
                Some(&e),
                &mut stored,
                &mut |_, _| {},
            )
            .unwrap();
            // No per-object scrypt stanza: nothing to run scrypt for when reading it back.
            assert!(!age::Decryptor::new(&stored[..]).unwrap().is_scrypt());
            objects.push(stored);
        }
        for (i, stored) in objects.iter().enumerate() {
            let mut out = Vec::new();
            decode(
                &mut &stored[..],
                CompressionAlgo::Zstd,
                true,
                &enc.decryptor().unwrap(),
                &mut out,
                &mut |_, _| {},
            )
            .unwrap();
            assert_eq!(out, format!("object {i}").as_bytes());
        }
        let secret = enc.passphrase.as_ref().unwrap().resolve().unwrap();
        assert_eq!(passphrase_derivations(&secret, 10), 1);
    }

    #[test]
    fn objects_encrypted_with_a_per_object_scrypt_stanza_stay_readable() {
        // What tej wrote before passphrases were derived once: age's own scrypt recipient.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pass");
        std::fs::write(&file, "an older repository").unwrap();
        let mut rec = age::scrypt::Recipient::new(SecretString::from("an older repository"));
        rec.set_work_factor(10);
        let e =
            age::Encryptor::with_recipients(std::iter::once(&rec as &dyn age::Recipient)).unwrap();
        let mut stored = Vec::new();
        let mut w = e.wrap_output(&mut stored).unwrap();
        w.write_all(b"old rows").unwrap();
        w.finish().unwrap();
        let keys = EncryptionOptions {
            passphrase: Some(SecretRef::File { file }),
            scrypt_work_factor: Some(10),
            ..Default::default()
        }
        .decryptor()
        .unwrap();
        let mut out = Vec::new();
        decode(
            &mut &stored[..],
            CompressionAlgo::None,
            true,
            &keys,
            &mut out,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(out, b"old rows");
    }

    #[test]
    fn the_raw_hash_is_optional_and_the_stored_hash_is_not() {
        let data = text(1 << 20);
        let comp = CompressionOptions::default();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let with = encode_with(&mut &data[..], &comp, None, true, &mut a, &mut |_, _| {}).unwrap();
        let without =
            encode_with(&mut &data[..], &comp, None, false, &mut b, &mut |_, _| {}).unwrap();
        assert_eq!(with.raw_sha256, hex::encode(Sha256::digest(&data)));
        assert!(without.raw_sha256.is_empty());
        assert_eq!(without.raw_size, data.len() as u64);
        assert_eq!(without.stored_sha256, hex::encode(Sha256::digest(&b)));
        assert_eq!(a, b, "the stored bytes do not depend on the raw hash");
    }

    #[test]
    fn levels_are_checked() {
        let bad = CompressionOptions {
            algorithm: CompressionAlgo::Gzip,
            level: Some(12),
            threads: 1,
        };
        assert!(bad.info().is_err());
        assert_eq!(CompressionOptions::default().info().unwrap().level, 3);
    }
}

//! A repository under a bucket and prefix on S3 or an S3-compatible server, on aws-sdk-s3.
//!
//! - Objects smaller than the part size go up with one `PutObject`; larger ones stream as a
//!   multipart upload of `part_size` parts (default 16 MiB, at least 5 MiB), with at most two
//!   parts in memory (one uploading while the next is read). A failed upload is aborted.
//! - Every request is retried by [`tej_core::retry()`] on 5xx, `SlowDown`, throttling,
//!   timeouts and connection failures (the SDK's own retries are off, so attempts are not
//!   multiplied); each part is retried on its own.
//! - Checksums are computed and validated only where S3 requires them
//!   (`WhenRequired`), which S3-compatible servers accept.
//! - `if_not_exists`: a `HeadObject` first (so a large upload is not sent in vain), then the
//!   `PutObject` or `CompleteMultipartUpload` carries `If-None-Match: *`, which S3 and most
//!   compatible servers enforce atomically (`412` becomes [`BackupError::ObjectExists`]).
//!   A server that answers `501 NotImplemented` to the header is asked again without it and
//!   the store falls back to head-then-put for its lifetime; a server that silently ignores
//!   the header gets head-then-put too. Head-then-put leaves a small race window between the
//!   check and the write.
//! - `cleanup_incomplete` lists unfinished multipart uploads under the prefix
//!   (`ListMultipartUploads`) and aborts those started before the cutoff whose newest part
//!   (`ListParts`) is older than the cutoff too: an upload still receiving parts is left to
//!   its owner.

use super::{BackupError, ByteStream, ObjectKey, ObjectMeta, ObjectStore, PutOptions, PutResult};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tej_core::{Backoff, Retryable, Secret, retry};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

/// Smallest part S3 accepts (except the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Largest part S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// Default part size.
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
/// Most parts in one multipart upload.
const MAX_PARTS: i32 = 10_000;
/// Parts uploading at once.
const MAX_PARTS_IN_FLIGHT: usize = 2;

/// A bucket and key prefix: `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Location {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix, empty or ending with `/`.
    pub prefix: String,
}

impl S3Location {
    /// A location; `prefix` is normalized to end with `/` (or be empty).
    pub fn new(bucket: impl Into<String>, prefix: &str) -> Result<S3Location, BackupError> {
        let bucket = bucket.into();
        let trimmed = prefix.trim_matches('/');
        let bad_bucket = bucket.is_empty()
            || bucket.len() > 63
            || !bucket.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_')
            });
        if bad_bucket {
            return Err(BackupError::Storage {
                repo: format!("s3://{bucket}/{trimmed}"),
                reason: "invalid bucket name".into(),
            });
        }
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            // The prefix must itself be a valid key, so keys below it stay valid.
            ObjectKey::new(trimmed)?;
            format!("{trimmed}/")
        };
        Ok(S3Location { bucket, prefix })
    }

    /// Parses `s3://bucket` or `s3://bucket/some/prefix`.
    pub fn parse(url: &str) -> Result<S3Location, BackupError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| BackupError::Storage {
                repo: url.to_string(),
                reason: "not an s3:// URL".into(),
            })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        S3Location::new(bucket, prefix)
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "s3://{}/{}",
            self.bucket,
            self.prefix.trim_end_matches('/')
        )
    }
}

/// How to reach S3. Fields left `None` come from the AWS SDK's usual environment and
/// profiles (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, ...).
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Endpoint URL of an S3-compatible server (`http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    /// Region (default: from the environment, else `us-east-1`).
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket` rather than `bucket.endpoint`.
    pub force_path_style: bool,
    /// Access key id; used together with `secret_key`.
    pub access_key: Option<String>,
    /// Secret access key.
    pub secret_key: Option<Secret>,
    /// Multipart part size in bytes (5 MiB to 5 GiB; default 16 MiB).
    pub part_size: u64,
    /// Attempts per request, including the first (default 5).
    pub max_attempts: u32,
    /// Delay before the first retry; later ones double, up to 10 s (default 200 ms).
    pub retry_initial_delay: Duration,
    /// Keys per `ListObjectsV2` page (default: the server's, 1000 on S3).
    pub list_page_size: Option<u32>,
    /// Time allowed to connect (default 10 s).
    pub connect_timeout: Duration,
    /// Time allowed for one attempt of a request, up to the response headers (default 300 s).
    pub attempt_timeout: Duration,
    /// Send `If-None-Match: *` for `if_not_exists` puts (default true; see the module docs).
    pub conditional_writes: bool,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: None,
            region: None,
            force_path_style: false,
            access_key: None,
            secret_key: None,
            part_size: DEFAULT_PART_SIZE,
            max_attempts: 5,
            retry_initial_delay: Duration::from_millis(200),
            list_page_size: None,
            connect_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(300),
            conditional_writes: true,
        }
    }
}

impl S3Options {
    /// Defaults, everything else from the AWS SDK's environment. Path-style addressing is
    /// on when a custom endpoint is set (`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`), as
    /// most S3-compatible servers need; `TEJ_S3_FORCE_PATH_STYLE=true|false` overrides it.
    pub fn from_env() -> S3Options {
        S3Options::from_vars(|name| std::env::var(name).ok())
    }

    /// [`S3Options::from_env`] reading variables through `var`.
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> S3Options {
        let custom_endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .iter()
            .any(|v| var(v).is_some_and(|x| !x.is_empty()));
        let force_path_style = match var("TEJ_S3_FORCE_PATH_STYLE").as_deref() {
            Some("true" | "1" | "yes") => true,
            Some("false" | "0" | "no") => false,
            _ => custom_endpoint,
        };
        S3Options {
            force_path_style,
            ..S3Options::default()
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            max_attempts: self.max_attempts,
            initial: self.retry_initial_delay,
            max_delay: Duration::from_secs(10),
            factor: 2.0,
        }
    }
}

/// A repository in an S3 bucket under a prefix (see the module docs for the behaviour).
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    location: S3Location,
    name: String,
    part_size: u64,
    page_size: Option<i32>,
    backoff: Backoff,
    /// False once the server refused `If-None-Match`.
    conditional: AtomicBool,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.inner.location)
            .field("part_size", &self.inner.part_size)
            .finish_non_exhaustive()
    }
}

/// A failed request: the mapped error plus what the caller may special-case.
#[derive(Debug)]
struct Failure {
    status: Option<u16>,
    code: Option<String>,
    error: BackupError,
}

impl Retryable for Failure {
    fn is_retryable(&self) -> bool {
        self.error.is_retryable()
    }
}

impl From<Failure> for BackupError {
    fn from(f: Failure) -> BackupError {
        f.error
    }
}

fn timestamp(t: &aws_smithy_types::DateTime) -> Option<jiff::Timestamp> {
    jiff::Timestamp::new(t.secs(), i32::try_from(t.subsec_nanos()).ok()?).ok()
}

impl S3Store {
    /// Builds a client for `location` with `opts` (no request is sent yet).
    pub async fn connect(location: S3Location, opts: S3Options) -> Result<S3Store, BackupError> {
        use aws_sdk_s3::config::{
            BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
            ResponseChecksumValidation,
        };
        let name = location.to_string();
        let invalid = |reason: String| BackupError::Storage {
            repo: name.clone(),
            reason,
        };
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&opts.part_size) {
            return Err(invalid(format!(
                "part size {} is outside 5 MiB..5 GiB",
                opts.part_size
            )));
        }
        if opts.max_attempts == 0 {
            return Err(invalid("max_attempts must be at least 1".into()));
        }
        let page_size = match opts.list_page_size {
            None => None,
            Some(n) if (1..=1000).contains(&n) => i32::try_from(n).ok(),
            Some(n) => return Err(invalid(format!("list page size {n} is outside 1..1000"))),
        };
        // HTTPS over rustls with ring (the workspace's one crypto provider) and the system's
        // trust store.
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https)
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
            .timeout_config(
                aws_smithy_types::timeout::TimeoutConfig::builder()
                    .connect_timeout(opts.connect_timeout)
                    .operation_attempt_timeout(opts.attempt_timeout)
                    .build(),
            );
        if let Some(region) = &opts.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &opts.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        match (&opts.access_key, &opts.secret_key) {
            (Some(ak), Some(sk)) => {
                loader = loader.credentials_provider(Credentials::new(
                    ak.clone(),
                    sk.expose().to_string(),
                    None,
                    None,
                    "tej",
                ));
            }
            (None, None) => {}
            _ => {
                return Err(invalid(
                    "access key and secret key must be given together".into(),
                ));
            }
        }
        let sdk = loader.load().await;
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(opts.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if sdk.region().is_none() {
            conf = conf.region(Region::new("us-east-1"));
        }
        let client = Client::from_conf(conf.build());
        Ok(S3Store {
            inner: Arc::new(Inner {
                client,
                location,
                name,
                part_size: opts.part_size,
                page_size,
                backoff: opts.backoff(),
                conditional: AtomicBool::new(opts.conditional_writes),
            }),
        })
    }

    /// The bucket and prefix.
    pub fn location(&self) -> &S3Location {
        &self.inner.location
    }

    /// The multipart part size in bytes.
    pub fn part_size(&self) -> u64 {
        self.inner.part_size
    }
}

impl Inner {
    fn classify<E>(
        &self,
        what: &str,
        key: Option<&str>,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_owned);
        let detail = match (&code, err.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            _ => DisplayErrorContext(&err).to_string(),
        };
        let detail = match status {
            Some(s) => format!("{what}: HTTP {s}: {detail}"),
            None => format!("{what}: {detail}"),
        };
        let repo = self.name.clone();
        let transient = matches!(
            err,
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)
        );
        let code_is = |c: &str| code.as_deref() == Some(c);
        let error = if transient
            || status.is_some_and(|s| s >= 500 || s == 429)
            || [
                "SlowDown",
                "RequestTimeout",
                "InternalError",
                "ServiceUnavailable",
                "Throttling",
                "ThrottlingException",
                "RequestTimeTooSkewed",
            ]
            .iter()
            .any(|c| code_is(c))
        {
            if status == Some(501) {
                BackupError::Storage {
                    repo,
                    reason: detail,
                }
            } else {
                BackupError::Unavailable {
                    repo,
                    reason: detail,
                }
            }
        } else if code_is("NoSuchBucket") {
            BackupError::Storage {
                repo,
                reason: format!("bucket {} does not exist ({detail})", self.location.bucket),
            }
        } else if let (Some(key), true) = (key, code_is("NoSuchKey") || status == Some(404)) {
            BackupError::ObjectNotFound {
                repo,
                key: key.to_string(),
            }
        } else if status == Some(403)
            || [
                "AccessDenied",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "ExpiredToken",
                "InvalidToken",
            ]
            .iter()
            .any(|c| code_is(c))
        {
            BackupError::AccessDenied {
                repo,
                reason: detail,
            }
        } else {
            BackupError::Storage {
                repo,
                reason: detail,
            }
        };
        Failure {
            status,
            code,
            error,
        }
    }

    /// Sends a request built by `send`, retrying retryable failures.
    async fn send<T, E, F, Fut>(
        &self,
        what: &str,
        key: Option<&str>,
        mut send: F,
    ) -> Result<T, Failure>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>>,
    {
        retry(
            self.backoff,
            |_| {
                let fut = send();
                async move { fut.await.map_err(|e| self.classify(what, key, e)) }
            },
            |attempt, f: &Failure| {
                tracing::warn!(attempt, repo = %self.name, error = %f.error, "S3 request failed; retrying");
            },
        )
        .await
    }

    fn read_error(&self, key: &ObjectKey, e: std::io::Error) -> BackupError {
        BackupError::Storage {
            repo: self.name.clone(),
            reason: format!("reading the data for {key}: {e}"),
        }
    }

    /// Reads up to `part_size` bytes (less only at the end of the stream); `expect` is the
    /// expected size, when known, so small objects do not reserve a whole part.
    async fn read_part(
        &self,
        body: &mut ByteStream,
        key: &ObjectKey,
        expect: Option<u64>,
    ) -> Result<Bytes, BackupError> {
        let limit = self.part_size as usize;
        let reserve = expect.map_or(limit, |e| usize::try_from(e).unwrap_or(limit).min(limit));
        let mut buf = BytesMut::with_capacity(reserve);
        while buf.len() < limit {
            let want = (limit - buf.len()) as u64;
            let n = (&mut *body)
                .take(want)
                .read_buf(&mut buf)
                .await
                .map_err(|e| self.read_error(key, e))?;
            if n == 0 {
                break;
            }
        }
        Ok(buf.freeze())
    }

    fn already_exists(&self, key: &ObjectKey) -> BackupError {
        BackupError::ObjectExists {
            repo: self.name.clone(),
            key: key.to_string(),
        }
    }

    fn refused_condition(f: &Failure) -> bool {
        f.status == Some(501) || f.code.as_deref() == Some("NotImplemented")
    }

    async fn put_single(
        &self,
        key: &ObjectKey,
        full: &str,
        data: Bytes,
        no_replace: bool,
    ) -> Result<PutResult, BackupError> {
        let size = data.len() as u64;
        loop {
            let conditional = no_replace && self.conditional.load(Ordering::SeqCst);
            let r = self
                .send("PutObject", Some(key.as_str()), || {
                    let mut req = self
                        .client
                        .put_object()
                        .bucket(&self.location.bucket)
                        .key(full)
                        .content_length(size as i64)
                        .body(aws_sdk_s3::primitives::ByteStream::from(data.clone()));
                    if conditional {
                        req = req.if_none_match("*");
                    }
                    req.send()
                })
                .await;
            return match r {
                Ok(_) => Ok(PutResult { size }),
                Err(f) if conditional && f.status == Some(412) => Err(self.already_exists(key)),
                Err(f) if conditional && Self::refused_condition(&f) => {
                    tracing::warn!(repo = %self.name, "the server refused If-None-Match; falling back to head-then-put");
                    self.conditional.store(false, Ordering::SeqCst);
                    continue;
                }
                Err(f) => Err(f.error),
            };
        }
    }

    async fn upload_part(
        self: Arc<Self>,
        full: String,
        upload_id: String,
        number: i32,
        data: Bytes,
    ) -> Result<CompletedPart, BackupError> {
        let out = self
            .send("UploadPart", None, || {
                self.client
                    .upload_part()
                    .bucket(&self.location.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .content_length(data.len() as i64)
                    .body(aws_sdk_s3::primitives::ByteStream::from(data.clone()))
                    .send()
            })
            .await?;
        let etag = out.e_tag().ok_or_else(|| BackupError::Storage {
            repo: self.name.clone(),
            reason: format!("UploadPart {number} of {full}: no ETag in the reply"),
        })?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .e_tag(etag)
            .build())
    }

    /// Uploads the parts (`first` already read) and returns them with the total size.
    async fn upload_parts(
        self: &Arc<Self>,
        key: &ObjectKey,
        full: &str,
        upload_id: &str,
        first: Bytes,
        body: &mut ByteStream,
    ) -> Result<(Vec<CompletedPart>, u64), BackupError> {
        let mut set: JoinSet<Result<CompletedPart, BackupError>> = JoinSet::new();
        let result = async {
            let mut parts = Vec::new();
            let mut pending = Some(first);
            let mut number: i32 = 0;
            let mut total = 0u64;
            loop {
                while set.len() >= MAX_PARTS_IN_FLIGHT {
                    parts.push(self.joined(set.join_next().await)?);
                }
                let data = match pending.take() {
                    Some(d) => d,
                    None => self.read_part(body, key, None).await?,
                };
                if data.is_empty() {
                    break;
                }
                number += 1;
                if number > MAX_PARTS {
                    return Err(BackupError::Storage {
                        repo: self.name.clone(),
                        reason: format!("{key}: more than {MAX_PARTS} parts; raise the part size"),
                    });
                }
                let last = (data.len() as u64) < self.part_size;
                total += data.len() as u64;
                set.spawn(self.clone().upload_part(
                    full.to_string(),
                    upload_id.to_string(),
                    number,
                    data,
                ));
                if last {
                    break;
                }
            }
            while let Some(done) = set.join_next().await {
                parts.push(self.joined(Some(done))?);
            }
            parts.sort_by_key(|p| p.part_number());
            Ok((parts, total))
        }
        .await;
        if result.is_err() {
            // Cancel the parts still uploading before the upload is aborted.
            set.shutdown().await;
        }
        result
    }

    fn joined(
        &self,
        r: Option<Result<Result<CompletedPart, BackupError>, tokio::task::JoinError>>,
    ) -> Result<CompletedPart, BackupError> {
        match r {
            Some(Ok(part)) => part,
            Some(Err(e)) => Err(BackupError::Storage {
                repo: self.name.clone(),
                reason: format!("part upload task failed: {e}"),
            }),
            None => Err(BackupError::Storage {
                repo: self.name.clone(),
                reason: "part upload task vanished".into(),
            }),
        }
    }

    async fn complete(
        &self,
        key: &ObjectKey,
        full: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        total: u64,
        no_replace: bool,
    ) -> Result<(), BackupError> {
        let upload = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        loop {
            let conditional = no_replace && self.conditional.load(Ordering::SeqCst);
            let mut attempts = 0u32;
            let r = self
                .send("CompleteMultipartUpload", None, || {
                    attempts += 1;
                    let mut req = self
                        .client
                        .complete_multipart_upload()
                        .bucket(&self.location.bucket)
                        .key(full)
                        .upload_id(upload_id)
                        .multipart_upload(upload.clone());
                    if conditional {
                        req = req.if_none_match("*");
                    }
                    req.send()
                })
                .await;
            return match r {
                Ok(_) => Ok(()),
                Err(f) if conditional && f.status == Some(412) => Err(self.already_exists(key)),
                Err(f) if conditional && Self::refused_condition(&f) => {
                    tracing::warn!(repo = %self.name, "the server refused If-None-Match; falling back to head-then-put");
                    self.conditional.store(false, Ordering::SeqCst);
                    continue;
                }
                // A retried completion whose first attempt succeeded finds the upload gone.
                Err(f) if attempts > 1 && f.code.as_deref() == Some("NoSuchUpload") => {
                    match self.head(key, full).await {
                        Ok(Some(meta)) if meta.size == total => Ok(()),
                        _ => Err(f.error),
                    }
                }
                Err(f) => Err(f.error),
            };
        }
    }

    async fn abort(&self, full: &str, upload_id: &str) -> Result<(), BackupError> {
        let r = self
            .send("AbortMultipartUpload", None, || {
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.location.bucket)
                    .key(full)
                    .upload_id(upload_id)
                    .send()
            })
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(f) if f.code.as_deref() == Some("NoSuchUpload") => Ok(()),
            Err(f) => Err(f.error),
        }
    }

    async fn put_multipart(
        self: &Arc<Self>,
        key: &ObjectKey,
        full: &str,
        first: Bytes,
        body: &mut ByteStream,
        no_replace: bool,
    ) -> Result<PutResult, BackupError> {
        let created = self
            .send("CreateMultipartUpload", Some(key.as_str()), || {
                self.client
                    .create_multipart_upload()
                    .bucket(&self.location.bucket)
                    .key(full)
                    .send()
            })
            .await?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| BackupError::Storage {
                repo: self.name.clone(),
                reason: format!("CreateMultipartUpload for {key}: no upload id in the reply"),
            })?
            .to_string();
        // If this future is dropped mid-upload (cancelled), abort the upload in the background.
        let mut guard = AbortOnDrop {
            inner: Some(self.clone()),
            full: full.to_string(),
            upload_id: upload_id.clone(),
        };
        let result = async {
            let (parts, total) = self
                .upload_parts(key, full, &upload_id, first, body)
                .await?;
            self.complete(key, full, &upload_id, parts, total, no_replace)
                .await?;
            Ok(PutResult { size: total })
        }
        .await;
        guard.inner = None;
        if let Err(e) = &result {
            tracing::warn!(repo = %self.name, %key, error = %e, "multipart upload failed; aborting it");
            if let Err(abort_err) = self.abort(full, &upload_id).await {
                tracing::warn!(repo = %self.name, %key, error = %abort_err, "could not abort the multipart upload; cleanup_incomplete will retry");
            }
        }
        result
    }

    async fn head(&self, key: &ObjectKey, full: &str) -> Result<Option<ObjectMeta>, BackupError> {
        let r = self
            .send("HeadObject", Some(key.as_str()), || {
                self.client
                    .head_object()
                    .bucket(&self.location.bucket)
                    .key(full)
                    .send()
            })
            .await;
        match r {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.clone(),
                size: out
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                last_modified: out.last_modified().and_then(timestamp),
            })),
            Err(Failure {
                error: BackupError::ObjectNotFound { .. },
                ..
            }) => Ok(None),
            Err(f) => Err(f.error),
        }
    }
}

/// Aborts a multipart upload whose put was cancelled before it finished.
struct AbortOnDrop {
    inner: Option<Arc<Inner>>,
    full: String,
    upload_id: String,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (full, upload_id) = (
            std::mem::take(&mut self.full),
            std::mem::take(&mut self.upload_id),
        );
        handle.spawn(async move {
            if let Err(e) = inner.abort(&full, &upload_id).await {
                tracing::warn!(repo = %inner.name, key = full, error = %e, "could not abort a cancelled multipart upload");
            }
        });
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        self.inner.name.clone()
    }

    async fn put(
        &self,
        key: &ObjectKey,
        mut body: ByteStream,
        opts: PutOptions,
    ) -> Result<PutResult, BackupError> {
        let inner = &self.inner;
        let full = inner.location.full_key(key.as_str());
        if opts.if_not_exists && inner.head(key, &full).await?.is_some() {
            return Err(inner.already_exists(key));
        }
        let first = inner.read_part(&mut body, key, opts.size_hint).await?;
        let small =
            (first.len() as u64) < inner.part_size || opts.size_hint == Some(first.len() as u64);
        if small {
            inner
                .put_single(key, &full, first, opts.if_not_exists)
                .await
        } else {
            inner
                .put_multipart(key, &full, first, &mut body, opts.if_not_exists)
                .await
        }
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackupError> {
        let inner = &self.inner;
        let full = inner.location.full_key(key.as_str());
        let header = match &range {
            None => None,
            Some(r) if r.start >= r.end => {
                // Nothing to read; still report a missing object.
                return match inner.head(key, &full).await? {
                    Some(_) => Ok(super::bytes_stream(Bytes::new())),
                    None => Err(BackupError::ObjectNotFound {
                        repo: inner.name.clone(),
                        key: key.to_string(),
                    }),
                };
            }
            // No object is that large: read to the end.
            Some(r) if r.end > i64::MAX as u64 => Some(format!("bytes={}-", r.start)),
            Some(r) => Some(format!("bytes={}-{}", r.start, r.end - 1)),
        };
        let r = inner
            .send("GetObject", Some(key.as_str()), || {
                inner
                    .client
                    .get_object()
                    .bucket(&inner.location.bucket)
                    .key(&full)
                    .set_range(header.clone())
                    .send()
            })
            .await;
        match r {
            Ok(out) => Ok(Box::pin(out.body.into_async_read())),
            // The range starts at or past the end of an existing object.
            Err(f) if f.status == Some(416) => Ok(super::bytes_stream(Bytes::new())),
            Err(f) => Err(f.error),
        }
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, BackupError> {
        let full = self.inner.location.full_key(key.as_str());
        self.inner.head(key, &full).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BackupError> {
        let inner = &self.inner;
        let full_prefix = inner.location.full_key(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = inner
                .send("ListObjectsV2", None, || {
                    inner
                        .client
                        .list_objects_v2()
                        .bucket(&inner.location.bucket)
                        .prefix(&full_prefix)
                        .set_max_keys(inner.page_size)
                        .set_continuation_token(token.clone())
                        .send()
                })
                .await?;
            for obj in page.contents() {
                let Some(full) = obj.key() else { continue };
                let Some(rel) = full.strip_prefix(&inner.location.prefix) else {
                    continue;
                };
                match ObjectKey::new(rel) {
                    Ok(key) => out.push(ObjectMeta {
                        key,
                        size: obj.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                        last_modified: obj.last_modified().and_then(timestamp),
                    }),
                    Err(_) => tracing::debug!(
                        key = rel,
                        "skipping an object whose name is not a valid key"
                    ),
                }
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(next)) if !next.is_empty() => token = Some(next.to_string()),
                (Some(true), _) => {
                    return Err(BackupError::Storage {
                        repo: inner.name.clone(),
                        reason: "ListObjectsV2: truncated page without a continuation token".into(),
                    });
                }
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackupError> {
        let inner = &self.inner;
        let full = inner.location.full_key(key.as_str());
        let r = inner
            .send("DeleteObject", Some(key.as_str()), || {
                inner
                    .client
                    .delete_object()
                    .bucket(&inner.location.bucket)
                    .key(&full)
                    .send()
            })
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(Failure {
                error: BackupError::ObjectNotFound { .. },
                ..
            }) => Ok(()),
            Err(f) => Err(f.error),
        }
    }

    async fn cleanup_incomplete(&self, older_than: Duration) -> Result<u64, BackupError> {
        let inner = &self.inner;
        let cutoff = jiff::Timestamp::now()
            .checked_sub(
                jiff::SignedDuration::try_from(older_than).unwrap_or(jiff::SignedDuration::MAX),
            )
            .unwrap_or(jiff::Timestamp::MIN);
        let mut stale = Vec::new();
        let mut markers: (Option<String>, Option<String>) = (None, None);
        loop {
            let page = inner
                .send("ListMultipartUploads", None, || {
                    inner
                        .client
                        .list_multipart_uploads()
                        .bucket(&inner.location.bucket)
                        .prefix(&inner.location.prefix)
                        .set_key_marker(markers.0.clone())
                        .set_upload_id_marker(markers.1.clone())
                        .send()
                })
                .await
                .map_err(|f| {
                    if Inner::refused_condition(&f) {
                        BackupError::Storage {
                            repo: inner.name.clone(),
                            reason: "the server does not implement ListMultipartUploads, so unfinished uploads cannot be found".into(),
                        }
                    } else {
                        f.error
                    }
                })?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                let old = upload
                    .initiated()
                    .and_then(timestamp)
                    .is_some_and(|t| t <= cutoff);
                if old {
                    stale.push((key.to_string(), id.to_string()));
                }
            }
            if page.is_truncated() == Some(true) {
                let next = (
                    page.next_key_marker().map(str::to_owned),
                    page.next_upload_id_marker().map(str::to_owned),
                );
                if next.0.is_none() || next == markers {
                    break;
                }
                markers = next;
            } else {
                break;
            }
        }
        let mut removed = 0;
        for (key, id) in stale {
            // An upload still receiving parts has an owner at work (a long dump): only one
            // idle for `older_than` is abandoned.
            match inner.last_part_at(&key, &id).await {
                Ok(Some(t)) if t > cutoff => {
                    tracing::info!(repo = %inner.name, key, "an old multipart upload still receives parts: left to its owner");
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(repo = %inner.name, key, error = %e, "cannot list the parts of a multipart upload: left in place");
                    continue;
                }
            }
            inner.abort(&key, &id).await?;
            tracing::info!(repo = %inner.name, key, "aborted an unfinished multipart upload");
            removed += 1;
        }
        Ok(removed)
    }
}

impl Inner {
    /// When the newest part of multipart upload `id` of `full` was stored (`None`: no
    /// part yet).
    async fn last_part_at(
        &self,
        full: &str,
        id: &str,
    ) -> Result<Option<jiff::Timestamp>, BackupError> {
        let mut newest: Option<jiff::Timestamp> = None;
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .send("ListParts", Some(full), || {
                    self.client
                        .list_parts()
                        .bucket(&self.location.bucket)
                        .key(full)
                        .upload_id(id)
                        .set_part_number_marker(marker.clone())
                        .send()
                })
                .await
                .map_err(|f| f.error)?;
            for part in page.parts() {
                if let Some(t) = part.last_modified().and_then(timestamp) {
                    newest = Some(newest.map_or(t, |n| n.max(t)));
                }
            }
            let next = page.next_part_number_marker().map(str::to_owned);
            if page.is_truncated() != Some(true) || next.is_none() || next == marker {
                break;
            }
            marker = next;
        }
        Ok(newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_normalize() {
        let l = S3Location::parse("s3://backups/skillswap/prod/").unwrap();
        assert_eq!(l.bucket, "backups");
        assert_eq!(l.prefix, "skillswap/prod/");
        assert_eq!(l.to_string(), "s3://backups/skillswap/prod");
        assert_eq!(l.full_key("base/x"), "skillswap/prod/base/x");
        let l = S3Location::parse("s3://backups").unwrap();
        assert_eq!(l.prefix, "");
        assert_eq!(l.full_key("a"), "a");
        for bad in [
            "s3://",
            "s3:///x",
            "s3://Bad_Upper/x",
            "http://b/x",
            "s3://b/a/../c",
        ] {
            assert!(S3Location::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn path_style_follows_a_custom_endpoint_unless_overridden() {
        let with = |vars: &'static [(&'static str, &'static str)]| {
            S3Options::from_vars(|n| {
                vars.iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            })
        };
        assert!(!with(&[]).force_path_style);
        assert!(with(&[("AWS_ENDPOINT_URL", "http://minio:9000")]).force_path_style);
        assert!(with(&[("AWS_ENDPOINT_URL_S3", "http://minio:9000")]).force_path_style);
        assert!(!with(&[("AWS_ENDPOINT_URL", "")]).force_path_style);
        assert!(
            !with(&[
                ("AWS_ENDPOINT_URL", "http://minio:9000"),
                ("TEJ_S3_FORCE_PATH_STYLE", "false")
            ])
            .force_path_style
        );
        assert!(with(&[("TEJ_S3_FORCE_PATH_STYLE", "true")]).force_path_style);
        let o = with(&[]);
        assert_eq!(o.part_size, DEFAULT_PART_SIZE);
        assert!(o.endpoint.is_none() && o.access_key.is_none() && o.secret_key.is_none());
    }

    #[tokio::test]
    async fn options_are_validated_and_secrets_stay_hidden() {
        let loc = S3Location::parse("s3://b/p").unwrap();
        let opts = S3Options {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: Some("us-east-1".into()),
            access_key: Some("AK".into()),
            secret_key: Some(Secret::new("very-secret-value")),
            ..S3Options::default()
        };
        assert!(!format!("{opts:?}").contains("very-secret-value"));
        let small = S3Options {
            part_size: 1 << 20,
            ..opts.clone()
        };
        let err = S3Store::connect(loc.clone(), small).await.unwrap_err();
        assert!(err.to_string().contains("part size"), "{err}");
        let half = S3Options {
            secret_key: None,
            ..opts.clone()
        };
        assert!(S3Store::connect(loc.clone(), half).await.is_err());
        let store = S3Store::connect(loc, opts).await.unwrap();
        assert_eq!(store.part_size(), DEFAULT_PART_SIZE);
        assert!(!format!("{store:?}").contains("very-secret-value"));
    }

    #[tokio::test(start_paused = true)]
    async fn connection_failures_are_retried_then_unavailable() {
        // Nothing listens on port 1: every attempt is refused.
        let store = S3Store::connect(
            S3Location::parse("s3://b/p").unwrap(),
            S3Options {
                endpoint: Some("http://127.0.0.1:1".into()),
                region: Some("us-east-1".into()),
                force_path_style: true,
                access_key: Some("AK".into()),
                secret_key: Some(Secret::new("SK")),
                max_attempts: 3,
                ..S3Options::default()
            },
        )
        .await
        .unwrap();
        let err = store.head(&ObjectKey::new("x").unwrap()).await.unwrap_err();
        assert!(matches!(err, BackupError::Unavailable { .. }), "{err:?}");
        assert!(err.is_retryable());
    }

    /// A scripted HTTP server on 127.0.0.1: answers requests in order with canned
    /// replies and records `METHOD URI` of each request.
    struct FakeS3 {
        endpoint: String,
        seen: Arc<std::sync::Mutex<Vec<String>>>,
    }

    async fn fake_s3(replies: Vec<(u16, &'static str)>) -> FakeS3 {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let replies = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
            replies,
        )));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (log, replies) = (log.clone(), replies.clone());
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut r = BufReader::new(r);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let mut len = 0usize;
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if h == "\r\n" {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':')
                                && k.eq_ignore_ascii_case("content-length")
                            {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0; len];
                        if r.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let request: Vec<&str> = line.split_whitespace().collect();
                        log.lock()
                            .unwrap()
                            .push(format!("{} {}", request[0], request[1]));
                        let (status, text) = replies
                            .lock()
                            .unwrap()
                            .pop_front()
                            .unwrap_or((500, "<Error><Code>InternalError</Code></Error>"));
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/xml\r\nETag: \"e\"\r\nContent-Length: {}\r\n\r\n{text}",
                            text.len()
                        );
                        if w.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeS3 { endpoint, seen }
    }

    async fn store_at(endpoint: &str) -> S3Store {
        store_with_parts(endpoint, DEFAULT_PART_SIZE).await
    }

    async fn store_with_parts(endpoint: &str, part_size: u64) -> S3Store {
        S3Store::connect(
            S3Location::parse("s3://bucket/repo").unwrap(),
            S3Options {
                endpoint: Some(endpoint.to_string()),
                region: Some("us-east-1".into()),
                force_path_style: true,
                access_key: Some("AK".into()),
                secret_key: Some(Secret::new("SK")),
                max_attempts: 3,
                retry_initial_delay: Duration::from_millis(1),
                part_size,
                ..S3Options::default()
            },
        )
        .await
        .unwrap()
    }

    const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";

    #[tokio::test]
    async fn cleanup_pages_through_uploads_and_aborts_the_old_ones() {
        const PAGE1: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Bucket>bucket</Bucket><NextKeyMarker>repo/b</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
<MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
<Upload><Key>repo/a</Key><UploadId>u1</UploadId><Initiated>2020-01-01T00:00:00.000Z</Initiated></Upload>
<Upload><Key>repo/b</Key><UploadId>u2</UploadId><Initiated>2999-01-01T00:00:00.000Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        const PAGE2: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Bucket>bucket</Bucket><MaxUploads>3</MaxUploads><IsTruncated>false</IsTruncated>
<Upload><Key>repo/c/d</Key><UploadId>u3</UploadId><Initiated>2021-06-01T00:00:00.000Z</Initiated></Upload>
<Upload><Key>repo/e</Key><UploadId>u4</UploadId><Initiated>2021-06-01T00:00:00.000Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        fn parts(key: &str, id: &str, last: &str) -> String {
            format!(
                r#"<?xml version="1.0" encoding="UTF-8"?>
<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Bucket>bucket</Bucket><Key>{key}</Key><UploadId>{id}</UploadId><IsTruncated>false</IsTruncated>
<Part><PartNumber>1</PartNumber><LastModified>{last}</LastModified><ETag>"e"</ETag><Size>5</Size></Part>
</ListPartsResult>"#
            )
        }
        // Old, idle: aborted. Old, but a part arrived just now: left to its owner.
        let parts_a: &'static str = parts("repo/a", "u1", "2020-01-01T00:01:00.000Z").leak();
        let parts_c: &'static str = parts("repo/c/d", "u3", "2021-06-01T00:01:00.000Z").leak();
        let parts_e: &'static str = parts("repo/e", "u4", "2999-01-01T00:00:00.000Z").leak();
        let fake = fake_s3(vec![
            (503, SLOW_DOWN),
            (200, PAGE1),
            (200, PAGE2),
            (200, parts_a),
            (204, ""),
            (200, parts_c),
            (500, "<Error><Code>InternalError</Code></Error>"),
            (204, ""),
            (200, parts_e),
        ])
        .await;
        let store = store_at(&fake.endpoint).await;
        let removed = store
            .cleanup_incomplete(Duration::from_secs(86_400))
            .await
            .unwrap();
        assert_eq!(removed, 2);
        let seen = fake.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 9, "{seen:#?}");
        assert!(
            seen[0].starts_with("GET /bucket/?uploads") && seen[0].contains("prefix=repo%2F"),
            "{seen:#?}"
        );
        assert_eq!(seen[0], seen[1], "the SlowDown was retried as is");
        assert!(seen[2].contains("key-marker=repo%2Fb") && seen[2].contains("upload-id-marker=u2"));
        assert!(
            seen[3].starts_with("GET /bucket/repo/a?") && seen[3].contains("uploadId=u1"),
            "{seen:#?}"
        );
        assert_eq!(
            seen[4],
            "DELETE /bucket/repo/a?x-id=AbortMultipartUpload&uploadId=u1"
        );
        assert!(seen[5].starts_with("GET /bucket/repo/c/d?"), "{seen:#?}");
        // The 500 was retried.
        assert_eq!(
            seen[6],
            "DELETE /bucket/repo/c/d?x-id=AbortMultipartUpload&uploadId=u3"
        );
        assert_eq!(seen[7], seen[6]);
        assert!(seen[8].starts_with("GET /bucket/repo/e?"), "{seen:#?}");
    }

    #[tokio::test]
    async fn slow_down_and_5xx_are_retried_then_reported_as_unavailable() {
        let fake = fake_s3(vec![(503, SLOW_DOWN), (500, ""), (200, "")]).await;
        let store = store_at(&fake.endpoint).await;
        let data = crate::storage::put_bytes(&store, &ObjectKey::new("k").unwrap(), "x", false)
            .await
            .unwrap();
        assert_eq!(data.size, 1);
        assert_eq!(fake.seen.lock().unwrap().len(), 3);

        let fake = fake_s3(vec![(503, SLOW_DOWN), (503, SLOW_DOWN), (503, SLOW_DOWN)]).await;
        let store = store_at(&fake.endpoint).await;
        let err = store.list("").await.unwrap_err();
        assert!(matches!(err, BackupError::Unavailable { .. }), "{err:?}");
        assert!(err.to_string().contains("SlowDown"), "{err}");
        assert_eq!(fake.seen.lock().unwrap().len(), 3, "max_attempts is 3");

        // 403 and 404 are final answers.
        let fake = fake_s3(vec![(
            403,
            "<Error><Code>AccessDenied</Code><Message>no</Message></Error>",
        )])
        .await;
        let store = store_at(&fake.endpoint).await;
        let err = store.list("").await.unwrap_err();
        assert!(matches!(err, BackupError::AccessDenied { .. }), "{err:?}");
        assert_eq!(fake.seen.lock().unwrap().len(), 1);
        let fake = fake_s3(vec![(
            404,
            "<Error><Code>NoSuchKey</Code><Message>no</Message></Error>",
        )])
        .await;
        let store = store_at(&fake.endpoint).await;
        let err = store
            .get(&ObjectKey::new("gone").unwrap(), None)
            .await
            .err();
        assert!(
            matches!(err, Some(BackupError::ObjectNotFound { ref key, .. }) if key == "gone"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_multipart_upload_is_aborted() {
        const CREATED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult><Bucket>bucket</Bucket><Key>repo/big</Key><UploadId>up1</UploadId></InitiateMultipartUploadResult>"#;
        let denied = "<Error><Code>AccessDenied</Code><Message>no</Message></Error>";
        // Create, one part ok, the other denied (not retried), then the abort. Both parts
        // are in flight at once, so which of them is denied is up to the scheduler.
        let fake = fake_s3(vec![(200, CREATED), (200, ""), (403, denied), (204, "")]).await;
        let store = store_with_parts(&fake.endpoint, MIN_PART_SIZE).await;
        let body = vec![7u8; MIN_PART_SIZE as usize + 10];
        let err = store
            .put(
                &ObjectKey::new("big").unwrap(),
                crate::storage::bytes_stream(body),
                PutOptions::default(),
            )
            .await;
        let seen = fake.seen.lock().unwrap().clone();
        let err = err.expect_err(&format!("{seen:#?}"));
        assert!(matches!(err, BackupError::AccessDenied { .. }), "{err:?}");
        assert!(
            seen[0].starts_with("POST /bucket/repo/big?uploads"),
            "{seen:#?}"
        );
        assert_eq!(seen.len(), 4, "{seen:#?}");
        assert!(
            seen[3].starts_with("DELETE /bucket/repo/big?") && seen[3].contains("uploadId=up1"),
            "{seen:#?}"
        );
    }
}

//! A repository under a bucket and prefix on S3 or an S3-compatible server, on aws-sdk-s3.
//!
//! - Objects smaller than the part size go up with one `PutObject`; larger ones stream as a
//!   multipart upload of `part_size` parts (default 16 MiB, at least 5 MiB), with at most two
//!   parts in memory (one uploading while the next is read). A failed upload is aborted.
//!   Parts grow with the object so that it fits in S3's 10 000 parts: of one size from the
//!   size hint when the size is known, else doubling every 1 000 parts.
//! - Every request is retried by [`tej_core::retry()`] on 5xx, `SlowDown`, throttling,
//!   timeouts and connection failures, with exponential backoff and full jitter (the SDK's own
//!   retries are off, so attempts are not multiplied); each part is retried on its own. The
//!   attempts and the mode come from the SDK's settings (`AWS_MAX_ATTEMPTS`,
//!   `AWS_RETRY_MODE`, the profile) through [`S3Options::from_env`]; the adaptive mode also
//!   paces the whole store after throttling.
//! - A download that fails or stalls (no byte for [`S3Options::stall_timeout`]) mid-body
//!   asks for the rest again from the next byte, `If-Match` its ETag.
//! - HTTPS is rustls with the ring provider and the system's trust store.
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
/// Parts of one size in an upload of unknown size before the size doubles.
const PARTS_PER_SIZE: i32 = 1_000;

/// The size of part `number` (1-based) of an upload whose parts start at `base` bytes. With
/// the object's size known every part has one size, large enough that the object fits in
/// [`MAX_PARTS`] parts (rounded up to MiB; some S3-compatible servers want equal parts).
/// Without it the size doubles every [`PARTS_PER_SIZE`] parts, so that a stream of unknown
/// length is not capped at `base` × 10 000 (156 GiB at 16 MiB) but reaches S3's 5 TiB object
/// limit; always within [`MIN_PART_SIZE`]..=[`MAX_PART_SIZE`].
fn part_size_for(base: u64, number: i32, size_hint: Option<u64>) -> u64 {
    let size = match size_hint {
        Some(total) => {
            let per_part = total.div_ceil((MAX_PARTS - 1) as u64);
            base.max(per_part.div_ceil(1 << 20) << 20)
        }
        None => {
            let doublings = (number.max(1) - 1) / PARTS_PER_SIZE;
            base.saturating_mul(1u64 << doublings.min(32))
        }
    };
    size.clamp(MIN_PART_SIZE, MAX_PART_SIZE)
}

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
    /// Attempts per request, including the first (default 5; `AWS_MAX_ATTEMPTS` or the
    /// profile's `max_attempts` through [`S3Options::from_env`]).
    pub max_attempts: u32,
    /// How retries are paced (default standard; `AWS_RETRY_MODE` or the profile's
    /// `retry_mode` through [`S3Options::from_env`]).
    pub retry_mode: S3RetryMode,
    /// A download body that delivers no byte for this long is abandoned and the rest of the
    /// object asked for again from where it stopped (default 60 s).
    pub stall_timeout: Duration,
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
            retry_mode: S3RetryMode::Standard,
            stall_timeout: Duration::from_secs(60),
            retry_initial_delay: Duration::from_millis(200),
            list_page_size: None,
            connect_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(300),
            conditional_writes: true,
        }
    }
}

/// How the S3 store paces its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum S3RetryMode {
    /// Exponential backoff with full jitter per request (`standard`; `legacy` reads as this).
    #[default]
    Standard,
    /// Standard, and after a throttling reply every request of the store is paced by a
    /// client-side send rate that drops on throttling and recovers on success (`adaptive`).
    Adaptive,
}

impl std::str::FromStr for S3RetryMode {
    type Err = String;

    fn from_str(s: &str) -> Result<S3RetryMode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "standard" | "legacy" => Ok(S3RetryMode::Standard),
            "adaptive" => Ok(S3RetryMode::Adaptive),
            other => Err(format!(
                "unknown retry mode {other:?} (standard, adaptive or legacy)"
            )),
        }
    }
}

impl S3Options {
    /// Defaults, everything else from the AWS SDK's environment and profile. Path-style
    /// addressing is on when a custom endpoint is set (`AWS_ENDPOINT_URL_S3` or
    /// `AWS_ENDPOINT_URL`), as most S3-compatible servers need; `TEJ_S3_FORCE_PATH_STYLE=
    /// true|false` overrides it. The SDK's retry settings are honoured as the SDK reads them:
    /// `AWS_MAX_ATTEMPTS` and `AWS_RETRY_MODE`, else `max_attempts` and `retry_mode` of the
    /// selected profile (`AWS_PROFILE`, `AWS_CONFIG_FILE`); an invalid value is an error
    /// naming it.
    pub async fn from_env() -> Result<S3Options, BackupError> {
        let env = aws_types::os_shim_internal::Env::real();
        let fs = aws_types::os_shim_internal::Fs::real();
        S3Options::from_sources(&env, &fs).await
    }

    /// [`S3Options::from_env`] over `env` and the files of `fs`.
    async fn from_sources(
        env: &aws_types::os_shim_internal::Env,
        fs: &aws_types::os_shim_internal::Fs,
    ) -> Result<S3Options, BackupError> {
        let var = |name: &str| env.get(name).ok();
        let mut opts = S3Options::from_vars(var);
        let profiles = aws_config::profile::load(fs, env, &Default::default(), None).await;
        // A missing or unreadable profile file is the SDK's business (it reports what it
        // needs from it); only the retry keys are read here.
        let profile_value = |key: &str| {
            let set = profiles.as_ref().ok()?;
            let v = set.get(key)?;
            Some((
                v.to_string(),
                format!("{key} in the AWS profile {:?}", set.selected_profile()),
            ))
        };
        let setting = |env_name: &str, key: &str| {
            var(env_name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (v, env_name.to_string()))
                .or_else(|| profile_value(key))
        };
        if let Some((v, from)) = setting("AWS_MAX_ATTEMPTS", "max_attempts") {
            opts.max_attempts = match v.trim().parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(BackupError::InvalidOptions(format!(
                        "{from} = {v:?}: the number of attempts must be a whole number of at least 1"
                    )));
                }
            };
        }
        if let Some((v, from)) = setting("AWS_RETRY_MODE", "retry_mode") {
            opts.retry_mode = v
                .parse()
                .map_err(|e| BackupError::InvalidOptions(format!("{from}: {e}")))?;
        }
        Ok(opts)
    }

    /// The options [`S3Options::from_env`] takes from variables alone (path style).
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
            jitter: true,
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
    /// The adaptive retry mode's send rate (`None` in standard mode).
    rate: Option<super::throttle::SendRate>,
    /// See [`S3Options::stall_timeout`].
    stall_timeout: Duration,
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

impl Failure {
    /// The server asked the client to slow down.
    fn is_throttling(&self) -> bool {
        matches!(self.status, Some(429 | 503))
            || self.code.as_deref().is_some_and(|c| {
                [
                    "SlowDown",
                    "Throttling",
                    "ThrottlingException",
                    "RequestLimitExceeded",
                    "TooManyRequestsException",
                ]
                .contains(&c)
            })
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
                rate: (opts.retry_mode == S3RetryMode::Adaptive)
                    .then(super::throttle::SendRate::new),
                stall_timeout: opts.stall_timeout,
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
    /// `GetObject` of `range` (an HTTP `Range` value), only if the object still has `etag`
    /// when one is given.
    async fn get_object(
        &self,
        key: &ObjectKey,
        full: &str,
        range: Option<String>,
        etag: Option<&str>,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, Failure> {
        self.send("GetObject", Some(key.as_str()), || {
            self.client
                .get_object()
                .bucket(&self.location.bucket)
                .key(full)
                .set_range(range.clone())
                .set_if_match(etag.map(str::to_owned))
                .send()
        })
        .await
    }

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
                async move {
                    if let Some(rate) = &self.rate {
                        rate.acquire().await;
                    }
                    let r = fut.await.map_err(|e| self.classify(what, key, e));
                    if let Some(rate) = &self.rate {
                        match &r {
                            Err(f) if f.is_throttling() => rate.throttled(),
                            _ => rate.succeeded(),
                        }
                    }
                    r
                }
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

    /// Reads up to `limit` bytes (less only at the end of the stream); `expect` is the
    /// expected size, when known, so small objects do not reserve a whole part.
    async fn read_part(
        &self,
        body: &mut ByteStream,
        key: &ObjectKey,
        expect: Option<u64>,
        limit: u64,
    ) -> Result<Bytes, BackupError> {
        let limit = limit as usize;
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
        size_hint: Option<u64>,
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
                let size = part_size_for(self.part_size, number + 1, size_hint);
                let data = match pending.take() {
                    Some(d) => d,
                    None => self.read_part(body, key, None, size).await?,
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
                let last = (data.len() as u64) < size;
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
        size_hint: Option<u64>,
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
                .upload_parts(key, full, &upload_id, first, body, size_hint)
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

/// Where a download stands: the rest of the object is asked for again from `next` when the
/// body fails or stalls.
struct Download {
    inner: Arc<Inner>,
    key: ObjectKey,
    full: String,
    /// The next byte to deliver (absolute offset in the object).
    next: u64,
    /// One past the last byte of the range asked for, when the server said.
    end: Option<u64>,
    /// The object's ETag: a resumed read must see the same object.
    etag: Option<String>,
    body: Option<aws_sdk_s3::primitives::ByteStream>,
    /// Failed reads since the last byte arrived.
    failures: u32,
}

/// The body of a `GetObject` that survives a dropped connection or a stalled transfer: a
/// read that fails, or delivers nothing for [`S3Options::stall_timeout`], or ends before the
/// announced length, asks for the rest of the object again (`Range` from the next byte,
/// `If-Match` its ETag, so a replaced object is an error, never a splice of two), up to the
/// store's attempts since the last byte that arrived.
fn resuming_body(
    inner: Arc<Inner>,
    key: ObjectKey,
    full: String,
    start: u64,
    first: aws_sdk_s3::operation::get_object::GetObjectOutput,
) -> ByteStream {
    let end = first
        .content_length()
        .and_then(|n| u64::try_from(n).ok())
        .map(|n| start + n);
    let state = Download {
        inner,
        key,
        full,
        next: start,
        end,
        etag: first.e_tag().map(str::to_owned),
        body: Some(first.body),
        failures: 0,
    };
    let chunks = futures::stream::unfold(state, |mut st| async move {
        loop {
            let body = st.body.as_mut()?;
            let problem = match tokio::time::timeout(st.inner.stall_timeout, body.next()).await {
                Ok(Some(Ok(chunk))) => {
                    st.next += chunk.len() as u64;
                    st.failures = 0;
                    return Some((Ok(chunk), st));
                }
                Ok(None) if st.end.is_none_or(|end| st.next >= end) => return None,
                Ok(None) => format!(
                    "the body ended at byte {} of {}",
                    st.next,
                    st.end.unwrap_or_default()
                ),
                Ok(Some(Err(e))) => DisplayErrorContext(&e).to_string(),
                Err(_) => format!("no data for {:?}", st.inner.stall_timeout),
            };
            st.failures += 1;
            let fail = |st: &mut Download, reason: String| {
                st.body = None;
                let e = BackupError::Storage {
                    repo: st.inner.name.clone(),
                    reason: format!("reading {}: {reason}", st.key),
                };
                std::io::Error::other(e)
            };
            if st.failures >= st.inner.backoff.max_attempts {
                let reason = format!("{problem}; gave up after {} attempts", st.failures);
                let e = fail(&mut st, reason);
                return Some((Err(e), st));
            }
            tracing::warn!(repo = %st.inner.name, key = %st.key, at = st.next, "S3 download interrupted ({problem}); asking for the rest");
            tokio::time::sleep(st.inner.backoff.pause(st.failures)).await;
            let range = match st.end {
                Some(end) => format!("bytes={}-{}", st.next, end - 1),
                None => format!("bytes={}-", st.next),
            };
            let etag = st.etag.clone();
            match st
                .inner
                .get_object(&st.key, &st.full, Some(range), etag.as_deref())
                .await
            {
                Ok(out) => st.body = Some(out.body),
                Err(f) => {
                    let reason = if f.status == Some(412) {
                        "the object was replaced while it was being read".to_string()
                    } else {
                        f.error.to_string()
                    };
                    let e = fail(&mut st, reason);
                    return Some((Err(e), st));
                }
            }
        }
    });
    Box::pin(tokio_util::io::StreamReader::new(chunks))
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
        let first_size = part_size_for(inner.part_size, 1, opts.size_hint);
        let first = inner
            .read_part(&mut body, key, opts.size_hint, first_size)
            .await?;
        let small = (first.len() as u64) < first_size || opts.size_hint == Some(first.len() as u64);
        if small {
            inner
                .put_single(key, &full, first, opts.if_not_exists)
                .await
        } else {
            inner
                .put_multipart(
                    key,
                    &full,
                    first,
                    &mut body,
                    opts.if_not_exists,
                    opts.size_hint,
                )
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
        let start = range.as_ref().map_or(0, |r| r.start);
        let r = inner.get_object(key, &full, header, None).await;
        match r {
            Ok(out) => Ok(resuming_body(
                self.inner.clone(),
                key.clone(),
                full,
                start,
                out,
            )),
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
    use crate::storage::throttle;

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
        raw_server(
            replies
                .into_iter()
                .map(|(status, text)| (xml_reply(status, text), Then::Keep))
                .collect(),
        )
        .await
    }

    fn xml_reply(status: u16, text: &str) -> String {
        format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/xml\r\nETag: \"e\"\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )
    }

    async fn store_at(endpoint: &str) -> S3Store {
        store_with_parts(endpoint, DEFAULT_PART_SIZE).await
    }

    /// Options for a fake server at `endpoint`: three quick attempts.
    fn fake_options(endpoint: &str) -> S3Options {
        S3Options {
            endpoint: Some(endpoint.to_string()),
            region: Some("us-east-1".into()),
            force_path_style: true,
            access_key: Some("AK".into()),
            secret_key: Some(Secret::new("SK")),
            max_attempts: 3,
            retry_initial_delay: Duration::from_millis(1),
            ..S3Options::default()
        }
    }

    async fn fake_store(opts: S3Options) -> S3Store {
        S3Store::connect(S3Location::parse("s3://bucket/repo").unwrap(), opts)
            .await
            .unwrap()
    }

    async fn store_with_parts(endpoint: &str, part_size: u64) -> S3Store {
        fake_store(S3Options {
            part_size,
            ..fake_options(endpoint)
        })
        .await
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

    #[test]
    fn part_sizes_grow_so_an_object_is_not_capped_by_the_part_count() {
        const TIB: u64 = 1 << 40;
        // Unknown size: 10 000 parts reach S3's 5 TiB object limit, each within bounds.
        let sizes: Vec<u64> = (1..=MAX_PARTS)
            .map(|n| part_size_for(DEFAULT_PART_SIZE, n, None))
            .collect();
        assert_eq!(sizes[0], DEFAULT_PART_SIZE);
        assert_eq!(sizes[999], DEFAULT_PART_SIZE);
        assert_eq!(sizes[1000], 2 * DEFAULT_PART_SIZE);
        assert!(
            sizes
                .iter()
                .all(|s| (MIN_PART_SIZE..=MAX_PART_SIZE).contains(s))
        );
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]));
        assert!(sizes.iter().sum::<u64>() >= 5 * TIB);
        // Known size: one size for every part, enough for the whole object.
        for total in [1u64, 100 << 20, 156 << 30, 157 << 30, TIB, 5 * TIB] {
            let size = part_size_for(DEFAULT_PART_SIZE, 1, Some(total));
            assert_eq!(size, part_size_for(DEFAULT_PART_SIZE, 9_000, Some(total)));
            assert!(size >= DEFAULT_PART_SIZE && size.is_multiple_of(1 << 20));
            assert!(size * (MAX_PARTS as u64 - 1) >= total, "{total}: {size}");
        }
        assert_eq!(
            part_size_for(DEFAULT_PART_SIZE, 1, Some(100 << 20)),
            DEFAULT_PART_SIZE
        );
    }

    #[tokio::test]
    async fn retry_settings_come_from_the_environment_then_the_profile() {
        use aws_types::os_shim_internal::{Env, Fs};
        let fs = Fs::from_slice(&[(
            "aws-config",
            "[default]\nmax_attempts = 7\nretry_mode = adaptive\n[profile ops]\nmax_attempts = 2\n",
        )]);
        let with = |vars: &[(&str, &str)]| {
            let mut all = vec![("AWS_CONFIG_FILE", "aws-config")];
            all.extend_from_slice(vars);
            Env::from_slice(&all)
        };
        let o = S3Options::from_sources(&with(&[]), &fs).await.unwrap();
        assert_eq!((o.max_attempts, o.retry_mode), (7, S3RetryMode::Adaptive));
        let o = S3Options::from_sources(&with(&[("AWS_PROFILE", "ops")]), &fs)
            .await
            .unwrap();
        assert_eq!((o.max_attempts, o.retry_mode), (2, S3RetryMode::Standard));
        let o = S3Options::from_sources(
            &with(&[("AWS_MAX_ATTEMPTS", "3"), ("AWS_RETRY_MODE", "legacy")]),
            &fs,
        )
        .await
        .unwrap();
        assert_eq!((o.max_attempts, o.retry_mode), (3, S3RetryMode::Standard));
        // Nothing anywhere: tej's defaults.
        let o = S3Options::from_sources(&Env::from_slice(&[]), &Fs::from_slice(&[]))
            .await
            .unwrap();
        assert_eq!((o.max_attempts, o.retry_mode), (5, S3RetryMode::Standard));
        // Invalid values are errors naming where they came from, never a panic.
        for (vars, named) in [
            (vec![("AWS_MAX_ATTEMPTS", "0")], "AWS_MAX_ATTEMPTS"),
            (vec![("AWS_MAX_ATTEMPTS", "many")], "AWS_MAX_ATTEMPTS"),
            (vec![("AWS_RETRY_MODE", "fast")], "AWS_RETRY_MODE"),
        ] {
            let err = S3Options::from_sources(&with(&vars), &fs)
                .await
                .unwrap_err();
            assert!(matches!(err, BackupError::InvalidOptions(_)), "{err:?}");
            assert!(err.to_string().contains(named), "{err}");
        }
        let bad = Fs::from_slice(&[("aws-config", "[default]\nmax_attempts = -1\n")]);
        let err = S3Options::from_sources(&with(&[]), &bad).await.unwrap_err();
        assert!(
            err.to_string().contains("max_attempts in the AWS profile"),
            "{err}"
        );
    }

    /// What the raw server does after writing a reply.
    #[derive(Clone, Copy)]
    enum Then {
        Keep,
        Hang,
        Close,
    }

    /// A scripted HTTP server on 127.0.0.1 that answers requests in order with raw replies
    /// (status line, headers and body as given; a 500 `InternalError` once they run out) and
    /// then keeps the connection, hangs on it or closes it; records `METHOD URI` of each
    /// request and its `Range` and `If-Match` headers.
    async fn raw_server(replies: Vec<(String, Then)>) -> FakeS3 {
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
                        let request: Vec<&str> = line.split_whitespace().collect();
                        let mut seen = format!("{} {}", request[0], request[1]);
                        let mut len = 0usize;
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if h == "\r\n" {
                                break;
                            }
                            let Some((k, v)) = h.split_once(':') else {
                                continue;
                            };
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            } else if k.eq_ignore_ascii_case("range")
                                || k.eq_ignore_ascii_case("if-match")
                            {
                                seen.push_str(&format!(" {}={}", k.to_lowercase(), v.trim()));
                            }
                        }
                        let mut body = vec![0; len];
                        if r.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        log.lock().unwrap().push(seen);
                        let next = replies.lock().unwrap().pop_front();
                        let (reply, then) = next.unwrap_or_else(|| {
                            (
                                xml_reply(500, "<Error><Code>InternalError</Code></Error>"),
                                Then::Keep,
                            )
                        });
                        if w.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                        let _ = w.flush().await;
                        match then {
                            Then::Keep => {}
                            Then::Hang => {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                return;
                            }
                            Then::Close => return,
                        }
                    }
                });
            }
        });
        FakeS3 { endpoint, seen }
    }

    fn object_reply(status: &str, etag: &str, length: usize, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nETag: \"{etag}\"\r\nContent-Length: {length}\r\n\r\n{body}"
        )
    }

    async fn stalling_store(endpoint: &str) -> S3Store {
        fake_store(S3Options {
            stall_timeout: Duration::from_millis(300),
            ..fake_options(endpoint)
        })
        .await
    }

    async fn read_all(store: &S3Store, range: Option<Range<u64>>) -> std::io::Result<Vec<u8>> {
        let mut body = store
            .get(&ObjectKey::new("obj").unwrap(), range)
            .await
            .unwrap();
        let mut out = Vec::new();
        body.read_to_end(&mut out).await.map(|_| out)
    }

    #[tokio::test]
    async fn a_stalled_or_dropped_download_resumes_where_it_stopped() {
        // Stalls after 4 of 10 bytes, then the connection drops after 3 more.
        let fake = raw_server(vec![
            (object_reply("200 OK", "e1", 10, "0123"), Then::Hang),
            (
                object_reply("206 Partial Content", "e1", 6, "456"),
                Then::Close,
            ),
            (
                object_reply("206 Partial Content", "e1", 3, "789"),
                Then::Keep,
            ),
        ])
        .await;
        let store = stalling_store(&fake.endpoint).await;
        assert_eq!(read_all(&store, None).await.unwrap(), b"0123456789");
        let seen = fake.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "{seen:#?}");
        assert!(seen[0].starts_with("GET /bucket/repo/obj") && !seen[0].contains("range="));
        assert!(
            seen[1].contains("range=bytes=4-9") && seen[1].contains("if-match=\"e1\""),
            "{seen:#?}"
        );
        assert!(
            seen[2].contains("range=bytes=7-9") && seen[2].contains("if-match=\"e1\""),
            "{seen:#?}"
        );

        // A ranged read resumes within its range.
        let fake = raw_server(vec![
            (
                object_reply("206 Partial Content", "e1", 5, "23"),
                Then::Hang,
            ),
            (
                object_reply("206 Partial Content", "e1", 3, "456"),
                Then::Keep,
            ),
        ])
        .await;
        let store = stalling_store(&fake.endpoint).await;
        assert_eq!(read_all(&store, Some(2..7)).await.unwrap(), b"23456");
        let seen = fake.seen.lock().unwrap().clone();
        assert!(seen[0].contains("range=bytes=2-6"), "{seen:#?}");
        assert!(seen[1].contains("range=bytes=4-6"), "{seen:#?}");
    }

    #[tokio::test]
    async fn a_download_never_splices_a_replaced_object_and_gives_up_after_the_attempts() {
        const PRECONDITION: &str = "<Error><Code>PreconditionFailed</Code></Error>";
        let fake = raw_server(vec![
            (object_reply("200 OK", "e1", 10, "0123"), Then::Hang),
            (
                format!(
                    "HTTP/1.1 412 Precondition Failed\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{PRECONDITION}",
                    PRECONDITION.len()
                ),
                Then::Keep,
            ),
        ])
        .await;
        let store = stalling_store(&fake.endpoint).await;
        let err = read_all(&store, None).await.unwrap_err();
        assert!(
            err.to_string().contains("replaced while it was being read"),
            "{err}"
        );

        // Every attempt stalls: the read fails after max_attempts (3) requests.
        let fake = raw_server(vec![
            (object_reply("200 OK", "e1", 10, "0"), Then::Hang),
            (object_reply("206 Partial Content", "e1", 9, ""), Then::Hang),
            (object_reply("206 Partial Content", "e1", 9, ""), Then::Hang),
        ])
        .await;
        let store = stalling_store(&fake.endpoint).await;
        let err = read_all(&store, None).await.unwrap_err();
        assert!(
            err.to_string().contains("gave up after 3 attempts"),
            "{err}"
        );
        assert_eq!(fake.seen.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn adaptive_mode_paces_the_store_after_throttling() {
        let fake = fake_s3(vec![(503, SLOW_DOWN), (503, SLOW_DOWN), (200, "")]).await;
        let store = fake_store(S3Options {
            retry_mode: S3RetryMode::Adaptive,
            ..fake_options(&fake.endpoint)
        })
        .await;
        let rate = store
            .inner
            .rate
            .as_ref()
            .expect("adaptive mode has a send rate");
        assert_eq!(rate.allowed(), None);
        store.delete(&ObjectKey::new("x").unwrap()).await.unwrap();
        assert_eq!(fake.seen.lock().unwrap().len(), 3);
        let paced = rate.allowed().expect("paced after SlowDown");
        assert!(paced >= throttle::MIN_RATE, "{paced}");
        // Standard mode keeps no send rate.
        assert!(stalling_store(&fake.endpoint).await.inner.rate.is_none());
    }
}

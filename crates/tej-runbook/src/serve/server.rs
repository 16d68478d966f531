//! The HTTP side of `tej serve`: read-only endpoints over the latest [`Snapshot`], an
//! optional bearer token, and the collector that refreshes the snapshot.

use super::metrics::{CONTENT_TYPE, Snapshot, calendar_history, exposition};
use crate::error::{Result, RunbookError};
use crate::run_entry::{EntryRequest, EntryResult, run_entries};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tej_core::{Config, Redactor, Report, Secret};

/// How the server listens and who may read it.
#[derive(Clone)]
pub struct ServeOptions {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The bearer token every request must carry, when set.
    pub token: Option<Secret>,
    /// Seconds between two collections; results older than twice this are stale.
    pub interval: Duration,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| tej_core::REDACTED))
            .field("interval", &self.interval)
            .finish()
    }
}

impl ServeOptions {
    /// The options of `[serve]` in `cfg`, with `listen` (`--listen`) and `interval`
    /// (`--interval`, seconds) in place of tej.toml's when given; the listen address
    /// defaults to `127.0.0.1:9187`. An address other than loopback is refused unless
    /// `[serve] allow_remote = true` and a token are set; the token is read here.
    pub fn from_config(
        cfg: &Config,
        listen: Option<&str>,
        interval: Option<u64>,
    ) -> Result<ServeOptions> {
        let s = &cfg.serve;
        let text = listen.or(s.listen.as_deref()).unwrap_or("127.0.0.1:9187");
        let listen: SocketAddr = text.parse().map_err(|_| {
            RunbookError::InvalidConfig(format!(
                "serve: {text:?} is not an address and port such as 127.0.0.1:9187"
            ))
        })?;
        let token = match &s.token {
            Some(r) => {
                let t = r.resolve().map_err(|e| {
                    RunbookError::InvalidConfig(format!("serve: read the token: {e}"))
                })?;
                if t.is_empty() {
                    return Err(RunbookError::InvalidConfig(format!(
                        "serve: the token ({}) is empty",
                        r.describe()
                    )));
                }
                Some(t)
            }
            None => None,
        };
        let remote_allowed = s.allow_remote && token.is_some();
        if !listen.ip().is_loopback() && !remote_allowed {
            return Err(RunbookError::Refused(format!(
                "serve: {listen} is not a loopback address; serving other hosts needs \
                 [serve] allow_remote = true and token = {{ env = \"...\" }} or {{ file = \"...\" }}"
            )));
        }
        let secs = interval.unwrap_or(s.interval);
        if secs == 0 {
            return Err(RunbookError::InvalidConfig(
                "serve: the interval must be at least 1 second".into(),
            ));
        }
        Ok(ServeOptions {
            listen,
            token,
            interval: Duration::from_secs(secs),
        })
    }
}

/// What the endpoints show, replaced whole by each collection.
#[derive(Debug, Default)]
struct Published {
    snapshot: Snapshot,
    metrics: String,
    checks: String,
    page: String,
}

/// The latest results, shared by the collector and the endpoints.
#[derive(Debug)]
pub struct Results {
    current: RwLock<Arc<Published>>,
    redactor: Redactor,
}

impl Results {
    /// No results yet. `redactor` masks the configuration's secrets in every body (URL
    /// passwords are masked by any [`Redactor`]).
    pub fn new(redactor: Redactor) -> Results {
        let r = Results {
            current: RwLock::new(Arc::new(Published::default())),
            redactor,
        };
        r.publish(Snapshot::default());
        r
    }

    fn get(&self) -> Arc<Published> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.get().snapshot.clone()
    }

    /// Replaces the results; the exposition and the JSON are rendered once, here.
    pub fn publish(&self, mut snapshot: Snapshot) {
        if let Some(report) = &mut snapshot.report {
            for f in &mut report.findings {
                f.summary = self.redactor.redact(&f.summary);
                f.detail = f.detail.as_deref().map(|d| self.redactor.redact(d));
            }
        }
        snapshot.error = snapshot.error.as_deref().map(|e| self.redactor.redact(e));
        let metrics = exposition(&snapshot);
        let checks = serde_json::json!({
            "collected_at": snapshot.collected_at,
            "collection_seconds": snapshot.collection_seconds,
            "error": snapshot.error,
            "severity": snapshot.report.as_ref().map(Report::severity),
            "title": snapshot.report.as_ref().map(|r| r.title.clone()),
            "checks": snapshot.report.as_ref().map(|r| r.findings.clone()).unwrap_or_default(),
        })
        .to_string();
        let page = super::page::status_page(&snapshot);
        let p = Arc::new(Published {
            snapshot,
            metrics,
            checks,
            page,
        });
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = p;
    }

    /// Why the results are not fresh: none yet, or the newest is older than twice the
    /// interval (one collection may be late, not two); `None` when they are fresh.
    pub fn stale_reason(&self, interval: Duration, now: jiff::Timestamp) -> Option<String> {
        let p = self.get();
        let Some(at) = p.snapshot.collected_at else {
            return Some("no collection of the checks has finished yet".into());
        };
        let age = now.duration_since(at).as_secs_f64();
        let limit = 2.0 * interval.as_secs_f64();
        (age > limit).then(|| {
            format!(
                "the checks last ran {age:.0} s ago, more than twice their interval of {} s",
                interval.as_secs()
            )
        })
    }
}

/// The secrets of `cfg` a body could quote: database and Redis passwords, the backup
/// encryption passphrase, the post-rotation test password, the notification webhook
/// (whose URL is its credential) and the serve token. A reference that cannot be read
/// now is skipped (its value cannot reach a body through tej either).
pub fn config_redactor(cfg: &Config, token: Option<&Secret>) -> Redactor {
    let mut r = Redactor::new();
    let refs = cfg
        .databases
        .iter()
        .filter_map(|d| d.password.as_ref())
        .chain(cfg.redis.iter().filter_map(|x| x.password.as_ref()))
        .chain(
            cfg.backup
                .encryption
                .as_ref()
                .and_then(|e| e.passphrase.as_ref()),
        )
        .chain(cfg.secrets.as_ref().and_then(|s| s.test_password.as_ref()))
        .chain(cfg.notify_url.as_ref());
    for secret in refs.filter_map(|p| p.resolve().ok()) {
        if !secret.is_empty() {
            r.add(&secret);
        }
    }
    if let Some(t) = token {
        r.add(t);
    }
    r
}

struct AppState {
    results: Arc<Results>,
    interval: Duration,
    token: Option<[u8; 32]>,
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let p = s.results.get();
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        p.metrics.clone(),
    )
        .into_response()
}

async fn page(State(s): State<Arc<AppState>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, super::page::PAGE_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        s.results.get().page.clone(),
    )
        .into_response()
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n".into())
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    match s.results.stale_reason(s.interval, jiff::Timestamp::now()) {
        None => text(StatusCode::OK, "ready\n".into()),
        Some(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn checks(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.results.get().checks.clone(),
    )
        .into_response()
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Every request carries `Authorization: Bearer <token>` when a token is set; the digests
/// are compared in constant time (and hashing first hides the token's length).
async fn authorize(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(expected) = &s.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| digest(t.trim().as_bytes()));
        let ok = given.is_some_and(|g| bool::from(g.ct_eq(expected)));
        if !ok {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required\n".into(),
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

/// The read-only routes: `/metrics`, `/healthz`, `/readyz`, `/api/v1/checks` (GET and
/// HEAD; any other method is 405), behind the bearer token when one is set.
pub fn router(results: Arc<Results>, opts: &ServeOptions) -> Router {
    let state = Arc::new(AppState {
        results,
        interval: opts.interval,
        token: opts.token.as_ref().map(|t| digest(t.expose().as_bytes())),
    });
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/checks", get(checks))
        .layer(from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Binds `opts.listen` (the caller has checked it with [`ServeOptions::from_config`]).
async fn bind(opts: &ServeOptions) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| RunbookError::Io {
            action: "listen",
            path: PathBuf::from(opts.listen.to_string()),
            source,
        })
}

/// Serves [`router`] on `listener` until `shutdown` completes.
async fn serve(
    listener: tokio::net::TcpListener,
    results: Arc<Results>,
    opts: &ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener.local_addr().ok();
    axum::serve(listener, router(results, opts))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| RunbookError::Io {
            action: "serve",
            path: PathBuf::from(addr.map(|a| a.to_string()).unwrap_or_default()),
            source,
        })
}

/// One collection: the checks of `req` (the daily health check for `tej serve`) run as
/// `tej health` runs them, the calendar history read from `state_dir`, published. A
/// failed run keeps the previous report and records why.
pub async fn collect_once(
    cfg: &Config,
    req: &EntryRequest,
    state_dir: &std::path::Path,
    results: &Results,
) {
    let started = std::time::Instant::now();
    let outcome = run_entries(cfg, req, jiff::Timestamp::now(), None).await;
    let mut snap = results.snapshot();
    match outcome {
        Ok(EntryResult::Report(report)) => {
            snap.report = Some(report);
            snap.error = None;
        }
        Ok(EntryResult::NotDue(message)) => snap.error = Some(message),
        Err(e) => snap.error = Some(e.to_string()),
    }
    snap.collected_at = Some(jiff::Timestamp::now());
    snap.collection_seconds = Some(started.elapsed().as_secs_f64());
    snap.entries = calendar_history(state_dir);
    results.publish(snap);
}

/// Collects every `interval` (measured from the start of one collection to the next;
/// a collection that takes longer delays the next) until `shutdown` completes.
pub async fn collect_every(
    cfg: &Config,
    req: &EntryRequest,
    interval: Duration,
    results: &Results,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let state_dir = cfg
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/lib/tej"));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = collect_once(cfg, req, &state_dir, results) => {}
        }
    }
}

/// `tej serve` bound and ready: the listener, the results it shows and its options.
/// [`Server::run`] collects and serves until the shutdown signal; `tej serve` and
/// `tej daemon` (with `[serve] listen`) both run it.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    results: Arc<Results>,
    opts: ServeOptions,
}

impl Server {
    /// Binds `opts.listen`; the configuration's secrets and the token are masked in
    /// every body it serves.
    pub async fn bind(cfg: &Config, opts: ServeOptions) -> Result<Server> {
        let listener = bind(&opts).await?;
        let results = Arc::new(Results::new(config_redactor(cfg, opts.token.as_ref())));
        Ok(Server {
            listener,
            results,
            opts,
        })
    }

    /// The address it listens on (the port chosen when `listen` asked for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|source| RunbookError::Io {
                action: "read the listening address",
                path: PathBuf::from(self.opts.listen.to_string()),
                source,
            })
    }

    /// The results it shows.
    pub fn results(&self) -> Arc<Results> {
        self.results.clone()
    }

    /// Collects the checks of `req` every interval and serves the results until `shutdown`
    /// completes; requests in flight finish first.
    pub async fn run(
        self,
        cfg: &Config,
        req: &EntryRequest,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        use futures::FutureExt;
        let shutdown = shutdown.shared();
        let collector = collect_every(
            cfg,
            req,
            self.opts.interval,
            &self.results,
            shutdown.clone(),
        );
        let server = serve(self.listener, self.results.clone(), &self.opts, shutdown);
        let ((), served) = tokio::join!(collector, server);
        served
    }
}

//! Small helpers shared by the procedures.

use super::context::{Lazy, RedisTarget, RepositoryTarget, RunContext};
use crate::error::{Result, RunbookError};
use crate::runner::CheckTask;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tej_core::{Finding, Severity};
use tej_db::redis::RedisAdmin;
use tej_db::redis::RedisConnectOptions;

/// Runs one Redis command on its own connection and returns its integer reply.
pub(crate) async fn redis_integer(opts: &RedisConnectOptions, argv: &[String]) -> Result<f64> {
    let mut redactor = tej_core::Redactor::new();
    if let Some(p) = &opts.password {
        redactor.add(p);
    }
    let clean = |e: redis::RedisError| {
        RunbookError::Query(
            redactor.redact(&tej_core::secret::redact_url_passwords(&e.to_string())),
        )
    };
    let (name, args) = argv
        .split_first()
        .ok_or_else(|| RunbookError::Query("empty Redis command".into()))?;
    let info = redis::IntoConnectionInfo::into_connection_info(opts.url.as_str()).map_err(clean)?;
    let mut settings = info.redis_settings().clone();
    if let Some(u) = &opts.username {
        settings = settings.set_username(u);
    }
    if let Some(p) = &opts.password {
        settings = settings.set_password(p.expose());
    }
    if let Some(db) = opts.db {
        settings = settings.set_db(db);
    }
    let info = info.set_redis_settings(settings);
    let client = redis::Client::open(info).map_err(clean)?;
    let fut = async {
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(clean)?;
        let mut cmd = redis::cmd(name);
        for a in args {
            cmd.arg(a);
        }
        let v: redis::Value = cmd.query_async(&mut conn).await.map_err(clean)?;
        match v {
            redis::Value::Int(i) => Ok(i as f64),
            redis::Value::Double(d) => Ok(d),
            redis::Value::BulkString(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| RunbookError::Query("the reply is not a number".into())),
            redis::Value::SimpleString(s) => s
                .trim()
                .parse()
                .map_err(|_| RunbookError::Query("the reply is not a number".into())),
            other => Err(RunbookError::Query(format!(
                "expected an integer reply, got {}",
                match other {
                    redis::Value::Nil => "nil",
                    redis::Value::Array(_) => "an array",
                    redis::Value::ServerError(_) => "an error",
                    _ => "another type",
                }
            ))),
        }
    };
    tokio::time::timeout(opts.timeout, fut)
        .await
        .map_err(|_| RunbookError::Timeout {
            what: format!("redis {}", opts.redacted_url()),
            after: opts.timeout,
        })?
}

/// Sets every finding's target to `target` (the name the configuration gives the component).
pub(crate) fn retarget(findings: Vec<tej_core::Finding>, target: &str) -> Vec<tej_core::Finding> {
    findings
        .into_iter()
        .map(|mut f| {
            if f.target != target {
                if !f.target.is_empty() && f.detail.is_none() {
                    f.detail = Some(format!("at {}", f.target));
                }
                f.target = target.to_string();
            }
            f
        })
        .collect()
}

/// The critical finding of a component that could not be reached.
pub(crate) fn unreachable(
    check: &str,
    target: &str,
    what: &str,
    reason: impl std::fmt::Display,
) -> tej_core::Finding {
    tej_core::Finding::new(
        check,
        tej_core::Severity::Critical,
        format!("{what} unreachable: {reason}"),
    )
    .target(target)
}

/// A human duration (`3h 12m`, `2d 04h`, `45s`): [`tej_core::fmt::duration`], a negative
/// age (a clock ahead of the server's) as `0s`.
pub(crate) fn human_secs(secs: f64) -> String {
    tej_core::fmt::duration(secs.max(0.0))
}

/// The finding of a check that could not produce its result (`Unknown`).
pub(crate) fn unknown(check: &str, target: &str, summary: impl Into<String>) -> Finding {
    Finding::new(check, Severity::Unknown, summary).target(target)
}

/// One check of a Redis target: connects through its lazy client (an unreachable server
/// is one critical `unreachable_check` finding), then runs `f` with the client and the
/// target name (`redis:<name>`).
pub(crate) fn redis_task<F, Fut>(
    r: &RedisTarget,
    check: &'static str,
    unreachable_check: &'static str,
    timeout: Duration,
    f: F,
) -> CheckTask
where
    F: FnOnce(Arc<dyn RedisAdmin>, String) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<Finding>> + Send + 'static,
{
    let target = format!("redis:{}", r.name);
    let label = format!("redis {}", r.name);
    lazy_task(
        &r.client,
        check,
        unreachable_check,
        "redis",
        target,
        label,
        timeout,
        f,
    )
}

/// One check of a backup repository: opens it through its lazy handle (a repository that
/// cannot be opened is one critical `check` finding), then runs `f` with the repository and
/// the target name (`repo:<name>`).
pub(crate) fn repository_task<F, Fut>(
    r: &RepositoryTarget,
    check: &'static str,
    timeout: Duration,
    f: F,
) -> CheckTask
where
    F: FnOnce(Arc<tej_backup::Repository>, String) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<Finding>> + Send + 'static,
{
    let target = format!("repo:{}", r.name);
    let label = format!("backup repository {}", r.name);
    lazy_task(
        &r.repo,
        check,
        check,
        "repository",
        target,
        label,
        timeout,
        f,
    )
}

/// One check of a target reached through a lazy client: gets the client (one that cannot
/// be had is one critical `unreachable_check` finding naming `kind`), then runs `f` with it
/// and the target name.
#[allow(clippy::too_many_arguments)]
fn lazy_task<T, F, Fut>(
    lazy: &Lazy<T>,
    check: &'static str,
    unreachable_check: &'static str,
    kind: &'static str,
    target: String,
    label: String,
    timeout: Duration,
    f: F,
) -> CheckTask
where
    T: Clone + Send + Sync + 'static,
    F: FnOnce(T, String) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<Finding>> + Send + 'static,
{
    let lazy = lazy.clone();
    let t = target.clone();
    CheckTask::new(check, label, target, timeout, async move {
        match lazy.get().await {
            Ok(client) => f(client, t).await,
            Err(e) => vec![unreachable(unreachable_check, &t, kind, &e)],
        }
    })
}

/// The certificate-expiry check of every `[[tls]]` endpoint.
pub(crate) fn tls_tasks(ctx: &RunContext, timeout: Duration) -> Vec<CheckTask> {
    ctx.tls
        .iter()
        .map(|ep| {
            let target = format!("tls:{}", ep.endpoint);
            let prober = ctx.tls_prober.clone();
            let ep = ep.clone();
            let t = target.clone();
            CheckTask::new(
                "tls.expiry",
                format!("TLS endpoint {}", ep.endpoint),
                target,
                timeout,
                async move { retarget(prober.probe(&ep).await, &t) },
            )
        })
        .collect()
}

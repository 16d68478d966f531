//! `tej redis info|bigkeys|invalidate-sessions`.

use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result};
use std::io::Write;
use std::sync::Arc;
use tej_core::{Config, Executor, Procedure, Report};
use tej_db::redis::{
    BigKeysOptions, FlushScope, FlushStep, InvalidateOptions, InvalidateSessionsStep, RedisClient,
    RedisConnectOptions, RedisThresholds, find_big_keys, redis_health,
};

/// Which instance: `--url`, else the `[[redis]]` named by `--instance`, else the first, else `REDIS_URL`.
pub struct Target {
    /// Connection options (password resolved, never printed).
    pub opts: RedisConnectOptions,
    /// Name for reports.
    pub name: String,
    /// Session key pattern.
    pub session_pattern: String,
}

/// Resolves the target from flags and configuration.
pub fn target(cfg: &Config, url: Option<String>, instance: Option<&str>) -> Result<Target> {
    if let Some(u) = url {
        return Ok(Target {
            opts: RedisConnectOptions::new(u),
            name: "redis".into(),
            session_pattern: "sess:*".into(),
        });
    }
    let r = match instance {
        Some(n) => cfg
            .redis
            .iter()
            .find(|r| r.name == n)
            .with_context(|| format!("no [[redis]] named {n:?} in tej.toml"))?,
        None => cfg
            .redis
            .first()
            .context("no Redis: pass --url, set REDIS_URL, or add [[redis]] to tej.toml")?,
    };
    let mut opts = RedisConnectOptions::new(r.url.expose());
    opts.username = r.username.clone();
    if let Some(p) = &r.password {
        opts.password = Some(
            p.resolve()
                .with_context(|| format!("read the password of redis {:?}", r.name))?,
        );
    }
    Ok(Target {
        opts,
        name: r.name.clone(),
        session_pattern: r.session_pattern.clone(),
    })
}

async fn connect(t: &Target) -> Result<RedisClient> {
    RedisClient::connect(&t.opts)
        .await
        .with_context(|| format!("connect to redis {}", t.name))
}

/// PING, INFO and the memory-doctor findings.
pub async fn info(out: &mut dyn Write, t: &Target, format: OutputFormat) -> Result<Report> {
    let mut report = Report::new("redis info");
    match RedisClient::connect(&t.opts).await {
        Ok(c) => {
            let (info, findings) = redis_health(&c, &RedisThresholds::default(), &t.name).await;
            if let (Some(i), OutputFormat::Json) = (&info, format) {
                json_line(out, "redis_info", i)?;
            }
            report.extend(findings);
        }
        Err(e) => report.push(
            tej_core::Finding::new("redis.connect", tej_core::Severity::Critical, e.to_string())
                .target(&t.name),
        ),
    }
    Ok(report)
}

/// The biggest keys, found with SCAN + MEMORY USAGE under a budget (never KEYS).
pub async fn bigkeys(
    out: &mut dyn Write,
    t: &Target,
    top: usize,
    format: OutputFormat,
) -> Result<()> {
    let c = connect(t).await?;
    let r = find_big_keys(
        &c,
        &BigKeysOptions {
            top,
            ..BigKeysOptions::default()
        },
    )
    .await
    .context("scan for big keys")?;
    if format == OutputFormat::Json {
        return Ok(json_line(out, "redis_bigkeys", &r)?);
    }
    writeln!(out, "{:>12}  {:<8}  KEY", "BYTES", "TYPE")?;
    for k in &r.top {
        writeln!(out, "{:>12}  {:<8}  {}", k.bytes, k.kind, k.key)?;
    }
    writeln!(
        out,
        "\n{} keys measured, {} bytes{}",
        r.scanned,
        r.total_bytes,
        if r.complete {
            ""
        } else {
            " (stopped early: budget)"
        }
    )?;
    Ok(())
}

/// Removes session keys by pattern (SCAN + UNLINK in batches), as an audited step.
pub async fn invalidate_sessions(
    out: &mut dyn Write,
    ex: &Executor,
    t: &Target,
    pattern: Option<String>,
    format: OutputFormat,
) -> Result<bool> {
    let c = Arc::new(connect(t).await?);
    let opts = InvalidateOptions {
        pattern: pattern.unwrap_or_else(|| t.session_pattern.clone()),
        ..InvalidateOptions::default()
    };
    let proc_ = Procedure::new("redis invalidate-sessions")
        .step(InvalidateSessionsStep::new(c, opts, &t.name));
    let report = ex.run(&proc_).await;
    super::host::render_procedure(out, &report, format)?;
    Ok(report.succeeded())
}

/// `FLUSHDB` of database `db` as a destructive step (plan, `--yes`, audit); refused in an
/// environment marked production, as the runbook allows it only in development/staging.
pub async fn flush(
    out: &mut dyn Write,
    ex: &Executor,
    t: &Target,
    db: i64,
    format: OutputFormat,
) -> Result<bool> {
    anyhow::ensure!(db >= 0, "--db {db}: a Redis database number is 0 or more");
    let mut t2 = Target {
        opts: t.opts.clone(),
        name: format!("{}/db{db}", t.name),
        session_pattern: t.session_pattern.clone(),
    };
    t2.opts.db = Some(db);
    let c = Arc::new(connect(&t2).await?);
    let step = FlushStep::new(c, FlushScope::Db, ex.guard.environment, &t2.name);
    let report = ex.run(&Procedure::new("redis flush").step(step)).await;
    super::host::render_procedure(out, &report, format)?;
    Ok(report.succeeded())
}

/// Which Redis.
#[derive(Debug, clap::Args)]
pub struct RedisArgs {
    /// Connection URL (default: [[redis]] in tej.toml, then REDIS_URL).
    #[arg(long)]
    pub url: Option<String>,
    /// The [[redis]] entry by name.
    #[arg(long)]
    pub instance: Option<String>,
}

/// `tej redis`.
#[derive(Debug, clap::Subcommand)]
pub enum RedisCmd {
    /// PING latency, INFO, and memory-doctor findings.
    Info(RedisArgs),
    /// The biggest keys (SCAN + MEMORY USAGE under a budget; never KEYS).
    Bigkeys {
        #[command(flatten)]
        redis: RedisArgs,
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
    /// Remove session keys by pattern with SCAN + UNLINK; other keys stay.
    InvalidateSessions {
        #[command(flatten)]
        redis: RedisArgs,
        /// Key pattern (default: session_pattern in tej.toml, `sess:*`).
        #[arg(long)]
        pattern: Option<String>,
        #[command(flatten)]
        run: crate::args::RunArgs,
    },
    /// FLUSHDB of one database (destructive; refused when tej.toml says production).
    Flush {
        #[command(flatten)]
        redis: RedisArgs,
        /// The database number.
        #[arg(long)]
        db: i64,
        #[command(flatten)]
        run: crate::args::RunArgs,
    },
}

/// Runs `tej redis ...`: the info report's Nagios exit code, else 0 (or 1 when a mutating
/// step failed or was refused).
pub fn dispatch(ctx: &crate::context::Context, out: &mut dyn Write, cmd: RedisCmd) -> Result<i32> {
    let format = ctx.format();
    let cfg = ctx.config()?;
    let target_of = |a: RedisArgs| target(cfg, a.url, a.instance.as_deref());
    match cmd {
        RedisCmd::Info(a) => {
            let t = target_of(a)?;
            let report = ctx.block_on(info(out, &t, format))??;
            ctx.finish_report(out, &report)
        }
        RedisCmd::Bigkeys { redis, top } => {
            let t = target_of(redis)?;
            ctx.block_on(bigkeys(out, &t, top, format))??;
            Ok(0)
        }
        RedisCmd::InvalidateSessions {
            redis,
            pattern,
            run,
        } => {
            let t = target_of(redis)?;
            let ex = ctx.executor(&run)?;
            let ok = ctx.block_on(invalidate_sessions(out, &ex, &t, pattern, format))??;
            Ok(crate::context::exit_code(ok))
        }
        RedisCmd::Flush { redis, db, run } => {
            let t = target_of(redis)?;
            let ex = ctx.executor(&run)?;
            let ok = ctx.block_on(flush(out, &ex, &t, db, format))??;
            Ok(crate::context::exit_code(ok))
        }
    }
}

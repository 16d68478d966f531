//! `tej secrets rotate` and `tej secrets generate`. The rotation is the staged rotation of tej-secrets over tej-db's Redis (sessions)
//! and tej-deploy's force-recreate (service), with the application probed over HTTP.
//!
//! The adapters ([`RedisSessions`], [`ComposeService`]) live in tej-runbook, shared with the
//! quarterly rotation and the security-breach procedure.

use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tej_core::Config;
use tej_db::redis::RedisClient;
use tej_deploy::{BollardRuntime, Project};
use tej_runbook::{ComposeService, RedisSessions};
use tej_secrets::{
    HttpAppProbe, HttpProbeConfig, RotateOptions, RotationMode, RotationOutcome, Rotator,
    SessionInvalidation,
};

/// `tej secrets`.
#[derive(Debug, clap::Subcommand)]
pub enum SecretsCmd {
    /// Staged, resumable rotation: new values in .env, recreate the backend, drop sessions, verify.
    Rotate(RotateArgs),
    /// Print a new secret from the OS CSPRNG (hex).
    Generate {
        /// Random bytes (printed as twice as many hex digits).
        #[arg(long, default_value_t = 64)]
        bytes: usize,
    },
}

/// `tej secrets rotate`.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The .env file (default: [secrets] env_file).
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Keys to rotate (default: [secrets] rotate, JWT_SECRET,JWT_REFRESH_SECRET).
    #[arg(long, value_delimiter = ',')]
    pub keys: Vec<String>,
    /// Keep the previous values as KEY_PREVIOUS for a grace period; sessions stay.
    #[arg(long)]
    pub graceful: bool,
    /// A breach: rotate every configured key and drop every session.
    #[arg(long)]
    pub emergency: bool,
    #[command(flatten)]
    pub run: crate::args::RunArgs,
}

/// Runs `tej secrets ...`: 0 when the rotation completed (or was planned), else 1.
pub fn dispatch(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    cmd: SecretsCmd,
) -> Result<i32> {
    match cmd {
        SecretsCmd::Rotate(args) => {
            let cfg = ctx.config()?;
            let ex = ctx.executor(&args.run)?;
            let ok = ctx.block_on(rotate(out, cfg, &ex, args, ctx.format()))??;
            Ok(crate::context::exit_code(ok))
        }
        SecretsCmd::Generate { bytes } => {
            generate(out, bytes)?;
            Ok(0)
        }
    }
}

/// Prints one new secret from the OS CSPRNG (the one place a secret value is printed, on request).
pub fn generate(out: &mut dyn Write, bytes: usize) -> Result<()> {
    let s = tej_secrets::generate_secret(&tej_secrets::SecretFormat::Hex { bytes })?;
    writeln!(out, "{}", s.expose())?;
    Ok(())
}

/// Runs the rotation; true when it completed (or was planned in a dry run).
pub async fn rotate(
    out: &mut dyn Write,
    cfg: &Config,
    ex: &tej_core::Executor,
    args: RotateArgs,
    format: OutputFormat,
) -> Result<bool> {
    let sc = cfg.secrets.as_ref();
    let env_file = args
        .env_file
        .or_else(|| sc.map(|s| s.env_file.clone()))
        .context("no .env: pass --env-file or set [secrets] env_file in tej.toml")?;
    let mut opts = RotateOptions::new(env_file);
    if !args.keys.is_empty() {
        opts.keys = args.keys;
    } else if let Some(s) = sc {
        opts.keys = s.rotate.clone();
    }
    if let Some(s) = sc {
        opts.backups_keep = s.env_backups_keep;
    }
    opts.mode = match (args.graceful, args.emergency) {
        (true, true) => bail!("--graceful and --emergency exclude each other"),
        (true, false) => RotationMode::Graceful,
        (false, true) => RotationMode::Emergency,
        _ => RotationMode::Standard,
    };
    opts.dry_run = args.run.dry_run;
    let compose = cfg
        .compose
        .as_ref()
        .context("rotation recreates the backend: set [compose] project in tej.toml")?;
    opts.service = compose.backend_service.clone();
    let redis = cfg
        .redis
        .first()
        .context("rotation invalidates sessions: add [[redis]] to tej.toml")?;
    opts.sessions = SessionInvalidation::Pattern(redis.session_pattern.clone());

    let mut ropts = tej_db::redis::RedisConnectOptions::new(redis.url.expose());
    ropts.username = redis.username.clone();
    if let Some(p) = &redis.password {
        ropts.password = Some(p.resolve().context("read the Redis password")?);
    }
    let sessions = RedisSessions(Arc::new(
        RedisClient::connect(&ropts)
            .await
            .context("connect to Redis")?,
    ));
    let docker = BollardRuntime::connect(compose.docker_host.as_deref())
        .await
        .context("connect to the Docker engine")?;
    let service = ComposeService::new(Arc::new(docker), Project::new(compose.project.clone()));
    let base = sc.and_then(|s| s.app_url.clone()).context(
        "set [secrets] app_url (the application's base URL) for the post-rotation checks",
    )?;
    let email = sc
        .and_then(|s| s.test_email.clone())
        .context("set [secrets] test_email for the post-rotation login")?;
    let password = match sc.and_then(|s| s.test_password.as_ref()) {
        Some(r) => r.resolve().context("read the test account's password")?,
        None => {
            bail!("set [secrets] test_password = {{ env = \"...\" }} for the post-rotation login")
        }
    };
    let probe = HttpAppProbe::new(HttpProbeConfig::for_base_url(&base, email, password))?;
    let mut rotator = Rotator::new(sessions, service, probe, ex.guard.clone());
    rotator.audit = ex.audit.clone();
    let report = rotator.rotate(&opts).await.context("rotate secrets")?;
    if format == OutputFormat::Json {
        json_line(out, "rotation", &report)?;
    } else {
        writeln!(
            out,
            "rotation of {} in {}: {:?}",
            report.keys.join(", "),
            report.env_file.display(),
            report.outcome
        )?;
        for p in &report.plan {
            writeln!(out, "  plan: {p}")?;
        }
        for s in &report.steps {
            writeln!(out, "  {}", serde_json::to_string(s)?)?;
        }
    }
    Ok(matches!(
        report.outcome,
        RotationOutcome::Completed | RotationOutcome::Planned
    ))
}

//! `tej serve`: tej-runbook's [`Server`] — the daily health check collected every interval
//! and served read-only over HTTP (`/`, `/metrics`, `/healthz`, `/readyz`, `/api/v1/checks`),
//! on loopback unless `[serve] allow_remote` and a token are set. Stops on SIGINT or SIGTERM.

use crate::args::CheckArgs;
use crate::output::{OutputFormat, json_line};
use anyhow::Result;
use std::io::Write;
use tej_core::Config;
use tej_runbook::EntryRequest;
use tej_runbook::serve::{ServeOptions, Server};

/// `tej serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address and port to listen on (default: `[serve] listen` in tej.toml, else
    /// 127.0.0.1:9187); port 0 picks a free port, printed on start.
    #[arg(long)]
    pub listen: Option<String>,
    /// Seconds between two runs of the checks (default: `[serve] interval`, else 60).
    #[arg(long)]
    pub interval: Option<u64>,
    #[command(flatten)]
    pub check: CheckArgs,
}

/// Runs `tej serve` until SIGINT/SIGTERM.
pub fn dispatch(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    args: ServeArgs,
) -> Result<i32> {
    let cfg = ctx.config()?;
    let opts = ServeOptions::from_config(cfg, args.listen.as_deref(), args.interval)?;
    let req = request(ctx, &args.check)?;
    ctx.block_on(async {
        let server = Server::bind(cfg, opts.clone()).await?;
        announce(out, &server, &opts, ctx.format())?;
        server
            .run(cfg, &req, crate::cmd::daemon::shutdown_signal())
            .await?;
        anyhow::Ok(())
    })??;
    Ok(0)
}

/// The request of the checks `tej serve` collects: the daily health check, as `tej health`
/// runs it.
pub fn request(ctx: &crate::context::Context, check: &CheckArgs) -> Result<EntryRequest> {
    crate::cmd::run::request(ctx, "daily".into(), false, check, false)
}

/// Prints where the server listens (one JSON line `serve_started` in JSON mode).
pub fn announce(
    out: &mut dyn Write,
    server: &Server,
    opts: &ServeOptions,
    format: OutputFormat,
) -> Result<()> {
    let addr = server.local_addr()?;
    let url = format!("http://{addr}/");
    if format == OutputFormat::Json {
        json_line(
            out,
            "serve_started",
            &serde_json::json!({
                "listen": addr.to_string(),
                "url": url,
                "interval_seconds": opts.interval.as_secs(),
                "token": opts.token.is_some(),
            }),
        )?;
    } else {
        writeln!(
            out,
            "tej serve: listening on {url} (metrics, healthz, readyz, api/v1/checks){}, checks every {} s",
            if opts.token.is_some() {
                ", bearer token required"
            } else {
                ""
            },
            opts.interval.as_secs()
        )?;
    }
    out.flush()?;
    Ok(())
}

/// The serve options of `tej daemon`: `[serve]` when `listen` is set there.
pub fn daemon_options(cfg: &Config) -> Result<Option<ServeOptions>> {
    if cfg.serve.listen.is_none() {
        return Ok(None);
    }
    Ok(Some(ServeOptions::from_config(cfg, None, None)?))
}

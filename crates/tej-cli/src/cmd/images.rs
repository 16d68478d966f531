//! `tej images prune`: the runbook's `docker image prune -af --filter until=168h` as a
//! destructive step under the executor; never an image a container uses or a rollback image.

use crate::output::OutputFormat;
use anyhow::{Context, Result};
use std::io::Write;
use std::sync::Arc;
use tej_core::{Executor, Procedure, SystemClock};
use tej_deploy::{BollardRuntime, PruneImagesStep, PruneOptions};

/// Prunes unused images built longer ago than `older_than` (plan, `--yes`, window, audit);
/// true when it was applied or planned.
pub async fn prune(
    out: &mut dyn Write,
    ex: &Executor,
    rt: BollardRuntime,
    older_than: &str,
    format: OutputFormat,
) -> Result<bool> {
    let age = super::logs::parse_since(older_than)
        .with_context(|| format!("parse --older-than {older_than:?}"))?;
    anyhow::ensure!(
        !age.is_negative(),
        "--older-than {older_than:?} is negative: give an age such as 168h or 7d"
    );
    let rt = Arc::new(rt);
    let step = PruneImagesStep {
        containers: rt.clone(),
        images: rt,
        clock: Arc::new(SystemClock),
        options: PruneOptions {
            older_than: Some(age.unsigned_abs()),
            ..PruneOptions::default()
        },
    };
    let report = ex.run(&Procedure::new("images prune").step(step)).await;
    super::host::render_procedure(out, &report, format)?;
    Ok(report.succeeded())
}

/// `tej images`.
#[derive(Debug, clap::Subcommand)]
pub enum ImagesCmd {
    /// Remove unused images built longer ago than --older-than (`docker image prune -af
    /// --filter until=168h`); destructive: the plan, then --yes; audited.
    Prune {
        /// Only images at least this old (168h, 7d, 0s for any age).
        #[arg(long, default_value = "168h")]
        older_than: String,
        #[command(flatten)]
        compose: crate::args::ComposeArgs,
        #[command(flatten)]
        run: crate::args::RunArgs,
    },
}

/// Runs `tej images ...`; 0 when it was applied or planned, else 1.
pub fn dispatch(ctx: &crate::context::Context, out: &mut dyn Write, cmd: ImagesCmd) -> Result<i32> {
    let ImagesCmd::Prune {
        older_than,
        compose,
        run,
    } = cmd;
    let host = ctx.docker_host(&compose)?;
    let ex = ctx.executor(&run)?;
    let ok = ctx.block_on(async {
        let docker = super::services::connect(host.as_deref()).await?;
        prune(out, &ex, docker, &older_than, ctx.format()).await
    })??;
    Ok(crate::context::exit_code(ok))
}

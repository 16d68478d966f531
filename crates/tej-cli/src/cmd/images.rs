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
    let age = super::host::parse_since(older_than)
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

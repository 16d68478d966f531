//! `tej deploy SERVICE --image IMAGE` and `tej rollback SERVICE`: tej-runbook's deploy of a
//! `[[deploy.service]]` (tej-deploy's zero-downtime blue/green deploy, its gates, the
//! fresh-backup gate over tej-backup) as an audited step, rendered here.

use crate::args::{ComposeArgs, RunArgs};
use crate::output::{OutputFormat, json_line};
use anyhow::{Result, bail};
use std::io::Write;
use std::sync::Arc;
use tej_core::TokioCommandRunner;
use tej_deploy::{DeployKind, DeployReport};
use tej_runbook::{DeployEngine, DeployRequest};

/// `tej deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The service.
    pub service: String,
    /// The image to deploy (built or loaded on the Docker host).
    #[arg(long)]
    pub image: String,
    #[command(flatten)]
    pub compose: ComposeArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `tej rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The service.
    pub service: String,
    #[command(flatten)]
    pub compose: ComposeArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `tej deploy`: 0 when the new container serves, else an error.
pub fn dispatch(ctx: &crate::context::Context, out: &mut dyn Write, a: DeployArgs) -> Result<i32> {
    let image = Some(a.image);
    deploy_cmd(
        ctx,
        out,
        DeployKind::Deploy,
        a.service,
        image,
        &a.compose,
        &a.run,
    )
}

/// Runs `tej rollback`: 0 when the previous image serves again, else an error.
pub fn dispatch_rollback(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    a: RollbackArgs,
) -> Result<i32> {
    deploy_cmd(
        ctx,
        out,
        DeployKind::Rollback,
        a.service,
        None,
        &a.compose,
        &a.run,
    )
}

fn deploy_cmd(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    kind: DeployKind,
    service: String,
    image: Option<String>,
    compose: &ComposeArgs,
    run: &RunArgs,
) -> Result<i32> {
    let cfg = ctx.config()?;
    let (project, docker_host) = ctx.compose_target(compose)?;
    let ex = ctx.executor(run)?;
    let format = ctx.format();
    tej_deploy::deploy_service(cfg, &service)?;
    if kind == DeployKind::Deploy && image.as_deref().is_none_or(str::is_empty) {
        bail!("deploy needs --image IMAGE");
    }
    let req = DeployRequest {
        kind,
        service,
        image,
        project: Some(project),
    };
    let run = ctx.block_on(async {
        let docker = Arc::new(super::services::connect(docker_host.as_deref()).await?);
        let engine = DeployEngine {
            containers: docker.clone(),
            images: docker,
            runner: Arc::new(TokioCommandRunner),
        };
        anyhow::Ok(tej_runbook::deploy_service(cfg, &ex, &engine, &req).await?)
    })??;
    super::host::render_procedure(out, &run.procedure, format)?;
    if let Some(r) = &run.deploy {
        render_deploy(out, r, format)?;
    }
    if run.procedure.succeeded() {
        return Ok(0);
    }
    let word = match kind {
        DeployKind::Deploy => "deploy",
        DeployKind::Rollback => "rollback",
    };
    match run.deploy {
        Some(r) => bail!("{}", failure_text(&r)),
        None => bail!(
            "{word} of {} did not run: {}",
            req.service,
            run.procedure
                .steps
                .first()
                .map(|s| serde_json::to_string(&s.outcome).unwrap_or_default())
                .unwrap_or_default()
        ),
    }
}

/// The reason of a failed deploy with the failed container's (or migration's) last lines.
pub fn failure_text(r: &DeployReport) -> String {
    let mut s = r.summary();
    for (what, lines) in [
        ("the new container's last log lines", &r.new_container_logs),
        ("the migration's last output lines", &r.migration_output),
    ] {
        if !lines.is_empty() {
            s.push_str(&format!("\n{what}:"));
            for l in lines {
                s.push_str("\n  ");
                s.push_str(l);
            }
        }
    }
    s
}

fn render_deploy(out: &mut dyn Write, r: &DeployReport, format: OutputFormat) -> Result<()> {
    match format {
        OutputFormat::Json => json_line(out, "deploy", r)?,
        OutputFormat::Text => {
            for e in &r.events {
                let stage = serde_json::to_value(e.stage)?
                    .as_str()
                    .unwrap_or("?")
                    .to_string();
                let at = e.at.strftime("%H:%M:%S%.3fZ");
                writeln!(out, "  {at} {stage:<10} {}", e.detail)?;
            }
            for g in &r.gates {
                writeln!(
                    out,
                    "  gate {}: {} ({})",
                    g.gate,
                    if g.passed { "passed" } else { "FAILED" },
                    g.detail
                )?;
            }
            for w in &r.warnings {
                writeln!(out, "  warning: {w}")?;
            }
        }
        OutputFormat::Nagios | OutputFormat::Prometheus => {
            writeln!(out, "{}", r.summary())?;
        }
    }
    Ok(())
}

//! `tej services status|logs|restart` and `tej emergency service-down`.

use crate::args::{ComposeArgs, RunArgs};
use crate::context::exit_code;
use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tej_core::{Executor, Procedure, Report};
use tej_deploy::{BollardRuntime, LogQuery, Project, RecoverOptions, RecoverServiceStep};

/// Connects to the engine (`--docker-host`, else tej.toml, else `DOCKER_HOST`, else the docker
/// context, else the local socket; see `tej_deploy::engine`).
pub async fn connect(host: Option<&str>) -> Result<BollardRuntime> {
    BollardRuntime::connect(host)
        .await
        .context("connect to the Docker engine")
}

/// `tej services status`: the project's containers; returns the report for exit codes.
pub async fn status(
    out: &mut dyn Write,
    rt: &BollardRuntime,
    project: &str,
    format: OutputFormat,
) -> Result<Report> {
    let st = Project::new(project)
        .status(rt, rt, jiff::Timestamp::now())
        .await
        .context("read the project's containers")?;
    let report = st.report();
    match format {
        OutputFormat::Json => {
            for c in &st.containers {
                json_line(out, "container", c)?;
            }
        }
        OutputFormat::Text => {
            writeln!(
                out,
                "{:<12} {:<28} {:<10} {:<10} {:>8} {:>10}  IMAGE",
                "SERVICE", "NAME", "STATE", "HEALTH", "RESTARTS", "UPTIME"
            )?;
            for c in &st.containers {
                let state = serde_json::to_value(c.state)?
                    .as_str()
                    .unwrap_or("?")
                    .to_string();
                let health = serde_json::to_value(c.health)?
                    .as_str()
                    .unwrap_or("?")
                    .to_string();
                let up = c
                    .uptime_secs
                    .map(|u| tej_core::fmt::duration(u as f64))
                    .unwrap_or_else(|| "-".into());
                writeln!(
                    out,
                    "{:<12} {:<28} {:<10} {:<10} {:>8} {:>10}  {}",
                    c.service, c.name, state, health, c.restart_count, up, c.image
                )?;
            }
            writeln!(out)?;
        }
        _ => {}
    }
    Ok(report)
}

/// `tej services logs [SERVICE] --tail N`.
pub async fn logs(
    out: &mut dyn Write,
    rt: &BollardRuntime,
    project: &str,
    service: Option<&str>,
    tail: usize,
    format: OutputFormat,
) -> Result<()> {
    let lines = Project::new(project)
        .logs(rt, service, &LogQuery::tail(tail))
        .await
        .context("read container logs")?;
    for l in &lines {
        if format == OutputFormat::Json {
            json_line(out, "log_line", l)?;
        } else {
            let at = l.at.map(|t| t.to_string()).unwrap_or_default();
            writeln!(out, "{at} {} | {}", l.container, l.text)?;
        }
    }
    Ok(())
}

/// `tej services restart SERVICE`, through the executor (plan, `--yes`, window, audit);
/// true when it was applied or planned.
pub async fn restart(
    out: &mut dyn Write,
    ex: &Executor,
    rt: BollardRuntime,
    project: &str,
    service: &str,
    format: OutputFormat,
) -> Result<bool> {
    let p = Procedure::new("services restart").step(tej_deploy::RestartServiceStep {
        containers: Arc::new(rt),
        project: Project::new(project),
        service: service.to_string(),
        stop_timeout: Duration::from_secs(10),
    });
    let report = ex.run(&p).await;
    super::host::render_procedure(out, &report, format)?;
    Ok(report.succeeded())
}

/// `tej emergency service-down SERVICE`: check, restart, force-recreate, as one destructive
/// step through the executor; true when the service is healthy again (or it was planned).
pub async fn service_down(
    out: &mut dyn Write,
    ex: &Executor,
    rt: BollardRuntime,
    project: &str,
    service: &str,
    format: OutputFormat,
) -> Result<bool> {
    let p = Procedure::new("emergency service-down").step(tej_runbook::AsDestructive(
        RecoverServiceStep {
            containers: Arc::new(rt),
            project: Project::new(project),
            service: service.to_string(),
            options: RecoverOptions::default(),
        },
    ));
    let report = ex.run(&p).await;
    super::host::render_procedure(out, &report, format)?;
    if format == OutputFormat::Text {
        for f in report.findings() {
            writeln!(out, "{}: {} {}", f.severity, f.check, f.summary)?;
        }
    }
    Ok(report.succeeded())
}

/// `tej services`.
#[derive(Debug, clap::Subcommand)]
pub enum ServicesCmd {
    /// What `docker compose ps` shows and more: state, health, restarts, uptime, image age.
    Status(ComposeArgs),
    /// The last lines of one service's logs (or all), timestamped, in time order.
    Logs {
        #[command(flatten)]
        compose: ComposeArgs,
        /// Service (default: all).
        service: Option<String>,
        /// How many lines per container.
        #[arg(long, default_value_t = 100)]
        tail: usize,
    },
    /// Restart a service's containers (destructive: the plan, then --yes; audited).
    Restart {
        #[command(flatten)]
        compose: ComposeArgs,
        /// Service.
        service: String,
        #[command(flatten)]
        run: RunArgs,
    },
}

/// Runs `tej services ...`; the exit code.
pub fn dispatch(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    cmd: ServicesCmd,
) -> Result<i32> {
    let format = ctx.format();
    match cmd {
        ServicesCmd::Status(c) => {
            let (project, host) = ctx.compose_target(&c)?;
            let report = ctx.block_on(async {
                let docker = connect(host.as_deref()).await?;
                status(out, &docker, &project, format).await
            })??;
            ctx.finish_report(out, &report)
        }
        ServicesCmd::Logs {
            compose,
            service,
            tail,
        } => {
            let (project, host) = ctx.compose_target(&compose)?;
            ctx.block_on(async {
                let docker = connect(host.as_deref()).await?;
                logs(out, &docker, &project, service.as_deref(), tail, format).await
            })??;
            Ok(0)
        }
        ServicesCmd::Restart {
            compose,
            service,
            run,
        } => {
            let (project, host) = ctx.compose_target(&compose)?;
            let ex = ctx.executor(&run)?;
            let ok = ctx.block_on(async {
                let docker = connect(host.as_deref()).await?;
                restart(out, &ex, docker, &project, &service, format).await
            })??;
            Ok(exit_code(ok))
        }
    }
}

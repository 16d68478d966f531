//! `tej services status|logs|restart` and `tej emergency service-down`.

use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result};
use std::io::Write;
use std::time::Duration;
use tej_core::Report;
use tej_deploy::{BollardRuntime, LogQuery, Project, RecoverOptions, recover_service};

/// Connects to the engine (`--docker-host`, else tej.toml, else `DOCKER_HOST`, else the local socket).
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
                let up = c.uptime_secs.map(human_secs).unwrap_or_else(|| "-".into());
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

/// Seconds as `3d4h`, `5h12m`, `42s`.
pub fn human_secs(s: u64) -> String {
    match s {
        s if s >= 86_400 => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
        s if s >= 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
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

/// `tej services restart SERVICE`.
pub async fn restart(
    out: &mut dyn Write,
    rt: &BollardRuntime,
    project: &str,
    service: &str,
    format: OutputFormat,
) -> Result<()> {
    let names = Project::new(project)
        .restart(rt, service, Duration::from_secs(10))
        .await
        .with_context(|| format!("restart {service}"))?;
    if format == OutputFormat::Json {
        json_line(out, "restarted", &names)?;
    } else {
        writeln!(
            out,
            "restarted {}",
            if names.is_empty() {
                "nothing (no containers)".to_string()
            } else {
                names.join(", ")
            }
        )?;
    }
    Ok(())
}

/// `tej emergency service-down SERVICE`: check, restart, force-recreate; returns the report.
pub async fn service_down(
    out: &mut dyn Write,
    rt: &BollardRuntime,
    project: &str,
    service: &str,
    format: OutputFormat,
) -> Result<Report> {
    let rep = recover_service(
        rt,
        &Project::new(project),
        service,
        &RecoverOptions::default(),
    )
    .await;
    let mut report = Report::new(format!("emergency service-down {service}"));
    report.push(
        tej_core::Finding::new(
            "deploy.recovery",
            rep.severity(),
            if rep.recovered {
                format!("{service} is healthy")
            } else {
                format!("{service} is still down")
            },
        )
        .target(format!("{project}/{service}")),
    );
    if format == OutputFormat::Json {
        json_line(out, "recovery", &rep)?;
    } else if format == OutputFormat::Text {
        for a in &rep.actions {
            writeln!(out, "- {}", serde_json::to_string(a)?)?;
        }
    }
    Ok(report)
}

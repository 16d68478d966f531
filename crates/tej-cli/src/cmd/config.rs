//! `tej config check`.

use crate::output::{OutputFormat, json_line};
use std::io::{self, Write};
use tej_core::Config;

/// Validates the configuration and prints what it manages, secrets redacted.
pub fn check(
    out: &mut dyn Write,
    cfg: &Config,
    source: &str,
    format: OutputFormat,
) -> io::Result<()> {
    let s = cfg.summary();
    if format == OutputFormat::Json {
        return json_line(out, "config", &s);
    }
    writeln!(out, "{source}: ok")?;
    writeln!(
        out,
        "environment      {} ({})",
        s.environment, s.environment_source
    )?;
    writeln!(out, "time zone        {}", s.timezone)?;
    let list = |out: &mut dyn Write, label: &str, items: &[String]| -> io::Result<()> {
        if items.is_empty() {
            writeln!(out, "{label:<16} (none)")
        } else {
            for (i, it) in items.iter().enumerate() {
                writeln!(out, "{:<16} {it}", if i == 0 { label } else { "" })?;
            }
            Ok(())
        }
    };
    list(out, "databases", &s.databases)?;
    list(out, "redis", &s.redis)?;
    list(out, "repositories", &s.backup_repositories)?;
    writeln!(out, "{:<16} {}", "backups", s.backup)?;
    list(out, "logs", &s.log_paths)?;
    list(out, "tls endpoints", &s.tls_endpoints)?;
    list(out, "dependency audits", &s.dependency_audits)?;
    writeln!(
        out,
        "{:<16} {}",
        "compose project",
        s.compose_project.as_deref().unwrap_or("(none)")
    )?;
    writeln!(
        out,
        "{:<16} {}",
        "secrets",
        s.secrets_file.as_deref().unwrap_or("(none)")
    )?;
    writeln!(out, "\nwhere each value comes from:")?;
    let width = s.origins.iter().map(|o| o.key.len()).max().unwrap_or(0);
    for o in &s.origins {
        writeln!(out, "  {:<width$}  {}", o.key, o.source)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_passwords() {
        let env =
            |k: &str| (k == "DATABASE_URL").then(|| "postgres://app:topsecretpw@db/x".to_string());
        let cfg = Config::from_toml_with_env("", "tej.toml", &env).unwrap();
        for f in [OutputFormat::Text, OutputFormat::Json] {
            let mut out = Vec::new();
            check(&mut out, &cfg, "tej.toml", f).unwrap();
            let s = String::from_utf8(out).unwrap();
            assert!(!s.contains("topsecretpw"), "{s}");
            assert!(s.contains("[REDACTED]"), "{s}");
        }
    }
}

/// `tej config`.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCmd {
    /// Validate the configuration, print what it manages (secrets redacted), which file was
    /// used and where each value comes from (file, environment, default).
    Check,
    /// Write a commented tej.toml to start from: every section, secrets as references,
    /// defaults shown. Never replaces an existing file unless --force.
    Init {
        /// What the template describes: services on the host, or in Docker Compose.
        #[arg(long, value_enum, default_value_t = PlatformArg::Host)]
        platform: PlatformArg,
        /// Where to write it.
        #[arg(long, default_value = "tej.toml")]
        path: std::path::PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

/// `--platform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlatformArg {
    /// PostgreSQL, Redis and nginx on the host.
    Host,
    /// The services in a Docker Compose project.
    Compose,
}

/// Runs `tej config check|init`.
pub fn dispatch(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    cmd: ConfigCmd,
) -> anyhow::Result<i32> {
    match cmd {
        ConfigCmd::Check => {
            check(out, ctx.config()?, ctx.config_source()?, ctx.format())?;
        }
        ConfigCmd::Init {
            platform,
            path,
            force,
        } => {
            let platform = match platform {
                PlatformArg::Host => tej_core::config::Platform::Host,
                PlatformArg::Compose => tej_core::config::Platform::Compose,
            };
            Config::write_template(&path, platform, force)?;
            writeln!(
                out,
                "wrote {}: edit it, then run `tej config check`",
                path.display()
            )?;
        }
    }
    Ok(0)
}

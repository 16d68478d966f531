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
    )
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
    /// Validate tej.toml and print what it manages (secrets redacted).
    Check,
}

/// Runs `tej config check`.
pub fn dispatch(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    cmd: ConfigCmd,
) -> anyhow::Result<i32> {
    let ConfigCmd::Check = cmd;
    check(out, ctx.config()?, ctx.config_source()?, ctx.format())?;
    Ok(0)
}

//! `tej`: the command line over the tej libraries. It parses arguments and renders
//! results; every behaviour lives in a library crate.

mod cmd;
mod output;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use output::OutputFormat;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use tej_core::Config;

/// tej — the platform maintenance runbook as typed, tested procedures.
#[derive(Debug, Parser)]
#[command(name = "tej", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Commands,
}

/// Options every command takes.
#[derive(Debug, Args)]
struct GlobalArgs {
    /// The configuration file (default: ./tej.toml when present).
    #[arg(long, global = true, env = "TEJ_CONFIG")]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// The maintenance calendar: next occurrence of every entry, in IST.
    Calendar {
        /// Compute from this instant instead of now (RFC 3339, e.g. 2025-01-16T09:00:00+05:30).
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Validate tej.toml and print what it manages (secrets redacted).
    Check,
}

fn load_config(global: &GlobalArgs) -> Result<(Config, String)> {
    let source = match &global.config {
        Some(p) => p.display().to_string(),
        None if std::path::Path::new("tej.toml").exists() => "tej.toml".to_string(),
        None => "(no tej.toml; environment only)".to_string(),
    };
    let cfg = Config::load_or_env(global.config.as_deref())?;
    Ok((cfg, source))
}

fn run(cli: Cli, out: &mut dyn Write) -> Result<i32> {
    let format = cli.global.output;
    match cli.command {
        Commands::Config(ConfigCmd::Check) => {
            let (cfg, source) = load_config(&cli.global)?;
            cmd::config::check(out, &cfg, &source, format)?;
            Ok(0)
        }
        Commands::Calendar { at } => {
            let (cfg, _) = load_config(&cli.global)?;
            let cal = tej_core::Calendar::runbook_in(cfg.zone())?;
            let now = match at {
                Some(s) => s
                    .parse::<jiff::Timestamp>()
                    .with_context(|| format!("parse --at {s:?} as an RFC 3339 instant"))?,
                None => jiff::Timestamp::now(),
            };
            cmd::calendar::show(out, &cal, now, format)?;
            Ok(0)
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let nagios = cli.global.output == OutputFormat::Nagios;
    let stdout = std::io::stdout();
    let _colour = output::use_colour(stdout.is_terminal());
    let mut lock = stdout.lock();
    let code = match run(cli, &mut lock) {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`tej ... | head`) is not an error.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                0
            } else {
                let _ = lock.flush();
                eprintln!("error: {e:#}");
                if nagios { 3 } else { 1 }
            }
        }
    };
    let _ = lock.flush();
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }
}

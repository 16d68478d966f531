//! The option groups several commands share (`#[command(flatten)]`).

use crate::logging::LogFormat;
use crate::output::{ColorChoice, OutputFormat};
use clap::Args;
use std::path::PathBuf;

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The configuration file (default: the first that exists of ./tej.toml,
    /// $XDG_CONFIG_HOME/tej/tej.toml or ~/.config/tej/tej.toml, and /etc/tej/tej.toml).
    #[arg(long, global = true, env = "TEJ_CONFIG")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Also write check results as a Prometheus textfile (atomically), for node_exporter.
    #[arg(long, global = true, value_name = "FILE")]
    pub prometheus_file: Option<PathBuf>,
    /// Also append check results to this Markdown daily log.
    #[arg(long, global = true, value_name = "FILE")]
    pub daily_log: Option<PathBuf>,
    /// Log level on stderr: warnings by default, -v info, -vv debug, -vvv trace; -q errors
    /// only, -qq nothing. `RUST_LOG` (tracing's filter syntax) replaces it.
    #[command(flatten)]
    pub verbosity: clap_verbosity_flag::Verbosity<clap_verbosity_flag::WarnLevel>,
    /// Log lines on stderr: text, or json (one object per event, for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Colour and progress bars: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

/// Which Compose project and engine.
#[derive(Debug, Args)]
pub struct ComposeArgs {
    /// Compose project name (default: `[compose] project` in tej.toml).
    #[arg(long)]
    pub project: Option<String>,
    /// Docker engine address: unix://, tcp://, https:// or ssh:// (default: tej.toml, then
    /// DOCKER_HOST with DOCKER_TLS_VERIFY/DOCKER_CERT_PATH, then the docker context, then the
    /// local socket).
    #[arg(long)]
    pub docker_host: Option<String>,
}

/// How a check run behaves.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Time limit of each check, in seconds; a check that takes longer is reported Unknown.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Checks running at once.
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
}

impl Default for CheckArgs {
    /// The defaults of the flags (60 s per check, 8 at once).
    fn default() -> Self {
        CheckArgs {
            timeout: 60,
            jobs: 8,
        }
    }
}

/// How a mutating command runs.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Show the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Confirm destructive steps (after reading the plan).
    #[arg(long)]
    pub yes: bool,
    /// In production, allow destructive steps outside the maintenance window (audited).
    #[arg(long)]
    pub outside_window: bool,
}

/// Where backups live.
#[derive(Debug, Args)]
pub struct RepoArgs {
    /// Repository: a path or s3://bucket/prefix (repeatable; default: tej.toml).
    #[arg(long = "repo")]
    pub repos: Vec<String>,
}

/// Which database.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// Connection string (URL or libpq keywords); default: tej.toml, DATABASE_URL, then PG*.
    #[arg(long)]
    pub db: Option<String>,
}

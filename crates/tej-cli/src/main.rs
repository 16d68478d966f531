//! `tej`: the command line over the tej libraries. It parses arguments and renders
//! results; every behaviour lives in a library crate. The arguments become a [`Context`]
//! once (global options, the configuration loaded on first use, one runtime); each noun's
//! arguments and `dispatch` live in `cmd/<noun>.rs`.

mod args;
mod cmd;
mod context;
mod help_examples;
mod logging;
mod output;
mod progress;

use anyhow::Result;
use args::GlobalArgs;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use context::Context;
use output::OutputFormat;
use std::io::{IsTerminal, Write};

/// tej — the platform maintenance runbook as typed, tested procedures.
#[derive(Debug, Parser)]
#[command(name = "tej", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Configuration: validate tej.toml (check), write a commented one to start from (init).
    #[command(subcommand)]
    Config(cmd::config::ConfigCmd),
    /// Compose services: status, logs, restart.
    #[command(subcommand)]
    Services(cmd::services::ServicesCmd),
    /// Zero-downtime deploy of a new image for a service (`[[deploy.service]]` in tej.toml).
    Deploy(cmd::deploy::DeployArgs),
    /// Deploy a service's previous image again (tagged by its last deploy), with no downtime.
    Rollback(cmd::deploy::RollbackArgs),
    /// Emergency procedures.
    #[command(subcommand)]
    Emergency(cmd::emergency::EmergencyCmd),
    /// TLS certificates: probe endpoints, renew with certbot.
    #[command(subcommand)]
    Tls(cmd::tls::TlsCmd),
    /// Secrets: staged rotation of the application's keys, new secret values.
    #[command(subcommand)]
    Secrets(cmd::secrets::SecretsCmd),
    /// Host resources: disk and inodes per mount, memory, swap, load against cores.
    #[command(subcommand)]
    Host(cmd::host::HostCmd),
    /// Application logs.
    #[command(subcommand)]
    Logs(cmd::logs::LogsCmd),
    /// Remove files matching a pattern under a root older than N days (keeps the newest).
    Cleanup(cmd::cleanup::CleanupArgs),
    /// Backups (logical dumps, physical base backups, file sets): create, list, verify,
    /// restore, prune (local and S3).
    #[command(subcommand)]
    Backup(cmd::backup::BackupCmd),
    /// The WAL archive: init, `archive_command` (push), `restore_command` (fetch), list, verify.
    #[command(subcommand)]
    Wal(cmd::wal::WalCmd),
    /// Point-in-time recovery into a data directory from a base backup plus archived WAL
    /// (destructive when the directory is not empty: confirmation, maintenance window).
    Restore(Box<cmd::restore::RestoreCmd>),
    /// The quarterly disaster-recovery drill: restore the newest base backup plus WAL into
    /// a scratch cluster on a free port, run sanity queries, report RTO and RPO, clean up.
    Drill(cmd::drill::DrillCmd),
    /// PostgreSQL health and maintenance.
    #[command(subcommand)]
    Db(cmd::db::DbCmd),
    /// Redis: health, big keys, session invalidation, FLUSHDB outside production.
    #[command(subcommand)]
    Redis(cmd::redis::RedisCmd),
    /// Docker images: prune unused ones (never one in use or kept for rollback).
    #[command(subcommand)]
    Images(cmd::images::ImagesCmd),
    /// Emit the calendar as crontab lines, systemd timer units or Kubernetes CronJobs (IST).
    Schedule(cmd::schedule::ScheduleArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::docs::CompletionsArgs),
    /// Print the man page, or write one page per command into a directory.
    Man(cmd::docs::ManArgs),
    /// The maintenance calendar: next occurrence of every entry, in IST.
    Calendar(cmd::calendar::CalendarArgs),
    /// The daily health check (= `tej run daily`): services, logs, host, PostgreSQL, Redis,
    /// backups and WAL archiving, certificates, custom checks, all at once.
    Health(args::CheckArgs),
    /// Run a calendar procedure: `daily`, `performance`, `weekly` or an entry id
    /// (`tej calendar` lists them).
    Run(cmd::run::RunCmd),
    /// Run the maintenance calendar in-process (containers): every entry at its IST time,
    /// never twice at once across hosts (PostgreSQL advisory locks); stops on SIGTERM.
    Daemon(cmd::daemon::DaemonArgs),
    /// Serve the daily health check's latest results over HTTP, read-only: a status page
    /// `/`, Prometheus `/metrics`, `/healthz`, `/readyz` and `/api/v1/checks` (loopback unless
    /// `[serve] allow_remote` and a token are set); stops on SIGTERM.
    Serve(cmd::serve::ServeArgs),
}

/// Runs the command line: one `dispatch` per noun; the process exit code.
fn run(cli: Cli, out: &mut dyn Write) -> Result<i32> {
    let ctx = Context::new(cli.global);
    match cli.command {
        Commands::Config(c) => cmd::config::dispatch(&ctx, out, c),
        Commands::Services(c) => cmd::services::dispatch(&ctx, out, c),
        Commands::Deploy(a) => cmd::deploy::dispatch(&ctx, out, a),
        Commands::Rollback(a) => cmd::deploy::dispatch_rollback(&ctx, out, a),
        Commands::Emergency(c) => cmd::emergency::dispatch(&ctx, out, c),
        Commands::Tls(c) => cmd::tls::dispatch(&ctx, out, c),
        Commands::Secrets(c) => cmd::secrets::dispatch(&ctx, out, c),
        Commands::Host(c) => cmd::host::dispatch(&ctx, out, c),
        Commands::Logs(c) => cmd::logs::dispatch(&ctx, out, c),
        Commands::Cleanup(a) => cmd::cleanup::dispatch(&ctx, out, a),
        Commands::Backup(c) => cmd::backup::dispatch(&ctx, out, c),
        Commands::Wal(c) => cmd::wal::dispatch(&ctx, out, c),
        Commands::Restore(c) => cmd::restore::dispatch(&ctx, out, *c),
        Commands::Drill(c) => cmd::drill::dispatch(&ctx, out, c),
        Commands::Db(c) => cmd::db::dispatch(&ctx, out, c),
        Commands::Redis(c) => cmd::redis::dispatch(&ctx, out, c),
        Commands::Images(c) => cmd::images::dispatch(&ctx, out, c),
        Commands::Schedule(a) => cmd::schedule::dispatch(&ctx, out, a),
        Commands::Completions(a) => {
            cmd::docs::completions(out, a.shell, <Cli as clap::CommandFactory>::command())?;
            Ok(0)
        }
        Commands::Man(a) => {
            cmd::docs::man(
                out,
                a.dir.as_deref(),
                <Cli as clap::CommandFactory>::command(),
            )?;
            Ok(0)
        }
        Commands::Calendar(a) => cmd::calendar::dispatch(&ctx, out, a),
        Commands::Health(check) => cmd::run::health(&ctx, out, check),
        Commands::Run(c) => cmd::run::dispatch(&ctx, out, c),
        Commands::Daemon(a) => cmd::daemon::dispatch(&ctx, out, a),
        Commands::Serve(a) => cmd::serve::dispatch(&ctx, out, a),
    }
}

/// Whether the command line asks for Nagios output (`--output nagios`, `-o nagios`), so a
/// usage error exits UNKNOWN (3) rather than clap's 2, which reads as CRITICAL.
fn wants_nagios() -> bool {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    args.iter()
        .any(|a| a == "--output=nagios" || a == "-onagios")
        || args
            .windows(2)
            .any(|w| (w[0] == "--output" || w[0] == "-o") && w[1] == "nagios")
}

/// Whether the command line is `tej ... wal fetch ...` (`restore_command`).
fn is_wal_fetch() -> bool {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.windows(2).any(|w| w[0] == "wal" && w[1] == "fetch")
}

fn main() {
    // `restore_command` must exit above 125 for every failure that is not "not archived":
    // a usage error (clap's 2) or a panic (101) would read as "not archived" to
    // PostgreSQL, which would end recovery and promote early.
    let fetch = is_wal_fetch();
    if fetch {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default_hook(info);
            std::process::exit(tej_backup::FETCH_FATAL_EXIT_CODE);
        }));
    }
    // As `Cli::try_parse()`, over the definition with every command's examples in its help.
    let mut command = help_examples::with_examples(Cli::command());
    let parsed = command
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|mut m| Cli::from_arg_matches_mut(&mut m).map_err(|e| e.format(&mut command)));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) if fetch && e.use_stderr() => {
            let _ = e.print();
            std::process::exit(tej_backup::FETCH_FATAL_EXIT_CODE);
        }
        Err(e) if e.use_stderr() && wants_nagios() => {
            let _ = e.print();
            std::process::exit(3);
        }
        Err(e) => e.exit(),
    };
    let nagios = cli.global.output == OutputFormat::Nagios;
    output::set_colour_choice(cli.global.color);
    let log_format = cli.global.log_format;
    logging::init(
        cli.global.verbosity.tracing_level_filter(),
        log_format,
        output::use_colour(std::io::stderr().is_terminal()),
    );
    let mut lock = logging::RedactingOutput::new(std::io::stdout().lock());
    let code = match run(cli, &mut lock) {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`tej ... | head`) is not an error.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                0
            } else {
                let message = format!("{e:#}");
                if nagios {
                    let _ = output::render_nagios_unknown(&mut lock, &logging::redact(&message));
                }
                let _ = lock.flush();
                logging::report_error(log_format, &message);
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

    /// The binary only wires: the arguments become one [`Context`] and each noun is one
    /// `dispatch` call; no configuration loading, runtime or library call of its own.
    #[test]
    fn main_only_dispatches() {
        let src = include_str!("main.rs");
        let lines = src.lines().count();
        assert!(
            lines < 300,
            "main.rs has {lines} lines: move the noun into cmd/"
        );
        let code: String = src[..src.find("#[cfg(test)]").unwrap_or(src.len())]
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for forbidden in [
            "block_on(",
            "Config::load",
            "executor(",
            "tej_backup::Repository",
        ] {
            assert!(
                !code.contains(forbidden),
                "main.rs calls {forbidden:?}: that belongs in cmd/<noun>.rs or a library"
            );
        }
    }
}

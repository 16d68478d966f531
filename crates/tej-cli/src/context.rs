//! The command line turned, once, into what every command uses: the global options, the
//! configuration (loaded on first use, then shared), one async runtime, the executor of
//! mutating commands and the rendering of check reports.

use crate::args::{ComposeArgs, GlobalArgs, RunArgs};
use crate::output::{self, OutputFormat};
use anyhow::{Context as _, Result};
use std::cell::OnceCell;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use tej_core::{Config, Executor, Report};

/// What a command's `dispatch` receives besides its own arguments.
pub struct Context {
    /// The global options.
    pub global: GlobalArgs,
    config: OnceCell<(Config, String)>,
    runtime: OnceCell<tokio::runtime::Runtime>,
}

impl Context {
    /// The context of a command line's global options; nothing is loaded yet.
    pub fn new(global: GlobalArgs) -> Context {
        Context {
            global,
            config: OnceCell::new(),
            runtime: OnceCell::new(),
        }
    }

    /// The output format (`--output`).
    pub fn format(&self) -> OutputFormat {
        self.global.output
    }

    /// The configuration: `--config`, else the first file of tej-core's search path
    /// (`./tej.toml`, `$XDG_CONFIG_HOME/tej/tej.toml`, `/etc/tej/tej.toml`), else the
    /// environment.
    pub fn config(&self) -> Result<&Config> {
        Ok(&self.loaded()?.0)
    }

    /// Where the configuration came from, as `tej config check` prints it.
    pub fn config_source(&self) -> Result<&str> {
        Ok(&self.loaded()?.1)
    }

    fn loaded(&self) -> Result<&(Config, String)> {
        if let Some(c) = self.config.get() {
            return Ok(c);
        }
        let env = |k: &str| std::env::var(k).ok();
        let source = match Config::locate(self.global.config.as_deref(), &env) {
            Some(p) => p.display().to_string(),
            None => format!(
                "(no tej.toml; environment only; searched {})",
                Config::search_path(&env)
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let cfg = Config::load_or_env(self.global.config.as_deref())?;
        crate::logging::register_config(&cfg);
        Ok(self.config.get_or_init(|| (cfg, source)))
    }

    /// The configuration file in use, as an absolute path, for the commands tej writes for
    /// others to run from other directories (`restore_command`, the drill's).
    pub fn config_path(&self) -> Option<PathBuf> {
        let env = |k: &str| std::env::var(k).ok();
        Config::locate(self.global.config.as_deref(), &env)
            .map(|p| tej_core::fsutil::absolute_for_others(&p))
    }

    /// The async runtime, started on first use.
    pub fn runtime(&self) -> Result<&tokio::runtime::Runtime> {
        if let Some(rt) = self.runtime.get() {
            return Ok(rt);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("start the async runtime")?;
        Ok(self.runtime.get_or_init(|| rt))
    }

    /// Runs `fut` to completion on the runtime.
    pub fn block_on<F: std::future::Future>(&self, fut: F) -> Result<F::Output> {
        Ok(self.runtime()?.block_on(fut))
    }

    /// The executor of a mutating command: guard from tej.toml, audit log, the run flags.
    pub fn executor(&self, run: &RunArgs) -> Result<Executor> {
        executor(self.config()?, run)
    }

    /// The Compose project (`--project`, else `[compose] project`) and engine address.
    pub fn compose_target(&self, args: &ComposeArgs) -> Result<(String, Option<String>)> {
        let cfg = self.config()?;
        let project = args
            .project
            .clone()
            .or_else(|| cfg.compose.as_ref().map(|c| c.project.clone()))
            .context("no Compose project: pass --project or set [compose] project in tej.toml")?;
        Ok((project, self.docker_host(args)?))
    }

    /// The Docker engine address: `--docker-host`, else `[compose] docker_host`.
    pub fn docker_host(&self, args: &ComposeArgs) -> Result<Option<String>> {
        let cfg = self.config()?;
        Ok(args
            .docker_host
            .clone()
            .or_else(|| cfg.compose.as_ref().and_then(|c| c.docker_host.clone())))
    }

    /// Renders a check report, writes the Prometheus file and daily log when asked, and
    /// returns the Nagios exit code.
    pub fn finish_report(&self, out: &mut dyn Write, report: &Report) -> Result<i32> {
        let colour = output::use_colour(std::io::stdout().is_terminal());
        output::render_report(out, report, self.global.output, colour)?;
        if let Some(p) = &self.global.prometheus_file {
            output::write_prometheus_file(p, report)
                .with_context(|| format!("write Prometheus textfile {}", p.display()))?;
        }
        if let Some(p) = &self.global.daily_log {
            let at = jiff::Timestamp::now()
                .to_zoned(jiff::tz::TimeZone::get(tej_core::calendar::IST)?)
                .strftime("%Y-%m-%d %H:%M %Z")
                .to_string();
            output::append_daily_log(p, report, &at)
                .with_context(|| format!("append to daily log {}", p.display()))?;
        }
        Ok(report.severity().exit_code())
    }
}

/// The executor every mutating command runs under: guard from tej.toml, audit log, flags.
pub fn executor(cfg: &Config, run: &RunArgs) -> Result<Executor> {
    Ok(Executor::from_config(
        cfg,
        tej_core::RunFlags {
            dry_run: run.dry_run,
            yes: run.yes,
            outside_window: run.outside_window,
        },
    )?)
}

/// Parses `--at` (RFC 3339), else now.
pub fn instant(at: Option<&str>) -> Result<jiff::Timestamp> {
    match at {
        Some(s) => s
            .parse::<jiff::Timestamp>()
            .with_context(|| format!("parse --at {s:?} as an RFC 3339 instant")),
        None => Ok(jiff::Timestamp::now()),
    }
}

/// The exit code of a mutating command: 0 when it succeeded, else 1.
pub fn exit_code(ok: bool) -> i32 {
    if ok { 0 } else { 1 }
}

//! `tej completions SHELL` and `tej man`: generated from the clap definition, so they
//! never drift from the commands; the man pages carry each command's examples
//! ([`crate::help_examples`]).

use anyhow::{Context, Result};
use clap::Command;
use std::io::Write;
use std::path::Path;

/// Writes the completion script for `shell` to `out`.
pub fn completions(out: &mut dyn Write, shell: clap_complete::Shell, cmd: Command) -> Result<()> {
    let mut cmd = crate::help_examples::with_examples(cmd);
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, out);
    Ok(())
}

/// Writes the top-level man page to `out`, or, with `dir`, one page per command
/// (`tej.1`, `tej-backup.1`, `tej-backup-create.1`, ...) into `dir`; each page ends with the
/// command's examples.
pub fn man(out: &mut dyn Write, dir: Option<&Path>, cmd: Command) -> Result<()> {
    let cmd = crate::help_examples::with_examples(cmd);
    match dir {
        None => {
            clap_mangen::Man::new(cmd)
                .render(out)
                .context("render the man page")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            let mut written = Vec::new();
            write_pages(dir, cmd, &mut written)?;
            for p in written {
                writeln!(out, "{}", p.display())?;
            }
        }
    }
    Ok(())
}

fn write_pages(dir: &Path, cmd: Command, written: &mut Vec<std::path::PathBuf>) -> Result<()> {
    let cmd = cmd.disable_help_subcommand(true);
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .with_context(|| format!("render the man page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    tej_core::fsutil::atomic_write(&path, &buf, None)
        .with_context(|| format!("write {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() {
            continue;
        }
        let sub_name = format!("{name}-{}", sub.get_name());
        let sub = sub.clone().display_name(sub_name).bin_name(format!(
            "{} {}",
            cmd.get_bin_name().unwrap_or(cmd.get_name()),
            sub.get_name()
        ));
        write_pages(dir, sub, written)?;
    }
    Ok(())
}

/// `tej completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `tej man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write `tej.1`, `tej-backup.1`, `tej-backup-create.1`, ... here instead of printing `tej.1`.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

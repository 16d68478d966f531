//! The Debian package: `cargo xtask deb` builds it; `cargo xtask test` builds it, installs it
//! with dpkg, checks what it installed, and removes it again.

use super::{TOOLS_ROOT, cargo, cargo_install, status, step, target_dir};
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::Command;

/// cargo-deb, which turns `[package.metadata.deb]` of crates/tej-cli into a .deb.
const CARGO_DEB_VERSION: &str = "3.8.0";

fn cargo_deb_path() -> PathBuf {
    PathBuf::from(TOOLS_ROOT).join("bin/cargo-deb")
}

/// Builds the release binary, its man pages and completions, and the package; returns the
/// .deb's path.
pub(crate) fn build() -> Result<PathBuf> {
    step("Debian package: release build, man pages, completions, cargo deb");
    cargo_install(
        &cargo_deb_path(),
        &format!("cargo-deb@{CARGO_DEB_VERSION}"),
        &[],
    )?;
    status(
        cargo(&["build", "--release", "-p", "tej-cli", "--bin", "tej"]),
        "cargo build --release -p tej-cli",
    )?;
    let release = target_dir().join("release");
    let tej = release.join("tej");
    let man = release.join("man");
    let _ = std::fs::remove_dir_all(&man);
    let mut c = Command::new(&tej);
    c.arg("man").arg("--dir").arg(&man);
    status(c, "tej man --dir")?;
    // Debian ships man pages compressed.
    let mut c = Command::new("sh");
    c.arg("-c").arg("gzip -9nf \"$0\"/*.1").arg(&man);
    status(c, "gzip the man pages")?;
    let completions = release.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("create {}", completions.display()))?;
    for (shell, file) in [("bash", "tej.bash"), ("zsh", "_tej"), ("fish", "tej.fish")] {
        let out = Command::new(&tej)
            .args(["completions", shell])
            .output()
            .with_context(|| format!("run {} completions {shell}", tej.display()))?;
        ensure!(out.status.success(), "tej completions {shell} failed");
        std::fs::write(completions.join(file), &out.stdout)
            .with_context(|| format!("write the {shell} completions"))?;
    }
    let out_dir = target_dir().join("debian");
    let mut c = Command::new(cargo_deb_path());
    c.args(["-p", "tej-cli", "--no-build", "--strip", "--output"])
        .arg(&out_dir);
    status(c, "cargo deb -p tej-cli")?;
    let deb = std::fs::read_dir(&out_dir)
        .with_context(|| format!("read {}", out_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .context("cargo deb wrote no .deb")?;
    println!("{}", deb.display());
    Ok(deb)
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{program} {}: {}\n{text}", args.join(" "), out.status);
    }
    Ok(text)
}

/// Installs `deb`, checks the binary, the system user, the unit, the man pages, the
/// completions and the example configurations, then purges it (also when a check fails).
pub(crate) fn check(deb: &Path) -> Result<()> {
    step("Debian package: install, check, remove");
    let deb = deb.to_string_lossy().into_owned();
    // Installing and purging would replace a real installation and delete its state: never
    // on a machine that has one.
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", "tej"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("installed"));
    ensure!(
        !installed,
        "a tej package is installed on this machine: the package check would replace it and \
         purge its state; run the tests on a machine without it"
    );
    for dir in ["/var/lib/tej", "/var/log/tej"] {
        ensure!(
            !Path::new(dir).exists(),
            "{dir} exists: the package check's purge would delete it; run the tests on a \
             machine without a tej installation"
        );
    }
    run("dpkg", &["-i", &deb]).context("install the package")?;
    let checked = check_installed();
    let removed = run("dpkg", &["--purge", "tej"]).context("purge the package");
    checked?;
    removed?;
    ensure!(
        !Path::new("/usr/bin/tej").exists(),
        "/usr/bin/tej is still there after dpkg --purge"
    );
    println!("package installed, checked and removed");
    Ok(())
}

fn check_installed() -> Result<()> {
    let version = run("/usr/bin/tej", &["--version"])?;
    ensure!(
        version.trim() == format!("tej {}", env!("CARGO_PKG_VERSION")),
        "tej --version printed {version:?}"
    );
    run("getent", &["passwd", "tej"]).context("the tej system user")?;
    run(
        "systemd-analyze",
        &["verify", "/lib/systemd/system/tej-daemon.service"],
    )
    .context("systemd-analyze verify tej-daemon.service")?;
    for path in [
        "/usr/share/man/man1/tej.1.gz",
        "/usr/share/man/man1/tej-backup-create.1.gz",
        "/usr/share/bash-completion/completions/tej",
        "/usr/share/zsh/vendor-completions/_tej",
        "/usr/share/fish/vendor_completions.d/tej.fish",
        "/etc/default/tej",
        "/var/lib/tej",
    ] {
        ensure!(
            Path::new(path).exists(),
            "the package did not install {path}"
        );
    }
    for example in ["tej.toml", "tej.compose.toml"] {
        let path = format!("/usr/share/doc/tej/examples/{example}");
        run("/usr/bin/tej", &["--config", &path, "config", "check"])
            .with_context(|| format!("tej config check of the packaged {example}"))?;
    }
    Ok(())
}

//! `cargo xtask`: project automation in plain Rust.
//!
//! - `cargo xtask test`: installs what the tests need on a fresh Debian machine (when root),
//!   then runs `cargo fmt --check`, `cargo clippy -D warnings`, every test of the workspace
//!   and each micro-benchmark of `benches/` once.
//! - `cargo xtask demo`: runs tej's main job against a sandbox stack started from the test kit.
//! - `cargo xtask bench <name>`: runs one benchmark in release mode (`list` shows them).

mod deb;
mod demo;
mod pitr;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian packages the integration tests and benchmarks need, with a file that proves each is there.
const PACKAGES: &[(&str, &str)] = &[
    ("postgresql-15", "/usr/lib/postgresql/15/bin/initdb"),
    (
        "postgresql-contrib",
        "/usr/share/postgresql/15/extension/pgstattuple.control",
    ),
    ("postgresql-client-15", "/usr/lib/postgresql/15/bin/pg_dump"),
    ("redis-server", "/usr/bin/redis-server"),
    ("redis-tools", "/usr/bin/redis-cli"),
    ("systemd", "/usr/bin/systemd-analyze"),
    ("docker.io", "/usr/sbin/dockerd"),
    ("busybox-static", "/bin/busybox"),
    ("zstd", "/usr/bin/zstd"),
    ("pgbackrest", "/usr/bin/pgbackrest"),
    ("util-linux", "/usr/sbin/runuser"),
    ("python3-venv", "/usr/lib/python3.11/ensurepip/__init__.py"),
    ("ripgrep", "/usr/bin/rg"),
    // promtool, which the `tej serve` tests run on /metrics and the textfile.
    ("prometheus", "/usr/bin/promtool"),
    // The Debian package: strip (binutils), the system user, `systemd-analyze verify`.
    ("binutils", "/usr/bin/strip"),
    ("adduser", "/usr/sbin/adduser"),
    ("systemd", "/usr/bin/systemd-analyze"),
];

/// moto, the S3 server with ListMultipartUploads (5.2.x breaks CompleteMultipartUpload
/// for the AWS SDK: getmoto/moto#10055).
const MOTO_VERSION: &str = "5.1.22";

/// The S3-compatible server the test kit starts (last release that builds on Rust 1.95).
const S3S_FS_VERSION: &str = "0.14.1";
/// cargo-deny, for licenses, banned and duplicate crates and sources (deny.toml).
const CARGO_DENY_VERSION: &str = "0.20.2";
const TOOLS_ROOT: &str = "/opt/tej-tools";

/// Benchmarks: name, package, example, what it compares.
const BENCHES: &[(&str, &str, &str, &str)] = &[
    (
        "backup",
        "tej-backup",
        "bench_backup",
        "tej backup vs pg_dump | gzip and bare pg_dump on ~500 MB of text-heavy data",
    ),
    (
        "pg",
        "tej-db",
        "bench_pg",
        "daily PostgreSQL check and weekly audit on a pgbench scale-20 database",
    ),
    (
        "pitr",
        "tej-backup",
        "bench_physical, bench_wal_push, bench_backlog",
        "base backup, restore, WAL push and archive backlog vs pgBackRest (release tej binary)",
    ),
    (
        "logs",
        "tej-benches",
        "bench_log_review",
        "tej logs review vs four grep -i passes and one rg -c on 1 GiB logs of two shapes",
    ),
    (
        "micro",
        "tej-benches",
        "benches/: pipeline, retention, log_review",
        "criterion: backup pipeline throughput, retention over 10 000 manifests, log-review loop",
    ),
];

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("enter {}", root.display()))?;
    match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("install-deps") => install_deps(),
        Some("deb") => {
            let deb = deb::build()?;
            if args.get(1).map(String::as_str) == Some("--check") {
                deb::check(&deb)?;
            }
            Ok(())
        }
        _ => {
            eprintln!("usage: cargo xtask <test|demo|bench NAME|install-deps>");
            eprintln!(
                "  test           install test dependencies (root), fmt check, clippy, all tests"
            );
            eprintln!("  demo           run tej's main job against a sandbox stack");
            eprintln!(
                "  bench NAME     run a benchmark ({})",
                BENCHES.iter().map(|b| b.0).collect::<Vec<_>>().join(", ")
            );
            eprintln!("  install-deps   only install the system packages and the S3 test server");
            eprintln!(
                "  deb [--check]  build the Debian package (target/debian/); --check installs, checks and removes it"
            );
            bail!("unknown or missing command")
        }
    }
}

/// Where cargo puts build output: `CARGO_TARGET_DIR`, else `target/` in the workspace.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

fn step(title: &str) {
    println!("\n==> {title}");
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

fn status(mut c: Command, what: &str) -> Result<()> {
    let st = c.status().with_context(|| format!("start {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

fn install_deps() -> Result<()> {
    step("system packages");
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, proof)| !Path::new(proof).exists())
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        println!("all present");
    } else if tej_testkit::is_root() {
        println!("installing {}", missing.join(" "));
        status(cmd("apt-get", &["update", "-qq"]), "apt-get update")?;
        let mut c = cmd(
            "apt-get",
            &["install", "-y", "-qq", "--no-install-recommends"],
        );
        c.args(&missing).env("DEBIAN_FRONTEND", "noninteractive");
        status(c, "apt-get install")?;
    } else {
        bail!(
            "missing packages: {} (run as root, or: sudo apt-get install {})",
            missing.join(" "),
            missing.join(" ")
        );
    }
    step("S3-compatible test server (s3s-fs)");
    cargo_install(
        &s3s_fs_path(),
        &format!("s3s-fs@{S3S_FS_VERSION}"),
        &["--features", "binary"],
    )?;
    step("dependency checks (cargo-deny)");
    cargo_install(
        &cargo_deny_path(),
        &format!("cargo-deny@{CARGO_DENY_VERSION}"),
        &[],
    )?;
    step("S3-compatible test server with multipart listing (moto)");
    let venv = PathBuf::from(TOOLS_ROOT).join("moto");
    if venv.join("bin/moto_server").exists() {
        println!("moto present: {}", venv.join("bin/moto_server").display());
    } else {
        let mut c = Command::new("python3");
        c.args(["-m", "venv"]).arg(&venv);
        status(c, "python3 -m venv /opt/tej-tools/moto")?;
        let mut c = Command::new(venv.join("bin/pip"));
        c.args([
            "install",
            "--quiet",
            &format!("moto[server]=={MOTO_VERSION}"),
        ]);
        status(c, "pip install moto[server]")?;
    }
    Ok(())
}

/// Installs `spec` (`crate@version`, with `--locked`) into the tools root unless `bin` is
/// there.
fn cargo_install(bin: &std::path::Path, spec: &str, extra: &[&str]) -> Result<()> {
    if bin.is_file() {
        println!("{}", bin.display());
        return Ok(());
    }
    let mut c = cmd(
        "cargo",
        &["install", spec, "--locked", "--root", TOOLS_ROOT],
    );
    c.args(extra).env_remove("CARGO_TARGET_DIR");
    status(c, &format!("cargo install {spec}"))
}

fn cargo_deny_path() -> PathBuf {
    PathBuf::from(TOOLS_ROOT).join("bin/cargo-deny")
}

fn s3s_fs_path() -> PathBuf {
    if let Some(p) = std::env::var_os("TEJ_S3S_FS") {
        return PathBuf::from(p);
    }
    PathBuf::from(TOOLS_ROOT).join("bin/s3s-fs")
}

/// A cargo command without the package variables `cargo run` gave xtask: build scripts
/// that watch them (ring's watches `CARGO_MANIFEST_DIR` and `CARGO_PKG_NAME`) would otherwise
/// rerun, and everything above them rebuild, on every xtask build.
fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(args);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || matches!(
                k.as_ref(),
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            )
        {
            c.env_remove(k.as_ref());
        }
    }
    c
}

fn test(extra: &[String]) -> Result<()> {
    install_deps()?;
    step("cargo fmt --check");
    status(
        cargo(&["fmt", "--all", "--", "--check"]),
        "cargo fmt --check (run `cargo fmt --all`)",
    )?;
    step("cargo clippy -D warnings");
    status(
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        "cargo clippy",
    )?;
    step("cargo deny: licenses, bans (duplicates, banned crates), sources");
    let mut c = Command::new(cargo_deny_path());
    c.args(["--offline", "check", "licenses", "bans", "sources"]);
    status(c, "cargo deny check (deny.toml)")?;
    step("cargo test (unit, integration against real servers, doc tests)");
    let mut c = cargo(&["test", "--workspace", "--no-fail-fast"]);
    c.args(extra).env("TEJ_S3S_FS", s3s_fs_path());
    status(c, "cargo test")?;
    step("cargo test --benches (each micro-benchmark of benches/ once, as a test)");
    status(
        cargo(&["test", "-p", "tej-benches", "--benches"]),
        "cargo test -p tej-benches --benches",
    )?;
    let deb = deb::build()?;
    deb::check(&deb)?;
    println!("\nall checks passed");
    Ok(())
}

fn bench(args: &[String]) -> Result<()> {
    let name = args.first().map(String::as_str).unwrap_or("list");
    let Some((_, pkg, example, what)) = BENCHES.iter().find(|b| b.0 == name) else {
        println!("benchmarks:");
        for (n, _, _, what) in BENCHES {
            println!("  cargo xtask bench {n:<8} {what}");
        }
        if name == "list" {
            return Ok(());
        }
        bail!("unknown benchmark {name:?}");
    };
    if name == "pitr" {
        return pitr::run(&args[1..]);
    }
    if name == "micro" {
        return micro(&args[1..]);
    }
    install_deps()?;
    step(&format!("bench {name}: {what}"));
    if name == "logs" {
        // The log benchmark also times `tej logs review` as an operator runs it.
        status(
            cargo(&[
                "build",
                "--release",
                "--quiet",
                "-p",
                "tej-cli",
                "--bin",
                "tej",
            ]),
            "cargo build --release -p tej-cli",
        )?;
    }
    let mut c = cargo(&[
        "run",
        "--release",
        "--quiet",
        "-p",
        pkg,
        "--example",
        example,
        "--",
    ]);
    c.args(&args[1..]).env("TEJ_S3S_FS", s3s_fs_path());
    status(c, &format!("benchmark {name}"))
}

/// `cargo xtask bench micro [FILTER...]`: the criterion benchmarks of `benches/`
/// (`cargo bench -p tej-benches`; FILTER and criterion's options pass through), then the
/// median and its throughput of every benchmark this run measured, as a Markdown table.
fn micro(args: &[String]) -> Result<()> {
    step("bench micro: criterion benchmarks of benches/ (release)");
    let home = target_dir().join("criterion");
    let started = std::time::SystemTime::now();
    let mut c = cargo(&["bench", "-p", "tej-benches", "--"]);
    c.args(args).env("CRITERION_HOME", &home);
    status(c, "cargo bench -p tej-benches")?;
    let mut rows = Vec::new();
    collect_medians(&home, started, &mut rows)?;
    rows.sort();
    step("medians");
    println!("| benchmark | median | throughput at the median |");
    println!("|---|---|---|");
    for (id, line) in &rows {
        println!("| {id} | {line}");
    }
    if rows.is_empty() {
        bail!("no benchmark results under {}", home.display());
    }
    Ok(())
}

/// Finds `new/benchmark.json` and `new/estimates.json` written since `since` under `dir`.
fn collect_medians(
    dir: &Path,
    since: std::time::SystemTime,
    rows: &mut Vec<(String, String)>,
) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        let estimates = p.join("estimates.json");
        let fresh = std::fs::metadata(&estimates)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        if p.file_name().is_some_and(|n| n == "new") && fresh {
            let read = |f: &Path| -> Result<serde_json::Value> {
                let text =
                    std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?;
                serde_json::from_str(&text).with_context(|| format!("parse {}", f.display()))
            };
            let bench = read(&p.join("benchmark.json"))?;
            let est = read(&estimates)?;
            let ns = est["median"]["point_estimate"]
                .as_f64()
                .with_context(|| format!("no median in {}", estimates.display()))?;
            let id = bench["full_id"].as_str().unwrap_or("?").to_string();
            let per_sec = |n: f64| n / (ns / 1e9);
            let throughput = match (
                bench["throughput"]["Bytes"].as_f64(),
                bench["throughput"]["Elements"].as_f64(),
            ) {
                (Some(b), _) => format!("{:.0} MiB/s", per_sec(b) / f64::from(1 << 20)),
                (None, Some(n)) => format!("{:.2} M elements/s", per_sec(n) / 1e6),
                _ => String::new(),
            };
            rows.push((id, format!("{} | {throughput} |", human_ns(ns))));
        } else {
            collect_medians(&p, since, rows)?;
        }
    }
    Ok(())
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

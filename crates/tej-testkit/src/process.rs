//! Running programs: locating binaries, dropping root for PostgreSQL, waiting for ports,
//! and child processes that die with their handle.

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Whether this process runs as root (effective uid 0): then servers run as `postgres`.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The `postgres` OS user, looked up once.
pub(crate) fn postgres_user() -> Option<&'static User> {
    static USER: OnceLock<Option<User>> = OnceLock::new();
    USER.get_or_init(|| User::from_name("postgres").ok().flatten())
        .as_ref()
}

/// Makes `cmd` run as the `postgres` OS user when this process is root, so callers can
/// run PostgreSQL's server programs (`initdb`, `pg_ctl`, `postgres`, `pg_basebackup`…),
/// which refuse to run as root.
///
/// Sets the child's uid and gid (supplementary groups are dropped) and its `HOME`,
/// `USER` and `LOGNAME`. Does nothing when not root, or when there is no `postgres`
/// user (the program then fails with its own message). Files the program must read or
/// write have to be accessible to `postgres`, e.g. under [`crate::PgCluster::base_dir`];
/// set an accessible working directory with [`Command::current_dir`] if the current one
/// is not.
pub fn run_as_postgres(cmd: &mut Command) {
    if !is_root() {
        return;
    }
    if let Some(user) = postgres_user() {
        cmd.uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .env("HOME", &user.dir)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    }
}

/// Finds `name` on `PATH`.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Whether `path` is an executable regular file.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds `name` on `PATH` or at one of `fallbacks`; the error says how to install it.
pub(crate) fn require_binary(name: &str, fallbacks: &[&str], install: &str) -> Result<PathBuf> {
    if let Some(p) = find_on_path(name) {
        return Ok(p);
    }
    for f in fallbacks {
        let p = PathBuf::from(f);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    bail!("{name} not found: {install}")
}

/// Runs `cmd` to completion, capturing its output; `what` names it in errors.
pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout_suffix(&out.stdout)
        );
    }
    Ok(out)
}

/// Runs `cmd` with `input` on its stdin, capturing its output; errors name `what` and
/// include stderr.
pub(crate) fn run_with_input(cmd: &mut Command, input: &[u8], what: &str) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {what}"))?;
    let mut stdin = child.stdin.take().context("child stdin")?;
    let input = input.to_vec();
    // Write from another thread so a large output cannot deadlock against a large input.
    let writer = std::thread::spawn(move || {
        let r = stdin.write_all(&input);
        drop(stdin);
        r
    });
    let out = child
        .wait_with_output()
        .with_context(|| format!("wait for {what}"))?;
    let write_result = writer.join();
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout_suffix(&out.stdout)
        );
    }
    match write_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e).with_context(|| format!("write the input of {what}")),
        Err(_) => bail!("the thread writing the input of {what} panicked"),
    }
    Ok(out)
}

/// Runs `cmd` (output captured) but kills it after `timeout`; used in `Drop`, where a
/// hung daemon must not hang the test.
pub(crate) fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let mut stderr = child.stderr.take()?;
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    Some(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

fn stdout_suffix(stdout: &[u8]) -> String {
    let s = String::from_utf8_lossy(stdout);
    let s = s.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!("\n--- stdout ---\n{}", tail(s, 4000))
    }
}

/// The last `max` bytes of `s` (on a char boundary).
pub(crate) fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// The contents of a log file (lossy UTF-8), or an empty string if it cannot be read.
pub(crate) fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let log = read_log(path);
    format!("--- {} ---\n{}", path.display(), tail(log.trim_end(), 6000))
}

/// Opens `path` for appending a child's stdout and stderr.
pub(crate) fn log_stdio(path: &Path) -> Result<(Stdio, Stdio)> {
    let f = File::options()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open log file {}", path.display()))?;
    let g = f
        .try_clone()
        .with_context(|| format!("reopen log file {}", path.display()))?;
    Ok((Stdio::from(f), Stdio::from(g)))
}

/// A loopback socket address.
pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub(crate) fn port_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&loopback(port), Duration::from_millis(200)).is_ok()
}

/// Outcome of waiting for a freshly spawned server.
pub(crate) enum Ready {
    /// It answers.
    Yes,
    /// The process exited before answering (e.g. its port was taken).
    Exited(std::process::ExitStatus),
}

/// Polls `probe` until it returns true, the child exits, or `timeout` passes (error).
pub(crate) fn wait_ready(
    child: &mut Child,
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> bool,
) -> Result<Ready> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(status) = child.try_wait().with_context(|| format!("poll {what}"))? {
            return Ok(Ready::Exited(status));
        }
        if probe() {
            return Ok(Ready::Yes);
        }
        if Instant::now() >= deadline {
            bail!("{what} did not answer within {timeout:?}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// How many ports a server start tries before giving up on collisions.
pub(crate) const START_ATTEMPTS: usize = 5;

/// Starts a server on a free loopback port, trying another port when the log says the
/// chosen one was taken meanwhile. `spawn(port)` starts the child (logging to `log`);
/// `probe(port)` tells whether it answers. On any other failure `dir` is kept for inspection.
pub(crate) fn start_on_free_port(
    what: &str,
    dir: &mut crate::scratch::ScratchDir,
    log: &Path,
    mut spawn: impl FnMut(u16) -> Result<Child>,
    probe: impl Fn(u16) -> bool,
) -> Result<(ChildGuard, u16)> {
    let mut last_err = None;
    for _ in 0..START_ATTEMPTS {
        let port = crate::free_port();
        let mut child = ChildGuard::new(spawn(port)?);
        match wait_ready(child.child(), Duration::from_secs(15), what, || probe(port)) {
            Ok(Ready::Yes) => return Ok((child, port)),
            Ok(Ready::Exited(status)) => {
                let e = anyhow::anyhow!("{what} exited ({status})\n{}", log_tail(log));
                if !says_address_in_use(&read_log(log)) {
                    dir.mark_failed();
                    return Err(e);
                }
                last_err = Some(e);
                let _ = std::fs::remove_file(log);
            }
            Err(e) => {
                dir.mark_failed();
                return Err(e.context(log_tail(log)));
            }
        }
    }
    dir.mark_failed();
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("{what} did not start")))
        .context(format!("{START_ATTEMPTS} attempts found no free port"))
}

/// Whether a log says a listening socket could not be bound because it is taken.
pub(crate) fn says_address_in_use(log: &str) -> bool {
    let l = log.to_ascii_lowercase();
    l.contains("address already in use") || l.contains("could not bind") || l.contains("addrinuse")
}

/// Sends `signal` to `pid`, ignoring errors (the process may be gone already).
pub(crate) fn signal(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), signal);
    }
}

/// Whether a process with this pid exists (and is not a zombie we could reap).
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if kill(Pid::from_raw(raw), None).is_err() {
        return false;
    }
    // A zombie still "exists" for kill(0); treat it as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Pids of processes (other than this one) whose command line mentions `dir/`.
pub(crate) fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = format!("{}/", dir.display());
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

/// A spawned server process, killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub(crate) struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub(crate) fn new(child: Child) -> ChildGuard {
        ChildGuard { child: Some(child) }
    }

    pub(crate) fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until drop")
    }

    pub(crate) fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILLs; always reaps.
    pub(crate) fn terminate(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            signal(child.id(), Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_char_boundaries() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("aéb", 2), "b");
    }

    #[test]
    fn address_in_use_is_recognised() {
        assert!(says_address_in_use(
            "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use"
        ));
        assert!(says_address_in_use(
            "Warning: Could not create server TCP listening socket 127.0.0.1:6379: bind: Address already in use"
        ));
        assert!(!says_address_in_use("ready to accept connections"));
    }

    #[test]
    fn missing_binary_names_the_package() {
        let err = require_binary(
            "surely-not-a-real-binary-tej",
            &["/nonexistent/x"],
            "apt-get install foo",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "surely-not-a-real-binary-tej not found: apt-get install foo"
        );
    }
}

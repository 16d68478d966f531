//! The one way tej starts external programs: argv only, never a shell string.

use crate::secret::{Redactor, Secret};
use async_trait::async_trait;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Most bytes of stdout `run` keeps in memory; use `spawn` to stream more.
pub const MAX_CAPTURE: usize = 64 * 1024 * 1024;
/// How much of stderr is kept (the tail) for error messages.
pub const STDERR_TAIL: usize = 16 * 1024;

/// The value of one environment variable for a child process.
#[derive(Clone)]
pub enum EnvValue {
    /// A value that may be shown.
    Plain(String),
    /// A secret (shown as `[REDACTED]`).
    Secret(Secret),
}

impl fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvValue::Plain(v) => write!(f, "{v:?}"),
            EnvValue::Secret(_) => f.write_str(crate::secret::REDACTED),
        }
    }
}

/// What the child reads on standard input.
#[derive(Debug, Clone, Default)]
pub enum StdinSpec {
    /// Nothing (`/dev/null`).
    #[default]
    Null,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// A pipe the caller writes to (with [`CommandRunner::spawn`] only).
    Piped,
}

/// A program to run, with its arguments and environment.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    /// Program name (searched in PATH and the PostgreSQL bin dirs) or path.
    pub program: String,
    /// Arguments, passed as they are.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(String, EnvValue)>,
    /// Start from an empty environment (plus `env`).
    pub env_clear: bool,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Kill the program after this long.
    pub timeout: Option<Duration>,
    /// Standard input.
    pub stdin: StdinSpec,
    /// Kill the program when this token is cancelled.
    pub cancel: Option<CancellationToken>,
}

impl CommandSpec {
    /// A program with no arguments.
    pub fn new(program: impl Into<String>) -> CommandSpec {
        CommandSpec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_clear: false,
            cwd: None,
            timeout: None,
            stdin: StdinSpec::Null,
            cancel: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), EnvValue::Plain(v.into())));
        self
    }

    /// Sets a secret environment variable (e.g. `PGPASSWORD`).
    pub fn secret_env(mut self, k: impl Into<String>, v: Secret) -> Self {
        self.env.push((k.into(), EnvValue::Secret(v)));
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets a timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Feeds these bytes on stdin.
    pub fn stdin_bytes(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.stdin = StdinSpec::Bytes(b.into());
        self
    }

    /// Gives the caller a stdin pipe (with `spawn`).
    pub fn stdin_piped(mut self) -> Self {
        self.stdin = StdinSpec::Piped;
        self
    }

    /// Cancels (kills) the program when `token` is cancelled.
    pub fn cancel_on(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// The command line for logs: program and arguments, shell-quoted, no environment.
    pub fn display(&self) -> String {
        let args: Vec<std::borrow::Cow<'_, str>> =
            self.args.iter().map(|a| a.to_string_lossy()).collect();
        let line = crate::shell::display_command(&self.program, args.iter().map(|a| a.as_ref()));
        crate::secret::redact_url_passwords(&line)
    }

    fn secrets(&self) -> Redactor {
        let mut r = Redactor::new();
        for (_, v) in &self.env {
            if let EnvValue::Secret(s) = v {
                r.add(s);
            }
        }
        r
    }
}

/// How a finished program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal number, if it was killed by one.
    pub signal: Option<i32>,
}

impl ExitInfo {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}"),
            _ => f.write_str("unknown exit status"),
        }
    }
}

/// A finished program's status and captured output.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// How it ended.
    pub status: ExitInfo,
    /// Standard output (empty when streamed).
    pub stdout: Vec<u8>,
    /// The tail of standard error (at most [`STDERR_TAIL`] bytes), secrets redacted.
    pub stderr: String,
    /// Wall time.
    pub duration: Duration,
}

impl CommandOutput {
    /// The output of a process that exited with `code`, as a [`MockCommandRunner`] returns
    /// it in tests (no signal, zero duration).
    pub fn exited(code: i32, stdout: &str, stderr: &str) -> CommandOutput {
        CommandOutput {
            status: ExitInfo {
                code: Some(code),
                signal: None,
            },
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.to_string(),
            duration: Duration::ZERO,
        }
    }

    /// Standard output as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Why a program could not be run or did not succeed: tej-core's [`Error`](crate::Error)
/// (its `NotFound`, `PermissionDenied`, `TimedOut`, `Cancelled`, `Failed` and `Io` variants).
pub type CommandError = crate::Error;

impl crate::Error {
    /// Turns an unsuccessful output into [`Error::Failed`](crate::Error::Failed).
    pub fn check(command: &CommandSpec, out: CommandOutput) -> Result<CommandOutput, CommandError> {
        if out.status.success() {
            Ok(out)
        } else {
            Err(CommandError::Failed {
                command: command.display(),
                status: out.status,
                stderr: out.stderr.trim().to_string(),
            })
        }
    }
}

/// The Debian package that provides a program tej runs.
pub fn debian_package_for(program: &str) -> Option<&'static str> {
    let name = Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program);
    Some(match name {
        "pg_dump" | "pg_dumpall" | "pg_restore" | "psql" | "pg_isready" | "pg_basebackup"
        | "pg_receivewal" | "pg_verifybackup" | "pg_waldump" | "pg_amcheck" | "pgbench" => {
            "postgresql-client-15"
        }
        "postgres" | "initdb" | "pg_ctl" | "pg_controldata" | "pg_resetwal" | "pg_rewind"
        | "pg_checksums" => "postgresql-15",
        "redis-server" => "redis-server",
        "redis-cli" => "redis-tools",
        "certbot" => "certbot",
        "nginx" => "nginx",
        "ufw" => "ufw",
        "docker" | "dockerd" => "docker.io",
        "zstd" => "zstd",
        "gzip" | "gunzip" => "gzip",
        "tar" => "tar",
        "busybox" => "busybox-static",
        "pgbackrest" => "pgbackrest",
        "npm" | "node" => "npm",
        "openssl" => "openssl",
        "runuser" => "util-linux",
        _ => return None,
    })
}

/// Directories searched after PATH: PostgreSQL's server binaries are not on PATH on Debian.
pub const EXTRA_PROGRAM_DIRS: &[&str] = &[
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
    "/usr/sbin",
    "/sbin",
];

/// Finds a program: a path is taken as it is; a bare name is searched in PATH,
/// then in [`EXTRA_PROGRAM_DIRS`].
pub fn locate_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_PROGRAM_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

type WaitFuture = Pin<Box<dyn Future<Output = Result<CommandOutput, CommandError>> + Send>>;

/// A started program whose stdin and stdout the caller streams.
pub struct RunningCommand {
    /// Writable stdin when the spec asked for [`StdinSpec::Piped`].
    pub stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Readable stdout.
    pub stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    wait: WaitFuture,
}

impl fmt::Debug for RunningCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningCommand").finish_non_exhaustive()
    }
}

impl RunningCommand {
    /// Builds one from parts; mocks and fakes use this.
    pub fn from_parts(
        stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
        stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
        wait: impl Future<Output = Result<CommandOutput, CommandError>> + Send + 'static,
    ) -> RunningCommand {
        RunningCommand {
            stdin,
            stdout,
            wait: Box::pin(wait),
        }
    }

    /// Waits for the program to end (closing stdin first if the caller still holds it).
    /// Does not check the exit status; see [`CommandError::check`].
    pub async fn wait(mut self) -> Result<CommandOutput, CommandError> {
        drop(self.stdin.take());
        self.wait.await
    }
}

/// Starts external programs.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait CommandRunner: Send + Sync {
    /// Runs to completion, capturing stdout (up to [`MAX_CAPTURE`]) and the tail of stderr.
    /// A non-zero exit is *not* an error here; use [`CommandError::check`].
    async fn run(&self, spec: CommandSpec) -> Result<CommandOutput, CommandError>;

    /// Starts the program and hands over its stdout (and stdin when piped) for streaming.
    async fn spawn(&self, spec: CommandSpec) -> Result<RunningCommand, CommandError>;
}

/// Runs `spec` and fails unless it exits 0.
pub async fn run_checked(
    runner: &dyn CommandRunner,
    spec: CommandSpec,
) -> Result<CommandOutput, CommandError> {
    let out = runner.run(spec.clone()).await?;
    CommandError::check(&spec, out)
}

/// The real runner, on tokio's process support.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioCommandRunner;

impl TokioCommandRunner {
    fn build(spec: &CommandSpec) -> Result<tokio::process::Command, CommandError> {
        let path = locate_program(&spec.program).ok_or_else(|| CommandError::NotFound {
            program: spec.program.clone(),
            package: debian_package_for(&spec.program),
        })?;
        let mut cmd = tokio::process::Command::new(path);
        cmd.args(&spec.args);
        if spec.env_clear {
            cmd.env_clear();
        }
        for (k, v) in &spec.env {
            match v {
                EnvValue::Plain(s) => cmd.env(k, s),
                EnvValue::Secret(s) => cmd.env(k, s.expose()),
            };
        }
        if let Some(d) = &spec.cwd {
            cmd.current_dir(d);
        }
        cmd.stdin(match spec.stdin {
            StdinSpec::Null => Stdio::null(),
            _ => Stdio::piped(),
        });
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Ok(cmd)
    }

    fn spawn_child(spec: &CommandSpec) -> Result<tokio::process::Child, CommandError> {
        let mut cmd = Self::build(spec)?;
        cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CommandError::NotFound {
                program: spec.program.clone(),
                package: debian_package_for(&spec.program),
            },
            std::io::ErrorKind::PermissionDenied => CommandError::PermissionDenied {
                program: spec.program.clone(),
            },
            _ => CommandError::Io {
                command: spec.display(),
                reason: e.to_string(),
            },
        })
    }
}

async fn read_tail(mut r: impl AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * keep {
                    let cut = tail.len() - keep;
                    tail.drain(..cut);
                }
            }
        }
    }
    if tail.len() > keep {
        let cut = tail.len() - keep;
        tail.drain(..cut);
    }
    tail
}

fn exit_info(status: std::process::ExitStatus) -> ExitInfo {
    use std::os::unix::process::ExitStatusExt;
    ExitInfo {
        code: status.code(),
        signal: status.signal(),
    }
}

async fn supervise(
    mut child: tokio::process::Child,
    spec: CommandSpec,
    stderr_task: tokio::task::JoinHandle<Vec<u8>>,
    stdout_task: Option<tokio::task::JoinHandle<Vec<u8>>>,
    started: Instant,
) -> Result<CommandOutput, CommandError> {
    let cancel = spec.cancel.clone().unwrap_or_default();
    let timeout = spec
        .timeout
        .unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
    let waited = tokio::select! {
        r = child.wait() => Ok(r),
        _ = tokio::time::sleep(timeout) => Err(CommandError::TimedOut { command: spec.display(), after: timeout }),
        _ = cancel.cancelled() => Err(CommandError::Cancelled { command: spec.display() }),
    };
    let status = match waited {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(CommandError::Io {
                command: spec.display(),
                reason: e.to_string(),
            });
        }
        Err(e) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(e);
        }
    };
    let stdout = match stdout_task {
        Some(t) => t.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let stderr_raw = stderr_task.await.unwrap_or_default();
    let stderr = spec.secrets().redact(&String::from_utf8_lossy(&stderr_raw));
    Ok(CommandOutput {
        status: exit_info(status),
        stdout,
        stderr,
        duration: started.elapsed(),
    })
}

#[async_trait]
impl CommandRunner for TokioCommandRunner {
    async fn run(&self, spec: CommandSpec) -> Result<CommandOutput, CommandError> {
        let started = Instant::now();
        let mut child = Self::spawn_child(&spec)?;
        if let (StdinSpec::Bytes(b), Some(mut stdin)) = (&spec.stdin, child.stdin.take()) {
            let b = b.clone();
            tokio::spawn(async move {
                let _ = stdin.write_all(&b).await;
                let _ = stdin.shutdown().await;
            });
        }
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr_task = tokio::spawn(read_tail(stderr, STDERR_TAIL));
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let stdout_task = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if out.len() < MAX_CAPTURE {
                            let take = n.min(MAX_CAPTURE - out.len());
                            out.extend_from_slice(&buf[..take]);
                        }
                    }
                }
            }
            out
        });
        supervise(child, spec, stderr_task, Some(stdout_task), started).await
    }

    async fn spawn(&self, spec: CommandSpec) -> Result<RunningCommand, CommandError> {
        let started = Instant::now();
        let mut child = Self::spawn_child(&spec)?;
        let mut stdin: Option<Box<dyn AsyncWrite + Send + Unpin>> = None;
        match (&spec.stdin, child.stdin.take()) {
            (StdinSpec::Bytes(b), Some(mut s)) => {
                let b = b.clone();
                tokio::spawn(async move {
                    let _ = s.write_all(&b).await;
                    let _ = s.shutdown().await;
                });
            }
            (StdinSpec::Piped, Some(s)) => stdin = Some(Box::new(s)),
            _ => {}
        }
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr_task = tokio::spawn(read_tail(stderr, STDERR_TAIL));
        let stdout: Option<Box<dyn AsyncRead + Send + Unpin>> = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>);
        let wait = supervise(child, spec, stderr_task, None, started);
        Ok(RunningCommand {
            stdin,
            stdout,
            wait: Box::pin(wait),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_argv_without_a_shell() {
        let r = TokioCommandRunner;
        let out = r
            .run(CommandSpec::new("echo").arg("a b; rm -rf /").arg("$HOME"))
            .await
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout_text(), "a b; rm -rf / $HOME\n");
    }

    #[tokio::test]
    async fn missing_program_names_package() {
        let e = TokioCommandRunner
            .run(CommandSpec::new("certbot-definitely-missing"))
            .await
            .unwrap_err();
        assert!(matches!(e, CommandError::NotFound { .. }), "{e}");
        let e = CommandError::NotFound {
            program: "pg_dump".into(),
            package: debian_package_for("pg_dump"),
        };
        assert_eq!(
            e.to_string(),
            "pg_dump not found (install the Debian package postgresql-client-15)"
        );
    }

    #[tokio::test]
    async fn stdin_env_cwd_and_exit_codes() {
        let r = TokioCommandRunner;
        let out = r
            .run(CommandSpec::new("cat").stdin_bytes(b"hello".to_vec()))
            .await
            .unwrap();
        assert_eq!(out.stdout, b"hello");
        let dir = tempfile::tempdir().unwrap();
        let out = r
            .run(
                CommandSpec::new("sh")
                    .args(["-c", "pwd; echo $TEJ_X; exit 3"])
                    .env("TEJ_X", "42")
                    .cwd(dir.path()),
            )
            .await
            .unwrap();
        assert_eq!(out.status.code, Some(3));
        let text = out.stdout_text();
        assert!(text.contains("42"));
        let spec = CommandSpec::new("false");
        let out = r.run(spec.clone()).await.unwrap();
        assert!(matches!(
            CommandError::check(&spec, out),
            Err(CommandError::Failed { .. })
        ));
    }

    #[tokio::test]
    async fn timeout_kills() {
        let started = Instant::now();
        let e = TokioCommandRunner
            .run(
                CommandSpec::new("sleep")
                    .arg("30")
                    .timeout(Duration::from_millis(200)),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, CommandError::TimedOut { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[tokio::test]
    async fn cancellation_kills() {
        let token = CancellationToken::new();
        let t2 = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            t2.cancel();
        });
        let e = TokioCommandRunner
            .run(CommandSpec::new("sleep").arg("30").cancel_on(token))
            .await
            .unwrap_err();
        assert!(matches!(e, CommandError::Cancelled { .. }));
    }

    #[tokio::test]
    async fn streaming_stdin_and_stdout() {
        let mut child = TokioCommandRunner
            .spawn(CommandSpec::new("tr").args(["a-z", "A-Z"]).stdin_piped())
            .await
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let writer = tokio::spawn(async move {
            for _ in 0..1000 {
                stdin.write_all(b"streamed line\n").await.unwrap();
            }
        });
        let mut got = Vec::new();
        stdout.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        let out = child.wait().await.unwrap();
        assert!(out.status.success());
        assert_eq!(got.len(), 14 * 1000);
        assert!(got.starts_with(b"STREAMED LINE\n"));
    }

    #[tokio::test]
    async fn secrets_stay_out_of_display_and_stderr() {
        let spec = CommandSpec::new("sh")
            .args(["-c", "echo \"bad password $PGPASSWORD\" >&2; exit 1"])
            .secret_env("PGPASSWORD", Secret::new("s3cr3t-value"));
        assert!(!format!("{spec:?}").contains("s3cr3t"));
        let e = run_checked(&TokioCommandRunner, spec).await.unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("[REDACTED]") && !msg.contains("s3cr3t"),
            "{msg}"
        );
        let spec = CommandSpec::new("pg_dump").arg("postgres://u:pw@h/db");
        assert_eq!(spec.display(), "pg_dump postgres://u:[REDACTED]@h/db");
    }

    #[tokio::test]
    async fn mock_runner_is_usable() {
        let mut m = MockCommandRunner::new();
        m.expect_run().withf(|s| s.program == "ufw").returning(|_| {
            Ok(CommandOutput {
                status: ExitInfo {
                    code: Some(0),
                    signal: None,
                },
                stdout: b"ok".to_vec(),
                stderr: String::new(),
                duration: Duration::ZERO,
            })
        });
        let out = run_checked(&m, CommandSpec::new("ufw").arg("status"))
            .await
            .unwrap();
        assert_eq!(out.stdout, b"ok");
    }
}

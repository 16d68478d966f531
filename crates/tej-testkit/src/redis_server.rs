//! A throwaway Redis server.

use crate::process::{self, ChildGuard};
use crate::scratch::ScratchDir;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A Redis server on 127.0.0.1 with its own port and temp directory, without
/// persistence; killed and removed on drop.
#[derive(Debug)]
pub struct RedisServer {
    // Field order: the process is killed before the directory is removed.
    child: ChildGuard,
    port: u16,
    password: Option<String>,
    log: PathBuf,
    dir: ScratchDir,
}

impl RedisServer {
    /// Starts a server that needs no password.
    pub fn start() -> Result<RedisServer> {
        RedisServer::start_inner(None)
    }

    /// Starts a server that requires `pw` (`--requirepass`).
    pub fn start_with_password(pw: &str) -> Result<RedisServer> {
        RedisServer::start_inner(Some(pw))
    }

    fn start_inner(password: Option<&str>) -> Result<RedisServer> {
        let bin = process::require_binary(
            "redis-server",
            &["/usr/bin/redis-server", "/usr/local/bin/redis-server"],
            "apt-get install redis-server",
        )?;
        let mut dir = ScratchDir::new("tejredis-", "Redis server")?;
        let log = dir.path().join("redis.log");
        let dir_path = dir.path().to_path_buf();
        let (child, port) = process::start_on_free_port(
            "redis-server",
            &mut dir,
            &log,
            |port| {
                let mut cmd = Command::new(&bin);
                cmd.arg("--port")
                    .arg(port.to_string())
                    .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .args(["--daemonize", "no", "--dir"])
                    .arg(dir_path.as_path())
                    .arg("--logfile")
                    .arg(&log)
                    .current_dir(&dir_path)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                if let Some(pw) = password {
                    cmd.arg("--requirepass").arg(pw);
                }
                cmd.spawn()
                    .with_context(|| format!("spawn {}", bin.display()))
            },
            ping,
        )?;
        Ok(RedisServer {
            child,
            port,
            password: password.map(str::to_string),
            log,
            dir,
        })
    }

    /// The host: `127.0.0.1`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/` (without the password, even when one is required).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The password given to [`start_with_password`](Self::start_with_password).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT/` when a password is required, else [`url`](Self::url).
    /// The password is used as is: keep test passwords URL-safe.
    pub fn url_with_password(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/", self.port),
            None => self.url(),
        }
    }

    /// The server's temp directory (its `--dir`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server log so far, for failing-test diagnostics.
    pub fn server_log(&self) -> String {
        process::read_log(&self.log)
    }
}

/// Whether a Redis server answers on `port`: `+PONG`, or `-NOAUTH` when it wants a
/// password (it is up either way).
fn ping(port: u16) -> bool {
    let attempt = || -> Result<bool> {
        let mut s =
            TcpStream::connect_timeout(&process::loopback(port), Duration::from_millis(200))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"PING\r\n")?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        if line.is_empty() {
            bail!("connection closed");
        }
        Ok(line.starts_with("+PONG") || line.starts_with("-NOAUTH"))
    };
    attempt().unwrap_or(false)
}

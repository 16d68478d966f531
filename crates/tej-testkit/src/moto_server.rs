//! A throwaway moto S3 server: in memory, and unlike s3s-fs it implements
//! ListMultipartUploads, so cleanup of unfinished multipart uploads can be tested.

use crate::process::{self, ChildGuard};
use crate::scratch::ScratchDir;
use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PINNED: &str = "/opt/tej-tools/moto/bin/moto_server";

const INSTALL: &str = "set TEJ_MOTO_SERVER, or install it: \
     python3 -m venv /opt/tej-tools/moto && /opt/tej-tools/moto/bin/pip install 'moto[server]==5.1.22' \
     (python3-venv may need: apt-get install -y python3-venv)";

/// A moto S3 server on 127.0.0.1 with its own port; killed on drop.
///
/// moto keeps everything in memory and does not check request signatures: any
/// credentials work ([`access_key`](Self::access_key) and
/// [`secret_key`](Self::secret_key) are fixed test values). Clients use the
/// [`endpoint`](Self::endpoint) with path-style addressing and region `us-east-1`.
#[derive(Debug)]
pub struct MotoServer {
    // Field order: the process is killed before the directory is removed.
    child: ChildGuard,
    port: u16,
    log: PathBuf,
    dir: ScratchDir,
}

impl MotoServer {
    /// Starts a server (≈ 1–2 s: moto is Python).
    pub fn start() -> Result<MotoServer> {
        let bin = MotoServer::binary()?;
        let mut dir = ScratchDir::new("tejmoto-", "moto server")?;
        let log = dir.path().join("moto.log");
        let dir_path = dir.path().to_path_buf();
        let (child, port) = process::start_on_free_port(
            "moto_server",
            &mut dir,
            &log,
            |port| {
                let (out, err) = process::log_stdio(&log)?;
                Command::new(&bin)
                    .args(["-H", "127.0.0.1", "-p"])
                    .arg(port.to_string())
                    .current_dir(&dir_path)
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err)
                    .spawn()
                    .with_context(|| format!("spawn {}", bin.display()))
            },
            process::port_accepts,
        )?;
        Ok(MotoServer {
            child,
            port,
            log,
            dir,
        })
    }

    /// Where moto_server is: `$TEJ_MOTO_SERVER` if set, else
    /// `/opt/tej-tools/moto/bin/moto_server` (the pinned install), else `moto_server` on
    /// `PATH`.
    pub fn binary() -> Result<PathBuf> {
        if let Some(p) = std::env::var_os("TEJ_MOTO_SERVER") {
            let p = PathBuf::from(p);
            if !process::is_executable(&p) {
                bail!("TEJ_MOTO_SERVER={} is not an executable file", p.display());
            }
            return Ok(p);
        }
        // The pinned install first: moto 5.2.0–5.2.5 answer CompleteMultipartUpload with
        // a root element the AWS SDK rejects (getmoto/moto#10055), and whatever is on
        // PATH may be such a version.
        let p = PathBuf::from(PINNED);
        if process::is_executable(&p) {
            return Ok(p);
        }
        if let Some(p) = process::find_on_path("moto_server") {
            return Ok(p);
        }
        bail!("moto_server not found: {INSTALL}")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// An access key id (moto accepts any).
    pub fn access_key(&self) -> &str {
        "tejtest"
    }

    /// A secret key (moto accepts any).
    pub fn secret_key(&self) -> &str {
        "tejtestsecret"
    }

    /// The region to sign for: `us-east-1`.
    pub fn region(&self) -> &str {
        "us-east-1"
    }

    /// Creates bucket `name` (an unsigned `PUT /name`, which moto accepts).
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        crate::s3_server::validate_bucket_name(name)?;
        let status = self.request("PUT", &format!("/{name}"))?;
        if status != 200 {
            bail!(
                "moto: creating bucket {name} answered HTTP {status}\n{}",
                process::log_tail(&self.log)
            );
        }
        Ok(())
    }

    /// Creates a fresh bucket named `PREFIX-UNIQUE` and returns its name.
    pub fn unique_bucket(&self, prefix: &str) -> Result<String> {
        let name = crate::s3_server::unique_bucket_name(prefix);
        self.create_bucket(&name)?;
        Ok(name)
    }

    /// Forgets every bucket and object (`POST /moto-api/reset`).
    pub fn reset(&self) -> Result<()> {
        let status = self.request("POST", "/moto-api/reset")?;
        if status != 200 {
            bail!("moto: reset answered HTTP {status}");
        }
        Ok(())
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server log so far, for failing-test diagnostics.
    pub fn server_log(&self) -> String {
        process::read_log(&self.log)
    }

    /// The temp directory holding the log.
    pub fn base_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A bodiless HTTP/1.1 request; returns the status code.
    fn request(&self, method: &str, path: &str) -> Result<u16> {
        let mut s =
            TcpStream::connect_timeout(&process::loopback(self.port), Duration::from_secs(5))
                .context("connect to moto")?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).context("read moto's reply")?;
        let text = String::from_utf8_lossy(&reply);
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("moto: unexpected reply {:?}", process::tail(&text, 200)))
    }
}

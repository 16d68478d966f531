//! A private Docker engine.

use crate::pg_tls::{TestCa, write_private};
use crate::port::free_port;
use crate::process::{self, ChildGuard, Ready, is_root, log_tail};
use crate::scratch::ScratchDir;
use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const INSTALL: &str = "apt-get install docker.io";

/// A private Docker daemon (`dockerd` with its own managed containerd) in a temp
/// directory under /tmp, listening only on a unix socket; no bridge network and no
/// iptables changes, so containers use `--network host` and must bind 127.0.0.1.
/// Nothing can be pulled: build images with
/// [`import_busybox_image`](Self::import_busybox_image) or
/// [`build_scratch_image`](Self::build_scratch_image).
///
/// On drop, all containers are removed, the daemon gets SIGTERM (SIGKILL after 15 s),
/// leftover mounts are unmounted and the directory is removed. Needs root.
#[derive(Debug)]
pub struct DockerEngine {
    // Field order: the daemon is stopped in Drop before `dir` is removed.
    child: ChildGuard,
    pid: u32,
    cli: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    contexts: AtomicU32,
    tls: Option<TlsListener>,
    dir: ScratchDir,
}

/// The TCP listener of an engine started with [`DockerEngine::start_tls`].
#[derive(Debug)]
struct TlsListener {
    port: u16,
    client_dir: PathBuf,
}

impl DockerEngine {
    /// Starts the daemon and waits (up to 30 s) until its API answers.
    pub fn start() -> Result<DockerEngine> {
        Self::start_with(None)
    }

    /// Starts the daemon as [`start`](Self::start) does, and also listening on
    /// `tcp://127.0.0.1:PORT` with `--tlsverify`: its certificate (for `127.0.0.1` and
    /// `localhost`) is signed by `ca`, and it accepts only client certificates signed by
    /// `ca`. [`client_cert_dir`](Self::client_cert_dir) holds a client's `ca.pem`,
    /// `cert.pem` and `key.pem` (a `DOCKER_CERT_PATH`).
    pub fn start_tls(ca: &TestCa) -> Result<DockerEngine> {
        Self::start_with(Some(ca))
    }

    fn start_with(ca: Option<&TestCa>) -> Result<DockerEngine> {
        let dockerd = process::require_binary(
            "dockerd",
            &["/usr/sbin/dockerd", "/usr/bin/dockerd"],
            INSTALL,
        )?;
        let cli = process::require_binary(
            "docker",
            &["/usr/bin/docker", "/usr/local/bin/docker"],
            INSTALL,
        )?;
        if !is_root() {
            bail!("a private dockerd needs root; run the tests as root");
        }
        // Short paths: the unix sockets inside must stay under 108 bytes.
        let mut dir = ScratchDir::new("tejd-", "Docker engine")?;
        let base = dir.path().to_path_buf();
        let sock = base.join("docker.sock");
        let log = base.join("dockerd.log");
        let config = base.join("daemon.json");
        std::fs::write(&config, "{}\n").with_context(|| format!("write {}", config.display()))?;
        std::fs::create_dir(base.join("cli")).context("create the docker CLI config dir")?;
        let namespace = format!(
            "tej-{}",
            base.file_name().unwrap_or_default().to_string_lossy()
        );
        let mut tcp_args: Vec<std::ffi::OsString> = Vec::new();
        let tls = match ca {
            Some(ca) => {
                let server = ca.server_cert(&["127.0.0.1", "localhost"])?;
                let client = ca.client_cert("tej-test-client")?;
                let client_dir = base.join("client-certs");
                std::fs::create_dir(&client_dir).context("create the client cert dir")?;
                std::fs::copy(ca.ca_file(), client_dir.join("ca.pem"))
                    .context("copy the CA certificate")?;
                std::fs::copy(&client.cert_file, client_dir.join("cert.pem"))
                    .context("copy the client certificate")?;
                write_private(
                    &client_dir.join("key.pem"),
                    &std::fs::read(&client.key_file).context("read the client key")?,
                )?;
                let port = free_port();
                tcp_args.extend([
                    "--host".into(),
                    format!("tcp://127.0.0.1:{port}").into(),
                    "--tlsverify".into(),
                    "--tlscacert".into(),
                    ca.ca_file().as_os_str().to_owned(),
                    "--tlscert".into(),
                    server.cert_file.as_os_str().to_owned(),
                    "--tlskey".into(),
                    server.key_file.as_os_str().to_owned(),
                ]);
                Some(TlsListener { port, client_dir })
            }
            None => None,
        };
        let (out, err) = process::log_stdio(&log)?;
        let child = Command::new(&dockerd)
            .arg("--host")
            .arg(format!("unix://{}", sock.display()))
            .args(&tcp_args)
            .arg("--data-root")
            .arg(base.join("data"))
            .arg("--exec-root")
            .arg(base.join("exec"))
            .arg("--pidfile")
            .arg(base.join("dockerd.pid"))
            .arg("--config-file")
            .arg(&config)
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--shutdown-timeout=5",
            ])
            .arg(format!("--containerd-namespace={namespace}"))
            .arg(format!(
                "--containerd-plugins-namespace={namespace}-plugins"
            ))
            .current_dir(&base)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawn {}", dockerd.display()))?;
        let pid = child.id();
        let mut child = ChildGuard::new(child);
        let tcp_port = tls.as_ref().map(|t| t.port);
        let ready = process::wait_ready(child.child(), Duration::from_secs(30), "dockerd", || {
            ping(&sock)
                && tcp_port.is_none_or(|p| {
                    std::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, p)).is_ok()
                })
        });
        if !matches!(ready, Ok(Ready::Yes)) {
            dir.mark_failed();
        }
        let engine = DockerEngine {
            child,
            pid,
            cli,
            sock,
            log,
            contexts: AtomicU32::new(0),
            tls,
            dir,
        };
        match ready {
            Ok(Ready::Yes) => Ok(engine),
            Ok(Ready::Exited(status)) => {
                let e = anyhow::anyhow!("dockerd exited ({status})\n{}", log_tail(&engine.log));
                drop(engine);
                Err(e)
            }
            Err(e) => {
                let e = e.context(log_tail(&engine.log));
                drop(engine);
                Err(e)
            }
        }
    }

    /// The daemon's API socket.
    pub fn socket_path(&self) -> &Path {
        &self.sock
    }

    /// `unix:///tmp/tejd-…/docker.sock`, for `DOCKER_HOST` or a client's connect call.
    pub fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    /// `tcp://127.0.0.1:PORT`, the TLS listener of an engine from
    /// [`start_tls`](Self::start_tls) (`None` for [`start`](Self::start)).
    pub fn tls_host(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|t| format!("tcp://127.0.0.1:{}", t.port))
    }

    /// The directory with a client's `ca.pem`, `cert.pem` and `key.pem` (mode 0600) for
    /// the TLS listener, what `DOCKER_CERT_PATH` names (`None` without TLS).
    pub fn client_cert_dir(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.client_dir.as_path())
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The temp directory holding the socket, data root, exec root and log.
    pub fn base_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon log so far, for failing-test diagnostics.
    pub fn server_log(&self) -> String {
        process::read_log(&self.log)
    }

    /// A `docker` CLI command aimed at this daemon (`-H unix://…`, its own client config,
    /// `DOCKER_HOST`/`DOCKER_CONTEXT` cleared); add arguments and run it.
    pub fn docker_command(&self) -> Command {
        let mut cmd = Command::new(&self.cli);
        cmd.arg("-H")
            .arg(self.host())
            .env("DOCKER_CONFIG", self.dir.path().join("cli"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        cmd
    }

    /// Runs `docker ARGS` against this daemon and returns its stdout (untrimmed); the
    /// error includes stderr.
    pub fn docker(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.docker_command();
        cmd.args(args);
        let out = process::run(&mut cmd, &format!("docker {}", args.join(" ")))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Imports image `tag` made of the static busybox (package busybox-static): every
    /// applet linked in `/bin` (`sh`, `httpd`, `sleep`, `wget`, `echo`, `cat`, `nc`…;
    /// `/sbin`, `/usr/bin` and `/usr/sbin` point to `/bin`), a writable `/tmp`,
    /// `/etc/passwd` with root and nobody, and `/www/index.html`. Default command
    /// `/bin/sh`. No registry is involved.
    pub fn import_busybox_image(&self, tag: &str) -> Result<()> {
        let busybox = busybox_path()?;
        let ctx = self.context_dir()?;
        let result = (|| -> Result<()> {
            for d in [
                "bin", "etc", "root", "var", "www", "usr", "proc", "sys", "dev",
            ] {
                std::fs::create_dir(ctx.join(d))?;
            }
            make_tmp(&ctx)?;
            let target = ctx.join("bin/busybox");
            std::fs::copy(&busybox, &target)
                .with_context(|| format!("copy {}", busybox.display()))?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
            let list = process::run(Command::new(&busybox).arg("--list"), "busybox --list")?;
            for applet in String::from_utf8_lossy(&list.stdout).lines() {
                let applet = applet.trim();
                if applet.is_empty() || applet.contains('/') || applet == "busybox" {
                    continue;
                }
                symlink("busybox", ctx.join("bin").join(applet))
                    .with_context(|| format!("link applet {applet}"))?;
            }
            symlink("bin", ctx.join("sbin"))?;
            symlink("../bin", ctx.join("usr/bin"))?;
            symlink("../bin", ctx.join("usr/sbin"))?;
            std::fs::write(
                ctx.join("etc/passwd"),
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            )?;
            std::fs::write(ctx.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
            std::fs::write(ctx.join("www/index.html"), "tej busybox\n")?;
            self.import(&ctx, tag, &[r#"CMD ["/bin/sh"]"#.to_string()])
        })();
        let _ = std::fs::remove_dir_all(&ctx);
        result.with_context(|| format!("import busybox image {tag}"))
    }

    /// Imports image `tag` holding only `static_binary` (at `/<its file name>`) and an
    /// empty `/tmp`, like `FROM scratch`; its command is `cmd`, or the binary when `cmd`
    /// is empty.
    pub fn build_scratch_image(&self, tag: &str, static_binary: &Path, cmd: &[&str]) -> Result<()> {
        let name = static_binary
            .file_name()
            .with_context(|| format!("{} has no file name", static_binary.display()))?
            .to_string_lossy()
            .into_owned();
        if !static_binary.is_file() {
            bail!("{} is not a file", static_binary.display());
        }
        let ctx = self.context_dir()?;
        let result = (|| -> Result<()> {
            let target = ctx.join(&name);
            std::fs::copy(static_binary, &target)
                .with_context(|| format!("copy {}", static_binary.display()))?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
            make_tmp(&ctx)?;
            let default = format!("/{name}");
            let cmd: Vec<&str> = if cmd.is_empty() {
                vec![&default]
            } else {
                cmd.to_vec()
            };
            let json: Vec<String> = cmd.iter().map(|a| json_string(a)).collect();
            self.import(&ctx, tag, &[format!("CMD [{}]", json.join(","))])
        })();
        let _ = std::fs::remove_dir_all(&ctx);
        result
            .with_context(|| format!("build scratch image {tag} from {}", static_binary.display()))
    }

    /// A fresh empty directory inside the engine's temp dir.
    fn context_dir(&self) -> Result<PathBuf> {
        let n = self.contexts.fetch_add(1, Ordering::Relaxed);
        let ctx = self.dir.path().join(format!("ctx-{n}"));
        std::fs::create_dir(&ctx).with_context(|| format!("create {}", ctx.display()))?;
        Ok(ctx)
    }

    /// `tar -C ctx -c . | docker import --change … - tag`, files owned by root.
    fn import(&self, ctx: &Path, tag: &str, changes: &[String]) -> Result<()> {
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(ctx)
            .args(["--numeric-owner", "--owner=0", "--group=0", "-cf", "-", "."])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run tar")?;
        let tar_out = tar.stdout.take().context("tar stdout")?;
        let mut import = self.docker_command();
        import.arg("import");
        for c in changes {
            import.arg("--change").arg(c);
        }
        import.args(["-", tag]).stdin(Stdio::from(tar_out));
        let out = import.output().context("run docker import");
        let tar_out = tar.wait_with_output().context("wait for tar")?;
        let out = out?;
        if !tar_out.status.success() {
            bail!(
                "tar failed ({}): {}",
                tar_out.status,
                String::from_utf8_lossy(&tar_out.stderr).trim()
            );
        }
        if !out.status.success() {
            bail!(
                "docker import failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Removes all containers, stops the daemon, kills leftovers and unmounts.
    fn shutdown(&mut self) {
        let base = self.dir.path().to_path_buf();
        if process::pid_alive(self.pid) {
            let mut ps = self.docker_command();
            ps.args(["ps", "-aq"]);
            if let Some(out) = process::run_with_timeout(&mut ps, Duration::from_secs(20))
                .filter(|o| o.status.success())
            {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                if !ids.is_empty() {
                    let mut rm = self.docker_command();
                    rm.args(["rm", "-f", "-v"]).args(&ids);
                    let _ = process::run_with_timeout(&mut rm, Duration::from_secs(30));
                }
            }
        }
        self.child.terminate(Duration::from_secs(15));
        // The managed containerd and any shims name our directory on their command line.
        let leftovers = process::processes_mentioning(&base);
        for &pid in &leftovers {
            process::signal(pid, Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while leftovers.iter().any(|&p| process::pid_alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for mount in mounts_under(&base) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&mount)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Whether the daemon's API answers `GET /_ping` on `sock`.
fn ping(sock: &Path) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut s = UnixStream::connect(sock)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        Ok(resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200"))
    };
    attempt().unwrap_or(false)
}

/// The static busybox binary (package busybox-static).
fn busybox_path() -> Result<PathBuf> {
    let install = "apt-get install busybox-static";
    let mut candidates = vec![
        PathBuf::from("/bin/busybox"),
        PathBuf::from("/usr/bin/busybox"),
    ];
    if let Some(p) = process::find_on_path("busybox") {
        candidates.insert(0, p);
    }
    let mut dynamic = None;
    for p in candidates {
        if !process::is_executable(&p) {
            continue;
        }
        match is_static_elf(&p) {
            Ok(true) => return Ok(p),
            _ => dynamic = Some(p),
        }
    }
    match dynamic {
        Some(p) => bail!("{} is not statically linked: {install}", p.display()),
        None => bail!("busybox not found: {install}"),
    }
}

/// Whether an ELF file has no program interpreter (`PT_INTERP`), i.e. is static.
fn is_static_elf(path: &Path) -> Result<bool> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        bail!("{} is not a 64-bit little-endian ELF file", path.display());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into()?) as usize;
    let phentsize = u16_at(0x36);
    let phnum = u16_at(0x38);
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > bytes.len() {
            bail!("{} has a truncated program header", path.display());
        }
        let p_type = u32::from_le_bytes(bytes[o..o + 4].try_into()?);
        if p_type == 3 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Creates `ctx/tmp` with mode 1777.
fn make_tmp(ctx: &Path) -> Result<()> {
    let tmp = ctx.join("tmp");
    std::fs::create_dir(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts.dedup();
    mounts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(json_string("x\ny\u{1}"), "\"x\\ny\\u0001\"");
    }

    #[test]
    fn elf_static_check() {
        // The test binary itself is dynamically linked (glibc target).
        let me = std::env::current_exe().unwrap();
        assert!(!is_static_elf(&me).unwrap());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        assert!(is_static_elf(&manifest).is_err());
    }
}

//! DockerEngine: a private dockerd, images without a registry, host networking.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};
use tej_testkit::{DockerEngine, free_port};

/// `GET /` over HTTP/1.0 from 127.0.0.1:`port`: the status line and the body.
fn http_get(port: u16) -> Result<(String, String)> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("no header end")?;
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

fn pid_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn busybox_httpd_serves_on_loopback_and_drop_stops_everything() -> Result<()> {
    let engine = DockerEngine::start()?;
    let pid = engine.pid();
    let base = engine.base_dir().to_path_buf();
    assert_eq!(
        engine.host(),
        format!("unix://{}", engine.socket_path().display())
    );
    assert!(engine.socket_path().as_os_str().len() < 108);
    let version = engine.docker(&["version", "--format", "{{.Server.Version}}"])?;
    assert!(!version.trim().is_empty());

    engine.import_busybox_image("tejtk-busybox:1")?;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let id = engine.docker(&[
        "run",
        "-d",
        "--network",
        "host",
        "tejtk-busybox:1",
        "/bin/httpd",
        "-f",
        "-p",
        &listen,
        "-h",
        "/www",
    ])?;
    assert!(!id.trim().is_empty());
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, body) = loop {
        match http_get(port) {
            Ok(r) => break r,
            Err(e) if Instant::now() > deadline => {
                bail!(
                    "httpd never answered: {e:#}\n{}",
                    engine.docker(&["logs", id.trim()])?
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.trim(), "tej busybox");
    // The image has the usual applets.
    let out = engine.docker(&[
        "run",
        "--rm",
        "tejtk-busybox:1",
        "sh",
        "-c",
        "echo hi | cat && which wget nc sleep",
    ])?;
    assert!(out.starts_with("hi\n"), "{out}");

    drop(engine);
    assert!(pid_gone(pid), "dockerd {pid} still running");
    assert!(
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_err(),
        "httpd still serving after drop"
    );
    assert!(!base.exists(), "{} still exists", base.display());
    Ok(())
}

#[test]
fn scratch_image_runs_a_static_binary() -> Result<()> {
    let engine = DockerEngine::start()?;
    // busybox-static is a convenient static binary.
    engine.build_scratch_image(
        "tejtk-scratch:1",
        Path::new("/bin/busybox"),
        &["/busybox", "echo", "hello from scratch"],
    )?;
    let out = engine.docker(&["run", "--rm", "tejtk-scratch:1"])?;
    assert_eq!(out, "hello from scratch\n");
    let out = engine.docker(&["run", "--rm", "tejtk-scratch:1", "/busybox", "ls", "/"])?;
    let entries: Vec<&str> = out.split_whitespace().collect();
    assert!(
        entries.contains(&"busybox") && entries.contains(&"tmp"),
        "{out}"
    );
    Ok(())
}

#[test]
fn engines_are_independent() -> Result<()> {
    let a = DockerEngine::start()?;
    let b = DockerEngine::start()?;
    assert_ne!(a.socket_path(), b.socket_path());
    a.import_busybox_image("only-in-a:1")?;
    assert!(b.docker(&["image", "inspect", "only-in-a:1"]).is_err());
    let err = a
        .docker(&["image", "inspect", "no-such:image"])
        .unwrap_err();
    assert!(
        format!("{err:#}").to_lowercase().contains("no such"),
        "{err:#}"
    );
    Ok(())
}

#[test]
fn start_tls_serves_the_api_only_to_clients_of_its_ca() -> Result<()> {
    let ca = tej_testkit::TestCa::new()?;
    let engine = DockerEngine::start_tls(&ca)?;
    assert!(DockerEngine::start()?.tls_host().is_none());
    let host = engine.tls_host().context("a TLS engine has a TCP host")?;
    let certs = engine
        .client_cert_dir()
        .context("and client certificates")?;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(certs.join("key.pem"))?.permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let docker = |cert_path: &Path| {
        std::process::Command::new("docker")
            .args([
                "-H",
                &host,
                "--tlsverify",
                "version",
                "--format",
                "{{.Server.Version}}",
            ])
            .env("DOCKER_CERT_PATH", cert_path)
            .env("DOCKER_CONFIG", cert_path)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .output()
    };
    let ok = docker(certs)?;
    assert!(
        ok.status.success(),
        "docker --tlsverify: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // A client certificate from another CA is refused by the engine.
    let other = tej_testkit::TestCa::new()?;
    let stranger = other.client_cert("stranger")?;
    let dir = tempfile::tempdir()?;
    std::fs::copy(ca.ca_file(), dir.path().join("ca.pem"))?;
    std::fs::copy(&stranger.cert_file, dir.path().join("cert.pem"))?;
    std::fs::copy(&stranger.key_file, dir.path().join("key.pem"))?;
    let refused = docker(dir.path())?;
    if refused.status.success() {
        bail!("a client certificate of another CA was accepted");
    }
    Ok(())
}

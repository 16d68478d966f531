//! `tej` reaches the Docker engine the docker CLI would use: the private dockerd behind
//! TLS through `DOCKER_HOST`/`DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH` and through a docker
//! context selected by `DOCKER_CONTEXT`; a wrong CA is refused; `ssh://` runs
//! `ssh … docker system dial-stdio` and speaks HTTP over it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use tej_testkit::{DockerEngine, TestCa};

/// The engine behind TLS with one running container of Compose project `shop`, service `web`.
fn engine() -> (TestCa, DockerEngine) {
    let ca = TestCa::new().unwrap();
    let engine = DockerEngine::start_tls(&ca).unwrap();
    engine.import_busybox_image("tej-cli-busybox:1").unwrap();
    engine
        .docker(&[
            "run",
            "-d",
            "--network",
            "host",
            "--name",
            "shop-web-1",
            "--label",
            "com.docker.compose.project=shop",
            "--label",
            "com.docker.compose.service=web",
            "--label",
            "com.docker.compose.container-number=1",
            "tej-cli-busybox:1",
            "sleep",
            "300",
        ])
        .unwrap();
    (ca, engine)
}

/// `tej services status --project shop --output json` with `env`, in an empty directory
/// with an empty HOME and no DOCKER_* variables but those given.
fn status(env: &[(&str, &str)], path_prefix: Option<&Path>) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tej"));
    cmd.args([
        "services",
        "status",
        "--project",
        "shop",
        "--output",
        "json",
    ])
    .current_dir(dir.path())
    .env("HOME", dir.path())
    .env("XDG_CONFIG_HOME", dir.path().join("xdg"));
    for k in [
        "DOCKER_HOST",
        "DOCKER_CONTEXT",
        "DOCKER_CONFIG",
        "DOCKER_TLS_VERIFY",
        "DOCKER_TLS",
        "DOCKER_CERT_PATH",
        "TEJ_CONFIG",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(p) = path_prefix {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", p.display()));
    }
    let out = cmd.output().expect("run tej");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lists_web(out: &str) -> bool {
    out.lines().any(|l| {
        serde_json::from_str::<serde_json::Value>(l)
            .is_ok_and(|v| v["type"] == "container" && v["data"]["name"] == "shop-web-1")
    })
}

#[test]
fn docker_host_with_tls_verify_reaches_the_engine_and_a_wrong_ca_is_refused() {
    let (_ca, engine) = engine();
    let host = engine.tls_host().unwrap();
    let certs = engine
        .client_cert_dir()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let (code, out, err) = status(
        &[
            ("DOCKER_HOST", &host),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", &certs),
        ],
        None,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(lists_web(&out), "{out}\n{err}");

    let other = TestCa::new().unwrap();
    let wrong = tempfile::tempdir().unwrap();
    std::fs::copy(other.ca_file(), wrong.path().join("ca.pem")).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(Path::new(&certs).join(f), wrong.path().join(f)).unwrap();
    }
    let (code, out, err) = status(
        &[
            ("DOCKER_HOST", &host),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", wrong.path().to_str().unwrap()),
        ],
        None,
    );
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(!lists_web(&out), "{out}");
    assert!(
        err.contains(&host) && err.contains("DOCKER_HOST"),
        "the error names the engine and where it came from: {err}"
    );
    assert!(err.contains("invalid peer certificate"), "{err}");
    let key = std::fs::read_to_string(Path::new(&certs).join("key.pem")).unwrap();
    assert!(!err.contains(key.lines().nth(1).unwrap()), "{err}");
}

#[test]
fn a_docker_context_selected_by_docker_context_reaches_the_engine() {
    let (_ca, engine) = engine();
    let store = tempfile::tempdir().unwrap();
    let id = tej_deploy::engine::context_id("remote-tls");
    let meta = store.path().join("contexts/meta").join(&id);
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        meta.join("meta.json"),
        serde_json::json!({
            "Name": "remote-tls",
            "Metadata": {},
            "Endpoints": {"docker": {"Host": engine.tls_host().unwrap(), "SkipTLSVerify": false}},
        })
        .to_string(),
    )
    .unwrap();
    let tls = store.path().join("contexts/tls").join(&id).join("docker");
    std::fs::create_dir_all(&tls).unwrap();
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(engine.client_cert_dir().unwrap().join(f), tls.join(f)).unwrap();
    }
    let store_s = store.path().to_str().unwrap();
    let (code, out, err) = status(
        &[("DOCKER_CONFIG", store_s), ("DOCKER_CONTEXT", "remote-tls")],
        None,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(lists_web(&out), "{out}\n{err}");

    // A context that does not exist is named, with the file looked for.
    let (code, _, err) = status(
        &[("DOCKER_CONFIG", store_s), ("DOCKER_CONTEXT", "nosuch")],
        None,
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("\"nosuch\"") && err.contains("DOCKER_CONTEXT") && err.contains("meta.json"),
        "{err}"
    );
}

#[test]
fn ssh_hosts_speak_http_over_docker_system_dial_stdio() {
    let (_ca, engine) = engine();
    // An `ssh` first on PATH that records its arguments and runs the remote command
    // locally, against the engine's socket: what sshd would run on the remote host.
    let bin = tempfile::tempdir().unwrap();
    let log = bin.path().join("argv");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$@\" >> {log}\nexec docker -H {host} system dial-stdio\n",
        log = log.display(),
        host = engine.host(),
    );
    let ssh = bin.path().join("ssh");
    std::fs::write(&ssh, script).unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();

    let (code, out, err) = status(
        &[("DOCKER_HOST", "ssh://deployer@engine.invalid:2222")],
        Some(bin.path()),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(lists_web(&out), "{out}\n{err}");
    let argv = std::fs::read_to_string(&log).unwrap();
    let first: Vec<&str> = argv.lines().take(14).collect();
    assert_eq!(
        first,
        [
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=30",
            "-T",
            "-l",
            "deployer",
            "-p",
            "2222",
            "--",
            "engine.invalid",
            "docker",
            "system",
            "dial-stdio",
        ],
        "{argv}"
    );
}

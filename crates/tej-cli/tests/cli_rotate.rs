//! `tej secrets rotate` against a private Docker engine: the backend container, created the
//! way Compose creates it (`env_file: .env`, Compose labels), runs with the rotated values
//! afterwards, in standard, graceful and emergency mode.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use tej_testkit::{DockerEngine, RedisServer};

const BASE: &str = "tej-rotate-busybox:1";
const IMAGE: &str = "app/backend:1";
const CONTAINER: &str = "app-backend-1";

/// The backend's CGI: `/health` answers 200, a POST login answers 200 while the container
/// has a `JWT_SECRET`, 401 otherwise.
const APP_CGI: &str = r#"#!/bin/sh
if [ -n "$CONTENT_LENGTH" ]; then head -c "$CONTENT_LENGTH" >/dev/null; fi
case "$PATH_INFO" in
/health)
  printf 'Content-Type: text/plain\r\n\r\nok\n' ;;
/api/v1/auth/login)
  if [ "$REQUEST_METHOD" = POST ] && [ -n "$JWT_SECRET" ]; then
    printf 'Content-Type: application/json\r\n\r\n{"token":"t"}\n'
  else
    printf 'HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\n\r\nno\n'
  fi ;;
*)
  printf 'HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnone\n' ;;
esac
"#;

/// Builds the backend image: busybox httpd serving the CGI above on 127.0.0.1:$PORT.
fn build_backend_image(docker: &DockerEngine, dir: &Path) {
    docker.import_busybox_image(BASE).unwrap();
    let cgi = dir.join("cgi-bin");
    std::fs::create_dir(&cgi).unwrap();
    let app = cgi.join("app");
    std::fs::write(&app, APP_CGI).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
    docker
        .docker(&["create", "--name", "build-backend", BASE])
        .unwrap();
    docker
        .docker(&["cp", cgi.to_str().unwrap(), "build-backend:/www/cgi-bin"])
        .unwrap();
    docker
        .docker(&[
            "commit",
            "--change",
            r#"CMD ["sh","-c","exec busybox httpd -f -p 127.0.0.1:$PORT -h /www"]"#,
            "build-backend",
            IMAGE,
        ])
        .unwrap();
    docker.docker(&["rm", "build-backend"]).unwrap();
}

/// Runs the backend as `docker compose up -d` does for `env_file: .env`: the .env's
/// values in its environment at create time, Compose's labels.
fn run_backend(docker: &DockerEngine, env_file: &Path, port: u16) {
    let port_env = format!("PORT={port}");
    let health = format!("busybox wget -q -O- http://127.0.0.1:{port}/cgi-bin/app/health");
    docker
        .docker(&[
            "run",
            "-d",
            "--name",
            CONTAINER,
            "--network",
            "host",
            "--stop-timeout",
            "1",
            "--env-file",
            env_file.to_str().unwrap(),
            "-e",
            &port_env,
            "--health-cmd",
            &health,
            "--health-interval",
            "300ms",
            "--health-timeout",
            "2s",
            "--health-retries",
            "3",
            "--label",
            "com.docker.compose.project=app",
            "--label",
            "com.docker.compose.service=backend",
            "--label",
            "com.docker.compose.container-number=1",
            "--label",
            "com.docker.compose.oneoff=False",
            IMAGE,
        ])
        .unwrap();
}

/// The environment of the backend container, as `docker inspect` shows it.
fn container_env(docker: &DockerEngine) -> BTreeMap<String, String> {
    let out = docker
        .docker(&["inspect", "--format", "{{json .Config.Env}}", CONTAINER])
        .unwrap();
    let list: Vec<String> = serde_json::from_str(out.trim()).unwrap();
    list.into_iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn env_values(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The names of the containers of the engine, running or not.
fn container_names(docker: &DockerEngine) -> Vec<String> {
    let mut v: Vec<String> = docker
        .docker(&["ps", "-a", "--format", "{{.Names}}"])
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn rotation_reaches_the_running_backend_in_every_mode() {
    let redis = RedisServer::start().unwrap();
    let docker = DockerEngine::start().unwrap();
    let d = tempfile::tempdir().unwrap();
    build_backend_image(&docker, d.path());
    let env_file = d.path().join(".env");
    let original = "NODE_ENV=production\nJWT_SECRET=old-secret-value-0123456789\nJWT_REFRESH_SECRET=old-refresh-value-0123456789\n";
    std::fs::write(&env_file, original).unwrap();
    let port = tej_testkit::free_port();
    run_backend(&docker, &env_file, port);
    let audit = d.path().join("audit.jsonl");
    std::fs::write(
        d.path().join("tej.toml"),
        format!(
            "environment = \"staging\"\naudit_log = \"{}\"\n[[redis]]\nname = \"sessions\"\nurl = \"{}\"\n[compose]\nproject = \"app\"\ndocker_host = \"{}\"\n[secrets]\nenv_file = \"{}\"\napp_url = \"http://127.0.0.1:{port}/cgi-bin/app\"\ntest_email = \"test@example.com\"\ntest_password = {{ env = \"TEJ_TEST_LOGIN_PASSWORD\" }}\n",
            audit.display(),
            redis.url(),
            docker.host(),
            env_file.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tej"))
            .args(args)
            .current_dir(d.path())
            .env("TEJ_TEST_LOGIN_PASSWORD", "pw-not-a-secret-value")
            .env_remove("TEJ_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(
        container_env(&docker)["JWT_SECRET"],
        "old-secret-value-0123456789"
    );
    let mut seen_secrets = vec![
        "old-secret-value-0123456789".to_string(),
        "old-refresh-value-0123456789".to_string(),
    ];

    // Standard: the container holds the new values of both keys, nothing else changed.
    let (code, out, err) = run(&["secrets", "rotate", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    let dotenv = env_values(&env_file);
    let live = container_env(&docker);
    assert_ne!(dotenv["JWT_SECRET"], "old-secret-value-0123456789");
    assert_eq!(
        live["JWT_SECRET"], dotenv["JWT_SECRET"],
        "the backend runs with the old secret"
    );
    assert_eq!(live["JWT_REFRESH_SECRET"], dotenv["JWT_REFRESH_SECRET"]);
    assert_eq!(live["NODE_ENV"], "production");
    assert_eq!(live["PORT"], port.to_string());
    assert_eq!(
        container_names(&docker),
        [CONTAINER],
        "the old container is removed"
    );
    let labels = docker
        .docker(&["inspect", "--format", "{{json .Config.Labels}}", CONTAINER])
        .unwrap();
    assert!(
        labels.contains("\"com.docker.compose.service\":\"backend\""),
        "{labels}"
    );
    assert!(out.contains("Completed"), "{out}");
    seen_secrets.push(dotenv["JWT_SECRET"].clone());
    seen_secrets.push(dotenv["JWT_REFRESH_SECRET"].clone());
    let first = dotenv;

    // Graceful: new values, the previous ones kept beside them, in the container too.
    let (code, out, err) = run(&["secrets", "rotate", "--graceful", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    let dotenv = env_values(&env_file);
    let live = container_env(&docker);
    assert_ne!(dotenv["JWT_SECRET"], first["JWT_SECRET"]);
    assert_eq!(live["JWT_SECRET"], dotenv["JWT_SECRET"]);
    assert_eq!(live["JWT_SECRET_PREVIOUS"], first["JWT_SECRET"]);
    assert_eq!(live["JWT_REFRESH_SECRET"], dotenv["JWT_REFRESH_SECRET"]);
    assert_eq!(
        live["JWT_REFRESH_SECRET_PREVIOUS"],
        first["JWT_REFRESH_SECRET"]
    );
    assert_eq!(container_names(&docker), [CONTAINER]);
    seen_secrets.push(dotenv["JWT_SECRET"].clone());
    seen_secrets.push(dotenv["JWT_REFRESH_SECRET"].clone());
    let second = dotenv;

    // Emergency: new values, no previous ones anywhere.
    let (code, out, err) = run(&["secrets", "rotate", "--emergency", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    let dotenv = env_values(&env_file);
    let live = container_env(&docker);
    assert_ne!(dotenv["JWT_SECRET"], second["JWT_SECRET"]);
    assert_eq!(live["JWT_SECRET"], dotenv["JWT_SECRET"]);
    assert_eq!(live["JWT_REFRESH_SECRET"], dotenv["JWT_REFRESH_SECRET"]);
    assert!(!dotenv.contains_key("JWT_SECRET_PREVIOUS"), "{dotenv:?}");
    assert!(!live.contains_key("JWT_SECRET_PREVIOUS"), "{live:?}");
    assert!(
        !live.contains_key("JWT_REFRESH_SECRET_PREVIOUS"),
        "{live:?}"
    );
    assert_eq!(container_names(&docker), [CONTAINER]);
    seen_secrets.push(dotenv["JWT_SECRET"].clone());
    seen_secrets.push(dotenv["JWT_REFRESH_SECRET"].clone());

    // A rotation already running (it holds the lock beside the .env): refused, named.
    let lock_path = d.path().join(".env.tej-rotation.lock");
    let mut lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap();
    lock.try_lock().unwrap();
    std::io::Write::write_all(
        &mut lock,
        b"rotation of .env (pid 4242, by ops, since 09:00)\n",
    )
    .unwrap();
    let held = std::fs::read_to_string(&env_file).unwrap();
    let (code, out2, err2) = run(&["secrets", "rotate", "--yes"]);
    assert_ne!(code, 0, "{out2}{err2}");
    assert!(
        err2.contains("another rotation of this .env is running")
            && err2.contains("pid 4242, by ops"),
        "{out2}{err2}"
    );
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), held);
    drop(lock);

    let audit_text = std::fs::read_to_string(&audit).unwrap_or_default();
    for text in [&out, &err, &audit_text] {
        for s in &seen_secrets {
            assert!(!text.contains(s.as_str()), "a secret leaked: {text}");
        }
    }
}

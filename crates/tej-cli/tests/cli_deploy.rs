//! `tej deploy` and `tej rollback` end to end: the binary against a private dockerd from
//! the test kit, with images built locally from busybox (never pulled) serving on loopback
//! with host networking. nginx is played by this test: `nginx_program = "true"` accepts
//! every reload, and a small front proxy reads the upstream file tej writes on every
//! connection (what `nginx -s reload` makes nginx do), so a client polling the front during
//! the deploy sees the switch.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tej_testkit::{DockerEngine, PgCluster};

const BASE: &str = "tej-cli-busybox:1";
const WEB_CMD: &str = r#"CMD ["sh","-c","echo starting web on $PORT; exec busybox httpd -f -v -p 127.0.0.1:$PORT -h /www"]"#;
const HEALTH_CMD: &str = "busybox wget -q -O- http://127.0.0.1:$PORT/health";

fn web_image(engine: &DockerEngine, tag: &str, version: &str, healthy: bool) -> String {
    let mut script = format!("busybox mkdir -p /www && echo {version} > /www/index.html");
    if healthy {
        script.push_str(" && echo ok > /www/health");
    }
    let name = format!("build-{}", tag.replace([':', '/'], "-"));
    engine
        .docker(&["run", "--name", &name, BASE, "sh", "-c", &script])
        .unwrap();
    engine
        .docker(&["commit", "--change", WEB_CMD, &name, tag])
        .unwrap();
    engine.docker(&["rm", &name]).unwrap();
    engine
        .docker(&["image", "inspect", "--format", "{{.Id}}", tag])
        .unwrap()
        .trim()
        .to_string()
}

/// `GET path` over HTTP/1.0: status and body.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {buf:?}")))?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The `server ADDR;` of the upstream file tej writes.
fn upstream_of(file: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
        l.trim()
            .strip_prefix("server ")?
            .trim_end_matches(';')
            .parse()
            .ok()
    })
}

/// The front (nginx's part): each connection goes to the upstream named in the file now.
fn start_front(file: PathBuf) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let Some(up) = upstream_of(&file) else {
                continue;
            };
            std::thread::spawn(move || {
                let Ok(mut server) = TcpStream::connect(up) else {
                    return;
                };
                let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                    return;
                };
                let t = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut server, &mut client);
                let _ = client.shutdown(std::net::Shutdown::Write);
                let _ = t.join();
            });
        }
    });
    addr
}

/// Polls the front until stopped: (successes, failures, versions seen in order).
struct Poller {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>, Vec<String>)>,
}

impl Poller {
    fn start(addr: SocketAddr) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut ok, mut failed, mut versions) = (0, Vec::new(), Vec::<String>::new());
            while !s2.load(Ordering::SeqCst) {
                match get(addr, "/") {
                    Ok((200, body)) => {
                        ok += 1;
                        if versions.last() != Some(&body) {
                            versions.push(body);
                        }
                    }
                    Ok((s, body)) => failed.push(format!("status {s}: {body}")),
                    Err(e) => failed.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (ok, failed, versions)
        });
        Poller { stop, thread }
    }

    fn finish(self) -> (usize, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

fn tej(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tej"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("TEJ_CONFIG")
        .env_remove("DOCKER_HOST")
        .env_remove("TEJ_ENVIRONMENT")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn web_containers(engine: &DockerEngine) -> Vec<String> {
    let mut names: Vec<String> = engine
        .docker(&[
            "ps",
            "-a",
            "--filter",
            "label=com.docker.compose.project=shop",
            "--filter",
            "label=com.docker.compose.service=web",
            "--format",
            "{{.Names}}",
        ])
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    names.sort();
    names
}

#[test]
fn deploy_and_rollback_through_the_binary() {
    let engine = DockerEngine::start().unwrap();
    engine.import_busybox_image(BASE).unwrap();
    let v1 = web_image(&engine, "shop/web:v1", "v1", true);
    let v2 = web_image(&engine, "shop/web:v2", "v2", true);
    web_image(&engine, "shop/web:bad", "bad", false);
    let (p1, p2) = (tej_testkit::free_port(), tej_testkit::free_port());

    // The running service: a Compose-style container of shop/web:v1 on p1.
    let env = format!("PORT={p1}");
    engine
        .docker(&[
            "run",
            "-d",
            "--name",
            "shop-web-1",
            "--network",
            "host",
            "--stop-timeout",
            "1",
            "--label",
            "com.docker.compose.project=shop",
            "--label",
            "com.docker.compose.service=web",
            "--label",
            "com.docker.compose.container-number=1",
            "--label",
            "com.docker.compose.oneoff=False",
            "-e",
            &env,
            "--health-cmd",
            HEALTH_CMD,
            "--health-interval",
            "300ms",
            "--health-retries",
            "2",
            "shop/web:v1",
        ])
        .unwrap();

    let d = tempfile::tempdir().unwrap();
    let upstream = d.path().join("web-upstream.conf");
    std::fs::write(
        &upstream,
        format!("upstream web {{\n    server 127.0.0.1:{p1};\n}}\n"),
    )
    .unwrap();
    let front = start_front(upstream.clone());
    let mut healthy = false;
    for _ in 0..100 {
        if get(front, "/").ok() == Some((200, "v1".into())) {
            healthy = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(healthy, "v1 never answered through the front");

    // A backup for the fresh-backup gate.
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE users (id int); INSERT INTO users VALUES (1);",
    )
    .unwrap();
    let audit = d.path().join("audit.jsonl");
    let repo = d.path().join("backups");
    std::fs::create_dir(&repo).unwrap();
    let config = |repo: &Path| {
        format!(
            r#"environment = "staging"
audit_log = "{audit}"
state_dir = "{state}"

[[database]]
name = "main"
url = "{url}"

[backup]
repositories = ["{repo}"]

[compose]
project = "shop"
docker_host = "{host}"

[[deploy.service]]
name = "web"
ports = [{p1}, {p2}]
health_path = "/health"
health_timeout_secs = 5
nginx_upstream_file = "{upstream}"
nginx_program = "true"
migrate = ["sh", "-c", "echo migrating to $(busybox cat /www/index.html)"]
test_command = ["true"]
backup_max_age_hours = 1
log_window_secs = 1
public_addr = "{front}"
stop_timeout_secs = 1
drain_timeout_secs = 1
"#,
            audit = audit.display(),
            state = d.path().join("state").display(),
            repo = repo.display(),
            host = engine.host(),
            upstream = upstream.display(),
        )
    };
    std::fs::write(d.path().join("tej.toml"), config(&repo)).unwrap();

    // 1. The dry run shows the plan and changes nothing.
    let (code, out, err) = tej(
        d.path(),
        &["deploy", "web", "--image", "shop/web:v2", "--dry-run"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dry run"), "{out}");
    assert!(
        out.contains("run sh -c echo migrating"),
        "the plan names the migration: {out}"
    );
    assert_eq!(web_containers(&engine), ["shop-web-1"]);

    // 2. No backup yet: the pre-deployment gate stops the deploy before anything starts.
    let (code, out, err) = tej(d.path(), &["deploy", "web", "--image", "shop/web:v2"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no backup exists"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(web_containers(&engine), ["shop-web-1"]);
    assert_eq!(upstream_of(&upstream), Some(loopback(p1)));

    let (code, out, err) = tej(d.path(), &["backup", "create"]);
    assert_eq!(code, 0, "{out}{err}");

    // 3. A healthy image: migrated, switched, old container retired, no failed request.
    let poller = Poller::start(front);
    std::thread::sleep(Duration::from_millis(200));
    let (code, out, err) = tej(
        d.path(),
        &[
            "deploy",
            "web",
            "--image",
            "shop/web:v2",
            "--output",
            "json",
        ],
    );
    std::thread::sleep(Duration::from_millis(200));
    let (ok, failed, versions) = poller.finish();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        failed.is_empty(),
        "failed requests during deploy: {failed:?}"
    );
    assert_eq!(versions, ["v1", "v2"]);
    assert!(ok > 10, "{ok}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "step");
    assert_eq!(lines[0]["data"]["outcome"]["status"], "applied");
    let report = &lines[1];
    assert_eq!(report["type"], "deploy");
    assert_eq!(report["data"]["outcome"]["status"], "deployed");
    assert_eq!(report["data"]["migration_output"][0], "migrating to v2");
    let gates: Vec<(&str, bool)> = report["data"]["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["gate"].as_str().unwrap(), g["passed"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        gates,
        [
            ("tests", true),
            ("backup-fresh", true),
            ("health", true),
            ("log-errors", true)
        ]
    );
    assert_eq!(upstream_of(&upstream), Some(loopback(p2)));
    assert_eq!(get(loopback(p2), "/").unwrap(), (200, "v2".into()));
    assert!(
        get(loopback(p1), "/").is_err(),
        "the old container still answers"
    );
    assert_eq!(web_containers(&engine), ["shop-web-2"]);
    let image = engine
        .docker(&["inspect", "--format", "{{.Image}}", "shop-web-2"])
        .unwrap();
    assert_eq!(image.trim(), v2);
    let previous = engine
        .docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            "tej-rollback/shop-web:previous",
        ])
        .unwrap();
    assert_eq!(previous.trim(), v1);

    // 4. Rollback: the previous image serves again, on the other port.
    let (code, out, err) = tej(d.path(), &["rollback", "web"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rollback shop/web"), "{out}");
    assert_eq!(upstream_of(&upstream), Some(loopback(p1)));
    assert_eq!(get(front, "/").unwrap(), (200, "v1".into()));
    let serving = web_containers(&engine);
    assert_eq!(serving.len(), 1, "{serving:?}");
    assert_ne!(serving[0], "shop-web-2");
    let current = engine
        .docker(&["inspect", "--format", "{{.Image}}", &serving[0]])
        .unwrap();
    assert_eq!(current.trim(), v1);

    // 5. An image that never becomes healthy: exit 1 with its last log lines, the old
    // container keeps answering and traffic never moved.
    let (code, out, err) = tej(d.path(), &["deploy", "web", "--image", "shop/web:bad"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("failed at Health"), "{err}");
    assert!(err.contains("keeps serving"), "{err}");
    assert!(
        err.contains("the new container's last log lines:") && err.contains("starting web on"),
        "{err}"
    );
    assert_eq!(upstream_of(&upstream), Some(loopback(p1)));
    assert_eq!(get(front, "/").unwrap(), (200, "v1".into()));
    assert_eq!(web_containers(&engine), serving);

    // Every run is in the audit log: the gate failure, the deploy, the rollback, the bad image.
    let entries: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["target"] == "shop/web")
        .collect();
    let outcomes: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["step"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("deploy-service", "failed"),
            ("deploy-service", "applied"),
            ("rollback-service", "applied"),
            ("deploy-service", "failed"),
        ]
    );

    // 6. An unknown service is refused with the configured ones named.
    let (code, _, err) = tej(d.path(), &["rollback", "worker"]);
    assert_eq!(code, 1);
    assert!(err.contains("configured: web"), "{err}");
}

/// `tej schedule --emit kubernetes` writes the manifests committed under deploy/kubernetes
/// (the beyond-one-host deployment), and `--image`/`--namespace` reach every CronJob.
#[test]
fn schedule_emits_the_committed_kubernetes_cronjobs() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    let (code, out, err) = tej(
        d.path(),
        &["schedule", "--emit", "kubernetes", "--dir", dir],
    );
    assert_eq!(code, 0, "{out}{err}");
    let written = std::fs::read_to_string(d.path().join("cronjobs.yaml")).unwrap();
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/cronjobs.yaml"),
    )
    .unwrap();
    assert!(
        written == committed,
        "deploy/kubernetes/cronjobs.yaml is stale"
    );

    let (code, out, err) = tej(
        d.path(),
        &[
            "schedule",
            "--emit",
            "kubernetes",
            "--image",
            "registry.example.com/tej:0.1.0",
            "--namespace",
            "ops",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let jobs = out.matches("kind: CronJob").count();
    assert!(jobs >= 10, "{out}");
    assert_eq!(out.matches("namespace: \"ops\"").count(), jobs);
    assert_eq!(
        out.matches("image: \"registry.example.com/tej:0.1.0\"")
            .count(),
        jobs
    );
}

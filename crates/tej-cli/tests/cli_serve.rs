//! `tej serve` end to end against real PostgreSQL: the daily health check collected and
//! served read-only; `/metrics` (and the `--prometheus-file` textfile) pass Prometheus'
//! own `promtool check metrics`; `/readyz` follows the collection; the bearer token is
//! required when set; an address other than loopback is refused; no secret reaches a
//! body; `tej daemon` serves with `[serve] listen`; SIGTERM stops both.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tej_testkit::PgCluster;

const DB_PASSWORD: &str = "pw-Kq83-never-shown";
const TOKEN: &str = "tok-Zr61-bearer-secret";

fn tej_cmd(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tej"));
    c.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("TEJ_CONFIG")
        .env_remove("DOCKER_HOST")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .env("TEJ_TEST_DB_PASSWORD", DB_PASSWORD)
        .env("TEJ_TEST_SERVE_TOKEN", TOKEN);
    c
}

/// A running `tej serve` or `tej daemon`, stopped with SIGTERM (and killed on drop).
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Running {
    /// Spawns `args` and reads the `serve_started` line (JSON output) for the address.
    fn start(dir: &Path, args: &[&str]) -> Running {
        let mut child = tej_cmd(dir)
            .args(args)
            .args(["--output", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tej");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if v["type"] == "serve_started" {
                addr = Some(v["data"]["listen"].as_str().unwrap().parse().unwrap());
                break;
            }
        }
        let Some(addr) = addr else {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("no serve_started line; stderr: {err}");
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Running { child, addr }
    }

    fn get(&self, path: &str) -> Http {
        http(self.addr, "GET", path, &[])
    }

    /// Waits (up to a generous bound, not a timing assertion) until `/readyz` answers 200.
    fn wait_ready(&self, auth: &[(&str, &str)]) -> Http {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let r = http(self.addr, "GET", "/readyz", auth);
            if r.status == 200 || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM; the exit code.
    fn stop(mut self) -> Option<i32> {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        self.child.wait().unwrap().code()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Http {
    status: u16,
    headers: String,
    body: String,
}

impl Http {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Http {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Http {
        status,
        headers: headers.to_string(),
        body: if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk size");
        let n = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// `promtool check metrics` on `text`: Prometheus' own parser and linter.
fn promtool(text: &str) -> (bool, String) {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) is installed by cargo xtask test");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The value of the sample `name{labels}` (labels as written) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A stack with a database, a second database whose password comes from the environment
/// and which is down, and a backup repository without a backup (a critical check).
fn config(d: &Path, url: &str, serve: &str) -> std::path::PathBuf {
    let repo = d.join("backups");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(
        d.join("tej.toml"),
        format!(
            "environment = \"staging\"\nstate_dir = \"{state}\"\n\
             [host]\ndisk_warn_percent = 100.0\ndisk_crit_percent = 100.0\nmemory_warn_percent = 100.0\nmemory_crit_percent = 100.0\n\
             [[database]]\nname = \"main\"\nurl = \"{url}\"\n\
             [[database]]\nname = \"gone\"\nurl = \"postgres://tej@127.0.0.1:1/gone\"\n\
             password = {{ env = \"TEJ_TEST_DB_PASSWORD\" }}\n\
             [backup]\nrepositories = [\"{repo}\"]\n{serve}",
            state = d.join("state").display(),
            repo = repo.display(),
        ),
    )
    .unwrap();
    repo
}

#[test]
fn serve_collects_the_daily_check_and_serves_metrics_promtool_accepts() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    let d = tempfile::tempdir().unwrap();
    let repo = config(d.path(), &url, "");
    let s = Running::start(
        d.path(),
        &["serve", "--listen", "127.0.0.1:0", "--interval", "2"],
    );
    assert!(s.addr.ip().is_loopback());

    let health = s.get("/healthz");
    assert_eq!(health.status, 200, "{health:?}");
    let ready = s.wait_ready(&[]);
    assert_eq!(ready.status, 200, "{ready:?}");

    let m = s.get("/metrics");
    assert_eq!(m.status, 200, "{m:?}");
    assert!(
        m.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{m:?}"
    );
    let (ok, lint) = promtool(&m.body);
    assert!(ok, "promtool check metrics: {lint}\n{}", m.body);
    assert_eq!(sample(&m.body, "tej_up"), Some(1.0), "{}", m.body);
    let target = format!("repo:{}", repo.display());
    assert_eq!(
        sample(
            &m.body,
            &format!("tej_check_status{{check=\"backups.recent\",target=\"{target}\"}}")
        ),
        Some(2.0),
        "no backup yet is critical: {}",
        m.body
    );
    assert!(
        m.body.contains("target=\"db:gone\""),
        "the database that is down is a series too: {}",
        m.body
    );

    let c = s.get("/api/v1/checks");
    assert_eq!(c.status, 200, "{c:?}");
    assert_eq!(c.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&c.body).unwrap();
    assert_eq!(v["title"], "daily health check");
    assert_eq!(v["severity"], "critical", "{v:#}");
    assert!(v["collected_at"].is_string(), "{v:#}");
    let checks = v["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|f| f["check"] == "backups.recent" && f["severity"] == "critical"),
        "{v:#}"
    );
    assert!(
        checks
            .iter()
            .any(|f| f["target"] == "db:gone" && f["severity"] != "ok"),
        "{v:#}"
    );

    // The status page: HTML for people, no script allowed, the same results.
    let page = s.get("/");
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("default-src 'none'") && !c.contains("script-src")),
        "{page:?}"
    );
    assert!(
        page.body.contains("<title>tej: critical</title>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("backups.recent") && page.body.contains("db:gone"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script"), "{}", page.body);

    // Read-only: other methods are refused, unknown paths are 404.
    assert_eq!(http(s.addr, "POST", "/metrics", &[]).status, 405);
    assert_eq!(http(s.addr, "DELETE", "/api/v1/checks", &[]).status, 405);
    assert_eq!(http(s.addr, "POST", "/", &[]).status, 405);
    assert_eq!(s.get("/nope").status, 404);

    for body in [&m.body, &c.body, &page.body] {
        assert!(!body.contains(DB_PASSWORD), "{body}");
    }
    assert_eq!(s.stop(), Some(0), "SIGTERM stops tej serve cleanly");

    // The textfile of `--prometheus-file` comes from the same registry and passes too.
    let prom = d.path().join("tej.prom");
    let out = tej_cmd(d.path())
        .args(["health", "--prometheus-file", prom.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = std::fs::read_to_string(&prom).unwrap();
    let (ok, lint) = promtool(&text);
    assert!(ok, "promtool check metrics on the textfile: {lint}\n{text}");
    assert_eq!(
        sample(
            &text,
            &format!("tej_check_status{{check=\"backups.recent\",target=\"{target}\"}}")
        ),
        Some(2.0),
        "{text}"
    );
    assert!(!text.contains(DB_PASSWORD));
}

#[test]
fn a_token_is_required_when_set_and_only_loopback_is_served_without_one() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    let d = tempfile::tempdir().unwrap();

    // Not loopback, no allow_remote: refused before binding, naming the setting.
    config(d.path(), &url, "");
    let out = tej_cmd(d.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("allow_remote") && err.contains("0.0.0.0"),
        "{err}"
    );

    // allow_remote without a token is a configuration error naming serve.token.
    config(d.path(), &url, "[serve]\nallow_remote = true\n");
    let out = tej_cmd(d.path()).args(["serve"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("serve.token"), "{err}");

    // A hostile listen value is a clear error, not a panic.
    config(d.path(), &url, "[serve]\nlisten = \"127.0.0.1:99999\"\n");
    let out = tej_cmd(d.path()).args(["serve"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("serve.listen") && !err.contains("panicked"),
        "{err}"
    );

    // With a token: every endpoint wants it.
    config(
        d.path(),
        &url,
        "[serve]\ntoken = { env = \"TEJ_TEST_SERVE_TOKEN\" }\ninterval = 2\n",
    );
    let s = Running::start(d.path(), &["serve", "--listen", "127.0.0.1:0"]);
    let good = format!("Bearer {TOKEN}");
    let bad = format!("Bearer {TOKEN}x");
    let short = "Bearer tok".to_string();
    for path in ["/", "/metrics", "/healthz", "/readyz", "/api/v1/checks"] {
        for auth in [
            vec![],
            vec![("Authorization", bad.as_str())],
            vec![("Authorization", short.as_str())],
        ] {
            let r = http(s.addr, "GET", path, &auth);
            assert_eq!(r.status, 401, "{path} with {auth:?}: {r:?}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
            assert!(!r.body.contains(TOKEN));
        }
    }
    let auth = [("Authorization", good.as_str())];
    assert_eq!(s.wait_ready(&auth).status, 200);
    for path in ["/", "/metrics", "/healthz", "/api/v1/checks"] {
        let r = http(s.addr, "GET", path, &auth);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert!(!r.body.contains(TOKEN) && !r.body.contains(DB_PASSWORD));
    }
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn the_daemon_serves_when_serve_listen_is_set() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    let d = tempfile::tempdir().unwrap();
    // A free loopback port: bound, read, released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config(
        d.path(),
        &url,
        &format!("[serve]\nlisten = \"127.0.0.1:{port}\"\ninterval = 2\n"),
    );
    let s = Running::start(d.path(), &["daemon", "--no-catch-up"]);
    assert_eq!(s.addr.port(), port);
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(s.wait_ready(&[]).status, 200);
    let m = s.get("/metrics");
    let (ok, lint) = promtool(&m.body);
    assert!(ok, "{lint}\n{}", m.body);
    assert_eq!(sample(&m.body, "tej_up"), Some(1.0), "{}", m.body);
    assert_eq!(
        s.stop(),
        Some(0),
        "SIGTERM stops the calendar and the server"
    );
}

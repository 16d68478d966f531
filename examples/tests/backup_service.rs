//! The backup service example, run as its binary against a real PostgreSQL and an
//! S3-compatible server: it binds 127.0.0.1:0, takes a backup on `POST /backups` into a
//! local and an S3 repository in the configured format and compression, lists both copies
//! on `GET /backups`, and the backup verifies; it stops on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use tej_backup::{BackupId, BackupSelector, Backups, CancellationToken};
use tej_testkit::{PgCluster, S3Server};

/// The service's process, killed if the test ends before it stopped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Status and JSON body of one request.
fn request(addr: &str, raw: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

fn get(addr: &str, path: &str) -> (u16, serde_json::Value) {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

fn post(addr: &str, path: &str) -> (u16, serde_json::Value) {
    request(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_takes_lists_and_the_backup_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("shop").unwrap();
    pg.psql(
        "shop",
        "CREATE TABLE orders (id serial PRIMARY KEY, total numeric NOT NULL);
         INSERT INTO orders (total) SELECT g * 1.5 FROM generate_series(1, 500) g;",
    )
    .unwrap();
    let s3 = S3Server::start().unwrap();
    let bucket = s3.unique_bucket("service").unwrap();
    let repo = dir.path().join("backups");
    let toml = format!(
        "[[database]]\nname = \"main\"\nurl = \"{url}\"\n\
         [backup]\nrepositories = [\"{}\", \"s3://{bucket}/db\"]\n\
         format = \"plain\"\ncompression = \"none\"\n",
        repo.display()
    );
    let config_path = dir.path().join("tej.toml");
    std::fs::write(&config_path, &toml).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_backup_service"))
        .args([
            "--config",
            config_path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env_remove("TEJ_CONFIG")
        .env_remove("DATABASE_URL")
        .env("AWS_ACCESS_KEY_ID", s3.access_key())
        .env("AWS_SECRET_ACCESS_KEY", s3.secret_key())
        .env("AWS_REGION", s3.region())
        .env("AWS_ENDPOINT_URL", s3.endpoint())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start backup_service");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut service = Running(child);
    let first = lines.next().expect("a first line").unwrap();
    let addr = first
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let (status, list) = get(&addr, "/backups");
    assert_eq!(status, 200, "{list}");
    assert_eq!(list, serde_json::json!([]));

    let (status, created) = post(&addr, "/backups");
    assert_eq!(status, 201, "{created:#}");
    let id = created["id"].as_str().expect("an id").to_string();
    assert_eq!(created["database"], "shop", "{created:#}");
    assert_eq!(created["format"], "plain", "{created:#}");
    assert_eq!(created["compression"]["algorithm"], "none", "{created:#}");
    assert_eq!(created["repositories"][0]["ok"], true, "{created:#}");
    assert_eq!(created["repositories"][1]["ok"], true, "{created:#}");
    assert!(!created.to_string().contains(s3.secret_key()));

    let (status, list) = get(&addr, "/backups");
    assert_eq!(status, 200, "{list}");
    let listed = list.as_array().expect("a JSON array");
    assert_eq!(listed.len(), 2, "one copy per repository: {list:#}");
    let mut where_: Vec<&str> = listed
        .iter()
        .map(|b| b["repository"].as_str().unwrap())
        .collect();
    where_.sort();
    let mut expected = vec![repo.display().to_string(), format!("s3://{bucket}/db")];
    expected.sort();
    assert_eq!(where_, expected);
    for b in listed {
        assert_eq!(b["id"], id.as_str());
        assert_eq!(b["compression"], "none");
        assert_eq!(b["series"]["target"], "shop");
    }

    // The backup the service took is a good one (the local copy, read here).
    let config = tej_core::Config::load(&config_path).unwrap();
    let mut settings = tej_backup::BackupSettings::from_config(&config).unwrap();
    settings.repositories.truncate(1);
    let backups = Backups::builder().settings(settings).build().await.unwrap();
    let report = backups
        .verify(
            &BackupSelector::by_id(BackupId::parse(&id).unwrap()),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(report.id, id);
    assert!(!report.objects.is_empty());

    assert_eq!(get(&addr, "/nothing").0, 404);
    assert_eq!(
        request(
            &addr,
            "DELETE /backups HTTP/1.1\r\nConnection: close\r\n\r\n"
        )
        .0,
        405
    );
    assert_eq!(request(&addr, "hello\r\n\r\n").0, 400);

    let pid = service.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = service.0.wait().unwrap();
    assert!(
        status.success(),
        "the service stops cleanly on SIGTERM: {status}"
    );
    let printed: Vec<String> = lines.map_while(|l| l.ok()).collect();
    assert!(
        printed.iter().any(|l| l == "POST /backups 201"),
        "{printed:?}"
    );
}

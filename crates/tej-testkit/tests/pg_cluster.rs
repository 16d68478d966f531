//! PgCluster against a real PostgreSQL 15.

use anyhow::{Context, Result};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use tej_testkit::{PgCluster, PgClusterOptions, run_as_postgres};

fn port_refuses(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_err()
}

#[tokio::test]
async fn select_one_via_tokio_postgres_and_psql() -> Result<()> {
    let pg = PgCluster::start()?;
    assert_eq!(pg.host(), "127.0.0.1");
    assert_eq!(pg.user(), "postgres");
    assert_eq!(
        pg.url("postgres"),
        format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
    );
    assert_eq!(
        pg.conn_str("x"),
        format!("host=127.0.0.1 port={} user=postgres dbname=x", pg.port())
    );

    let (client, conn) = tokio_postgres::connect(&pg.conn_str("postgres"), tokio_postgres::NoTls)
        .await
        .context("connect with tokio-postgres")?;
    let conn = tokio::spawn(conn);
    let one: i32 = client.query_one("SELECT 1", &[]).await?.get(0);
    assert_eq!(one, 1);
    let version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    assert!(version.starts_with("15."), "{version}");
    drop(client);
    conn.await??;

    let (client, conn) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
        .await
        .context("connect with the URL")?;
    tokio::spawn(conn);
    let one: i32 = client.query_one("SELECT 1", &[]).await?.get(0);
    assert_eq!(one, 1);

    assert_eq!(pg.psql("postgres", "SELECT 1")?, "1");
    // Several statements, no command tags, rows on lines and columns split by '|'.
    assert_eq!(
        pg.psql(
            "postgres",
            "CREATE TABLE t (a int, b text); INSERT INTO t VALUES (1, 'x'), (2, 'y');\n\
             SELECT a, b FROM t ORDER BY a;"
        )?,
        "1|x\n2|y"
    );
    Ok(())
}

#[test]
fn extensions_and_checksums_are_available() -> Result<()> {
    let pg = PgCluster::start()?;
    let url = pg.create_database("ext_db")?;
    assert_eq!(url, pg.url("ext_db"));
    pg.psql(
        "ext_db",
        "CREATE EXTENSION pg_stat_statements; CREATE EXTENSION pgstattuple; CREATE EXTENSION amcheck;",
    )?;
    assert_eq!(
        pg.psql(
            "ext_db",
            "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1"
        )?,
        "amcheck\npg_stat_statements\npgstattuple"
    );
    // Preloaded, so the view can be read; amcheck and pgstattuple work.
    pg.psql("ext_db", "SELECT count(*) FROM pg_stat_statements")?;
    pg.psql(
        "ext_db",
        "CREATE TABLE x (id int PRIMARY KEY); INSERT INTO x SELECT generate_series(1, 100);",
    )?;
    assert_eq!(
        pg.psql("ext_db", "SELECT bt_index_check('x_pkey'::regclass)")?,
        ""
    );
    assert_eq!(
        pg.psql("ext_db", "SELECT tuple_count FROM pgstattuple('x')")?,
        "100"
    );
    assert_eq!(pg.psql("ext_db", "SHOW data_checksums")?, "on");
    assert_eq!(pg.psql("ext_db", "SHOW wal_level")?, "replica");
    assert_eq!(pg.psql("ext_db", "SHOW listen_addresses")?, "127.0.0.1");
    assert_eq!(pg.psql("ext_db", "SHOW max_connections")?, "50");
    Ok(())
}

#[test]
fn dropped_cluster_is_stopped_and_removed() -> Result<()> {
    let pg = PgCluster::start()?;
    let port = pg.port();
    let base = pg.base_dir().to_path_buf();
    assert!(pg.data_dir().starts_with(&base));
    assert!(pg.socket_dir().starts_with(&base));
    assert!(pg.data_dir().join("PG_VERSION").exists());
    assert!(!port_refuses(port));
    drop(pg);
    assert!(port_refuses(port), "port {port} still accepts after drop");
    assert!(!base.exists(), "{} still exists", base.display());
    Ok(())
}

#[test]
fn stop_and_start_again_keep_the_data() -> Result<()> {
    let mut pg = PgCluster::start()?;
    pg.create_database("app")?;
    pg.psql(
        "app",
        "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here');",
    )?;
    let port = pg.port();
    pg.stop()?;
    assert!(!pg.is_running());
    assert!(port_refuses(port));
    pg.stop()?; // idempotent
    pg.start_again()?;
    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql("app", "SELECT v FROM kept")?, "still here");
    let log = pg.server_log();
    assert!(
        log.contains("database system is ready to accept connections"),
        "{log}"
    );
    assert!(log.contains("database system is shut down"), "{log}");
    Ok(())
}

#[test]
fn options_archive_wal_and_apply_extra_conf() -> Result<()> {
    let pg = PgCluster::start_with(PgClusterOptions {
        archive_mode: true,
        // archive_command runs in the data directory; ../archive is in the base dir.
        archive_command: Some("mkdir -p ../archive && cp %p ../archive/%f".to_string()),
        extra_conf: vec!["work_mem = '7MB'".to_string()],
        preload_pg_stat_statements: false,
        data_checksums: false,
        tls: None,
        hba_first: Vec::new(),
    })?;
    assert_eq!(pg.psql("postgres", "SHOW work_mem")?, "7MB");
    assert_eq!(pg.psql("postgres", "SHOW data_checksums")?, "off");
    assert_eq!(pg.psql("postgres", "SHOW shared_preload_libraries")?, "");
    assert_eq!(pg.psql("postgres", "SHOW archive_mode")?, "on");
    let segment = pg.psql(
        "postgres",
        "CREATE TABLE w (i int); INSERT INTO w VALUES (1); SELECT pg_walfile_name(pg_switch_wal());",
    )?;
    let archived: PathBuf = pg.base_dir().join("archive").join(&segment);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !archived.exists() {
        assert!(
            Instant::now() < deadline,
            "{} was not archived\n{}",
            archived.display(),
            pg.server_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn psql_errors_carry_stderr() -> Result<()> {
    let pg = PgCluster::start()?;
    let err = pg
        .psql("postgres", "SELECT * FROM no_such_table")
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("no_such_table") && msg.contains("does not exist"),
        "{msg}"
    );
    let err = pg.psql("no_such_db", "SELECT 1").unwrap_err();
    assert!(format!("{err:#}").contains("no_such_db"), "{err:#}");
    Ok(())
}

#[test]
fn run_as_postgres_runs_server_programs() -> Result<()> {
    let pg = PgCluster::start()?;
    let mut cmd = Command::new(PgCluster::bin_dir().join("pg_ctl"));
    cmd.arg("status")
        .arg("-D")
        .arg(pg.data_dir())
        .current_dir(pg.base_dir());
    run_as_postgres(&mut cmd);
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("server is running"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = pg.pg_command("pg_controldata");
    cmd.arg(pg.data_dir());
    let out = cmd.output()?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Database cluster state:"),
        "{out:?}"
    );
    Ok(())
}

#[test]
fn clusters_start_in_parallel_on_distinct_ports() -> Result<()> {
    let handles: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(PgCluster::start))
        .collect();
    let clusters = handles
        .into_iter()
        .map(|h| h.join().expect("start thread"))
        .collect::<Result<Vec<_>>>()?;
    let mut ports: Vec<u16> = clusters.iter().map(PgCluster::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3);
    for pg in &clusters {
        assert_eq!(pg.psql("postgres", "SELECT 40 + 2")?, "42");
    }
    Ok(())
}

#[test]
fn a_failed_start_reports_the_server_log() {
    let err = PgCluster::start_with(PgClusterOptions {
        extra_conf: vec!["no_such_setting_tej = 1".to_string()],
        ..PgClusterOptions::default()
    })
    .expect_err("an unknown setting must stop the server from starting");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("unrecognized configuration parameter") && msg.contains("no_such_setting_tej"),
        "{msg}"
    );
}

#[test]
fn drop_also_stops_a_server_started_on_a_copy_inside_the_base_dir() -> Result<()> {
    let pg = PgCluster::start()?;
    pg.psql(
        "postgres",
        "CREATE TABLE copied (v int); INSERT INTO copied VALUES (7);",
    )?;
    let copy = pg.base_dir().join("copy");
    let mut backup = pg.pg_command("pg_basebackup");
    backup
        .arg("-D")
        .arg(&copy)
        .args([
            "-h",
            pg.host(),
            "-U",
            pg.user(),
            "-X",
            "stream",
            "-c",
            "fast",
        ])
        .arg("-p")
        .arg(pg.port().to_string());
    let out = backup.output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let port2 = tej_testkit::free_port();
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(copy.join("postgresql.conf"))?;
    std::io::Write::write_all(&mut conf, format!("\nport = {port2}\n").as_bytes())?;
    let mut start = pg.pg_command("pg_ctl");
    start
        .arg("-D")
        .arg(&copy)
        .arg("-l")
        .arg(pg.base_dir().join("copy.log"))
        .args(["-w", "start"]);
    let out = start.output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let psql = Command::new(PgCluster::bin_dir().join("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .arg("-p")
        .arg(port2.to_string())
        .args(["-c", "SELECT v FROM copied"])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&psql.stdout).trim(), "7");

    let port = pg.port();
    drop(pg);
    assert!(port_refuses(port));
    assert!(
        port_refuses(port2),
        "the copy's server outlived the cluster"
    );
    Ok(())
}

#[test]
fn tls_clusters_serve_the_test_ca_certificate_and_hba_lines_come_first() -> Result<()> {
    let ca = tej_testkit::TestCa::new()?;
    let pg = PgCluster::start_with(PgClusterOptions {
        tls: Some(tej_testkit::PgServerTls {
            server: ca.server_cert(&["localhost"])?,
            client_ca_file: None,
        }),
        hba_first: vec!["hostnossl all nossl 127.0.0.1/32 reject".into()],
        ..PgClusterOptions::default()
    })?;
    pg.psql("postgres", "CREATE ROLE nossl LOGIN")?;
    // libpq itself (psql) verifies the certificate against the CA and the host name.
    let psql = |conn: String| {
        std::process::Command::new(PgCluster::bin_dir().join("psql"))
            .args(["-X", "-A", "-t", "-c"])
            .arg("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .arg(conn)
            .env_remove("PGSERVICE")
            .output()
    };
    let conn = |user: &str, mode: &str| {
        format!(
            "host=localhost hostaddr=127.0.0.1 port={} user={user} dbname=postgres \
             sslmode={mode} sslrootcert={}",
            pg.port(),
            ca.ca_file().display()
        )
    };
    let out = psql(conn("postgres", "verify-full"))?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t", "{out:?}");
    let out = psql(conn("nossl", "disable"))?;
    assert!(
        !out.status.success(),
        "hostnossl reject must refuse: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pg_hba.conf"),
        "{out:?}"
    );
    Ok(())
}

//! libpq's environment and files against a real server: a password from `PGPASSFILE` or
//! `~/.pgpass` (ignored when group or world readable), a service from `PGSERVICEFILE` or
//! `~/.pg_service.conf`, and `PGAPPNAME` as the server sees it.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tej_db::pg::{PgClient, PgConnectOptions, PgValue, run_configured_query};
use tej_testkit::{PgCluster, PgClusterOptions};

/// A cluster where `alice` (password `pa:ss\word`) must give her password.
fn cluster() -> PgCluster {
    let pg = PgCluster::start_with(PgClusterOptions {
        hba_first: vec!["host all alice 127.0.0.1/32 scram-sha-256".into()],
        ..PgClusterOptions::default()
    })
    .unwrap();
    pg.psql(
        "postgres",
        "CREATE ROLE alice LOGIN PASSWORD 'pa:ss\\word'; CREATE DATABASE app OWNER alice",
    )
    .unwrap();
    pg
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The first value `sql` returns over a connection from the environment `env`.
async fn query(env: &[(&str, String)], sql: &str) -> Result<Option<PgValue>, String> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let opts =
        PgConnectOptions::from_env_with(&|k| env.get(k).cloned()).map_err(|e| e.to_string())?;
    let client = PgClient::new(&opts).map_err(|e| e.to_string())?;
    run_configured_query(&client, sql)
        .await
        .map(|r| r.first)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn passwords_come_from_pgpass_files_as_libpq_reads_them() {
    let pg = cluster();
    let home = tempfile::tempdir().unwrap();
    let h = || ("HOME", home.path().display().to_string());
    let url = format!("postgres://alice@127.0.0.1:{}/app", pg.port());
    let db = || ("DATABASE_URL", url.clone());
    let who = "SELECT current_user::text";
    let alice = Ok(Some(PgValue::Text("alice".into())));

    // No password anywhere: the server asks for one.
    let e = query(&[db(), h()], who).await.unwrap_err();
    assert!(e.contains("password"), "{e}");

    // PGPASSFILE: comments, a non-matching line first, `*`, and `\:`/`\\` escapes.
    let passfile = home.path().join("passfile");
    write(
        &passfile,
        &format!(
            "# tej test\n127.0.0.1:{}:app:bob:nope\n127.0.0.1:{}:*:alice:pa\\:ss\\\\word\n",
            pg.port(),
            pg.port()
        ),
        0o600,
    );
    let pf = || ("PGPASSFILE", passfile.display().to_string());
    assert_eq!(query(&[db(), h(), pf()], who).await, alice);

    // Group- or world-readable: ignored (with a warning), as libpq does.
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = query(&[db(), h(), pf()], who).await.unwrap_err();
    assert!(e.contains("password"), "{e}");

    // ~/.pgpass when PGPASSFILE is not set; a wrong port does not match.
    let pgpass = home.path().join(".pgpass");
    write(
        &pgpass,
        &format!(
            "*:{}:app:alice:wrong\n*:*:*:alice:pa\\:ss\\\\word\n",
            pg.port() + 1
        ),
        0o600,
    );
    assert_eq!(query(&[db(), h()], who).await, alice);
    // A password the connection string gives wins over the file.
    let with_pw = format!("postgres://alice:nope@127.0.0.1:{}/app", pg.port());
    let e = query(&[("DATABASE_URL", with_pw), h()], who)
        .await
        .unwrap_err();
    assert!(e.contains("password"), "{e}");
}

#[tokio::test]
async fn services_and_application_name_come_from_the_environment() {
    let pg = cluster();
    let home = tempfile::tempdir().unwrap();
    let h = || ("HOME", home.path().display().to_string());
    write(
        &home.path().join(".pgpass"),
        "127.0.0.1:*:*:alice:pa\\:ss\\\\word\n",
        0o600,
    );
    let services = format!(
        "# services\n[app]\nhost=127.0.0.1\nport={}\nuser=alice\ndbname=app\n\n[other]\nport=1\n",
        pg.port()
    );
    write(&home.path().join(".pg_service.conf"), &services, 0o644);
    let app = "SELECT current_database()::text || ' ' || \
               (SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid())";

    // PGSERVICE alone names the server; PGAPPNAME is what the server sees.
    let got = query(
        &[
            h(),
            ("PGSERVICE", "app".into()),
            ("PGAPPNAME", "nightly-check".into()),
        ],
        app,
    )
    .await;
    assert_eq!(got, Ok(Some(PgValue::Text("app nightly-check".into()))));

    // service= in the connection string; the file given by PGSERVICEFILE; without PGAPPNAME
    // the server sees tej's own name.
    let file = home.path().join("services.conf");
    write(&file, &services.replace("[app]", "[elsewhere]"), 0o644);
    let got = query(
        &[
            h(),
            ("DATABASE_URL", "service=elsewhere".into()),
            ("PGSERVICEFILE", file.display().to_string()),
        ],
        app,
    )
    .await;
    assert_eq!(got, Ok(Some(PgValue::Text("app tej".into()))));

    // A service that no file defines is an error naming it.
    let e = query(&[h(), ("DATABASE_URL", "service=nope".into())], app)
        .await
        .unwrap_err();
    assert!(e.contains("\"nope\""), "{e}");
}

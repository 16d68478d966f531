//! `sslmode` with libpq's meanings against real TLS servers: one whose certificate a test CA
//! signed (for `localhost` only), one with a self-signed certificate, and one without TLS.
//! The server says whether a session is encrypted (`pg_stat_ssl`).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use tej_db::pg::base_backup::BaseBackupSession;
use tej_db::pg::{PgClient, PgConnectOptions, PgValue, run_configured_query};
use tej_testkit::{PgCluster, PgClusterOptions, PgServerTls, TestCa};

const SSL_SQL: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// Options for `conn` in an environment where `HOME` is `home` and nothing else is set.
fn opts(conn: &str, home: &std::path::Path) -> PgConnectOptions {
    let env: HashMap<&str, String> = [
        ("DATABASE_URL", conn.to_string()),
        ("HOME", home.display().to_string()),
    ]
    .into();
    PgConnectOptions::from_env_with(&|k| env.get(k).cloned()).unwrap()
}

/// Whether the session `conn` opens is encrypted, or the error connecting.
async fn session_ssl(conn: &str, home: &std::path::Path) -> Result<bool, String> {
    let client = PgClient::new(&opts(conn, home)).map_err(|e| e.to_string())?;
    let r = run_configured_query(&client, SSL_SQL)
        .await
        .map_err(|e| e.to_string())?;
    match r.first {
        Some(PgValue::Bool(b)) => Ok(b),
        other => Err(format!("unexpected pg_stat_ssl answer {other:?}")),
    }
}

/// What a row of the table expects.
#[derive(Debug)]
enum Want {
    Plain,
    Tls,
    /// Fails, the error containing this text.
    Fails(&'static str),
}

/// Runs every `(conninfo suffix, want)` against `pg` and returns one line per mismatch.
async fn run_table(
    name: &str,
    pg: &PgCluster,
    home: &std::path::Path,
    rows: &[(String, Want)],
) -> Vec<String> {
    let mut bad = Vec::new();
    for (extra, want) in rows {
        let conn = if extra.starts_with("postgresql://") {
            extra.clone()
        } else {
            format!("port={} dbname=postgres {extra}", pg.port())
        };
        let got = session_ssl(&conn, home).await;
        let ok = match (want, &got) {
            (Want::Plain, Ok(false)) | (Want::Tls, Ok(true)) => true,
            (Want::Fails(text), Err(e)) => e.contains(text),
            _ => false,
        };
        if !ok {
            bad.push(format!("{name}: {extra}: want {want:?}, got {got:?}"));
        }
    }
    bad
}

fn tls_cluster(server: tej_testkit::CertFiles, ca: &TestCa) -> PgCluster {
    PgCluster::start_with(PgClusterOptions {
        tls: Some(PgServerTls {
            server,
            client_ca_file: Some(ca.ca_file().to_path_buf()),
        }),
        hba_first: vec![
            "hostssl all certuser 127.0.0.1/32 cert".into(),
            "host all certuser 127.0.0.1/32 reject".into(),
            "hostnossl all sslonly 127.0.0.1/32 reject".into(),
            "hostssl all plainonly 127.0.0.1/32 reject".into(),
        ],
        ..PgClusterOptions::default()
    })
    .unwrap()
}

#[tokio::test]
async fn sslmodes_behave_as_libpq_against_ca_signed_self_signed_and_plain_servers() {
    let ca = TestCa::new().unwrap();
    let other_ca = TestCa::new().unwrap();
    let home = tempfile::tempdir().unwrap();
    let signed = tls_cluster(ca.server_cert(&["localhost"]).unwrap(), &ca);
    let selfsigned = tls_cluster(ca.self_signed_cert(&["localhost"]).unwrap(), &ca);
    let plain = PgCluster::start_with(PgClusterOptions {
        hba_first: vec!["host all refused 127.0.0.1/32 reject".into()],
        ..PgClusterOptions::default()
    })
    .unwrap();
    for pg in [&signed, &selfsigned] {
        pg.psql(
            "postgres",
            "CREATE ROLE certuser LOGIN; CREATE ROLE sslonly LOGIN; CREATE ROLE plainonly LOGIN",
        )
        .unwrap();
    }
    let root = ca.ca_file().display().to_string();
    let other = other_ca.ca_file().display().to_string();
    let client = ca.client_cert("certuser").unwrap();
    let ip = "host=127.0.0.1 user=postgres";
    let named = "host=localhost hostaddr=127.0.0.1 user=postgres";
    let signed_rows = vec![
        (format!("{ip} sslmode=disable"), Want::Plain),
        (format!("{ip} sslmode=allow"), Want::Plain),
        (format!("{ip} sslmode=prefer"), Want::Tls),
        (ip.to_string(), Want::Tls),
        (format!("{ip} sslmode=require"), Want::Tls),
        // libpq: require with a root certificate verifies the chain, as verify-ca does.
        (
            format!("{ip} sslmode=require sslrootcert={other}"),
            Want::Fails("certificate"),
        ),
        (
            format!("{ip} sslmode=verify-ca sslrootcert={root}"),
            Want::Tls,
        ),
        (
            format!("{ip} sslmode=verify-ca sslrootcert={other}"),
            Want::Fails("certificate"),
        ),
        (format!("{ip} sslmode=verify-ca"), Want::Fails("root.crt")),
        (
            format!("{ip} sslmode=verify-full sslrootcert={root}"),
            Want::Fails("certificate"),
        ),
        (
            format!("{named} sslmode=verify-full sslrootcert={root}"),
            Want::Tls,
        ),
        (
            format!(
                "postgresql://postgres@localhost:{}/postgres?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={root}",
                signed.port()
            ),
            Want::Tls,
        ),
        // allow tries plain first and TLS when the server refuses; prefer the other way round.
        (
            "host=127.0.0.1 user=sslonly sslmode=allow".into(),
            Want::Tls,
        ),
        (
            "host=127.0.0.1 user=plainonly sslmode=prefer".into(),
            Want::Plain,
        ),
        (
            "host=127.0.0.1 user=plainonly sslmode=require".into(),
            Want::Fails("pg_hba.conf"),
        ),
        (
            format!(
                "host=127.0.0.1 user=certuser sslmode=verify-ca sslrootcert={root} sslcert={} sslkey={}",
                client.cert_file.display(),
                client.key_file.display()
            ),
            Want::Tls,
        ),
        (
            "host=127.0.0.1 user=certuser sslmode=require".into(),
            Want::Fails("certificate"),
        ),
    ];
    let mut bad = run_table("CA-signed", &signed, home.path(), &signed_rows).await;

    // A client key the group can read is refused, as libpq refuses it.
    let loose_key = home.path().join("loose.key");
    std::fs::copy(&client.key_file, &loose_key).unwrap();
    std::fs::set_permissions(&loose_key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let loose = vec![(
        format!(
            "host=127.0.0.1 user=certuser sslmode=require sslcert={} sslkey={}",
            client.cert_file.display(),
            loose_key.display()
        ),
        Want::Fails("group or world access"),
    )];
    bad.extend(run_table("loose client key", &signed, home.path(), &loose).await);

    // PGSSLMODE and PGSSLROOTCERT fill in what the connection string leaves out.
    for (pg, want_tls) in [(&signed, true), (&selfsigned, false)] {
        let env: HashMap<&str, String> = [
            (
                "DATABASE_URL",
                format!(
                    "host=localhost hostaddr=127.0.0.1 port={} user=postgres",
                    pg.port()
                ),
            ),
            ("HOME", home.path().display().to_string()),
            ("PGSSLMODE", "verify-full".to_string()),
            ("PGSSLROOTCERT", root.clone()),
        ]
        .into();
        let o = PgConnectOptions::from_env_with(&|k| env.get(k).cloned()).unwrap();
        let got = match PgClient::new(&o) {
            Ok(c) => run_configured_query(&c, SSL_SQL)
                .await
                .map(|r| r.first)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let ok = match &got {
            Ok(v) => want_tls && *v == Some(PgValue::Bool(true)),
            Err(e) => !want_tls && e.contains("certificate"),
        };
        if !ok {
            bad.push(format!(
                "PGSSLMODE=verify-full PGSSLROOTCERT: want TLS {want_tls}, got {got:?}"
            ));
        }
    }

    let selfsigned_rows = vec![
        (format!("{ip} sslmode=disable"), Want::Plain),
        (format!("{ip} sslmode=allow"), Want::Plain),
        (format!("{ip} sslmode=prefer"), Want::Tls),
        (format!("{ip} sslmode=require"), Want::Tls),
        (
            format!("{ip} sslmode=verify-ca sslrootcert={root}"),
            Want::Fails("certificate"),
        ),
        (
            format!("{named} sslmode=verify-full sslrootcert={root}"),
            Want::Fails("certificate"),
        ),
    ];
    bad.extend(run_table("self-signed", &selfsigned, home.path(), &selfsigned_rows).await);

    let plain_rows = vec![
        (format!("{ip} sslmode=allow"), Want::Plain),
        (format!("{ip} sslmode=prefer"), Want::Plain),
        (format!("{ip} sslmode=require"), Want::Fails("TLS")),
        // allow's TLS retry finds no TLS: the refusal of the plain session is the error.
        (
            "host=127.0.0.1 user=refused sslmode=allow".into(),
            Want::Fails("pg_hba.conf"),
        ),
    ];
    bad.extend(run_table("plain", &plain, home.path(), &plain_rows).await);

    // The default root certificate, ~/.postgresql/root.crt, as libpq reads it.
    std::fs::create_dir(home.path().join(".postgresql")).unwrap();
    std::fs::copy(ca.ca_file(), home.path().join(".postgresql/root.crt")).unwrap();
    let default_root = vec![
        (format!("{named} sslmode=verify-full"), Want::Tls),
        (format!("{ip} sslmode=require"), Want::Tls),
    ];
    bad.extend(
        run_table(
            "~/.postgresql/root.crt",
            &signed,
            home.path(),
            &default_root,
        )
        .await,
    );
    let default_root_selfsigned = vec![
        (format!("{ip} sslmode=require"), Want::Fails("certificate")),
        // With a root certificate libpq verifies in every mode; prefer then falls back to
        // a plain session when verification fails.
        (format!("{ip} sslmode=prefer"), Want::Plain),
    ];
    bad.extend(
        run_table(
            "~/.postgresql/root.crt, self-signed server",
            &selfsigned,
            home.path(),
            &default_root_selfsigned,
        )
        .await,
    );
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[tokio::test]
async fn base_backup_session_uses_tls_when_sslmode_requires_it() {
    let ca = TestCa::new().unwrap();
    let pg = tls_cluster(ca.self_signed_cert(&["localhost"]).unwrap(), &ca);
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require",
        pg.port()
    );
    let mut session = BaseBackupSession::connect(&conn, None).await.unwrap();
    session.server_facts().await.unwrap();
    let ssl = pg
        .psql(
            "postgres",
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'tej base backup'",
        )
        .unwrap();
    assert_eq!(ssl, "t", "the base-backup session must be encrypted");
    drop(session);

    let verify = format!(
        "{conn} sslmode=verify-ca sslrootcert={}",
        ca.ca_file().display()
    );
    let e = BaseBackupSession::connect(&verify, None).await.unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");
}

//! TLS to PostgreSQL through rustls, with `sslmode` from the connection string.

use std::os::unix::fs::PermissionsExt;
use tej_db::pg::{DbError, PgAdmin, PgClient, PgConnectOptions, PgValue, run_configured_query};
use tej_testkit::PgCluster;

#[tokio::test]
async fn tls_connection_is_verified_against_the_given_ca() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = pg.base_dir().join("server.crt");
    let key = pg.base_dir().join("server.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    if let Some(u) = nix::unistd::User::from_name("postgres").unwrap() {
        for p in [&cert, &key] {
            nix::unistd::chown(p, Some(u.uid), Some(u.gid)).unwrap();
        }
    }
    pg.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}'; ALTER SYSTEM SET ssl_key_file = '{}'; ALTER SYSTEM SET ssl = on;",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    pg.reload().unwrap();

    let url = format!(
        "postgres://postgres@127.0.0.1:{}/app?sslmode=require",
        pg.port()
    );
    let mut opts = PgConnectOptions::new(&url);
    opts.ca_file = Some(cert.clone());
    let c = PgClient::new(&opts).unwrap();
    // Reloading is asynchronous: retry a few times until the server offers TLS.
    let mut last = None;
    for _ in 0..50 {
        match run_configured_query(
            &c,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .await
        {
            Ok(r) => {
                last = Some(r.first == Some(PgValue::Bool(true)));
                break;
            }
            Err(e) => {
                last = None;
                eprintln!("waiting for TLS: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(last, Some(true), "the connection must be encrypted");

    // The system's roots alone do not trust the self-signed certificate.
    let untrusted = PgClient::new(&PgConnectOptions::new(&url)).unwrap();
    let e = untrusted.ping().await.unwrap_err();
    assert!(matches!(e, DbError::Tls(_)), "{e:?}");
}

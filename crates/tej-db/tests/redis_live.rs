//! tej-db's Redis half against real redis-server processes from tej-testkit (one per test).

use std::sync::Arc;
use tej_core::{Environment, Secret, Severity, Step};
use tej_db::DbError;
use tej_db::redis::{
    BigKeysOptions, FlushScope, FlushStep, InfoReport, InvalidateOptions, RedisAdmin, RedisClient,
    RedisConnectOptions, RedisThresholds, find_big_keys, invalidate_sessions, redis_health,
};
use tej_testkit::RedisServer;

/// A raw connection for setting up and checking state behind tej's back.
async fn raw(url: &str, db: i64) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("{url}{db}")).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

async fn client(server: &RedisServer, db: i64) -> RedisClient {
    let mut o = RedisConnectOptions::new(server.url());
    o.db = Some(db);
    RedisClient::connect(&o).await.unwrap()
}

async fn dbsize(c: &mut redis::aio::MultiplexedConnection) -> u64 {
    redis::cmd("DBSIZE").query_async(c).await.unwrap()
}

/// Sets `n` keys `prefix{i}` to small values, 1000 per MSET.
async fn fill(c: &mut redis::aio::MultiplexedConnection, prefix: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut cmd = redis::cmd("MSET");
        for i in chunk {
            cmd.arg(format!("{prefix}{i}")).arg("v");
        }
        let _: () = cmd.query_async(c).await.unwrap();
    }
}

#[tokio::test]
async fn info_is_parsed_on_a_live_server() {
    let server = RedisServer::start().unwrap();
    let mut r = raw(&server.url(), 2).await;
    fill(&mut r, "k:", 25).await;
    let admin = client(&server, 2).await;
    let latency = admin.ping().await.unwrap();
    assert!(latency.as_secs() < 10);
    let info = InfoReport::parse(&admin.info().await.unwrap());
    assert!(
        info.server
            .redis_version
            .as_deref()
            .unwrap()
            .starts_with(char::is_numeric)
    );
    assert_eq!(info.server.tcp_port, Some(u64::from(server.port())));
    assert!(info.memory.used_memory.unwrap() > 0);
    assert!(info.clients.connected_clients.unwrap() >= 2);
    assert_eq!(info.replication.role.as_deref(), Some("master"));
    assert_eq!(info.persistence.loading, Some(false));
    let db2 = info.keyspace.iter().find(|d| d.db == 2).unwrap();
    assert_eq!(db2.keys, 25);
    assert!(info.raw.contains_key("cpu"), "unknown sections are kept");

    let (parsed, findings) = redis_health(&admin, &RedisThresholds::default(), "redis:test").await;
    assert!(parsed.is_some());
    // A fresh, tiny instance: nothing to flag (small instances are never flagged for memory).
    assert!(
        findings.iter().all(|f| f.severity == Severity::Ok),
        "{findings:#?}"
    );
    assert!(findings.iter().any(|f| f.check == "redis.ping"));
}

#[tokio::test]
async fn session_invalidation_removes_exactly_the_matching_keys() {
    let server = RedisServer::start().unwrap();
    let mut r = raw(&server.url(), 3).await;
    fill(&mut r, "sess:", 30_000).await;
    fill(&mut r, "user:", 8_000).await;
    // Near misses that must stay.
    for k in [
        "sess",
        "session:1",
        "xsess:1",
        "user:sess:1",
        "SESS:1",
        "cache:sess:*",
    ] {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg("v")
            .query_async(&mut r)
            .await
            .unwrap();
    }
    // Binary key names inside the pattern go too.
    let _: () = redis::cmd("SET")
        .arg(b"sess:\xff\xfe".as_slice())
        .arg("v")
        .query_async(&mut r)
        .await
        .unwrap();
    // The same pattern in another database is left alone.
    let mut other = raw(&server.url(), 4).await;
    fill(&mut other, "sess:", 100).await;
    assert_eq!(dbsize(&mut r).await, 38_007);

    let admin = client(&server, 3).await;
    let report = invalidate_sessions(&admin, &InvalidateOptions::default())
        .await
        .unwrap();
    assert_eq!(report.removed, 30_001);
    assert!(report.matched >= 30_001);
    assert!(report.batches >= 60);
    assert_eq!(dbsize(&mut r).await, 8_006);
    let left: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("sess:*")
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(left.is_empty());
    let exists: u64 = redis::cmd("EXISTS")
        .arg(&[
            "sess",
            "session:1",
            "xsess:1",
            "user:sess:1",
            "SESS:1",
            "cache:sess:*",
            "user:7999",
        ])
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(exists, 7);
    assert_eq!(dbsize(&mut other).await, 100);
    // Running again finds nothing.
    let again = invalidate_sessions(&admin, &InvalidateOptions::default())
        .await
        .unwrap();
    assert_eq!(again.removed, 0);
}

#[tokio::test]
async fn flushdb_is_refused_in_production_and_runs_in_staging() {
    let server = RedisServer::start().unwrap();
    let mut r = raw(&server.url(), 5).await;
    fill(&mut r, "k:", 10).await;
    let admin: Arc<dyn RedisAdmin> = Arc::new(client(&server, 5).await);
    for scope in [FlushScope::Db, FlushScope::All] {
        let step = FlushStep::new(admin.clone(), scope, Environment::Production, "redis:test");
        let err = step.apply().await.unwrap_err().to_string();
        assert!(err.contains("production"), "{err}");
        assert!(step.plan().await.is_err());
    }
    assert_eq!(dbsize(&mut r).await, 10);

    // The production refusal holds even under an executor that confirms everything and
    // overrides the maintenance window.
    let guard = tej_core::Guard {
        environment: Environment::Production,
        calendar: tej_core::Calendar::runbook(),
        clock: Arc::new(tej_core::SystemClock),
        confirmer: Arc::new(tej_core::Fixed(true)),
        override_window: true,
    };
    let proc = tej_core::Procedure::new("flush").step(FlushStep::new(
        admin.clone(),
        FlushScope::Db,
        Environment::Production,
        "redis:test",
    ));
    let report = tej_core::Executor::new(guard).run(&proc).await;
    assert!(!report.succeeded());
    assert_eq!(dbsize(&mut r).await, 10);

    let step = FlushStep::new(
        admin.clone(),
        FlushScope::Db,
        Environment::Staging,
        "redis:test",
    );
    step.apply().await.unwrap();
    assert_eq!(dbsize(&mut r).await, 0);
}

#[tokio::test]
async fn big_keys_are_found_with_scan_never_keys() {
    let server = RedisServer::start().unwrap();
    let mut r = raw(&server.url(), 6).await;
    fill(&mut r, "small:", 3000).await;
    let blob = "x".repeat(1 << 20);
    let _: () = redis::cmd("SET")
        .arg("big:blob")
        .arg(&blob)
        .query_async(&mut r)
        .await
        .unwrap();
    let mut hset = redis::cmd("HSET");
    hset.arg("big:hash");
    for i in 0..5000 {
        hset.arg(format!("field{i}"))
            .arg("some value of moderate length");
    }
    let _: () = hset.query_async(&mut r).await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut r)
        .await
        .unwrap();

    let admin = client(&server, 6).await;
    let report = find_big_keys(
        &admin,
        &BigKeysOptions {
            top: 3,
            ..BigKeysOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(report.complete);
    assert_eq!(report.scanned, 3002);
    assert_eq!(report.top[0].key, "big:blob");
    assert_eq!(report.top[0].kind, "string");
    assert!(report.top[0].bytes >= 1 << 20);
    assert_eq!(report.top[1].key, "big:hash");
    assert_eq!(report.top[1].kind, "hash");

    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(stats.contains("cmdstat_scan:"), "{stats}");
    assert!(stats.contains("cmdstat_memory|usage:"), "{stats}");
    assert!(!stats.contains("cmdstat_keys:"), "KEYS was used:\n{stats}");

    // A key budget stops early.
    let partial = find_big_keys(
        &admin,
        &BigKeysOptions {
            max_keys: 100,
            scan_count: 50,
            ..BigKeysOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(!partial.complete);
    assert!(partial.scanned >= 100 && partial.scanned < 3002);
}

#[tokio::test]
async fn auth_acl_users_and_error_kinds() {
    let pw = "s3cret-pw";
    let server = RedisServer::start_with_password(pw).unwrap();

    // No password: the server answers NOAUTH.
    let mut o = RedisConnectOptions::new(server.url());
    let e = match RedisClient::connect(&o).await {
        Ok(c) => c.ping().await.unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(e, DbError::RedisAuthRefused { .. }), "{e:?}");

    // Wrong password.
    o.password = Some(Secret::new("wrong-one"));
    let e = RedisClient::connect(&o).await.unwrap_err();
    assert!(matches!(e, DbError::RedisAuthRefused { .. }), "{e:?}");
    assert!(!format!("{e:?} {e}").contains("wrong-one"));

    // Right password as a Secret.
    o.password = Some(Secret::new(pw));
    let admin = RedisClient::connect(&o).await.unwrap();
    admin.ping().await.unwrap();
    assert!(!format!("{admin:?} {o:?}").contains(pw));

    // The password inside the URL works too and never shows.
    let url_admin = RedisClient::connect(&RedisConnectOptions::new(server.url_with_password()))
        .await
        .unwrap();
    url_admin.ping().await.unwrap();
    assert!(!url_admin.target().contains(pw));

    // An ACL user that may read but not flush.
    let mut r = {
        let c = redis::Client::open(server.url_with_password()).unwrap();
        c.get_multiplexed_async_connection().await.unwrap()
    };
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "ops",
            "on",
            ">ops-pw",
            "~*",
            "+@all",
            "-flushdb",
            "-flushall",
        ])
        .query_async(&mut r)
        .await
        .unwrap();
    let ops = RedisClient::connect_url(&server.url(), Some("ops"), Some(Secret::new("ops-pw")))
        .await
        .unwrap();
    ops.ping().await.unwrap();
    let e = ops.flush_db().await.unwrap_err();
    assert!(
        matches!(e, DbError::RedisPermissionDenied { ref command } if command == "FLUSHDB"),
        "{e:?}"
    );
    let e = RedisClient::connect_url(&server.url(), Some("ops"), Some(Secret::new("nope")))
        .await
        .unwrap_err();
    assert!(matches!(e, DbError::RedisAuthRefused { .. }), "{e:?}");

    // BUSY: a script that never ends blocks the server until SCRIPT KILL.
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "busy-reply-threshold", "50"])
        .query_async(&mut r)
        .await
        .unwrap();
    let mut looping = {
        let c = redis::Client::open(server.url_with_password()).unwrap();
        c.get_multiplexed_async_connection().await.unwrap()
    };
    let script = tokio::spawn(async move {
        let _: redis::RedisResult<()> = redis::cmd("EVAL")
            .arg(&["while true do end", "0"])
            .query_async(&mut looping)
            .await;
    });
    let mut saw_busy = None;
    for _ in 0..200 {
        match admin.ping().await {
            Err(e @ DbError::RedisBusy(_)) => {
                saw_busy = Some(e);
                break;
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(25)).await,
        }
    }
    let _: () = redis::cmd("SCRIPT")
        .arg("KILL")
        .query_async(&mut r)
        .await
        .unwrap();
    script.await.unwrap();
    let busy = saw_busy.expect("a BUSY reply while the script ran");
    assert!(tej_core::Retryable::is_retryable(&busy));
    admin.ping().await.unwrap();
}

#[tokio::test]
async fn unreachable_and_tls_urls() {
    let port = tej_testkit::free_port();
    let mut o = RedisConnectOptions::new(format!("redis://:pw-in-url@127.0.0.1:{port}/"));
    o.timeout = std::time::Duration::from_secs(5);
    let e = RedisClient::connect(&o).await.unwrap_err();
    assert!(matches!(e, DbError::RedisUnreachable { .. }), "{e:?}");
    assert!(tej_core::Retryable::is_retryable(&e));
    assert!(!format!("{e:?} {e}").contains("pw-in-url"));

    // rediss:// is understood (TLS support is built in): against a plain server the TLS
    // handshake fails, which is "unreachable", not a configuration error.
    let server = RedisServer::start().unwrap();
    let o = RedisConnectOptions {
        timeout: std::time::Duration::from_secs(5),
        ..RedisConnectOptions::new(format!("rediss://127.0.0.1:{}/", server.port()))
    };
    let e = RedisClient::connect(&o).await.unwrap_err();
    assert!(
        matches!(
            e,
            DbError::RedisUnreachable { .. } | DbError::RedisTimeout { .. }
        ),
        "{e:?}"
    );

    let e = RedisClient::connect(&RedisConnectOptions::new("http://nope"))
        .await
        .unwrap_err();
    assert!(matches!(e, DbError::RedisInvalidConfig(_)), "{e:?}");
}

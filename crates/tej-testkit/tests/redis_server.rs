//! RedisServer against a real redis-server.

use anyhow::Result;
use std::net::TcpStream;
use std::time::Duration;
use tej_testkit::RedisServer;

fn port_refuses(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_err()
}

#[tokio::test]
async fn ping_answers_pong_and_drop_closes_the_port() -> Result<()> {
    let server = RedisServer::start()?;
    let port = server.port();
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}/"));
    assert_eq!(server.url_with_password(), server.url());
    let dir = server.dir().to_path_buf();
    {
        let client = redis::Client::open(server.url())?;
        let mut con = client.get_multiplexed_async_connection().await?;
        let pong: String = redis::cmd("PING").query_async(&mut con).await?;
        assert_eq!(pong, "PONG");
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query_async(&mut con)
            .await?;
        let v: String = redis::cmd("GET").arg("k").query_async(&mut con).await?;
        assert_eq!(v, "v");
    }
    drop(server);
    assert!(port_refuses(port), "port {port} still accepts after drop");
    assert!(!dir.exists());
    Ok(())
}

#[tokio::test]
async fn password_variant_refuses_unauthenticated_commands() -> Result<()> {
    let server = RedisServer::start_with_password("tej-s3cret")?;
    assert_eq!(server.password(), Some("tej-s3cret"));

    let unauthenticated = async {
        let client = redis::Client::open(server.url())?;
        let mut con = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut con).await
    };
    let err = unauthenticated
        .await
        .expect_err("PING without a password must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("NOAUTH") || msg.to_lowercase().contains("auth"),
        "{msg}"
    );

    let client = redis::Client::open(server.url_with_password())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let pong: String = redis::cmd("PING").query_async(&mut con).await?;
    assert_eq!(pong, "PONG");
    Ok(())
}

#[test]
fn servers_run_side_by_side() -> Result<()> {
    let a = RedisServer::start()?;
    let b = RedisServer::start()?;
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    let a_port = a.port();
    drop(a);
    assert!(port_refuses(a_port));
    assert!(!port_refuses(b.port()));
    Ok(())
}

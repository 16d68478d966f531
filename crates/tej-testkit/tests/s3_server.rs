//! S3Server (s3s-fs) through the AWS SDK.

use anyhow::{Context, Result};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use std::net::TcpStream;
use std::time::Duration;
use tej_testkit::S3Server;

fn port_refuses(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_err()
}

fn client(s3: &S3Server, secret: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(s3.endpoint())
        .region(Region::new(s3.region().to_string()))
        .credentials_provider(Credentials::new(
            s3.access_key(),
            secret,
            None,
            None,
            "tej-testkit",
        ))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[tokio::test]
async fn put_get_list_and_drop() -> Result<()> {
    let s3 = S3Server::start()?;
    let port = s3.port();
    assert_eq!(s3.endpoint(), format!("http://127.0.0.1:{port}"));
    assert_eq!(s3.region(), "us-east-1");
    let bucket = s3.unique_bucket("Tej_Testkit")?;
    assert!(bucket.starts_with("tej-testkit-"), "{bucket}");
    assert!(s3.root_dir().join(&bucket).is_dir());
    let base = s3.base_dir().to_path_buf();

    let c = client(&s3, s3.secret_key());
    c.put_object()
        .bucket(&bucket)
        .key("dir/hello.txt")
        .body(ByteStream::from_static(b"hello s3"))
        .send()
        .await
        .context("put_object")?;
    let got = c
        .get_object()
        .bucket(&bucket)
        .key("dir/hello.txt")
        .send()
        .await
        .context("get_object")?;
    assert_eq!(&got.body.collect().await?.into_bytes()[..], b"hello s3");
    let listed = c
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .context("list_objects_v2")?;
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["dir/hello.txt"]);
    let buckets = c.list_buckets().send().await.context("list_buckets")?;
    assert!(
        buckets
            .buckets()
            .iter()
            .any(|b| b.name() == Some(bucket.as_str()))
    );
    assert!(s3.root_dir().join(&bucket).join("dir/hello.txt").is_file());

    drop(c);
    drop(s3);
    assert!(port_refuses(port), "port {port} still accepts after drop");
    assert!(!base.exists());
    Ok(())
}

#[tokio::test]
async fn a_wrong_secret_is_refused() -> Result<()> {
    let s3 = S3Server::start()?;
    let bucket = s3.unique_bucket("sig")?;
    let bad = client(&s3, "not-the-secret");
    let res = bad
        .put_object()
        .bucket(&bucket)
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert!(res.is_err(), "a badly signed request was accepted");
    assert!(!s3.root_dir().join(&bucket).join("k").exists());
    Ok(())
}

#[test]
fn buckets_are_directories_and_names_are_checked() -> Result<()> {
    let s3 = S3Server::start()?;
    s3.create_bucket("plain-bucket")?;
    s3.create_bucket("plain-bucket")?; // fine if it exists
    assert!(s3.root_dir().join("plain-bucket").is_dir());
    assert!(s3.create_bucket("Bad_Name").is_err());
    let a = s3.unique_bucket("same")?;
    let b = s3.unique_bucket("same")?;
    assert_ne!(a, b);
    Ok(())
}

//! MotoServer through the AWS SDK: buckets, objects, and listing multipart uploads
//! (what s3s-fs lacks).

use anyhow::{Context, Result, ensure};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use std::net::TcpStream;
use std::time::Duration;
use tej_testkit::MotoServer;

fn client(s3: &MotoServer) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(s3.endpoint())
        .region(Region::new(s3.region().to_string()))
        .credentials_provider(Credentials::new(
            s3.access_key(),
            s3.secret_key(),
            None,
            None,
            "tej-testkit",
        ))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[tokio::test]
async fn buckets_objects_multipart_listing_and_drop() -> Result<()> {
    let s3 = MotoServer::start()?;
    let port = s3.port();
    ensure!(s3.endpoint() == format!("http://127.0.0.1:{port}"));
    let bucket = s3.unique_bucket("Tej_Moto")?;
    ensure!(bucket.starts_with("tej-moto-"), "{bucket}");
    let c = client(&s3);
    c.put_object()
        .bucket(&bucket)
        .key("a/b.txt")
        .body(ByteStream::from_static(b"hello moto"))
        .send()
        .await
        .context("put_object")?;
    let got = c.get_object().bucket(&bucket).key("a/b.txt").send().await?;
    ensure!(&got.body.collect().await?.into_bytes()[..] == b"hello moto");

    let up = c
        .create_multipart_upload()
        .bucket(&bucket)
        .key("big.bin")
        .send()
        .await
        .context("create_multipart_upload")?;
    let listed = c
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .context("list_multipart_uploads")?;
    let uploads = listed.uploads();
    ensure!(uploads.len() == 1, "{uploads:?}");
    ensure!(uploads[0].upload_id() == up.upload_id());

    s3.reset()?;
    ensure!(
        c.head_bucket().bucket(&bucket).send().await.is_err(),
        "reset forgets buckets"
    );
    ensure!(s3.server_log().contains("PUT"), "the log records requests");
    drop(s3);
    ensure!(
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_err(),
        "the server is gone after drop"
    );
    Ok(())
}

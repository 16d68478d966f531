//! Against moto (which lists multipart uploads and their parts): the unfinished multipart
//! upload of a run that is alive (its target's lock is held) survives another target's
//! create and a prune, even when they clean everything older than now; once its owner is
//! gone, prune aborts it. An old upload that still receives parts is left alone by the
//! store's cleanup itself.

mod logical_support;

use anyhow::{Context, Result, ensure};
use logical_support::run_opts;
use std::sync::Arc;
use std::time::Duration;
use tej_backup::{
    CompressionAlgo, FileBackupOptions, LockOptions, PruneOptions, RepoLock, Repository,
    create_file_backup, prune,
};
use tej_backup::{S3Location, S3Options, S3Store};
use tej_core::{Secret, SystemClock};
use tej_testkit::MotoServer;

fn s3_options(endpoint: &str) -> S3Options {
    S3Options {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        force_path_style: true,
        access_key: Some("tejtest".into()),
        secret_key: Some(Secret::new("tejtestsecret")),
        part_size: 5 << 20,
        max_attempts: 3,
        retry_initial_delay: Duration::from_millis(10),
        ..S3Options::default()
    }
}

async fn store(endpoint: &str, bucket: &str) -> Result<S3Store> {
    Ok(S3Store::connect(S3Location::new(bucket, "site")?, s3_options(endpoint)).await?)
}

fn client(endpoint: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_s3::config::Builder::new()
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "tejtest",
            "tejtestsecret",
            None,
            None,
            "t",
        ))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

async fn uploads(c: &aws_sdk_s3::Client, bucket: &str) -> Result<Vec<String>> {
    let r = c.list_multipart_uploads().bucket(bucket).send().await?;
    Ok(r.uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_owned))
        .collect())
}

/// Starts a multipart upload of `key` and stores its first part, as a running dump does.
async fn start_upload(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<String> {
    let up = c
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .context("create the upload")?;
    let id = up.upload_id().context("upload id")?.to_string();
    upload_part(c, bucket, key, &id, 1).await?;
    Ok(id)
}

async fn upload_part(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    id: &str,
    n: i32,
) -> Result<()> {
    c.upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .part_number(n)
        .body(aws_sdk_s3::primitives::ByteStream::from(vec![7u8; 5 << 20]))
        .send()
        .await
        .context("upload a part")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_runs_upload_survives_other_runs_and_prune_until_its_owner_is_gone() -> Result<()> {
    let moto = MotoServer::start()?;
    let bucket = moto.unique_bucket("tej-owner")?;
    let c = client(&moto.endpoint());
    let repo = Repository::from_store(Arc::new(store(&moto.endpoint(), &bucket).await?));

    // A long dump of appdb is running: it holds appdb's lock and is mid-upload.
    let held = RepoLock::acquire(
        &repo,
        "appdb",
        "create",
        &LockOptions::default(),
        jiff::Timestamp::now(),
    )
    .await?;
    let key = "site/backups/20261202T020000Z-appdb/dump.pgc.zst";
    start_upload(&c, &bucket, key).await?;

    // A file backup of another target, cleaning everything older than now: the upload stays.
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("uploads");
    std::fs::create_dir_all(&data)?;
    std::fs::write(data.join("a.txt"), b"a file")?;
    let mut o = FileBackupOptions::new(vec![data.clone()]);
    o.run = run_opts("uploads");
    o.run.compression.algorithm = CompressionAlgo::None;
    o.run.cleanup_older_than = Duration::ZERO;
    let r = create_file_backup(std::slice::from_ref(&repo), &o, &SystemClock).await?;
    ensure!(r.backup.succeeded(), "{:?}", r.backup.repositories);
    ensure!(
        uploads(&c, &bucket).await? == [key],
        "another target's run aborted the running upload"
    );

    // prune leaves it alone too.
    let all = PruneOptions {
        cleanup_older_than: Duration::ZERO,
        ..PruneOptions::default()
    };
    let p = prune(&repo, &all, &SystemClock).await?;
    ensure!(p.cleaned_temporary == 0, "{p:?}");
    ensure!(
        uploads(&c, &bucket).await? == [key],
        "prune aborted the running upload"
    );

    // The owner is gone (its lock released without finishing): prune aborts the upload.
    held.release().await?;
    let p = prune(&repo, &all, &SystemClock).await?;
    ensure!(p.cleaned_temporary == 1, "{p:?}");
    ensure!(uploads(&c, &bucket).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_upload_still_receiving_parts_is_not_aborted() -> Result<()> {
    use tej_backup::ObjectStore;
    let moto = MotoServer::start()?;
    let bucket = moto.unique_bucket("tej-active")?;
    let c = client(&moto.endpoint());
    let s = store(&moto.endpoint(), &bucket).await?;
    let key = "site/backups/20261202T020000Z-big/dump.pgc.zst";
    let id = start_upload(&c, &bucket, key).await?;
    // Started more than `older_than` ago, but its newest part is recent.
    tokio::time::sleep(Duration::from_secs(4)).await;
    upload_part(&c, &bucket, key, &id, 2).await?;
    ensure!(s.cleanup_incomplete(Duration::from_secs(3)).await? == 0);
    ensure!(uploads(&c, &bucket).await? == [key]);
    // Idle for longer than `older_than`: abandoned.
    ensure!(s.cleanup_incomplete(Duration::ZERO).await? == 1);
    ensure!(uploads(&c, &bucket).await?.is_empty());
    Ok(())
}

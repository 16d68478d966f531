//! Against moto (which, unlike s3s-fs, lists multipart uploads): a backup killed with
//! SIGKILL in the middle of a multipart upload leaves an unfinished upload and no backup;
//! `prune` and the next run find and abort such uploads.

mod logical_support;

use anyhow::{Context, Result, bail, ensure};
use logical_support::run_opts;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tej_backup::{
    CompressionAlgo, FileBackupOptions, PruneOptions, Repository, create_file_backup, list_backups,
    prune,
};
use tej_backup::{S3Location, S3Options, S3Store};
use tej_core::{Secret, SystemClock};
use tej_testkit::MotoServer;

const CHILD_ENV: &str = "TEJ_BACKUP_TEST_MOTO_CHILD";

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

async fn repo(endpoint: &str, bucket: &str) -> Result<Repository> {
    let store = S3Store::connect(S3Location::new(bucket, "site")?, s3_options(endpoint)).await?;
    Ok(Repository::from_store(Arc::new(store)))
}

/// A raw SDK client, to look at multipart uploads directly.
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

/// 48 MiB that do not compress, in 4 files.
fn make_data(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for f in 0..4 {
        let mut v = Vec::with_capacity(12 << 20);
        while v.len() < 12 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        std::fs::write(dir.join(format!("upload-{f}.bin")), v)?;
    }
    Ok(())
}

fn file_opts(data: &std::path::Path) -> FileBackupOptions {
    let mut o = FileBackupOptions::new(vec![data.to_path_buf()]);
    o.run = run_opts("uploads");
    o.run.compression.algorithm = CompressionAlgo::None;
    o
}

/// The child: a slow backup (progress events stall the producer) that gets killed.
async fn child_role(spec: &str) -> Result<()> {
    let mut parts = spec.split('|');
    let (Some(endpoint), Some(bucket), Some(data)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!("child spec {spec:?}");
    };
    let repo = repo(endpoint, bucket).await?;
    let mut o = file_opts(std::path::Path::new(data));
    o.run.progress = Some(Arc::new(|_e: &tej_backup::ProgressEvent| {
        std::thread::sleep(Duration::from_millis(400))
    }));
    create_file_backup(&[repo], &o, &SystemClock).await?;
    bail!("the child finished instead of being killed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_multipart_leaves_no_backup_and_prune_aborts_the_upload() -> Result<()> {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child_role(&spec).await;
    }
    let moto = MotoServer::start()?;
    let bucket = moto.unique_bucket("tej-kill")?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("uploads");
    make_data(&data)?;
    let c = client(&moto.endpoint());
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "a_run_killed_mid_multipart_leaves_no_backup_and_prune_aborts_the_upload",
            "--nocapture",
        ])
        .env(
            CHILD_ENV,
            format!("{}|{bucket}|{}", moto.endpoint(), data.display()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // Wait until the child's multipart upload of the tar has begun, then SIGKILL it.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if uploads(&c, &bucket)
            .await?
            .iter()
            .any(|k| k.contains("files.tar"))
        {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!("the child ended ({status}) before its multipart upload began");
        }
        ensure!(
            Instant::now() < deadline,
            "the child never started a multipart upload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill()?; // SIGKILL
    child.wait()?;

    let repo = repo(&moto.endpoint(), &bucket).await?;
    ensure!(
        list_backups(&repo).await?.is_empty(),
        "a killed run is not a backup"
    );
    let left = uploads(&c, &bucket).await?;
    ensure!(left.len() == 1, "one unfinished upload is left: {left:?}");

    // prune finds it and aborts it.
    let p = prune(
        &repo,
        &PruneOptions {
            cleanup_older_than: Duration::ZERO,
            ..PruneOptions::default()
        },
        &SystemClock,
    )
    .await?;
    ensure!(p.cleaned_temporary == 1, "prune aborted it: {p:?}");
    let left = uploads(&c, &bucket).await?;
    ensure!(left.is_empty(), "still unfinished: {left:?}");
    ensure!(list_backups(&repo).await?.is_empty());

    // The next run succeeds (taking over the dead run's lock), and a second killed-like
    // leftover is cleaned by a run too: start an upload by hand, as a dead run would.
    let stray = "site/backups/20200101T000000Z-uploads/files.tar";
    c.create_multipart_upload()
        .bucket(&bucket)
        .key(stray)
        .send()
        .await
        .context("create a stray upload")?;
    let r =
        create_file_backup(std::slice::from_ref(&repo), &file_opts(&data), &SystemClock).await?;
    ensure!(r.backup.succeeded(), "{:?}", r.backup.repositories);
    ensure!(
        r.backup.repositories[0].cleaned_temporary == 1,
        "the run aborted the stray upload: {:?}",
        r.backup.repositories[0]
    );
    ensure!(uploads(&c, &bucket).await?.is_empty());
    let listed = list_backups(&repo).await?;
    ensure!(
        listed.len() == 1 && listed[0].id == r.backup.id,
        "{listed:?}"
    );
    Ok(())
}

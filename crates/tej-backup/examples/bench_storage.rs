//! Storage throughput: tej's backends against the plain way of doing the same thing.
//!
//! - local: `LocalStore::put` (temp file, fsync, rename, fsync dir) and `get` against
//!   `std::fs::write` + `fsync` and `std::fs::read`;
//! - S3 (s3s-fs on loopback): `S3Store::put` (streamed multipart, 16 MiB parts, two in
//!   flight) and `get` against one raw aws-sdk-s3 `PutObject` / `GetObject` of the same bytes.
//!
//! Run: `cargo run --release -p tej-backup --example bench_storage [MiB] [runs]`.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tej_backup::{
    LocalStore, ObjectKey, ObjectStore, PutOptions, S3Location, S3Options, S3Store, bytes_stream,
    get_bytes,
};
use tej_core::Secret;
use tej_testkit::S3Server;

fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn line(what: &str, mib: usize, ours: Duration, reference: Duration) {
    let rate = |d: Duration| mib as f64 / d.as_secs_f64();
    println!(
        "{what:<10} tej {:>8.1} ms ({:>7.1} MiB/s) | reference {:>8.1} ms ({:>7.1} MiB/s) | ratio {:.2}",
        ours.as_secs_f64() * 1e3,
        rate(ours),
        reference.as_secs_f64() * 1e3,
        rate(reference),
        ours.as_secs_f64() / reference.as_secs_f64()
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let data = pattern(mib << 20);
    println!("object {mib} MiB, {runs} runs each, medians");

    // local
    let dir = tempfile::tempdir()?;
    let store = LocalStore::open(dir.path())?;
    let key = ObjectKey::new("bench/object")?;
    let plain = dir.path().join("plain");
    let (mut put_t, mut put_r, mut get_t, mut get_r) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let t = Instant::now();
        store
            .put(&key, bytes_stream(data.clone()), PutOptions::default())
            .await?;
        put_t.push(t.elapsed());
        let t = Instant::now();
        let (p, d) = (plain.clone(), data.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&p)?;
            f.write_all(&d)?;
            f.sync_all()
        })
        .await??;
        put_r.push(t.elapsed());
        let t = Instant::now();
        let back = get_bytes(&store, &key, None).await?;
        get_t.push(t.elapsed());
        anyhow::ensure!(back.len() == data.len());
        let t = Instant::now();
        let p = plain.clone();
        let back = tokio::task::spawn_blocking(move || std::fs::read(p)).await??;
        get_r.push(t.elapsed());
        anyhow::ensure!(back.len() == data.len());
    }
    line("local put", mib, median(put_t), median(put_r));
    line("local get", mib, median(get_t), median(get_r));

    // S3
    let server = S3Server::start().context("start s3s-fs")?;
    let bucket = server.unique_bucket("bench")?;
    let opts = S3Options {
        endpoint: Some(server.endpoint()),
        region: Some(server.region().to_string()),
        force_path_style: true,
        access_key: Some(server.access_key().to_string()),
        secret_key: Some(Secret::new(server.secret_key())),
        ..S3Options::default()
    };
    let store = S3Store::connect(S3Location::new(&bucket, "tej")?, opts).await?;
    let raw = {
        use aws_sdk_s3::config::{
            BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
            ResponseChecksumValidation,
        };
        let conf = aws_sdk_s3::config::Builder::new()
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(server.endpoint())
            .region(Region::new("us-east-1"))
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                server.access_key(),
                server.secret_key(),
                None,
                None,
                "bench",
            ))
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    };
    let (mut put_t, mut put_r, mut get_t, mut get_r) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let t = Instant::now();
        store
            .put(&key, bytes_stream(data.clone()), PutOptions::default())
            .await?;
        put_t.push(t.elapsed());
        let t = Instant::now();
        raw.put_object()
            .bucket(&bucket)
            .key("raw/object")
            .body(aws_sdk_s3::primitives::ByteStream::from(data.clone()))
            .send()
            .await?;
        put_r.push(t.elapsed());
        let t = Instant::now();
        let back = get_bytes(&store, &key, None).await?;
        get_t.push(t.elapsed());
        anyhow::ensure!(back == data);
        let t = Instant::now();
        let back = raw
            .get_object()
            .bucket(&bucket)
            .key("raw/object")
            .send()
            .await?
            .body
            .collect()
            .await?
            .into_bytes();
        get_r.push(t.elapsed());
        anyhow::ensure!(back.len() == data.len());
    }
    line("s3 put", mib, median(put_t), median(put_r));
    line("s3 get", mib, median(get_t), median(get_r));
    Ok(())
}

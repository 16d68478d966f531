//! A minimal `archive_command` / `restore_command` over [`tej_backup::WalArchive`], the
//! same library calls `tej wal push|fetch` makes, for tests and the WAL benchmark.
//!
//! ```text
//! wal_archive_cmd push REPO %p [--pgdata DIR] [--level N]
//! wal_archive_cmd push-async REPO %p PG_WAL SPOOL PARALLEL [--pgdata DIR]
//! wal_archive_cmd fetch REPO %f %p
//! ```
//!
//! REPO is a local path or `s3://bucket/prefix` (S3 settings from the AWS environment).
//! Exit codes: push 0/1; fetch 0 fetched, 1 not in the archive, 255 any other failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tej_backup::{
    AsyncPushOptions, PushOptions, Repository, WalArchive, fetch_exit_code, push_exit_code,
    system_identifier_from_pgdata,
};

fn usage() -> ExitCode {
    eprintln!(
        "usage: wal_archive_cmd push REPO PATH [--pgdata DIR] [--level N]\n       wal_archive_cmd push-async REPO PATH PG_WAL SPOOL PARALLEL [--pgdata DIR]\n       wal_archive_cmd fetch REPO NAME DEST"
    );
    ExitCode::from(2)
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn push_options(args: &[String]) -> Result<PushOptions, String> {
    let mut o = PushOptions::default();
    if let Some(dir) = flag(args, "--pgdata") {
        o.system_identifier =
            Some(system_identifier_from_pgdata(Path::new(&dir)).map_err(|e| format!("{e}"))?);
    }
    if let Some(l) = flag(args, "--level") {
        o.compression.level = Some(l.parse().map_err(|_| format!("bad level {l:?}"))?);
    }
    Ok(o)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first().map(String::as_str) else {
        return usage();
    };
    let code = match (cmd, args.len()) {
        ("push", n) if n >= 3 => {
            let result = async {
                let opts = push_options(&args).map_err(tej_backup::BackupError::InvalidOptions)?;
                let wal = WalArchive::new(Repository::open(&args[1]).await?);
                wal.push(Path::new(&args[2]), &opts).await
            }
            .await;
            if let Err(e) = &result {
                eprintln!("error: archive {}: {e}", args[2]);
            }
            push_exit_code(&result)
        }
        ("push-async", n) if n >= 6 => {
            let result = async {
                let parallel: usize = args[5]
                    .parse()
                    .map_err(|_| tej_backup::BackupError::InvalidOptions("bad PARALLEL".into()))?;
                let mut opts = AsyncPushOptions::new(PathBuf::from(&args[4]), parallel);
                opts.push.system_identifier = push_options(&args)
                    .map_err(tej_backup::BackupError::InvalidOptions)?
                    .system_identifier;
                let wal = WalArchive::new(Repository::open(&args[1]).await?);
                wal.push_async(Path::new(&args[2]), Path::new(&args[3]), &opts)
                    .await
            }
            .await;
            if let Err(e) = &result {
                eprintln!("error: archive {}: {e}", args[2]);
            }
            push_exit_code(&result)
        }
        ("fetch", 4) => {
            let result = async {
                let wal = WalArchive::new(Repository::open(&args[1]).await?);
                wal.fetch(&args[2], Path::new(&args[3])).await
            }
            .await;
            if let Err(e) = &result {
                eprintln!("error: restore {}: {e}", args[2]);
            }
            fetch_exit_code(&result)
        }
        _ => return usage(),
    };
    ExitCode::from(code as u8)
}

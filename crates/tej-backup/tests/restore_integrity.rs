//! Restores and verifies that never lie, against a real PostgreSQL: a tampered or
//! truncated object leaves the target database as it was, a plain dump carrying psql
//! meta-commands is refused before anything runs, a manifest without objects does not
//! verify, parallel restores decode into the repository's (or the configured) scratch
//! space and remove it, and no child command line ever holds the database password.

mod logical_support;

use anyhow::{Context, Result, bail, ensure};
use async_trait::async_trait;
use logical_support::*;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tej_backup::{
    BackupError, CompressionAlgo, CompressionOptions, DbTarget, DumpFormat, LogicalBackupOptions,
    Manifest, ProgressEvent, Repository, RestoreOptions, RestoreTestOptions, VerifyOptions,
    create_logical_backup, restore_backup, verify_backup,
};
use tej_backup::{ObjectKey, get_bytes, put_bytes};
use tej_core::{
    CommandError, CommandOutput, CommandRunner, CommandSpec, RunningCommand, Secret, SystemClock,
    TokioCommandRunner,
};
use tej_testkit::PgCluster;

async fn backup(
    pg: &PgCluster,
    repo: &Repository,
    format: DumpFormat,
    algorithm: CompressionAlgo,
) -> Result<String> {
    let mut opts = LogicalBackupOptions::new(db(pg, "src"));
    opts.format = format;
    opts.run = run_opts("src");
    opts.run.compression = CompressionOptions {
        algorithm,
        level: None,
        threads: 1,
    };
    let r = create_logical_backup(
        &TokioCommandRunner,
        std::slice::from_ref(repo),
        &opts,
        &SystemClock,
    )
    .await?;
    ensure!(r.succeeded(), "{:?}", r.repositories);
    Ok(r.id.to_string())
}

async fn manifest(repo: &Repository, id: &str) -> Result<Manifest> {
    Ok(repo.resolve(id).await?)
}

async fn write_manifest(repo: &Repository, m: &Manifest) -> Result<()> {
    let key = ObjectKey::new(format!("backups/{}/manifest.json", m.id))?;
    put_bytes(&*repo.store, &key, m.to_json(), false).await?;
    Ok(())
}

/// A target database holding one marker table with one row.
fn target_with_marker(pg: &PgCluster, name: &str) -> Result<DbTarget> {
    pg.create_database(name)?;
    pg.psql(
        name,
        "CREATE TABLE marker (x int); INSERT INTO marker VALUES (42);",
    )?;
    Ok(db(pg, name))
}

/// The target still holds exactly the marker table and its row, nothing else.
fn assert_unchanged(pg: &PgCluster, name: &str, what: &str) -> Result<()> {
    let tables = pg.psql(
        name,
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'",
    )?;
    ensure!(
        tables == "marker",
        "{what}: the target changed: tables {tables:?}"
    );
    let rows = pg.psql(name, "SELECT count(*) || ':' || sum(x) FROM marker")?;
    ensure!(rows == "1:42", "{what}: the marker changed: {rows}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_truncated_object_fails_the_restore_and_leaves_the_target_unchanged()
-> Result<()> {
    let pg = cluster_with_source()?;
    let dir = tempfile::tempdir()?;
    let repo = Repository::open(dir.path().join("repo").to_str().context("utf-8")?).await?;
    let mut n = 0;
    for format in [DumpFormat::Plain, DumpFormat::Custom] {
        for algorithm in [CompressionAlgo::None, CompressionAlgo::Zstd] {
            for damage in ["flip-middle", "flip-last", "truncate"] {
                n += 1;
                let case = format!("{format}/{algorithm}/{damage}");
                let id = backup(&pg, &repo, format, algorithm).await?;
                let m = manifest(&repo, &id).await?;
                let key = ObjectKey::new(m.objects[0].key.clone())?;
                let mut bytes = get_bytes(&*repo.store, &key, None).await?;
                match damage {
                    "flip-middle" => {
                        let i = bytes.len() / 2;
                        bytes[i] ^= 0x01;
                    }
                    "flip-last" => {
                        let i = bytes.len() - 1;
                        bytes[i] ^= 0x01;
                    }
                    _ => bytes.truncate(bytes.len() * 9 / 10),
                }
                put_bytes(&*repo.store, &key, bytes, false).await?;
                let name = format!("t{n}");
                let mut opts = RestoreOptions::new(target_with_marker(&pg, &name)?);
                opts.jobs = 1;
                opts.clean = format != DumpFormat::Plain;
                let r = restore_backup(&TokioCommandRunner, &repo, &id, &opts).await;
                match &r {
                    Err(e) => eprintln!("{case}: refused: {e}"),
                    Ok(_) => bail!("{case}: a damaged backup restored"),
                }
                assert_unchanged(&pg, &name, &case)?;
            }
        }
    }
    Ok(())
}

/// Rewrites the single object of an uncompressed, unencrypted plain backup with `edit`
/// and fixes its manifest, as a dump made by someone else would look.
async fn rewrite_plain(repo: &Repository, id: &str, edit: impl Fn(&str) -> String) -> Result<()> {
    use sha2::{Digest, Sha256};
    let mut m = manifest(repo, id).await?;
    let key = ObjectKey::new(m.objects[0].key.clone())?;
    let text = String::from_utf8(get_bytes(&*repo.store, &key, None).await?)?;
    let new = edit(&text).into_bytes();
    ensure!(new != text.as_bytes(), "the edit changed nothing");
    let sha = hex::encode(Sha256::digest(&new));
    let o = &mut m.objects[0];
    o.stored_size = new.len() as u64;
    o.raw_size = new.len() as u64;
    o.stored_sha256 = sha.clone();
    o.raw_sha256 = sha;
    m.raw_size = new.len() as u64;
    m.stored_size = new.len() as u64;
    put_bytes(&*repo.store, &key, new, false).await?;
    write_manifest(repo, &m).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_dump_with_psql_meta_commands_is_refused_and_nothing_runs() -> Result<()> {
    let pg = cluster_with_source()?;
    let dir = tempfile::tempdir()?;
    let repo = Repository::open(dir.path().join("repo").to_str().context("utf-8")?).await?;
    // Dumps of a pg_dump older than `\restrict` (none of its lines), and one that
    // lifts the restriction with the key it carries itself.
    let unrestricted = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    type Edit = Box<dyn Fn(&str, &Path) -> String>;
    let edits: Vec<(&str, Edit)> = vec![
        (
            "own line",
            Box::new(move |t: &str, x: &Path| {
                unrestricted(t).replacen(
                    "CREATE TABLE",
                    &format!("\\! touch {}\nCREATE TABLE", x.display()),
                    1,
                )
            }),
        ),
        (
            "after a statement",
            Box::new(move |t: &str, x: &Path| {
                unrestricted(t).replacen(
                    "CREATE TABLE",
                    &format!("SELECT 1; \\! touch {}\nCREATE TABLE", x.display()),
                    1,
                )
            }),
        ),
        (
            "the dump's own key lifts its restriction",
            Box::new(|t: &str, x: &Path| {
                let key = t
                    .lines()
                    .find_map(|l| l.strip_prefix("\\restrict "))
                    .unwrap_or("none")
                    .to_string();
                t.replacen(
                    "CREATE TABLE",
                    &format!(
                        "\\unrestrict {key}\n\\! touch {}\nCREATE TABLE",
                        x.display()
                    ),
                    1,
                )
            }),
        ),
    ];
    for (n, (what, edit)) in edits.iter().enumerate() {
        let marker = dir.path().join(format!("x{n}"));
        let id = backup(&pg, &repo, DumpFormat::Plain, CompressionAlgo::None).await?;
        rewrite_plain(&repo, &id, |t| edit(t, &marker)).await?;
        let name = format!("m{n}");
        let mut opts = RestoreOptions::new(target_with_marker(&pg, &name)?);
        opts.clean = false;
        let r = restore_backup(&TokioCommandRunner, &repo, &id, &opts).await;
        ensure!(r.is_err(), "{what}: a dump with \\! restored");
        eprintln!("{what}: refused: {}", r.unwrap_err());
        ensure!(
            !marker.exists(),
            "{what}: the shell command of the dump ran"
        );
        assert_unchanged(&pg, &name, what)?;
    }
    // The dump pg_dump wrote, untouched, still restores (its own \restrict lines included).
    let id = backup(&pg, &repo, DumpFormat::Plain, CompressionAlgo::None).await?;
    pg.create_database("plain_ok")?;
    let mut opts = RestoreOptions::new(db(&pg, "plain_ok"));
    opts.clean = false;
    restore_backup(&TokioCommandRunner, &repo, &id, &opts).await?;
    assert_same_as_source(&pg, "plain_ok")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_without_objects_does_not_verify() -> Result<()> {
    let pg = cluster_with_source()?;
    let dir = tempfile::tempdir()?;
    let repo = Repository::open(dir.path().join("repo").to_str().context("utf-8")?).await?;
    for format in [DumpFormat::Custom, DumpFormat::Directory] {
        let id = backup(&pg, &repo, format, CompressionAlgo::Zstd).await?;
        let mut m = manifest(&repo, &id).await?;
        m.objects.clear();
        write_manifest(&repo, &m).await?;
        let vo = VerifyOptions {
            record: true,
            ..VerifyOptions::default()
        };
        let r = verify_backup(&TokioCommandRunner, &repo, &id, &vo, &SystemClock).await;
        match r {
            Err(BackupError::Corrupt { reason, .. }) => eprintln!("{format}: {reason}"),
            other => bail!("{format}: an empty manifest verified: {other:?}"),
        }
        let rec = get_bytes(
            &*repo.store,
            &ObjectKey::new(format!("backups/{id}/verify.json"))?,
            None,
        )
        .await?;
        let rec: serde_json::Value = serde_json::from_slice(&rec)?;
        ensure!(rec["ok"] == false, "{rec}");
    }
    Ok(())
}

/// Names of the entries of `dir` (none when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_restores_decode_into_the_scratch_space_and_remove_it() -> Result<()> {
    let pg = cluster_with_source()?;
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("repo");
    let repo = Repository::open(root.to_str().context("utf-8")?).await?;
    let configured = dir.path().join("scratch");
    std::fs::create_dir(&configured)?;
    for (n, format) in [DumpFormat::Custom, DumpFormat::Directory]
        .into_iter()
        .enumerate()
    {
        let id = backup(&pg, &repo, format, CompressionAlgo::Zstd).await?;
        for (k, scratch) in [None, Some(configured.clone())].into_iter().enumerate() {
            let case = format!("{format}/{}", if k == 0 { "repo" } else { "configured" });
            let parent = scratch.clone().unwrap_or_else(|| root.join(".tej-scratch"));
            let seen: Arc<Mutex<Vec<String>>> = Arc::default();
            let (p, s) = (parent.clone(), seen.clone());
            let name = format!("p{n}{k}");
            pg.create_database(&name)?;
            let mut opts = RestoreOptions::new(db(&pg, &name));
            opts.jobs = 2;
            opts.clean = false;
            opts.scratch_dir = scratch.clone();
            opts.progress = Some(Arc::new(move |_: &ProgressEvent| {
                s.lock().unwrap().extend(entries(&p));
            }));
            let r = restore_backup(&TokioCommandRunner, &repo, &id, &opts).await?;
            assert_same_as_source(&pg, &name)?;
            let used = r
                .scratch_dir
                .clone()
                .context("the report names the scratch")?;
            ensure!(
                Path::new(&used).starts_with(&parent),
                "{case}: scratch {used} is not in {}",
                parent.display()
            );
            ensure!(
                seen.lock()
                    .unwrap()
                    .iter()
                    .any(|e| e.starts_with("tej-restore-")),
                "{case}: nothing was decoded into {}",
                parent.display()
            );
            ensure!(
                entries(&parent).is_empty(),
                "{case}: left behind after success: {:?}",
                entries(&parent)
            );
            // After a failure (a damaged object) it is gone too, and the target is untouched.
            let m = manifest(&repo, &id).await?;
            let key = ObjectKey::new(m.objects.last().context("objects")?.key.clone())?;
            let good = get_bytes(&*repo.store, &key, None).await?;
            let mut bad = good.clone();
            let i = bad.len() / 2;
            bad[i] ^= 0x10;
            put_bytes(&*repo.store, &key, bad, false).await?;
            let bad_name = format!("pb{n}{k}");
            opts.target = target_with_marker(&pg, &bad_name)?;
            opts.progress = None;
            ensure!(
                restore_backup(&TokioCommandRunner, &repo, &id, &opts)
                    .await
                    .is_err(),
                "{case}: a damaged backup restored"
            );
            ensure!(
                entries(&parent).is_empty(),
                "{case}: left behind after a failure: {:?}",
                entries(&parent)
            );
            assert_unchanged(&pg, &bad_name, &case)?;
            put_bytes(&*repo.store, &key, good, false).await?;
        }
    }
    // Not enough free space: refused before anything is decoded, with a clear error.
    let id = backup(&pg, &repo, DumpFormat::Custom, CompressionAlgo::Zstd).await?;
    let mut m = manifest(&repo, &id).await?;
    m.objects[0].raw_size = u64::MAX / 4;
    write_manifest(&repo, &m).await?;
    pg.create_database("nospace")?;
    let mut opts = RestoreOptions::new(db(&pg, "nospace"));
    opts.jobs = 2;
    opts.scratch_dir = Some(configured.clone());
    let e = restore_backup(&TokioCommandRunner, &repo, &id, &opts)
        .await
        .unwrap_err();
    ensure!(e.to_string().contains("free"), "{e}");
    ensure!(entries(&configured).is_empty());
    Ok(())
}

/// Runs every command with the real runner and records its argv.
#[derive(Default)]
struct Recorder {
    argv: Mutex<Vec<String>>,
}

impl Recorder {
    fn record(&self, spec: &CommandSpec) {
        let mut line = spec.program.clone();
        for a in &spec.args {
            line.push(' ');
            line.push_str(&a.to_string_lossy());
        }
        self.argv.lock().unwrap().push(line);
    }
}

#[async_trait]
impl CommandRunner for Recorder {
    async fn run(&self, spec: CommandSpec) -> Result<CommandOutput, CommandError> {
        self.record(&spec);
        TokioCommandRunner.run(spec).await
    }
    async fn spawn(&self, spec: CommandSpec) -> Result<RunningCommand, CommandError> {
        self.record(&spec);
        TokioCommandRunner.spawn(spec).await
    }
}

/// Gives role `app` the password `pw` and requires it over TCP (scram-sha-256).
fn password_role(pg: &PgCluster, pw: &str) -> Result<()> {
    pg.psql(
        "postgres",
        &format!(
            "SET password_encryption = 'scram-sha-256'; CREATE ROLE app LOGIN SUPERUSER PASSWORD '{pw}';"
        ),
    )?;
    let hba = pg.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba)?;
    std::fs::write(
        &hba,
        format!(
            "host all app 127.0.0.1/32 scram-sha-256\nhost all app ::1/128 scram-sha-256\n{old}"
        ),
    )?;
    pg.reload()?;
    Ok(())
}

fn app_url(pg: &PgCluster, pw: &str, db: &str) -> String {
    format!(
        "postgres://app:{}@127.0.0.1:{}/{db}",
        pw.replace('/', "%2F"),
        pg.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_never_reaches_a_command_line_and_backups_still_work() -> Result<()> {
    let pg = cluster_with_source()?;
    let pw = "Pw-9f3k/x7Qz";
    password_role(&pg, pw)?;
    // Without the password, the role is refused: the password is really checked.
    let refused = std::process::Command::new(PgCluster::bin_dir().join("psql"))
        .arg(format!(
            "--dbname=postgres://app@127.0.0.1:{}/src",
            pg.port()
        ))
        .args(["-w", "-c", "SELECT 1"])
        .env_remove("PGPASSWORD")
        .output()?;
    ensure!(!refused.status.success(), "the role needs no password");
    let dir = tempfile::tempdir()?;
    let repo = Repository::open(dir.path().join("repo").to_str().context("utf-8")?).await?;
    let rec = Recorder::default();
    type MakeTarget<'a> = Box<dyn Fn(&str) -> DbTarget + 'a>;
    let targets: Vec<(&str, MakeTarget)> = vec![
        (
            "password in the URL",
            Box::new(|d| DbTarget::new(app_url(&pg, pw, d))),
        ),
        (
            "password in a keyword string",
            Box::new(|d| {
                DbTarget::new(format!(
                    "host=127.0.0.1 port={} user=app password='{pw}' dbname={d}",
                    pg.port()
                ))
            }),
        ),
        (
            "password given apart",
            Box::new(|d| {
                DbTarget::new(format!("postgres://app@127.0.0.1:{}/{d}", pg.port()))
                    .with_password(Secret::new(pw))
            }),
        ),
    ];
    for (n, (what, target)) in targets.iter().enumerate() {
        for format in [DumpFormat::Custom, DumpFormat::Plain] {
            let mut opts = LogicalBackupOptions::new(target("src"));
            opts.format = format;
            opts.run = run_opts("src");
            let r = create_logical_backup(&rec, std::slice::from_ref(&repo), &opts, &SystemClock)
                .await
                .with_context(|| format!("{what}: back up"))?;
            let name = format!("pw{n}{format}");
            pg.create_database(&name)?;
            let mut ro = RestoreOptions::new(target(&name));
            ro.clean = false;
            restore_backup(&rec, &repo, r.id.as_str(), &ro)
                .await
                .with_context(|| format!("{what}: restore"))?;
            assert_same_as_source(&pg, &name)?;
            let vo = VerifyOptions {
                restore_test: Some(RestoreTestOptions {
                    server: target("postgres"),
                    queries: vec!["SELECT count(*) FROM users".into()],
                    jobs: 2,
                }),
                ..VerifyOptions::default()
            };
            verify_backup(&rec, &repo, r.id.as_str(), &vo, &SystemClock)
                .await
                .with_context(|| format!("{what}: restore test"))?;
        }
    }
    let argv = rec.argv.lock().unwrap();
    ensure!(argv.len() > 20, "commands were recorded: {}", argv.len());
    for line in argv.iter() {
        ensure!(
            !line.contains(pw),
            "a command line holds the password: {line}"
        );
        ensure!(
            !line.contains(&pw.replace('/', "%2F")),
            "a command line holds the password: {line}"
        );
    }
    let dbg = format!("{:?}", DbTarget::new(app_url(&pg, pw, "src")));
    ensure!(!dbg.contains("Pw-9f3k"), "{dbg}");
    Ok(())
}

//! `tej backup create|list|verify|restore|prune`.

use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::sync::Arc;
use tej_backup::{
    BackupKind, BackupSelector, BackupSettings, DbTarget, DumpFormat, Repository, RestoreOptions,
    RestoreStep, RestoreTestOptions, Series, VerifyOptions, create_logical_backup, list_backups,
    verify_backup,
};
use tej_core::{Config, Executor, Procedure, SystemClock, TokioCommandRunner};

/// Repositories: `--repo` (repeatable), else `[backup] repositories` in tej.toml.
pub async fn repositories(cfg: &Config, repos: &[String]) -> Result<Vec<Repository>> {
    let specs: Vec<String> = if repos.is_empty() {
        cfg.backup.repositories.clone()
    } else {
        repos.to_vec()
    };
    if specs.is_empty() {
        bail!(
            "no repository: pass --repo PATH|s3://bucket/prefix or set [backup] repositories in tej.toml"
        );
    }
    let mut out = Vec::new();
    for s in &specs {
        tej_core::config::validate_repository(s)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("repository {s:?}"))?;
        out.push(
            Repository::open(s)
                .await
                .with_context(|| format!("open repository {s}"))?,
        );
    }
    Ok(out)
}

/// The database: `--db`, else the first `[[database]]`, else `DATABASE_URL`, else libpq's `PG*`.
pub fn db_target(cfg: &Config, db: Option<&str>) -> Result<DbTarget> {
    if let Some((conn, password)) = super::database_conn(cfg, db)? {
        let t = DbTarget::new(conn);
        return Ok(match password {
            Some(p) => t.with_password(p),
            None => t,
        });
    }
    if let Some(conninfo) = tej_core::libpq::conninfo_from_env(&|k| std::env::var(k).ok()) {
        // pg_dump and psql read PGPASSWORD from the environment they inherit.
        return Ok(DbTarget::new(conninfo));
    }
    bail!("no database: pass --db, set DATABASE_URL or PG*, or add [[database]] to tej.toml")
}

/// tej.toml's `[backup]` as the options of every backup operation.
pub fn settings(cfg: &Config) -> Result<BackupSettings> {
    Ok(BackupSettings::from_config(cfg)?)
}

/// The dump format named on the command line or in tej.toml.
pub fn format_of(s: &str) -> Result<DumpFormat> {
    DumpFormat::parse(s)
        .with_context(|| format!("unknown format {s:?}: expected custom, directory or plain"))
}

/// Creates one backup in every repository; true when every repository has it.
pub async fn create(
    out: &mut dyn Write,
    cfg: &Config,
    repos: &[Repository],
    db: DbTarget,
    format: Option<String>,
    jobs: u32,
    output: OutputFormat,
) -> Result<bool> {
    let mut opts = settings(cfg)?.logical(db);
    if let Some(f) = format.as_deref() {
        opts.format = format_of(f)?;
    }
    opts.jobs = jobs.max(1);
    opts.run.progress = crate::progress::sink(output);
    let report = create_logical_backup(&TokioCommandRunner, repos, &opts, &SystemClock)
        .await
        .context("create backup")?;
    if output == OutputFormat::Json {
        json_line(out, "backup_created", &report)?;
        return Ok(report.repositories.iter().all(|r| r.ok));
    }
    render_created(out, "", &report, "")
}

/// Renders where a backup went (`{kind} backup ID (N bytes raw{detail})`, no kind for a
/// logical backup), then one line per repository; true when every repository has it.
fn render_created(
    out: &mut dyn Write,
    kind: &str,
    report: &tej_backup::CreateReport,
    detail: &str,
) -> Result<bool> {
    let kind = if kind.is_empty() {
        String::new()
    } else {
        format!("{kind} ")
    };
    writeln!(
        out,
        "{kind}backup {} ({} bytes raw{detail})",
        report.id, report.raw_size
    )?;
    for r in &report.repositories {
        writeln!(
            out,
            "  {:<50} {}",
            r.repository,
            if r.ok {
                "ok".to_string()
            } else {
                format!("FAILED: {}", r.error.clone().unwrap_or_default())
            }
        )?;
    }
    Ok(report.repositories.iter().all(|r| r.ok))
}

/// A physical base backup of the server's cluster into every repository.
pub async fn create_physical(
    out: &mut dyn Write,
    cfg: &Config,
    repos: &[Repository],
    db: DbTarget,
    jobs: u32,
    archive_timeout: Option<u64>,
    output: OutputFormat,
) -> Result<bool> {
    let mut opts = settings(cfg)?.physical(db);
    opts.jobs = jobs as usize;
    // The repositories are the WAL archive (`tej wal push`): its WAL must reach them.
    opts.archive_check = tej_backup::ArchiveCheck::Repository;
    if let Some(secs) = archive_timeout {
        opts.archive_timeout = Some(std::time::Duration::from_secs(secs.max(1)));
    }
    opts.run.progress = crate::progress::sink(output);
    let report = tej_backup::create_physical_backup(repos, &opts, &SystemClock)
        .await
        .context("create base backup")?;
    if output == OutputFormat::Json {
        json_line(out, "backup_created", &report)?;
        return Ok(report.backup.repositories.iter().all(|r| r.ok));
    }
    let p = &report.physical;
    render_created(
        out,
        "base",
        &report.backup,
        &format!(
            ", {} files, WAL {}..{} on timeline {}, PostgreSQL {}",
            report.files, p.start_lsn, p.stop_lsn, p.timeline, report.server_version
        ),
    )
}

/// A file backup of `dirs` (empty: `[backup] files`) into every repository.
pub async fn create_files(
    out: &mut dyn Write,
    cfg: &Config,
    repos: &[Repository],
    dirs: Vec<std::path::PathBuf>,
    output: OutputFormat,
) -> Result<bool> {
    let mut opts = settings(cfg)?.files();
    if !dirs.is_empty() {
        opts.paths = dirs;
    }
    if opts.paths.is_empty() {
        bail!("no directories: pass --files DIR... or set [backup] files in tej.toml");
    }
    opts.run.progress = crate::progress::sink(output);
    let report = tej_backup::create_file_backup(repos, &opts, &SystemClock)
        .await
        .context("create file backup")?;
    if output == OutputFormat::Json {
        json_line(out, "backup_created", &report)?;
        return Ok(report.backup.repositories.iter().all(|r| r.ok));
    }
    let ok = render_created(
        out,
        "file",
        &report.backup,
        &format!(
            ", {} files, {} directories, {} symlinks",
            report.files, report.directories, report.symlinks
        ),
    )?;
    for v in &report.vanished {
        writeln!(out, "  vanished while copied: {v}")?;
    }
    for c in &report.changed {
        writeln!(out, "  changed while copied: {c}")?;
    }
    Ok(ok)
}

/// Lists backups newest first (by manifest time) in each repository.
pub async fn list(out: &mut dyn Write, repos: &[Repository], output: OutputFormat) -> Result<()> {
    if output == OutputFormat::Text {
        writeln!(
            out,
            "{:<30} {:<10} {:<9} {:>12} {:>12}  {:<9} {:<8} REPOSITORY",
            "ID", "KIND", "FORMAT", "RAW", "STORED", "ENCRYPTED", "VERIFIED"
        )?;
    }
    for repo in repos {
        for b in list_backups(repo).await.context("list backups")? {
            if output == OutputFormat::Json {
                json_line(out, "backup", &b)?;
                continue;
            }
            let kind = serde_json::to_value(b.kind)?
                .as_str()
                .unwrap_or("?")
                .to_string();
            let fmt = b
                .format
                .map(|f| {
                    serde_json::to_value(f)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            let verified = match &b.verification {
                Some(v) if v.ok => "yes",
                Some(_) => "FAILED",
                None => "no",
            };
            writeln!(
                out,
                "{:<30} {:<10} {:<9} {:>12} {:>12}  {:<9} {:<8} {}",
                b.id.to_string(),
                kind,
                fmt,
                b.raw_size,
                b.stored_size,
                if b.encrypted { "yes" } else { "no" },
                verified,
                b.repository
            )?;
        }
    }
    Ok(())
}

/// What `verify` reads: `latest` is the newest dump of the database (`--db`, else the
/// configured one); an id or a typed selector is taken as given.
pub fn verify_selector(cfg: &Config, db: Option<&str>, selector: &str) -> Result<String> {
    if selector != "latest" {
        BackupSelector::parse(selector)?;
        return Ok(selector.to_string());
    }
    let target = db_target(cfg, db).context(
        "`latest` is the newest dump of the configured database: configure one ([[database]], DATABASE_URL or PG*), pass --db, or name a backup id",
    )?;
    Ok(BackupSelector::latest_of(&Series::logical(target.database())).to_string())
}

/// Re-reads every object (SHA-256, decrypt, decompress), optionally restores into a scratch
/// database. `selector` comes from [`verify_selector`].
pub async fn verify(
    out: &mut dyn Write,
    cfg: &Config,
    repos: &[Repository],
    selector: &str,
    restore_test: Option<DbTarget>,
    output: OutputFormat,
) -> Result<bool> {
    let settings = settings(cfg)?;
    let mut ok = true;
    let mut report = tej_core::Report::new("backup verify");
    for repo in repos {
        let opts = VerifyOptions {
            restore_test: restore_test.clone().map(|server| RestoreTestOptions {
                server,
                queries: cfg
                    .databases
                    .first()
                    .map(|d| d.sanity_queries.clone())
                    .unwrap_or_default(),
                jobs: 2,
            }),
            progress: crate::progress::sink(output),
            ..settings.verify()
        };
        match verify_backup(&TokioCommandRunner, repo, selector, &opts, &SystemClock).await {
            Ok(r) => {
                if output == OutputFormat::Nagios {
                    let mut f = tej_core::Finding::ok(
                        "backup.verify",
                        format!("{}: ok ({} objects)", r.id, r.objects.len()),
                    )
                    .target(r.repository.clone())
                    .metric(tej_core::Metric::new(
                        "verified_objects",
                        r.objects.len() as f64,
                        "",
                    ));
                    if let Some(t) = &r.restore_test {
                        f = f.metric(tej_core::Metric::new("restore_test", t.restore_secs, "s"));
                    }
                    report.push(f);
                } else if output == OutputFormat::Json {
                    json_line(out, "backup_verified", &r)?;
                } else {
                    writeln!(
                        out,
                        "{} {}: ok ({} objects, SHA-256 checked, decoded)",
                        r.repository,
                        r.id,
                        r.objects.len()
                    )?;
                    if let Some(t) = &r.restore_test {
                        writeln!(
                            out,
                            "  restore test into {}: {:.1} s",
                            t.database, t.restore_secs
                        )?;
                        for q in &t.queries {
                            writeln!(out, "    {}", serde_json::to_string(q)?)?;
                        }
                    }
                }
            }
            Err(e) => {
                ok = false;
                if output == OutputFormat::Nagios {
                    report.push(
                        tej_core::Finding::new(
                            "backup.verify",
                            tej_core::Severity::Critical,
                            format!("{}: verify failed: {e}", repo.name()),
                        )
                        .target(repo.name()),
                    );
                } else if output == OutputFormat::Json {
                    json_line(
                        out,
                        "backup_verify_failed",
                        &serde_json::json!({ "repository": repo.name(), "error": e.to_string() }),
                    )?;
                } else {
                    writeln!(out, "{}: VERIFY FAILED: {e}", repo.name())?;
                }
            }
        }
    }
    if output == OutputFormat::Nagios {
        crate::output::render_report(out, &report, output, false)?;
    }
    Ok(ok)
}

/// Restores a backup into `target` as a destructive, confirmed, audited step.
pub async fn restore(
    out: &mut dyn Write,
    ex: &Executor,
    repo: Repository,
    selector: &str,
    opts: RestoreOptions,
    output: OutputFormat,
) -> Result<bool> {
    let step = RestoreStep {
        runner: Arc::new(TokioCommandRunner),
        repo,
        selector: selector.to_string(),
        opts,
    };
    let r = ex.run(&Procedure::new("backup restore").step(step)).await;
    super::host::render_procedure(out, &r, output)?;
    Ok(r.succeeded())
}

/// The logical restore's selector: `latest` or an id of the configured database's dump
/// series (else the series of the database restored into). A base backup, a file backup or
/// another database's dump is refused, naming what it is and what restores it; a typed
/// selector (`ID@logical:otherdb`) picks another database's dump on purpose.
pub async fn logical_selector(
    cfg: &Config,
    repo: &Repository,
    selector: &str,
    target: &DbTarget,
) -> Result<String> {
    let mut sel = BackupSelector::parse(selector)?;
    if sel.kind.is_none() {
        let database = match db_target(cfg, None) {
            Ok(t) => t.database(),
            Err(_) => target.database(),
        };
        sel.kind = Some(BackupKind::Logical);
        sel.target = Some(database);
    }
    if sel.kind != Some(BackupKind::Logical) {
        bail!(
            "{selector:?} does not select a logical backup: the database restore takes dumps (restore file backups with --into DIR, base backups with `tej restore`)"
        );
    }
    if let Some(id) = &sel.id {
        let m = repo
            .resolve(id.as_str())
            .await
            .with_context(|| format!("find backup {id}"))?;
        match m.kind {
            BackupKind::Physical => bail!(
                "backup {} is a physical base backup: restore it with `tej restore --pgdata DIR --target ...`",
                m.id
            ),
            BackupKind::Files => bail!(
                "backup {} is a file backup: restore it with `tej backup restore {} --into DIR`",
                m.id,
                m.id
            ),
            _ => {}
        }
    }
    let m = repo.resolve_selector(&sel).await.map_err(|e| match e {
        tej_backup::BackupError::WrongSeries { .. } => anyhow::anyhow!(
            "{e}; to restore it on purpose, name its series: `{}@logical:DATABASE`",
            sel.id.as_ref().map(|i| i.to_string()).unwrap_or_default()
        ),
        e => anyhow::Error::new(e).context(format!("find backup {selector}")),
    })?;
    if sel.id.is_none() {
        sel.id = Some(m.id);
    }
    Ok(sel.to_string())
}

/// Restores a file backup (`latest`: the newest file backup) into `dir`, as a destructive
/// step when it would replace files.
pub async fn restore_files(
    out: &mut dyn Write,
    cfg: &Config,
    ex: &Executor,
    repo: Repository,
    selector: &str,
    dir: std::path::PathBuf,
    output: OutputFormat,
) -> Result<bool> {
    let selector = if selector == "latest" {
        list_backups(&repo)
            .await
            .context("list backups")?
            .into_iter()
            .find(|b| b.kind == BackupKind::Files)
            .map(|b| b.id.to_string())
            .with_context(|| format!("no file backup in {}", repo.name()))?
    } else {
        let sel = BackupSelector::parse(selector)?;
        let m = repo
            .resolve_selector(&sel)
            .await
            .with_context(|| format!("find backup {selector}"))?;
        if m.kind != BackupKind::Files {
            bail!(
                "backup {} is {}, not a file backup: `--into DIR` restores file backups",
                m.id,
                Series::of(&m).describe()
            );
        }
        selector.to_string()
    };
    let step = tej_backup::FileRestoreStep {
        repo,
        selector,
        target_dir: dir,
        opts: tej_backup::FileRestoreOptions {
            encryption: settings(cfg)?.encryption,
            progress: crate::progress::sink(output),
            ..Default::default()
        },
    };
    let r = ex.run(&Procedure::new("backup restore").step(step)).await;
    super::host::render_procedure(out, &r, output)?;
    Ok(r.succeeded())
}

/// Restore options for `target` with the configured keys.
pub fn restore_options(cfg: &Config, target: DbTarget, jobs: u32) -> Result<RestoreOptions> {
    let mut opts = settings(cfg)?.restore(target);
    opts.jobs = jobs.max(1);
    Ok(opts)
}

/// GFS retention per series, one guarded destructive step per repository under `ex`: the
/// plan lists each backup kept or deleted with its series and rule; deleting needs `--yes`,
/// the production window and leaves an audit entry. True when every repository's step was
/// applied (or planned in a dry run).
pub async fn prune_repos(
    out: &mut dyn Write,
    cfg: &Config,
    ex: &Executor,
    repos: Vec<Repository>,
    output: OutputFormat,
) -> Result<bool> {
    let settings = settings(cfg)?;
    let mut ok = true;
    for repo in repos {
        let name = repo.name();
        let step = tej_runbook::PruneBackupsStep::from_settings(
            Arc::new(repo),
            name.clone(),
            &settings,
            Arc::new(SystemClock),
        );
        let report = ex
            .run(&Procedure::new(format!("backup prune {name}")).step(step))
            .await;
        super::host::render_procedure(out, &report, output)?;
        ok &= report.succeeded();
    }
    Ok(ok)
}

/// `tej backup`.
#[derive(Debug, clap::Subcommand)]
pub enum BackupCmd {
    /// Take a backup (a dump of the database; --physical: a base backup of the cluster;
    /// --files: the file sets), compressed, encrypted and checksummed, in every repository.
    Create {
        #[command(flatten)]
        repo: crate::args::RepoArgs,
        #[command(flatten)]
        db: crate::args::DbArgs,
        /// custom (default from tej.toml), directory or plain.
        #[arg(long)]
        format: Option<String>,
        /// pg_dump -j for the directory format; objects copied at once for --physical.
        #[arg(long, default_value_t = 2)]
        jobs: u32,
        /// A physical base backup of the whole cluster (for `tej restore` to a point in
        /// time) instead of a logical dump of one database.
        #[arg(long, conflicts_with_all = ["format", "files"])]
        physical: bool,
        /// With --physical: how long to wait for WAL to reach the repository, before the
        /// copy and after pg_backup_stop, in seconds (default `[backup]
        /// archive_timeout_secs`, else 60).
        #[arg(long, value_name = "SECS", requires = "physical")]
        archive_timeout: Option<u64>,
        /// A file backup of these directories (none given: `[backup] files` in tej.toml),
        /// as a compressed tar with the same manifest and storage.
        #[arg(long, num_args = 0.., value_name = "DIR", conflicts_with = "format")]
        files: Option<Vec<std::path::PathBuf>>,
    },
    /// Backups newest first, by manifest time.
    List(crate::args::RepoArgs),
    /// Re-read every object: SHA-256, decrypt, decompress; optionally a restore test.
    Verify {
        /// A backup id, or `latest`: the newest dump of the database (--db, else the
        /// configured one); `ID@KIND[:TARGET]` or `latest@KIND[:TARGET]` name a series.
        #[arg(default_value = "latest")]
        id: String,
        #[command(flatten)]
        repo: crate::args::RepoArgs,
        /// Restore into a scratch database on this server and run the sanity queries.
        #[arg(long)]
        restore_test: bool,
        #[command(flatten)]
        db: crate::args::DbArgs,
    },
    /// Restore a dump into a database, or a file backup into a directory (--into); destructive:
    /// confirmation, maintenance window.
    Restore {
        /// A backup id of the configured database's dumps, or `latest`: the newest of them;
        /// `ID@logical:DATABASE` restores another database's dump on purpose.
        #[arg(default_value = "latest")]
        id: String,
        #[command(flatten)]
        repo: crate::args::RepoArgs,
        /// The database restored into (connection string; default: the configured database).
        #[arg(long)]
        target: Option<String>,
        /// pg_restore -j.
        #[arg(long, default_value_t = 2)]
        jobs: u32,
        /// Restore a file backup (`backup create --files`) into this directory instead
        /// (`latest`: the newest file backup); replacing existing files needs --yes.
        #[arg(long, value_name = "DIR", conflicts_with = "target")]
        into: Option<std::path::PathBuf>,
        #[command(flatten)]
        run: crate::args::RunArgs,
    },
    /// Grandfather-father-son retention per series; destructive: the plan lists each
    /// decision and its rule, deleting needs --yes (and the production window); audited.
    Prune {
        #[command(flatten)]
        repo: crate::args::RepoArgs,
        #[command(flatten)]
        run: crate::args::RunArgs,
    },
}

/// Runs `tej backup ...`; the exit code.
pub fn dispatch(ctx: &crate::context::Context, out: &mut dyn Write, cmd: BackupCmd) -> Result<i32> {
    let format = ctx.format();
    let cfg = ctx.config()?;
    ctx.block_on(async {
        match cmd {
            BackupCmd::Create {
                repo,
                files: Some(dirs),
                ..
            } => {
                let repos = repositories(cfg, &repo.repos).await?;
                let ok = create_files(out, cfg, &repos, dirs, format).await?;
                anyhow::ensure!(ok, "the backup did not reach every repository");
                Ok(0)
            }
            BackupCmd::Create {
                repo,
                db,
                jobs,
                physical: true,
                archive_timeout,
                ..
            } => {
                let repos = repositories(cfg, &repo.repos).await?;
                let target = db_target(cfg, db.db.as_deref())?;
                let ok = create_physical(out, cfg, &repos, target, jobs, archive_timeout, format)
                    .await?;
                anyhow::ensure!(ok, "the backup did not reach every repository");
                Ok(0)
            }
            BackupCmd::Create {
                repo,
                db,
                format: fmt,
                jobs,
                ..
            } => {
                let repos = repositories(cfg, &repo.repos).await?;
                let target = db_target(cfg, db.db.as_deref())?;
                let ok = create(out, cfg, &repos, target, fmt, jobs, format).await?;
                anyhow::ensure!(ok, "the backup did not reach every repository");
                Ok(0)
            }
            BackupCmd::List(repo) => {
                let repos = repositories(cfg, &repo.repos).await?;
                list(out, &repos, format).await?;
                Ok(0)
            }
            BackupCmd::Verify {
                id,
                repo,
                restore_test,
                db,
            } => {
                let repos = repositories(cfg, &repo.repos).await?;
                let server = if restore_test {
                    Some(db_target(cfg, db.db.as_deref())?)
                } else {
                    None
                };
                let id = verify_selector(cfg, db.db.as_deref(), &id)?;
                let ok = verify(out, cfg, &repos, &id, server, format).await?;
                if !ok && format == OutputFormat::Nagios {
                    // The plugin's status line says what failed: CRITICAL, not UNKNOWN.
                    return Ok(tej_core::Severity::Critical.exit_code());
                }
                anyhow::ensure!(ok, "verification failed");
                Ok(0)
            }
            BackupCmd::Restore {
                id,
                repo,
                into: Some(dir),
                run,
                ..
            } => {
                let mut repos = repositories(cfg, &repo.repos).await?;
                let repo = repos.remove(0);
                let ex = ctx.executor(&run)?;
                let ok = restore_files(out, cfg, &ex, repo, &id, dir, format).await?;
                Ok(crate::context::exit_code(ok))
            }
            BackupCmd::Restore {
                id,
                repo,
                target,
                jobs,
                run,
                ..
            } => {
                let mut repos = repositories(cfg, &repo.repos).await?;
                let repo = repos.remove(0);
                let target = db_target(cfg, target.as_deref())?;
                let id = logical_selector(cfg, &repo, &id, &target).await?;
                let ex = ctx.executor(&run)?;
                let mut opts = restore_options(cfg, target, jobs)?;
                opts.progress = crate::progress::sink(format);
                let ok = restore(out, &ex, repo, &id, opts, format).await?;
                Ok(crate::context::exit_code(ok))
            }
            BackupCmd::Prune { repo, run } => {
                let repos = repositories(cfg, &repo.repos).await?;
                let ex = ctx.executor(&run)?;
                let ok = prune_repos(out, cfg, &ex, repos, format).await?;
                Ok(crate::context::exit_code(ok))
            }
        }
    })?
}

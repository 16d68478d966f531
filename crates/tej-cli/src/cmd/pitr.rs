//! `tej wal push|fetch|list|verify`, `tej restore` and `tej drill`: the WAL archive and
//! point-in-time recovery of tej-backup.

use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tej_backup::{
    AsyncPushOptions, BackupSession, BaseBackupRef, BaseBackupSource, DbTarget, DrillOptions,
    FetchOutcome, LocalStore, PgBackupSession, PitrRestoreOptions, PitrRestoreStep, PushOptions,
    PushReport, RecoveryAction, RecoveryConfig, RecoveryTarget, RecoveryTimeline, Repository,
    RepositorySource, RestoredArchiving, ServerOptions, WalArchive, fetch_exit_code,
    push_exit_code, run_drill, system_identifier_from_pgdata, wal_continuity,
};
use tej_core::{Config, Executor, Procedure, SystemClock, TokioCommandRunner};

/// The repository of a WAL or PITR command: `--repo`, else the first of tej.toml's. It
/// must exist: a local directory is opened, never created (a missing or unmounted
/// repository must be an outage, not an empty archive).
pub async fn repository(cfg: &Config, repos: &[String]) -> Result<Repository> {
    if repos.len() > 1 {
        bail!("the WAL archive lives in one repository: pass --repo once");
    }
    let spec = repository_spec(cfg, repos)?;
    tej_core::config::validate_repository(&spec)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("repository {spec:?}"))?;
    if spec.contains("://") {
        return Repository::open(&spec)
            .await
            .with_context(|| format!("open repository {spec}"));
    }
    let path = std::path::absolute(&spec).with_context(|| format!("resolve {spec}"))?;
    let store = LocalStore::open(&path).with_context(|| {
        format!(
            "open repository {spec}: it must be an existing directory (WAL commands never create one)"
        )
    })?;
    Ok(Repository {
        store: Arc::new(store),
        local_path: Some(path),
    })
}

/// `tej wal init`: writes the archive marker (`wal/archive.json`) of the cluster `db`
/// into `repo`, so that `tej wal push` archives into it. Idempotent for the same cluster.
pub async fn init(
    out: &mut dyn Write,
    repo: Repository,
    db: &DbTarget,
    output: OutputFormat,
) -> Result<()> {
    let mut session = PgBackupSession::connect(db)
        .await
        .context("connect to the server")?;
    let facts = session
        .facts()
        .await
        .context("read the server's identity")?;
    let wal = WalArchive::new(repo);
    let info = wal
        .init(facts.system_identifier, facts.wal_segment_size)
        .await
        .context("initialise the WAL archive")?;
    if output == OutputFormat::Json {
        json_line(out, "wal_archive", &info)?;
    } else {
        writeln!(
            out,
            "{}: WAL archive of cluster {} ({}-byte segments) since {}",
            wal.repository().name(),
            info.system_identifier,
            info.wal_segment_size,
            info.created_at
        )?;
    }
    Ok(())
}

/// The repository spec (what `--repo` or tej.toml names), for commands written into
/// the server's configuration.
pub fn repository_spec(cfg: &Config, repos: &[String]) -> Result<String> {
    repos
        .first()
        .or_else(|| cfg.backup.repositories.first())
        .cloned()
        .context("no repository: pass --repo PATH|s3://bucket/prefix or set [backup] repositories in tej.toml")
}

/// Base backups and WAL of the repository (`--repo`, else tej.toml's first) with
/// tej.toml's keys: what `tej wal verify`, `tej restore` and `tej drill` read.
pub async fn source(cfg: &Config, repos: &[String]) -> Result<RepositorySource> {
    Ok(RepositorySource::new(repository(cfg, repos).await?)
        .with_encryption(super::backup::settings(cfg)?.encryption))
}

/// The WAL archive of `repo` with tej.toml's keys.
pub fn archive(cfg: &Config, repo: Repository) -> Result<WalArchive> {
    Ok(super::backup::settings(cfg)?.wal(repo))
}

/// `tej [--config C] wal VERB --repo R PLACEHOLDERS` as a shell command line, with this
/// very binary, the configuration file and a local repository path made absolute (the
/// server runs it in its data directory), for `restore_command` / `archive_command`.
pub fn wal_command(config: Option<&Path>, repo_spec: &str, verb_and_args: &str) -> Result<String> {
    let exe = std::env::current_exe().context("find the tej binary")?;
    let config = config.map(tej_core::fsutil::absolute_for_others);
    let repo = absolute_repository(repo_spec)?;
    Ok(tej_runbook::tej_wal_command(
        &exe,
        config.as_deref(),
        &repo,
        verb_and_args,
    ))
}

/// A local repository path made absolute (URLs as they are).
pub fn absolute_repository(spec: &str) -> Result<String> {
    if spec.contains("://") {
        return Ok(spec.to_string());
    }
    let abs = std::path::absolute(spec).with_context(|| format!("resolve {spec}"))?;
    // `..` removed lexically (symbolic links kept: the server resolves them itself).
    let mut clean = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::CurDir => {}
            other => clean.push(other),
        }
    }
    let abs = clean;
    abs.to_str()
        .map(str::to_string)
        .with_context(|| format!("repository path {} is not UTF-8", abs.display()))
}

/// Refuses, before anything is touched, a restore or drill whose server could not run
/// the commands written into it: the OS user the server runs as (`owner` when tej runs as
/// root, else tej's own) must be able to execute this very binary (`restore_command`) and
/// read the configuration file passed along to it. A tej built inside a checkout in root's
/// 0700 home is the usual case.
fn check_server_can_run_tej(owner: &str, config: Option<&Path>) -> Result<()> {
    let exe = std::env::current_exe().context("find the tej binary")?;
    match tej_runbook::server_cannot_run_tej(&exe, owner, config) {
        Some(why) => bail!("{why}"),
        None => Ok(()),
    }
}

/// Arguments of `tej wal push` (beside its repository).
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// `%p`: the file, relative to the data directory (the server's working directory).
    pub path: PathBuf,
    /// The data directory (default: the working directory).
    #[arg(long)]
    pub pgdata: Option<PathBuf>,
    /// Asynchronous mode: also push up to 64 other ready segments, this many at once.
    #[arg(long = "async", value_name = "PARALLEL", default_value_t = 0)]
    pub parallel: usize,
    /// The spool directory of the asynchronous mode (default: PGDATA/pg_wal/tej-spool).
    #[arg(long)]
    pub spool: Option<PathBuf>,
    /// zstd level (default 1).
    #[arg(long)]
    pub level: Option<i32>,
}

/// `tej wal push`: 0 stored (or already stored with the same content), 1 otherwise.
pub async fn push(
    out: &mut dyn Write,
    wal: &WalArchive,
    args: PushArgs,
    output: OutputFormat,
) -> Result<i32> {
    let pgdata = args.pgdata.clone().unwrap_or_else(|| PathBuf::from("."));
    let path = if args.path.is_relative() && args.pgdata.is_some() {
        pgdata.join(&args.path)
    } else {
        args.path.clone()
    };
    let mut opts = PushOptions {
        require_archive_info: true,
        ..PushOptions::default()
    };
    // A file handed over by `archive_command` sits in a data directory whose pg_control
    // names the cluster; elsewhere (a manual push) the archive's record is what is checked.
    if pgdata.join("global/pg_control").exists() {
        opts.system_identifier = Some(
            system_identifier_from_pgdata(&pgdata)
                .with_context(|| format!("read the system identifier in {}", pgdata.display()))?,
        );
    }
    if let Some(l) = args.level {
        opts.compression.level = Some(l);
    }
    let result = if args.parallel > 0 {
        let spool = args
            .spool
            .clone()
            .unwrap_or_else(|| pgdata.join("pg_wal/tej-spool"));
        let mut a = AsyncPushOptions::new(spool, args.parallel);
        a.push = opts;
        wal.push_async(&path, &pgdata.join("pg_wal"), &a).await
    } else {
        wal.push(&path, &opts).await
    };
    let code = push_exit_code(&result);
    match result {
        Ok(r) => render_push(out, &r, output)?,
        Err(e) => eprintln!("error: wal push {}: {e}", path.display()),
    }
    Ok(code)
}

fn render_push(out: &mut dyn Write, r: &PushReport, output: OutputFormat) -> Result<()> {
    if output == OutputFormat::Json {
        json_line(out, "wal_pushed", r)?;
    } else {
        let status = serde_json::to_value(r.status)?
            .as_str()
            .unwrap_or("?")
            .to_string();
        writeln!(
            out,
            "{} {status} ({} -> {} bytes)",
            r.name, r.raw_size, r.stored_size
        )?;
    }
    Ok(())
}

/// `tej wal fetch`: 0 fetched, 1 not in the archive, 255 for every other failure
/// (PostgreSQL stops recovery on codes above 125 instead of promoting early).
pub async fn fetch(
    out: &mut dyn Write,
    wal: &WalArchive,
    name: &str,
    dest: &Path,
    prefetch: &tej_backup::PrefetchOptions,
    output: OutputFormat,
) -> i32 {
    let result = wal.fetch_prefetching(name, dest, prefetch).await;
    let code = fetch_exit_code(&result);
    match &result {
        Ok(o) if output == OutputFormat::Json => {
            let _ = json_line(
                out,
                "wal_fetched",
                &serde_json::json!({ "name": name, "outcome": o }),
            );
        }
        Ok(FetchOutcome::Fetched | FetchOutcome::NotFound) => {}
        Err(e) => eprintln!("error: wal fetch {name}: {e}"),
    }
    code
}

/// `tej wal list`: every archived file.
pub async fn list(out: &mut dyn Write, wal: &WalArchive, output: OutputFormat) -> Result<()> {
    let entries = wal.list().await.context("list the WAL archive")?;
    if output == OutputFormat::Text {
        writeln!(out, "{:<40} {:>10}  PUSHED", "NAME", "STORED")?;
    }
    for e in &entries {
        if output == OutputFormat::Json {
            json_line(out, "wal_file", e)?;
        } else {
            writeln!(
                out,
                "{:<40} {:>10}  {}",
                e.name,
                e.stored_size,
                e.pushed_at.map(|t| t.to_string()).unwrap_or_default()
            )?;
        }
    }
    Ok(())
}

/// `tej wal verify`: the continuity of the archived chain from every base backup; exit 2
/// when a gap breaks a backup's chain or the window, 0 otherwise.
pub async fn verify(
    out: &mut dyn Write,
    source: &RepositorySource,
    output: OutputFormat,
) -> Result<i32> {
    let backups: Vec<BaseBackupRef> = source
        .base_backups()
        .await
        .context("read the base backups")?
        .iter()
        .filter_map(BaseBackupRef::from_manifest)
        .collect();
    let r = wal_continuity(source.wal(), &backups)
        .await
        .context("check the WAL chain")?;
    let broken = !r.gaps.is_empty() || r.chains.iter().any(|c| !c.unbroken);
    if output == OutputFormat::Json {
        json_line(out, "wal_continuity", &r)?;
    } else {
        writeln!(
            out,
            "{}: {} archived segments on timelines {:?}",
            r.repository, r.segments, r.timelines
        )?;
        for c in &r.chains {
            writeln!(
                out,
                "  base backup {}: WAL {}..{} {}{}",
                c.backup,
                c.start_wal,
                c.stop_wal,
                if c.consistent {
                    "consistent"
                } else {
                    "NOT CONSISTENT"
                },
                match (&c.reachable_wal, c.unbroken) {
                    (Some(w), true) => format!(", unbroken to {w}"),
                    (Some(w), false) => format!(", replay stops at {w}"),
                    (None, _) => String::new(),
                }
            )?;
        }
        for g in &r.gaps {
            writeln!(
                out,
                "  GAP on timeline {}: {}..{} ({} segments missing, WAL {}..{}){}",
                g.timeline,
                g.first_missing,
                g.last_missing,
                g.missing_segments,
                g.from_lsn,
                g.to_lsn,
                if g.breaks.is_empty() {
                    String::new()
                } else {
                    format!("; breaks {}", g.breaks.join(", "))
                }
            )?;
        }
        match &r.window {
            Some(w) => writeln!(
                out,
                "  PITR window: from {} (backup {}) to {}{}",
                w.from_time,
                w.from_backup,
                w.to_wal,
                w.to_time.map(|t| format!(" ({t})")).unwrap_or_default()
            )?,
            None => writeln!(out, "  PITR window: none")?,
        }
        for p in &r.problems {
            writeln!(out, "  problem: {p}")?;
        }
    }
    Ok(if broken { 2 } else { 0 })
}

/// The one recovery target given on the command line.
pub fn target_of(
    time: Option<&str>,
    lsn: Option<&str>,
    xid: Option<&str>,
    name: Option<&str>,
    target: Option<&str>,
) -> Result<RecoveryTarget> {
    if let Some(t) = target
        && !matches!(t, "immediate" | "latest")
    {
        bail!("--target {t:?}: expected immediate or latest");
    }
    let given: Vec<(&str, &str)> = [("time", time), ("lsn", lsn), ("xid", xid), ("name", name)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .chain(target.map(|t| (t, "")))
        .collect();
    match given.as_slice() {
        [] => bail!(
            "no recovery target: pass one of --target-time, --target-lsn, --target-xid, --target-name, --target immediate|latest"
        ),
        [(kind, value)] => {
            RecoveryTarget::parse_cli(kind, value).map_err(|e| anyhow::anyhow!("{e}"))
        }
        _ => bail!("exactly one recovery target: {} given", given.len()),
    }
}

/// The database name of a `postgres://` URL (`None` for keyword strings or no path).
pub fn database_of_url(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let path = rest.split_once('/')?.1;
    let db = path.split(['?', '#']).next().unwrap_or("");
    (!db.is_empty()).then(|| db.to_string())
}

/// Arguments of `tej restore`: the command line, and what the dispatch made of it.
pub struct RestoreArgs {
    /// The repository spec (written into `restore_command`).
    pub repo_spec: String,
    /// The configuration file passed along to `tej wal fetch`.
    pub config: Option<PathBuf>,
    /// The target, from the `--target*` options.
    pub target: RecoveryTarget,
    /// The command line.
    pub cmd: super::restore::RestoreCmd,
}

/// `tej restore`: point-in-time recovery into a data directory, as a destructive step
/// (replacing a non-empty directory needs confirmation). Exit 0 when the target was reached
/// (or the directory prepared without `--start`), 1 otherwise.
pub async fn restore(
    out: &mut dyn Write,
    ex: &Executor,
    source: RepositorySource,
    args: RestoreArgs,
    output: OutputFormat,
) -> Result<i32> {
    check_server_can_run_tej(&args.cmd.owner, args.config.as_deref())?;
    let restore_command = wal_command(args.config.as_deref(), &args.repo_spec, "fetch %f %p")?;
    let mut recovery = RecoveryConfig::new(restore_command, args.target.clone());
    if let Some(a) = &args.cmd.target_action {
        recovery.action = RecoveryAction::parse(a).with_context(|| {
            format!("--target-action {a:?}: expected promote, pause or shutdown")
        })?;
    }
    if let Some(t) = &args.cmd.target_timeline {
        recovery.timeline = Some(RecoveryTimeline::parse(t).with_context(|| {
            format!("--target-timeline {t:?}: expected latest, current or a timeline id")
        })?);
    }
    recovery.inclusive = !args.cmd.exclusive;
    if args.cmd.archive {
        recovery.archiving = RestoredArchiving::Command(wal_command(
            args.config.as_deref(),
            &args.repo_spec,
            "push %p",
        )?);
    }
    let mut opts = PitrRestoreOptions::new(&args.cmd.pgdata, recovery);
    opts.owner = Some(args.cmd.owner.clone());
    opts.base_backup = args.cmd.backup.clone();
    // A gap in the archived chain is refused before anything is touched.
    opts.wal_archive = Some(source.wal().clone());
    if args.cmd.start {
        let log = log_file_for(&args.cmd.pgdata);
        let mut server = ServerOptions::new(log);
        server.port = args.cmd.port;
        server.run_as = Some(args.cmd.owner.clone());
        server.stop_after = args.cmd.stop_after;
        server.timeout = std::time::Duration::from_secs(args.cmd.timeout.max(1));
        opts.start = Some(server);
    }
    let step = PitrRestoreStep {
        source: Arc::new(source),
        runner: Arc::new(TokioCommandRunner),
        opts,
    };
    let r = ex.run(&Procedure::new("restore").step(step)).await;
    super::host::render_procedure(out, &r, output)?;
    Ok(if r.succeeded() { 0 } else { 1 })
}

/// The server log beside the data directory (`DIR.log`): the data directory is replaced
/// whole, a log inside it would be lost.
fn log_file_for(pgdata: &Path) -> PathBuf {
    let name = pgdata
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pgdata".into());
    pgdata.with_file_name(format!("{name}.log"))
}

/// Arguments of `tej drill`: the command line (its queries and database defaulted from
/// tej.toml), and what the dispatch made of it.
pub struct DrillArgs {
    /// The repository spec (written into `restore_command`).
    pub repo_spec: String,
    /// The configuration file passed along to `tej wal fetch`.
    pub config: Option<PathBuf>,
    /// The command line.
    pub cmd: super::drill::DrillCmd,
}

/// `tej drill`: exit 0 when the drill recovered and every sanity query succeeded, else 2.
pub async fn drill(
    out: &mut dyn Write,
    source: &RepositorySource,
    args: DrillArgs,
    output: OutputFormat,
) -> Result<i32> {
    check_server_can_run_tej(&args.cmd.owner, args.config.as_deref())?;
    let restore_command = wal_command(args.config.as_deref(), &args.repo_spec, "fetch %f %p")?;
    let mut opts = DrillOptions::new(&args.cmd.scratch_dir, restore_command);
    opts.sanity_queries = if args.cmd.queries.is_empty() {
        vec![tej_db::pg::psql::CONNECTION_PROBE.into()]
    } else {
        args.cmd.queries
    };
    if let Some(d) = args.cmd.database {
        opts.database = d;
    }
    opts.keep = args.cmd.keep;
    opts.run_as = Some(args.cmd.owner);
    opts.timeout = std::time::Duration::from_secs(args.cmd.timeout.max(1));
    opts.wal_archive = Some(source.wal().clone());
    let r = run_drill(&opts, source, &TokioCommandRunner, &SystemClock)
        .await
        .context("disaster-recovery drill")?;
    if output == OutputFormat::Json {
        json_line(out, "drill", &r)?;
    } else {
        writeln!(
            out,
            "drill of base backup {} (finished {}): {}",
            r.backup_id,
            r.backup_finished_at,
            if r.ok { "OK" } else { "FAILED" }
        )?;
        writeln!(
            out,
            "  RTO (restore to promoted server): {:.1} s",
            r.restore_seconds
        )?;
        match (r.recovered_until, r.rpo_seconds) {
            (Some(t), Some(rpo)) => writeln!(
                out,
                "  RPO (age of the newest recovered transaction): {rpo:.1} s (committed {t})"
            )?,
            _ => writeln!(
                out,
                "  RPO: no transaction replayed after the base backup (the backup itself is the recovery point)"
            )?,
        }
        if let Some(l) = r.stopped_at_lsn {
            writeln!(
                out,
                "  replay ended at {l}{}",
                r.timeline_after
                    .map(|t| format!(", promoted to timeline {t}"))
                    .unwrap_or_default()
            )?;
        }
        for q in &r.queries {
            match (&q.output, &q.error) {
                (Some(o), _) => writeln!(out, "  ok   {}: {}", q.query, o.trim())?,
                (None, Some(e)) => writeln!(out, "  FAIL {}: {e}", q.query)?,
                (None, None) => writeln!(out, "  ?    {}", q.query)?,
            }
        }
        writeln!(
            out,
            "  scratch cluster {} {}",
            r.scratch_dir.display(),
            if r.kept { "kept (stopped)" } else { "removed" }
        )?;
    }
    Ok(if r.ok { 0 } else { 2 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_target_is_accepted() {
        assert!(matches!(
            target_of(Some("2025-01-16 14:30:00+05:30"), None, None, None, None).unwrap(),
            RecoveryTarget::Time(_)
        ));
        assert!(matches!(
            target_of(None, None, None, None, Some("immediate")).unwrap(),
            RecoveryTarget::Immediate
        ));
        assert!(target_of(None, None, None, None, None).is_err());
        let e = target_of(
            Some("2025-01-16 14:30:00Z"),
            Some("0/3000000"),
            None,
            None,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("exactly one"), "{e}");
        let e = target_of(None, None, None, None, Some("yesterday")).unwrap_err();
        assert!(e.to_string().contains("immediate or latest"), "{e}");
        let e = target_of(None, None, Some("1"), None, None).unwrap_err();
        assert!(e.to_string().contains("transaction id"), "{e}");
    }

    #[test]
    fn wal_commands_quote_what_the_shell_would_split() {
        let c = wal_command(
            Some(Path::new("/etc/tej dir/tej.toml")),
            "/backups/main repo",
            "fetch %f %p",
        )
        .unwrap();
        assert!(
            c.contains(
                " --config '/etc/tej dir/tej.toml' wal fetch --repo '/backups/main repo' %f %p"
            ),
            "{c}"
        );
        let c = wal_command(None, "/backups/100%", "fetch %f %p").unwrap();
        assert!(c.ends_with(" wal fetch --repo /backups/100%% %f %p"), "{c}");
        let c = wal_command(None, "/backups/./x/../main", "fetch %f %p").unwrap();
        assert!(c.ends_with(" wal fetch --repo /backups/main %f %p"), "{c}");
        let c = wal_command(None, "s3://b/p", "push %p").unwrap();
        assert!(c.ends_with(" wal push --repo s3://b/p %p"), "{c}");
    }
}

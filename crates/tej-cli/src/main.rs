//! `tej`: the command line over the tej libraries. It parses arguments and renders
//! results; every behaviour lives in a library crate.

mod cmd;
mod output;
mod progress;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use output::OutputFormat;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use tej_core::Config;

/// tej — the platform maintenance runbook as typed, tested procedures.
#[derive(Debug, Parser)]
#[command(name = "tej", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Commands,
}

/// Options every command takes.
#[derive(Debug, Args)]
struct GlobalArgs {
    /// The configuration file (default: ./tej.toml when present).
    #[arg(long, global = true, env = "TEJ_CONFIG")]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// Also write check results as a Prometheus textfile (atomically), for node_exporter.
    #[arg(long, global = true, value_name = "FILE")]
    prometheus_file: Option<PathBuf>,
    /// Also append check results to this Markdown daily log.
    #[arg(long, global = true, value_name = "FILE")]
    daily_log: Option<PathBuf>,
}

/// Which Compose project and engine.
#[derive(Debug, Args)]
struct ComposeArgs {
    /// Compose project name (default: `[compose] project` in tej.toml).
    #[arg(long)]
    project: Option<String>,
    /// Docker engine address (default: tej.toml, then DOCKER_HOST, then the local socket).
    #[arg(long)]
    docker_host: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Compose services: status, logs, restart.
    #[command(subcommand)]
    Services(ServicesCmd),
    /// Zero-downtime deploy of a new image for a service (`[[deploy.service]]` in tej.toml).
    Deploy {
        /// The service.
        service: String,
        /// The image to deploy (built or loaded on the Docker host).
        #[arg(long)]
        image: String,
        #[command(flatten)]
        compose: ComposeArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Deploy a service's previous image again (tagged by its last deploy), with no downtime.
    Rollback {
        /// The service.
        service: String,
        #[command(flatten)]
        compose: ComposeArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Emergency procedures.
    #[command(subcommand)]
    Emergency(EmergencyCmd),
    /// TLS certificates: probe endpoints, renew with certbot.
    #[command(subcommand)]
    Tls(TlsCmd),
    /// Secrets: generate (rotation lands with its adapters).
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Host resources: disk and inodes per mount, memory, swap, load against cores.
    #[command(subcommand)]
    Host(HostCmd),
    /// Application logs.
    #[command(subcommand)]
    Logs(LogsCmd),
    /// Remove files matching a pattern under a root older than N days (keeps the newest).
    Cleanup {
        /// The directory searched.
        #[arg(long)]
        root: PathBuf,
        /// Glob on file names (`*.log`, `*.sql.gz`).
        #[arg(long)]
        pattern: String,
        /// Remove files strictly older than this many days.
        #[arg(long)]
        older_than: u32,
        /// Always keep this many newest matches.
        #[arg(long, default_value_t = 1)]
        keep_newest: usize,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Logical backups: create, list, verify, restore, prune (local and S3).
    #[command(subcommand)]
    Backup(BackupCmd),
    /// The WAL archive: `archive_command` (push), `restore_command` (fetch), list, verify.
    #[command(subcommand)]
    Wal(WalCmd),
    /// Point-in-time recovery into a data directory from a base backup plus archived WAL
    /// (destructive when the directory is not empty: confirmation, maintenance window).
    Restore(Box<RestoreCmd>),
    /// The quarterly disaster-recovery drill: restore the newest base backup plus WAL into
    /// a scratch cluster on a free port, run sanity queries, report RTO and RPO, clean up.
    Drill {
        #[command(flatten)]
        repo: RepoArgs,
        /// A sanity query (repeatable; default: the first [[database]]'s sanity_queries, else `SELECT 1`).
        #[arg(long = "query")]
        queries: Vec<String>,
        /// The database the sanity queries run in (default: the first [[database]]'s, else postgres).
        #[arg(long)]
        database: Option<String>,
        /// Where the scratch cluster is made (a short path: the server's socket lives inside).
        #[arg(long, default_value = "/tmp")]
        scratch_dir: PathBuf,
        /// Keep the scratch cluster (stopped) for inspection.
        #[arg(long)]
        keep: bool,
        /// The OS user that runs the scratch server when tej runs as root.
        #[arg(long, default_value = "postgres")]
        owner: String,
        /// Recovery time limit, in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// PostgreSQL health and maintenance.
    #[command(subcommand)]
    Db(DbCmd),
    /// Redis: health, big keys, session invalidation, FLUSHDB outside production.
    #[command(subcommand)]
    Redis(RedisCmd),
    /// Docker images: prune unused ones (never one in use or kept for rollback).
    #[command(subcommand)]
    Images(ImagesCmd),
    /// Emit the calendar as crontab lines, systemd timer units or Kubernetes CronJobs (IST).
    Schedule {
        /// crontab, systemd or kubernetes.
        #[arg(long, value_enum)]
        emit: cmd::schedule::Emit,
        /// Write into this directory (systemd units, a cron.d file named `tej`, or
        /// `cronjobs.yaml`) instead of stdout.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The user the jobs run as: systemd `User=`, and the user field of cron lines
        /// (written with --dir, the /etc/cron.d format, `root` unless given).
        #[arg(long)]
        user: Option<String>,
        /// systemd: `OnFailure=` unit started when a run fails (e.g. `notify-failure@%n.service`).
        #[arg(long, value_name = "UNIT")]
        on_failure: Option<String>,
        /// systemd: `EnvironmentFile=` holding the credentials (DATABASE_URL, AWS keys...).
        #[arg(long, value_name = "FILE", default_value = "/etc/tej/tej.env")]
        environment_file: PathBuf,
        /// Kubernetes: the container image with tej and the PostgreSQL 15 client tools.
        #[arg(long, default_value = "tej:latest")]
        image: String,
        /// Kubernetes: the namespace of the CronJobs.
        #[arg(long, default_value = "tej")]
        namespace: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one page per command into a directory.
    Man {
        /// Write `tej.1`, `tej-backup.1`, `tej-backup-create.1`, ... here instead of printing `tej.1`.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The maintenance calendar: next occurrence of every entry, in IST.
    Calendar {
        /// Compute from this instant instead of now (RFC 3339, e.g. 2025-01-16T09:00:00+05:30).
        #[arg(long)]
        at: Option<String>,
    },
    /// The daily health check (= `tej run daily`): services, logs, host, PostgreSQL, Redis,
    /// backups and WAL archiving, certificates, custom checks, all at once.
    Health(CheckArgs),
    /// Run a calendar procedure: `daily`, `performance`, `weekly` or an entry id
    /// (`tej calendar` lists them).
    Run {
        /// `daily`, `performance`, `weekly` or a calendar entry id (`security-review`...).
        what: String,
        /// Run only if an occurrence is due now (what the emitted crontab and timers call).
        #[arg(long)]
        if_due: bool,
        /// With --if-due: decide as if now were this instant (RFC 3339), e.g. to replay a timer.
        #[arg(long, requires = "if_due")]
        at: Option<String>,
        /// A run of the calendar (what the emitted crontab, timers and CronJobs pass): inside
        /// the entry's slot (its time plus its duration) its destructive steps are confirmed
        /// by the schedule and audited as such; outside it they are refused.
        #[arg(long)]
        scheduled: bool,
        #[command(flatten)]
        check: CheckArgs,
        /// For the mutating monthly and quarterly procedures (deep maintenance, rotation, drill).
        #[command(flatten)]
        run: RunArgs,
    },
    /// Run the maintenance calendar in-process (containers): every entry at its IST time,
    /// never twice at once across hosts (PostgreSQL advisory locks); stops on SIGTERM.
    Daemon {
        /// The daemon's state file (default: STATE_DIR/daemon-state.json).
        #[arg(long)]
        state_file: Option<PathBuf>,
        /// Do not run, once, the entries missed while the daemon was down.
        #[arg(long)]
        no_catch_up: bool,
        /// --yes pre-confirms the destructive steps of scheduled procedures (the quarterly
        /// rotation); without it they are refused and reported.
        #[command(flatten)]
        run: RunArgs,
    },
}

/// How a check run behaves.
#[derive(Debug, Args)]
struct CheckArgs {
    /// Time limit of each check, in seconds; a check that takes longer is reported Unknown.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Checks running at once.
    #[arg(long, default_value_t = 8)]
    jobs: usize,
}

#[derive(Debug, Subcommand)]
enum ServicesCmd {
    /// What `docker compose ps` shows and more: state, health, restarts, uptime, image age.
    Status(ComposeArgs),
    /// The last lines of one service's logs (or all), timestamped, in time order.
    Logs {
        #[command(flatten)]
        compose: ComposeArgs,
        /// Service (default: all).
        service: Option<String>,
        /// How many lines per container.
        #[arg(long, default_value_t = 100)]
        tail: usize,
    },
    /// Restart a service's containers (destructive: the plan, then --yes; audited).
    Restart {
        #[command(flatten)]
        compose: ComposeArgs,
        /// Service.
        service: String,
        #[command(flatten)]
        run: RunArgs,
    },
}

/// How a mutating command runs.
#[derive(Debug, Args)]
struct RunArgs {
    /// Show the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Confirm destructive steps (after reading the plan).
    #[arg(long)]
    yes: bool,
    /// In production, allow destructive steps outside the maintenance window (audited).
    #[arg(long)]
    outside_window: bool,
}

/// Where backups live.
#[derive(Debug, Args)]
struct RepoArgs {
    /// Repository: a path or s3://bucket/prefix (repeatable; default: tej.toml).
    #[arg(long = "repo")]
    repos: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum BackupCmd {
    /// Dump, compress, encrypt, checksum and store a backup in every repository.
    Create {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        db: DbArgs,
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
        files: Option<Vec<PathBuf>>,
    },
    /// Backups newest first, by manifest time.
    List(RepoArgs),
    /// Re-read every object: SHA-256, decrypt, decompress; optionally a restore test.
    Verify {
        /// A backup id, or `latest`: the newest dump of the database (--db, else the
        /// configured one); `ID@KIND[:TARGET]` or `latest@KIND[:TARGET]` name a series.
        #[arg(default_value = "latest")]
        id: String,
        #[command(flatten)]
        repo: RepoArgs,
        /// Restore into a scratch database on this server and run the sanity queries.
        #[arg(long)]
        restore_test: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Restore a backup into a database (destructive: confirmation, maintenance window).
    Restore {
        /// A backup id of the configured database's dumps, or `latest`: the newest of them;
        /// `ID@logical:DATABASE` restores another database's dump on purpose.
        #[arg(default_value = "latest")]
        id: String,
        #[command(flatten)]
        repo: RepoArgs,
        /// The database restored into (connection string; default: the configured database).
        #[arg(long)]
        target: Option<String>,
        /// pg_restore -j.
        #[arg(long, default_value_t = 2)]
        jobs: u32,
        /// Restore a file backup (`backup create --files`) into this directory instead
        /// (`latest`: the newest file backup); replacing existing files needs --yes.
        #[arg(long, value_name = "DIR", conflicts_with = "target")]
        into: Option<PathBuf>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Grandfather-father-son retention per series; destructive: the plan lists each
    /// decision and its rule, deleting needs --yes (and the production window); audited.
    Prune {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Debug, Subcommand)]
enum WalCmd {
    /// archive_command: compress, encrypt, checksum and store one WAL file durably
    /// (`archive_command = 'tej wal push --repo R %p'`). Exit 0 stored or already stored
    /// with the same content; 1 otherwise (the stored file is never replaced).
    Push {
        #[command(flatten)]
        repo: RepoArgs,
        /// `%p`: the file, relative to the data directory (the server's working directory).
        path: PathBuf,
        /// The data directory (default: the working directory).
        #[arg(long)]
        pgdata: Option<PathBuf>,
        /// Asynchronous mode: also push up to 64 other ready segments, this many at once.
        #[arg(long = "async", value_name = "PARALLEL", default_value_t = 0)]
        parallel: usize,
        /// The spool directory of the asynchronous mode (default: PGDATA/pg_wal/tej-spool).
        #[arg(long)]
        spool: Option<PathBuf>,
        /// zstd level (default 1).
        #[arg(long)]
        level: Option<i32>,
    },
    /// restore_command: fetch one archived file to a path, checked in full, atomically
    /// (`restore_command = 'tej wal fetch --repo R %f %p'`). Exit 0 fetched, 1 not in the
    /// archive, 255 any other failure (PostgreSQL then stops instead of promoting early).
    Fetch {
        #[command(flatten)]
        repo: RepoArgs,
        /// `%f`: the WAL file name.
        name: String,
        /// `%p`: where to write it.
        dest: PathBuf,
    },
    /// Initialise the WAL archive of a cluster in an existing repository: writes its
    /// marker (`wal/archive.json`: the cluster's system identifier and segment size).
    /// `tej wal push` archives only into an initialised repository (a base backup
    /// initialises it too); idempotent for the same cluster.
    Init {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Every archived WAL file.
    List(RepoArgs),
    /// The WAL chain from every base backup: gaps (and the backups and window they break),
    /// timeline switches, the PITR window that exists. Exit 2 when a gap breaks a chain.
    Verify(RepoArgs),
}

/// `tej restore`.
#[derive(Debug, Args)]
struct RestoreCmd {
    #[command(flatten)]
    repo: RepoArgs,
    /// The data directory to create or replace.
    #[arg(long)]
    pgdata: PathBuf,
    /// Recover to this time (with an offset: "2025-01-16 14:30:00+05:30").
    #[arg(long)]
    target_time: Option<String>,
    /// Recover to this WAL position (16/B374D848).
    #[arg(long)]
    target_lsn: Option<String>,
    /// Recover to this transaction id.
    #[arg(long)]
    target_xid: Option<String>,
    /// Recover to this restore point (pg_create_restore_point).
    #[arg(long)]
    target_name: Option<String>,
    /// `immediate` (end of the base backup) or `latest` (every archived WAL file).
    #[arg(long)]
    target: Option<String>,
    /// What the server does at the target: promote (default), pause or shutdown.
    #[arg(long)]
    target_action: Option<String>,
    /// recovery_target_timeline: latest (default), current or an id.
    #[arg(long)]
    target_timeline: Option<String>,
    /// Stop just before the target instead of just after it.
    #[arg(long)]
    exclusive: bool,
    /// Restore this base backup instead of the newest one that finished before the target.
    #[arg(long)]
    backup: Option<String>,
    /// Start the server and follow recovery to its end (else only prepare the directory).
    #[arg(long)]
    start: bool,
    /// With --start: the server's port.
    #[arg(long)]
    port: Option<u16>,
    /// With --start: stop the server once recovery has ended.
    #[arg(long)]
    stop_after: bool,
    /// Once promoted, keep archiving into the same repository (`tej wal push`); by default
    /// the restored copy does not archive.
    #[arg(long)]
    archive: bool,
    /// The OS user that owns the data directory and runs the server (when root).
    #[arg(long, default_value = "postgres")]
    owner: String,
    /// Recovery time limit, in seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    #[command(flatten)]
    run: RunArgs,
}

/// Which database.
#[derive(Debug, Args)]
struct DbArgs {
    /// Connection string (URL or libpq keywords); default: tej.toml, DATABASE_URL, then PG*.
    #[arg(long)]
    db: Option<String>,
}

#[derive(Debug, Subcommand)]
enum DbCmd {
    /// Daily check: reachability, connections, wraparound, xmin horizon, locks, archiver, checksums, sequences.
    Health(DbArgs),
    /// VACUUM (ANALYZE) without blocking writers; `--full` rewrites tables (destructive).
    Vacuum {
        #[command(flatten)]
        db: DbArgs,
        /// Tables (default: the whole database; required with --full).
        #[arg(long = "table")]
        tables: Vec<String>,
        /// VACUUM FULL (exclusive lock): confirmation and, in production, the maintenance window.
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Database size and largest relations (table, indexes, TOAST).
    Size(DbArgs),
    /// Bloat of tables and btree indexes (estimate, confirmed with pgstattuple).
    Bloat(DbArgs),
    /// Slowest statements from pg_stat_statements.
    SlowQueries(DbArgs),
    /// Unused, duplicate and missing indexes; foreign keys without an index.
    Indexes(DbArgs),
    /// REINDEX INDEX CONCURRENTLY where bloat exceeds the threshold.
    Reindex {
        #[command(flatten)]
        db: DbArgs,
        /// Bloat percent above which an index is rebuilt.
        #[arg(long, default_value_t = 20.0)]
        threshold: f64,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Corruption check with amcheck (heap and btree).
    Amcheck(DbArgs),
    /// Set the password-reset flag for every user, in one transaction (destructive).
    ForcePasswordReset {
        #[command(flatten)]
        db: DbArgs,
        /// Users table.
        #[arg(long, default_value = "users")]
        table: String,
        /// Boolean flag column.
        #[arg(long, default_value = "password_reset_required")]
        column: String,
        #[command(flatten)]
        run: RunArgs,
    },
}

/// Which Redis.
#[derive(Debug, Args)]
struct RedisArgs {
    /// Connection URL (default: [[redis]] in tej.toml, then REDIS_URL).
    #[arg(long)]
    url: Option<String>,
    /// The [[redis]] entry by name.
    #[arg(long)]
    instance: Option<String>,
}

#[derive(Debug, Subcommand)]
enum RedisCmd {
    /// PING latency, INFO, and memory-doctor findings.
    Info(RedisArgs),
    /// The biggest keys (SCAN + MEMORY USAGE under a budget; never KEYS).
    Bigkeys {
        #[command(flatten)]
        redis: RedisArgs,
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
    /// Remove session keys by pattern with SCAN + UNLINK; other keys stay.
    InvalidateSessions {
        #[command(flatten)]
        redis: RedisArgs,
        /// Key pattern (default: session_pattern in tej.toml, `sess:*`).
        #[arg(long)]
        pattern: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// FLUSHDB of one database (destructive; refused when tej.toml says production).
    Flush {
        #[command(flatten)]
        redis: RedisArgs,
        /// The database number.
        #[arg(long)]
        db: i64,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ImagesCmd {
    /// Remove unused images built longer ago than --older-than (`docker image prune -af
    /// --filter until=168h`); destructive: the plan, then --yes; audited.
    Prune {
        /// Only images at least this old (168h, 7d, 0s for any age).
        #[arg(long, default_value = "168h")]
        older_than: String,
        #[command(flatten)]
        compose: ComposeArgs,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Debug, Subcommand)]
enum HostCmd {
    /// Disk, inodes, memory, swap and load with thresholds from tej.toml.
    Check,
}

#[derive(Debug, Subcommand)]
enum LogsCmd {
    /// One pass over log files or directories: errors, warnings, failed logins, slow queries.
    Review {
        /// Files or directories (default: [logs] paths in tej.toml).
        paths: Vec<PathBuf>,
        /// Only lines newer than this (24h, 90m, 7d).
        #[arg(long, default_value = "24h")]
        since: String,
    },
}

#[derive(Debug, Subcommand)]
enum TlsCmd {
    /// Probe HOST:PORT (default: every [[tls]] in tej.toml): chain, expiry, hostname, validity.
    Check {
        /// Endpoints.
        endpoints: Vec<String>,
        /// Trust only this CA (PEM) instead of the system roots.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The certificate file the server should serve (catches a renewal never reloaded).
        #[arg(long)]
        cert_file: Option<PathBuf>,
    },
    /// certbot renew, nginx -t, reload nginx, probe again.
    Renew {
        /// certbot renew --dry-run; nginx is not reloaded.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SecretsCmd {
    /// Staged, resumable rotation: new values in .env, recreate the backend, drop sessions, verify.
    Rotate {
        /// The .env file (default: [secrets] env_file).
        #[arg(long)]
        env_file: Option<PathBuf>,
        /// Keys to rotate (default: [secrets] rotate, JWT_SECRET,JWT_REFRESH_SECRET).
        #[arg(long, value_delimiter = ',')]
        keys: Vec<String>,
        /// Keep the previous values as KEY_PREVIOUS for a grace period; sessions stay.
        #[arg(long)]
        graceful: bool,
        /// A breach: rotate every configured key and drop every session.
        #[arg(long)]
        emergency: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Print a new secret from the OS CSPRNG (hex).
    Generate {
        /// Random bytes (printed as twice as many hex digits).
        #[arg(long, default_value_t = 64)]
        bytes: usize,
    },
}

#[derive(Debug, Subcommand)]
enum EmergencyCmd {
    /// Service down: check, restart, force-recreate if still unhealthy; report each step
    /// (destructive: the plan, then --yes; audited).
    ServiceDown {
        #[command(flatten)]
        compose: ComposeArgs,
        /// Service.
        service: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Database corruption: stop the application, amcheck, restore the newest backup (when
    /// damaged), verify (amcheck, sanity queries), start the application.
    DbCorruption {
        /// The `[[database]]` (default: the first).
        #[arg(long)]
        db: Option<String>,
        /// Application services stopped meanwhile (repeatable; default: [compose] backend_service).
        #[arg(long = "service")]
        services: Vec<String>,
        /// pg_restore -j.
        #[arg(long, default_value_t = 2)]
        jobs: u32,
        /// Restore even when amcheck finds no damage.
        #[arg(long)]
        restore_anyway: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Security breach: block the address, rotate every secret, drop every session, force
    /// password resets, search the logs for the address.
    SecurityBreach {
        /// The attacker's address or network (`203.0.113.7`, `203.0.113.0/24`).
        #[arg(long)]
        address: String,
        /// The `[[database]]` whose users must reset their password (default: the first).
        #[arg(long)]
        db: Option<String>,
        /// Users table.
        #[arg(long, default_value = "users")]
        users_table: String,
        /// Boolean column set to true.
        #[arg(long, default_value = "password_reset_required")]
        reset_column: String,
        /// Run ufw through `sudo -n`.
        #[arg(long)]
        sudo: bool,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Validate tej.toml and print what it manages (secrets redacted).
    Check,
}

/// The configuration file in use (`--config`, else `./tej.toml` when present), for the
/// commands tej writes for others to run (`restore_command`, the drill's).
fn config_path(global: &GlobalArgs) -> Option<PathBuf> {
    global.config.clone().or_else(|| {
        std::path::Path::new("tej.toml")
            .exists()
            .then(|| PathBuf::from("tej.toml"))
    })
}

fn load_config(global: &GlobalArgs) -> Result<(Config, String)> {
    let source = match &global.config {
        Some(p) => p.display().to_string(),
        None if std::path::Path::new("tej.toml").exists() => "tej.toml".to_string(),
        None => "(no tej.toml; environment only)".to_string(),
    };
    let cfg = Config::load_or_env(global.config.as_deref())?;
    Ok((cfg, source))
}

/// Renders a check report, writes the Prometheus file and daily log when asked,
/// and returns the Nagios exit code.
fn finish_report(
    out: &mut dyn Write,
    global: &GlobalArgs,
    report: &tej_core::Report,
) -> Result<i32> {
    let colour = output::use_colour(std::io::stdout().is_terminal());
    output::render_report(out, report, global.output, colour)?;
    if let Some(p) = &global.prometheus_file {
        output::write_prometheus_file(p, report)
            .with_context(|| format!("write Prometheus textfile {}", p.display()))?;
    }
    if let Some(p) = &global.daily_log {
        let at = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::get(tej_core::calendar::IST)?)
            .strftime("%Y-%m-%d %H:%M %Z")
            .to_string();
        output::append_daily_log(p, report, &at)
            .with_context(|| format!("append to daily log {}", p.display()))?;
    }
    Ok(report.severity().exit_code())
}

fn compose_target(cfg: &Config, args: &ComposeArgs) -> Result<(String, Option<String>)> {
    let project = args
        .project
        .clone()
        .or_else(|| cfg.compose.as_ref().map(|c| c.project.clone()))
        .context("no Compose project: pass --project or set [compose] project in tej.toml")?;
    let host = args
        .docker_host
        .clone()
        .or_else(|| cfg.compose.as_ref().and_then(|c| c.docker_host.clone()));
    Ok((project, host))
}

/// The executor every mutating command runs under: guard from tej.toml, audit log, flags.
fn executor(cfg: &Config, run: &RunArgs) -> Result<tej_core::Executor> {
    use std::sync::Arc;
    let guard = tej_core::Guard {
        environment: cfg.environment,
        calendar: tej_core::Calendar::from_config(cfg)?,
        clock: Arc::new(tej_core::SystemClock),
        confirmer: Arc::new(tej_core::Fixed(run.yes)),
        override_window: run.outside_window,
    };
    let mut ex = tej_core::Executor::new(guard);
    ex.dry_run = run.dry_run;
    ex.audit = cfg.audit_log.as_ref().map(tej_core::AuditLog::new);
    Ok(ex)
}

/// `tej deploy` and `tej rollback`: exit 0 when the new container serves, else an error.
fn run_deploy(
    global: &GlobalArgs,
    out: &mut dyn Write,
    kind: tej_deploy::DeployKind,
    service: String,
    image: Option<String>,
    compose: &ComposeArgs,
    run: &RunArgs,
) -> Result<i32> {
    let (cfg, _) = load_config(global)?;
    let (project, docker_host) = compose_target(&cfg, compose)?;
    let ex = executor(&cfg, run)?;
    let req = cmd::deploy::DeployRequest {
        kind,
        service,
        image,
        project,
        docker_host,
    };
    runtime()?.block_on(cmd::deploy::run(out, &cfg, &ex, req, global.output))?;
    Ok(0)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

fn run(cli: Cli, out: &mut dyn Write) -> Result<i32> {
    let format = cli.global.output;
    match cli.command {
        Commands::Services(sub) => {
            let (cfg, _) = load_config(&cli.global)?;
            let rt = runtime()?;
            rt.block_on(async {
                match sub {
                    ServicesCmd::Status(c) => {
                        let (project, host) = compose_target(&cfg, &c)?;
                        let docker = cmd::services::connect(host.as_deref()).await?;
                        let report = cmd::services::status(out, &docker, &project, format).await?;
                        finish_report(out, &cli.global, &report)
                    }
                    ServicesCmd::Logs {
                        compose,
                        service,
                        tail,
                    } => {
                        let (project, host) = compose_target(&cfg, &compose)?;
                        let docker = cmd::services::connect(host.as_deref()).await?;
                        cmd::services::logs(
                            out,
                            &docker,
                            &project,
                            service.as_deref(),
                            tail,
                            format,
                        )
                        .await?;
                        Ok(0)
                    }
                    ServicesCmd::Restart {
                        compose,
                        service,
                        run,
                    } => {
                        let (project, host) = compose_target(&cfg, &compose)?;
                        let ex = executor(&cfg, &run)?;
                        let docker = cmd::services::connect(host.as_deref()).await?;
                        let ok =
                            cmd::services::restart(out, &ex, docker, &project, &service, format)
                                .await?;
                        Ok(if ok { 0 } else { 1 })
                    }
                }
            })
        }
        Commands::Deploy {
            service,
            image,
            compose,
            run,
        } => run_deploy(
            &cli.global,
            out,
            tej_deploy::DeployKind::Deploy,
            service,
            Some(image),
            &compose,
            &run,
        ),
        Commands::Rollback {
            service,
            compose,
            run,
        } => run_deploy(
            &cli.global,
            out,
            tej_deploy::DeployKind::Rollback,
            service,
            None,
            &compose,
            &run,
        ),
        Commands::Emergency(EmergencyCmd::ServiceDown {
            compose,
            service,
            run,
        }) => {
            let (cfg, _) = load_config(&cli.global)?;
            let (project, host) = compose_target(&cfg, &compose)?;
            let ex = executor(&cfg, &run)?;
            let ok = runtime()?.block_on(async {
                let docker = cmd::services::connect(host.as_deref()).await?;
                cmd::services::service_down(out, &ex, docker, &project, &service, format).await
            })?;
            Ok(if ok { 0 } else { 1 })
        }
        Commands::Emergency(EmergencyCmd::DbCorruption {
            db,
            services,
            jobs,
            restore_anyway,
            run,
        }) => {
            let (cfg, _) = load_config(&cli.global)?;
            let ex = executor(&cfg, &run)?;
            let args = cmd::emergency::CorruptionArgs {
                database: db,
                services,
                jobs,
                restore_anyway,
            };
            let ok =
                runtime()?.block_on(cmd::emergency::db_corruption(out, &cfg, &ex, args, format))?;
            Ok(if ok { 0 } else { 1 })
        }
        Commands::Emergency(EmergencyCmd::SecurityBreach {
            address,
            db,
            users_table,
            reset_column,
            sudo,
            run,
        }) => {
            let (cfg, _) = load_config(&cli.global)?;
            let ex = executor(&cfg, &run)?;
            let args = cmd::emergency::BreachArgs {
                address,
                database: db,
                table: users_table,
                column: reset_column,
                sudo,
            };
            let ok = runtime()?.block_on(cmd::emergency::security_breach(
                out, &cfg, &ex, args, format,
            ))?;
            Ok(if ok { 0 } else { 1 })
        }
        Commands::Tls(TlsCmd::Check {
            endpoints,
            ca,
            cert_file,
        }) => {
            let (cfg, _) = load_config(&cli.global)?;
            let targets = cmd::tls::targets(&cfg, &endpoints, ca, cert_file)?;
            let report = runtime()?.block_on(cmd::tls::check(out, targets, format))?;
            finish_report(out, &cli.global, &report)
        }
        Commands::Tls(TlsCmd::Renew { dry_run }) => {
            let (cfg, _) = load_config(&cli.global)?;
            let report = runtime()?.block_on(cmd::tls::renew(out, &cfg, dry_run, format))?;
            finish_report(out, &cli.global, &report)
        }
        Commands::Secrets(SecretsCmd::Rotate {
            env_file,
            keys,
            graceful,
            emergency,
            run,
        }) => {
            let (cfg, _) = load_config(&cli.global)?;
            let ex = executor(&cfg, &run)?;
            let args = cmd::rotate::RotateArgs {
                env_file,
                keys,
                graceful,
                emergency,
                dry_run: run.dry_run,
            };
            let ok = runtime()?.block_on(cmd::rotate::rotate(out, &cfg, &ex, args, format))?;
            Ok(if ok { 0 } else { 1 })
        }
        Commands::Secrets(SecretsCmd::Generate { bytes }) => {
            cmd::tls::generate(out, bytes)?;
            Ok(0)
        }
        Commands::Wal(WalCmd::Fetch { repo, name, dest }) => {
            // Every failure, configuration included, must stop recovery (exit > 125):
            // exit 1 would tell PostgreSQL the file does not exist and it would promote early.
            let fatal = |e: anyhow::Error| {
                eprintln!("error: wal fetch {name}: {e:#}");
                tej_backup::FETCH_FATAL_EXIT_CODE
            };
            let cfg = match load_config(&cli.global) {
                Ok((cfg, _)) => cfg,
                Err(e) => return Ok(fatal(e)),
            };
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return Ok(fatal(e)),
            };
            Ok(rt.block_on(async {
                match cmd::pitr::repository(&cfg, &repo.repos).await {
                    Ok(r) => {
                        let wal = cmd::pitr::archive(&cfg, r);
                        cmd::pitr::fetch(out, &wal, &name, &dest, format).await
                    }
                    Err(e) => fatal(e),
                }
            }))
        }
        Commands::Wal(WalCmd::Push {
            repo,
            path,
            pgdata,
            parallel,
            spool,
            level,
        }) => {
            let push = async {
                let (cfg, _) = load_config(&cli.global)?;
                let r = cmd::pitr::repository(&cfg, &repo.repos).await?;
                anyhow::Ok(cmd::pitr::archive(&cfg, r))
            };
            let rt = runtime()?;
            let wal = match rt.block_on(push) {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("error: wal push {}: {e:#}", path.display());
                    return Ok(1);
                }
            };
            let args = cmd::pitr::PushArgs {
                path,
                pgdata,
                parallel,
                spool,
                level,
            };
            rt.block_on(cmd::pitr::push(out, &wal, args, format))
        }
        Commands::Wal(WalCmd::Init { repo, db }) => {
            let (cfg, _) = load_config(&cli.global)?;
            let target = cmd::backup::db_target(&cfg, db.db.as_deref())?;
            runtime()?.block_on(async {
                let r = cmd::pitr::repository(&cfg, &repo.repos).await?;
                cmd::pitr::init(out, r, &target, format).await?;
                Ok(0)
            })
        }
        Commands::Wal(WalCmd::List(repo)) => {
            let (cfg, _) = load_config(&cli.global)?;
            runtime()?.block_on(async {
                let r = cmd::pitr::repository(&cfg, &repo.repos).await?;
                cmd::pitr::list(out, &cmd::pitr::archive(&cfg, r), format).await?;
                Ok(0)
            })
        }
        Commands::Wal(WalCmd::Verify(repo)) => {
            let (cfg, _) = load_config(&cli.global)?;
            runtime()?.block_on(async {
                let source = cmd::pitr::source(&cfg, &repo.repos).await?;
                cmd::pitr::verify(out, &source, format).await
            })
        }
        Commands::Restore(r) => {
            let RestoreCmd {
                repo,
                pgdata,
                target_time,
                target_lsn,
                target_xid,
                target_name,
                target,
                target_action,
                target_timeline,
                exclusive,
                backup,
                start,
                port,
                stop_after,
                archive,
                owner,
                timeout,
                run,
            } = *r;
            let (cfg, _) = load_config(&cli.global)?;
            let target = cmd::pitr::target_of(
                target_time.as_deref(),
                target_lsn.as_deref(),
                target_xid.as_deref(),
                target_name.as_deref(),
                target.as_deref(),
            )?;
            let repo_spec = cmd::pitr::repository_spec(&cfg, &repo.repos)?;
            let ex = executor(&cfg, &run)?;
            runtime()?.block_on(async {
                let mut source = cmd::pitr::source(&cfg, &repo.repos).await?;
                if let Some(p) = progress::sink(format) {
                    source = source.with_progress(p);
                }
                let args = cmd::pitr::RestoreArgs {
                    repo_spec,
                    config: config_path(&cli.global),
                    pgdata,
                    target,
                    action: target_action,
                    timeline: target_timeline,
                    exclusive,
                    backup,
                    start,
                    port,
                    stop_after,
                    archive,
                    owner,
                    timeout,
                };
                cmd::pitr::restore(out, &ex, source, args, format).await
            })
        }
        Commands::Drill {
            repo,
            queries,
            database,
            scratch_dir,
            keep,
            owner,
            timeout,
        } => {
            let (cfg, _) = load_config(&cli.global)?;
            let repo_spec = cmd::pitr::repository_spec(&cfg, &repo.repos)?;
            let first_db = cfg.databases.first();
            let queries = if queries.is_empty() {
                first_db
                    .map(|d| d.sanity_queries.clone())
                    .unwrap_or_default()
            } else {
                queries
            };
            let database = database
                .or_else(|| first_db.and_then(|d| cmd::pitr::database_of_url(d.url.expose())));
            runtime()?.block_on(async {
                let source = cmd::pitr::source(&cfg, &repo.repos).await?;
                let args = cmd::pitr::DrillArgs {
                    repo_spec,
                    config: config_path(&cli.global),
                    queries,
                    database,
                    scratch_dir,
                    keep,
                    owner,
                    timeout,
                };
                cmd::pitr::drill(out, &source, args, format).await
            })
        }
        Commands::Backup(sub) => {
            let (cfg, _) = load_config(&cli.global)?;
            let rt = runtime()?;
            rt.block_on(async {
                match sub {
                    BackupCmd::Create {
                        repo,
                        files: Some(dirs),
                        ..
                    } => {
                        let repos = cmd::backup::repositories(&cfg, &repo.repos).await?;
                        let ok = cmd::backup::create_files(out, &cfg, &repos, dirs, format).await?;
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
                        let repos = cmd::backup::repositories(&cfg, &repo.repos).await?;
                        let target = cmd::backup::db_target(&cfg, db.db.as_deref())?;
                        let ok = cmd::backup::create_physical(
                            out,
                            &cfg,
                            &repos,
                            target,
                            jobs,
                            archive_timeout,
                            format,
                        )
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
                        let repos = cmd::backup::repositories(&cfg, &repo.repos).await?;
                        let target = cmd::backup::db_target(&cfg, db.db.as_deref())?;
                        let ok = cmd::backup::create(out, &cfg, &repos, target, fmt, jobs, format)
                            .await?;
                        anyhow::ensure!(ok, "the backup did not reach every repository");
                        Ok(0)
                    }
                    BackupCmd::List(repo) => {
                        let repos = cmd::backup::repositories(&cfg, &repo.repos).await?;
                        cmd::backup::list(out, &repos, format).await?;
                        Ok(0)
                    }
                    BackupCmd::Verify {
                        id,
                        repo,
                        restore_test,
                        db,
                    } => {
                        let repos = cmd::backup::repositories(&cfg, &repo.repos).await?;
                        let server = if restore_test {
                            Some(cmd::backup::db_target(&cfg, db.db.as_deref())?)
                        } else {
                            None
                        };
                        let id = cmd::backup::verify_selector(&cfg, db.db.as_deref(), &id)?;
                        let ok =
                            cmd::backup::verify(out, &cfg, &repos, &id, server, format).await?;
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
                        let mut repos = cmd::backup::repositories(&cfg, &repo.repos).await?;
                        let repo = repos.remove(0);
                        let ex = executor(&cfg, &run)?;
                        let ok = cmd::backup::restore_files(out, &cfg, &ex, repo, &id, dir, format)
                            .await?;
                        Ok(if ok { 0 } else { 1 })
                    }
                    BackupCmd::Restore {
                        id,
                        repo,
                        target,
                        jobs,
                        run,
                        ..
                    } => {
                        let mut repos = cmd::backup::repositories(&cfg, &repo.repos).await?;
                        let repo = repos.remove(0);
                        let target = cmd::backup::db_target(&cfg, target.as_deref())?;
                        let id = cmd::backup::logical_selector(&cfg, &repo, &id, &target).await?;
                        let ex = executor(&cfg, &run)?;
                        let mut opts = cmd::backup::restore_options(&cfg, target, jobs);
                        opts.progress = progress::sink(format);
                        let ok = cmd::backup::restore(out, &ex, repo, &id, opts, format).await?;
                        Ok(if ok { 0 } else { 1 })
                    }
                    BackupCmd::Prune { repo, run } => {
                        let repos = cmd::backup::repositories(&cfg, &repo.repos).await?;
                        let ex = executor(&cfg, &run)?;
                        let ok = cmd::backup::prune_repos(out, &cfg, &ex, repos, format).await?;
                        Ok(if ok { 0 } else { 1 })
                    }
                }
            })
        }
        Commands::Db(sub) => {
            use cmd::db::Maintenance;
            let (cfg, _) = load_config(&cli.global)?;
            let rt = runtime()?;
            match sub {
                DbCmd::Health(a) => {
                    let c = cmd::db::client(&cfg, a.db.as_deref())?;
                    let r = rt.block_on(cmd::db::health(out, &c, format))?;
                    finish_report(out, &cli.global, &r)
                }
                DbCmd::Size(a) => {
                    let c = cmd::db::client(&cfg, a.db.as_deref())?;
                    let r = rt.block_on(cmd::db::size(out, &c, format))?;
                    finish_report(out, &cli.global, &r)
                }
                DbCmd::Bloat(a) => {
                    let c = cmd::db::client(&cfg, a.db.as_deref())?;
                    let r = rt.block_on(cmd::db::bloat(out, &c, format))?;
                    finish_report(out, &cli.global, &r)
                }
                DbCmd::SlowQueries(a) => {
                    let c = cmd::db::client(&cfg, a.db.as_deref())?;
                    let r = rt.block_on(cmd::db::slow(out, &c, format))?;
                    finish_report(out, &cli.global, &r)
                }
                DbCmd::Indexes(a) => {
                    let c = cmd::db::client(&cfg, a.db.as_deref())?;
                    let r = rt.block_on(cmd::db::indexes(out, &c, format))?;
                    finish_report(out, &cli.global, &r)
                }
                DbCmd::Amcheck(a) => {
                    let c = cmd::db::client(&cfg, a.db.as_deref())?;
                    let r = rt.block_on(cmd::db::check_corruption(out, &c, format))?;
                    finish_report(out, &cli.global, &r)
                }
                DbCmd::Vacuum {
                    db,
                    tables,
                    full,
                    run,
                } => {
                    anyhow::ensure!(
                        !full || !tables.is_empty(),
                        "VACUUM FULL needs the tables to rewrite: pass --table NAME (repeatable)"
                    );
                    let c = cmd::db::client(&cfg, db.db.as_deref())?;
                    let ex = executor(&cfg, &run)?;
                    let what = if full {
                        Maintenance::VacuumFull(tables)
                    } else {
                        Maintenance::Vacuum(tables)
                    };
                    let ok = rt.block_on(cmd::db::maintain(out, &ex, c, what, format))?;
                    Ok(if ok { 0 } else { 1 })
                }
                DbCmd::Reindex { db, threshold, run } => {
                    let c = cmd::db::client(&cfg, db.db.as_deref())?;
                    let ex = executor(&cfg, &run)?;
                    let ok = rt.block_on(cmd::db::maintain(
                        out,
                        &ex,
                        c,
                        Maintenance::Reindex(threshold),
                        format,
                    ))?;
                    Ok(if ok { 0 } else { 1 })
                }
                DbCmd::ForcePasswordReset {
                    db,
                    table,
                    column,
                    run,
                } => {
                    let c = cmd::db::client(&cfg, db.db.as_deref())?;
                    let ex = executor(&cfg, &run)?;
                    let ok = rt.block_on(cmd::db::maintain(
                        out,
                        &ex,
                        c,
                        Maintenance::ForcePasswordReset { table, column },
                        format,
                    ))?;
                    Ok(if ok { 0 } else { 1 })
                }
            }
        }
        Commands::Redis(sub) => {
            let (cfg, _) = load_config(&cli.global)?;
            let rt = runtime()?;
            match sub {
                RedisCmd::Info(a) => {
                    let t = cmd::redis::target(&cfg, a.url, a.instance.as_deref())?;
                    let report = rt.block_on(cmd::redis::info(out, &t, format))?;
                    finish_report(out, &cli.global, &report)
                }
                RedisCmd::Bigkeys { redis, top } => {
                    let t = cmd::redis::target(&cfg, redis.url, redis.instance.as_deref())?;
                    rt.block_on(cmd::redis::bigkeys(out, &t, top, format))?;
                    Ok(0)
                }
                RedisCmd::InvalidateSessions {
                    redis,
                    pattern,
                    run,
                } => {
                    let t = cmd::redis::target(&cfg, redis.url, redis.instance.as_deref())?;
                    let ex = executor(&cfg, &run)?;
                    let ok = rt.block_on(cmd::redis::invalidate_sessions(
                        out, &ex, &t, pattern, format,
                    ))?;
                    Ok(if ok { 0 } else { 1 })
                }
                RedisCmd::Flush { redis, db, run } => {
                    let t = cmd::redis::target(&cfg, redis.url, redis.instance.as_deref())?;
                    let ex = executor(&cfg, &run)?;
                    let ok = rt.block_on(cmd::redis::flush(out, &ex, &t, db, format))?;
                    Ok(if ok { 0 } else { 1 })
                }
            }
        }
        Commands::Images(ImagesCmd::Prune {
            older_than,
            compose,
            run,
        }) => {
            let (cfg, _) = load_config(&cli.global)?;
            let host = compose
                .docker_host
                .clone()
                .or_else(|| cfg.compose.as_ref().and_then(|c| c.docker_host.clone()));
            let ex = executor(&cfg, &run)?;
            let ok = runtime()?.block_on(async {
                let docker = cmd::services::connect(host.as_deref()).await?;
                cmd::images::prune(out, &ex, docker, &older_than, format).await
            })?;
            Ok(if ok { 0 } else { 1 })
        }
        Commands::Host(HostCmd::Check) => {
            let (cfg, _) = load_config(&cli.global)?;
            let report = cmd::host::host_check(&cfg)?;
            finish_report(out, &cli.global, &report)
        }
        Commands::Logs(LogsCmd::Review { paths, since }) => {
            let (cfg, _) = load_config(&cli.global)?;
            let paths = if paths.is_empty() {
                cfg.logs.paths.clone()
            } else {
                paths
            };
            anyhow::ensure!(
                !paths.is_empty(),
                "no log paths: pass PATH... or set [logs] paths in tej.toml"
            );
            let since = cmd::host::parse_since(&since)?;
            let report = cmd::host::logs_review(out, &paths, since, format)?;
            finish_report(out, &cli.global, &report)
        }
        Commands::Cleanup {
            root,
            pattern,
            older_than,
            keep_newest,
            run,
        } => {
            let (cfg, _) = load_config(&cli.global)?;
            let ex = executor(&cfg, &run)?;
            let mut opts = tej_host::CleanupOptions::new(root, pattern, older_than);
            opts.keep_newest = keep_newest;
            // The local backup repositories of tej.toml are never cleaned by pattern.
            opts.protected = cfg
                .backup
                .repositories
                .iter()
                .filter(|r| !r.starts_with("s3://"))
                .map(PathBuf::from)
                .collect();
            let ok = runtime()?.block_on(cmd::host::cleanup(out, &ex, opts, format))?;
            Ok(if ok { 0 } else { 1 })
        }
        Commands::Schedule {
            emit,
            dir,
            user,
            on_failure,
            environment_file,
            image,
            namespace,
        } => {
            let (cfg, _) = load_config(&cli.global)?;
            let cal = tej_core::Calendar::from_config(&cfg)?;
            cmd::schedule::emit(
                out,
                &cal,
                emit,
                config_path(&cli.global).as_deref(),
                cmd::schedule::UnitOptions {
                    user,
                    on_failure,
                    environment_file: Some(environment_file),
                },
                dir.as_deref(),
                tej_runbook::KubernetesOptions {
                    image,
                    namespace,
                    ..tej_runbook::KubernetesOptions::default()
                },
            )?;
            Ok(0)
        }
        Commands::Config(ConfigCmd::Check) => {
            let (cfg, source) = load_config(&cli.global)?;
            cmd::config::check(out, &cfg, &source, format)?;
            Ok(0)
        }
        Commands::Completions { shell } => {
            cmd::docs::completions(out, shell, <Cli as clap::CommandFactory>::command())?;
            Ok(0)
        }
        Commands::Man { dir } => {
            cmd::docs::man(
                out,
                dir.as_deref(),
                <Cli as clap::CommandFactory>::command(),
            )?;
            Ok(0)
        }
        Commands::Calendar { at } => {
            let (cfg, _) = load_config(&cli.global)?;
            let cal = tej_core::Calendar::from_config(&cfg)?;
            let now = match at {
                Some(s) => s
                    .parse::<jiff::Timestamp>()
                    .with_context(|| format!("parse --at {s:?} as an RFC 3339 instant"))?,
                None => jiff::Timestamp::now(),
            };
            cmd::calendar::show(out, &cal, now, format)?;
            Ok(0)
        }
        Commands::Health(check) => {
            run_checks_cmd(out, &cli.global, "daily".into(), false, None, &check, None)
        }
        Commands::Run {
            what,
            if_due,
            at,
            scheduled,
            check,
            run,
        } => run_checks_cmd(
            out,
            &cli.global,
            what,
            if_due,
            at,
            &check,
            Some((&run, scheduled)),
        ),
        Commands::Daemon {
            state_file,
            no_catch_up,
            run,
        } => {
            let (cfg, _) = load_config(&cli.global)?;
            let ex = executor(&cfg, &run)?;
            let args = cmd::daemon::DaemonArgs {
                state_file,
                no_catch_up,
                config_path: config_path(&cli.global),
            };
            runtime()?.block_on(cmd::daemon::daemon(out, &cfg, ex, args, format))?;
            Ok(0)
        }
    }
}

/// `tej health` and `tej run`: the report's Nagios exit code, or 0 when not due.
fn run_checks_cmd(
    out: &mut dyn Write,
    global: &GlobalArgs,
    what: String,
    if_due: bool,
    at: Option<String>,
    check: &CheckArgs,
    run: Option<(&RunArgs, bool)>,
) -> Result<i32> {
    let (cfg, _) = load_config(global)?;
    let executor = match run {
        Some((r, _)) => Some(executor(&cfg, r)?),
        None => None,
    };
    let now = match at {
        Some(s) => s
            .parse::<jiff::Timestamp>()
            .with_context(|| format!("parse --at {s:?} as an RFC 3339 instant"))?,
        None => jiff::Timestamp::now(),
    };
    let req = cmd::run::RunRequest {
        what,
        if_due,
        check_timeout: std::time::Duration::from_secs(check.timeout.max(1)),
        jobs: check.jobs,
        config_path: config_path(global),
        scheduled: run.is_some_and(|(_, s)| s),
    };
    match runtime()?.block_on(cmd::run::run(&cfg, &req, now, executor))? {
        cmd::run::RunResult::Report(report) => finish_report(out, global, &report),
        cmd::run::RunResult::NotDue(message) => {
            cmd::run::render_not_due(out, &message, global.output)?;
            Ok(0)
        }
    }
}

/// Whether the command line is `tej ... wal fetch ...` (`restore_command`).
fn is_wal_fetch() -> bool {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.windows(2).any(|w| w[0] == "wal" && w[1] == "fetch")
}

fn main() {
    // `restore_command` must exit above 125 for every failure that is not "not archived":
    // a usage error (clap's 2) or a panic (101) would read as "not archived" to
    // PostgreSQL, which would end recovery and promote early.
    let fetch = is_wal_fetch();
    if fetch {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default_hook(info);
            std::process::exit(tej_backup::FETCH_FATAL_EXIT_CODE);
        }));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if fetch && e.use_stderr() => {
            let _ = e.print();
            std::process::exit(tej_backup::FETCH_FATAL_EXIT_CODE);
        }
        Err(e) => e.exit(),
    };
    let nagios = cli.global.output == OutputFormat::Nagios;
    let stdout = std::io::stdout();
    let _colour = output::use_colour(stdout.is_terminal());
    let mut lock = stdout.lock();
    let code = match run(cli, &mut lock) {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`tej ... | head`) is not an error.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                0
            } else {
                let _ = lock.flush();
                eprintln!("error: {e:#}");
                if nagios { 3 } else { 1 }
            }
        }
    };
    let _ = lock.flush();
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }
}

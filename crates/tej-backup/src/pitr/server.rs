//! Starting PostgreSQL on a restored data directory and following recovery to its end.

use super::target::parse_time;
use crate::error::BackupError;
use crate::lsn::Lsn;
use jiff::Timestamp;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tej_core::{CommandRunner, CommandSpec};

/// How to start (and query) the server on a restored data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// `port`; `None` keeps the configured one.
    pub port: Option<u16>,
    /// `unix_socket_directories` (also where tej's queries connect); `None` keeps the
    /// configured one and queries go over TCP to 127.0.0.1.
    pub socket_dir: Option<PathBuf>,
    /// `listen_addresses`; `None` keeps the configured one (`''` for socket only).
    pub listen_addresses: Option<String>,
    /// Run `pg_ctl` and `psql` as this OS user (`runuser -u USER --`) when tej runs as
    /// root (PostgreSQL refuses root); ignored otherwise.
    pub run_as: Option<String>,
    /// PostgreSQL's program directory; `None` searches PATH and `/usr/lib/postgresql/*/bin`.
    pub bin_dir: Option<PathBuf>,
    /// The server log (`pg_ctl -l`); it must be writable by the server's OS user.
    pub log_file: PathBuf,
    /// How long recovery may take before tej gives up and stops the server.
    pub timeout: Duration,
    /// The database user tej's queries connect as.
    pub db_user: String,
    /// Stop the server (`pg_ctl stop -m fast`) once recovery is followed to its end.
    pub stop_after: bool,
}

impl ServerOptions {
    /// Options with the configured port and sockets, one hour of timeout, user `postgres`,
    /// running as `postgres` when root, the server left running.
    pub fn new(log_file: impl Into<PathBuf>) -> ServerOptions {
        ServerOptions {
            port: None,
            socket_dir: None,
            listen_addresses: None,
            run_as: Some("postgres".into()),
            bin_dir: None,
            log_file: log_file.into(),
            timeout: Duration::from_secs(3600),
            db_user: "postgres".into(),
            stop_after: false,
        }
    }

    fn program(&self, name: &str) -> String {
        match &self.bin_dir {
            Some(d) => d.join(name).display().to_string(),
            None => tej_core::command::locate_program(name)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| name.to_string()),
        }
    }

    /// A command for PostgreSQL program `name`, wrapped in `runuser` when root.
    pub fn command(&self, name: &str) -> CommandSpec {
        let program = self.program(name);
        match &self.run_as {
            Some(user) if nix::unistd::geteuid().is_root() && user != "root" => {
                CommandSpec::new("runuser")
                    .args(["-u", user.as_str(), "--"])
                    .arg(program)
            }
            _ => CommandSpec::new(program),
        }
    }

    /// `psql` running `sql` on `database` of the restored server: unaligned, tuples only,
    /// stopping at the first error.
    pub fn psql(&self, database: &str, sql: &str) -> CommandSpec {
        let host = self
            .socket_dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "127.0.0.1".into());
        let mut spec = self
            .command("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(host)
            .args(["-U", self.db_user.as_str(), "-d", database])
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGTZ", "UTC")
            .env("PGDATESTYLE", "ISO")
            .arg("-c")
            .arg(sql)
            .timeout(Duration::from_secs(600));
        if let Some(p) = self.port {
            spec = spec.arg("-p").arg(p.to_string());
        }
        spec
    }

    /// The settings passed on the server's command line for a recovery run: this port,
    /// sockets and addresses, plus what makes the log machine-readable (English
    /// messages, UTC times, plain stderr logging into `log_file`) and `hot_standby = on`
    /// (so a paused recovery can be queried).
    pub fn server_settings(&self) -> Vec<(String, String)> {
        let mut s: Vec<(String, String)> = Vec::new();
        if let Some(p) = self.port {
            s.push(("port".into(), p.to_string()));
        }
        if let Some(d) = &self.socket_dir {
            s.push(("unix_socket_directories".into(), d.display().to_string()));
        }
        if let Some(l) = &self.listen_addresses {
            s.push(("listen_addresses".into(), l.clone()));
        }
        for (k, v) in [
            ("lc_messages", "C"),
            ("log_timezone", "UTC"),
            ("logging_collector", "off"),
            ("log_destination", "stderr"),
            ("log_min_messages", "warning"),
            ("hot_standby", "on"),
        ] {
            s.push((k.into(), v.into()));
        }
        s
    }
}

/// `pg_ctl -o` is run by a shell: quote each word.
fn sh_quote(s: &str) -> Result<String, BackupError> {
    Ok(tej_core::shell::quote(s, "a server setting for pg_ctl -o")?.into_owned())
}

/// How recovery ended, as the server log tells it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryLog {
    /// The `recovery stopping ...` message, when a target was hit.
    pub stop_message: Option<String>,
    /// The time in the stop message (for `before`, that of the first transaction *not* replayed).
    pub stop_message_time: Option<Timestamp>,
    /// Whether the stop message says `after` (the named transaction was replayed).
    pub stopped_after: bool,
    /// The LSN in a `recovery stopping ... WAL location (LSN)` message.
    pub stop_lsn: Option<Lsn>,
    /// `last completed transaction was at log time T`.
    pub last_completed: Option<Timestamp>,
    /// `redo done at LSN`.
    pub redo_done: Option<Lsn>,
    /// `selected new timeline ID: N`.
    pub new_timeline: Option<u32>,
    /// `database system is ready to accept connections` (read-write: promoted).
    pub promoted: bool,
    /// `pausing at the end of recovery`.
    pub paused: bool,
    /// `shutdown at recovery target`.
    pub shutdown_at_target: bool,
    /// `database system is shut down`.
    pub shut_down: bool,
    /// `recovery ended before configured recovery target was reached`.
    pub target_not_reached: bool,
    /// FATAL and PANIC messages.
    pub fatal: Vec<String>,
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

fn quoted(s: &str) -> Option<&str> {
    let s = s.trim_start().strip_prefix('"')?;
    s.split_once('"').map(|(v, _)| v)
}

impl RecoveryLog {
    /// Reads the messages of one server start (English, as `lc_messages = C` writes them).
    pub fn parse(text: &str) -> RecoveryLog {
        let mut r = RecoveryLog::default();
        for line in text.lines() {
            if let Some(rest) = after(line, "recovery stopping ") {
                r.stop_message = Some(format!("recovery stopping {}", rest.trim_end()));
                r.stopped_after = rest.starts_with("after");
                r.stop_message_time = after(rest, ", time ").and_then(parse_time);
                r.stop_lsn = after(rest, "(LSN) ")
                    .and_then(quoted)
                    .and_then(|l| l.parse().ok());
            }
            if let Some(t) = after(line, "last completed transaction was at log time ") {
                r.last_completed = parse_time(t);
            }
            if let Some(l) = after(line, "redo done at ") {
                r.redo_done = l.split_whitespace().next().and_then(|l| l.parse().ok());
            }
            if let Some(t) = after(line, "selected new timeline ID: ") {
                r.new_timeline = t.trim().parse().ok();
            }
            if line.contains("database system is ready to accept connections") {
                r.promoted = true;
            }
            if line.contains("pausing at the end of recovery") {
                r.paused = true;
            }
            if line.contains("shutdown at recovery target") {
                r.shutdown_at_target = true;
            }
            if line.contains("database system is shut down") {
                r.shut_down = true;
            }
            if line.contains("recovery ended before configured recovery target was reached") {
                r.target_not_reached = true;
            }
            if let Some(m) = after(line, "FATAL:").or_else(|| after(line, "PANIC:")) {
                r.fatal.push(m.trim().to_string());
            }
        }
        r
    }

    /// The last replayed transaction's time as far as the log tells.
    pub fn last_replayed_time(&self) -> Option<Timestamp> {
        self.last_completed.or(if self.stopped_after {
            self.stop_message_time
        } else {
            None
        })
    }
}

/// What following a recovery found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecoveryReport {
    /// The data directory.
    pub pgdata: PathBuf,
    /// Where replay stopped (`pg_last_wal_replay_lsn()`, else the log's stop or
    /// `redo done` position; `None` after a shutdown at a time, xid or name target).
    pub stopped_at_lsn: Option<Lsn>,
    /// The last replayed transaction's commit time (`pg_last_xact_replay_timestamp()`,
    /// else the log's `last completed transaction` or `recovery stopping after` time).
    pub stopped_at_time: Option<Timestamp>,
    /// The server's `recovery stopping ...` message, when a target was hit.
    pub stop_message: Option<String>,
    /// True when the server logged that it stopped at the configured target (false when
    /// no target was set and all archived WAL was replayed).
    pub reached_target: bool,
    /// True when recovery ended with promotion (the server accepts writes).
    pub promoted: bool,
    /// True when recovery is paused at the target (read-only; `pg_wal_replay_resume()`
    /// promotes).
    pub paused: bool,
    /// The timeline the server runs on after promotion.
    pub timeline_after: Option<u32>,
    /// Whether the server is still running.
    pub running: bool,
    /// Wall time from start to the end of recovery, seconds.
    pub duration_secs: f64,
}

fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn read_from(path: &Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut out = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_end(&mut out);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The postmaster's pid if one is running on `pgdata` (from `postmaster.pid`).
pub fn running_postmaster(pgdata: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    if pid <= 1 {
        return None;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => {
            // A zombie or a recycled pid is not our server: check it is a postgres.
            let comm = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = comm
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|s| s == "Z");
            (!zombie).then_some(pid)
        }
        Err(_) => None,
    }
}

/// Stops the server on `pgdata` (`pg_ctl stop -m fast`, or `immediate`); does nothing
/// when none runs.
pub async fn stop_server(
    pgdata: &Path,
    opts: &ServerOptions,
    runner: &dyn CommandRunner,
    immediate: bool,
) -> Result<(), BackupError> {
    if running_postmaster(pgdata).is_none() {
        return Ok(());
    }
    let spec = opts
        .command("pg_ctl")
        .arg("-D")
        .arg(pgdata.as_os_str())
        .args(["-m", if immediate { "immediate" } else { "fast" }])
        .args(["-w", "-t", "120", "stop"])
        .timeout(Duration::from_secs(150));
    tej_core::run_checked(runner, spec).await?;
    Ok(())
}

/// Answers of the status query on a running server.
struct Status {
    in_recovery: bool,
    replay_lsn: Option<Lsn>,
    replay_time: Option<Timestamp>,
    timeline: Option<u32>,
}

/// The status query (its columns are what [`parse_status`] reads).
const STATUS_SQL: &str = tej_db::pg::psql::RECOVERY_STATUS;

fn parse_epoch(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: i32 = digits.parse().ok()?;
    Timestamp::new(secs, if secs < 0 { -nanos } else { nanos }).ok()
}

fn parse_status(out: &str) -> Option<Status> {
    let line = out.lines().find(|l| !l.trim().is_empty())?;
    let cols: Vec<&str> = line.split('|').collect();
    if cols.len() != 4 {
        return None;
    }
    Some(Status {
        in_recovery: cols[0].trim() == "t",
        replay_lsn: cols[1].trim().parse().ok(),
        replay_time: parse_epoch(cols[2]),
        timeline: cols[3]
            .get(0..8)
            .and_then(|h| u32::from_str_radix(h, 16).ok()),
    })
}

async fn query_status(opts: &ServerOptions, runner: &dyn CommandRunner) -> Option<Status> {
    for _ in 0..20 {
        if let Ok(out) = runner.run(opts.psql("postgres", STATUS_SQL)).await
            && out.status.success()
            && let Some(s) = parse_status(&out.stdout_text())
        {
            return Some(s);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// Starts PostgreSQL on a data directory prepared by
/// [`configure_recovery`](super::configure_recovery) and follows recovery to its end:
///
/// - `pg_ctl start` (argv through `runner`, as [`run_as`](ServerOptions::run_as) when
///   root) with [`server_settings`](ServerOptions::server_settings) on the command line;
/// - the server log is read from where it stood before the start: `recovery stopping
///   ...`, `pausing at the end of recovery`, `shutdown at recovery target`, `database
///   system is ready to accept connections` (promoted), `recovery ended before configured
///   recovery target was reached`, FATAL and PANIC lines;
/// - once promoted or paused, `psql` asks `pg_is_in_recovery()`,
///   `pg_last_wal_replay_lsn()` and `pg_last_xact_replay_timestamp()`.
///
/// Errors: [`BackupError::TargetNotReached`] when PostgreSQL ended recovery before the
/// target (the archive holds no commit after it), [`BackupError::RecoveryFailed`] when
/// the server exits otherwise or recovery outlasts the timeout (the server is then
/// stopped), [`BackupError::DataDirInUse`] when a server already runs on `pgdata`.
pub async fn run_recovery(
    pgdata: &Path,
    opts: &ServerOptions,
    runner: &dyn CommandRunner,
) -> Result<RecoveryReport, BackupError> {
    if let Some(pid) = running_postmaster(pgdata) {
        return Err(BackupError::DataDirInUse {
            path: pgdata.display().to_string(),
            reason: format!("has a running server (pid {pid}); stop it first"),
        });
    }
    let started = std::time::Instant::now();
    let offset = log_len(&opts.log_file);
    let server_opts = opts
        .server_settings()
        .iter()
        .map(|(k, v)| Ok(format!("-c {}", sh_quote(&format!("{k}={v}"))?)))
        .collect::<Result<Vec<_>, BackupError>>()?
        .join(" ");
    let start = opts
        .command("pg_ctl")
        .arg("-D")
        .arg(pgdata.as_os_str())
        .arg("-l")
        .arg(opts.log_file.as_os_str())
        .arg("-W")
        .arg("-o")
        .arg(server_opts)
        .arg("start")
        .timeout(Duration::from_secs(60));
    tej_core::run_checked(runner, start).await?;
    tracing::info!(pgdata = %pgdata.display(), port = ?opts.port, "server started for recovery");

    let failed = |reason: String, log: &str| BackupError::RecoveryFailed {
        pgdata: pgdata.display().to_string(),
        reason,
        log_excerpt: tail_lines(log, 30),
    };
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let mut gone_polls = 0u32;
    let log = loop {
        let text = read_from(&opts.log_file, offset);
        let parsed = RecoveryLog::parse(&text);
        if parsed.promoted || parsed.paused {
            break parsed;
        }
        let alive = running_postmaster(pgdata).is_some();
        gone_polls = if alive { 0 } else { gone_polls + 1 };
        // Give the postmaster a moment to write its pid file after pg_ctl returned.
        let exited = (parsed.shut_down && !alive) || gone_polls >= 30;
        if exited {
            if parsed.shutdown_at_target {
                break parsed;
            }
            if parsed.target_not_reached {
                let last = parsed
                    .last_replayed_time()
                    .map(|t| t.to_string())
                    .or(parsed.redo_done.map(|l| l.to_string()))
                    .unwrap_or_else(|| "unknown".into());
                return Err(BackupError::TargetNotReached {
                    target: read_target(pgdata),
                    last_replayed: last,
                    log_excerpt: tail_lines(&text, 15),
                });
            }
            let reason = parsed
                .fatal
                .first()
                .cloned()
                .unwrap_or_else(|| "the server exited".into());
            return Err(failed(reason, &text));
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = stop_server(pgdata, opts, runner, false).await;
            return Err(failed(
                format!(
                    "recovery did not end within {:?}; the server was stopped",
                    opts.timeout
                ),
                &text,
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let status = if log.promoted || log.paused {
        query_status(opts, runner).await
    } else {
        None
    };
    let mut report = RecoveryReport {
        pgdata: pgdata.to_path_buf(),
        stopped_at_lsn: status
            .as_ref()
            .and_then(|s| s.replay_lsn)
            .or(log.stop_lsn)
            .or(log.redo_done),
        stopped_at_time: status
            .as_ref()
            .and_then(|s| s.replay_time)
            .or(log.last_replayed_time()),
        stop_message: log.stop_message.clone(),
        reached_target: log.stop_message.is_some(),
        promoted: log.promoted || status.as_ref().is_some_and(|s| !s.in_recovery),
        paused: log.paused && !log.promoted,
        timeline_after: if log.promoted {
            status
                .as_ref()
                .and_then(|s| s.timeline)
                .or(log.new_timeline)
        } else {
            None
        },
        running: log.promoted || log.paused,
        duration_secs: started.elapsed().as_secs_f64(),
    };
    tracing::info!(
        pgdata = %pgdata.display(),
        stopped_at_lsn = ?report.stopped_at_lsn,
        stopped_at_time = ?report.stopped_at_time,
        promoted = report.promoted,
        paused = report.paused,
        secs = report.duration_secs,
        "recovery ended"
    );
    if opts.stop_after && report.running {
        stop_server(pgdata, opts, runner, false).await?;
        report.running = false;
    }
    Ok(report)
}

/// The recovery target configured in `postgresql.auto.conf`, for messages.
fn read_target(pgdata: &Path) -> String {
    let text = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap_or_default();
    text.lines()
        .rfind(|l| {
            super::config::conf_line_key(l)
                .is_some_and(|k| super::config::TARGET_KEYS.contains(&k.as_str()))
        })
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "(none configured)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMOTED: &str = "\
2026-11-29 06:50:00.000 UTC [10] LOG:  starting point-in-time recovery to 2026-11-29 06:49:58.5+00
2026-11-29 06:50:00.010 UTC [10] LOG:  restored log file \"000000010000000000000002\" from archive
2026-11-29 06:50:00.020 UTC [10] LOG:  consistent recovery state reached at 0/2000100
2026-11-29 06:50:00.021 UTC [9] LOG:  database system is ready to accept read-only connections
2026-11-29 06:50:00.030 UTC [10] LOG:  recovery stopping before commit of transaction 741, time 2026-11-29 06:49:58.600123+00
2026-11-29 06:50:00.031 UTC [10] LOG:  redo done at 0/4000A18 system usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.02 s
2026-11-29 06:50:00.032 UTC [10] LOG:  last completed transaction was at log time 2026-11-29 06:49:58.400001+00
2026-11-29 06:50:00.040 UTC [10] LOG:  selected new timeline ID: 2
2026-11-29 06:50:00.050 UTC [10] LOG:  archive recovery complete
2026-11-29 06:50:00.060 UTC [9] LOG:  database system is ready to accept connections
";

    #[test]
    fn a_promoting_recovery_is_read_from_the_log() {
        let r = RecoveryLog::parse(PROMOTED);
        assert!(r.promoted && !r.paused && !r.shut_down && !r.target_not_reached);
        assert!(!r.stopped_after);
        assert_eq!(
            r.stop_message_time,
            Some("2026-11-29T06:49:58.600123Z".parse().unwrap())
        );
        assert_eq!(
            r.last_replayed_time(),
            Some("2026-11-29T06:49:58.400001Z".parse().unwrap())
        );
        assert_eq!(r.redo_done, Some("0/4000A18".parse().unwrap()));
        assert_eq!(r.new_timeline, Some(2));
        assert!(r.fatal.is_empty());
    }

    #[test]
    fn other_endings_are_recognised() {
        let lsn = RecoveryLog::parse(
            "LOG:  recovery stopping after WAL location (LSN) \"0/3000060\"\nLOG:  pausing at the end of recovery\nHINT:  Execute pg_wal_replay_resume() to promote.\n",
        );
        assert!(lsn.paused && !lsn.promoted && lsn.stopped_after);
        assert_eq!(lsn.stop_lsn, Some("0/3000060".parse().unwrap()));
        assert_eq!(lsn.last_replayed_time(), None);

        let xid = RecoveryLog::parse(
            "LOG:  recovery stopping after commit of transaction 745, time 2026-11-29 06:49:59.5+00\nLOG:  shutdown at recovery target\nLOG:  database system is shut down\n",
        );
        assert!(xid.shutdown_at_target && xid.shut_down);
        assert_eq!(
            xid.last_replayed_time(),
            Some("2026-11-29T06:49:59.5Z".parse().unwrap())
        );

        let short = RecoveryLog::parse(
            "LOG:  last completed transaction was at log time 2026-11-29 06:49:59.5+00\n\
             FATAL:  recovery ended before configured recovery target was reached\n\
             LOG:  startup process (PID 12) exited with exit code 1\n\
             LOG:  database system is shut down\n",
        );
        assert!(short.target_not_reached && short.shut_down && !short.promoted);
        assert_eq!(short.fatal.len(), 1);

        let name = RecoveryLog::parse(
            "LOG:  recovery stopping at restore point \"before-migration\", time 2026-11-29 06:49:57+00\n",
        );
        assert!(name.stop_message.unwrap().contains("before-migration"));
        let imm = RecoveryLog::parse("LOG:  recovery stopping after reaching consistency\n");
        assert!(imm.stop_message.is_some() && imm.stop_message_time.is_none());
        assert!(
            !RecoveryLog::parse("LOG:  database system is ready to accept read-only connections\n")
                .promoted
        );
    }

    #[test]
    fn status_rows_and_epochs_parse() {
        let s = parse_status("f|0/4000A18|1764399001.123456|000000020000000000000004\n").unwrap();
        assert!(!s.in_recovery);
        assert_eq!(s.replay_lsn, Some(Lsn(0x400_0A18)));
        assert_eq!(
            s.replay_time.unwrap().as_microsecond(),
            1_764_399_001_123_456
        );
        assert_eq!(s.timeline, Some(2));
        let p = parse_status("t|0/3000060||\n").unwrap();
        assert!(p.in_recovery && p.replay_time.is_none() && p.timeline.is_none());
        assert!(parse_status("garbage").is_none());
        assert_eq!(parse_epoch("17").unwrap().as_second(), 17);
    }

    #[test]
    fn server_options_quote_for_pg_ctl_and_wrap_runuser() {
        assert_eq!(
            sh_quote("unix_socket_directories=/a b/it's").unwrap(),
            "\"unix_socket_directories=/a b/it's\""
        );
        let mut o = ServerOptions::new("/tmp/x.log");
        o.port = Some(5999);
        o.socket_dir = Some("/tmp/s".into());
        o.bin_dir = Some("/usr/lib/postgresql/15/bin".into());
        let spec = o.command("pg_ctl");
        if nix::unistd::geteuid().is_root() {
            assert_eq!(spec.program, "runuser");
            assert_eq!(spec.args[3], "/usr/lib/postgresql/15/bin/pg_ctl");
        } else {
            assert_eq!(spec.program, "/usr/lib/postgresql/15/bin/pg_ctl");
        }
        let q = o.psql("app", "SELECT 1").display();
        assert!(
            q.contains("-h /tmp/s") && q.contains("-p 5999") && q.contains("-d app"),
            "{q}"
        );
        let settings = o.server_settings();
        assert!(settings.contains(&("port".into(), "5999".into())));
        assert!(settings.contains(&("lc_messages".into(), "C".into())));
    }
}

#[cfg(test)]
mod follow_tests {
    use super::*;
    use tej_core::command::ExitInfo;
    use tej_core::{CommandOutput, MockCommandRunner};

    fn ok(stdout: &str) -> CommandOutput {
        CommandOutput {
            status: ExitInfo {
                code: Some(0),
                signal: None,
            },
            stdout: stdout.as_bytes().to_vec(),
            stderr: String::new(),
            duration: Duration::ZERO,
        }
    }

    fn is_pg_ctl(spec: &CommandSpec, verb: &str) -> bool {
        spec.display().contains("pg_ctl") && spec.args.last().is_some_and(|a| a == verb)
    }

    struct Fixture {
        dir: tempfile::TempDir,
        opts: ServerOptions,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(
            dir.path().join("data/postgresql.auto.conf"),
            "recovery_target_time = '2026-11-29 06:49:59+00'\n",
        )
        .unwrap();
        // an earlier run's lines must not count
        std::fs::write(
            dir.path().join("server.log"),
            "LOG:  database system is ready to accept connections\n",
        )
        .unwrap();
        let mut opts = ServerOptions::new(dir.path().join("server.log"));
        opts.run_as = None;
        opts.timeout = Duration::from_secs(30);
        Fixture { dir, opts }
    }

    /// A runner whose `pg_ctl start` "writes" `log` to the server log (and, with
    /// `alive`, a postmaster.pid naming this process).
    fn runner(f: &Fixture, log: &'static str, alive: bool) -> MockCommandRunner {
        let mut m = MockCommandRunner::new();
        let log_path = f.opts.log_file.clone();
        let pid_path = f.dir.path().join("data/postmaster.pid");
        m.expect_run()
            .withf(|s| is_pg_ctl(s, "start"))
            .times(1)
            .returning(move |spec| {
                assert!(spec.args.iter().any(|a| a == "-W"), "pg_ctl must not wait");
                let mut old = std::fs::read_to_string(&log_path).unwrap();
                old.push_str(log);
                std::fs::write(&log_path, old).unwrap();
                if alive {
                    std::fs::write(&pid_path, format!("{}\n", std::process::id())).unwrap();
                }
                Ok(ok(""))
            });
        m
    }

    #[tokio::test]
    async fn target_not_reached_is_an_error_naming_the_last_transaction() {
        let f = fixture();
        let m = runner(
            &f,
            "LOG:  last completed transaction was at log time 2026-11-29 06:49:58.5+00\n\
             FATAL:  recovery ended before configured recovery target was reached\n\
             LOG:  database system is shut down\n",
            false,
        );
        let e = run_recovery(&f.dir.path().join("data"), &f.opts, &m)
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, BackupError::TargetNotReached { .. }), "{e}");
        assert!(msg.contains("2026-11-29T06:49:58.5Z"), "{msg}");
        assert!(
            msg.contains("recovery_target_time = '2026-11-29 06:49:59+00'"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn other_fatal_errors_fail_with_the_log() {
        let f = fixture();
        let m = runner(
            &f,
            "FATAL:  could not locate required checkpoint record\n\
             LOG:  startup process (PID 9) exited with exit code 1\n\
             LOG:  database system is shut down\n",
            false,
        );
        let e = run_recovery(&f.dir.path().join("data"), &f.opts, &m)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, BackupError::RecoveryFailed { reason, .. } if reason.contains("checkpoint record")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn shutdown_at_the_target_is_reported_from_the_log() {
        let f = fixture();
        let m = runner(
            &f,
            "LOG:  recovery stopping after commit of transaction 745, time 2026-11-29 06:49:59.25+00\n\
             LOG:  shutdown at recovery target\n\
             LOG:  database system is shut down\n",
            false,
        );
        let r = run_recovery(&f.dir.path().join("data"), &f.opts, &m)
            .await
            .unwrap();
        assert!(r.reached_target && !r.promoted && !r.paused && !r.running);
        assert_eq!(
            r.stopped_at_time,
            Some("2026-11-29T06:49:59.25Z".parse().unwrap())
        );
        assert_eq!(r.timeline_after, None);
    }

    #[tokio::test]
    async fn promotion_is_confirmed_by_queries_and_the_server_stopped_on_request() {
        let mut f = fixture();
        f.opts.stop_after = true;
        let mut m = runner(
            &f,
            "LOG:  recovery stopping before commit of transaction 746, time 2026-11-29 06:50:00+00\n\
             LOG:  selected new timeline ID: 2\n\
             LOG:  database system is ready to accept connections\n",
            true,
        );
        m.expect_run()
            .withf(|s| s.display().contains("psql"))
            .times(1)
            .returning(|_| {
                Ok(ok(
                    "f|0/4000A18|1764399001.123456|000000020000000000000004\n",
                ))
            });
        let pid_path = f.dir.path().join("data/postmaster.pid");
        m.expect_run()
            .withf(|s| is_pg_ctl(s, "stop"))
            .times(1)
            .returning(move |_| {
                std::fs::remove_file(&pid_path).unwrap();
                Ok(ok(""))
            });
        let r = run_recovery(&f.dir.path().join("data"), &f.opts, &m)
            .await
            .unwrap();
        assert!(r.reached_target && r.promoted && !r.running);
        assert_eq!(r.stopped_at_lsn, Some(Lsn(0x400_0A18)));
        assert_eq!(
            r.stopped_at_time.unwrap().as_microsecond(),
            1_764_399_001_123_456
        );
        assert_eq!(r.timeline_after, Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn recovery_outlasting_the_timeout_stops_the_server() {
        let f = fixture();
        let mut m = runner(
            &f,
            "LOG:  restored log file \"000000010000000000000002\" from archive\n",
            true,
        );
        m.expect_run()
            .withf(|s| is_pg_ctl(s, "stop"))
            .times(1)
            .returning(|_| Ok(ok("")));
        let e = run_recovery(&f.dir.path().join("data"), &f.opts, &m)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, BackupError::RecoveryFailed { reason, .. } if reason.contains("did not end within")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_running_server_is_refused() {
        let f = fixture();
        std::fs::write(
            f.dir.path().join("data/postmaster.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        let m = MockCommandRunner::new();
        let e = run_recovery(&f.dir.path().join("data"), &f.opts, &m)
            .await
            .unwrap_err();
        assert!(matches!(e, BackupError::DataDirInUse { .. }), "{e}");
    }
}

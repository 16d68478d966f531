//! A throwaway PostgreSQL 15 cluster.

use crate::pg_tls::PgServerTls;
use crate::process::{self, is_root, log_tail, postgres_user, run_as_postgres};
use crate::scratch::ScratchDir;
use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
const INSTALL: &str = "apt-get install postgresql-15 postgresql-contrib";
const HOST: &str = "127.0.0.1";
const USER: &str = "postgres";
const START_ATTEMPTS: usize = 5;

/// How to configure a [`PgCluster`].
#[derive(Debug, Clone)]
pub struct PgClusterOptions {
    /// `archive_command` (written as given; `%p` and `%f` are PostgreSQL's placeholders).
    pub archive_command: Option<String>,
    /// Writes `archive_mode = on` (needed for `archive_command` to run).
    pub archive_mode: bool,
    /// Extra `postgresql.conf` lines, appended last (so they override the kit's).
    pub extra_conf: Vec<String>,
    /// Loads `pg_stat_statements` through `shared_preload_libraries` (default true).
    pub preload_pg_stat_statements: bool,
    /// Runs `initdb --data-checksums` (default true).
    pub data_checksums: bool,
    /// Serves TLS (`ssl = on`) with this certificate; its files are copied into the base
    /// directory as `server.crt`, `server.key` and `client_ca.crt`.
    pub tls: Option<PgServerTls>,
    /// `pg_hba.conf` lines put before initdb's (which trust every local connection), such
    /// as `hostssl all alice 127.0.0.1/32 cert`.
    pub hba_first: Vec<String>,
}

impl Default for PgClusterOptions {
    fn default() -> Self {
        PgClusterOptions {
            archive_command: None,
            archive_mode: false,
            extra_conf: Vec::new(),
            preload_pg_stat_statements: true,
            data_checksums: true,
            tls: None,
            hba_first: Vec::new(),
        }
    }
}

/// A throwaway PostgreSQL 15 cluster on 127.0.0.1 with its own port and temp directory,
/// superuser `postgres` with trust authentication; stopped (immediate mode) and removed
/// on drop.
///
/// Layout of [`base_dir`](Self::base_dir): `data/` (the cluster), `sock/` (its unix
/// socket) and `server.log`. When the tests run as root, the server runs as the
/// `postgres` OS user and the base directory belongs to it. Drop also stops any other
/// server a test started on a data directory inside the base directory (a restored copy).
#[derive(Debug)]
pub struct PgCluster {
    base: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    port: u16,
    running: bool,
    /// Removed (or kept, see `TEJ_KEEP_TEST_DIRS`) after `Drop::drop` stopped the server.
    dir: ScratchDir,
}

impl PgCluster {
    /// Starts a cluster with the default options.
    pub fn start() -> Result<PgCluster> {
        PgCluster::start_with(PgClusterOptions::default())
    }

    /// Starts a cluster configured by `opts`: `initdb`, then `pg_ctl start` (≈ 1 s).
    pub fn start_with(opts: PgClusterOptions) -> Result<PgCluster> {
        let bin = PgCluster::bin_dir();
        for prog in ["initdb", "pg_ctl", "postgres", "psql"] {
            if !process::is_executable(&bin.join(prog)) {
                bail!("{prog} not found in {}: {INSTALL}", bin.display());
            }
        }
        if is_root() && postgres_user().is_none() {
            bail!(
                "the postgres OS user does not exist (needed to run PostgreSQL as root): {INSTALL}"
            );
        }
        let dir = ScratchDir::new("tejpg-", "PostgreSQL cluster")?;
        let base = dir.path().to_path_buf();
        let mut cluster = PgCluster {
            data: base.join("data"),
            sock: base.join("sock"),
            log: base.join("server.log"),
            base,
            port: 0,
            running: false,
            dir,
        };
        match cluster.init_and_start(&opts) {
            Ok(()) => Ok(cluster),
            Err(e) => {
                let e = e.context(format!(
                    "start a PostgreSQL cluster in {}",
                    cluster.base.display()
                ));
                cluster.dir.mark_failed();
                drop(cluster);
                Err(e)
            }
        }
    }

    fn init_and_start(&mut self, opts: &PgClusterOptions) -> Result<()> {
        std::fs::create_dir(&self.sock)
            .with_context(|| format!("create {}", self.sock.display()))?;
        if is_root() {
            let user = postgres_user().context("look up the postgres OS user")?;
            for p in [&self.base, &self.sock] {
                nix::unistd::chown(p.as_path(), Some(user.uid), Some(user.gid))
                    .with_context(|| format!("chown {} to postgres", p.display()))?;
            }
        }

        let mut initdb = self.pg_command("initdb");
        initdb.arg("-D").arg(&self.data).args([
            "-U",
            USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]);
        if opts.data_checksums {
            initdb.arg("--data-checksums");
        }
        process::run(&mut initdb, "initdb")?;
        self.install_tls_and_hba(opts)?;

        let conf_path = self.data.join("postgresql.conf");
        let original = std::fs::read_to_string(&conf_path)
            .with_context(|| format!("read {}", conf_path.display()))?;
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            self.port = crate::free_port();
            let conf = format!("{original}\n{}", self.conf_lines(opts).join("\n") + "\n");
            std::fs::write(&conf_path, conf)
                .with_context(|| format!("write {}", conf_path.display()))?;
            let log_before = self.server_log().len();
            match self.pg_ctl_start() {
                Ok(()) => {
                    self.running = true;
                    return Ok(());
                }
                Err(e) => {
                    let log = self.server_log();
                    if !process::says_address_in_use(log.get(log_before..).unwrap_or(&log)) {
                        return Err(e);
                    }
                    // Someone took the port between free_port() and the bind: retry.
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.expect("at least one start attempt"))
            .context(format!("{START_ATTEMPTS} attempts found no free port"))
    }

    /// Copies the TLS files of `opts` into the base directory (owned by `postgres`, the key
    /// 0600 as the server demands) and puts `opts.hba_first` before initdb's pg_hba.conf.
    fn install_tls_and_hba(&self, opts: &PgClusterOptions) -> Result<()> {
        if let Some(tls) = &opts.tls {
            let copies = [
                (Some(&tls.server.cert_file), "server.crt"),
                (Some(&tls.server.key_file), "server.key"),
                (tls.client_ca_file.as_ref(), "client_ca.crt"),
            ];
            for (from, name) in copies {
                let Some(from) = from else { continue };
                let to = self.base.join(name);
                let bytes =
                    std::fs::read(from).with_context(|| format!("read {}", from.display()))?;
                crate::pg_tls::write_private(&to, &bytes)?;
                if let Some(user) = postgres_user().filter(|_| is_root()) {
                    nix::unistd::chown(to.as_path(), Some(user.uid), Some(user.gid))
                        .with_context(|| format!("chown {} to postgres", to.display()))?;
                }
            }
        }
        if !opts.hba_first.is_empty() {
            let hba = self.data.join("pg_hba.conf");
            let original =
                std::fs::read_to_string(&hba).with_context(|| format!("read {}", hba.display()))?;
            let text = format!("{}\n{original}", opts.hba_first.join("\n"));
            std::fs::write(&hba, text).with_context(|| format!("write {}", hba.display()))?;
        }
        Ok(())
    }

    fn conf_lines(&self, opts: &PgClusterOptions) -> Vec<String> {
        let mut lines = vec![
            "# added by tej-testkit".to_string(),
            format!("port = {}", self.port),
            format!("listen_addresses = '{HOST}'"),
            format!(
                "unix_socket_directories = '{}'",
                conf_quote(&self.sock.to_string_lossy())
            ),
            "max_connections = 50".to_string(),
            "wal_level = replica".to_string(),
            "max_wal_senders = 4".to_string(),
        ];
        if opts.preload_pg_stat_statements {
            lines.push("shared_preload_libraries = 'pg_stat_statements'".to_string());
        }
        if opts.archive_mode {
            lines.push("archive_mode = on".to_string());
        }
        if let Some(cmd) = &opts.archive_command {
            lines.push(format!("archive_command = '{}'", conf_quote(cmd)));
        }
        if let Some(tls) = &opts.tls {
            lines.push("ssl = on".to_string());
            for (key, name) in [
                ("ssl_cert_file", "server.crt"),
                ("ssl_key_file", "server.key"),
            ] {
                let path = self.base.join(name);
                lines.push(format!("{key} = '{}'", conf_quote(&path.to_string_lossy())));
            }
            if tls.client_ca_file.is_some() {
                let path = self.base.join("client_ca.crt");
                lines.push(format!(
                    "ssl_ca_file = '{}'",
                    conf_quote(&path.to_string_lossy())
                ));
            }
        }
        lines.extend(opts.extra_conf.iter().cloned());
        lines
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "start"]);
        process::run(&mut cmd, "pg_ctl start")
            .map(drop)
            .map_err(|e| e.context(log_tail(&self.log)))
    }

    /// A command for the PostgreSQL program `name` from [`bin_dir`](Self::bin_dir), run as
    /// the `postgres` OS user when root, in the cluster's base directory.
    pub fn pg_command(&self, name: &str) -> Command {
        let mut cmd = Command::new(PgCluster::bin_dir().join(name));
        cmd.current_dir(&self.base);
        run_as_postgres(&mut cmd);
        cmd
    }

    /// PostgreSQL 15's program directory: `$TEJ_PG_BIN_DIR` if set, else
    /// `/usr/lib/postgresql/15/bin` if present, else `pg_config --bindir`.
    pub fn bin_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("TEJ_PG_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let default = PathBuf::from(DEFAULT_BIN_DIR);
        if default.join("pg_ctl").exists() {
            return default;
        }
        Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(default)
    }

    /// The host to connect to: `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.sock
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The temporary directory holding everything (owned by `postgres` when root).
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    /// The server log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The superuser: `postgres` (trust authentication, no password).
    pub fn user(&self) -> &str {
        USER
    }

    /// Whether the server is running (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// `postgres://postgres@127.0.0.1:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@{HOST}:{}/{db}", self.port)
    }

    /// `host=127.0.0.1 port=PORT user=postgres dbname=db`.
    pub fn conn_str(&self, db: &str) -> String {
        format!("host={HOST} port={} user={USER} dbname={db}", self.port)
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        )
        .with_context(|| format!("create database {name}"))?;
        Ok(self.url(name))
    }

    /// Runs `sql` (any number of statements) with `psql -X -A -t -q -v ON_ERROR_STOP=1`
    /// against `db`; returns stdout trimmed: rows on lines, columns separated by `|`,
    /// no command tags. The error includes psql's stderr.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let mut cmd = Command::new(psql_path());
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", USER, "-d", db, "-f", "-"])
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS");
        let out = process::run_with_input(&mut cmd, sql.as_bytes(), &format!("psql -d {db}"))
            .with_context(|| format!("run SQL on {}: {}", self.url(db), process::tail(sql, 500)))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Stops the server with `pg_ctl stop -m fast` (a clean shutdown); does nothing if it
    /// is already stopped.
    pub fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        process::run(&mut cmd, "pg_ctl stop").map_err(|e| e.context(log_tail(&self.log)))?;
        self.running = false;
        Ok(())
    }

    /// Starts the server again on the same data directory and port; does nothing if it
    /// is running.
    pub fn start_again(&mut self) -> Result<()> {
        if self.running {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let log_before = self.server_log().len();
            match self.pg_ctl_start() {
                Ok(()) => break,
                // The port may be held briefly (e.g. by a client's socket); wait a little.
                Err(_)
                    if attempt < 3 && {
                        let log = self.server_log();
                        process::says_address_in_use(log.get(log_before..).unwrap_or(&log))
                    } =>
                {
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(e) => return Err(e),
            }
        }
        self.running = true;
        Ok(())
    }

    /// Reloads the configuration (`pg_ctl reload`).
    pub fn reload(&self) -> Result<()> {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D").arg(&self.data).arg("reload");
        process::run(&mut cmd, "pg_ctl reload").map(drop)
    }

    /// The server log so far, for failing-test diagnostics.
    pub fn server_log(&self) -> String {
        process::read_log(&self.log)
    }

    /// Stops the server as fast as possible, whatever state it is in.
    fn stop_immediately(&mut self) {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"]);
        let _ = process::run_with_timeout(&mut cmd, Duration::from_secs(40));
        // If pg_ctl could not stop it, kill the postmaster named in postmaster.pid.
        if let Some(pid) = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
            .filter(|&pid| pid > 1)
            && process::pid_alive(pid)
            && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains(&*self.data.to_string_lossy()))
        {
            process::signal(pid, Signal::SIGKILL);
        }
        self.running = false;
    }

    /// Stops other servers a test started on data directories inside the base directory
    /// (e.g. a restored copy), so none outlives it.
    fn stop_strays(&self) {
        for pid in process::processes_mentioning(&self.base) {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_postmaster = args
                .first()
                .is_some_and(|a| a.ends_with("/postgres") || a == "postgres");
            let data = args
                .iter()
                .position(|a| a == "-D")
                .and_then(|i| args.get(i + 1));
            if let (true, Some(data)) = (is_postmaster, data) {
                let mut cmd = self.pg_command("pg_ctl");
                cmd.args([
                    "-D",
                    data.as_str(),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                ]);
                let _ = process::run_with_timeout(&mut cmd, Duration::from_secs(40));
                if process::pid_alive(pid) {
                    process::signal(pid, Signal::SIGKILL);
                }
            }
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running || self.data.join("postmaster.pid").exists() {
            self.stop_immediately();
        }
        self.stop_strays();
    }
}

/// Where psql is: PostgreSQL 15's own, else Debian's wrapper.
fn psql_path() -> PathBuf {
    let own = PgCluster::bin_dir().join("psql");
    if process::is_executable(&own) {
        own
    } else {
        PathBuf::from("/usr/bin/psql")
    }
}

/// Quotes a string for a single-quoted postgresql.conf value.
fn conf_quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "''")
}

/// Quotes an SQL identifier.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(conf_quote("cp %p '/x y/%f'"), "cp %p ''/x y/%f''");
    }

    #[test]
    fn defaults_preload_and_checksum() {
        let o = PgClusterOptions::default();
        assert!(o.preload_pg_stat_statements);
        assert!(o.data_checksums);
        assert!(!o.archive_mode);
        assert!(o.archive_command.is_none());
        assert!(o.extra_conf.is_empty());
        assert!(o.tls.is_none());
        assert!(o.hba_first.is_empty());
    }
}

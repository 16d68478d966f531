//! Recovery settings in a restored data directory: `postgresql.auto.conf`,
//! `recovery.signal`, never `recovery.conf`.

use super::target::{RecoveryAction, RecoveryTarget, RecoveryTimeline};
use crate::error::BackupError;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Every setting that names a recovery target: PostgreSQL refuses to start ("multiple
/// recovery targets specified") when more than one is set.
pub const TARGET_KEYS: &[&str] = &[
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_xid",
    "recovery_target_name",
];

/// Settings tej owns during a recovery and rewrites: the targets, how they behave,
/// `restore_command`, and `standby_mode` (PostgreSQL 11's, which 12+ refuse).
pub const MANAGED_KEYS: &[&str] = &[
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_xid",
    "recovery_target_name",
    "recovery_target_inclusive",
    "recovery_target_action",
    "recovery_target_timeline",
    "standby_mode",
];

/// Where the restored copy archives its own WAL once promoted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(tag = "mode", content = "command", rename_all = "lowercase")]
pub enum RestoredArchiving {
    /// `archive_mode = off`: the copy must not push into the original's archive (the default).
    #[default]
    Off,
    /// Leave the copied `archive_mode` and `archive_command` as they are (the copy keeps
    /// archiving where the original did: right when it replaces the original, since its
    /// new timeline's files get new names).
    Keep,
    /// `archive_mode = on` with this `archive_command` (a new repository).
    Command(String),
}

/// What to write into a restored data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// `restore_command` (`tej wal fetch --repo R %f %p`).
    pub restore_command: String,
    /// The one recovery target (none for [`RecoveryTarget::Latest`]).
    pub target: RecoveryTarget,
    /// `recovery_target_action`.
    pub action: RecoveryAction,
    /// `recovery_target_inclusive` (default true: stop *after* the target, so a time
    /// target keeps the commits made exactly at that time).
    pub inclusive: bool,
    /// `recovery_target_timeline`; `None` leaves PostgreSQL's default (`latest`).
    pub timeline: Option<RecoveryTimeline>,
    /// Archiving of the restored copy.
    pub archiving: RestoredArchiving,
    /// Other configuration files whose active recovery settings are commented out too
    /// (e.g. `/etc/postgresql/15/main/postgresql.conf` on Debian's layout, or files of an
    /// `include_dir`); `PGDATA/postgresql.conf` is always handled.
    pub other_conf_files: Vec<PathBuf>,
}

impl RecoveryConfig {
    /// Promote at the target, inclusive, PostgreSQL's timeline default, archiving off.
    pub fn new(restore_command: impl Into<String>, target: RecoveryTarget) -> RecoveryConfig {
        RecoveryConfig {
            restore_command: restore_command.into(),
            target,
            action: RecoveryAction::Promote,
            inclusive: true,
            timeline: None,
            archiving: RestoredArchiving::Off,
            other_conf_files: Vec::new(),
        }
    }

    /// The settings written, in order.
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut s = vec![("restore_command".to_string(), self.restore_command.clone())];
        if let Some((k, v)) = self.target.setting() {
            s.push((k.to_string(), v));
            s.push((
                "recovery_target_inclusive".into(),
                if self.inclusive { "on" } else { "off" }.into(),
            ));
            s.push((
                "recovery_target_action".into(),
                self.action.as_str().to_string(),
            ));
        }
        if let Some(t) = self.timeline {
            s.push(("recovery_target_timeline".into(), t.value()));
        }
        match &self.archiving {
            RestoredArchiving::Off => s.push(("archive_mode".into(), "off".into())),
            RestoredArchiving::Keep => {}
            RestoredArchiving::Command(c) => {
                s.push(("archive_mode".into(), "on".into()));
                s.push(("archive_command".into(), c.clone()));
            }
        }
        s
    }

    fn managed(&self) -> Vec<&'static str> {
        let mut keys = MANAGED_KEYS.to_vec();
        if self.archiving != RestoredArchiving::Keep {
            keys.extend(["archive_mode", "archive_command", "archive_library"]);
        }
        keys
    }
}

/// What [`configure_recovery`] changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryConfigReport {
    /// The `postgresql.auto.conf` written.
    pub auto_conf: PathBuf,
    /// Settings written, in order (passwords in URLs redacted).
    pub written: Vec<(String, String)>,
    /// Stale lines removed from `postgresql.auto.conf`.
    pub removed: Vec<String>,
    /// Lines commented out in `postgresql.conf` (and the other files), as `file: line`.
    pub commented_out: Vec<String>,
    /// Files removed or renamed (`standby.signal`, a PostgreSQL 11 `recovery.conf`).
    pub disabled_files: Vec<String>,
}

/// Quotes a value for a PostgreSQL configuration file, as `ALTER SYSTEM` does: single
/// quotes and backslashes doubled.
pub fn quote_conf_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The parameter name an active configuration line sets (lowercased), if any.
pub fn conf_line_key(line: &str) -> Option<String> {
    let t = line.trim_start();
    let end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(t.len());
    if end == 0 {
        return None;
    }
    let (key, rest) = t.split_at(end);
    let rest = rest.trim_start();
    // `key = value`, `key value`; not `include 'file'`-like directives tej does not manage.
    if rest.is_empty() || rest.starts_with('#') {
        return None;
    }
    Some(key.to_ascii_lowercase())
}

/// Rewrites the text of a `postgresql.auto.conf`: drops every line setting one of
/// `managed`, then appends `settings`. Returns the new text and the removed lines.
pub fn rewrite_auto_conf(
    text: &str,
    managed: &[&str],
    settings: &[(String, String)],
) -> (String, Vec<String>) {
    let mut kept = String::new();
    let mut removed = Vec::new();
    for line in text.lines() {
        let stale = conf_line_key(line).is_some_and(|k| managed.contains(&k.as_str()));
        if stale {
            removed.push(line.to_string());
        } else if !line.starts_with("# recovery settings written by tej") {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    if kept.is_empty() {
        kept.push_str(
            "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n",
        );
    }
    kept.push_str("# recovery settings written by tej (point-in-time recovery)\n");
    for (k, v) in settings {
        kept.push_str(&format!("{k} = {}\n", quote_conf_value(v)));
    }
    (kept, removed)
}

/// Comments out active lines setting one of `keys` (`# disabled by tej restore: ...`).
/// Returns the new text and the lines commented out.
pub fn comment_out(text: &str, keys: &[&str]) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut hits = Vec::new();
    for line in text.lines() {
        if conf_line_key(line).is_some_and(|k| keys.contains(&k.as_str())) {
            hits.push(line.to_string());
            out.push_str("# disabled by tej restore: ");
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, hits)
}

/// The owner (uid, gid) of a path.
fn owner_of(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.uid(), m.gid()))
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync directory),
/// owned by the owner of the directory it is in: the data directory belongs to the
/// server's OS user, and a root process must not leave root-owned files in it.
/// ([`tej_core::atomic_write_owned`] with the directory owner when running as root.)
pub(crate) fn write_owned(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BackupError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let owner = if nix::unistd::geteuid().is_root() {
        owner_of(dir)
    } else {
        None
    };
    tej_core::fsutil::atomic_write_owned(path, bytes, Some(mode), owner)
        .map_err(|e| BackupError::io(format!("write {}", path.display()), e))
}

fn file_mode(path: &Path, default: u32) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(default)
}

fn check_value(key: &str, v: &str) -> Result<(), BackupError> {
    if v.contains(['\n', '\r', '\0']) {
        return Err(BackupError::InvalidOptions(format!(
            "{key} cannot contain a line break or NUL"
        )));
    }
    Ok(())
}

/// Prepares a restored data directory for archive recovery:
///
/// 1. `postgresql.auto.conf`: every stale `restore_command`, `recovery_target*` and
///    `standby_mode` line is removed (and `archive_mode`/`archive_command` unless
///    archiving is [`Keep`](RestoredArchiving::Keep)), then `restore_command`, exactly one
///    target, `recovery_target_inclusive`, `recovery_target_action`, the timeline and the
///    archiving settings are appended; written atomically.
/// 2. `postgresql.conf` (and [`other_conf_files`](RecoveryConfig::other_conf_files)):
///    active `restore_command`, `recovery_target*` and `standby_mode` lines are commented
///    out, not deleted (the file is the operator's): `postgresql.auto.conf` overrides a
///    setting of the same name, but a *different* target kind left there would make
///    PostgreSQL refuse to start with "multiple recovery targets specified".
/// 3. `standby.signal` is removed (it would start a standby, not a recovery), a
///    PostgreSQL 11 `recovery.conf` is renamed to `recovery.conf.tej-disabled` (12+ refuse
///    to start with one), and an empty `recovery.signal` is created last.
///
/// Files are written owned by the owner of their directory. `recovery.conf` is never written.
pub fn configure_recovery(
    pgdata: &Path,
    cfg: &RecoveryConfig,
) -> Result<RecoveryConfigReport, BackupError> {
    if !pgdata.join("PG_VERSION").is_file() {
        return Err(BackupError::InvalidOptions(format!(
            "{} is not a PostgreSQL data directory (no PG_VERSION)",
            pgdata.display()
        )));
    }
    if cfg.restore_command.trim().is_empty() {
        return Err(BackupError::InvalidOptions(
            "restore_command cannot be empty".into(),
        ));
    }
    let settings = cfg.settings();
    for (k, v) in &settings {
        check_value(k, v)?;
    }
    let managed = cfg.managed();

    let auto = pgdata.join("postgresql.auto.conf");
    let old = match std::fs::read_to_string(&auto) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(BackupError::io(format!("read {}", auto.display()), e)),
    };
    let (new, removed) = rewrite_auto_conf(&old, &managed, &settings);
    write_owned(&auto, new.as_bytes(), file_mode(&auto, 0o600))?;

    let mut commented_out = Vec::new();
    let mut files = vec![pgdata.join("postgresql.conf")];
    files.extend(cfg.other_conf_files.iter().cloned());
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(BackupError::io(format!("read {}", file.display()), e)),
        };
        let (new, hits) = comment_out(&text, MANAGED_KEYS);
        if !hits.is_empty() {
            write_owned(&file, new.as_bytes(), file_mode(&file, 0o600))?;
            commented_out.extend(hits.into_iter().map(|h| format!("{}: {h}", file.display())));
        }
    }

    let mut disabled_files = Vec::new();
    let standby = pgdata.join("standby.signal");
    if standby.exists() {
        std::fs::remove_file(&standby)
            .map_err(|e| BackupError::io(format!("remove {}", standby.display()), e))?;
        disabled_files.push(standby.display().to_string());
    }
    let legacy = pgdata.join("recovery.conf");
    if legacy.exists() {
        let to = pgdata.join("recovery.conf.tej-disabled");
        std::fs::rename(&legacy, &to)
            .map_err(|e| BackupError::io(format!("rename {}", legacy.display()), e))?;
        disabled_files.push(format!("{} -> {}", legacy.display(), to.display()));
    }
    write_owned(&pgdata.join("recovery.signal"), b"", 0o600)?;
    tracing::info!(
        pgdata = %pgdata.display(),
        target = %cfg.target,
        action = %cfg.action,
        removed = removed.len(),
        commented_out = commented_out.len(),
        "recovery configured"
    );
    Ok(RecoveryConfigReport {
        auto_conf: auto,
        // Commands may embed URLs with passwords: reports never show them.
        written: settings
            .into_iter()
            .map(|(k, v)| {
                let v = tej_core::secret::redact_url_passwords(&v);
                (k, v)
            })
            .collect(),
        removed,
        commented_out,
        disabled_files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    #[test]
    fn quoting_matches_alter_system() {
        assert_eq!(quote_conf_value("cp /a/%f %p"), "'cp /a/%f %p'");
        assert_eq!(quote_conf_value("it's"), "'it''s'");
        assert_eq!(quote_conf_value(r"C:\x"), r"'C:\\x'");
    }

    #[test]
    fn keys_are_recognised_with_and_without_equals() {
        assert_eq!(
            conf_line_key("recovery_target_time = 'x'"),
            Some("recovery_target_time".into())
        );
        assert_eq!(
            conf_line_key("  Recovery_Target_Name 'x'"),
            Some("recovery_target_name".into())
        );
        assert_eq!(conf_line_key("#recovery_target_time = 'x'"), None);
        assert_eq!(conf_line_key(""), None);
        assert_eq!(conf_line_key("restore_command"), None);
    }

    fn pgdata(auto: &str, conf: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("PG_VERSION"), "15\n").unwrap();
        std::fs::write(d.path().join("postgresql.auto.conf"), auto).unwrap();
        std::fs::write(d.path().join("postgresql.conf"), conf).unwrap();
        d
    }

    fn active_targets(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(conf_line_key)
            .filter(|k| TARGET_KEYS.contains(&k.as_str()))
            .collect()
    }

    #[test]
    fn stale_targets_are_replaced_by_exactly_one() {
        let d = pgdata(
            "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n\
             work_mem = '64MB'\nrecovery_target_time = '2024-01-01 00:00:00+00'\n\
             recovery_target_name = 'old'\nrestore_command = 'cp /old/%f %p'\narchive_mode = 'on'\n\
             standby_mode = 'on'\n",
            "port = 5432\nrecovery_target_xid = '777'\n#recovery_target_lsn = ''\narchive_mode = on\n",
        );
        std::fs::write(d.path().join("standby.signal"), "").unwrap();
        std::fs::write(d.path().join("recovery.conf"), "standby_mode = on\n").unwrap();
        let mut cfg =
            RecoveryConfig::new("cp '/arch ive'/%f %p", RecoveryTarget::Lsn(Lsn(0x300_0028)));
        cfg.timeline = Some(RecoveryTimeline::Latest);
        let r = configure_recovery(d.path(), &cfg).unwrap();
        let auto = std::fs::read_to_string(d.path().join("postgresql.auto.conf")).unwrap();
        assert_eq!(active_targets(&auto), vec!["recovery_target_lsn"]);
        assert!(
            auto.starts_with("# Do not edit this file manually!"),
            "{auto}"
        );
        assert!(auto.contains("work_mem = '64MB'"));
        assert!(
            auto.contains("restore_command = 'cp ''/arch ive''/%f %p'\n"),
            "{auto}"
        );
        assert!(auto.contains("recovery_target_lsn = '0/3000028'\n"));
        assert!(auto.contains("recovery_target_inclusive = 'on'\n"));
        assert!(auto.contains("recovery_target_action = 'promote'\n"));
        assert!(auto.contains("recovery_target_timeline = 'latest'\n"));
        assert!(auto.contains("archive_mode = 'off'\n"));
        assert_eq!(auto.matches("restore_command").count(), 1);
        assert_eq!(auto.matches("archive_mode").count(), 1);
        assert!(!auto.contains("standby_mode"));
        assert_eq!(r.removed.len(), 5, "{:?}", r.removed);
        let conf = std::fs::read_to_string(d.path().join("postgresql.conf")).unwrap();
        assert!(active_targets(&conf).is_empty(), "{conf}");
        assert!(conf.contains("# disabled by tej restore: recovery_target_xid = '777'"));
        assert!(
            conf.contains("\narchive_mode = on\n"),
            "archive_mode left to auto.conf: {conf}"
        );
        assert_eq!(r.commented_out.len(), 1);
        assert!(d.path().join("recovery.signal").is_file());
        assert!(!d.path().join("standby.signal").exists());
        assert!(!d.path().join("recovery.conf").exists());
        assert!(d.path().join("recovery.conf.tej-disabled").exists());
        assert_eq!(r.disabled_files.len(), 2);

        // Configuring again (another target) still leaves exactly one target and one header.
        let mut again = RecoveryConfig::new("cp /a/%f %p", RecoveryTarget::Name("n1".into()));
        again.action = RecoveryAction::Pause;
        again.inclusive = false;
        again.archiving = RestoredArchiving::Command("cp %p /new/%f".into());
        configure_recovery(d.path(), &again).unwrap();
        let auto = std::fs::read_to_string(d.path().join("postgresql.auto.conf")).unwrap();
        assert_eq!(active_targets(&auto), vec!["recovery_target_name"]);
        assert_eq!(
            auto.matches("# recovery settings written by tej").count(),
            1
        );
        assert!(auto.contains("recovery_target_action = 'pause'\n"));
        assert!(auto.contains("recovery_target_inclusive = 'off'\n"));
        assert!(auto.contains("archive_mode = 'on'\narchive_command = 'cp %p /new/%f'\n"));
        assert!(!auto.contains("recovery_target_timeline"));
        // no temporary files left
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains("tej-tmp")), "{names:?}");
    }

    #[test]
    fn latest_writes_no_target_and_keep_leaves_archiving() {
        let d = pgdata(
            "archive_command = 'cp %p /x/%f'\nrecovery_target = 'immediate'\n",
            "",
        );
        let mut cfg = RecoveryConfig::new("cp /a/%f %p", RecoveryTarget::Latest);
        cfg.archiving = RestoredArchiving::Keep;
        configure_recovery(d.path(), &cfg).unwrap();
        let auto = std::fs::read_to_string(d.path().join("postgresql.auto.conf")).unwrap();
        assert!(active_targets(&auto).is_empty(), "{auto}");
        assert!(!auto.contains("recovery_target_action"));
        assert!(auto.contains("archive_command = 'cp %p /x/%f'"));
        assert!(!auto.contains("archive_mode"));
    }

    #[test]
    fn bad_inputs_are_refused_without_writing() {
        let d = pgdata("work_mem = '1MB'\n", "");
        let e = configure_recovery(
            d.path(),
            &RecoveryConfig::new("cp a\nb", RecoveryTarget::Immediate),
        )
        .unwrap_err();
        assert!(matches!(e, BackupError::InvalidOptions(_)), "{e}");
        assert!(
            configure_recovery(
                d.path(),
                &RecoveryConfig::new(" ", RecoveryTarget::Immediate)
            )
            .is_err()
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("postgresql.auto.conf")).unwrap(),
            "work_mem = '1MB'\n"
        );
        assert!(!d.path().join("recovery.signal").exists());
        let empty = tempfile::tempdir().unwrap();
        assert!(
            configure_recovery(
                empty.path(),
                &RecoveryConfig::new("x", RecoveryTarget::Immediate)
            )
            .is_err()
        );
    }
}

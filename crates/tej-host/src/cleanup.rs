//! Disk cleanup: remove files matching a pattern under a root that are older than N days
//! (the runbook's `find ... -mtime +30 -delete`), done safely.
//!
//! - Symlinks are never followed and never removed; nothing outside the root is touched
//!   (every candidate's directory is re-resolved and checked before removal).
//! - The newest `keep_newest` matches (default 1) are always kept, whatever their age, so
//!   the last backup cannot be cleaned away.
//! - "Older than N days" means strictly older: a file exactly N days old stays.

use crate::HostError;
use async_trait::async_trait;
use globset::{Glob, GlobMatcher};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tej_core::{Plan, Risk, Step, StepError, StepOutput};

/// What to clean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanupOptions {
    /// The directory searched (recursively).
    pub root: PathBuf,
    /// Glob on the file name (`*.log`, `*.sql.gz`); with a `/`, on the path below the root.
    pub pattern: String,
    /// Files strictly older than this many days are removed.
    pub older_than_days: u32,
    /// The newest matches kept whatever their age.
    pub keep_newest: usize,
    /// "Now"; `None` uses the system clock.
    pub now: Option<Timestamp>,
    /// Directories the cleanup must never reach, beyond the system directories and the data
    /// directories it recognises itself (the backup repositories of tej.toml...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected: Vec<PathBuf>,
}

impl CleanupOptions {
    /// Options with `keep_newest` 1 and the system clock.
    pub fn new(root: impl Into<PathBuf>, pattern: impl Into<String>, older_than_days: u32) -> Self {
        CleanupOptions {
            root: root.into(),
            pattern: pattern.into(),
            older_than_days,
            keep_newest: 1,
            now: None,
            protected: Vec::new(),
        }
    }
}

/// One file the cleanup would remove or keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanupFile {
    /// The file (inside the root).
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its modification time.
    pub modified: Timestamp,
    /// Its age in days.
    pub age_days: f64,
}

/// What a cleanup would do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanupPlan {
    /// The root, resolved.
    pub root: PathBuf,
    /// The pattern.
    pub pattern: String,
    /// The age limit.
    pub older_than_days: u32,
    /// Files matching the pattern (any age).
    pub matched: usize,
    /// Old files kept because they are among the newest `keep_newest` matches.
    pub kept_newest: Vec<CleanupFile>,
    /// Symlinks matching the pattern, left alone.
    pub skipped_symlinks: Vec<PathBuf>,
    /// Files to remove, oldest first.
    pub delete: Vec<CleanupFile>,
    /// Bytes freed by removing them.
    pub bytes_freed: u64,
}

/// What a cleanup did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanupReport {
    /// Files removed.
    pub removed: Vec<PathBuf>,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Files left because they changed since planning or could not be removed, with why.
    pub failed: Vec<(PathBuf, String)>,
}

fn matcher(pattern: &str) -> Result<GlobMatcher, HostError> {
    if pattern.trim().is_empty() {
        return Err(HostError::Invalid(
            "cleanup pattern must not be empty".into(),
        ));
    }
    Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| HostError::Invalid(format!("bad cleanup pattern {pattern:?}: {e}")))
}

/// Directories a cleanup root may never be: the system's own. A root below the first
/// group is refused as well (`/usr/lib`, `/etc/nginx`); the second group only as such.
const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin",
    "/sys", "/usr",
];
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/home",
    "/media",
    "/mnt",
    "/opt",
    "/root",
    "/run",
    "/srv",
    "/tmp",
    "/var",
    "/var/lib",
    "/var/cache",
    "/var/spool",
    "/var/backups",
    "/var/lib/postgresql",
    "/var/lib/docker",
    "/var/lib/redis",
];

/// Why `dir` holds data a cleanup must never touch: a PostgreSQL data directory (`PG_VERSION`
/// beside `global/`) or a tej backup repository (`backups/*/manifest.json`, a WAL archive,
/// repository locks).
fn data_directory_kind(dir: &Path) -> Option<&'static str> {
    if dir.join("PG_VERSION").is_file() && dir.join("global").is_dir() {
        return Some("PostgreSQL data directory");
    }
    if dir.join("wal/archive.json").is_file() || dir.join("locks/repo").is_dir() {
        return Some("backup repository");
    }
    let backups = dir.join("backups");
    if backups.is_dir()
        && std::fs::read_dir(&backups).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.path().join("manifest.json").is_file())
        })
    {
        return Some("backup repository");
    }
    None
}

fn refused(root: &Path, why: String) -> HostError {
    HostError::Invalid(format!(
        "cleanup of {} refused: {why}; point --root at a directory of logs or dumps",
        root.display()
    ))
}

/// Refuses roots a cleanup must never run on: system directories, directories inside a
/// PostgreSQL data directory or a backup repository, and the `protected` ones (or their
/// parents). The walk checks every directory below the root the same way.
fn check_root(root: &Path, protected: &[PathBuf]) -> Result<(), HostError> {
    if SYSTEM_DIRS.iter().any(|d| root == Path::new(d))
        || SYSTEM_TREES.iter().any(|d| root.starts_with(d))
    {
        return Err(refused(root, "it is a system directory".into()));
    }
    for a in root.ancestors() {
        if let Some(kind) = data_directory_kind(a) {
            return Err(refused(
                root,
                if a == root {
                    format!("it is a {kind}")
                } else {
                    format!("it is inside the {kind} {}", a.display())
                },
            ));
        }
    }
    for p in protected {
        let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        if root.starts_with(&p) || p.starts_with(root) {
            return Err(refused(
                root,
                format!("it overlaps the protected directory {}", p.display()),
            ));
        }
    }
    Ok(())
}

fn modified(meta: &std::fs::Metadata, path: &Path) -> Result<Timestamp, HostError> {
    let t = meta.modified().map_err(|e| HostError::io(path, e))?;
    Timestamp::try_from(t).map_err(|e| HostError::Internal(format!("{}: {e}", path.display())))
}

/// Lists what a cleanup would remove; changes nothing.
pub fn plan_cleanup(opts: &CleanupOptions) -> Result<CleanupPlan, HostError> {
    let m = matcher(&opts.pattern)?;
    let by_path = opts.pattern.contains('/');
    let root = std::fs::canonicalize(&opts.root).map_err(|e| HostError::io(&opts.root, e))?;
    let meta = std::fs::metadata(&root).map_err(|e| HostError::io(&root, e))?;
    if !meta.is_dir() {
        return Err(HostError::Invalid(format!(
            "cleanup root {} is not a directory",
            root.display()
        )));
    }
    check_root(&root, &opts.protected)?;
    let now = opts.now.unwrap_or_else(Timestamp::now);
    let limit_secs = i64::from(opts.older_than_days) * 86_400;
    let mut matches = Vec::new();
    let mut symlinks = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| HostError::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| HostError::io(&dir, e))?;
            let path = entry.path();
            // symlink_metadata: never follows a link.
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                if let Some(kind) = data_directory_kind(&path) {
                    return Err(refused(
                        &root,
                        format!("it holds the {kind} {}", path.display()),
                    ));
                }
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap_or(&path);
            let hit = if by_path {
                m.is_match(rel)
            } else {
                m.is_match(entry.file_name())
            };
            if !hit {
                continue;
            }
            if ft.is_symlink() {
                symlinks.push(path);
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            let modified = modified(&meta, &path)?;
            matches.push(CleanupFile {
                path,
                bytes: meta.len(),
                modified,
                age_days: (now.as_millisecond() - modified.as_millisecond()) as f64 / 86_400_000.0,
            });
        }
    }
    // Newest first; the first `keep_newest` stay whatever their age.
    matches.sort_by(|a, b| {
        b.modified
            .cmp(&a.modified)
            .then_with(|| a.path.cmp(&b.path))
    });
    let matched = matches.len();
    let mut kept = Vec::new();
    let mut delete = Vec::new();
    for (i, f) in matches.into_iter().enumerate() {
        let old = now.duration_since(f.modified) > jiff::SignedDuration::from_secs(limit_secs);
        if !old {
            continue;
        }
        if i < opts.keep_newest {
            kept.push(f);
        } else {
            delete.push(f);
        }
    }
    delete.reverse();
    symlinks.sort();
    let bytes_freed = delete.iter().map(|f| f.bytes).sum();
    Ok(CleanupPlan {
        root,
        pattern: opts.pattern.clone(),
        older_than_days: opts.older_than_days,
        matched,
        kept_newest: kept,
        skipped_symlinks: symlinks,
        delete,
        bytes_freed,
    })
}

/// Removes the files of `plan`, checking each again first: still a regular file (not a
/// symlink), unchanged since planning, and in a directory that still resolves inside the root.
pub fn apply_cleanup(plan: &CleanupPlan) -> CleanupReport {
    let mut report = CleanupReport {
        removed: Vec::new(),
        bytes_freed: 0,
        failed: Vec::new(),
    };
    for f in &plan.delete {
        match check_still_safe(plan, f) {
            Ok(()) => match std::fs::remove_file(&f.path) {
                Ok(()) => {
                    report.bytes_freed += f.bytes;
                    report.removed.push(f.path.clone());
                }
                Err(e) => report
                    .failed
                    .push((f.path.clone(), HostError::io(&f.path, e).to_string())),
            },
            Err(why) => report.failed.push((f.path.clone(), why)),
        }
    }
    report
}

fn check_still_safe(plan: &CleanupPlan, f: &CleanupFile) -> Result<(), String> {
    let parent = f
        .path
        .parent()
        .ok_or_else(|| "has no parent directory".to_string())?;
    let real_parent = std::fs::canonicalize(parent).map_err(|e| e.to_string())?;
    if !real_parent.starts_with(&plan.root) {
        return Err(format!(
            "its directory now resolves to {} outside {}",
            real_parent.display(),
            plan.root.display()
        ));
    }
    let meta = std::fs::symlink_metadata(&f.path).map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err("is no longer a regular file".into());
    }
    let m = modified(&meta, &f.path).map_err(|e| e.to_string())?;
    if m != f.modified || meta.len() != f.bytes {
        return Err("changed since the plan was made".into());
    }
    Ok(())
}

/// The cleanup as a destructive [`Step`]: its plan lists every file and the bytes freed.
#[derive(Debug, Clone)]
pub struct CleanupStep {
    /// What to clean.
    pub opts: CleanupOptions,
}

impl CleanupStep {
    /// A step for `opts`.
    pub fn new(opts: CleanupOptions) -> CleanupStep {
        CleanupStep { opts }
    }

    fn actions(plan: &CleanupPlan) -> Vec<String> {
        let mut a: Vec<String> = plan
            .delete
            .iter()
            .map(|f| {
                format!(
                    "delete {} ({} bytes, {:.1} days old)",
                    f.path.display(),
                    f.bytes,
                    f.age_days
                )
            })
            .collect();
        for f in &plan.kept_newest {
            a.push(format!(
                "keep {} (among the newest matches, {:.1} days old)",
                f.path.display(),
                f.age_days
            ));
        }
        for l in &plan.skipped_symlinks {
            a.push(format!("leave symlink {} alone", l.display()));
        }
        a.push(format!(
            "free {} bytes in {} file(s) of {} matching {:?} older than {} days",
            plan.bytes_freed,
            plan.delete.len(),
            plan.matched,
            plan.pattern,
            plan.older_than_days
        ));
        a
    }
}

#[async_trait]
impl Step for CleanupStep {
    fn name(&self) -> String {
        "disk-cleanup".into()
    }

    /// Destructive: files are removed for good (confirmation, the production window).
    fn risk(&self) -> Risk {
        Risk::Destructive
    }

    fn target(&self) -> String {
        format!("{}/{}", self.opts.root.display(), self.opts.pattern)
    }

    async fn plan(&self) -> Result<Plan, StepError> {
        let opts = self.opts.clone();
        let plan = tokio::task::spawn_blocking(move || plan_cleanup(&opts)).await??;
        Ok(Plan::of(self, CleanupStep::actions(&plan)))
    }

    async fn apply(&self) -> Result<StepOutput, StepError> {
        let opts = self.opts.clone();
        let (plan, report) = tokio::task::spawn_blocking(move || {
            plan_cleanup(&opts).map(|p| {
                let r = apply_cleanup(&p);
                (p, r)
            })
        })
        .await??;
        let summary = format!(
            "removed {} of {} file(s), freed {} bytes{}",
            report.removed.len(),
            plan.delete.len(),
            report.bytes_freed,
            if report.failed.is_empty() {
                String::new()
            } else {
                format!(", {} left (see data.failed)", report.failed.len())
            }
        );
        let findings = report
            .failed
            .iter()
            .map(|(p, why)| {
                tej_core::Finding::new(
                    "disk.cleanup",
                    tej_core::Severity::Warning,
                    format!("not removed: {why}"),
                )
                .target(p.display().to_string())
            })
            .collect();
        Ok(StepOutput {
            summary,
            findings,
            data: serde_json::to_value(&report)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::{Duration, SystemTime};

    const DAY: u64 = 86_400;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn file(path: &Path, bytes: usize, age: Duration) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, vec![b'x'; bytes]).unwrap();
        let f = fs::File::options().write(true).open(path).unwrap();
        f.set_modified(now() - age).unwrap();
    }

    fn opts(root: &Path, pattern: &str, days: u32) -> CleanupOptions {
        CleanupOptions {
            now: Some(Timestamp::try_from(now()).unwrap()),
            ..CleanupOptions::new(root, pattern, days)
        }
    }

    fn names(files: &[CleanupFile]) -> Vec<String> {
        files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn removes_only_old_matches_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        file(&r.join("a.sql.gz"), 10, Duration::from_secs(200 * DAY));
        file(&r.join("b.sql.gz"), 20, Duration::from_secs(100 * DAY));
        file(&r.join("c.sql.gz"), 30, Duration::from_secs(95 * DAY));
        file(&r.join("notes.txt"), 5, Duration::from_secs(300 * DAY));
        file(&r.join("sub/d.sql.gz"), 40, Duration::from_secs(10 * DAY));
        let plan = plan_cleanup(&opts(r, "*.sql.gz", 90)).unwrap();
        assert_eq!(plan.matched, 4);
        // d is recent (and newest), so it is the one kept; a,b,c all go, oldest first.
        assert_eq!(
            names(&plan.delete),
            vec!["a.sql.gz", "b.sql.gz", "c.sql.gz"]
        );
        assert_eq!(plan.bytes_freed, 60);
        let report = apply_cleanup(&plan);
        assert_eq!(report.removed.len(), 3);
        assert_eq!(report.bytes_freed, 60);
        assert!(r.join("notes.txt").exists() && r.join("sub/d.sql.gz").exists());
        assert!(!r.join("a.sql.gz").exists());
    }

    #[test]
    fn the_last_backup_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        file(&r.join("old1.sql.gz"), 1, Duration::from_secs(400 * DAY));
        file(&r.join("old2.sql.gz"), 1, Duration::from_secs(300 * DAY));
        let plan = plan_cleanup(&opts(r, "*.sql.gz", 90)).unwrap();
        assert_eq!(names(&plan.delete), vec!["old1.sql.gz"]);
        assert_eq!(names(&plan.kept_newest), vec!["old2.sql.gz"]);
        let mut o = opts(r, "*.sql.gz", 90);
        o.keep_newest = 0;
        assert_eq!(plan_cleanup(&o).unwrap().delete.len(), 2);
    }

    #[test]
    fn exact_age_boundary_is_not_older() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        file(&r.join("exact.log"), 1, Duration::from_secs(30 * DAY));
        file(&r.join("older.log"), 1, Duration::from_secs(30 * DAY + 1));
        file(&r.join("newest.log"), 1, Duration::from_secs(DAY));
        let plan = plan_cleanup(&opts(r, "*.log", 30)).unwrap();
        assert_eq!(names(&plan.delete), vec!["older.log"]);
    }

    #[test]
    fn empty_match_set_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        file(
            &dir.path().join("keep.txt"),
            1,
            Duration::from_secs(999 * DAY),
        );
        let plan = plan_cleanup(&opts(dir.path(), "*.log", 30)).unwrap();
        assert_eq!(plan.matched, 0);
        assert!(plan.delete.is_empty());
        assert_eq!(plan.bytes_freed, 0);
        let report = apply_cleanup(&plan);
        assert!(report.removed.is_empty() && report.failed.is_empty());
        assert!(dir.path().join("keep.txt").exists());
    }

    #[test]
    fn symlinks_out_of_the_root_are_never_followed_or_removed() {
        let outside = tempfile::tempdir().unwrap();
        file(
            &outside.path().join("victim.log"),
            7,
            Duration::from_secs(400 * DAY),
        );
        file(
            &outside.path().join("deep/victim2.log"),
            7,
            Duration::from_secs(400 * DAY),
        );
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        file(&r.join("own.log"), 3, Duration::from_secs(400 * DAY));
        file(&r.join("newest.log"), 3, Duration::from_secs(DAY));
        std::os::unix::fs::symlink(outside.path().join("victim.log"), r.join("link.log")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("deep"), r.join("linkdir")).unwrap();
        let plan = plan_cleanup(&opts(r, "*.log", 30)).unwrap();
        assert_eq!(names(&plan.delete), vec!["own.log"]);
        assert_eq!(plan.skipped_symlinks, vec![plan.root.join("link.log")]);
        apply_cleanup(&plan);
        assert!(outside.path().join("victim.log").exists());
        assert!(outside.path().join("deep/victim2.log").exists());
        assert!(r.join("link.log").symlink_metadata().is_ok());
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_after_planning_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        file(&r.join("sub/old.log"), 3, Duration::from_secs(400 * DAY));
        file(&r.join("newest.log"), 3, Duration::from_secs(DAY));
        let plan = plan_cleanup(&opts(r, "*.log", 30)).unwrap();
        assert_eq!(names(&plan.delete), vec!["old.log"]);
        // Swap sub/ for a link to a directory outside holding a same-named file.
        fs::rename(r.join("sub"), r.join("moved")).unwrap();
        file(
            &outside.path().join("old.log"),
            3,
            Duration::from_secs(400 * DAY),
        );
        std::os::unix::fs::symlink(outside.path(), r.join("sub")).unwrap();
        let report = apply_cleanup(&plan);
        assert!(report.removed.is_empty());
        assert_eq!(report.failed.len(), 1);
        assert!(outside.path().join("old.log").exists());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            plan_cleanup(&opts(dir.path(), "", 30)),
            Err(HostError::Invalid(_))
        ));
        assert!(matches!(
            plan_cleanup(&opts(&dir.path().join("missing"), "*.log", 30)),
            Err(HostError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn step_plan_lists_every_file_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        file(&r.join("a.log"), 11, Duration::from_secs(40 * DAY));
        file(&r.join("b.log"), 22, Duration::from_secs(50 * DAY));
        file(&r.join("c.log"), 1, Duration::from_secs(DAY));
        let step = CleanupStep::new(opts(r, "*.log", 30));
        assert_eq!(step.risk(), Risk::Destructive);
        let plan = step.plan().await.unwrap();
        assert!(plan.actions[0].contains("b.log") && plan.actions[0].contains("22 bytes"));
        assert!(plan.actions[1].contains("a.log"));
        assert!(
            plan.actions
                .last()
                .unwrap()
                .contains("free 33 bytes in 2 file(s)")
        );
        assert!(r.join("a.log").exists());
        let out = step.apply().await.unwrap();
        assert!(out.summary.contains("freed 33 bytes"), "{}", out.summary);
        assert!(!r.join("a.log").exists() && r.join("c.log").exists());
    }

    #[test]
    fn system_and_data_directories_are_refused() {
        let refused = |o: &CleanupOptions| match plan_cleanup(o) {
            Err(e) => e.to_string(),
            Ok(p) => panic!("{} was accepted: {p:?}", o.root.display()),
        };
        for root in ["/", "/etc", "/usr/lib", "/var", "/var/lib"] {
            let e = refused(&CleanupOptions::new(root, "*", 0));
            assert!(e.contains("system directory"), "{root}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        // A PostgreSQL data directory, as the root, below it, and below the root.
        let pgdata = dir.path().join("pg/15/main");
        fs::create_dir_all(pgdata.join("global")).unwrap();
        fs::create_dir_all(pgdata.join("log")).unwrap();
        fs::write(pgdata.join("PG_VERSION"), "15\n").unwrap();
        for root in [pgdata.clone(), pgdata.join("log"), dir.path().join("pg")] {
            let e = refused(&CleanupOptions::new(&root, "*", 0));
            assert!(
                e.contains("PostgreSQL data directory"),
                "{}: {e}",
                root.display()
            );
        }
        // A backup repository.
        let repo = dir.path().join("repo");
        fs::create_dir_all(repo.join("backups/20250116T020000Z-app")).unwrap();
        fs::write(
            repo.join("backups/20250116T020000Z-app/manifest.json"),
            "{}",
        )
        .unwrap();
        let e = refused(&CleanupOptions::new(&repo, "*", 0));
        assert!(e.contains("backup repository"), "{e}");
        // A protected directory, and its parent.
        let logs = dir.path().join("app/logs");
        fs::create_dir_all(&logs).unwrap();
        let mut o = CleanupOptions::new(dir.path().join("app"), "*.log", 30);
        o.protected = vec![logs.clone()];
        assert!(refused(&o).contains("protected"));
        // A plain log directory is fine.
        assert!(plan_cleanup(&CleanupOptions::new(&logs, "*.log", 30)).is_ok());
    }
}

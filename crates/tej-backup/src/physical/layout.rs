//! What a base backup copies and how it is cut into objects: the exclusion rules, the
//! scan of a data directory, the work plan, and the file list (`files.json`) stored
//! with every base backup.

use crate::error::BackupError;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// Version of the [`PhysicalFileList`] format.
pub const FILE_LIST_VERSION: u32 = 1;
/// Object name (before suffixes) of the file list.
pub const FILE_LIST_NAME: &str = "files.json";
/// Object name (before suffixes) of the `backup_label` returned by `pg_backup_stop`.
pub const BACKUP_LABEL_NAME: &str = "backup_label";
/// Object name (before suffixes) of the `tablespace_map` returned by `pg_backup_stop`.
pub const TABLESPACE_MAP_NAME: &str = "tablespace_map";
/// Prefix of objects holding (a part of) one file.
pub const DATA_PREFIX: &str = "pg_data/";
/// Prefix of objects holding a tar bundle of small files.
pub const BUNDLE_PREFIX: &str = "bundles/";
/// The control file, copied last.
pub const PG_CONTROL: &str = "global/pg_control";

/// Directories whose contents are not backed up (the directory itself is kept): WAL
/// (replayed from the archive) and runtime state PostgreSQL rebuilds at startup.
pub const EMPTY_DIRECTORIES: &[&str] = &[
    "pg_wal",
    "pg_xlog",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

/// Files at the top of the data directory that are never copied: the running server's
/// lock and options, files a backup or recovery writes itself, and temporary files.
pub const EXCLUDED_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "backup_manifest",
    "recovery.signal",
    "standby.signal",
    "current_logfiles",
    "current_logfiles.tmp",
    "postgresql.auto.conf.tmp",
];

/// What a base backup does with one entry of the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    /// Copied.
    Include,
    /// Not copied at all.
    Exclude,
    /// A directory kept (created on restore) whose contents are not copied.
    EmptyDirectory,
}

/// Classifies `rel_path` (relative to the data directory, `/`-separated), as pgBackRest
/// and `pg_basebackup` do. Unlogged relations are handled by the scan (it needs the
/// neighbouring `_init` fork).
pub fn classify(rel_path: &str, is_dir: bool) -> Exclusion {
    let name = rel_path.rsplit('/').next().unwrap_or(rel_path);
    let top = !rel_path.contains('/');
    if is_dir {
        if (top && EMPTY_DIRECTORIES.contains(&name)) || name == "pgsql_tmp" {
            return Exclusion::EmptyDirectory;
        }
        return Exclusion::Include;
    }
    if top && EXCLUDED_FILES.contains(&name) {
        return Exclusion::Exclude;
    }
    if name.starts_with("pg_internal.init") || name.starts_with("pgsql_tmp") {
        return Exclusion::Exclude;
    }
    // Temporary relations (`t3_16384`, `t3_16384_fsm`, `t3_16384.1`) in a database directory.
    if rel_path.starts_with("base/") && is_temp_relation(name) {
        return Exclusion::Exclude;
    }
    Exclusion::Include
}

fn is_temp_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let Some((backend, rel)) = rest.split_once('_') else {
        return false;
    };
    let digits = rel
        .split(['_', '.'])
        .next()
        .unwrap_or("")
        .bytes()
        .all(|b| b.is_ascii_digit());
    !backend.is_empty() && backend.bytes().all(|b| b.is_ascii_digit()) && !rel.is_empty() && digits
}

/// The relfilenode a relation file belongs to (`16384` for `16384`, `16384.2`,
/// `16384_fsm`, `16384_init`), when the name is one.
fn relfilenode(name: &str) -> Option<&str> {
    let base = name.split(['.', '_']).next()?;
    (!base.is_empty() && base.bytes().all(|b| b.is_ascii_digit())).then_some(base)
}

/// A directory of the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalDir {
    /// Relative path (`base/16384`).
    pub path: String,
    /// Permission bits.
    pub mode: u32,
}

/// Where (part of) a file's bytes are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChunk {
    /// The object (name inside the backup, with suffixes): a `pg_data/...` object holding
    /// these bytes alone, or a `bundles/...` tar in which the entry is named by the path.
    pub object: String,
    /// Offset of these bytes in the file.
    pub offset: u64,
    /// Number of bytes.
    pub size: u64,
    /// SHA-256 of these bytes, hex.
    pub sha256: String,
}

/// A regular file of the data directory as copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalFile {
    /// Relative path (`base/16384/2619`).
    pub path: String,
    /// Bytes copied (the sum of the chunks).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Its bytes: one chunk for a small file (in a bundle) or a file up to the part size,
    /// several for a large file cut into parts (each part checksummed).
    pub chunks: Vec<FileChunk>,
}

/// The file list of a base backup, stored as the `files.json` object: what to recreate
/// and where every byte is, with per-file (per-part) SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalFileList {
    /// [`FILE_LIST_VERSION`].
    pub version: u32,
    /// Directories, parents before children.
    pub directories: Vec<PhysicalDir>,
    /// Files, sorted by path.
    pub files: Vec<PhysicalFile>,
}

/// A file found by the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceFile {
    pub rel: String,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
}

/// What the scan found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub dirs: Vec<PhysicalDir>,
    pub files: Vec<SourceFile>,
    /// Entries left out that are not covered by the rules (odd symlinks, sockets).
    pub ignored: Vec<String>,
}

fn not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

/// Walks the data directory. Entries that vanish during the walk are skipped;
/// tablespaces (links in `pg_tblspc`) are refused, since they are not copied yet.
pub(crate) fn scan(root: &Path) -> Result<Scan, BackupError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut out = Scan::default();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let abs = if dir.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&dir)
        };
        let rd = match std::fs::read_dir(&abs) {
            Ok(rd) => rd,
            Err(e) if not_found(&e) && !dir.is_empty() => continue,
            Err(e) => return Err(BackupError::io(format!("read {}", abs.display()), e)),
        };
        let mut entries = Vec::new();
        for entry in rd {
            let entry = match entry {
                Ok(e) => e,
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(BackupError::io(format!("read {}", abs.display()), e)),
            };
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                out.ignored.push(format!(
                    "{}/{} (not UTF-8)",
                    dir,
                    entry.file_name().to_string_lossy()
                ));
                continue;
            };
            let meta = match entry.path().symlink_metadata() {
                Ok(m) => m,
                Err(e) if not_found(&e) => continue,
                Err(e) => {
                    return Err(BackupError::io(
                        format!("stat {}", entry.path().display()),
                        e,
                    ));
                }
            };
            entries.push((name, meta));
        }
        // Unlogged relations: only their init fork is copied (PostgreSQL rebuilds the
        // main fork from it at the end of recovery).
        let unlogged: HashSet<String> = if dir.starts_with("base/") || dir == "global" {
            entries
                .iter()
                .filter_map(|(n, _)| n.strip_suffix("_init"))
                .filter(|b| b.bytes().all(|c| c.is_ascii_digit()))
                .map(str::to_string)
                .collect()
        } else {
            HashSet::new()
        };
        for (name, meta) in entries {
            let rel = if dir.is_empty() {
                name.clone()
            } else {
                format!("{dir}/{name}")
            };
            let ft = meta.file_type();
            if ft.is_symlink() {
                if dir == "pg_tblspc" {
                    return Err(BackupError::InvalidOptions(format!(
                        "the cluster has a tablespace ({rel} -> {}); base backups of tablespaces \
                         outside the data directory are not supported yet",
                        std::fs::read_link(root.join(&rel))
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    )));
                }
                // pg_wal may be a link to another disk: its contents are skipped anyway.
                if dir.is_empty() && classify(&rel, true) == Exclusion::EmptyDirectory {
                    out.dirs.push(PhysicalDir {
                        path: rel,
                        mode: 0o700,
                    });
                } else {
                    out.ignored.push(format!("{rel} (symbolic link)"));
                }
                continue;
            }
            let mode = meta.permissions().mode() & 0o7777;
            if ft.is_dir() {
                match classify(&rel, true) {
                    Exclusion::Exclude => {}
                    Exclusion::EmptyDirectory => out.dirs.push(PhysicalDir { path: rel, mode }),
                    Exclusion::Include => {
                        out.dirs.push(PhysicalDir {
                            path: rel.clone(),
                            mode,
                        });
                        stack.push(rel);
                    }
                }
            } else if ft.is_file() {
                if classify(&rel, false) != Exclusion::Include {
                    continue;
                }
                if !name.ends_with("_init")
                    && relfilenode(&name).is_some_and(|r| unlogged.contains(r))
                {
                    continue;
                }
                out.files.push(SourceFile {
                    rel,
                    size: meta.len(),
                    mode,
                    mtime: meta.mtime(),
                });
            } else {
                out.ignored.push(format!("{rel} (not a regular file)"));
            }
        }
    }
    out.dirs.sort_by(|a, b| a.path.cmp(&b.path));
    out.files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// How the copy is cut into objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cut {
    /// Files smaller than this go into bundles.
    pub small_file: u64,
    /// A bundle is closed once it holds this many bytes.
    pub bundle_size: u64,
    /// Larger files are cut into parts of this size.
    pub part_size: u64,
}

/// One unit of work: one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WorkItem {
    /// Small files packed into one tar object.
    Bundle {
        number: usize,
        files: Vec<SourceFile>,
    },
    /// `len` bytes of `file` from `offset` (to the end of the file for the last part).
    Part {
        file: SourceFile,
        index: usize,
        parts: usize,
        offset: u64,
        len: u64,
    },
}

impl WorkItem {
    /// The object's name before the compression and encryption suffixes.
    pub fn base_name(&self) -> String {
        match self {
            WorkItem::Bundle { number, .. } => format!("{BUNDLE_PREFIX}{number:05}.tar"),
            WorkItem::Part {
                file, index, parts, ..
            } => {
                if *parts == 1 {
                    format!("{DATA_PREFIX}{}", file.rel)
                } else {
                    format!("{DATA_PREFIX}{}.part{index:04}", file.rel)
                }
            }
        }
    }
}

/// Cuts the scanned files (without the control file) into work items, the largest
/// first so the parallel workers finish together.
pub(crate) fn plan(files: &[SourceFile], cut: Cut) -> Vec<WorkItem> {
    let part = cut.part_size.max(1);
    let mut parts = Vec::new();
    let mut bundles = Vec::new();
    let mut current: Vec<SourceFile> = Vec::new();
    let mut current_bytes = 0u64;
    for f in files {
        if f.rel == PG_CONTROL {
            continue;
        }
        if f.size < cut.small_file {
            current_bytes += f.size;
            current.push(f.clone());
            if current_bytes >= cut.bundle_size {
                bundles.push(std::mem::take(&mut current));
                current_bytes = 0;
            }
            continue;
        }
        let n = f.size.div_ceil(part).max(1) as usize;
        for index in 0..n {
            parts.push(WorkItem::Part {
                file: f.clone(),
                index,
                parts: n,
                offset: index as u64 * part,
                len: part,
            });
        }
    }
    if !current.is_empty() {
        bundles.push(current);
    }
    // Largest parts first; bundles interleaved after them.
    parts.sort_by_key(|p| match p {
        WorkItem::Part {
            file, offset, len, ..
        } => std::cmp::Reverse((*len).min(file.size.saturating_sub(*offset))),
        WorkItem::Bundle { .. } => std::cmp::Reverse(0),
    });
    let mut items = parts;
    items.extend(
        bundles
            .into_iter()
            .enumerate()
            .map(|(number, files)| WorkItem::Bundle { number, files }),
    );
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusions_follow_pgbackrest() {
        use Exclusion::*;
        for (p, dir, want) in [
            ("pg_wal", true, EmptyDirectory),
            ("pg_replslot", true, EmptyDirectory),
            ("pg_stat_tmp", true, EmptyDirectory),
            ("pg_subtrans", true, EmptyDirectory),
            ("pg_notify", true, EmptyDirectory),
            ("pg_serial", true, EmptyDirectory),
            ("pg_snapshots", true, EmptyDirectory),
            ("pg_dynshmem", true, EmptyDirectory),
            ("base/pgsql_tmp", true, EmptyDirectory),
            ("base/16384", true, Include),
            ("pg_xact", true, Include),
            ("pg_stat", true, Include),
            ("global", true, Include),
            ("postmaster.pid", false, Exclude),
            ("postmaster.opts", false, Exclude),
            ("backup_label", false, Exclude),
            ("recovery.signal", false, Exclude),
            ("base/1/pg_internal.init", false, Exclude),
            ("global/pg_internal.init.123", false, Exclude),
            ("base/16384/t3_16390", false, Exclude),
            ("base/16384/t3_16390_fsm", false, Exclude),
            ("base/16384/t3_16390.1", false, Exclude),
            ("base/pgsql_tmp/pgsql_tmp123.0", false, Exclude),
            ("base/16384/16390", false, Include),
            ("base/16384/16390_vm", false, Include),
            ("global/pg_control", false, Include),
            ("PG_VERSION", false, Include),
            ("postgresql.auto.conf", false, Include),
            ("pg_xact/0000", false, Include),
            // Only at the top: a file named like an excluded one deeper is data.
            ("base/16384/postmaster.pid", false, Include),
            ("log/pg_wal", true, Include),
        ] {
            assert_eq!(classify(p, dir), want, "{p}");
        }
    }

    fn touch(root: &Path, rel: &str, size: usize) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, vec![1u8; size]).unwrap();
    }

    #[test]
    fn scan_skips_contents_keeps_directories_and_unlogged_init_forks() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(r, "PG_VERSION", 3);
        touch(r, "postmaster.pid", 10);
        touch(r, "global/pg_control", 8192);
        touch(r, "pg_wal/000000010000000000000001", 100);
        touch(r, "pg_wal/archive_status/000000010000000000000001.done", 0);
        touch(r, "pg_stat_tmp/global.stat", 10);
        touch(r, "base/5/100", 8192);
        touch(r, "base/5/100_fsm", 8192);
        touch(r, "base/5/200", 8192);
        touch(r, "base/5/200.1", 8192);
        touch(r, "base/5/200_init", 0);
        touch(r, "base/5/t2_300", 8192);
        touch(r, "base/pgsql_tmp/pgsql_tmp1.0", 10);
        std::os::unix::fs::symlink("/nowhere", r.join("odd-link")).unwrap();
        let s = scan(r).unwrap();
        let files: Vec<_> = s.files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(
            files,
            [
                "PG_VERSION",
                "base/5/100",
                "base/5/100_fsm",
                "base/5/200_init",
                "global/pg_control"
            ]
        );
        let dirs: Vec<_> = s.dirs.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            dirs,
            [
                "base",
                "base/5",
                "base/pgsql_tmp",
                "global",
                "pg_stat_tmp",
                "pg_wal"
            ]
        );
        assert_eq!(s.ignored, ["odd-link (symbolic link)"]);
    }

    #[test]
    fn tablespaces_are_refused() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "PG_VERSION", 3);
        std::fs::create_dir(d.path().join("pg_tblspc")).unwrap();
        std::os::unix::fs::symlink("/srv/ts", d.path().join("pg_tblspc/16500")).unwrap();
        let e = scan(d.path()).unwrap_err().to_string();
        assert!(e.contains("tablespace") && e.contains("16500"), "{e}");
    }

    #[test]
    fn plan_bundles_small_files_and_cuts_large_ones() {
        let f = |rel: &str, size: u64| SourceFile {
            rel: rel.into(),
            size,
            mode: 0o600,
            mtime: 0,
        };
        let files = vec![
            f("a", 10),
            f("b", 20),
            f("big", 250),
            f("c", 95),
            f("d", 5),
            f("global/pg_control", 8),
            f("mid", 100),
        ];
        let cut = Cut {
            small_file: 100,
            bundle_size: 100,
            part_size: 100,
        };
        let items = plan(&files, cut);
        let names: Vec<_> = items.iter().map(WorkItem::base_name).collect();
        assert_eq!(
            names,
            [
                "pg_data/big.part0000",
                "pg_data/big.part0001",
                "pg_data/mid",
                "pg_data/big.part0002",
                "bundles/00000.tar",
                "bundles/00001.tar",
            ]
        );
        match &items[4] {
            WorkItem::Bundle { files, .. } => {
                let n: Vec<_> = files.iter().map(|f| f.rel.as_str()).collect();
                assert_eq!(n, ["a", "b", "c"]);
            }
            other => panic!("{other:?}"),
        }
        // Every byte is covered exactly once.
        let covered: u64 = items
            .iter()
            .map(|i| match i {
                WorkItem::Part {
                    file, offset, len, ..
                } => (*len).min(file.size - offset),
                WorkItem::Bundle { files, .. } => files.iter().map(|f| f.size).sum(),
            })
            .sum();
        assert_eq!(covered, 10 + 20 + 250 + 95 + 5 + 100);
    }
}

//! The workspace's architecture rules (ARCHITECTURE.md), checked on the source tree.
//!
//! **Layering.** The crates below tej-runbook (tej-core, tej-db, tej-backup, tej-secrets,
//! tej-deploy, tej-host) depend, through `[dependencies]`, `[build-dependencies]` and
//! `[target.*.dependencies]`, on no tej crate but tej-core, except the documented edges in
//! [`ALLOWED_EDGES`]. `[dev-dependencies]` are free (tej-testkit, mocks of tej-core). tej-core
//! depends on no tej crate and on no service client nor the CLI parser ([`CORE_FORBIDDEN`]).
//!
//! **SQL lives in tej-db.** No string literal that reads as SQL ([`sql_marker`]) appears in the
//! non-test sources of the other crates (`crates/*/src/**/*.rs`) or in the library examples
//! (`examples/examples/*.rs`). Test code may keep SQL as fixtures: files under a `tests/`
//! directory, `tests.rs` files, modules declared `#[cfg(test)]` and items marked `#[cfg(test)]`
//! (brace-matched) are not read. tej-db's own sources, tej-testkit (it seeds fixture servers),
//! xtask (its demo seeds a database) and benches (log-line fixtures) are out of scope.
//! Comments are not SQL and are skipped. SQL that an operator writes in `tej.toml` (custom
//! checks, sanity queries) is configuration, not source, and never appears here.
//!
//! Each failure names `file:line` and the offending literal or dependency. A site that is
//! known and tracked is listed, with its reason, in [`KNOWN_SQL_OUTSIDE`]; an entry that no
//! longer matches fails the test too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates below tej-runbook.
const DOMAIN: &[&str] = &[
    "tej-core",
    "tej-db",
    "tej-backup",
    "tej-secrets",
    "tej-deploy",
    "tej-host",
];

/// Edges between crates below tej-runbook that ARCHITECTURE.md documents.
const ALLOWED_EDGES: &[(&str, &str)] = &[
    // Physical backups run pg_backup_start/stop on a tej-db session; logical backups and
    // restore tests take their SQL from tej-db.
    ("tej-backup", "tej-db"),
];

/// Dependencies tej-core must not have (service clients and the CLI parser); a trailing `*`
/// matches a prefix.
const CORE_FORBIDDEN: &[&str] = &[
    "tokio-postgres",
    "postgres",
    "deadpool-postgres",
    "redis",
    "bollard",
    "aws-*",
    "reqwest",
    "hyper",
    "clap",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The dependency names (package names, honouring `package = "..."` renames) of one table.
fn dep_names(table: Option<&toml::Value>) -> Vec<String> {
    let Some(toml::Value::Table(t)) = table else {
        return Vec::new();
    };
    t.iter()
        .map(|(key, v)| {
            v.get("package")
                .and_then(|p| p.as_str())
                .unwrap_or(key)
                .to_string()
        })
        .collect()
}

/// Normal and build dependencies of a manifest, including target-specific ones.
fn runtime_deps(manifest: &toml::Value) -> Vec<String> {
    let mut out = dep_names(manifest.get("dependencies"));
    out.extend(dep_names(manifest.get("build-dependencies")));
    if let Some(toml::Value::Table(targets)) = manifest.get("target") {
        for t in targets.values() {
            out.extend(dep_names(t.get("dependencies")));
            out.extend(dep_names(t.get("build-dependencies")));
        }
    }
    out
}

fn forbidden_in_core(dep: &str) -> bool {
    CORE_FORBIDDEN.iter().any(|f| match f.strip_suffix('*') {
        Some(prefix) => dep.starts_with(prefix),
        None => dep == *f,
    })
}

/// Layering violations: `crate -> dependency (rule)`.
fn layering_violations(root: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    for name in DOMAIN {
        let path = root.join("crates").join(name).join("Cargo.toml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let manifest: toml::Value =
            toml::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
        for dep in runtime_deps(&manifest) {
            let rel = format!("crates/{name}/Cargo.toml");
            if dep.starts_with("tej-") || dep == "xtask" {
                let allowed = dep == "tej-core" && *name != "tej-core"
                    || ALLOWED_EDGES.contains(&(*name, dep.as_str()));
                if !allowed {
                    bad.push(format!(
                        "{rel}: {name} depends on {dep} (crates below tej-runbook depend only on \
                         tej-core and the edges ARCHITECTURE.md documents)"
                    ));
                }
            }
            if *name == "tej-core" && forbidden_in_core(&dep) {
                bad.push(format!(
                    "{rel}: tej-core depends on {dep} (tej-core talks to no service and parses no \
                     command line)"
                ));
            }
        }
    }
    bad
}

/// A string literal of a Rust source file, with the line it starts on.
#[derive(Debug, PartialEq)]
struct Literal {
    line: usize,
    text: String,
}

/// What a scan of one file found: its string literals outside test code, and the child
/// modules declared `#[cfg(test)] mod name;`.
#[derive(Debug, Default, PartialEq)]
struct Scan {
    literals: Vec<Literal>,
    test_modules: Vec<String>,
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Scans Rust source: skips comments, reads string literals (plain, raw, byte, C), and leaves
/// out items marked `#[cfg(test)]` (up to their `;` or their matching `}`).
fn scan(src: &str) -> Scan {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Scan::default();
    let mut i = 0;
    let mut line = 1;
    // After `#[cfg(test)]`: the depth at which the marked item starts, until it ends.
    let mut pending_test = false;
    let mut pending_text = String::new();
    let mut depth = 0usize;
    let mut skip_until_depth: Option<usize> = None;
    let at = |j: usize| chars.get(j).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        let skipping = skip_until_depth.is_some();
        // Comments.
        if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && at(i + 1) == '*' {
            let mut nest = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    nest += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    nest -= 1;
                    i += 2;
                    if nest == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
            continue;
        }
        // Raw strings: r"..", r#".."#, br"..", cr"..".
        let prev_ident = i > 0 && is_ident(chars[i - 1]);
        let raw_start = if !prev_ident && c == 'r' {
            Some(i + 1)
        } else if !prev_ident && (c == 'b' || c == 'c') && at(i + 1) == 'r' {
            Some(i + 2)
        } else {
            None
        };
        if let Some(mut j) = raw_start {
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            if at(j) == '"' {
                let start_line = line;
                j += 1;
                let mut text = String::new();
                loop {
                    if j >= chars.len() {
                        break;
                    }
                    if chars[j] == '"' && (0..hashes).all(|k| at(j + 1 + k) == '#') {
                        j += 1 + hashes;
                        break;
                    }
                    if chars[j] == '\n' {
                        line += 1;
                    }
                    text.push(chars[j]);
                    j += 1;
                }
                if !skipping {
                    out.literals.push(Literal {
                        line: start_line,
                        text,
                    });
                }
                i = j;
                continue;
            }
        }
        // Plain, byte and C strings.
        let plain = c == '"' || (!prev_ident && (c == 'b' || c == 'c') && at(i + 1) == '"');
        if plain {
            let start_line = line;
            let mut j = if c == '"' { i + 1 } else { i + 2 };
            let mut text = String::new();
            while j < chars.len() && chars[j] != '"' {
                if chars[j] == '\\' {
                    // Keep escapes readable; a line continuation joins lines.
                    let n = at(j + 1);
                    match n {
                        'n' => text.push('\n'),
                        't' => text.push('\t'),
                        '\n' => {
                            line += 1;
                            j += 2;
                            while j < chars.len() && chars[j].is_whitespace() {
                                if chars[j] == '\n' {
                                    line += 1;
                                }
                                j += 1;
                            }
                            continue;
                        }
                        other => text.push(other),
                    }
                    j += 2;
                    continue;
                }
                if chars[j] == '\n' {
                    line += 1;
                }
                text.push(chars[j]);
                j += 1;
            }
            if !skipping {
                out.literals.push(Literal {
                    line: start_line,
                    text,
                });
            }
            i = j + 1;
            continue;
        }
        // Char literals ('x', '\n', '"') versus lifetimes ('a).
        if c == '\'' {
            if at(i + 1) == '\\' {
                let mut j = i + 2;
                while j < chars.len() && chars[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                continue;
            }
            if at(i + 2) == '\'' {
                i += 3;
                continue;
            }
            i += 1;
            continue;
        }
        // Attributes: `#[cfg(test)]` marks the next item.
        if c == '#' && at(i + 1) == '[' {
            let mut j = i + 2;
            let mut attr = String::new();
            let mut nest = 1;
            while j < chars.len() {
                match chars[j] {
                    '[' => nest += 1,
                    ']' => {
                        nest -= 1;
                        if nest == 0 {
                            break;
                        }
                    }
                    '\n' => line += 1,
                    _ => {}
                }
                attr.push(chars[j]);
                j += 1;
            }
            let attr: String = attr.chars().filter(|c| !c.is_whitespace()).collect();
            if attr == "cfg(test)" && !skipping {
                pending_test = true;
                pending_text.clear();
            }
            i = j + 1;
            continue;
        }
        match c {
            '\n' => line += 1,
            '{' => {
                if pending_test {
                    pending_test = false;
                    skip_until_depth = Some(depth);
                }
                depth += 1;
            }
            '}' => {
                depth = depth.saturating_sub(1);
                if skip_until_depth == Some(depth) {
                    skip_until_depth = None;
                }
            }
            ';' if pending_test => {
                pending_test = false;
                let words: Vec<&str> = pending_text.split_whitespace().collect();
                if let Some(pos) = words.iter().position(|w| *w == "mod")
                    && let Some(name) = words.get(pos + 1)
                {
                    out.test_modules.push(name.to_string());
                }
            }
            _ => {}
        }
        if pending_test {
            pending_text.push(c);
        }
        i += 1;
    }
    out
}

/// Why `text` reads as SQL (the marker found), or `None`. Case-sensitive, as SQL is written
/// in this code base; tuned to pass English messages that name a statement ("VACUUM FULL
/// needs...", "the ALTER SYSTEM command").
fn sql_marker(text: &str) -> Option<&'static str> {
    const ANYWHERE: &[&str] = &[
        "INSERT INTO ",
        "DELETE FROM ",
        "ALTER SYSTEM SET",
        "ALTER SYSTEM RESET",
        "ALTER TABLE ",
        "ALTER ROLE ",
        "ALTER DATABASE ",
        "CREATE TABLE ",
        "CREATE SCHEMA ",
        "CREATE INDEX ",
        "CREATE UNIQUE INDEX ",
        "CREATE DATABASE ",
        "CREATE EXTENSION ",
        "CREATE ROLE ",
        "DROP DATABASE ",
        "DROP TABLE ",
        "DROP INDEX ",
        "DROP SCHEMA ",
        "DROP EXTENSION ",
        "REINDEX INDEX ",
        "REINDEX TABLE ",
        "VACUUM (",
        "VACUUM ANALYZE",
        "COMMENT ON ",
        "TRUNCATE TABLE ",
        "current_setting(",
    ];
    if let Some(m) = ANYWHERE.iter().find(|m| text.contains(**m)) {
        return Some(m);
    }
    if let Some(pos) = text.find("SELECT ")
        && text[pos..].contains(" FROM ")
    {
        return Some("SELECT ... FROM");
    }
    let t = text.trim_start();
    // A whole statement: `SELECT 1`, `SHOW server_version`, `UPDATE "t" SET ...`.
    for kw in [
        "SELECT ", "SHOW ", "SET ", "ANALYZE ", "VACUUM ", "REINDEX ", "UPDATE ",
    ] {
        if let Some(rest) = t.strip_prefix(kw) {
            let statement_like = !rest.contains(": ")
                && !rest.ends_with('.')
                && (rest.split_whitespace().count() == 1
                    || rest.contains(" SET ")
                    || rest.contains('$')
                    || rest.contains("::"));
            if statement_like {
                return Some(kw.trim_end());
            }
        }
    }
    // A PostgreSQL function call: `pg_switch_wal()`, `pg_backup_start($1, true)`.
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(p) = text[from..].find("pg_") {
        let start = from + p;
        let before_ok = start == 0 || !is_ident(b[start - 1] as char);
        let mut end = start + 3;
        while end < b.len() && is_ident(b[end] as char) {
            end += 1;
        }
        if before_ok && end < b.len() && b[end] == b'(' && text[end..].contains(')') {
            return Some("pg_*( function call");
        }
        from = start + 3;
    }
    None
}

/// SQL outside tej-db that is known and tracked, as (file, exact literal, why): each entry
/// must still match (a stale entry fails the test), so the list only shrinks.
const KNOWN_SQL_OUTSIDE: &[(&str, &str, &str)] = &[];

/// The `.rs` files under `dir`, recursively, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Where the child module `name` of `file` lives.
fn child_module_paths(file: &Path, name: &str) -> Vec<PathBuf> {
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let dir = file.parent().unwrap_or(Path::new("."));
    let base = if matches!(stem, "mod" | "lib" | "main") {
        dir.to_path_buf()
    } else {
        dir.join(stem)
    };
    vec![
        base.join(format!("{name}.rs")),
        base.join(name).join("mod.rs"),
    ]
}

/// SQL found outside tej-db: `path:line: literal (marker)`.
fn sql_violations(root: &Path) -> Vec<String> {
    let skip_crates = ["tej-db", "tej-testkit"];
    let mut dirs = Vec::new();
    for e in std::fs::read_dir(root.join("crates"))
        .expect("crates/")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if !skip_crates.contains(&name.as_str()) {
            dirs.push(e.path().join("src"));
        }
    }
    dirs.push(root.join("examples/examples"));
    dirs.sort();
    let mut files: Vec<PathBuf> = dirs.iter().flat_map(|d| rust_files(d)).collect();
    files.sort();
    let scans: Vec<(PathBuf, String, Scan)> = files
        .iter()
        .map(|f| {
            let src =
                std::fs::read_to_string(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
            let s = scan(&src);
            (f.clone(), src, s)
        })
        .collect();
    let is_test_path = |f: &Path| {
        let rel = f.strip_prefix(root).unwrap_or(f);
        f.file_name().is_some_and(|n| n == "tests.rs")
            || rel.components().any(|c| c.as_os_str() == "tests")
    };
    // Files of test modules: declared `#[cfg(test)] mod x;`, or declared by a test module;
    // to a fixed point, whatever order the files come in.
    let mut excluded: BTreeSet<PathBuf> = BTreeSet::new();
    loop {
        let before = excluded.len();
        for (f, src, s) in &scans {
            let test_file = excluded.contains(f) || is_test_path(f);
            let mut children = s.test_modules.clone();
            if test_file {
                children.extend(declared_modules(src));
            }
            for m in &children {
                excluded.extend(child_module_paths(f, m));
            }
        }
        if excluded.len() == before {
            break;
        }
    }
    let mut bad = BTreeMap::new();
    let mut seen_known = BTreeSet::new();
    for (f, _, s) in scans {
        if excluded.contains(&f) || is_test_path(&f) {
            continue;
        }
        let rel = f.strip_prefix(root).unwrap_or(&f).to_path_buf();
        for lit in s.literals {
            let rel_text = rel.to_string_lossy().replace('\\', "/");
            if let Some(known) = KNOWN_SQL_OUTSIDE
                .iter()
                .find(|(file, text, _)| *file == rel_text && *text == lit.text)
            {
                seen_known.insert(*known);
                continue;
            }
            if let Some(marker) = sql_marker(&lit.text) {
                let shown: String = lit.text.chars().take(90).collect();
                bad.insert(
                    (rel.clone(), lit.line),
                    format!("{}:{}: {shown:?} ({marker})", rel.display(), lit.line),
                );
            }
        }
    }
    let mut out: Vec<String> = bad.into_values().collect();
    for known in KNOWN_SQL_OUTSIDE {
        if !seen_known.contains(known) {
            out.push(format!(
                "{}: {:?} is listed in KNOWN_SQL_OUTSIDE but no longer there: remove the entry",
                known.0, known.1
            ));
        }
    }
    out
}

/// Every `mod name;` of a file (for the children of test modules).
fn declared_modules(src: &str) -> Vec<String> {
    src.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let name = l.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_string())
        })
        .collect()
}

#[test]
fn crates_below_the_runbook_depend_only_on_tej_core() {
    let bad = layering_violations(&workspace_root());
    assert!(
        bad.is_empty(),
        "layering violations ({}):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn sql_lives_in_tej_db_only() {
    let bad = sql_violations(&workspace_root());
    assert!(
        bad.is_empty(),
        "SQL outside crates/tej-db/src ({} literals):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn the_detector_tells_sql_from_messages() {
    for sql in [
        "SELECT 1",
        "SHOW server_version",
        "SELECT count(*) FROM users",
        "SELECT pg_walfile_name(pg_switch_wal())",
        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()",
        "INSERT INTO tej.measurements (metric) VALUES ($1)",
        "DROP DATABASE IF EXISTS \"x\" WITH (FORCE)",
        "CREATE DATABASE \"x\"",
        "ALTER SYSTEM SET archive_command = 'x'",
        "UPDATE \"users\" SET \"a\" = true",
        "VACUUM (ANALYZE) t",
        "pg_backup_start($1, true)",
    ] {
        assert!(sql_marker(sql).is_some(), "missed {sql:?}");
    }
    for message in [
        "VACUUM FULL needs the tables to rewrite: pass --table NAME (repeatable)",
        "# It will be overwritten by the ALTER SYSTEM command.",
        "cannot read pg_stat_archiver: timeout",
        "PostgreSQL 14 is too old: base backups need 15 or later (pg_backup_start)",
        "nothing: no sanity_queries configured for this database (SELECT 1 only)",
        "read pg_stat_statements",
        "SELECT privilege on the table",
        "pg_sleep(",
    ] {
        assert_eq!(sql_marker(message), None, "flagged {message:?}");
    }
}

#[test]
fn the_scanner_skips_comments_and_test_code() {
    let src = r####"
// "SELECT 1 FROM x" in a comment
/* "SELECT 2 FROM y" /* nested */ */
fn f() -> &'static str { let c = '"'; let _l: &'static str = "real"; "SELECT a FROM b" }
const R: &str = r#"raw "quoted" SELECT c FROM d"#;
#[cfg(test)]
mod tests { fn g() { let _ = "SELECT e FROM f"; { } } }
#[cfg(test)]
mod more;
fn h() { let _ = "after\
    continued"; }
"####;
    let s = scan(src);
    let texts: Vec<(usize, &str)> = s
        .literals
        .iter()
        .map(|l| (l.line, l.text.as_str()))
        .collect();
    assert_eq!(
        texts,
        [
            (4, "real"),
            (4, "SELECT a FROM b"),
            (5, "raw \"quoted\" SELECT c FROM d"),
            (10, "aftercontinued"),
        ]
    );
    assert_eq!(s.test_modules, ["more"]);
}

#[test]
fn the_layering_rule_sees_renamed_and_target_dependencies() {
    let m: toml::Value = toml::from_str(
        "[dependencies]\npg = { package = \"tokio-postgres\", version = \"1\" }\n\
         [target.'cfg(unix)'.dependencies]\naws-sdk-s3 = \"1\"\n\
         [dev-dependencies]\nclap = \"4\"\n",
    )
    .unwrap();
    let deps = runtime_deps(&m);
    assert_eq!(deps, ["tokio-postgres", "aws-sdk-s3"]);
    assert!(deps.iter().all(|d| forbidden_in_core(d)));
    assert!(!forbidden_in_core("tokio"));
}

/// The namespaces tej-backup keeps public: none, every item is at the crate root
/// (see the crate documentation, "One path per item").
const TEJ_BACKUP_PUBLIC_MODULES: &[&str] = &[];

/// Every `pub mod name` (declared or inline) of a file, comments skipped.
fn public_modules(src: &str) -> Vec<String> {
    src.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("pub mod ")?;
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            Some(name)
        })
        .collect()
}

#[test]
fn tej_backup_has_one_public_path_per_item() {
    let lib = workspace_root().join("crates/tej-backup/src/lib.rs");
    let src =
        std::fs::read_to_string(&lib).unwrap_or_else(|e| panic!("read {}: {e}", lib.display()));
    let extra: Vec<String> = public_modules(&src)
        .into_iter()
        .filter(|m| !TEJ_BACKUP_PUBLIC_MODULES.contains(&m.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "{} declares public modules {extra:?}: make them private and export their items once at the crate root",
        lib.display()
    );
}

#[test]
fn public_modules_are_found_and_private_ones_are_not() {
    let src = "mod a;\npub mod b;\n  pub mod c {\n}\npub(crate) mod d;\n// pub mod e;\n";
    assert_eq!(public_modules(src), ["b", "c"]);
}

/// The library crates: the domain crates and tej-runbook.
fn library_crates() -> impl Iterator<Item = &'static str> {
    DOMAIN.iter().copied().chain(["tej-runbook"])
}

/// The public error enums (`pub enum NameError`) each library crate declares outside test
/// code, as `crate: [names]`.
fn error_enums(root: &Path) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for krate in library_crates() {
        let mut names = Vec::new();
        for file in rust_files(&root.join("crates").join(krate).join("src")) {
            let src = std::fs::read_to_string(&file).unwrap();
            // Test modules are cut off where `#[cfg(test)]` starts a module.
            let code = src.split("#[cfg(test)]\nmod ").next().unwrap_or(&src);
            for line in code.lines() {
                let Some(rest) = line.trim_start().strip_prefix("pub enum ") else {
                    continue;
                };
                let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
                if name.ends_with("Error") {
                    names.push(name);
                }
            }
        }
        out.push((krate.to_string(), names));
    }
    out
}

#[test]
fn each_library_crate_has_one_error_enum() {
    let found = error_enums(&workspace_root());
    let bad: Vec<String> = found
        .iter()
        .filter(|(_, names)| names.len() != 1)
        .map(|(krate, names)| format!("{krate}: {names:?}"))
        .collect();
    assert!(
        bad.is_empty(),
        "crates without exactly one error enum:\n{}",
        bad.join("\n")
    );
}

/// The package names in the workspace's Cargo.lock.
fn locked_packages(root: &Path) -> Vec<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
    let lock: toml::Value = toml::from_str(&lock).unwrap();
    lock.get("package")
        .and_then(|p| p.as_array())
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.get("name").and_then(|n| n.as_str()).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// One rustls crypto provider (ring) for the whole workspace, so no library has to install a
/// process-wide default behind its caller's back, and no unmaintained PEM parser
/// (RUSTSEC-2025-0134: rustls-pemfile; rustls-pki-types parses PEM).
#[test]
fn one_crypto_provider_and_no_unmaintained_pem_parser() {
    let packages = locked_packages(&workspace_root());
    assert!(packages.iter().any(|p| p == "ring"), "ring is not locked");
    for banned in [
        "aws-lc-rs",
        "aws-lc-sys",
        "aws-lc-fips-sys",
        "rustls-pemfile",
    ] {
        assert!(
            !packages.iter().any(|p| p == banned),
            "{banned} is in Cargo.lock"
        );
    }
    let installs: Vec<String> = library_crates()
        .flat_map(|k| rust_files(&workspace_root().join("crates").join(k).join("src")))
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .contains(&["install", "_default()"].concat())
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        installs.is_empty(),
        "libraries installing a process-wide crypto provider: {installs:?}"
    );
}

/// The member manifests (crates/*, xtask, examples, benches).
fn member_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .chain(["xtask", "examples", "benches"].map(|d| root.join(d)))
        .filter(|d| d.join("Cargo.toml").exists())
        .collect();
    dirs.sort();
    dirs
}

/// Every shared dependency is used by a member, and every member's dependency is named in
/// that member's Rust sources (a dependency nobody uses only costs build time).
#[test]
fn no_unused_dependencies() {
    let root = workspace_root();
    let workspace: toml::Value =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let shared: BTreeSet<String> = workspace["workspace"]["dependencies"]
        .as_table()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut used = BTreeSet::new();
    let mut unused_in_member = Vec::new();
    for dir in member_dirs(&root) {
        let manifest: toml::Value =
            toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap();
        let sources: String = rust_files(&dir)
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(table) = manifest.get(section).and_then(|t| t.as_table()) else {
                continue;
            };
            for key in table.keys() {
                used.insert(key.clone());
                let ident = key.replace('-', "_");
                let named = sources.match_indices(&ident).any(|(i, _)| {
                    let before = sources[..i].chars().next_back();
                    let after = sources[i + ident.len()..].chars().next();
                    !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
                });
                if !named {
                    unused_in_member.push(format!("{}: [{section}] {key}", dir.display()));
                }
            }
        }
    }
    let unused_shared: Vec<&String> = shared.iter().filter(|d| !used.contains(*d)).collect();
    assert!(
        unused_shared.is_empty() && unused_in_member.is_empty(),
        "unused [workspace.dependencies]: {unused_shared:?}\nunused member dependencies:\n{}",
        unused_in_member.join("\n")
    );
}

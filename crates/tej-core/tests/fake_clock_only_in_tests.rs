//! `FakeClock` is for tests: no library or program of the workspace reads "now" from it
//! (a run evaluated as of one instant uses `AsOf`, everything else the clock it is given).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            // Tests and benchmark targets (`benches/` of a package) may pin the clock.
            if p.file_name()
                .is_some_and(|n| n == "tests" || n == "target" || n == "benches")
            {
                continue;
            }
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The part of a source file that is not test code: everything before its first
/// `#[cfg(test)]`; nothing for files that are tests themselves.
fn non_test_part(path: &Path, text: &str) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if name == "tests.rs" || name.ends_with("_tests.rs") {
        return String::new();
    }
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_string(),
        None => text.to_string(),
    }
}

#[test]
fn fake_clock_appears_only_in_test_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for d in ["crates", "examples", "benches", "xtask"] {
        rust_files(&root.join(d), &mut files);
    }
    assert!(
        files.len() > 50,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    let defined_in = [
        root.join("crates/tej-core/src/clock.rs"),
        root.join("crates/tej-core/src/lib.rs"),
    ];
    let mut offenders = Vec::new();
    for f in &files {
        if defined_in.iter().any(|d| d == f)
            || f.components().any(|c| c.as_os_str() == "tej-testkit")
        {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for (i, line) in non_test_part(f, &text).lines().enumerate() {
            if line.contains("FakeClock") && !line.trim_start().starts_with("//") {
                offenders.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "FakeClock in non-test code:\n{}",
        offenders.join("\n")
    );
}

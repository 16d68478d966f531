//! The repository contract of `tej wal push|fetch|list|verify` through the binary, without
//! a server: a missing, empty (uninitialised) or unmounted repository is an outage, never
//! "not archived" (fetch exits 255, push non-zero) and nothing is ever created; a usage
//! error in `wal fetch` is fatal too (255, never clap's 2); a stray non-ASCII object name
//! under `wal/` is skipped by `wal list` and `wal verify` instead of crashing them.

use std::path::Path;
use std::process::Command;

const TEJ: &str = env!("CARGO_BIN_EXE_tej");
const SEG: &str = "000000010000000000000003";

/// Runs `tej` in `dir` with no configuration: (exit code, stdout, stderr).
fn tej_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(TEJ)
        .args(args)
        .current_dir(dir)
        .env_remove("TEJ_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run tej");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The archive marker `tej wal init` and `tej backup create --physical` write.
fn initialise(repo: &Path) {
    std::fs::create_dir_all(repo.join("wal")).unwrap();
    std::fs::write(
        repo.join("wal/archive.json"),
        r#"{"version":1,"system_identifier":7713479375855153938,"wal_segment_size":16777216,"created_at":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn wal_fetch_from_a_missing_or_uninitialised_repository_is_fatal_and_creates_nothing() {
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("dest");
    let dest_s = dest.display().to_string();

    // Missing (an unmounted volume's mount point that is gone), absolute and relative.
    let missing = work.path().join("mnt/backups");
    for spec in [missing.display().to_string(), "mnt/backups".to_string()] {
        let (code, _, err) = tej_in(
            work.path(),
            &["wal", "fetch", "--repo", &spec, SEG, &dest_s],
        );
        assert_eq!(code, 255, "fetch from missing {spec}: {err}");
        assert!(!missing.exists(), "fetch created {}", missing.display());
        assert!(!work.path().join("mnt").exists(), "fetch created mnt/");
        assert!(!dest.exists(), "fetch wrote {}", dest.display());
        assert!(
            err.contains("mnt/backups"),
            "the error names the repository: {err}"
        );
    }

    // Empty: an unmounted mount point, or a directory nothing was ever initialised in.
    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let empty_s = empty.display().to_string();
    let (code, _, err) = tej_in(
        work.path(),
        &["wal", "fetch", "--repo", &empty_s, SEG, &dest_s],
    );
    assert_eq!(code, 255, "fetch from an empty repository: {err}");
    assert_eq!(entries(&empty), 0, "fetch wrote into the empty repository");
    assert!(!dest.exists());
    assert!(
        err.contains("archive.json") || err.contains("initialised"),
        "{err}"
    );

    // Initialised: a file it does not hold is "not archived" (1), nothing written.
    let repo = work.path().join("repo");
    initialise(&repo);
    let repo_s = repo.display().to_string();
    let (code, _, err) = tej_in(
        work.path(),
        &["wal", "fetch", "--repo", &repo_s, SEG, &dest_s],
    );
    assert_eq!(code, 1, "a file the initialised archive lacks: {err}");
    assert!(!dest.exists());
}

#[test]
fn wal_push_to_a_missing_or_uninitialised_repository_fails_and_creates_nothing() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join(SEG);
    std::fs::write(&file, vec![0u8; 64]).unwrap();
    let file_s = file.display().to_string();

    let missing = work.path().join("mnt/backups");
    let missing_s = missing.display().to_string();
    let (code, _, err) = tej_in(work.path(), &["wal", "push", "--repo", &missing_s, &file_s]);
    assert_ne!(code, 0, "push to a missing repository succeeded: {err}");
    assert!(
        !work.path().join("mnt").exists(),
        "push created the repository"
    );

    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let empty_s = empty.display().to_string();
    let (code, _, err) = tej_in(work.path(), &["wal", "push", "--repo", &empty_s, &file_s]);
    assert_ne!(
        code, 0,
        "push to an uninitialised repository succeeded: {err}"
    );
    assert_eq!(
        entries(&empty),
        0,
        "push wrote into the uninitialised repository"
    );
    assert!(
        err.contains("wal init"),
        "the error says how to initialise: {err}"
    );
}

#[test]
fn wal_fetch_usage_errors_exit_255() {
    let work = tempfile::tempdir().unwrap();
    for args in [
        &["wal", "fetch"][..],
        &["wal", "fetch", SEG][..],
        &["wal", "fetch", "--no-such-flag", SEG, "x"][..],
        &["wal", "fetch", "--repo", "/r", SEG, "x", "extra"][..],
        &[
            "--output", "nonsense", "wal", "fetch", "--repo", "/r", SEG, "x",
        ][..],
    ] {
        let (code, _, err) = tej_in(work.path(), args);
        assert_eq!(code, 255, "tej {}: {err}", args.join(" "));
    }
    // Help is not a failure.
    let (code, out, _) = tej_in(work.path(), &["wal", "fetch", "--help"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_stray_non_ascii_object_name_does_not_break_wal_list_or_verify() {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    initialise(&repo);
    let tli = repo.join("wal/00000001");
    std::fs::create_dir_all(&tli).unwrap();
    // 24 bytes, "é" across the timeline/log boundary; and another stray one.
    std::fs::write(tli.join("0000000é000000000000000.tejwal"), b"junk").unwrap();
    std::fs::write(tli.join("00000001000000000000000é.tejwal"), b"junk").unwrap();
    std::fs::write(repo.join("wal/ünïcode.tejwal"), b"junk").unwrap();
    let repo_s = repo.display().to_string();

    let (code, out, err) = tej_in(work.path(), &["wal", "list", "--repo", &repo_s]);
    assert_eq!(code, 0, "wal list: {out}{err}");
    assert!(out.contains("NAME"), "{out}");
    let (code, out, err) = tej_in(work.path(), &["wal", "verify", "--repo", &repo_s]);
    assert!(
        code == 0 || code == 2,
        "wal verify exited {code}: {out}{err}"
    );
    assert!(out.contains("PITR window"), "{out}");
    let (code, _, err) = tej_in(
        work.path(),
        &[
            "wal",
            "fetch",
            "--repo",
            &repo_s,
            "0000000é000000000000000",
            "x",
        ],
    );
    assert_eq!(code, 255, "fetch of a non-ASCII name: {err}");
}

//! A fresh install cannot look all green: each section of the runbook's daily check that
//! tej.toml does not configure is listed, all in one UNKNOWN finding.

use tej_core::{Config, Severity, SystemClock};
use tej_runbook::{RunContext, RunOptions, daily_health};

fn coverage(toml: &str) -> Vec<tej_core::Finding> {
    let cfg = Config::from_toml_with_env(toml, "tej.toml", &|_| None).unwrap();
    let opts = RunOptions {
        check_timeout: std::time::Duration::from_secs(10),
        ..RunOptions::default()
    };
    let ctx = RunContext::from_config(&cfg, opts).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(daily_health(&ctx, &SystemClock));
    r.findings
        .into_iter()
        .filter(|f| f.summary.starts_with("not configured"))
        .collect()
}

#[test]
fn unconfigured_sections_are_one_unknown_finding() {
    let dir = tempfile::tempdir().unwrap();
    let dead = tej_testkit::free_port();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let everything_but_redis = format!(
        r#"
[[database]]
name = "app"
url = "postgres://tej@127.0.0.1:{dead}/app"

[backup]
repositories = ["{}"]

[[tls]]
endpoint = "127.0.0.1:{dead}"

[logs]
paths = ["{}"]

[compose]
project = "shop"
docker_host = "tcp://127.0.0.1:{dead}"
"#,
        dir.path().join("repo").display(),
        logs.display()
    );
    let f = coverage(&everything_but_redis);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].severity, Severity::Unknown);
    assert_eq!(f[0].summary, "not configured: Redis");

    // Nothing configured: every section, once.
    let f = coverage("");
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].severity, Severity::Unknown);
    for section in [
        "Compose services",
        "application logs",
        "PostgreSQL",
        "Redis",
        "backups",
        "TLS certificates",
    ] {
        assert!(
            f[0].summary.contains(section),
            "{section}: {}",
            f[0].summary
        );
    }
}

//! The committed Kubernetes manifests under `deploy/kubernetes/`: parsed as YAML and checked
//! against the calendar, the emitter and each other, so they cannot drift or leak a secret.

use jiff::civil::{Date, Time, Weekday};
use jiff::{Timestamp, ToSpan};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use tej_core::{Calendar, Recurrence};
use tej_runbook::{KubernetesOptions, emit_kubernetes};
use yaml_rust2::{Yaml, YamlLoader};

fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn read(name: &str) -> String {
    let p = manifests_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn docs(name: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(name))
        .unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn s<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {y:?}"))
}

fn calendar() -> Calendar {
    Calendar::runbook_in("Asia/Kolkata").unwrap()
}

fn cronjobs() -> Vec<Yaml> {
    docs("cronjobs.yaml")
}

#[test]
fn committed_cronjobs_equal_the_emitter_output() {
    let now = emit_kubernetes(&calendar(), &KubernetesOptions::default()).unwrap();
    assert!(
        read("cronjobs.yaml") == now,
        "deploy/kubernetes/cronjobs.yaml is stale: regenerate it with \
         `tej schedule --emit kubernetes --dir deploy/kubernetes`"
    );
}

/// Which of the five cron fields' values match (`*` or a comma list of numbers).
fn field_has(field: &str, v: i64) -> bool {
    field == "*" || field.split(',').any(|p| p.parse::<i64>() == Ok(v))
}

/// Days of 2025–2026 on which `schedule` fires at `at` (Vixie semantics; we never restrict
/// both day fields, which the first assertion of the caller checks).
fn firing_days(schedule: &str, at: Time) -> BTreeSet<Date> {
    let f: Vec<&str> = schedule.split(' ').collect();
    assert_eq!(f.len(), 5, "{schedule}");
    assert!(
        f[2] == "*" || f[4] == "*",
        "{schedule}: day-of-month and day-of-week both restricted are OR-ed by cron"
    );
    assert!(field_has(f[0], i64::from(at.minute())) && f[0] != "*");
    assert!(field_has(f[1], i64::from(at.hour())) && f[1] != "*");
    let mut out = BTreeSet::new();
    let mut d = Date::constant(2025, 1, 1);
    while d.year() < 2027 {
        let dow = i64::from(d.weekday().to_sunday_zero_offset());
        if field_has(f[2], i64::from(d.day()))
            && field_has(f[3], i64::from(d.month()))
            && (field_has(f[4], dow) || (dow == 0 && field_has(f[4], 7)))
        {
            out.insert(d);
        }
        d = d.checked_add(1.day()).unwrap();
    }
    out
}

fn occurrence_days(cal: &Calendar, r: &Recurrence) -> BTreeSet<Date> {
    let mut out = BTreeSet::new();
    let mut t: Timestamp = "2024-12-31T12:00:00Z".parse().unwrap();
    loop {
        let z = cal.next_of(r, t);
        if z.date().year() >= 2027 {
            break;
        }
        out.insert(z.date());
        t = z.timestamp();
    }
    out
}

fn at(r: &Recurrence) -> Time {
    match *r {
        Recurrence::Day { at }
        | Recurrence::Week { at, .. }
        | Recurrence::Month { at, .. }
        | Recurrence::Quarter { at, .. } => at,
    }
}

#[test]
fn one_cronjob_per_calendar_entry_firing_when_it_is_due() {
    let cal = calendar();
    let jobs = cronjobs();
    assert_eq!(jobs.len(), cal.entries.len());
    let mut seen = BTreeSet::new();
    for (job, e) in jobs.iter().zip(&cal.entries) {
        assert_eq!(s(&job["apiVersion"], "apiVersion"), "batch/v1");
        assert_eq!(s(&job["kind"], "kind"), "CronJob");
        let name = s(&job["metadata"]["name"], "name");
        assert_eq!(name, format!("tej-{}", e.id));
        assert!(name.len() <= 52, "{name}");
        assert!(seen.insert(name.to_string()), "duplicate {name}");
        assert_eq!(
            s(&job["metadata"]["labels"]["tej.dev/entry"], "label"),
            e.id
        );
        let spec = &job["spec"];
        assert_eq!(s(&spec["timeZone"], "timeZone"), "Asia/Kolkata");
        assert_eq!(s(&spec["concurrencyPolicy"], "policy"), "Forbid");
        assert_eq!(
            spec["jobTemplate"]["spec"]["backoffLimit"].as_i64(),
            Some(0)
        );
        let pod = &spec["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(s(&pod["restartPolicy"], "restartPolicy"), "Never");
        let containers = pod["containers"].as_vec().unwrap();
        assert_eq!(containers.len(), 1);
        let command: Vec<&str> = containers[0]["command"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|a| s(a, "command"))
            .collect();
        assert_eq!(
            command,
            [
                "/usr/local/bin/tej",
                "--config",
                "/etc/tej/tej.toml",
                "run",
                e.id.as_str(),
                "--if-due",
                "--scheduled"
            ]
        );

        // Cron fires on every day the entry occurs; where cron cannot be exact (nth/last
        // Sunday) it fires more often and `--if-due` makes tej check the calendar.
        let schedule = s(&spec["schedule"], "schedule");
        let fires = firing_days(schedule, at(&e.recurrence));
        let occurs = occurrence_days(&cal, &e.recurrence);
        assert!(occurs.len() >= 8, "{}: {occurs:?}", e.id);
        assert!(
            occurs.is_subset(&fires),
            "{} ({schedule}) misses {:?}",
            e.id,
            occurs.difference(&fires).collect::<Vec<_>>()
        );
        match e.recurrence {
            Recurrence::Day { .. } | Recurrence::Week { .. } => {
                assert_eq!(fires, occurs, "{}: {schedule} is not exact", e.id)
            }
            Recurrence::Month { weekday, .. } | Recurrence::Quarter { weekday, .. } => {
                assert!(fires.iter().all(|d| d.weekday() == weekday));
                assert!(fires.len() < occurs.len() * 6, "{}: {schedule}", e.id);
            }
        }
        if let Recurrence::Week { weekday, .. } = e.recurrence {
            assert_eq!(weekday, Weekday::Sunday);
        }
    }
}

/// Every key path in a document that holds `key`.
fn find_key(y: &Yaml, key: &str, path: &str, out: &mut Vec<String>) {
    match y {
        Yaml::Hash(h) => {
            for (k, v) in h {
                let ks = k.as_str().unwrap_or("?");
                let p = format!("{path}.{ks}");
                if ks == key {
                    out.push(p.clone());
                }
                find_key(v, key, &p, out);
            }
        }
        Yaml::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                find_key(v, key, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// `(variable, source kind, source name, optional)` of every env entry of a CronJob.
fn env_refs(job: &Yaml) -> Vec<(String, String, String, bool)> {
    let c = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    c["env"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|e| {
            let name = s(&e["name"], "env name").to_string();
            let from = e["valueFrom"].as_hash().unwrap_or_else(|| {
                panic!("{name} has no valueFrom: values must come from a Secret or ConfigMap")
            });
            assert_eq!(from.len(), 1, "{name}");
            let (kind, r) = from.iter().next().unwrap();
            assert_eq!(s(&r["key"], "key"), name, "{name} reads another key");
            (
                name,
                s(kind, "kind").to_string(),
                s(&r["name"], "ref name").to_string(),
                r["optional"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn no_secret_value_is_written_inline() {
    let text = read("cronjobs.yaml");
    for needle in ["CHANGE-ME", "postgres://", "redis://", "https://"] {
        assert!(!text.contains(needle), "cronjobs.yaml contains {needle:?}");
    }
    for job in cronjobs() {
        let mut values = Vec::new();
        for key in ["value", "data", "stringData"] {
            find_key(&job, key, "", &mut values);
        }
        assert!(values.is_empty(), "inline values at {values:?}");
        let refs = env_refs(&job);
        let names: Vec<&str> = refs.iter().map(|r| r.0.as_str()).collect();
        for must in [
            "DATABASE_URL",
            "REDIS_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "TEJ_BACKUP_PASSPHRASE",
        ] {
            assert!(names.contains(&must), "{must} missing from {names:?}");
        }
        for (name, kind, _, _) in &refs {
            let secret = ["URL", "KEY", "PASSPHRASE", "PASSWORD", "TOKEN"]
                .iter()
                .any(|w| name.contains(w))
                && !["AWS_ENDPOINT_URL", "AWS_REGION"].contains(&name.as_str());
            if secret {
                assert_eq!(kind, "secretKeyRef", "{name} must come from the Secret");
            } else {
                assert_eq!(kind, "configMapKeyRef", "{name}");
            }
        }
    }
}

#[test]
fn examples_provide_what_the_jobs_read_and_share_the_s3_repository() {
    let jobs = cronjobs();
    let secret = docs("secret.example.yaml");
    let cm = docs("configmap.example.yaml");
    assert_eq!((secret.len(), cm.len()), (1, 1));
    let (secret, cm) = (&secret[0], &cm[0]);
    assert_eq!(s(&secret["kind"], "kind"), "Secret");
    assert_eq!(s(&cm["kind"], "kind"), "ConfigMap");
    let keys = |y: &Yaml| -> BTreeMap<String, String> {
        y.as_hash()
            .unwrap()
            .iter()
            .map(|(k, v)| (s(k, "key").to_string(), s(v, "value").to_string()))
            .collect()
    };
    let secret_keys = keys(&secret["stringData"]);
    let cm_keys = keys(&cm["data"]);
    for v in secret_keys.values() {
        assert!(
            v.contains("CHANGE"),
            "the example Secret must hold placeholders only"
        );
    }
    for job in &jobs {
        let ns = s(&job["metadata"]["namespace"], "namespace");
        assert_eq!(s(&secret["metadata"]["namespace"], "ns"), ns);
        assert_eq!(s(&cm["metadata"]["namespace"], "ns"), ns);
        for (name, kind, source, optional) in env_refs(job) {
            match kind.as_str() {
                "secretKeyRef" => {
                    assert_eq!(source, s(&secret["metadata"]["name"], "secret name"));
                    assert!(secret_keys.contains_key(&name), "Secret lacks {name}");
                }
                _ => {
                    assert_eq!(source, s(&cm["metadata"]["name"], "cm name"));
                    assert!(
                        optional || cm_keys.contains_key(&name),
                        "ConfigMap lacks {name}"
                    );
                }
            }
        }
        let vols = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
            .as_vec()
            .unwrap();
        let config = vols
            .iter()
            .find(|v| v["name"].as_str() == Some("config"))
            .unwrap();
        assert_eq!(
            s(&config["configMap"]["name"], "volume"),
            s(&cm["metadata"]["name"], "cm name")
        );
    }

    // The tej.toml loads (with the Secret's variables present) and every job shares one
    // S3 repository: a local path would vanish with the pod.
    let toml = &cm_keys["tej.toml"];
    let env = |k: &str| secret_keys.get(k).cloned();
    let cfg = tej_core::Config::from_toml_with_env(toml, "configmap.example.yaml", &env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!cfg.backup.repositories.is_empty());
    assert!(
        cfg.backup
            .repositories
            .iter()
            .all(|r| r.starts_with("s3://")),
        "{:?}",
        cfg.backup.repositories
    );
    assert_eq!(cfg.zone(), "Asia/Kolkata");
    assert_eq!(
        cfg.databases[0].name, "default",
        "DATABASE_URL from the Secret"
    );
}

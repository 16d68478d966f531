//! The `tej config init` templates (`templates/*.toml`) are valid `tej.toml` files as
//! written, and still valid with every commented example (`# key = value`, `# [section]`)
//! uncommented; their commented defaults are the real defaults, and they hold no secret.
//!
//! Every config struct denies unknown fields, so a misspelt key in a template, commented or
//! not, fails here.

use tej_core::Config;
use tej_core::calendar::Calendar;
use tej_core::secret::redact_url_passwords;

/// (name, text) of every template.
const TEMPLATES: &[(&str, &str)] = &[
    ("templates/tej.toml", include_str!("../templates/tej.toml")),
    (
        "templates/tej.compose.toml",
        include_str!("../templates/tej.compose.toml"),
    ),
];

/// Parses and validates `text` as `tej.toml`, with an empty environment.
fn load(name: &str, what: &str, text: &str) -> Config {
    Config::from_toml_with_env(text, "tej.toml", &|_| None)
        .unwrap_or_else(|e| panic!("{name} ({what}) is not a valid tej.toml: {e}"))
}

/// `text` with the leading `# ` removed from every line starting with it (the commented
/// examples); `## ` prose stays a comment.
fn uncomment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        out.push_str(line.strip_prefix("# ").unwrap_or(line));
        out.push('\n');
    }
    out
}

/// True when `s` (a line without its `# `) is TOML: `key = ...`, a table header, or the
/// continuation of a multi-line array.
fn looks_like_toml(s: &str) -> bool {
    if s.starts_with('[') || s.starts_with(']') || s.starts_with(' ') {
        return true;
    }
    s.split_once(" = ").is_some_and(|(key, _)| {
        !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

/// The key of a `key = value` line (active or commented), if it is one.
fn key_of(line: &str) -> Option<&str> {
    let s = line.strip_prefix("# ").unwrap_or(line);
    if s.starts_with([' ', '[', ']', '#']) || s.is_empty() {
        return None;
    }
    if !looks_like_toml(s) {
        return None;
    }
    s.split_once(" = ").map(|(key, _)| key)
}

#[test]
fn templates_parse_and_validate_as_written() {
    for (name, text) in TEMPLATES {
        let c = load(name, "as written", text);
        assert_eq!(c.environment, tej_core::Environment::Production, "{name}");
        assert!(!c.databases.is_empty(), "{name}: no [[database]]");
        assert!(!c.redis.is_empty(), "{name}: no [[redis]]");
        assert!(
            !c.backup.repositories.is_empty(),
            "{name}: no backup repository"
        );
        assert!(!c.tls.is_empty(), "{name}: no [[tls]]");
        assert!(c.audit_log.is_some(), "{name}: no audit_log");
    }
    let compose = load(TEMPLATES[1].0, "as written", TEMPLATES[1].1);
    let project = compose.compose.as_ref().expect("[compose] is active");
    assert_eq!(
        project.services,
        ["backend", "frontend", "postgres", "redis", "nginx"]
    );
    assert!(compose.secrets.is_some(), "[secrets] is active");
    assert!(
        compose
            .backup
            .repositories
            .iter()
            .any(|r| r.starts_with("s3://")),
        "backups go to S3 too"
    );
    assert!(compose.backup.encryption.is_some(), "backups are encrypted");
}

#[test]
fn templates_parse_and_validate_with_every_example_uncommented() {
    for (name, text) in TEMPLATES {
        let full_text = uncomment(text);
        assert_ne!(&full_text.as_str(), text, "{name} has no commented example");
        let c = load(name, "every example uncommented", &full_text);
        // Every optional section is there, so each of its keys was checked.
        assert!(c.timezone.is_some() && c.state_dir.is_some(), "{name}");
        assert!(c.notify_url.is_some(), "{name}: notify_url");
        assert!(
            c.redis
                .iter()
                .all(|r| r.username.is_some() && r.password.is_some())
        );
        assert!(c.backup.compression_level.is_some(), "{name}");
        assert!(!c.backup.files.is_empty(), "{name}: backup.files");
        assert!(c.backup.pitr_window_days.is_some(), "{name}");
        assert!(c.backup.archive_timeout_secs.is_some(), "{name}");
        let enc = c.backup.encryption.as_ref().expect("[backup.encryption]");
        assert!(
            !enc.recipients.is_empty() && enc.identity.is_some() && enc.passphrase.is_some(),
            "{name}: [backup.encryption]"
        );
        assert!(c.logs.access_log.is_some(), "{name}: logs.access_log");
        let tls = &c.tls[0];
        assert!(
            tls.server_name.is_some() && tls.cert_file.is_some() && tls.ca_file.is_some(),
            "{name}: [[tls]]"
        );
        let compose = c.compose.as_ref().expect("[compose]");
        assert!(
            compose.file.is_some()
                && compose.docker_host.is_some()
                && compose.health_url.is_some()
                && !compose.services.is_empty(),
            "{name}: [compose]"
        );
        let secrets = c.secrets.as_ref().expect("[secrets]");
        assert!(
            secrets.app_url.is_some()
                && secrets.test_email.is_some()
                && secrets.test_password.is_some(),
            "{name}: [secrets]"
        );
        assert!(c.deploy.lock_dir.is_some(), "{name}: [deploy]");
        let svc = c.deploy.services.first().expect("[[deploy.service]]");
        assert!(
            svc.health_path.is_some()
                && svc.nginx_upstream.is_some()
                && svc.migrate.is_some()
                && svc.test_command.is_some()
                && svc.test_dir.is_some()
                && svc.backup_max_age_hours.is_some()
                && svc.log_window_secs.is_some()
                && svc.public_addr.is_some(),
            "{name}: [[deploy.service]]"
        );
        assert!(c.host.exclude_fs_types.is_some(), "{name}: [host]");
        assert!(
            c.serve.listen.is_some() && c.serve.token.is_some(),
            "{name}: [serve]"
        );
        assert!(
            c.checks
                .iter()
                .any(|k| k.sql.is_some() && k.database.is_some())
                && c.checks
                    .iter()
                    .any(|k| k.redis.is_some() && k.redis_instance.is_some())
                && c.checks.iter().all(|k| k.description.is_some()),
            "{name}: [[check]]"
        );
        assert!(
            c.audit
                .iter()
                .any(|a| a.dir.is_some() && a.kind.is_some() && a.timeout_secs.is_some()),
            "{name}: [[audit]]"
        );
        // Every runbook calendar entry has its [calendar.<id>] example.
        let runbook = Calendar::runbook();
        let ids: Vec<&str> = c.calendar.keys().map(String::as_str).collect();
        let mut want: Vec<&str> = runbook.entries.iter().map(|e| e.id.as_str()).collect();
        want.sort_unstable();
        assert_eq!(ids, want, "{name}: [calendar.<id>] sections");
        assert!(
            c.calendar
                .values()
                .all(|o| o.at.is_some() && o.enabled.is_some()),
            "{name}: calendar keys"
        );
    }
}

#[test]
fn commented_defaults_are_the_defaults() {
    for (name, text) in TEMPLATES {
        let as_written = load(name, "as written", text);
        let full = load(name, "every example uncommented", &uncomment(text));
        // Uncommenting a default changes nothing.
        assert_eq!(full.zone(), as_written.zone(), "{name}: timezone");
        assert_eq!(full.zone(), "Asia/Kolkata", "{name}: timezone");
        assert_eq!(
            full.state_dir.as_deref(),
            Some(std::path::Path::new("/var/lib/tej")),
            "{name}: state_dir"
        );
        for (w, f) in as_written.redis.iter().zip(&full.redis) {
            assert_eq!(f.session_pattern, w.session_pattern, "{name}");
        }
        assert_eq!(full.backup.format, as_written.backup.format, "{name}");
        assert_eq!(
            full.backup.compression, as_written.backup.compression,
            "{name}"
        );
        assert_eq!(
            full.backup.compression_level,
            Some(3),
            "{name}: zstd's level"
        );
        assert_eq!(full.backup.archive_timeout_secs, Some(60), "{name}");
        assert_eq!(
            full.backup.retention, as_written.backup.retention,
            "{name}: retention"
        );
        for (w, f) in as_written.tls.iter().zip(&full.tls) {
            assert_eq!(
                (f.warn_days, f.crit_days),
                (w.warn_days, w.crit_days),
                "{name}"
            );
        }
        let host = tej_core::config::HostConfig {
            exclude_fs_types: None,
            ..full.host.clone()
        };
        assert_eq!(host, as_written.host, "{name}: [host] thresholds");
        assert_eq!(full.serve.interval, as_written.serve.interval, "{name}");
        assert_eq!(full.serve.allow_remote, as_written.serve.allow_remote);
        if let (Some(w), Some(f)) = (&as_written.compose, &full.compose) {
            assert_eq!(f.backend_service, w.backend_service, "{name}");
        }
        if let (Some(w), Some(f)) = (&as_written.secrets, &full.secrets) {
            assert_eq!(f.rotate, w.rotate, "{name}: secrets.rotate");
            assert_eq!(f.env_backups_keep, w.env_backups_keep, "{name}");
        }
        assert_eq!(
            full.compose.as_ref().unwrap().backend_service,
            "backend",
            "{name}"
        );
        assert_eq!(
            full.secrets.as_ref().unwrap().rotate,
            ["JWT_SECRET", "JWT_REFRESH_SECRET"]
        );
        assert_eq!(full.secrets.as_ref().unwrap().env_backups_keep, 5);
        // [[deploy.service]]: the defaults of a service that sets none of them.
        let minimal = Config::from_toml_with_env(
            "[[deploy.service]]\nname = \"backend\"\nports = [3000, 3001]\nnginx_upstream_file = \"/u.conf\"\n",
            "tej.toml",
            &|_| None,
        )
        .unwrap();
        let d = &minimal.deploy.services[0];
        let s = &full.deploy.services[0];
        assert_eq!(s.port_env, d.port_env, "{name}");
        assert_eq!(s.health_timeout_secs, d.health_timeout_secs, "{name}");
        assert_eq!(s.switch, d.switch, "{name}");
        assert_eq!(s.upstream_name(), d.upstream_name(), "{name}");
        assert_eq!(s.nginx_program, d.nginx_program, "{name}");
        assert_eq!(s.migrate_timeout_secs, d.migrate_timeout_secs, "{name}");
        assert_eq!(s.test_timeout_secs, d.test_timeout_secs, "{name}");
        assert_eq!(s.stop_timeout_secs, d.stop_timeout_secs, "{name}");
        assert_eq!(s.drain_timeout_secs, d.drain_timeout_secs, "{name}");
        assert_eq!(full.checks[0].direction, tej_core::Direction::HigherIsWorse);
        // Each calendar example shows its entry's own time: uncommented, the calendar is
        // exactly the runbook's.
        let cal = Calendar::from_config(&full).unwrap();
        assert_eq!(cal.entries, Calendar::runbook().entries, "{name}: calendar");
    }
}

#[test]
fn templates_hold_no_secret_values() {
    // Keys whose values are secrets: each must be a { env = ... } or { file = ... } reference.
    const SECRET_KEYS: &[&str] = &[
        "password = ",
        "passphrase = ",
        "notify_url = ",
        "token = ",
        "identity = ",
    ];
    for (name, text) in TEMPLATES {
        for (n, line) in text.lines().enumerate() {
            let at = format!("{name}:{}: {line}", n + 1);
            assert!(!line.contains("password = \""), "{at}: a literal password");
            for key in SECRET_KEYS {
                for (i, _) in line.match_indices(key) {
                    let value = &line[i + key.len()..];
                    assert!(
                        value.starts_with("{ env = \"") || value.starts_with("{ file = \""),
                        "{at}: {key}must be {{ env = \"VAR\" }} or {{ file = \"PATH\" }}"
                    );
                }
            }
            assert_eq!(
                redact_url_passwords(line),
                line,
                "{at}: a password inside a URL"
            );
        }
        // The references parse as such, in the uncommented template too.
        let full = load(name, "every example uncommented", &uncomment(text));
        assert!(full.notify_url.is_some() && full.serve.token.is_some());
    }
}

#[test]
fn every_comment_is_prose_or_an_example_and_every_key_is_explained() {
    for (name, text) in TEMPLATES {
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let at = format!("{name}:{}: {line}", n + 1);
            if let Some(rest) = line.strip_prefix("# ") {
                // Uncommented, it must be TOML: prose belongs on "## " lines.
                assert!(looks_like_toml(rest), "{at}: prose after `# ` (use `## `)");
            } else if line.starts_with('#') {
                assert!(
                    *line == "##" || line.starts_with("## "),
                    "{at}: a comment is `# key = value`, `# [section]` or `## prose`"
                );
            }
            if key_of(line).is_some() {
                let prev = n.checked_sub(1).map(|p| lines[p]).unwrap_or("");
                assert!(
                    prev.starts_with("## "),
                    "{at}: every key needs a `## ` line saying what it does just above it"
                );
            }
        }
    }
}

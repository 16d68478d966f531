//! Examples at the end of every command's `--help` (and of its man page): [`EXAMPLES`] maps
//! each command path (`""` for `tej` itself, `"backup create"`, `"wal fetch"`...) to one to
//! three command lines in the runbook's terms, and [`with_examples`] puts them into the clap
//! definition as `after_help`.
//!
//! The tests keep the table current: every visible command has an entry, every entry names
//! a command that exists, and every example parses with today's flags. Examples are split as
//! a POSIX shell splits words (shlex), so they may quote but hold no redirections or pipes.

use clap::Command;

/// Command path (subcommand names joined by one space; `""` for `tej`) and its examples.
const EXAMPLES: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "tej config check",
            "tej health --output nagios",
            "tej --config /etc/tej/tej.toml run nightly-backup --scheduled",
        ],
    ),
    // Configuration.
    (
        "config",
        &[
            "tej config check",
            "tej config init --platform compose --path /etc/tej/tej.toml",
        ],
    ),
    (
        "config check",
        &[
            "tej config check",
            "tej --config /etc/tej/tej.toml config check --output json",
        ],
    ),
    (
        "config init",
        &[
            "tej config init",
            "tej config init --platform compose --path /etc/tej/tej.toml",
            "tej config init --platform host --path /etc/tej/tej.toml --force",
        ],
    ),
    // Compose services, deploys, emergencies.
    (
        "services",
        &[
            "tej services status",
            "tej services logs backend --tail 200",
            "tej services restart backend --yes",
        ],
    ),
    (
        "services status",
        &[
            "tej services status",
            "tej services status --project skillswap --output nagios",
        ],
    ),
    (
        "services logs",
        &[
            "tej services logs backend",
            "tej services logs frontend --tail 200",
            "tej services logs --tail 20",
        ],
    ),
    (
        "services restart",
        &[
            "tej services restart backend --dry-run",
            "tej services restart backend --yes",
        ],
    ),
    (
        "deploy",
        &[
            "tej deploy backend --image skillswap-backend:v42 --dry-run",
            "tej deploy backend --image skillswap-backend:v42",
            "tej deploy frontend --image skillswap-frontend:v42",
        ],
    ),
    (
        "rollback",
        &["tej rollback backend --dry-run", "tej rollback backend"],
    ),
    (
        "emergency",
        &[
            "tej emergency service-down backend --yes",
            "tej emergency db-corruption --dry-run",
            "tej emergency security-breach --address 203.0.113.7 --yes",
        ],
    ),
    (
        "emergency service-down",
        &[
            "tej emergency service-down backend --dry-run",
            "tej emergency service-down backend --yes",
        ],
    ),
    (
        "emergency db-corruption",
        &[
            "tej emergency db-corruption --dry-run",
            "tej emergency db-corruption --service backend --service frontend --yes",
            "tej emergency db-corruption --restore-anyway --yes --outside-window",
        ],
    ),
    (
        "emergency security-breach",
        &[
            "tej emergency security-breach --address 203.0.113.7 --dry-run",
            "tej emergency security-breach --address 203.0.113.0/24 --sudo --yes --outside-window",
        ],
    ),
    // TLS and secrets.
    (
        "tls",
        &[
            "tej tls check",
            "tej tls check skillswap.in:443 api.skillswap.in:443",
            "tej tls renew --dry-run",
        ],
    ),
    (
        "tls check",
        &[
            "tej tls check",
            "tej tls check skillswap.in:443 api.skillswap.in:443 --output nagios",
            "tej tls check skillswap.in:443 --cert-file /etc/letsencrypt/live/skillswap.in/fullchain.pem",
        ],
    ),
    ("tls renew", &["tej tls renew --dry-run", "tej tls renew"]),
    (
        "secrets",
        &[
            "tej secrets rotate --dry-run",
            "tej secrets rotate --yes",
            "tej secrets generate",
        ],
    ),
    (
        "secrets rotate",
        &[
            "tej secrets rotate --dry-run",
            "tej secrets rotate --env-file /opt/skillswap/.env --keys JWT_SECRET,JWT_REFRESH_SECRET --yes",
            "tej secrets rotate --emergency --yes --outside-window",
        ],
    ),
    (
        "secrets generate",
        &["tej secrets generate", "tej secrets generate --bytes 32"],
    ),
    // Host and logs.
    (
        "host",
        &["tej host check", "tej host check --output nagios"],
    ),
    (
        "host check",
        &[
            "tej host check",
            "tej host check --output nagios",
            "tej host check --prometheus-file /var/lib/node_exporter/textfile_collector/tej-host.prom",
        ],
    ),
    (
        "logs",
        &[
            "tej logs review",
            "tej logs review /opt/skillswap/logs/combined.log --since 24h",
        ],
    ),
    (
        "logs review",
        &[
            "tej logs review",
            "tej logs review /opt/skillswap/logs/combined.log --since 24h",
            "tej logs review /opt/skillswap/logs --since 7d --output json",
        ],
    ),
    (
        "cleanup",
        &[
            "tej cleanup --root /opt/skillswap/logs --pattern '*.log' --older-than 30 --dry-run",
            "tej cleanup --root /opt/skillswap/logs --pattern '*.log' --older-than 30 --yes",
            "tej cleanup --root /opt/skillswap/logs/nginx --pattern '*.gz' --older-than 30 --keep-newest 3 --yes",
        ],
    ),
    // Backups, WAL, point-in-time recovery.
    (
        "backup",
        &[
            "tej backup create",
            "tej backup list --repo s3://skillswap-backups/db",
            "tej backup verify latest --restore-test",
        ],
    ),
    (
        "backup create",
        &[
            "tej backup create",
            "tej backup create --physical --repo /var/lib/tej/repo",
            "tej backup create --files /opt/skillswap/uploads /opt/skillswap/nginx",
        ],
    ),
    (
        "backup list",
        &[
            "tej backup list",
            "tej backup list --repo s3://skillswap-backups/db --output json",
        ],
    ),
    (
        "backup verify",
        &[
            "tej backup verify latest",
            "tej backup verify latest --restore-test",
            "tej backup verify latest@physical --repo /var/lib/tej/repo",
        ],
    ),
    (
        "backup restore",
        &[
            "tej backup restore latest --dry-run",
            "tej backup restore 20250115T203000Z-skillswap_db --target postgres://TejIndia@127.0.0.1:5432/skillswap_db --yes",
            "tej backup restore latest --into /opt/skillswap/uploads --yes",
        ],
    ),
    (
        "backup prune",
        &[
            "tej backup prune --dry-run",
            "tej backup prune --yes",
            "tej backup prune --repo s3://skillswap-backups/db --yes",
        ],
    ),
    (
        "wal",
        &[
            "tej wal init --repo /var/lib/tej/repo",
            "tej wal list --repo /var/lib/tej/repo",
            "tej wal verify --repo s3://skillswap-backups/db",
        ],
    ),
    (
        "wal push",
        &[
            "tej wal push --repo /var/lib/tej/repo %p",
            "tej --config /etc/tej/tej.toml wal push --repo s3://skillswap-backups/db --async 4 %p",
        ],
    ),
    (
        "wal fetch",
        &[
            "tej wal fetch --repo /var/lib/tej/repo %f %p",
            "tej --config /etc/tej/tej.toml wal fetch --repo s3://skillswap-backups/db --prefetch 16 %f %p",
        ],
    ),
    (
        "wal init",
        &[
            "tej wal init --repo /var/lib/tej/repo",
            "tej wal init --repo s3://skillswap-backups/db --db postgres://TejIndia@127.0.0.1:5432/skillswap_db",
        ],
    ),
    (
        "wal list",
        &[
            "tej wal list --repo /var/lib/tej/repo",
            "tej wal list --repo s3://skillswap-backups/db --output json",
        ],
    ),
    (
        "wal verify",
        &[
            "tej wal verify --repo /var/lib/tej/repo",
            "tej wal verify --repo s3://skillswap-backups/db --output nagios",
        ],
    ),
    (
        "restore",
        &[
            "tej restore --repo /var/lib/tej/repo --pgdata /var/lib/postgresql/15/main --target-time 2025-01-16T14:30:00+05:30 --dry-run",
            "tej restore --repo /var/lib/tej/repo --pgdata /var/lib/postgresql/15/main --target-time 2025-01-16T14:30:00+05:30 --start --yes",
            "tej restore --repo s3://skillswap-backups/db --pgdata /var/lib/postgresql/15/main --target latest --start --archive --yes",
        ],
    ),
    (
        "drill",
        &[
            "tej drill --repo /var/lib/tej/repo",
            "tej drill --repo s3://skillswap-backups/db --database skillswap_db --keep",
        ],
    ),
    // PostgreSQL and Redis.
    (
        "db",
        &[
            "tej db health",
            "tej db vacuum",
            "tej db bloat --db postgres://TejIndia@127.0.0.1:5432/skillswap_db",
        ],
    ),
    (
        "db health",
        &[
            "tej db health",
            "tej db health --db postgres://TejIndia@127.0.0.1:5432/skillswap_db --output nagios",
        ],
    ),
    (
        "db vacuum",
        &[
            "tej db vacuum",
            "tej db vacuum --table users",
            "tej db vacuum --full --table users --yes",
        ],
    ),
    (
        "db size",
        &[
            "tej db size",
            "tej db size --db postgres://TejIndia@127.0.0.1:5432/skillswap_db --output json",
        ],
    ),
    ("db bloat", &["tej db bloat", "tej db bloat --output json"]),
    (
        "db slow-queries",
        &["tej db slow-queries", "tej db slow-queries --output json"],
    ),
    (
        "db indexes",
        &[
            "tej db indexes",
            "tej db indexes --db postgres://TejIndia@127.0.0.1:5432/skillswap_db",
        ],
    ),
    (
        "db reindex",
        &[
            "tej db reindex --dry-run",
            "tej db reindex --threshold 20 --yes",
        ],
    ),
    (
        "db amcheck",
        &["tej db amcheck", "tej db amcheck --output nagios"],
    ),
    (
        "db force-password-reset",
        &[
            "tej db force-password-reset --dry-run",
            "tej db force-password-reset --table users --column password_reset_required --yes",
        ],
    ),
    (
        "redis",
        &[
            "tej redis info",
            "tej redis bigkeys --top 50",
            "tej redis invalidate-sessions --dry-run",
        ],
    ),
    (
        "redis info",
        &[
            "tej redis info",
            "tej redis info --url redis://127.0.0.1:6379/0 --output nagios",
        ],
    ),
    (
        "redis bigkeys",
        &[
            "tej redis bigkeys",
            "tej redis bigkeys --instance cache --top 50",
        ],
    ),
    (
        "redis invalidate-sessions",
        &[
            "tej redis invalidate-sessions --dry-run",
            "tej redis invalidate-sessions --yes",
        ],
    ),
    (
        "redis flush",
        &[
            "tej redis flush --db 0 --dry-run",
            "tej redis flush --db 0 --yes",
        ],
    ),
    // Docker images.
    (
        "images",
        &["tej images prune --dry-run", "tej images prune --yes"],
    ),
    (
        "images prune",
        &[
            "tej images prune --dry-run",
            "tej images prune --yes",
            "tej images prune --older-than 336h --yes",
        ],
    ),
    // The calendar and unattended runs.
    (
        "schedule",
        &[
            "tej --config /etc/tej/tej.toml schedule --emit crontab",
            "tej --config /etc/tej/tej.toml schedule --emit systemd --dir /etc/systemd/system --user tej --on-failure notify-failure@%n.service",
            "tej schedule --emit kubernetes --dir deploy/kubernetes",
        ],
    ),
    (
        "completions",
        &["tej completions bash", "tej completions zsh"],
    ),
    (
        "man",
        &["tej man", "tej man --dir /usr/local/share/man/man1"],
    ),
    (
        "calendar",
        &[
            "tej calendar",
            "tej calendar --at 2025-01-16T09:00:00+05:30",
            "tej calendar --output json",
        ],
    ),
    (
        "health",
        &[
            "tej health",
            "tej health --output nagios",
            "tej health --prometheus-file /var/lib/node_exporter/textfile_collector/tej.prom --daily-log /var/log/tej/daily.md",
        ],
    ),
    (
        "run",
        &[
            "tej run daily",
            "tej run weekly --yes",
            "tej --config /etc/tej/tej.toml run nightly-backup --if-due --scheduled",
        ],
    ),
    (
        "daemon",
        &[
            "tej daemon",
            "tej --config /etc/tej/tej.toml daemon --log-format json",
            "tej daemon --no-catch-up",
        ],
    ),
    (
        "serve",
        &[
            "tej serve",
            "tej serve --listen 127.0.0.1:9187 --interval 60",
        ],
    ),
];

/// The examples of the command at `path`, if the table has them.
fn examples(path: &str) -> Option<&'static [&'static str]> {
    EXAMPLES.iter().find(|(p, _)| *p == path).map(|(_, e)| *e)
}

/// `cmd` (the whole `tej` definition) with each command's examples as its `after_help`:
/// an `Examples:` heading, styled like clap's own, then one indented line per example.
pub fn with_examples(cmd: Command) -> Command {
    add_examples(cmd, "")
}

/// Sets the examples of `cmd`, found at `path`, then of each of its subcommands.
fn add_examples(mut cmd: Command, path: &str) -> Command {
    if let Some(lines) = examples(path) {
        let header = cmd.get_styles().get_header();
        let mut text = format!("{header}Examples:{header:#}");
        for line in lines {
            text.push_str("\n  ");
            text.push_str(line);
        }
        cmd = cmd.after_help(text);
    }
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        let sub_path = join(path, &name);
        cmd = cmd.mut_subcommand(&name, |sub| add_examples(sub, &sub_path));
    }
    cmd
}

/// `path` followed by the subcommand `name`.
fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path} {name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cli;
    use clap::{CommandFactory, Parser};
    use std::collections::BTreeSet;

    /// Every visible command's path (`""` for `tej`), recursively, without clap's `help`.
    fn visible_paths(cmd: &Command, path: &str, out: &mut BTreeSet<String>) {
        out.insert(path.to_string());
        for sub in cmd.get_subcommands() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            visible_paths(sub, &join(path, sub.get_name()), out);
        }
    }

    /// The command at `path` and its ancestors, outermost first.
    fn lineage<'a>(root: &'a Command, path: &str) -> Vec<&'a Command> {
        let mut chain = vec![root];
        for name in path.split_whitespace() {
            let next = chain
                .last()
                .and_then(|c| c.find_subcommand(name))
                .unwrap_or_else(|| panic!("no command {path:?}"));
            chain.push(next);
        }
        chain
    }

    #[test]
    fn every_command_has_examples_and_every_entry_a_command() {
        let mut paths = BTreeSet::new();
        visible_paths(&Cli::command(), "", &mut paths);
        let table: BTreeSet<String> = EXAMPLES.iter().map(|(p, _)| p.to_string()).collect();
        let missing: Vec<_> = paths.difference(&table).collect();
        assert!(
            missing.is_empty(),
            "commands without examples in help_examples.rs: {missing:?}"
        );
        let stale: Vec<_> = table.difference(&paths).collect();
        assert!(
            stale.is_empty(),
            "help_examples.rs has examples for commands that do not exist (or are hidden): {stale:?}"
        );
        assert_eq!(
            table.len(),
            EXAMPLES.len(),
            "a command path is listed twice"
        );
        for (path, lines) in EXAMPLES {
            assert!(
                (1..=3).contains(&lines.len()),
                "{path:?}: {} examples, expected one to three",
                lines.len()
            );
        }
    }

    /// Each example parses with today's flags; it runs the command it documents (or, for a
    /// command with subcommands, one of them), and uses no hidden flag.
    #[test]
    fn every_example_parses() {
        let root = Cli::command();
        for (path, lines) in EXAMPLES {
            for line in *lines {
                assert!(
                    line.starts_with("tej "),
                    "{path:?}: {line:?} must start with `tej `"
                );
                assert!(
                    !line.contains(['|', '>', '<', ';', '$', '`', '&']),
                    "{path:?}: {line:?}: an example is one command, without shell syntax"
                );
                let words: Vec<String> = shlex::split(line)
                    .unwrap_or_else(|| panic!("{path:?}: {line:?}: unbalanced quotes"));
                assert!(
                    !words
                        .iter()
                        .any(|w| *w == "--help" || *w == "-h" || *w == "help"),
                    "{path:?}: {line:?}: an example must run the command, not print help"
                );
                if let Err(e) = Cli::try_parse_from(&words) {
                    panic!("{path:?}: {line:?} does not parse:\n{e}");
                }
                let mut at = 0;
                for name in path.split_whitespace() {
                    match words[at..].iter().position(|w| w == name) {
                        Some(i) => at += i + 1,
                        None => panic!("{path:?}: {line:?} does not run `tej {path}`"),
                    }
                }
                let hidden: Vec<String> = lineage(&root, path)
                    .iter()
                    .flat_map(|c| c.get_arguments())
                    .filter(|a| a.is_hide_set())
                    .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                    .collect();
                for flag in &hidden {
                    assert!(
                        !words
                            .iter()
                            .any(|w| w == flag || w.starts_with(&format!("{flag}="))),
                        "{path:?}: {line:?} uses the hidden flag {flag}"
                    );
                }
            }
        }
    }

    #[test]
    fn help_shows_the_examples() {
        let mut cmd = with_examples(Cli::command());
        let text = cmd.render_long_help().to_string();
        assert!(text.contains("Examples:\n  tej config check\n"), "{text}");
        let backup = cmd
            .find_subcommand_mut("backup")
            .and_then(|b| b.find_subcommand_mut("create"))
            .expect("tej backup create");
        let text = backup.render_long_help().to_string();
        assert!(text.contains("Examples:"), "{text}");
        assert!(
            text.contains("\n  tej backup create --physical --repo /var/lib/tej/repo"),
            "{text}"
        );
    }

    /// Every visible command ends up with its examples, nested ones included.
    #[test]
    fn examples_reach_every_command() {
        fn walk(cmd: &Command, path: &str) {
            let after = cmd
                .get_after_help()
                .map(|s| s.to_string())
                .unwrap_or_default();
            let expected = examples(path).expect("an entry (see the test above)");
            assert!(after.starts_with("Examples:"), "{path:?}: {after:?}");
            for line in expected {
                assert!(
                    after.contains(&format!("\n  {line}")),
                    "{path:?}: {after:?}"
                );
            }
            for sub in cmd.get_subcommands() {
                if !sub.is_hide_set() && sub.get_name() != "help" {
                    walk(sub, &join(path, sub.get_name()));
                }
            }
        }
        walk(&with_examples(Cli::command()), "");
    }
}

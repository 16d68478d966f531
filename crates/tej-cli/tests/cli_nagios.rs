//! `--output nagios` of every check command, through the binary against real PostgreSQL,
//! Redis, TLS and Docker servers, parsed by a reference parser of the Nagios plugin
//! guidelines' output: one status line `SERVICE STATE - text | perfdata`, perfdata items
//! `'label'=value[UOM];[warn];[crit];[min];[max]` with ranges `[@][start:]end` (`~` for
//! minus infinity), and exit codes 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

use std::path::Path;
use std::process::Command;
use tej_testkit::{DockerEngine, PgCluster, RedisServer, TlsEndpoint};

fn tej(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tej"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("TEJ_CONFIG")
        .env_remove("DOCKER_HOST")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run tej");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A threshold range of the guidelines: alert when the value is outside `start..=end`
/// (inside with `@`).
#[derive(Debug, PartialEq)]
struct Range {
    inside: bool,
    start: f64,
    end: f64,
    text: String,
}

fn number(s: &str) -> Option<f64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    let ok = !int.is_empty()
        && !frac.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| s.parse().ok()).flatten()
}

fn parse_range(text: &str) -> Result<Range, String> {
    let (inside, body) = match text.strip_prefix('@') {
        Some(b) => (true, b),
        None => (false, text),
    };
    let (start, end) = match body.split_once(':') {
        None => (0.0, number(body).ok_or(format!("bad range end {body:?}"))?),
        Some((s, e)) => {
            let start = match s {
                "" => 0.0,
                "~" => f64::NEG_INFINITY,
                s => number(s).ok_or(format!("bad range start {s:?}"))?,
            };
            let end = match e {
                "" => f64::INFINITY,
                e => number(e).ok_or(format!("bad range end {e:?}"))?,
            };
            (start, end)
        }
    };
    if body.is_empty() || start > end {
        return Err(format!("invalid range {text:?}"));
    }
    Ok(Range {
        inside,
        start,
        end,
        text: text.to_string(),
    })
}

#[derive(Debug)]
struct Perf {
    label: String,
    value: Option<f64>,
    uom: String,
    warn: Option<Range>,
    crit: Option<Range>,
}

const UOMS: [&str; 10] = ["s", "ms", "us", "%", "B", "KB", "MB", "GB", "TB", "c"];

/// Parses perfdata (space-separated items) by the guidelines' grammar.
fn parse_perfdata(s: &str) -> Result<Vec<Perf>, String> {
    let mut items = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let (label, after) = if let Some(q) = rest.strip_prefix('\'') {
            let mut label = String::new();
            let mut chars = q.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if chars.peek().map(|p| p.1) == Some('\'') {
                        chars.next();
                        label.push('\'');
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    label.push(c);
                }
            }
            let end = end.ok_or(format!("unterminated label in {rest:?}"))?;
            (label, &q[end..])
        } else {
            let eq = rest.find('=').ok_or(format!("no '=' in {rest:?}"))?;
            let label = &rest[..eq];
            if label.contains([' ', '\'']) {
                return Err(format!("unquoted label {label:?} needs quotes"));
            }
            (label.to_string(), &rest[eq..])
        };
        if label.is_empty() || label.contains('=') {
            return Err(format!("bad label {label:?}"));
        }
        let after = after
            .strip_prefix('=')
            .ok_or(format!("no '=' after label {label:?}"))?;
        let (item, next) = after.split_once(' ').unwrap_or((after, ""));
        let fields: Vec<&str> = item.split(';').collect();
        if fields.len() > 5 {
            return Err(format!("too many fields in {item:?}"));
        }
        let (value, uom) = if let Some(u) = fields[0].strip_prefix('U') {
            (None, u.to_string())
        } else {
            let split = fields[0]
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
                .unwrap_or(fields[0].len());
            let (v, u) = fields[0].split_at(split);
            (
                Some(number(v).ok_or(format!("bad value {v:?} of {label:?}"))?),
                u.to_string(),
            )
        };
        if !uom.is_empty() && !UOMS.contains(&uom.as_str()) {
            return Err(format!("unit {uom:?} of {label:?} is not a Nagios UOM"));
        }
        if value.is_none() && !uom.is_empty() {
            return Err(format!("U with a unit in {item:?}"));
        }
        let range = |i: usize| -> Result<Option<Range>, String> {
            match fields.get(i) {
                None | Some(&"") => Ok(None),
                Some(t) => parse_range(t).map(Some),
            }
        };
        for i in [3, 4] {
            if let Some(m) = fields.get(i).filter(|m| !m.is_empty()) {
                number(m).ok_or(format!("bad min/max {m:?} of {label:?}"))?;
            }
        }
        items.push(Perf {
            label,
            value,
            uom,
            warn: range(1)?,
            crit: range(2)?,
        });
        rest = next.trim_start();
    }
    Ok(items)
}

/// A plugin's output: its state word (checked against the exit code) and perfdata.
fn parse_plugin(out: &str, code: i32) -> Result<(String, Vec<Perf>), String> {
    let mut lines = out.lines();
    let first = lines.next().ok_or("no output")?;
    for l in lines {
        if l.contains('|') {
            return Err(format!("a long-output line holds '|': {l:?}"));
        }
    }
    let (text, perf) = first.split_once('|').unwrap_or((first, ""));
    let state = ["OK", "WARNING", "CRITICAL", "UNKNOWN"]
        .into_iter()
        .find(|s| {
            text.starts_with(&format!("{s} - "))
                || text.split_once(' ').is_some_and(|(service, rest)| {
                    !service.is_empty()
                        && service.chars().all(|c| {
                            c.is_ascii_uppercase() || c.is_ascii_digit() || "_-.".contains(c)
                        })
                        && rest.starts_with(&format!("{s} - "))
                })
        })
        .ok_or(format!("no `SERVICE STATE - text` in {first:?}"))?;
    let expected = match state {
        "OK" => 0,
        "WARNING" => 1,
        "CRITICAL" => 2,
        _ => 3,
    };
    if code != expected {
        return Err(format!("exit code {code} with state {state}: {out}"));
    }
    let perf = parse_perfdata(perf)?;
    let mut labels: Vec<&str> = perf.iter().map(|p| p.label.as_str()).collect();
    labels.sort();
    if let Some(w) = labels.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("label {:?} twice", w[0]));
    }
    Ok((state.to_string(), perf))
}

/// Runs `args` with `--output nagios` (parsed) and `--output json`; checks that every
/// metric with lower-is-worse thresholds (critical below warning) has `W:`/`C:` ranges.
fn check(dir: &Path, args: &[&str]) -> (i32, String, Vec<Perf>) {
    let mut nagios = args.to_vec();
    nagios.extend(["--output", "nagios"]);
    let (code, out, err) = tej(dir, &nagios);
    let (state, perf) = parse_plugin(&out, code)
        .unwrap_or_else(|e| panic!("tej {}: {e}\nstdout: {out}\nstderr: {err}", args.join(" ")));
    let mut json = args.to_vec();
    json.extend(["--output", "json"]);
    let (_, out, _) = tej(dir, &json);
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let Some(metrics) = v["data"]["metrics"].as_array() else {
            continue;
        };
        for m in metrics {
            let (Some(w), Some(c)) = (m["warn"].as_f64(), m["crit"].as_f64()) else {
                continue;
            };
            let name = m["name"].as_str().unwrap();
            // The two runs measure twice: a finding of one (a transient xmin horizon) may
            // be missing from the other.
            let Some(p) = perf.iter().find(|p| p.label.starts_with(name)) else {
                continue;
            };
            let (pw, pc) = (p.warn.as_ref().unwrap(), p.crit.as_ref().unwrap());
            if c < w {
                assert_eq!(pw.text, format!("{w}:"), "lower-is-worse {name}: {p:?}");
                assert_eq!(pc.text, format!("{c}:"), "lower-is-worse {name}: {p:?}");
                assert!(pw.end.is_infinite() && !pw.inside, "{p:?}");
            } else {
                assert!(pw.end == w && pc.end == c, "higher-is-worse {name}: {p:?}");
            }
        }
    }
    (code, state, perf)
}

#[test]
fn the_perfdata_parser_follows_the_guidelines() {
    let ok = parse_perfdata("'a b'=1.5s;10;20;0;30 c=2%;30:;10: 'it''s'=U d=3;~:5;@1:2").unwrap();
    assert_eq!(ok.len(), 4);
    assert_eq!((ok[0].label.as_str(), ok[0].uom.as_str()), ("a b", "s"));
    assert_eq!(ok[1].warn.as_ref().unwrap().start, 30.0);
    assert_eq!(ok[2].label, "it's");
    assert!(ok[2].value.is_none());
    assert!(ok[3].crit.as_ref().unwrap().inside);
    for bad in [
        "a b=1",
        "x=1days",
        "x=1;20:10",
        "x=abc",
        "x=1;;;;;;",
        "'x=1",
        "x=UB",
    ] {
        assert!(parse_perfdata(bad).is_err(), "{bad} accepted");
    }
    assert!(parse_plugin("DISK OK - fine | x=1", 0).is_ok());
    assert!(parse_plugin("DISK OK - fine | x=1", 3).is_err());
    assert!(parse_plugin("fine", 0).is_err());
}

#[test]
fn every_check_command_writes_valid_plugin_output_against_real_servers() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL);
         INSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 500) g;
         CREATE INDEX users_email ON users (email);",
    )
    .unwrap();
    let redis = RedisServer::start().unwrap();
    // 2000 lookups, 1200 of them misses: the keyspace hit ratio (lower is worse) is judged.
    let lua = "for i=1,800 do redis.call('SET','k'..i,'v') end for i=1,2000 do redis.call('GET','k'..i) end return 1";
    let st = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "EVAL", lua, "0"])
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let tls = TlsEndpoint::start(3).unwrap();
    let docker = DockerEngine::start().unwrap();
    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(
        logs.join("app.log"),
        "2025-01-16T10:00:00Z ERROR database timeout\n2025-01-16T10:00:01Z WARN slow request\n",
    )
    .unwrap();
    let repo = d.path().join("backups");
    std::fs::write(
        d.path().join("tej.toml"),
        format!(
            "environment = \"staging\"\n\
             [host]\ndisk_warn_percent = 100.0\ndisk_crit_percent = 100.0\nmemory_warn_percent = 100.0\nmemory_crit_percent = 100.0\n\
             [[database]]\nname = \"main\"\nurl = \"{url}\"\n\
             [[redis]]\nname = \"cache\"\nurl = \"{}\"\n\
             [backup]\nrepositories = [\"{}\"]\n\
             [logs]\npaths = [\"{}\"]\n",
            redis.url(),
            repo.display(),
            logs.display()
        ),
    )
    .unwrap();
    let dir = d.path();
    let ep = tls.endpoint();
    let ca = tls.ca_file().display().to_string();
    let docker_host = docker.host();
    let log_file = logs.join("app.log").display().to_string();

    for args in [
        vec!["host", "check"],
        vec!["logs", "review", &log_file, "--since", "100000h"],
        vec!["db", "health"],
        vec!["db", "size"],
        vec!["db", "bloat"],
        vec!["db", "slow-queries"],
        vec!["db", "indexes"],
        vec!["redis", "info"],
        vec![
            "services",
            "status",
            "--project",
            "tejnagios",
            "--docker-host",
            &docker_host,
        ],
    ] {
        check(dir, &args);
    }

    // A check that cannot run says so on stdout as UNKNOWN (3); with amcheck installed it runs.
    let (code, out, err) = tej(dir, &["db", "amcheck", "--output", "nagios"]);
    let (state, _) = parse_plugin(&out, code).unwrap_or_else(|e| panic!("{e}\n{out}{err}"));
    assert_eq!((code, state.as_str()), (3, "UNKNOWN"), "{out}");
    assert!(out.contains("amcheck"), "{out}");
    pg.psql("app", "CREATE EXTENSION amcheck;").unwrap();
    check(dir, &["db", "amcheck"]);

    // The keyspace hit ratio (40%) is below both thresholds: critical, and `N:` ranges.
    let (code, state, perf) = check(dir, &["redis", "info"]);
    let hit = perf
        .iter()
        .find(|p| p.label == "redis_keyspace_hit_ratio")
        .unwrap_or_else(|| panic!("{perf:?}"));
    assert_eq!(hit.warn.as_ref().unwrap().text, "0.8:");
    assert_eq!(hit.crit.as_ref().unwrap().text, "0.5:");
    assert_eq!((code, state.as_str()), (2, "CRITICAL"), "{hit:?}");

    // Days left on a certificate: lower is worse (`N:`); the thresholds scale with the
    // certificate's lifetime, so 3 days of a 4-day certificate is still OK.
    let (code, state, perf) = check(dir, &["tls", "check", &ep, "--ca", &ca]);
    let days = perf
        .iter()
        .find(|p| p.label.starts_with("tls_cert_days_left"))
        .unwrap_or_else(|| panic!("{perf:?}"));
    assert!(days.warn.as_ref().unwrap().text.ends_with(':'), "{days:?}");
    assert!(days.crit.as_ref().unwrap().text.ends_with(':'), "{days:?}");
    assert_eq!((code, state.as_str()), (0, "OK"), "{perf:?}");

    // No backup yet: the daily check is CRITICAL (2), as `tej health` and `tej run daily`.
    let (code, state, _) = check(dir, &["health", "--timeout", "20"]);
    assert_eq!((code, state.as_str()), (2, "CRITICAL"));
    let (code, _, _) = check(dir, &["run", "daily", "--timeout", "20"]);
    assert_eq!(code, 2);

    // A backup that verifies is OK; a damaged one is CRITICAL, not UNKNOWN.
    let (code, out, err) = tej(dir, &["backup", "create"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, state, perf) = check(dir, &["backup", "verify", "latest"]);
    assert_eq!((code, state.as_str()), (0, "OK"));
    assert!(
        perf.iter().any(|p| p.label.starts_with("verified_objects")),
        "{perf:?}"
    );
    let dump = walk(&repo)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains("dump"))
        })
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .unwrap_or_else(|| panic!("no dump object under {}", repo.display()));
    let mut bytes = std::fs::read(&dump).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&dump, bytes).unwrap();
    let (code, out, err) = tej(dir, &["backup", "verify", "latest", "--output", "nagios"]);
    let (state, _) = parse_plugin(&out, code).unwrap_or_else(|e| panic!("{e}\n{out}{err}"));
    assert_eq!((code, state.as_str()), (2, "CRITICAL"), "{out}{err}");

    // Usage errors are UNKNOWN (3), never clap's 2 (which reads as CRITICAL).
    for args in [
        &["--output", "nagios", "db", "health", "--no-such-flag"][..],
        &["db", "health", "--output=nagios", "--no-such-flag"],
        &["-o", "nagios", "db", "--no-such-flag", "health"],
    ] {
        let (code, _, err) = tej(dir, args);
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(err.contains("--no-such-flag"), "{err}");
    }
    let (code, _, _) = tej(dir, &["db", "health", "--no-such-flag"]);
    assert_eq!(
        code, 2,
        "without Nagios output a usage error stays clap's 2"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

//! Helpers shared by the logical backup integration tests.
#![allow(dead_code)]

use anyhow::{Context, Result, ensure};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tej_backup::{DbTarget, EncryptionOptions, LockOptions, Repository, RunOptions};
use tej_backup::{S3Location, S3Options, S3Store};
use tej_core::{Secret, SecretRef};
use tej_testkit::{PgCluster, S3Server};

/// A small but varied schema: sequences, FKs, indexes, a view, text, bytea, jsonb, NULLs.
pub const SOURCE_SQL: &str = r#"
CREATE TABLE users (
  id serial PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL UNIQUE,
  password_hash text NOT NULL,
  bio text,
  avatar bytea,
  prefs jsonb,
  created_at timestamptz NOT NULL DEFAULT '2025-01-01T00:00:00Z'
);
CREATE TABLE skills (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE user_skills (
  user_id int REFERENCES users(id) ON DELETE CASCADE,
  skill_id int REFERENCES skills(id),
  level smallint CHECK (level BETWEEN 1 AND 5),
  PRIMARY KEY (user_id, skill_id)
);
CREATE TABLE messages (
  id bigserial PRIMARY KEY,
  sender int REFERENCES users(id),
  body text NOT NULL,
  sent_at timestamptz NOT NULL
);
CREATE INDEX messages_sender_idx ON messages (sender, sent_at);
CREATE VIEW active_users AS SELECT u.id, u.name FROM users u WHERE u.bio IS NOT NULL;
INSERT INTO users (name, email, password_hash, bio, avatar, prefs)
  SELECT 'User ' || i, 'user' || i || '@example.com', md5('pw' || i),
         CASE WHEN i % 7 = 0 THEN NULL ELSE repeat('I teach ' || md5(i::text) || ' and learn. ', 1 + i % 5) END,
         CASE WHEN i % 3 = 0 THEN decode(md5(i::text), 'hex') END,
         jsonb_build_object('theme', CASE WHEN i % 2 = 0 THEN 'dark' ELSE 'light' END, 'n', i)
  FROM generate_series(1, 1500) i;
INSERT INTO skills (name) SELECT 'skill-' || i FROM generate_series(1, 60) i;
INSERT INTO user_skills SELECT u, 1 + (u * 7) % 60, 1 + u % 5 FROM generate_series(1, 1500) u;
INSERT INTO messages (sender, body, sent_at)
  SELECT 1 + i % 1500, 'Hello ' || md5(i::text) || E'\n' || repeat('lorem ipsum ', i % 20) || 'ünïcødé ✓',
         '2025-01-01T00:00:00Z'::timestamptz + i * interval '1 minute'
  FROM generate_series(1, 4000) i;
"#;

/// A cluster with database `src` filled with [`SOURCE_SQL`].
pub fn cluster_with_source() -> Result<PgCluster> {
    let pg = PgCluster::start().context("start PostgreSQL")?;
    pg.create_database("src")?;
    pg.psql("src", SOURCE_SQL)?;
    Ok(pg)
}

/// `pg_dump` (plain, schema and data) of `db`, without the per-run `\restrict` keys.
pub fn dump_text(pg: &PgCluster, db: &str) -> Result<String> {
    let out = std::process::Command::new(PgCluster::bin_dir().join("pg_dump"))
        .arg(format!("--dbname={}", pg.url(db)))
        .output()
        .context("run pg_dump")?;
    ensure!(
        out.status.success(),
        "pg_dump {db}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Asserts that `restored` holds the same schema and data as `src`.
pub fn assert_same_as_source(pg: &PgCluster, restored: &str) -> Result<()> {
    let a = dump_text(pg, "src")?;
    let b = dump_text(pg, restored)?;
    ensure!(a.len() > 100_000, "the source dump is suspiciously small");
    if a != b {
        let first = a
            .lines()
            .zip(b.lines())
            .position(|(x, y)| x != y)
            .unwrap_or(0);
        anyhow::bail!(
            "dump of {restored} differs from src at line {first}: {:?} vs {:?}",
            a.lines().nth(first),
            b.lines().nth(first)
        );
    }
    Ok(())
}

/// An S3 repository in a fresh bucket of `s3`.
pub async fn s3_repo(s3: &S3Server, prefix: &str) -> Result<Repository> {
    let bucket = s3.unique_bucket("tejbk")?;
    let opts = S3Options {
        endpoint: Some(s3.endpoint()),
        region: Some(s3.region().to_string()),
        force_path_style: true,
        access_key: Some(s3.access_key().to_string()),
        secret_key: Some(Secret::new(s3.secret_key())),
        part_size: 5 << 20,
        max_attempts: 3,
        retry_initial_delay: Duration::from_millis(10),
        ..S3Options::default()
    };
    let store = S3Store::connect(S3Location::new(bucket, prefix)?, opts).await?;
    Ok(Repository::from_store(Arc::new(store)))
}

/// An age key pair: options that encrypt to it and decrypt with it.
pub fn age_keys(dir: &Path) -> Result<EncryptionOptions> {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let path = dir.join("backup.key");
    std::fs::write(&path, id.to_string().expose_secret())?;
    Ok(EncryptionOptions {
        recipients: vec![id.to_public().to_string()],
        identity: Some(SecretRef::File { file: path }),
        ..EncryptionOptions::default()
    })
}

/// Run options for tests: no leftovers grace period.
pub fn run_opts(target: &str) -> RunOptions {
    RunOptions {
        target: Some(target.to_string()),
        lock: LockOptions::default(),
        cleanup_older_than: Duration::ZERO,
        ..RunOptions::default()
    }
}

/// The database target of `db` in `pg`.
pub fn db(pg: &PgCluster, db: &str) -> DbTarget {
    DbTarget::new(pg.url(db))
}

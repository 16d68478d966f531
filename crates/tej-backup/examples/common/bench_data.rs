//! Shared by the backup benchmarks (`bench_backup`, `bench_physical`): the generated
//! text-heavy database and the statistics they report. Included with `#[path]`.

use anyhow::Result;
use tej_testkit::PgCluster;

const WORDS: &str = "skill swap teach learn guitar python cooking spanish photography yoga \
chess painting rust postgres design marketing writing french piano knitting gardening \
baking running climbing math physics history drawing singing dance javascript excel \
negotiation public speaking carpentry welding sewing calligraphy origami meditation \
I you we they love like want need can will would should really very just also because \
when where how what why who which this that these those the a an and or but with for \
from about into over after before during between through under again further then once \
hello thanks sure great awesome tomorrow today weekend morning evening session lesson \
available schedule meet online offline coffee library park studio home office zoom";

/// Fills database `skillswap` of `pg` with about `mb` MiB of users, skills and messages of
/// varied text (not pgbench rows, which compress 50:1 and hide the compressor's cost).
pub fn generate(pg: &PgCluster, mb: u64) -> Result<()> {
    // ~80% of the bytes in messages (~190 bytes each), ~20% in users (~420 bytes each).
    let messages = mb * 1024 * 1024 * 8 / 10 / 190;
    let users = (mb * 1024 * 1024 * 2 / 10 / 420).max(1000);
    let words: Vec<String> = WORDS.split_whitespace().map(|w| format!("'{w}'")).collect();
    let sql = format!(
        r#"
SET synchronous_commit = off;
CREATE TABLE words AS SELECT ARRAY[{words}]::text[] AS w;
-- 20000 fragments of random words (~300 bytes each); rows take slices of them.
CREATE TABLE frags AS
  SELECT f AS id, string_agg((SELECT w FROM words)[1 + floor(random() * {nw})::int], ' ') AS t
  FROM generate_series(0, 19999) f, generate_series(1, 50) k GROUP BY f;
ALTER TABLE frags ADD PRIMARY KEY (id);
CREATE TABLE users (
  id serial PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE,
  password_hash text NOT NULL, bio text, created_at timestamptz NOT NULL);
CREATE TABLE skills (id serial PRIMARY KEY, name text NOT NULL UNIQUE, description text);
CREATE TABLE messages (id bigserial PRIMARY KEY, sender int NOT NULL, recipient int NOT NULL,
  body text NOT NULL, sent_at timestamptz NOT NULL);
INSERT INTO skills (name, description)
  SELECT 'skill-' || i, f.t FROM generate_series(1, 500) i JOIN frags f ON f.id = i;
INSERT INTO users (name, email, password_hash, bio, created_at)
  SELECT initcap(split_part(f.t, ' ', 1)) || ' ' || initcap(substr(md5(i::text), 1, 8)),
         'user' || i || '.' || substr(md5(i::text), 1, 6) || '@example.com',
         '$2b$12$' || substr(encode(sha256(i::text::bytea), 'base64'), 1, 53),
         f.t || ' ' || g.t,
         '2020-01-01'::timestamptz + (i % 1826) * interval '1 day'
  FROM generate_series(1, {users}) i
  JOIN frags f ON f.id = (i::bigint * 7919) % 20000
  JOIN frags g ON g.id = (i::bigint * 104729) % 20000;
INSERT INTO messages (sender, recipient, body, sent_at)
  SELECT 1 + (i::bigint * 31) % {users}, 1 + (i::bigint * 17) % {users},
         substr(f.t, 1 + (i % 60), 40 + ((i::bigint * 13) % 260)::int) || ' #' || substr(md5(i::text), 1, 4),
         '2023-01-01'::timestamptz + i * interval '13 seconds'
  FROM generate_series(1, {messages}) i
  JOIN frags f ON f.id = (i::bigint * 2654435761) % 20000;
CREATE INDEX messages_sender ON messages (sender, sent_at);
DROP TABLE frags; DROP TABLE words;
"#,
        words = words.join(","),
        nw = words.len(),
    );
    pg.psql("skillswap", &sql)?;
    Ok(())
}

/// The median (upper middle for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Bytes as MiB.
pub fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

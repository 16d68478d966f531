//! # tej-db
//!
//! PostgreSQL and Redis health checks and maintenance for tej, as typed async libraries.
//! Callers get report structs (`Serialize`) and [`tej_core::Finding`]s; the SQL stays here.
//!
//! The PostgreSQL half ([`pg`]) checks what a DBA checks every day (reachability, connections,
//! wraparound, who pins the xmin horizon, blocking locks, archiver, checksums, invalid indexes,
//! sequences), audits size, bloat, slow queries and indexes weekly, and runs maintenance as
//! guarded [`tej_core::Step`]s (VACUUM, REINDEX CONCURRENTLY, VACUUM FULL, amcheck, the
//! forced password reset).
//!
//! ## Connecting
//!
//! [`PgConnectOptions`] reads a connection string as libpq does, URL
//! (`postgresql://user@host:port/db?sslmode=verify-full`) or keywords (`host=... dbname=...`),
//! and every PostgreSQL connection of tej (the pool, dedicated sessions, the base-backup
//! session) is opened from it. Keywords: `host`, `hostaddr`, `port`, `dbname`, `user`,
//! `password`, `passfile`, `service`, `connect_timeout`, `application_name`,
//! `fallback_application_name`, `options`, `sslmode`, `sslrootcert`, `sslcert`, `sslkey`,
//! `sslnegotiation`, `channel_binding`, `target_session_attrs` (`any`, `read-write`,
//! `read-only`), `load_balance_hosts`, `keepalives*`, `tcp_user_timeout`, and
//! `client_encoding` (UTF8) and `gssencmode` (`disable`, `prefer`) as far as tej supports
//! them; any other keyword is an error.
//!
//! - Precedence, libpq's: the connection string, then the service it or `PGSERVICE` names
//!   (`PGSERVICEFILE` or `~/.pg_service.conf`, else `PGSYSCONFDIR/pg_service.conf`), then
//!   the `PG*` variables of [`tej_core::libpq::ENV_KEYWORDS`] (`PGHOST`, `PGPORT`,
//!   `PGSSLMODE`, `PGSSLROOTCERT`, `PGCONNECT_TIMEOUT`, `PGAPPNAME`, ...), then the defaults
//!   (the socket directory or `localhost`, port 5432, the OS user, `sslmode=prefer`).
//! - Password: the string's, [`PgConnectOptions::with_password`], the service's,
//!   `PGPASSWORD`, then the password file (`passfile`, `PGPASSFILE` or `~/.pgpass`;
//!   ignored with a warning when the group or others can read it).
//! - `sslmode`: `disable` plain; `allow` plain, TLS if the server refuses plain; `prefer`
//!   TLS if offered, plain if TLS fails or is refused; `require` TLS; `verify-ca` TLS with
//!   the chain checked against `sslrootcert` (default `~/.postgresql/root.crt`, `system` for
//!   the system's CAs); `verify-full` also the host name. As in libpq, a root certificate
//!   file that exists turns chain verification on in every mode. `sslcert`/`sslkey`
//!   (default `~/.postgresql/postgresql.crt`/`.key`) present a client certificate; the key
//!   must be 0600. TLS uses rustls with the `ring` provider; unix sockets are never TLS.
//!
//! ```no_run
//! use tej_db::pg::{check_health, HealthOptions, PgClient, PgConnectOptions};
//!
//! # async fn run() -> Result<(), tej_db::pg::DbError> {
//! let client = PgClient::new(&PgConnectOptions::new("postgres://tej@127.0.0.1:5432/app"))?;
//! let report = check_health(&client, &HealthOptions::default()).await;
//! for f in report.report().problems() {
//!     println!("{}: {}", f.check, f.summary);
//! }
//! # Ok(())
//! # }
//! ```

mod error;
pub mod pg;
pub mod redis;

pub use error::DbError;
pub use pg::{PgAdmin, PgClient, PgConnectOptions, PgSession};

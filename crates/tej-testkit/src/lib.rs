//! Real servers on loopback for tej's integration tests: a throwaway PostgreSQL 15
//! cluster (serving TLS with certificates of a test CA, [`TestCa`], when asked), Redis,
//! S3-compatible servers (s3s-fs, and moto for what s3s-fs lacks such as listing
//! multipart uploads), a private Docker engine and a TLS endpoint with a certificate of
//! chosen lifetime.
//!
//! Each server gets its own free port on `127.0.0.1` and its own temporary directory, so
//! tests run in parallel; it is stopped and its directory removed when the handle is
//! dropped. A missing server binary is an error that names the package to install, never
//! a silent skip. With `TEJ_KEEP_TEST_DIRS=1`, the directory of a server whose test
//! panicked (or which failed to start) is kept and its path printed, for inspection.
//!
//! The API is synchronous (`std::process`), so it works from plain `#[test]` functions
//! and from `#[tokio::test]` alike.
//!
//! ```no_run
//! use tej_testkit::{PgCluster, RedisServer};
//!
//! # fn main() -> anyhow::Result<()> {
//! let pg = PgCluster::start()?;
//! let url = pg.create_database("app")?;
//! pg.psql("app", "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);")?;
//! assert_eq!(pg.psql("app", "SELECT count(*) FROM t")?, "2");
//!
//! let redis = RedisServer::start()?;
//! println!("database {url}, redis {}", redis.url());
//! # Ok(())
//! # }
//! ```

mod docker_engine;
mod moto_server;
mod pg_cluster;
mod pg_tls;
mod port;
mod process;
mod reachable;
mod redis_server;
mod s3_server;
mod scratch;
mod tls_endpoint;

pub use docker_engine::DockerEngine;
pub use moto_server::MotoServer;
pub use pg_cluster::{PgCluster, PgClusterOptions};
pub use pg_tls::{CertFiles, PgServerTls, TestCa};
pub use port::free_port;
pub use process::{is_root, run_as_postgres};
pub use reachable::Reachable;
pub use redis_server::RedisServer;
pub use s3_server::S3Server;
pub use scratch::KEEP_DIRS_ENV;
pub use tls_endpoint::TlsEndpoint;

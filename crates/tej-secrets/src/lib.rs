//! # tej-secrets
//!
//! Safe `.env` editing, staged secret rotation and TLS certificate checks and renewal.
//!
//! - [`EnvFile`]: a `.env` parser and writer that keeps comments, order, quoting and
//!   `export` prefixes byte for byte, and quotes new values the way Docker Compose reads them;
//!   [`update_env_file`] writes atomically with a timestamped backup, keeping mode and owner.
//! - [`generate_secret`]: secrets from the OS CSPRNG (64 bytes of hex by default).
//! - [`Rotator`]: the staged, resumable JWT secret rotation (create → set → test → finish)
//!   over the [`SessionStore`], [`ServiceControl`] and [`AppProbe`] traits, with rollback.
//! - [`probe_tls`]: the served chain, expiry, issuer, SANs, hostname and chain validity of a
//!   `host:port`, with thresholds relative to the certificate's lifetime; [`renew_certificates`]
//!   runs certbot and reloads nginx through the command runner, then probes again.
//!
//! No secret value reaches logs, errors, `Debug` output, reports or the audit log.
//!
//! ```
//! use tej_secrets::{EnvFile, SecretFormat, generate_secret};
//!
//! let text = "# app\nexport JWT_SECRET=old # rotated quarterly\nPORT=3000\n";
//! let mut env = EnvFile::parse(text);
//! assert_eq!(env.render(), text);
//! let new = generate_secret(&SecretFormat::default()).unwrap();
//! env.set("JWT_SECRET", &new).unwrap();
//! assert_eq!(env.get("JWT_SECRET").unwrap(), new);
//! assert!(env.render().ends_with(" # rotated quarterly\nPORT=3000\n"));
//! assert!(!format!("{env:?}").contains(new.expose()));
//! ```

pub mod dotenv;
pub mod envfile;
pub mod error;
pub mod generate;
pub mod rotation;
pub mod rotation_config;
pub mod tls;

pub use dotenv::{EnvFile, Quote, encode_value, is_valid_key};
pub use envfile::{
    NEW_FILE_MODE, UpdateOptions, UpdateReport, backup_file, backup_path, list_backups,
    prune_backups, read_env_file, restore_backup, update_env_file,
};
pub use error::{Result, SecretsError};
pub use generate::{ALPHANUMERIC, MIN_BITS, SecretFormat, generate_secret};
pub use rotation::{
    AppProbe, Expiry, HttpAppProbe, HttpProbeConfig, RotateOptions, RotationLock, RotationMode,
    RotationOutcome, RotationReport, RotationState, RotationStep, Rotator, ServiceControl,
    ServiceEnv, ServiceEnvVar, SessionInvalidation, SessionStore, Stage, default_lock_path,
    default_state_path, value_digest,
};
pub use tls::{
    CertFileComparison, CertInfo, ExpiryThresholds, ReloadMethod, RenewOptions, RenewReport,
    RenewStep, RenewTarget, TlsProbe, TlsProbeOptions, compare_with_file, hostname_matches,
    probe_tls, read_pem_chain, renew_certificates, tls_report,
};

#[cfg(any(test, feature = "mock"))]
pub use rotation::{MockAppProbe, MockServiceControl, MockSessionStore};

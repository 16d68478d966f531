//! # tej-deploy
//!
//! Docker Compose services over the Docker Engine API (bollard; never the docker CLI):
//! what the runbook does with `docker-compose ps|logs|restart|up -d --force-recreate|exec`
//! and `docker image prune`, plus a zero-downtime deploy with rollback.
//!
//! - [`BollardRuntime`] connects to the engine the docker CLI would use ([`engine`]: the
//!   configured host, `DOCKER_HOST` with its TLS variables, the docker context, the local
//!   socket; unix, tcp, TLS and ssh), negotiating the API version (Debian's engine speaks 1.41). It implements the two narrow traits every
//!   function here takes, [`ContainerRuntime`] and [`ImageStore`] (mockall mocks behind the
//!   `mock` feature).
//! - [`Project`] finds a Compose project's containers by their labels
//!   (`com.docker.compose.project`/`service`, one-off containers excluded): status
//!   ([`ProjectStatus`]: state, health, restarts, uptime, image and its age, ports), logs
//!   (last N or since a time, timestamped, merged in time order), restart, force-recreate
//!   with the inspected configuration, exec (`pg_isready`, `redis-cli ping`).
//! - [`prune_images`] removes unused images older than a cutoff and dangling ones, and
//!   reports the reclaimable space; never an image a container or the rollback path uses.
//! - [`recover_service`]: the "service down" emergency (check, restart, force-recreate).
//! - [`Deployer`]: zero-downtime deploy and rollback with gates, a lock and the audit log.
//! - [`DeployOptions::from_config`] and [`Deployer::from_config`]: a `[[deploy.service]]` of
//!   `tej.toml` as options and a deployer (switch, lock directory, gates), the one place
//!   configuration becomes a deploy.
//!
//! ## Zero downtime with host networking
//!
//! The platform's containers use host networking, so two containers of one service cannot
//! listen on the same port. tej-deploy therefore runs each service **blue/green on two
//! loopback ports** ([`BlueGreenPorts`], e.g. 3000 and 3001) chosen through an environment
//! variable (`PORT`) that the service (and its healthcheck, `wget -q -O-
//! http://127.0.0.1:$PORT/health`) reads, and keeps a **traffic switch** in front:
//!
//! 1. the new container starts beside the old one, with the old one's configuration
//!    (inspected: env, command, labels, mounts, network mode, healthcheck, restart policy,
//!    the rest of the host configuration) but the new image and the other port;
//! 2. once it is healthy (Docker healthcheck or HTTP probe, within a deadline) the
//!    [`TrafficSwitch`] atomically sends new connections to it; in-flight connections to the
//!    old container finish (drain) before it is stopped and removed.
//!
//! Two switches exist: [`NginxUpstream`] rewrites an nginx `upstream` file, checks it with
//! `nginx -t` and reloads gracefully (the production setup: nginx already fronts the site);
//! [`TcpProxy`] is a small in-process TCP proxy counting connections per upstream, used when
//! tej itself fronts the service and by the integration tests, whose client polls through it
//! during a deploy and must see no failed request. Anything that fails before the switch
//! (or in the post-deployment gates, while the old container still runs) removes the new
//! container, keeps the old one serving and reports the new container's last log lines.
//! The old image is tagged `tej-rollback/PROJECT-SERVICE:previous`, which
//! [`Deployer::rollback`] deploys the same way and [`prune_images`] never removes.
//!
//! The new container gets the next Compose replica name (`shop-backend-2`) and number
//! label, so `docker compose ps` lists it; a later `docker compose up` may still recreate it
//! from the Compose file, which the operator should update to the deployed image tag.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tej_deploy::{BlueGreenPorts, BollardRuntime, Deployer, DeployOptions, HealthProbe,
//!     LogQuery, Project, TcpProxy};
//!
//! # async fn demo() -> Result<(), tej_deploy::DeployError> {
//! let docker = Arc::new(BollardRuntime::connect(None).await?);
//! let project = Project::new("skillswap");
//! let status = project.status(&*docker, &*docker, jiff::Timestamp::now()).await?;
//! println!("{}", status.report().severity());
//! for line in project.logs(&*docker, Some("backend"), &LogQuery::tail(100)).await? {
//!     println!("{} {}", line.container, line.text);
//! }
//!
//! let proxy = Arc::new(TcpProxy::bind("127.0.0.1:8080".parse().unwrap(),
//!     "127.0.0.1:3000".parse().unwrap()).await?);
//! let deployer = Deployer::new(docker.clone(), docker.clone(), proxy, "/var/lib/tej/locks");
//! let mut opts = DeployOptions::new("skillswap", "backend", "skillswap-backend:v42",
//!     BlueGreenPorts { env: "PORT".into(), ports: [3000, 3001] });
//! opts.probe = HealthProbe::Http { path: "/health".into() };
//! opts.migration = Some(vec!["npx".into(), "prisma".into(), "migrate".into(), "deploy".into()]);
//! let report = deployer.deploy(&opts).await;
//! println!("{}", report.summary());
//! # Ok(())
//! # }
//! ```

pub mod compose;
pub mod deploy;
pub mod docker;
pub mod engine;
pub mod error;
pub mod gates;
pub mod health;
pub mod images;
pub mod lock;
pub mod model;
pub mod options;
pub mod recover;
pub mod restart;
pub mod runtime;
pub mod switch;

pub use compose::{
    ContainerStatus, EnvOverride, Project, ProjectStatus, RecreateOptions, Recreated,
    apply_env_overrides,
};
pub use deploy::{
    BlueGreenPorts, DeployEvent, DeployKind, DeployOptions, DeployOutcome, DeployReport,
    DeployStage, DeployStep, Deployer,
};
pub use docker::BollardRuntime;
pub use engine::{
    DEFAULT_DOCKER_HOST, Engine, EngineSource, EngineTls, EngineTransport, SshTarget,
    resolve_engine, resolve_engine_with,
};
pub use error::DeployError;
pub use gates::{
    BackupFreshness, CommandGate, ExecGate, FreshBackupGate, Gate, GateContext, GateResult,
    HttpHealthGate, LogErrorsGate, run_gates,
};
pub use health::{HealthProbe, HealthWait, http_get_status, wait_healthy};
pub use images::{
    PruneCandidate, PruneImagesStep, PruneOptions, PruneReport, ROLLBACK_REPO_PREFIX, ROLLBACK_TAG,
    prune_images, rollback_repo,
};
pub use lock::DeployLock;
pub use model::{
    ContainerDetails, ContainerListing, ContainerSpec, ContainerState, Control, ExecOutput,
    HealthStatus, HealthcheckSpec, ImageDefaults, ImageInfo, LABEL_NUMBER, LABEL_ONEOFF,
    LABEL_PROJECT, LABEL_SERVICE, LogLine, LogQuery, LogStream, short_id,
};
pub use options::{deploy_lock_dir, deploy_service};
pub use recover::{
    RecoverOptions, RecoverServiceStep, RecoveryAction, RecoveryReport, recover_service,
};
pub use restart::RestartServiceStep;
pub use runtime::{ContainerRuntime, ImageStore};
pub use switch::{NginxUpstream, TcpProxy, TrafficSwitch};

#[cfg(any(test, feature = "mock"))]
pub use gates::{MockBackupFreshness, MockGate};
#[cfg(any(test, feature = "mock"))]
pub use runtime::{MockContainerRuntime, MockImageStore};
#[cfg(any(test, feature = "mock"))]
pub use switch::MockTrafficSwitch;

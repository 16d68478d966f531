//! The secret rotation put together from `tej.toml`, the same for `tej secrets rotate`, the
//! quarterly procedure, the security-breach emergency and the examples: tej-secrets'
//! [`Rotator`] over Redis sessions ([`RedisSessions`]), the Compose backend
//! ([`ComposeService`]) and the application's HTTP checks, with the options of
//! [`RotateOptions::from_config`].

use crate::adapters::{ComposeService, RedisSessions};
use crate::error::Result;
use std::sync::Arc;
use tej_core::{AuditLog, Config, Guard};
use tej_db::redis::RedisAdmin;
use tej_deploy::{ContainerRuntime, Project};
use tej_secrets::{HttpAppProbe, HttpProbeConfig, RotateOptions, RotationMode, Rotator};

/// The rotator of the configured application.
pub type ConfiguredRotator = Rotator<RedisSessions, ComposeService, HttpAppProbe>;

/// The rotator and options `tej.toml` describes, in `mode`: sessions dropped in
/// `sessions`, the `[compose]` backend recreated on `containers`, the application checked
/// at `[secrets] app_url` with the test account; the error names the missing setting.
pub fn rotation_from_config(
    cfg: &Config,
    mode: RotationMode,
    sessions: Arc<dyn RedisAdmin>,
    containers: Arc<dyn ContainerRuntime>,
    guard: &Guard,
    audit: Option<AuditLog>,
) -> Result<(ConfiguredRotator, RotateOptions)> {
    let opts = RotateOptions::from_config(cfg, mode)?;
    let probe = HttpAppProbe::new(HttpProbeConfig::from_config(cfg)?)?;
    // RotateOptions::from_config found [compose].
    let project = cfg
        .compose
        .as_ref()
        .map(|c| c.project.clone())
        .unwrap_or_default();
    let service = ComposeService::new(containers, Project::new(project));
    let mut rotator = Rotator::new(RedisSessions(sessions), service, probe, guard.clone());
    rotator.audit = audit;
    Ok((rotator, opts))
}

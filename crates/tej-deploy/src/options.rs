//! `tej.toml` to deploy options: the one place a `[[deploy.service]]` becomes a
//! [`DeployOptions`] and a [`Deployer`] (traffic switch, lock directory, gates), for the CLI,
//! the runbook and the examples alike.

use crate::deploy::{BlueGreenPorts, DeployOptions, Deployer};
use crate::error::DeployError;
use crate::gates::{CommandGate, HttpHealthGate, LogErrorsGate};
use crate::health::{HealthProbe, HealthWait};
use crate::runtime::{ContainerRuntime, ImageStore};
use crate::switch::NginxUpstream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tej_core::config::DeployServiceConfig;
use tej_core::{CommandRunner, CommandSpec, Config};

/// The `[[deploy.service]]` called `name`; the error names the configured ones.
pub fn deploy_service<'a>(
    cfg: &'a Config,
    name: &str,
) -> Result<&'a DeployServiceConfig, DeployError> {
    cfg.deploy
        .service(name)
        .ok_or_else(|| DeployError::UnknownService {
            name: name.to_string(),
            configured: if cfg.deploy.services.is_empty() {
                "none".to_string()
            } else {
                cfg.deploy
                    .services
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}

/// The deploy lock directory: `[deploy] lock_dir`, else `STATE_DIR/locks`, else
/// `/var/lib/tej/locks`.
pub fn deploy_lock_dir(cfg: &Config) -> PathBuf {
    cfg.deploy
        .lock_dir
        .clone()
        .or_else(|| cfg.state_dir.as_ref().map(|d| d.join("locks")))
        .unwrap_or_else(|| PathBuf::from("/var/lib/tej/locks"))
}

impl DeployOptions {
    /// The options of the `[[deploy.service]]` called `service` in Compose project
    /// `project` (`None`: `[compose] project`), deploying `image` (`None` for a rollback).
    pub fn from_config(
        cfg: &Config,
        service: &str,
        project: Option<&str>,
        image: Option<&str>,
    ) -> Result<DeployOptions, DeployError> {
        let svc = deploy_service(cfg, service)?;
        let project = match project {
            Some(p) => p.to_string(),
            None => cfg
                .compose
                .as_ref()
                .map(|c| c.project.clone())
                .ok_or_else(|| DeployError::Config {
                    reason: "no Compose project: set [compose] project in tej.toml".into(),
                })?,
        };
        let mut o = DeployOptions::new(
            project,
            svc.name.clone(),
            image.unwrap_or_default(),
            BlueGreenPorts {
                env: svc.port_env.clone(),
                ports: svc.ports,
            },
        );
        o.probe = match &svc.health_path {
            Some(path) => HealthProbe::Http { path: path.clone() },
            None => HealthProbe::Docker,
        };
        o.health = HealthWait {
            deadline: Duration::from_secs(svc.health_timeout_secs),
            ..HealthWait::default()
        };
        o.migration = svc.migrate.clone();
        o.migration_timeout = Duration::from_secs(svc.migrate_timeout_secs);
        o.stop_timeout = Duration::from_secs(svc.stop_timeout_secs);
        o.drain_timeout = Duration::from_secs(svc.drain_timeout_secs);
        Ok(o)
    }
}

impl Deployer {
    /// The deployer of the `[[deploy.service]]` called `service`: the engine, the nginx
    /// switch, the lock directory, the environment's name, and the gates its configuration
    /// asks for (`test_command`, `public_addr` with `health_path`, `log_window_secs`). The
    /// fresh-backup gate (`backup_max_age_hours`) reads another domain's catalogue: the
    /// caller adds it (tej-runbook does). No audit log: a deploy runs as a step under an
    /// executor, which audits it.
    pub fn from_config(
        cfg: &Config,
        service: &str,
        containers: Arc<dyn ContainerRuntime>,
        images: Arc<dyn ImageStore>,
        runner: Arc<dyn CommandRunner>,
    ) -> Result<Deployer, DeployError> {
        let svc = deploy_service(cfg, service)?;
        let switch = Arc::new(NginxUpstream {
            conf_path: svc.nginx_upstream_file.clone(),
            upstream_name: svc.upstream_name().to_string(),
            runner: runner.clone(),
            program: svc.nginx_program.clone(),
            drain_grace: Duration::from_secs(svc.drain_timeout_secs),
        });
        let mut d = Deployer::new(containers.clone(), images, switch, deploy_lock_dir(cfg));
        d.environment = cfg.environment.to_string();
        if let Some(argv) = &svc.test_command {
            let (program, args) = argv.split_first().ok_or_else(|| DeployError::Config {
                reason: "test_command is an empty command".into(),
            })?;
            let mut spec = CommandSpec::new(program.clone())
                .args(args.iter().cloned())
                .timeout(Duration::from_secs(svc.test_timeout_secs));
            if let Some(dir) = &svc.test_dir {
                spec = spec.cwd(dir.clone());
            }
            d.pre_gates.push(Box::new(CommandGate {
                name: "tests".into(),
                runner,
                spec,
            }));
        }
        if let (Some(addr), Some(path)) = (&svc.public_addr, &svc.health_path) {
            let addr = addr.parse().map_err(|_| DeployError::Config {
                reason: format!("public_addr {addr:?} is not IP:PORT"),
            })?;
            d.post_gates.push(Box::new(HttpHealthGate {
                addr: Some(addr),
                path: path.clone(),
                timeout: Duration::from_secs(10),
            }));
        }
        if let Some(secs) = svc.log_window_secs.filter(|s| *s > 0) {
            d.post_gates.push(Box::new(LogErrorsGate {
                containers,
                window: Duration::from_secs(secs),
                pattern: LogErrorsGate::default_pattern(),
            }));
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        let text = format!(
            "state_dir = \"/srv/tej\"\n[compose]\nproject = \"shop\"\n[[deploy.service]]\nname = \"backend\"\nports = [3000, 3001]\nnginx_upstream_file = \"/u.conf\"\n{extra}"
        );
        Config::from_toml_with_env(&text, "t.toml", &|_| None).unwrap()
    }

    #[test]
    fn options_follow_the_service_config() {
        let c = cfg(
            "health_path = \"/health\"\nhealth_timeout_secs = 7\nmigrate = [\"npx\", \"prisma\", \"migrate\", \"deploy\"]\nstop_timeout_secs = 3\n",
        );
        let o = DeployOptions::from_config(&c, "backend", Some("other"), Some("b:v2")).unwrap();
        assert_eq!((o.project.as_str(), o.image.as_str()), ("other", "b:v2"));
        assert_eq!(o.ports.ports, [3000, 3001]);
        assert_eq!(o.ports.env, "PORT");
        assert_eq!(
            o.probe,
            HealthProbe::Http {
                path: "/health".into()
            }
        );
        assert_eq!(o.health.deadline, Duration::from_secs(7));
        assert_eq!(o.migration.as_ref().unwrap()[0], "npx");
        assert_eq!(o.stop_timeout, Duration::from_secs(3));
        assert_eq!(deploy_lock_dir(&c), PathBuf::from("/srv/tej/locks"));

        let c = cfg("");
        let c = Config {
            deploy: tej_core::config::DeployConfig {
                lock_dir: Some("/run/tej".into()),
                ..c.deploy
            },
            ..c
        };
        let o = DeployOptions::from_config(&c, "backend", None, None).unwrap();
        assert_eq!(o.project, "shop");
        assert_eq!(o.probe, HealthProbe::Docker);
        assert_eq!(o.migration, None);
        assert_eq!(deploy_lock_dir(&c), PathBuf::from("/run/tej"));
        assert_eq!(
            deploy_lock_dir(&Config::default()),
            PathBuf::from("/var/lib/tej/locks")
        );
    }

    #[test]
    fn an_unknown_service_names_the_configured_ones() {
        let e = DeployOptions::from_config(&cfg(""), "worker", None, Some("w:1")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no [[deploy.service]] named \"worker\" in tej.toml (configured: backend)"
        );
        let e = deploy_service(&Config::default(), "web").unwrap_err();
        assert!(e.to_string().ends_with("(configured: none)"), "{e}");
        let no_compose = Config::from_toml_with_env(
            "[[deploy.service]]\nname = \"backend\"\nports = [3000, 3001]\nnginx_upstream_file = \"/u.conf\"\n",
            "t.toml",
            &|_| None,
        )
        .unwrap();
        let e = DeployOptions::from_config(&no_compose, "backend", None, None).unwrap_err();
        assert!(e.to_string().contains("[compose] project"), "{e}");
    }
}

//! `tej.toml` to the guard and executor every mutating run goes through: the environment
//! and maintenance window of the configuration, its audit log, and how this run was asked to
//! behave ([`RunFlags`]); the one place for the CLI, the examples and embedders alike.

use crate::audit::AuditLog;
use crate::calendar::Calendar;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::error::Error;
use crate::procedure::{Executor, Fixed, Guard};
use std::sync::Arc;

/// How a mutating run behaves: what `--dry-run`, `--yes` and `--outside-window` say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunFlags {
    /// Plan only; change nothing.
    pub dry_run: bool,
    /// Destructive steps are confirmed (after reading the plan).
    pub yes: bool,
    /// In production, destructive steps may run outside the maintenance window (audited).
    pub outside_window: bool,
}

impl Guard {
    /// The guard of `cfg` (its environment, its calendar's maintenance window, the system
    /// clock) confirming destructive steps when `flags.yes`.
    pub fn from_config(cfg: &Config, flags: RunFlags) -> Result<Guard, Error> {
        Ok(Guard {
            environment: cfg.environment,
            calendar: Calendar::from_config(cfg)?,
            clock: Arc::new(SystemClock),
            confirmer: Arc::new(Fixed(flags.yes)),
            override_window: flags.outside_window,
        })
    }
}

impl Executor {
    /// An executor under [`Guard::from_config`] that writes `cfg`'s `audit_log`, a dry run
    /// when `flags.dry_run`.
    pub fn from_config(cfg: &Config, flags: RunFlags) -> Result<Executor, Error> {
        let mut ex = Executor::new(Guard::from_config(cfg, flags)?);
        ex.dry_run = flags.dry_run;
        ex.audit = cfg.audit_log.as_ref().map(AuditLog::new);
        Ok(ex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Environment;
    use crate::procedure::{Plan, Risk};

    #[test]
    fn executor_follows_the_configuration_and_the_flags() {
        let cfg = Config::from_toml_with_env(
            "environment = \"production\"\naudit_log = \"/var/log/tej/audit.jsonl\"\n",
            "t.toml",
            &|_| None,
        )
        .unwrap();
        let flags = RunFlags {
            dry_run: true,
            yes: true,
            outside_window: true,
        };
        let ex = Executor::from_config(&cfg, flags).unwrap();
        assert!(ex.dry_run);
        assert_eq!(ex.guard.environment, Environment::Production);
        assert!(ex.guard.override_window);
        assert_eq!(
            ex.audit.as_ref().map(|a| a.path().to_path_buf()),
            Some("/var/log/tej/audit.jsonl".into())
        );
        let plan = Plan {
            step: "s".into(),
            risk: Risk::Destructive,
            target: "t".into(),
            actions: Vec::new(),
        };
        assert!(ex.guard.confirmer.confirm(&plan));

        let ex = Executor::from_config(&Config::default(), RunFlags::default()).unwrap();
        assert!(!ex.dry_run && !ex.guard.override_window && ex.audit.is_none());
        assert!(!ex.guard.confirmer.confirm(&plan));
    }
}

//! Redis maintenance as [`tej_core::Step`]s: session invalidation (mutating) and
//! `FLUSHDB`/`FLUSHALL` (destructive, refused in production unless overridden on purpose).

use super::admin::RedisAdmin;
use super::keys::{
    InvalidateOptions, count_matching, invalidate_sessions, validate_session_pattern,
};
use crate::DbError;
use async_trait::async_trait;
use serde::Serialize;
use std::sync::Arc;
use tej_core::{Environment, Plan, Risk, Step, StepError, StepOutput};

/// Which flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushScope {
    /// `FLUSHDB`: the connection's database.
    Db,
    /// `FLUSHALL`: every database.
    All,
}

impl FlushScope {
    /// The command name.
    pub fn command(self) -> &'static str {
        match self {
            FlushScope::Db => "FLUSHDB",
            FlushScope::All => "FLUSHALL",
        }
    }
}

/// `FLUSHDB` or `FLUSHALL` as a destructive step. In an environment marked production it is
/// refused (in `plan` and in `apply`) unless [`FlushStep::allow_production`] was set on
/// purpose: the runbook allows it "only in development/staging".
pub struct FlushStep {
    admin: Arc<dyn RedisAdmin>,
    scope: FlushScope,
    environment: Environment,
    allow_production: bool,
    target: String,
}

impl FlushStep {
    /// A flush of `scope` on `target` (a display name such as `redis://cache:6379/0`).
    pub fn new(
        admin: Arc<dyn RedisAdmin>,
        scope: FlushScope,
        environment: Environment,
        target: impl Into<String>,
    ) -> FlushStep {
        FlushStep {
            admin,
            scope,
            environment,
            allow_production: false,
            target: target.into(),
        }
    }

    /// Allows the flush in production (an explicit, audited override).
    pub fn allow_production(mut self, yes: bool) -> FlushStep {
        self.allow_production = yes;
        self
    }

    fn check(&self) -> Result<(), DbError> {
        if self.environment == Environment::Production && !self.allow_production {
            return Err(DbError::RedisRefused {
                command: self.scope.command().into(),
                reason: "the environment is production; the runbook allows it only in \
                         development/staging (override on purpose to proceed)"
                    .into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Step for FlushStep {
    fn name(&self) -> String {
        format!("redis-{}", self.scope.command().to_ascii_lowercase())
    }

    fn risk(&self) -> Risk {
        Risk::Destructive
    }

    fn target(&self) -> String {
        self.target.clone()
    }

    async fn plan(&self) -> Result<Plan, StepError> {
        self.check()?;
        let what = match self.scope {
            FlushScope::Db => "delete every key in the selected database",
            FlushScope::All => "delete every key in every database",
        };
        Ok(Plan::of(
            self,
            vec![format!("{} ({what})", self.scope.command())],
        ))
    }

    async fn apply(&self) -> Result<StepOutput, StepError> {
        self.check()?;
        match self.scope {
            FlushScope::Db => self.admin.flush_db().await?,
            FlushScope::All => self.admin.flush_all().await?,
        }
        Ok(StepOutput::summary(format!(
            "{} done on {}",
            self.scope.command(),
            self.target
        )))
    }
}

/// Session invalidation (`SCAN` + `UNLINK` of a pattern) as a mutating step.
pub struct InvalidateSessionsStep {
    admin: Arc<dyn RedisAdmin>,
    opts: InvalidateOptions,
    target: String,
}

impl InvalidateSessionsStep {
    /// Invalidation of `opts.pattern` on `target`.
    pub fn new(
        admin: Arc<dyn RedisAdmin>,
        opts: InvalidateOptions,
        target: impl Into<String>,
    ) -> InvalidateSessionsStep {
        InvalidateSessionsStep {
            admin,
            opts,
            target: target.into(),
        }
    }
}

#[async_trait]
impl Step for InvalidateSessionsStep {
    fn name(&self) -> String {
        "redis-invalidate-sessions".into()
    }

    fn risk(&self) -> Risk {
        Risk::Mutating
    }

    fn target(&self) -> String {
        self.target.clone()
    }

    async fn plan(&self) -> Result<Plan, StepError> {
        validate_session_pattern(&self.opts.pattern)?;
        let n = count_matching(
            self.admin.as_ref(),
            &self.opts.pattern,
            self.opts.scan_count,
        )
        .await?;
        Ok(Plan::of(
            self,
            vec![format!(
                "UNLINK about {n} keys matching {:?} in batches of {} (other keys stay)",
                self.opts.pattern, self.opts.batch
            )],
        ))
    }

    async fn apply(&self) -> Result<StepOutput, StepError> {
        let r = invalidate_sessions(self.admin.as_ref(), &self.opts).await?;
        Ok(StepOutput {
            summary: format!("{} keys matching {:?} removed", r.removed, r.pattern),
            findings: Vec::new(),
            data: serde_json::to_value(&r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::admin::MockRedisAdmin;
    use super::*;

    #[tokio::test]
    async fn flush_is_refused_in_production_without_calling_redis() {
        let mut m = MockRedisAdmin::new();
        m.expect_flush_db().never();
        m.expect_flush_all().never();
        let admin: Arc<dyn RedisAdmin> = Arc::new(m);
        for scope in [FlushScope::Db, FlushScope::All] {
            let s = FlushStep::new(admin.clone(), scope, Environment::Production, "r");
            assert_eq!(s.risk(), Risk::Destructive);
            let e = s.plan().await.unwrap_err().to_string();
            assert!(e.contains("production"), "{e}");
            assert!(s.apply().await.is_err());
        }
    }

    #[tokio::test]
    async fn flush_runs_in_staging_and_with_override() {
        let mut m = MockRedisAdmin::new();
        m.expect_flush_db().times(2).returning(|| Ok(()));
        let admin: Arc<dyn RedisAdmin> = Arc::new(m);
        let s = FlushStep::new(admin.clone(), FlushScope::Db, Environment::Staging, "r");
        assert_eq!(s.plan().await.unwrap().actions.len(), 1);
        s.apply().await.unwrap();
        let s = FlushStep::new(admin, FlushScope::Db, Environment::Production, "r")
            .allow_production(true);
        s.apply().await.unwrap();
    }

    #[tokio::test]
    async fn invalidate_step_plans_without_unlinking() {
        let mut m = MockRedisAdmin::new();
        m.expect_scan()
            .returning(|_, _, _| Ok((0, vec![b"sess:1".to_vec(), b"sess:2".to_vec()])));
        m.expect_unlink().never();
        let s = InvalidateSessionsStep::new(Arc::new(m), InvalidateOptions::default(), "r");
        let plan = s.plan().await.unwrap();
        assert_eq!(plan.risk, Risk::Mutating);
        assert!(
            plan.actions[0].contains("about 2 keys"),
            "{:?}",
            plan.actions
        );
    }
}

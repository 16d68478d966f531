//! Checks declared in `tej.toml` (`[[check]]`): one SQL scalar or one Redis
//! integer compared with thresholds, reported as `custom.<name>`.
//!
//! The queries go through [`QueryRunner`]; tej-db and the Redis wrapper provide
//! the real implementation. Every failure (query error, missing value, timeout,
//! bad declaration) becomes an `Unknown` finding, never a panic or a lost check.

use crate::error::{Result, RunbookError};
use async_trait::async_trait;
use std::time::Duration;
use tej_core::{Config, CustomCheckConfig, Finding, Severity};

/// Runs the queries behind custom checks.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait QueryRunner: Send + Sync {
    /// Runs `sql` on the configured database `database` and returns the first
    /// column of the first row as a number.
    async fn sql_scalar(&self, database: &str, sql: &str) -> Result<f64>;
    /// Runs the Redis command `argv` on the configured instance `instance` and
    /// returns its integer reply.
    async fn redis_integer(&self, instance: &str, argv: &[String]) -> Result<f64>;
}

/// Where checks run when they do not name a database or Redis instance, and how long they may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomCheckOptions {
    /// Database for checks without `database` (the first `[[database]]`).
    pub default_database: Option<String>,
    /// Redis instance for checks without `redis_instance` (the first `[[redis]]`).
    pub default_redis: Option<String>,
    /// Time limit for one check.
    pub timeout: Duration,
}

impl Default for CustomCheckOptions {
    fn default() -> Self {
        CustomCheckOptions {
            default_database: None,
            default_redis: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl CustomCheckOptions {
    /// Defaults taken from the configuration (first database, first Redis).
    pub fn from_config(config: &Config) -> CustomCheckOptions {
        CustomCheckOptions {
            default_database: config.databases.first().map(|d| d.name.clone()),
            default_redis: config.redis.first().map(|r| r.name.clone()),
            ..CustomCheckOptions::default()
        }
    }
}

/// What a check queries, resolved against the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source<'a> {
    Sql {
        database: String,
        sql: &'a str,
    },
    Redis {
        instance: String,
        argv: &'a [String],
    },
}

fn resolve<'a>(check: &'a CustomCheckConfig, opts: &CustomCheckOptions) -> Result<Source<'a>> {
    let bad = |m: &str| RunbookError::BadCheck {
        name: check.name.clone(),
        message: m.to_string(),
    };
    match (&check.sql, &check.redis) {
        (Some(sql), None) => {
            let database = check
                .database
                .clone()
                .or_else(|| opts.default_database.clone())
                .ok_or_else(|| bad("no database named and no [[database]] configured"))?;
            Ok(Source::Sql { database, sql })
        }
        (None, Some(argv)) => {
            if argv.is_empty() {
                return Err(bad("redis command is empty"));
            }
            let instance = check
                .redis_instance
                .clone()
                .or_else(|| opts.default_redis.clone())
                .ok_or_else(|| bad("no redis_instance named and no [[redis]] configured"))?;
            Ok(Source::Redis { instance, argv })
        }
        (Some(_), Some(_)) => Err(bad("declare either sql or redis, not both")),
        (None, None) => Err(bad("declare sql or redis")),
    }
}

fn metric_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Evaluates one check; every failure is an `Unknown` finding.
pub async fn evaluate_custom_check<Q: QueryRunner + ?Sized>(
    queries: &Q,
    check: &CustomCheckConfig,
    opts: &CustomCheckOptions,
) -> Finding {
    let id = format!("custom.{}", check.name);
    let unknown = |target: &str, summary: String| {
        Finding::new(id.clone(), Severity::Unknown, summary).target(target)
    };
    let threshold = check.threshold();
    if let Err(e) = threshold.validate() {
        return unknown("", format!("check {}: {e}", check.name));
    }
    let source = match resolve(check, opts) {
        Ok(s) => s,
        Err(e) => return unknown("", e.to_string()),
    };
    let (target, fut) = match &source {
        Source::Sql { database, sql } => {
            (format!("db:{database}"), queries.sql_scalar(database, sql))
        }
        Source::Redis { instance, argv } => (
            format!("redis:{instance}"),
            queries.redis_integer(instance, argv),
        ),
    };
    let value = match tokio::time::timeout(opts.timeout, fut).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return unknown(
                &target,
                format!("{} could not be measured: {e}", check.name),
            );
        }
        Err(_) => {
            return unknown(
                &target,
                format!("{} did not answer within {:?}", target, opts.timeout),
            );
        }
    };
    if !value.is_finite() {
        return unknown(
            &target,
            format!("{} returned a non-numeric value", check.name),
        );
    }
    let what = check.description.as_deref().unwrap_or(&check.name);
    let unit = if check.unit.is_empty() {
        String::new()
    } else {
        format!(" {}", check.unit)
    };
    Finding::measured(
        id.clone(),
        metric_name(&check.name),
        value,
        check.unit.clone(),
        threshold,
        format!("{what}: {value}{unit}"),
    )
    .target(target)
}

/// Evaluates all checks concurrently, in declaration order.
pub async fn evaluate_custom_checks<Q: QueryRunner + ?Sized>(
    queries: &Q,
    checks: &[CustomCheckConfig],
    opts: &CustomCheckOptions,
) -> Vec<Finding> {
    futures::future::join_all(
        checks
            .iter()
            .map(|c| evaluate_custom_check(queries, c, opts)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use mockall::predicate::*;
    use tej_core::Direction;

    fn sql_check(name: &str, warn: f64, crit: f64) -> CustomCheckConfig {
        CustomCheckConfig {
            name: name.into(),
            sql: Some("SELECT count(*) FROM users".into()),
            database: None,
            redis: None,
            redis_instance: None,
            warn,
            crit,
            direction: Direction::HigherIsWorse,
            unit: "users".into(),
            description: Some("Open reports".into()),
        }
    }

    fn opts() -> CustomCheckOptions {
        CustomCheckOptions {
            default_database: Some("app".into()),
            default_redis: Some("cache".into()),
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn sql_check_against_thresholds() {
        let mut q = MockQueryRunner::new();
        q.expect_sql_scalar()
            .with(eq("app"), eq("SELECT count(*) FROM users"))
            .times(1)
            .returning(|_, _| Ok(42.0));
        let f = evaluate_custom_check(&q, &sql_check("open-reports", 40.0, 100.0), &opts()).await;
        assert_eq!(f.check, "custom.open-reports");
        assert_eq!(f.target, "db:app");
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.summary, "Open reports: 42 users");
        assert_eq!(f.metrics[0].name, "open_reports");
        assert_eq!(f.metrics[0].warn, Some(40.0));
        assert_eq!(f.metrics[0].crit, Some(100.0));
    }

    #[tokio::test]
    async fn redis_check_lower_is_worse_on_named_instance() {
        let mut q = MockQueryRunner::new();
        q.expect_redis_integer()
            .withf(|i, argv| i == "sessions" && argv == ["SCARD".to_string(), "online".to_string()])
            .times(1)
            .returning(|_, _| Ok(3.0));
        let c = CustomCheckConfig {
            sql: None,
            redis: Some(vec!["SCARD".into(), "online".into()]),
            redis_instance: Some("sessions".into()),
            direction: Direction::LowerIsWorse,
            warn: 10.0,
            crit: 5.0,
            ..sql_check("online-users", 0.0, 0.0)
        };
        let f = evaluate_custom_check(&q, &c, &opts()).await;
        assert_eq!(f.target, "redis:sessions");
        assert_eq!(f.severity, Severity::Critical);
    }

    #[tokio::test]
    async fn errors_become_unknown_findings() {
        let mut q = MockQueryRunner::new();
        q.expect_sql_scalar().returning(|_, _| {
            Err(RunbookError::Query(
                "relation \"users\" does not exist".into(),
            ))
        });
        let f = evaluate_custom_check(&q, &sql_check("a", 1.0, 2.0), &opts()).await;
        assert_eq!(f.severity, Severity::Unknown);
        assert!(f.summary.contains("does not exist"), "{}", f.summary);

        let mut q = MockQueryRunner::new();
        q.expect_sql_scalar().returning(|_, _| Ok(f64::NAN));
        let f = evaluate_custom_check(&q, &sql_check("a", 1.0, 2.0), &opts()).await;
        assert_eq!(f.severity, Severity::Unknown);

        // Bad declarations never reach the query runner (the mock has no expectations).
        let q = MockQueryRunner::new();
        let both = CustomCheckConfig {
            redis: Some(vec!["DBSIZE".into()]),
            ..sql_check("both", 1.0, 2.0)
        };
        let neither = CustomCheckConfig {
            sql: None,
            ..sql_check("neither", 1.0, 2.0)
        };
        let reversed = sql_check("reversed", 10.0, 5.0);
        let no_db = sql_check("nodb", 1.0, 2.0);
        for (c, o) in [
            (&both, opts()),
            (&neither, opts()),
            (&reversed, opts()),
            (&no_db, CustomCheckOptions::default()),
        ] {
            let f = evaluate_custom_check(&q, c, &o).await;
            assert_eq!(f.severity, Severity::Unknown, "{}", c.name);
            assert_eq!(f.check, format!("custom.{}", c.name));
        }
    }

    struct Slow;
    #[async_trait]
    impl QueryRunner for Slow {
        async fn sql_scalar(&self, db: &str, _sql: &str) -> Result<f64> {
            if db == "slow" {
                futures::future::pending::<()>().await;
            }
            Ok(1.0)
        }
        async fn redis_integer(&self, _i: &str, _a: &[String]) -> Result<f64> {
            Ok(0.0)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slow_query_times_out_without_hiding_the_others() {
        let slow = CustomCheckConfig {
            database: Some("slow".into()),
            ..sql_check("slow", 10.0, 20.0)
        };
        let fast = sql_check("fast", 10.0, 20.0);
        let f = evaluate_custom_checks(&Slow, &[slow, fast], &opts()).await;
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].severity, Severity::Unknown);
        assert!(
            f[0].summary.contains("db:slow did not answer within 5s"),
            "{}",
            f[0].summary
        );
        assert_eq!(f[1].severity, Severity::Ok);
    }

    #[test]
    fn defaults_from_config() {
        let o = CustomCheckOptions::from_config(&Config::default());
        assert_eq!(o.default_database, None);
        assert_eq!(metric_name("Active-Users 7d"), "active_users_7d");
    }
}

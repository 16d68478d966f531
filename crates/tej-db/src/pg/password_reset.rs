//! The security-breach step: force every user to reset their password, in one transaction,
//! as a destructive (confirmed, audited) step.

use super::{DbError, PgAdmin, PgStatement, Sql, quote_ident, quote_qualified};
use async_trait::async_trait;
use serde::Serialize;
use std::sync::Arc;
use tej_core::{Plan, Risk, Step, StepError, StepOutput};

/// Which table and flag column mark a required password reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PasswordResetOptions {
    /// Users table (`users` or `schema.users`).
    pub table: String,
    /// Boolean column set to true (`password_reset_required`).
    pub column: String,
}

impl Default for PasswordResetOptions {
    fn default() -> Self {
        PasswordResetOptions {
            table: "users".into(),
            column: "password_reset_required".into(),
        }
    }
}

/// What the step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PasswordResetOutcome {
    /// Table.
    pub table: String,
    /// Column.
    pub column: String,
    /// Rows changed (users not already flagged).
    pub rows_changed: u64,
}

/// `UPDATE users SET password_reset_required = true` as a destructive step.
pub struct ForcePasswordResetStep {
    /// The database.
    pub admin: Arc<dyn PgAdmin>,
    /// Table and column.
    pub options: PasswordResetOptions,
}

impl ForcePasswordResetStep {
    fn statements(&self) -> Result<(String, String), DbError> {
        let t = quote_qualified(&self.options.table)?;
        let c = quote_ident(&self.options.column)?;
        Ok((
            format!(
                "SELECT count(*) FILTER (WHERE {c} IS DISTINCT FROM true)::int8 AS changing, count(*)::int8 AS total FROM {t}"
            ),
            format!("UPDATE {t} SET {c} = true WHERE {c} IS DISTINCT FROM true"),
        ))
    }
}

#[async_trait]
impl Step for ForcePasswordResetStep {
    fn name(&self) -> String {
        "force-password-reset".into()
    }
    fn risk(&self) -> Risk {
        Risk::Destructive
    }
    fn target(&self) -> String {
        format!(
            "{} {}.{}",
            self.admin.target(),
            self.options.table,
            self.options.column
        )
    }
    async fn plan(&self) -> Result<Plan, StepError> {
        let (count, update) = self.statements()?;
        let rows = self.admin.query(Sql::owned(count), &[]).await?;
        let r = rows
            .first()
            .ok_or_else(|| DbError::UnexpectedReply("count returned no row".into()))?;
        Ok(Plan::of(
            self,
            vec![format!(
                "{update} -- in one transaction; {} of {} users will have to reset their password",
                r.i64("changing")?,
                r.i64("total")?
            )],
        ))
    }
    async fn apply(&self) -> Result<StepOutput, StepError> {
        let (_, update) = self.statements()?;
        let counts = self
            .admin
            .transaction(&[PgStatement::new(Sql::owned(update), Vec::new())])
            .await?;
        let outcome = PasswordResetOutcome {
            table: self.options.table.clone(),
            column: self.options.column.clone(),
            rows_changed: counts.first().copied().unwrap_or(0),
        };
        Ok(StepOutput {
            summary: format!(
                "{} users must now reset their password ({}.{} set to true)",
                outcome.rows_changed, outcome.table, outcome.column
            ),
            findings: Vec::new(),
            data: serde_json::to_value(&outcome).unwrap_or(serde_json::Value::Null),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::{MockPgAdmin, PgRow, PgValue};
    use tej_core::{Calendar, Environment, Executor, FakeClock, Fixed, Guard, Outcome, Procedure};

    fn guard(yes: bool) -> Guard {
        Guard {
            environment: Environment::Staging,
            calendar: Calendar::runbook(),
            clock: Arc::new(FakeClock::new("2025-01-16T06:30:00Z".parse().unwrap())),
            confirmer: Arc::new(Fixed(yes)),
            override_window: false,
        }
    }

    fn admin(expect_update: bool) -> MockPgAdmin {
        let mut m = MockPgAdmin::new();
        m.expect_target().return_const("db:app@h:5432".to_string());
        m.expect_query().returning(|sql, _| {
            assert!(sql.contains("FROM \"auth\".\"accounts\""), "{sql}");
            Ok(vec![PgRow::from_pairs([
                ("changing", PgValue::Int(7)),
                ("total", PgValue::Int(9)),
            ])])
        });
        if expect_update {
            m.expect_transaction().times(1).returning(|st| {
                assert_eq!(st.len(), 1);
                assert_eq!(
                    st[0].sql(),
                    "UPDATE \"auth\".\"accounts\" SET \"must_reset\" = true WHERE \"must_reset\" IS DISTINCT FROM true"
                );
                Ok(vec![7])
            });
        } else {
            m.expect_transaction().never();
        }
        m
    }

    #[tokio::test]
    async fn refused_without_confirmation_applied_with_it() {
        let opts = PasswordResetOptions {
            table: "auth.accounts".into(),
            column: "must_reset".into(),
        };
        let step = ForcePasswordResetStep {
            admin: Arc::new(admin(false)),
            options: opts.clone(),
        };
        let r = Executor::new(guard(false))
            .run(&Procedure::new("security-breach").step(step))
            .await;
        assert!(matches!(r.steps[0].outcome, Outcome::Refused { .. }));
        assert!(r.steps[0].actions[0].contains("7 of 9 users"));

        let step = ForcePasswordResetStep {
            admin: Arc::new(admin(true)),
            options: opts,
        };
        let r = Executor::new(guard(true))
            .run(&Procedure::new("security-breach").step(step))
            .await;
        assert_eq!(r.steps[0].outcome, Outcome::Applied);
        let out = r.steps[0].output.as_ref().unwrap();
        assert_eq!(out.data["rows_changed"], 7);
    }
}

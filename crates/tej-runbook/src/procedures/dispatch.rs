//! From a calendar entry to the procedure that runs it (what `tej run ID` executes).

use super::context::RunContext;
use crate::error::{Result, RunbookError};
use tej_core::calendar::ProcedureKind;
use tej_core::{Calendar, CalendarEntry, Clock, Report};

/// Shorthands `tej run` accepts besides entry ids: `daily`, `performance`, `weekly`.
pub fn resolve_entries<'a>(cal: &'a Calendar, what: &str) -> Result<Vec<&'a CalendarEntry>> {
    let ids: Vec<&str> = match what {
        "daily" | "health" => vec!["daily-health"],
        "performance" => vec!["performance-check-am", "performance-check-pm"],
        "weekly" => vec!["weekly-audit"],
        other => vec![other],
    };
    ids.iter()
        .map(|id| {
            cal.entry(id).ok_or_else(|| {
                RunbookError::UnknownEntry(format!(
                    "{id} (expected daily, performance, weekly or one of: {})",
                    cal.entries
                        .iter()
                        .map(|e| e.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        })
        .collect()
}

/// Whether [`run_procedure`] runs `kind` completely without an executor: the read-only
/// check procedures. The weekly audit changes things (VACUUM ANALYZE, cleanup, image and
/// backup prune) and runs under an executor through the calendar runner.
pub fn implements(kind: ProcedureKind) -> bool {
    matches!(
        kind,
        ProcedureKind::DailyHealth
            | ProcedureKind::PerformanceCheck
            | ProcedureKind::SecurityReview
            | ProcedureKind::PerformanceOptimization
    )
}

/// Runs the check procedure `kind` over `ctx`: the daily health check, the performance check,
/// the weekly audit, the security review or the performance optimisation review. Other kinds
/// are [`RunbookError::Unsupported`].
pub async fn run_procedure(
    kind: ProcedureKind,
    ctx: &RunContext,
    clock: &dyn Clock,
) -> Result<Report> {
    Ok(match kind {
        ProcedureKind::DailyHealth => super::daily::daily_health(ctx, clock).await,
        ProcedureKind::PerformanceCheck => super::performance::performance_check(ctx, clock).await,
        // Its checks only; `weekly_maintenance` does the work under an executor.
        ProcedureKind::WeeklyAudit => super::weekly::weekly_audit(ctx, clock).await,
        ProcedureKind::SecurityReview => super::weekly::security_review(ctx, clock).await,
        ProcedureKind::PerformanceOptimization => {
            super::performance::performance_optimization(ctx, clock).await
        }
        other => {
            return Err(RunbookError::Unsupported(format!(
                "{other:?} is not a check procedure of tej-runbook's run_procedure"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthands_and_ids_resolve() {
        let cal = Calendar::runbook();
        let ids = |w: &str| {
            resolve_entries(&cal, w)
                .unwrap()
                .iter()
                .map(|e| e.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("daily"), ["daily-health"]);
        assert_eq!(
            ids("performance"),
            ["performance-check-am", "performance-check-pm"]
        );
        assert_eq!(ids("weekly"), ["weekly-audit"]);
        assert_eq!(ids("security-review"), ["security-review"]);
        let e = resolve_entries(&cal, "fortnightly")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("daily-health") && e.contains("fortnightly"),
            "{e}"
        );
        assert!(implements(ProcedureKind::SecurityReview));
        assert!(!implements(ProcedureKind::WeeklyAudit));
        assert!(!implements(ProcedureKind::SecretRotation));
    }

    #[tokio::test]
    async fn unsupported_kinds_are_errors() {
        let ctx = RunContext::empty(tej_core::Config::default());
        let clock = tej_core::FakeClock::new(jiff::Timestamp::UNIX_EPOCH);
        let e = run_procedure(ProcedureKind::SecretRotation, &ctx, &clock)
            .await
            .unwrap_err();
        assert!(matches!(e, RunbookError::Unsupported(_)));
    }
}

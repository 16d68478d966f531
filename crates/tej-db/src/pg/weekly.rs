//! The weekly PostgreSQL audit: size, bloat, slow queries and indexes, gathered concurrently.

use super::PgAdmin;
use super::bloat::{BloatOptions, BloatReport, bloat_report};
use super::indexes::{IndexAudit, IndexAuditOptions, index_audit};
use super::size::{SizeOptions, SizeReport, size_report};
use super::slow::{SlowQueryOptions, SlowQueryReport, slow_queries};
use serde::Serialize;
use tej_core::{Finding, Report, Severity};

/// Options of the weekly audit.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct WeeklyAuditOptions {
    /// Size report.
    pub size: SizeOptions,
    /// Bloat report.
    pub bloat: BloatOptions,
    /// Slow queries.
    pub slow_queries: SlowQueryOptions,
    /// Index audit.
    pub indexes: IndexAuditOptions,
}

/// The weekly audit; a part that failed is `None` with an Unknown finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeeklyAudit {
    /// Size.
    pub size: Option<SizeReport>,
    /// Bloat.
    pub bloat: Option<BloatReport>,
    /// Slow queries.
    pub slow_queries: Option<SlowQueryReport>,
    /// Indexes.
    pub indexes: Option<IndexAudit>,
    /// All findings.
    pub findings: Vec<Finding>,
}

impl WeeklyAudit {
    /// The findings as a tej report.
    pub fn report(&self) -> Report {
        Report {
            title: "postgres weekly audit".into(),
            findings: self.findings.clone(),
        }
    }
}

/// Runs the read-only parts of the weekly audit concurrently.
pub async fn weekly_audit<A: PgAdmin + ?Sized>(
    admin: &A,
    opts: &WeeklyAuditOptions,
) -> WeeklyAudit {
    let (size, bloat, slow, idx) = tokio::join!(
        size_report(admin, &opts.size),
        bloat_report(admin, &opts.bloat),
        slow_queries(admin, &opts.slow_queries),
        index_audit(admin, &opts.indexes)
    );
    let target = admin.target();
    let mut findings = Vec::new();
    let mut keep = |name: &str, fs: Option<&Vec<Finding>>, err: Option<String>| {
        if let Some(fs) = fs {
            findings.extend(fs.iter().cloned());
        }
        if let Some(e) = err {
            findings.push(
                Finding::new(
                    format!("postgres.{name}"),
                    Severity::Unknown,
                    format!("check failed: {e}"),
                )
                .target(&target),
            );
        }
    };
    keep(
        "size",
        size.as_ref().ok().map(|r| &r.findings),
        size.as_ref().err().map(|e| e.to_string()),
    );
    keep(
        "bloat",
        bloat.as_ref().ok().map(|r| &r.findings),
        bloat.as_ref().err().map(|e| e.to_string()),
    );
    keep(
        "slow_queries",
        slow.as_ref().ok().map(|r| &r.findings),
        slow.as_ref().err().map(|e| e.to_string()),
    );
    keep(
        "indexes",
        idx.as_ref().ok().map(|r| &r.findings),
        idx.as_ref().err().map(|e| e.to_string()),
    );
    WeeklyAudit {
        size: size.ok(),
        bloat: bloat.ok(),
        slow_queries: slow.ok(),
        indexes: idx.ok(),
        findings,
    }
}

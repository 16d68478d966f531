//! The nightly entries of the calendar: the backup of every database (runbook: "Automated
//! Daily Backups, 2 AM"), its verification, retention, and `certbot renew` (runbook: twice
//! daily). Each runs as steps under the caller's [`Executor`], so it plans, passes the guard
//! and leaves an audit line like every other mutating procedure.

use super::context::RunContext;
use super::monthly::{CreateBackupStep, VerifyLatestBackupStep, procedure_findings};
use super::weekly::PruneBackupsStep;
use std::sync::Arc;
use tej_core::{Clock, CommandRunner, Executor, Finding, Procedure, Report, Severity};

/// The configured repositories of `ctx` that open; one that cannot be opened is a
/// critical finding.
pub(super) async fn opened_repositories(
    ctx: &RunContext,
    report: &mut Report,
) -> Vec<tej_backup::Repository> {
    let mut repos = Vec::new();
    for r in &ctx.repositories {
        match r.repo.get().await {
            Ok(x) => repos.push((*x).clone()),
            Err(e) => report.push(
                Finding::new("backup.repository", Severity::Critical, e.to_string())
                    .target(format!("repo:{}", r.name)),
            ),
        }
    }
    repos
}

/// The repositories of `ctx`, opened ([`opened_repositories`]); none configured is a
/// critical finding too.
async fn open_repositories(ctx: &RunContext, report: &mut Report) -> Vec<tej_backup::Repository> {
    let repos = opened_repositories(ctx, report).await;
    if ctx.repositories.is_empty() {
        report.push(Finding::new(
            "backup.repository",
            Severity::Critical,
            "no backup repository: set [backup] repositories in tej.toml",
        ));
    }
    repos
}

/// `[backup]` as options; a table the backup cannot use is a critical finding.
fn settings(ctx: &RunContext, report: &mut Report) -> Option<tej_backup::BackupSettings> {
    match tej_backup::BackupSettings::from_config(&ctx.config) {
        Ok(s) => Some(s),
        Err(e) => {
            report.push(Finding::new(
                "backup.settings",
                Severity::Critical,
                e.to_string(),
            ));
            None
        }
    }
}

/// The nightly backup: a logical backup of every `[[database]]` into every repository, in
/// the configured format, compression and encryption.
pub async fn nightly_backup(
    ctx: &RunContext,
    ex: &Executor,
    runner: Arc<dyn CommandRunner>,
    clock: Arc<dyn Clock>,
) -> Report {
    let mut report = Report::new("nightly-backup");
    let repos = open_repositories(ctx, &mut report).await;
    if ctx.config.databases.is_empty() {
        report.push(Finding::new(
            "backup.create",
            Severity::Unknown,
            "no [[database]] configured: nothing to back up",
        ));
    }
    if repos.is_empty() {
        return report;
    }
    let Some(settings) = settings(ctx, &mut report) else {
        return report;
    };
    for db in &ctx.config.databases {
        let target = match tej_backup::db_target(db) {
            Ok(t) => t,
            Err(e) => {
                report.push(
                    Finding::new("backup.create", Severity::Critical, e.to_string())
                        .target(format!("db:{}", db.name)),
                );
                continue;
            }
        };
        let options = settings.logical(target);
        let p = Procedure::new("nightly-backup").step(CreateBackupStep {
            runner: runner.clone(),
            repos: repos.clone(),
            options,
            clock: clock.clone(),
        });
        let r = ex.run(&p).await;
        report.extend(procedure_findings(&r, &format!("db:{}", db.name)));
    }
    report
}

/// The nightly verification: the newest backup of every repository re-read (SHA-256,
/// decryption, decompression) and the result recorded beside it.
pub async fn nightly_verify(
    ctx: &RunContext,
    ex: &Executor,
    runner: Arc<dyn CommandRunner>,
    clock: Arc<dyn Clock>,
) -> Report {
    let mut report = Report::new("nightly-backup-verify");
    let Some(settings) = settings(ctx, &mut report) else {
        return report;
    };
    for repo in open_repositories(ctx, &mut report).await {
        let name = repo.name();
        let p = Procedure::new("nightly-backup-verify").step(VerifyLatestBackupStep {
            runner: runner.clone(),
            repo,
            selector: tej_backup::BackupSelector::latest(),
            encryption: settings.encryption.clone(),
            clock: clock.clone(),
        });
        let r = ex.run(&p).await;
        report.extend(procedure_findings(&r, &format!("repo:{name}")));
    }
    report
}

/// The nightly retention: [`PruneBackupsStep`] on every repository.
pub async fn nightly_prune(ctx: &RunContext, ex: &Executor, clock: Arc<dyn Clock>) -> Report {
    let mut report = Report::new("nightly-backup-prune");
    let Some(settings) = settings(ctx, &mut report) else {
        return report;
    };
    for repo in open_repositories(ctx, &mut report).await {
        let name = repo.name();
        let p = Procedure::new("nightly-backup-prune").step(PruneBackupsStep::from_settings(
            Arc::new(repo),
            name.clone(),
            &settings,
            clock.clone(),
        ));
        let r = ex.run(&p).await;
        report.extend(procedure_findings(&r, &format!("repo:{name}")));
    }
    report
}

/// `certbot renew`, `nginx -t`, a reload and a probe of every `[[tls]]` endpoint. Without
/// `[[tls]]` nothing is renewed and the report says so (UNKNOWN).
pub async fn certificate_renewal(
    ctx: &RunContext,
    ex: &Executor,
    runner: Arc<dyn CommandRunner>,
) -> Report {
    let mut report = Report::new("certificate-renewal");
    if ctx.tls.is_empty() {
        report.push(Finding::new(
            "tls.renew",
            Severity::Unknown,
            "not configured: no [[tls]] endpoint in tej.toml, nothing renewed",
        ));
        return report;
    }
    let targets = ctx
        .tls
        .iter()
        .map(|t| {
            let mut probe = tej_secrets::TlsProbeOptions {
                server_name: t.server_name.clone(),
                ca_file: t.ca_file.clone(),
                cert_file: t.cert_file.clone(),
                ..Default::default()
            };
            probe.thresholds.warn_days = f64::from(t.warn_days);
            probe.thresholds.crit_days = f64::from(t.crit_days);
            tej_secrets::RenewTarget {
                endpoint: t.endpoint.clone(),
                probe,
            }
        })
        .collect();
    let step = tej_secrets::RenewStep::new(
        runner,
        tej_secrets::RenewOptions {
            targets,
            ..tej_secrets::RenewOptions::default()
        },
    );
    let r = ex
        .run(&Procedure::new("certificate-renewal").step(step))
        .await;
    report.extend(procedure_findings(&r, "tls"));
    report
}

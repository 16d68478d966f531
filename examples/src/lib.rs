//! What the example programs share: how a report is printed and how a run's result becomes
//! the exit code. Each program in `examples/` is one runbook procedure written against the
//! libraries; this is only their terminal output.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tej_core::{Outcome, ProcedureReport, Report, Severity};
use tej_runbook::{RunContext, RustlsProber};

/// Prints `report`'s findings, one line each (`SEVERITY  check  target  summary`), then the
/// `summary: WORST (N ok, N warning, N critical, N unknown)` line.
pub fn print_findings(report: &Report) {
    for f in &report.findings {
        println!(
            "{:<8}  {:<24}  {:<28}  {}",
            f.severity.label(),
            f.check,
            f.target,
            f.summary
        );
    }
    let (ok, warn, crit, unknown) = report.counts();
    println!(
        "summary: {} ({ok} ok, {warn} warning, {crit} critical, {unknown} unknown)",
        report.severity().label()
    );
}

/// Prints a procedure's report: its name (`(dry run)` when only planned), then for each
/// step `STEP TARGET: OUTCOME`, its planned actions (`  plan: ...`) and the applied summary
/// (`  done: ...`).
pub fn print_procedure(report: &ProcedureReport) {
    println!(
        "{}{}",
        report.procedure,
        if report.dry_run { " (dry run)" } else { "" }
    );
    for s in &report.steps {
        let outcome = match &s.outcome {
            Outcome::Applied => "applied".to_string(),
            Outcome::Planned => "planned".to_string(),
            Outcome::Skipped { reason } => format!("skipped: {reason}"),
            Outcome::Refused { reason } => format!("REFUSED: {reason}"),
            Outcome::Failed { error } => format!("FAILED: {error}"),
        };
        println!("{} {}: {outcome}", s.step, s.target);
        for a in &s.actions {
            println!("  plan: {a}");
        }
        if let Some(o) = &s.output {
            println!("  done: {}", o.summary);
        }
    }
}

/// Trusts only the CA in `ca` (PEM) for `ctx`'s `[[tls]]` endpoints instead of the system
/// roots; `None` leaves the context as it is.
pub fn trust_only(ctx: &mut RunContext, ca: Option<PathBuf>) {
    if ca.is_some() {
        ctx.tls_prober = Arc::new(RustlsProber {
            ca_file: ca,
            timeout: Some(ctx.options.check_timeout),
        });
    }
}

/// The exit code of a check: its severity's Nagios code (0 ok, 1 warning, 2 critical,
/// 3 unknown); an error is printed and is 3.
pub fn check_exit(result: anyhow::Result<Severity>) -> ExitCode {
    match result {
        Ok(severity) => ExitCode::from(u8::try_from(severity.exit_code()).unwrap_or(3)),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}

/// The exit code of a procedure: 0 when it succeeded, 1 when it did not; an error is
/// printed and is 1.
pub fn procedure_exit(result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

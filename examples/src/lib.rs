//! What the example programs share: how a report is printed and how a run's result becomes
//! the exit code. Each program in `examples/` is one runbook procedure written against the
//! libraries; this is only their terminal output.

use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tej_core::{Config, Executor, Outcome, ProcedureReport, Report, RunFlags, Severity};
use tej_runbook::{RunContext, RunOptions, RustlsProber};

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

/// Prints `report`'s title and findings ([`print_findings`]) and returns its severity.
pub fn print_report(report: &Report) -> Severity {
    println!("{}", report.title);
    print_findings(report);
    report.severity()
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

/// The context of a check run from `config` with `options`, trusting only the CA in `ca`
/// when one is given ([`trust_only`]); `what` names the run in the error.
pub fn check_context(
    config: &Config,
    options: RunOptions,
    ca: Option<PathBuf>,
    what: &str,
) -> anyhow::Result<RunContext> {
    let mut ctx =
        RunContext::from_config(config, options).with_context(|| format!("prepare {what}"))?;
    trust_only(&mut ctx, ca);
    Ok(ctx)
}

/// The executor of `config` (its guard and audit log) for a run that only plans when
/// `dry_run` and confirms destructive steps when `yes`; never outside the maintenance
/// window.
pub fn executor(config: &Config, dry_run: bool, yes: bool) -> anyhow::Result<Executor> {
    Ok(Executor::from_config(
        config,
        RunFlags {
            dry_run,
            yes,
            outside_window: false,
        },
    )?)
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

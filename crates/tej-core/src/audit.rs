//! The append-only audit log: one JSON line per applied mutating or destructive step.

use crate::procedure::{Outcome, Risk, StepReport};
use crate::secret::Redactor;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// One audit line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the step finished.
    pub at: Timestamp,
    /// The procedure it belonged to.
    pub procedure: String,
    /// The step.
    pub step: String,
    /// Its risk.
    pub risk: Risk,
    /// What it acted on.
    pub target: String,
    /// `applied`, `failed`, `refused`.
    pub outcome: String,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// Summary or error text (redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Who ran it (`SUDO_USER`, else `USER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Environment name (`production`...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub environment: String,
}

/// What an audit line carries besides the step itself.
#[derive(Debug, Clone, Copy)]
pub struct AuditScope<'a> {
    /// When the step finished.
    pub at: Timestamp,
    /// Environment name (`production`...); empty when unknown.
    pub environment: &'a str,
    /// The step was let through by an override of the production maintenance window.
    pub window_overridden: bool,
}

/// The note an audit line gets when an override of the production window let its step run.
pub const WINDOW_OVERRIDE_NOTE: &str =
    "maintenance window overridden on purpose (--outside-window)";

impl AuditEntry {
    /// The line for one step's report: `applied` with the output's summary, `failed` with
    /// the error, `refused` with the reason; `None` for a planned or skipped step (nothing
    /// happened to record).
    pub fn for_step(
        procedure: &str,
        report: &StepReport,
        scope: AuditScope<'_>,
    ) -> Option<AuditEntry> {
        let (outcome, detail) = match &report.outcome {
            Outcome::Applied => ("applied", report.output.as_ref().map(|o| o.summary.clone())),
            Outcome::Failed { error } => ("failed", Some(error.clone())),
            Outcome::Refused { reason } => ("refused", Some(reason.clone())),
            Outcome::Planned | Outcome::Skipped { .. } => return None,
        };
        // An override of the production window is part of the record of what it allowed.
        let detail = if scope.window_overridden {
            Some(match detail {
                Some(d) => format!("{WINDOW_OVERRIDE_NOTE}: {d}"),
                None => WINDOW_OVERRIDE_NOTE.to_string(),
            })
        } else {
            detail
        };
        Some(AuditEntry {
            at: scope.at,
            procedure: procedure.to_string(),
            step: report.step.clone(),
            risk: report.risk,
            target: report.target.clone(),
            outcome: outcome.to_string(),
            duration_ms: report.duration_ms,
            detail,
            actor: current_actor(),
            environment: scope.environment.to_string(),
        })
    }
}

/// Where audit lines go.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
    redactor: Redactor,
}

impl AuditLog {
    /// An audit log at `path` (created 0600 on first write).
    pub fn new(path: impl Into<PathBuf>) -> AuditLog {
        AuditLog {
            path: path.into(),
            redactor: Redactor::new(),
        }
    }

    /// Uses `redactor` for every line written.
    pub fn with_redactor(mut self, redactor: Redactor) -> AuditLog {
        self.redactor = redactor;
        self
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the line for one step's report (see [`AuditEntry::for_step`]): the one way
    /// the [`Executor`](crate::Executor), rotations and deploys write the audit log.
    pub fn record_step(
        &self,
        procedure: &str,
        report: &StepReport,
        scope: AuditScope<'_>,
    ) -> io::Result<()> {
        match AuditEntry::for_step(procedure, report, scope) {
            Some(entry) => self.append(&entry),
            None => Ok(()),
        }
    }

    /// Appends one entry as a single write, then syncs it to disk.
    pub fn append(&self, entry: &AuditEntry) -> io::Result<()> {
        let json = serde_json::to_string(entry).map_err(io::Error::other)?;
        let mut line = self.redactor.redact(&json);
        line.push('\n');
        if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        f.write_all(line.as_bytes())?;
        f.sync_data()
    }

    /// Reads every entry back (for tests and `tej audit` style listings); bad lines are errors naming the line.
    pub fn read_all(&self) -> io::Result<Vec<AuditEntry>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} line {}: {e}", self.path.display(), i + 1),
                    )
                })
            })
            .collect()
    }
}

/// The person running tej, for audit lines.
pub fn current_actor() -> Option<String> {
    std::env::var("SUDO_USER")
        .ok()
        .or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.is_empty())
}

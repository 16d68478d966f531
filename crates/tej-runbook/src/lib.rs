//! tej-runbook (being built).

//! Findings, metrics with thresholds, and reports that aggregate them.

use crate::Severity;
use serde::{Deserialize, Serialize};

/// Which direction of a metric is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Larger values are worse (disk used, latency, age).
    #[default]
    HigherIsWorse,
    /// Smaller values are worse (days until expiry, hit ratio).
    LowerIsWorse,
}

impl Direction {
    fn is_higher_is_worse(&self) -> bool {
        *self == Direction::HigherIsWorse
    }
}

/// A warning and a critical threshold for one metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// Value at which the metric becomes a warning.
    pub warn: f64,
    /// Value at which the metric becomes critical.
    pub crit: f64,
    /// Which direction is bad.
    #[serde(default)]
    pub direction: Direction,
}

impl Threshold {
    /// Thresholds where larger values are worse.
    pub fn above(warn: f64, crit: f64) -> Threshold {
        Threshold {
            warn,
            crit,
            direction: Direction::HigherIsWorse,
        }
    }

    /// Thresholds where smaller values are worse.
    pub fn below(warn: f64, crit: f64) -> Threshold {
        Threshold {
            warn,
            crit,
            direction: Direction::LowerIsWorse,
        }
    }

    /// The severity of `value` against these thresholds; NaN is `Unknown`.
    pub fn evaluate(&self, value: f64) -> Severity {
        if value.is_nan() {
            return Severity::Unknown;
        }
        match self.direction {
            Direction::HigherIsWorse if value >= self.crit => Severity::Critical,
            Direction::HigherIsWorse if value >= self.warn => Severity::Warning,
            Direction::LowerIsWorse if value <= self.crit => Severity::Critical,
            Direction::LowerIsWorse if value <= self.warn => Severity::Warning,
            _ => Severity::Ok,
        }
    }

    /// Checks that the critical threshold is beyond the warning one.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let invalid = |reason: String| crate::Error::Invalid {
            what: "threshold",
            reason,
        };
        if !self.warn.is_finite() || !self.crit.is_finite() {
            return Err(invalid("thresholds must be finite numbers".into()));
        }
        let ordered = match self.direction {
            Direction::HigherIsWorse => self.crit >= self.warn,
            Direction::LowerIsWorse => self.crit <= self.warn,
        };
        if ordered {
            Ok(())
        } else {
            Err(invalid(format!(
                "critical threshold {} must be beyond warning threshold {} ({:?})",
                self.crit, self.warn, self.direction
            )))
        }
    }
}

/// One measured value, rendered as Nagios perfdata, a Prometheus sample or JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Metric name, `snake_case` (`disk_used_ratio`).
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// Unit: `s`, `ms`, `B`, `%`, `ratio`, `count`, `days`... (empty for none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    /// Warning threshold, if the metric has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn: Option<f64>,
    /// Critical threshold, if the metric has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crit: Option<f64>,
    /// Which direction of the value is bad (from the thresholds).
    #[serde(default, skip_serializing_if = "Direction::is_higher_is_worse")]
    pub direction: Direction,
    /// Labels that distinguish series (`database`, `mount`...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<(String, String)>,
}

impl Metric {
    /// A metric without thresholds.
    pub fn new(name: impl Into<String>, value: f64, unit: impl Into<String>) -> Metric {
        Metric {
            name: name.into(),
            value,
            unit: unit.into(),
            warn: None,
            crit: None,
            direction: Direction::HigherIsWorse,
            labels: Vec::new(),
        }
    }

    /// Attaches thresholds.
    pub fn with_threshold(mut self, t: Threshold) -> Metric {
        self.warn = Some(t.warn);
        self.crit = Some(t.crit);
        self.direction = t.direction;
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Metric {
        self.labels.push((key.into(), value.into()));
        self
    }
}

/// The result of one check about one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The check's stable identifier (`postgres.connections`, `disk.usage`).
    pub check: String,
    /// What was checked (`db:skillswap`, `/var`, `skillswap.in:443`); may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// How bad it is.
    pub severity: Severity,
    /// One line for a human.
    pub summary: String,
    /// Longer explanation or advice, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Measured values behind the finding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
}

impl Finding {
    /// A finding with no detail and no metrics.
    pub fn new(
        check: impl Into<String>,
        severity: Severity,
        summary: impl Into<String>,
    ) -> Finding {
        Finding {
            check: check.into(),
            target: String::new(),
            severity,
            summary: summary.into(),
            detail: None,
            metrics: Vec::new(),
        }
    }

    /// An OK finding.
    pub fn ok(check: impl Into<String>, summary: impl Into<String>) -> Finding {
        Finding::new(check, Severity::Ok, summary)
    }

    /// Sets the target.
    pub fn target(mut self, target: impl Into<String>) -> Finding {
        self.target = target.into();
        self
    }

    /// Sets the detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Finding {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a metric.
    pub fn metric(mut self, metric: Metric) -> Finding {
        self.metrics.push(metric);
        self
    }

    /// A finding whose severity comes from comparing `value` with `threshold`;
    /// the metric carries the thresholds.
    pub fn measured(
        check: impl Into<String>,
        metric_name: impl Into<String>,
        value: f64,
        unit: impl Into<String>,
        threshold: Threshold,
        summary: impl Into<String>,
    ) -> Finding {
        let severity = threshold.evaluate(value);
        Finding::new(check, severity, summary)
            .metric(Metric::new(metric_name, value, unit).with_threshold(threshold))
    }
}

/// Findings from one run, with the worst severity among them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Report {
    /// What produced the report (`daily-health`, `db health`).
    pub title: String,
    /// All findings in the order they were produced.
    pub findings: Vec<Finding>,
}

impl Report {
    /// An empty report.
    pub fn new(title: impl Into<String>) -> Report {
        Report {
            title: title.into(),
            findings: Vec::new(),
        }
    }

    /// Adds one finding.
    pub fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// Adds many findings.
    pub fn extend(&mut self, findings: impl IntoIterator<Item = Finding>) {
        self.findings.extend(findings);
    }

    /// The worst severity; `Ok` for an empty report.
    pub fn severity(&self) -> Severity {
        self.findings
            .iter()
            .fold(Severity::Ok, |acc, f| acc.worst(f.severity))
    }

    /// How many findings have each severity: (ok, warning, critical, unknown).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for f in &self.findings {
            match f.severity {
                Severity::Ok => c.0 += 1,
                Severity::Warning => c.1 += 1,
                Severity::Critical => c.2 += 1,
                Severity::Unknown => c.3 += 1,
            }
        }
        c
    }

    /// The findings that need attention, worst first.
    pub fn problems(&self) -> Vec<&Finding> {
        let mut v: Vec<&Finding> = self
            .findings
            .iter()
            .filter(|f| f.severity.needs_attention())
            .collect();
        v.sort_by_key(|f| std::cmp::Reverse(f.severity));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn thresholds_both_directions() {
        let t = Threshold::above(80.0, 90.0);
        assert_eq!(t.evaluate(79.9), Severity::Ok);
        assert_eq!(t.evaluate(80.0), Severity::Warning);
        assert_eq!(t.evaluate(95.0), Severity::Critical);
        assert_eq!(t.evaluate(f64::NAN), Severity::Unknown);
        let t = Threshold::below(30.0, 7.0);
        assert_eq!(t.evaluate(45.0), Severity::Ok);
        assert_eq!(t.evaluate(30.0), Severity::Warning);
        assert_eq!(t.evaluate(5.0), Severity::Critical);
        assert!(Threshold::above(90.0, 80.0).validate().is_err());
        assert!(Threshold::below(7.0, 30.0).validate().is_err());
        assert!(Threshold::below(30.0, 7.0).validate().is_ok());
    }

    #[test]
    fn report_worst_and_counts() {
        let mut r = Report::new("t");
        assert_eq!(r.severity(), Severity::Ok);
        r.push(Finding::ok("a", "fine"));
        r.push(Finding::new("b", Severity::Warning, "hmm"));
        r.push(Finding::new("c", Severity::Unknown, "?"));
        assert_eq!(r.severity(), Severity::Unknown);
        r.push(Finding::new("d", Severity::Critical, "bad"));
        assert_eq!(r.severity(), Severity::Critical);
        assert_eq!(r.counts(), (1, 1, 1, 1));
        let p: Vec<_> = r.problems().iter().map(|f| f.check.as_str()).collect();
        assert_eq!(p, vec!["d", "c", "b"]);
    }

    proptest! {
        #[test]
        fn higher_is_worse_is_monotonic(warn in 0.0f64..100.0, gap in 0.0f64..100.0, a in -10.0f64..300.0, b in -10.0f64..300.0) {
            let t = Threshold::above(warn, warn + gap);
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(t.evaluate(lo) <= t.evaluate(hi));
        }
    }
}

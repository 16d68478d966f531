//! Capacity planning: a history of measurements, a least-squares trend, a
//! projection three months ahead, the days until a limit (disk full), and an
//! SVG chart of it all.
//!
//! History lives behind [`HistoryStore`]; [`JsonlHistoryStore`] keeps it in a
//! local JSON Lines file ([`crate::PgHistoryStore`] keeps it in PostgreSQL).

use crate::error::{Result, RunbookError};
use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tej_core::{Direction, Finding, Metric, Severity, atomic_write};

/// One measured value of one metric on one target at one time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Metric name (`disk_used_bytes`, `db_size_bytes`, `users_total`).
    pub metric: String,
    /// What was measured (`/var`, `db:app`); may be empty.
    #[serde(default)]
    pub target: String,
    /// When.
    pub at: Timestamp,
    /// The value.
    pub value: f64,
    /// Unit (`B`, `%`, `users`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
}

impl Measurement {
    /// A measurement without unit.
    pub fn new(
        metric: impl Into<String>,
        target: impl Into<String>,
        at: Timestamp,
        value: f64,
    ) -> Measurement {
        Measurement {
            metric: metric.into(),
            target: target.into(),
            at,
            value,
            unit: String::new(),
        }
    }
}

/// Where measurement history is kept.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Adds measurements.
    async fn append(&self, measurements: &[Measurement]) -> Result<()>;
    /// One series (metric on target) since `since` (all when `None`), oldest first.
    async fn series(
        &self,
        metric: &str,
        target: &str,
        since: Option<Timestamp>,
    ) -> Result<Vec<Measurement>>;
    /// Every (metric, target) pair with history, sorted.
    async fn series_keys(&self) -> Result<Vec<(String, String)>>;
    /// Deletes measurements older than `before`; returns how many.
    async fn prune(&self, before: Timestamp) -> Result<usize>;
}

/// History in a JSON Lines file, one [`Measurement`] per line. Every change
/// rewrites the file atomically, so readers never see a torn line.
#[derive(Debug)]
pub struct JsonlHistoryStore {
    path: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl JsonlHistoryStore {
    /// A store in `path` (created on first append).
    pub fn new(path: impl Into<PathBuf>) -> JsonlHistoryStore {
        JsonlHistoryStore {
            path: path.into(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_all(&self) -> Result<Vec<Measurement>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RunbookError::Io {
                    action: "read capacity history",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let m: Measurement = serde_json::from_str(line).map_err(|e| RunbookError::Corrupt {
                path: self.path.clone(),
                line: i + 1,
                message: format!("not a measurement: {e}"),
            })?;
            out.push(m);
        }
        Ok(out)
    }

    fn write_all(&self, all: &[Measurement]) -> Result<()> {
        let mut text = String::new();
        for m in all {
            // Serializing a plain struct of strings and numbers cannot fail except
            // for non-finite floats, which JSON cannot hold; those are refused on append.
            let line = serde_json::to_string(m).map_err(|e| RunbookError::Corrupt {
                path: self.path.clone(),
                line: 0,
                message: e.to_string(),
            })?;
            text.push_str(&line);
            text.push('\n');
        }
        atomic_write(&self.path, text.as_bytes(), None).map_err(|source| RunbookError::Io {
            action: "write capacity history",
            path: self.path.clone(),
            source,
        })
    }
}

#[async_trait]
impl HistoryStore for JsonlHistoryStore {
    async fn append(&self, measurements: &[Measurement]) -> Result<()> {
        if let Some(bad) = measurements.iter().find(|m| !m.value.is_finite()) {
            return Err(RunbookError::Corrupt {
                path: self.path.clone(),
                line: 0,
                message: format!("{} on {:?} is not a finite number", bad.metric, bad.target),
            });
        }
        let _g = self.lock.lock().await;
        let mut all = self.read_all()?;
        all.extend_from_slice(measurements);
        self.write_all(&all)
    }

    async fn series(
        &self,
        metric: &str,
        target: &str,
        since: Option<Timestamp>,
    ) -> Result<Vec<Measurement>> {
        let _g = self.lock.lock().await;
        let mut v: Vec<Measurement> = self
            .read_all()?
            .into_iter()
            .filter(|m| m.metric == metric && m.target == target && since.is_none_or(|s| m.at >= s))
            .collect();
        v.sort_by_key(|m| m.at);
        Ok(v)
    }

    async fn series_keys(&self) -> Result<Vec<(String, String)>> {
        let _g = self.lock.lock().await;
        let mut keys: Vec<(String, String)> = self
            .read_all()?
            .into_iter()
            .map(|m| (m.metric, m.target))
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    async fn prune(&self, before: Timestamp) -> Result<usize> {
        let _g = self.lock.lock().await;
        let all = self.read_all()?;
        let n = all.len();
        let keep: Vec<Measurement> = all.into_iter().filter(|m| m.at >= before).collect();
        let removed = n - keep.len();
        if removed > 0 {
            self.write_all(&keep)?;
        }
        Ok(removed)
    }
}

const SECS_PER_DAY: f64 = 86_400.0;

/// A least-squares straight line through a series: `value = intercept + slope_per_day * days_since(origin)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LinearFit {
    /// Time of the first point (x = 0).
    pub origin: Timestamp,
    /// Change per day.
    pub slope_per_day: f64,
    /// Fitted value at `origin`.
    pub intercept: f64,
    /// Coefficient of determination (1 = the line explains all variation; near 0 = no linear trend).
    pub r_squared: f64,
    /// Points used.
    pub points: usize,
}

impl LinearFit {
    /// The fitted value at `t`.
    pub fn value_at(&self, t: Timestamp) -> f64 {
        let days = t.duration_since(self.origin).as_secs_f64() / SECS_PER_DAY;
        self.intercept + self.slope_per_day * days
    }

    /// When the line reaches `value`, if it ever does moving forward in time from
    /// `origin` (None for a flat line).
    pub fn when_reaches(&self, value: f64) -> Option<Timestamp> {
        if self.slope_per_day == 0.0 || !self.slope_per_day.is_finite() {
            return None;
        }
        let days = (value - self.intercept) / self.slope_per_day;
        let secs = days * SECS_PER_DAY;
        if !secs.is_finite() || secs.abs() > 1e13 {
            return None;
        }
        self.origin
            .checked_add(SignedDuration::from_secs_f64(secs))
            .ok()
    }
}

/// Fits a line through `(time, value)` points by ordinary least squares.
/// Non-finite values are ignored; at least two distinct times are needed.
pub fn fit_linear(points: &[(Timestamp, f64)]) -> Result<LinearFit> {
    let pts: Vec<(Timestamp, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    let Some(origin) = pts.iter().map(|p| p.0).min() else {
        return Err(RunbookError::InsufficientData { needed: 2, got: 0 });
    };
    let xs: Vec<f64> = pts
        .iter()
        .map(|p| p.0.duration_since(origin).as_secs_f64() / SECS_PER_DAY)
        .collect();
    let n = pts.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (x, p) in xs.iter().zip(&pts) {
        let (dx, dy) = (x - mx, p.1 - my);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if pts.len() < 2 || sxx <= 0.0 {
        let distinct = if sxx > 0.0 {
            pts.len()
        } else {
            pts.len().min(1)
        };
        return Err(RunbookError::InsufficientData {
            needed: 2,
            got: distinct,
        });
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let ss_res: f64 = xs
        .iter()
        .zip(&pts)
        .map(|(x, p)| {
            let r = p.1 - (intercept + slope * x);
            r * r
        })
        .sum();
    let r_squared = if syy == 0.0 {
        1.0
    } else {
        (1.0 - ss_res / syy).clamp(0.0, 1.0)
    };
    Ok(LinearFit {
        origin,
        slope_per_day: slope,
        intercept,
        r_squared,
        points: pts.len(),
    })
}

/// A limit a metric must not cross (disk capacity, connection limit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limit {
    /// The value.
    pub value: f64,
    /// `HigherIsWorse`: reaching it from below is bad (disk used); `LowerIsWorse`: from above (free space).
    pub direction: Direction,
}

/// How far ahead to look and when it becomes urgent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityOptions {
    /// Projection horizon (the runbook: three months).
    pub horizon: SignedDuration,
    /// A limit reached within this is a warning.
    pub warn_within: SignedDuration,
    /// A limit reached within this is critical.
    pub crit_within: SignedDuration,
    /// Fewer points than this give no forecast.
    pub min_points: usize,
}

impl Default for CapacityOptions {
    fn default() -> Self {
        CapacityOptions {
            horizon: SignedDuration::from_hours(92 * 24),
            warn_within: SignedDuration::from_hours(90 * 24),
            crit_within: SignedDuration::from_hours(30 * 24),
            min_points: 3,
        }
    }
}

/// The trend of one series and where it leads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityForecast {
    /// Metric name.
    pub metric: String,
    /// Target.
    pub target: String,
    /// Unit.
    pub unit: String,
    /// The fitted line.
    pub fit: LinearFit,
    /// Time of the newest measurement.
    pub last_at: Timestamp,
    /// The newest measured value.
    pub latest_value: f64,
    /// End of the projection.
    pub horizon_at: Timestamp,
    /// Fitted value at `horizon_at`.
    pub projected_value: f64,
    /// The limit, if one was given.
    pub limit: Option<Limit>,
    /// Days from `now` until the limit is reached (0 when already reached; None when the trend never reaches it).
    pub days_until_limit: Option<f64>,
    /// When the limit is reached by the trend.
    pub limit_at: Option<Timestamp>,
}

/// Forecasts a series (oldest first or in any order) as of `now`.
pub fn forecast(
    history: &[Measurement],
    limit: Option<Limit>,
    now: Timestamp,
    opts: &CapacityOptions,
) -> Result<CapacityForecast> {
    let Some(last) = history
        .iter()
        .filter(|m| m.value.is_finite())
        .max_by_key(|m| m.at)
    else {
        return Err(RunbookError::InsufficientData {
            needed: opts.min_points.max(2),
            got: 0,
        });
    };
    if history.len() < opts.min_points {
        return Err(RunbookError::InsufficientData {
            needed: opts.min_points,
            got: history.len(),
        });
    }
    let pts: Vec<(Timestamp, f64)> = history.iter().map(|m| (m.at, m.value)).collect();
    let fit = fit_linear(&pts)?;
    let horizon_at = now.checked_add(opts.horizon).unwrap_or(now);
    let projected_value = fit.value_at(horizon_at);
    let (mut days_until_limit, mut limit_at) = (None, None);
    if let Some(l) = limit {
        let reached = match l.direction {
            Direction::HigherIsWorse => last.value >= l.value,
            Direction::LowerIsWorse => last.value <= l.value,
        };
        let heading = match l.direction {
            Direction::HigherIsWorse => fit.slope_per_day > 0.0,
            Direction::LowerIsWorse => fit.slope_per_day < 0.0,
        };
        if reached {
            days_until_limit = Some(0.0);
            limit_at = Some(last.at);
        } else if heading && let Some(t) = fit.when_reaches(l.value) {
            let t = t.max(now);
            days_until_limit = Some(t.duration_since(now).as_secs_f64() / SECS_PER_DAY);
            limit_at = Some(t);
        }
    }
    Ok(CapacityForecast {
        metric: last.metric.clone(),
        target: last.target.clone(),
        unit: last.unit.clone(),
        fit,
        last_at: last.at,
        latest_value: last.value,
        horizon_at,
        projected_value,
        limit,
        days_until_limit,
        limit_at,
    })
}

impl CapacityForecast {
    /// The finding `capacity.<metric>`: critical/warning when the limit is
    /// reached within `crit_within`/`warn_within`.
    pub fn finding(&self, opts: &CapacityOptions) -> Finding {
        let days = |d: SignedDuration| d.as_secs_f64() / SECS_PER_DAY;
        let severity = match self.days_until_limit {
            Some(d) if d <= days(opts.crit_within) => Severity::Critical,
            Some(d) if d <= days(opts.warn_within) => Severity::Warning,
            _ => Severity::Ok,
        };
        let unit = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", self.unit)
        };
        let mut summary = format!(
            "{}: {:+.3}{unit}/day, {:.2}{unit} now, {:.2}{unit} projected by {}",
            self.metric,
            self.fit.slope_per_day,
            self.latest_value,
            self.projected_value,
            self.horizon_at.strftime("%Y-%m-%d"),
        );
        match (self.limit, self.days_until_limit, self.limit_at) {
            (Some(l), Some(d), Some(at)) => summary.push_str(&format!(
                "; reaches {}{unit} in {:.0} days ({})",
                l.value,
                d.floor(),
                at.strftime("%Y-%m-%d")
            )),
            (Some(l), _, _) => summary.push_str(&format!("; not heading for {}{unit}", l.value)),
            _ => {}
        }
        let mut f = Finding::new(format!("capacity.{}", self.metric), severity, summary)
            .target(self.target.clone())
            .metric(Metric::new(
                format!("{}_slope_per_day", self.metric),
                self.fit.slope_per_day,
                self.unit.clone(),
            ))
            .metric(Metric::new(
                format!("{}_projected", self.metric),
                self.projected_value,
                self.unit.clone(),
            ))
            .metric(Metric::new("trend_r_squared", self.fit.r_squared, "ratio"));
        if let Some(d) = self.days_until_limit {
            f = f.metric(Metric::new("days_until_limit", d, "days").with_threshold(
                tej_core::Threshold::below(days(opts.warn_within), days(opts.crit_within)),
            ));
        }
        if self.fit.r_squared < 0.5 {
            f = f.detail(format!(
                "weak linear trend (R² {:.2} over {} points): treat the projection with care",
                self.fit.r_squared, self.fit.points
            ));
        }
        f
    }
}

/// One series the capacity review looks at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacitySeries {
    /// Metric name.
    pub metric: String,
    /// Target.
    pub target: String,
    /// The limit it must not reach, if any.
    pub limit: Option<Limit>,
}

/// The forecast and chart of one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesForecast {
    /// The series.
    pub series: CapacitySeries,
    /// Its forecast.
    pub forecast: CapacityForecast,
    /// Its SVG chart.
    pub svg: String,
}

/// The monthly capacity review: a `capacity-planning` report with one finding per
/// series, and the forecasts with charts. A series with too little history is an
/// OK finding saying so (history is still being collected); a store error is `Unknown`.
pub async fn capacity_review<S: HistoryStore + ?Sized>(
    store: &S,
    series: &[CapacitySeries],
    now: Timestamp,
    opts: &CapacityOptions,
) -> (tej_core::Report, Vec<SeriesForecast>) {
    let mut report = tej_core::Report::new("capacity-planning");
    let mut out = Vec::new();
    for s in series {
        let check = format!("capacity.{}", s.metric);
        let history = match store.series(&s.metric, &s.target, None).await {
            Ok(h) => h,
            Err(e) => {
                report.push(
                    Finding::new(
                        check,
                        Severity::Unknown,
                        format!("history unavailable: {e}"),
                    )
                    .target(s.target.clone()),
                );
                continue;
            }
        };
        match forecast(&history, s.limit, now, opts) {
            Ok(fc) => {
                report.push(fc.finding(opts));
                let svg = render_svg(&history, &fc, &ChartOptions::default());
                out.push(SeriesForecast {
                    series: s.clone(),
                    forecast: fc,
                    svg,
                });
            }
            Err(e) => report.push(
                Finding::ok(check, format!("no trend yet: {e}"))
                    .target(s.target.clone())
                    .detail("history is still being collected"),
            ),
        }
    }
    (report, out)
}

/// Size and title of a chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartOptions {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Title (default: metric and target).
    pub title: Option<String>,
}

impl Default for ChartOptions {
    fn default() -> Self {
        ChartOptions {
            width: 800,
            height: 400,
            title: None,
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// An SVG chart: history points (`circle.history`), the fitted line over the
/// history (`#fit`), its projection to the horizon (`#projection`, dashed), and
/// the limit (`#limit`).
pub fn render_svg(history: &[Measurement], fc: &CapacityForecast, opts: &ChartOptions) -> String {
    let (w, h) = (
        f64::from(opts.width.max(200)),
        f64::from(opts.height.max(120)),
    );
    let (left, right, top, bottom) = (70.0, 20.0, 40.0, 40.0);
    let pts: Vec<&Measurement> = history.iter().filter(|m| m.value.is_finite()).collect();
    let t0 = pts.iter().map(|m| m.at).min().unwrap_or(fc.fit.origin);
    let t1 = fc.horizon_at.max(fc.last_at);
    let mut ys: Vec<f64> = pts.iter().map(|m| m.value).collect();
    ys.push(fc.fit.value_at(t0));
    ys.push(fc.projected_value);
    if let Some(l) = fc.limit {
        ys.push(l.value);
    }
    let (mut ymin, mut ymax) = ys
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    if !ymin.is_finite() || !ymax.is_finite() {
        (ymin, ymax) = (0.0, 1.0);
    }
    if ymax - ymin < 1e-9 {
        ymax += 1.0;
        ymin -= 1.0;
    }
    let pad = (ymax - ymin) * 0.05;
    let (ymin, ymax) = (ymin - pad, ymax + pad);
    let span = t1.duration_since(t0).as_secs_f64().max(1.0);
    let x = |t: Timestamp| left + (t.duration_since(t0).as_secs_f64() / span) * (w - left - right);
    let y = |v: f64| top + (ymax - v) / (ymax - ymin) * (h - top - bottom);
    let title = opts.title.clone().unwrap_or_else(|| {
        if fc.target.is_empty() {
            fc.metric.clone()
        } else {
            format!("{} on {}", fc.metric, fc.target)
        }
    });
    let unit = xml_escape(&fc.unit);
    let mut s = String::new();
    s.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\n"
    ));
    s.push_str(&format!("<title>{}</title>\n", xml_escape(&title)));
    s.push_str(&format!(
        "<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"
    ));
    s.push_str(&format!(
        "<text x=\"{left}\" y=\"22\" font-size=\"14\">{} (R² {:.2}, {:+.3} {unit}/day)</text>\n",
        xml_escape(&title),
        fc.fit.r_squared,
        fc.fit.slope_per_day
    ));
    // Axes with min/max value and first/last/horizon date labels.
    s.push_str("<g id=\"axes\" stroke=\"#444\">\n");
    s.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{:.1}\"/>\n<line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>\n",
        h - bottom,
        h - bottom,
        w - right,
        h - bottom
    ));
    s.push_str("</g>\n<g id=\"labels\" fill=\"#444\">\n");
    for v in [ymin + pad, ymax - pad] {
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2} {unit}</text>\n",
            left - 4.0,
            y(v) + 4.0
        ));
    }
    for t in [t0, fc.last_at, t1] {
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            x(t),
            h - bottom + 16.0,
            t.strftime("%Y-%m-%d")
        ));
    }
    s.push_str("</g>\n");
    if let Some(l) = fc.limit {
        let ly = y(l.value);
        s.push_str(&format!(
            "<line id=\"limit\" class=\"limit\" x1=\"{left}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"#c00\" stroke-width=\"1.5\" data-value=\"{}\"/>\n",
            w - right,
            l.value
        ));
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c00\" text-anchor=\"end\">limit {} {unit}</text>\n",
            w - right,
            ly - 4.0,
            l.value
        ));
    }
    s.push_str(&format!(
        "<polyline id=\"fit\" class=\"fit\" fill=\"none\" stroke=\"#06c\" stroke-width=\"2\" points=\"{:.1},{:.1} {:.1},{:.1}\"/>\n",
        x(t0),
        y(fc.fit.value_at(t0)),
        x(fc.last_at),
        y(fc.fit.value_at(fc.last_at))
    ));
    s.push_str(&format!(
        "<polyline id=\"projection\" class=\"projection\" fill=\"none\" stroke=\"#06c\" stroke-width=\"2\" stroke-dasharray=\"6 4\" points=\"{:.1},{:.1} {:.1},{:.1}\"/>\n",
        x(fc.last_at),
        y(fc.fit.value_at(fc.last_at)),
        x(t1),
        y(fc.fit.value_at(t1))
    ));
    s.push_str("<g id=\"history\" fill=\"#333\">\n");
    for m in &pts {
        s.push_str(&format!(
            "<circle class=\"history\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" data-value=\"{}\"/>\n",
            x(m.at),
            y(m.value),
            m.value
        ));
    }
    s.push_str("</g>\n</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn day(n: i64) -> Timestamp {
        ts("2025-01-01T00:00:00Z")
            .checked_add(SignedDuration::from_hours(24 * n))
            .unwrap()
    }

    /// 60 daily points of 50 + 0.5/day with a small deterministic wobble.
    fn synthetic() -> Vec<Measurement> {
        (0..60)
            .map(|d| {
                let wobble = if d % 2 == 0 { 0.2 } else { -0.2 };
                let mut m = Measurement::new(
                    "disk_used_percent",
                    "/var",
                    day(d),
                    50.0 + 0.5 * d as f64 + wobble,
                );
                m.unit = "%".into();
                m
            })
            .collect()
    }

    #[test]
    fn fit_recovers_known_trend() {
        let h = synthetic();
        let pts: Vec<_> = h.iter().map(|m| (m.at, m.value)).collect();
        let f = fit_linear(&pts).unwrap();
        assert!((f.slope_per_day - 0.5).abs() < 0.01, "{}", f.slope_per_day);
        assert!((f.intercept - 50.0).abs() < 0.2, "{}", f.intercept);
        assert!(f.r_squared > 0.99, "{}", f.r_squared);
        assert_eq!(f.points, 60);
        // Exact line: R² = 1 and exact slope.
        let exact: Vec<_> = (0..5).map(|d| (day(d), 10.0 - 2.0 * d as f64)).collect();
        let f = fit_linear(&exact).unwrap();
        assert!((f.slope_per_day + 2.0).abs() < 1e-9);
        assert!((f.r_squared - 1.0).abs() < 1e-12);
        assert_eq!(f.when_reaches(0.0), Some(day(5)));
    }

    #[test]
    fn fit_needs_two_distinct_times() {
        assert!(matches!(
            fit_linear(&[]),
            Err(RunbookError::InsufficientData { got: 0, .. })
        ));
        let same = [(day(1), 1.0), (day(1), 2.0)];
        assert!(matches!(
            fit_linear(&same),
            Err(RunbookError::InsufficientData { got: 1, .. })
        ));
        let nan = [(day(1), 1.0), (day(2), f64::NAN)];
        assert!(fit_linear(&nan).is_err());
        // Pure noise around a flat line: R² near 0.
        let noise: Vec<_> = (0..40)
            .map(|d| (day(d), if d % 2 == 0 { 1.0 } else { -1.0 }))
            .collect();
        assert!(fit_linear(&noise).unwrap().r_squared < 0.05);
    }

    #[test]
    fn forecast_projects_three_months_and_days_until_full() {
        let h = synthetic();
        let now = day(59);
        let limit = Limit {
            value: 100.0,
            direction: Direction::HigherIsWorse,
        };
        let opts = CapacityOptions::default();
        let fc = forecast(&h, Some(limit), now, &opts).unwrap();
        // Fitted value at day 59 is 79.5; the limit 100 is 41 days later.
        let d = fc.days_until_limit.unwrap();
        assert!((d - 41.0).abs() < 0.5, "{d}");
        // 92 days ahead: 50 + 0.5 * 151 = 125.5
        assert!(
            (fc.projected_value - 125.5).abs() < 0.5,
            "{}",
            fc.projected_value
        );
        assert_eq!(fc.horizon_at, day(59 + 92));
        let f = fc.finding(&opts);
        assert_eq!(f.check, "capacity.disk_used_percent");
        assert_eq!(f.target, "/var");
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.summary.contains("reaches 100 % in 41 days"),
            "{}",
            f.summary
        );
        // Tighter: 30 days later the limit is 11 days off: critical.
        let fc = forecast(&h, Some(limit), day(89), &opts).unwrap();
        assert_eq!(fc.finding(&opts).severity, Severity::Critical);
        // Falling metric, lower-is-worse limit (free space reaching 10).
        let free: Vec<_> = (0..10)
            .map(|d| Measurement::new("free_gb", "/", day(d), 100.0 - 3.0 * d as f64))
            .collect();
        let fc = forecast(
            &free,
            Some(Limit {
                value: 10.0,
                direction: Direction::LowerIsWorse,
            }),
            day(9),
            &opts,
        )
        .unwrap();
        assert!((fc.days_until_limit.unwrap() - 21.0).abs() < 1e-6);
        // A shrinking disk usage never reaches the limit.
        let fc = forecast(&free, Some(limit), day(9), &opts).unwrap();
        assert_eq!(fc.days_until_limit, None);
        assert_eq!(fc.finding(&opts).severity, Severity::Ok);
        // Already past the limit.
        let fc = forecast(
            &h,
            Some(Limit {
                value: 60.0,
                direction: Direction::HigherIsWorse,
            }),
            now,
            &opts,
        )
        .unwrap();
        assert_eq!(fc.days_until_limit, Some(0.0));
        assert!(forecast(&h[..2], None, now, &opts).is_err());
    }

    #[test]
    fn svg_is_well_formed_and_has_the_series() {
        let h = synthetic();
        let fc = forecast(
            &h,
            Some(Limit {
                value: 100.0,
                direction: Direction::HigherIsWorse,
            }),
            day(59),
            &CapacityOptions::default(),
        )
        .unwrap();
        let svg = render_svg(
            &h,
            &fc,
            &ChartOptions {
                title: Some("Disk <var> & co".into()),
                ..Default::default()
            },
        );
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let circles: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("circle") && n.attribute("class") == Some("history"))
            .collect();
        assert_eq!(circles.len(), 60);
        let by_id = |id: &str| {
            doc.descendants()
                .find(|n| n.attribute("id") == Some(id))
                .unwrap()
        };
        let proj = by_id("projection");
        let pts: Vec<(f64, f64)> = proj
            .attribute("points")
            .unwrap()
            .split(' ')
            .map(|p| {
                let (a, b) = p.split_once(',').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect();
        assert_eq!(pts.len(), 2);
        // Rising trend: the projection ends higher (smaller y) and to the right.
        assert!(pts[1].0 > pts[0].0 && pts[1].1 < pts[0].1);
        let limit = by_id("limit");
        let ly: f64 = limit.attribute("y1").unwrap().parse().unwrap();
        // The limit (100) is above every point (max 79.7), the projection end (125.5) above the limit.
        for c in &circles {
            let cy: f64 = c.attribute("cy").unwrap().parse().unwrap();
            assert!(cy > ly);
        }
        assert!(pts[1].1 < ly);
        assert!(by_id("fit").attribute("points").is_some());
        let title = doc.descendants().find(|n| n.has_tag_name("title")).unwrap();
        assert_eq!(title.text(), Some("Disk <var> & co"));
    }

    #[tokio::test]
    async fn capacity_review_reports_every_series() {
        let dir = tempfile::tempdir().unwrap();
        let store = JsonlHistoryStore::new(dir.path().join("h.jsonl"));
        store.append(&synthetic()).await.unwrap();
        store
            .append(&[Measurement::new("users_total", "", day(1), 10.0)])
            .await
            .unwrap();
        let series = vec![
            CapacitySeries {
                metric: "disk_used_percent".into(),
                target: "/var".into(),
                limit: Some(Limit {
                    value: 100.0,
                    direction: Direction::HigherIsWorse,
                }),
            },
            CapacitySeries {
                metric: "users_total".into(),
                target: String::new(),
                limit: None,
            },
        ];
        let (report, fcs) =
            capacity_review(&store, &series, day(59), &CapacityOptions::default()).await;
        assert_eq!(report.title, "capacity-planning");
        assert_eq!(report.findings.len(), 2);
        assert_eq!(report.findings[0].severity, Severity::Warning);
        assert_eq!(report.findings[1].severity, Severity::Ok);
        assert!(report.findings[1].summary.contains("no trend yet"));
        assert_eq!(fcs.len(), 1);
        assert!(roxmltree::Document::parse(&fcs[0].svg).is_ok());

        let mut m = MockHistoryStore::new();
        m.expect_series()
            .returning(|_, _, _| Err(RunbookError::Query("db down".into())));
        let (report, fcs) =
            capacity_review(&m, &series[..1], day(59), &CapacityOptions::default()).await;
        assert_eq!(report.severity(), Severity::Unknown);
        assert!(fcs.is_empty());
    }

    #[tokio::test]
    async fn jsonl_store_round_trip_prune_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let store = JsonlHistoryStore::new(&path);
        assert!(store.series("x", "", None).await.unwrap().is_empty());
        let h = synthetic();
        store.append(&h[30..]).await.unwrap();
        store.append(&h[..30]).await.unwrap();
        store
            .append(&[Measurement::new("db_size_bytes", "db:app", day(3), 1e9)])
            .await
            .unwrap();
        // A new instance reads what the first wrote, sorted by time.
        let store = JsonlHistoryStore::new(&path);
        let s = store
            .series("disk_used_percent", "/var", None)
            .await
            .unwrap();
        assert_eq!(s, h);
        let s = store
            .series("disk_used_percent", "/var", Some(day(50)))
            .await
            .unwrap();
        assert_eq!(s.len(), 10);
        assert_eq!(
            store.series_keys().await.unwrap(),
            vec![
                ("db_size_bytes".to_string(), "db:app".to_string()),
                ("disk_used_percent".to_string(), "/var".to_string())
            ]
        );
        assert_eq!(store.prune(day(10)).await.unwrap(), 11);
        assert_eq!(
            store
                .series("disk_used_percent", "/var", None)
                .await
                .unwrap()
                .len(),
            50
        );
        // Only the history file: no temporary files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // NaN cannot be stored.
        assert!(
            store
                .append(&[Measurement::new("a", "", day(1), f64::NAN)])
                .await
                .is_err()
        );
        // A damaged line is reported with its number.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{not json\n");
        std::fs::write(&path, text).unwrap();
        match store.series("a", "", None).await {
            Err(RunbookError::Corrupt { line, .. }) => assert_eq!(line, 51),
            other => panic!("{other:?}"),
        }
    }
}

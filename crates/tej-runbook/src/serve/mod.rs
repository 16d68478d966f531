//! `tej serve` (and `tej daemon` with `[serve] listen`): the latest check results over
//! HTTP, read-only, bound to loopback unless `[serve] allow_remote` and a token are set.
//!
//! - `GET /`: the status page ([`status_page`]): the overall state, every check worst first,
//!   the calendar's last runs; HTML without JavaScript, every text escaped and redacted.
//! - `GET /metrics`: one `prometheus-client` registry ([`registry`]) as OpenMetrics text
//!   ([`exposition`], also what `--prometheus-file` writes): each check's status, each
//!   finding metric in base units, each calendar entry's last run, the exporter's health.
//! - `GET /healthz`: 200 while the process lives. `GET /readyz`: 200 while the newest
//!   collection finished within twice the interval, else 503 with the reason.
//! - `GET /api/v1/checks`: `{"collected_at", "collection_seconds", "error", "severity",
//!   "title", "checks": [Finding...]}` (findings as in the JSON Lines schema).
//!
//! [`collect_every`] runs the checks as `tej health` does and publishes into [`Results`];
//! [`Server`] binds, collects and serves: what `tej serve` and `tej daemon` run.

mod metrics;
mod page;
mod server;

pub use metrics::{CONTENT_TYPE, Snapshot, calendar_history, exposed_name, exposition, registry};
pub use page::{PAGE_CSP, status_page};
pub use server::{
    Results, ServeOptions, Server, collect_every, collect_once, config_redactor, router,
};

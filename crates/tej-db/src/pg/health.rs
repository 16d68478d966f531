//! The daily PostgreSQL health check: reachability, version, uptime, connections,
//! wraparound, the xmin horizon and who pins it, blocking locks, archiver, checksums,
//! invalid indexes and sequences. Its queries run concurrently.

use super::Sql;
use super::util::{human_bytes, human_duration, truncate};
use super::{DbError, PgAdmin, PgRow, Ping};
use serde::Serialize;
use tej_core::secret::redact_url_passwords;
use tej_core::{Finding, Metric, Report, Severity, Threshold};

/// The hard limit of transaction-ID and multixact age (2^31).
pub const WRAPAROUND_LIMIT: f64 = 2_147_483_648.0;

/// Thresholds of the daily check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthOptions {
    /// Round trip of `SELECT 1`, in milliseconds.
    pub latency_ms: Threshold,
    /// Connections in use, percent of `max_connections` minus reserved slots.
    pub connections_percent: Threshold,
    /// Transaction-ID or multixact age, percent of the 2^31 hard limit.
    pub wraparound_percent: Threshold,
    /// How long the xmin horizon may be held by one session, prepared transaction or slot, in seconds.
    pub horizon_age_s: Threshold,
    /// How long a session may sit idle in transaction, in seconds.
    pub idle_in_transaction_s: Threshold,
    /// How long a query may run, in seconds.
    pub long_query_s: Threshold,
    /// How long a prepared transaction may stay open, in seconds.
    pub prepared_xact_s: Threshold,
    /// WAL retained by an inactive replication slot, in bytes.
    pub slot_retained_bytes: Threshold,
    /// How long a query may wait for a lock, in seconds.
    pub lock_wait_s: Threshold,
    /// Sequence values used, percent of what the sequence (or its column's type) allows.
    pub sequence_percent: Threshold,
    /// How many relations with the oldest `relfrozenxid` to name.
    pub oldest_relations: i64,
}

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions {
            latency_ms: Threshold::above(100.0, 1000.0),
            connections_percent: Threshold::above(80.0, 95.0),
            wraparound_percent: Threshold::above(50.0, 75.0),
            horizon_age_s: Threshold::above(1800.0, 4.0 * 3600.0),
            idle_in_transaction_s: Threshold::above(300.0, 3600.0),
            long_query_s: Threshold::above(300.0, 3600.0),
            prepared_xact_s: Threshold::above(300.0, 3600.0),
            slot_retained_bytes: Threshold::above(
                1024.0 * 1024.0 * 1024.0,
                10.0 * 1024.0 * 1024.0 * 1024.0,
            ),
            lock_wait_s: Threshold::above(5.0, 60.0),
            sequence_percent: Threshold::above(75.0, 90.0),
            oldest_relations: 5,
        }
    }
}

/// Version, uptime and connection use of the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerInfo {
    /// `server_version` (`15.8 (Debian 15.8-0+deb12u1)`).
    pub version: String,
    /// `server_version_num` (150008).
    pub version_num: i64,
    /// Seconds since the postmaster started.
    pub uptime_s: f64,
    /// Client connections open now.
    pub connections: i64,
    /// `max_connections`.
    pub max_connections: i64,
    /// `superuser_reserved_connections`.
    pub reserved_connections: i64,
    /// Connected database.
    pub database: String,
    /// Connected role.
    pub user: String,
    /// Whether data checksums are enabled.
    pub data_checksums: bool,
    /// Whether the server is a standby.
    pub in_recovery: bool,
}

/// Wraparound age of one database.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatabaseAge {
    /// Database name.
    pub database: String,
    /// `age(datfrozenxid)`.
    pub xid_age: i64,
    /// `mxid_age(datminmxid)`.
    pub mxid_age: i64,
    /// `xid_age` as percent of 2^31.
    pub xid_percent: f64,
    /// `mxid_age` as percent of 2^31.
    pub mxid_percent: f64,
}

/// A relation holding back the database's `datfrozenxid`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrozenRelation {
    /// Qualified name.
    pub relation: String,
    /// `relkind` (`r` table, `m` materialized view, `t` TOAST).
    pub kind: String,
    /// `age(relfrozenxid)`.
    pub xid_age: i64,
    /// `mxid_age(relminmxid)`.
    pub mxid_age: i64,
    /// Total size in bytes.
    pub bytes: i64,
}

/// A client session that holds a transaction or snapshot open.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    /// Backend pid.
    pub pid: i64,
    /// Role.
    pub user: String,
    /// `application_name`.
    pub application: String,
    /// Client address (empty for local sockets).
    pub client: String,
    /// Database.
    pub database: String,
    /// `state` (`active`, `idle in transaction`...).
    pub state: String,
    /// Seconds since the transaction began.
    pub xact_age_s: Option<f64>,
    /// Seconds in the current state.
    pub state_age_s: Option<f64>,
    /// When the current (or last) query started, as the server prints it.
    pub query_start: Option<String>,
    /// Seconds since the current (or last) query started.
    pub query_age_s: Option<f64>,
    /// Age in transactions of the session's xmin or xid, if it holds one.
    pub horizon_xid_age: Option<i64>,
    /// The current or last query, shortened, with URL and `password=` passwords masked
    /// (the text is another session's and may quote credentials).
    pub query: String,
    /// `wait_event_type`.
    pub wait_event_type: String,
}

impl Session {
    /// True when the session holds back VACUUM's cleanup horizon.
    pub fn pins_horizon(&self) -> bool {
        self.horizon_xid_age.is_some()
    }

    /// True for `idle in transaction` and `idle in transaction (aborted)`.
    pub fn idle_in_transaction(&self) -> bool {
        self.state.starts_with("idle in transaction")
    }
}

/// A prepared (two-phase) transaction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreparedXact {
    /// Global id.
    pub gid: String,
    /// When it was prepared.
    pub prepared_at: String,
    /// Seconds since.
    pub age_s: f64,
    /// Owner role.
    pub owner: String,
    /// Database.
    pub database: String,
    /// Age of its transaction id.
    pub xid_age: i64,
}

/// A replication slot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicationSlot {
    /// Slot name.
    pub name: String,
    /// `physical` or `logical`.
    pub slot_type: String,
    /// Whether a consumer is connected.
    pub active: bool,
    /// Database (logical slots).
    pub database: String,
    /// Age of the slot's xmin.
    pub xmin_age: Option<i64>,
    /// Age of the slot's catalog_xmin.
    pub catalog_xmin_age: Option<i64>,
    /// WAL bytes the slot keeps on disk.
    pub retained_bytes: Option<i64>,
    /// `wal_status` (`reserved`, `extended`, `unreserved`, `lost`).
    pub wal_status: String,
}

/// What holds back the xmin horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HorizonHolderKind {
    /// A session idle in transaction.
    IdleInTransaction,
    /// A session running a long query or transaction.
    Session,
    /// A prepared transaction.
    PreparedTransaction,
    /// A replication slot.
    ReplicationSlot,
}

/// One holder of the xmin horizon, oldest first in reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HorizonHolder {
    /// What kind of holder.
    pub kind: HorizonHolderKind,
    /// `pid 1234`, `prepared 'gid'`, `slot 'name'`.
    pub name: String,
    /// Age in transactions.
    pub xid_age: i64,
    /// For how long (sessions and prepared transactions).
    pub age_s: Option<f64>,
    /// Who and what, for humans.
    pub detail: String,
}

/// A query waiting for a lock and the session blocking it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockedQuery {
    /// The waiting backend.
    pub waiting_pid: i64,
    /// Its role.
    pub waiting_user: String,
    /// Its query.
    pub waiting_query: String,
    /// Seconds it has waited (since its query started).
    pub waiting_s: f64,
    /// The blocking backend.
    pub blocking_pid: i64,
    /// Its role.
    pub blocking_user: String,
    /// Its state (`idle in transaction`...).
    pub blocking_state: String,
    /// Its current or last query.
    pub blocking_query: String,
    /// Lock type waited for (`transactionid`, `relation`, `tuple`).
    pub lock_type: String,
    /// Lock mode waited for.
    pub lock_mode: String,
    /// The relation involved, when known.
    pub relation: String,
}

/// `pg_stat_archiver` (and `archive_mode`): what the daily check reports and what a base
/// backup waits on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ArchiverStatus {
    /// `archive_mode`.
    pub archive_mode: String,
    /// WAL files archived.
    pub archived_count: i64,
    /// Last archived WAL file.
    pub last_archived_wal: Option<String>,
    /// When.
    pub last_archived_time: Option<String>,
    /// Failed attempts.
    pub failed_count: i64,
    /// Last WAL file that failed.
    pub last_failed_wal: Option<String>,
    /// When.
    pub last_failed_time: Option<String>,
    /// True when the last attempt failed (failure newer than the last success).
    pub failing: bool,
}

/// Checksum failures recorded for one database.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChecksumFailures {
    /// Database (`<shared>` for shared catalogs).
    pub database: String,
    /// Number of failures.
    pub failures: i64,
    /// When the last happened.
    pub last_failure: Option<String>,
}

/// An index marked invalid (a failed `CREATE INDEX CONCURRENTLY` or `REINDEX CONCURRENTLY`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvalidIndex {
    /// Qualified index name.
    pub index: String,
    /// Its table.
    pub table: String,
    /// Size in bytes.
    pub bytes: i64,
    /// True for `_ccnew`/`_ccold` leftovers of `REINDEX CONCURRENTLY`.
    pub reindex_leftover: bool,
}

/// How much of a sequence's range is used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SequenceUsage {
    /// Qualified sequence name.
    pub sequence: String,
    /// The column it feeds, if owned by one (`public.t.id`).
    pub column: String,
    /// That column's type (`int4`...).
    pub column_type: String,
    /// Last value handed out.
    pub last_value: f64,
    /// The largest value usable (the smaller of the sequence's and the column type's).
    pub limit: f64,
    /// Percent of the range used.
    pub used_percent: f64,
}

/// Everything the daily check found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// What was checked.
    pub target: String,
    /// Whether the server answered.
    pub reachable: bool,
    /// Probe timings.
    pub ping: Option<Ping>,
    /// Server facts.
    pub server: Option<ServerInfo>,
    /// Wraparound age per database, oldest first.
    pub databases: Vec<DatabaseAge>,
    /// Relations with the oldest `relfrozenxid` in this database.
    pub oldest_frozen: Vec<FrozenRelation>,
    /// Sessions holding a transaction or snapshot.
    pub sessions: Vec<Session>,
    /// Prepared transactions.
    pub prepared: Vec<PreparedXact>,
    /// Replication slots.
    pub slots: Vec<ReplicationSlot>,
    /// Who holds back the xmin horizon, oldest first.
    pub horizon: Vec<HorizonHolder>,
    /// Queries waiting for locks.
    pub blocked: Vec<BlockedQuery>,
    /// Archiver status.
    pub archiver: Option<ArchiverStatus>,
    /// Checksum failures.
    pub checksum_failures: Vec<ChecksumFailures>,
    /// Invalid indexes.
    pub invalid_indexes: Vec<InvalidIndex>,
    /// Sequences, most used first.
    pub sequences: Vec<SequenceUsage>,
    /// The findings.
    pub findings: Vec<Finding>,
}

impl HealthReport {
    /// The findings as a tej report.
    pub fn report(&self) -> Report {
        Report {
            title: "postgres health".into(),
            findings: self.findings.clone(),
        }
    }

    /// The worst severity.
    pub fn severity(&self) -> Severity {
        self.report().severity()
    }
}

pub(crate) const SERVER_SQL: &str = "SELECT current_setting('server_version') AS version, \
 current_setting('server_version_num')::int8 AS version_num, \
 extract(epoch FROM now() - pg_postmaster_start_time())::float8 AS uptime_s, \
 (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int8 AS connections, \
 current_setting('max_connections')::int8 AS max_connections, \
 current_setting('superuser_reserved_connections')::int8 AS reserved, \
 current_database()::text AS database, current_user::text AS user_name, \
 current_setting('data_checksums') AS data_checksums, pg_is_in_recovery() AS in_recovery";

pub(crate) const WRAPAROUND_SQL: &str = "SELECT datname::text AS database, age(datfrozenxid)::int8 AS xid_age, \
 mxid_age(datminmxid)::int8 AS mxid_age FROM pg_database ORDER BY age(datfrozenxid) DESC";

pub(crate) const OLDEST_FROZEN_SQL: &str = "SELECT c.oid::regclass::text AS relation, c.relkind::text AS kind, \
 age(c.relfrozenxid)::int8 AS xid_age, mxid_age(c.relminmxid)::int8 AS mxid_age, \
 pg_total_relation_size(c.oid)::int8 AS bytes \
 FROM pg_class c WHERE c.relkind IN ('r', 'm', 't') AND c.relfrozenxid <> '0'::xid \
 ORDER BY age(c.relfrozenxid) DESC LIMIT $1::int8";

pub(crate) const SESSIONS_SQL: &str = "SELECT pid::int8 AS pid, coalesce(usename::text, '') AS user_name, \
 coalesce(application_name, '') AS application, coalesce(host(client_addr), '') AS client, \
 coalesce(datname::text, '') AS database, coalesce(state, '') AS state, \
 extract(epoch FROM now() - xact_start)::float8 AS xact_age_s, \
 extract(epoch FROM now() - state_change)::float8 AS state_age_s, \
 query_start::text AS query_start, extract(epoch FROM now() - query_start)::float8 AS query_age_s, \
 greatest(age(backend_xmin), age(backend_xid))::int8 AS horizon_xid_age, \
 left(query, 500) AS query, coalesce(wait_event_type, '') AS wait_event_type \
 FROM pg_stat_activity \
 WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' \
 AND (xact_start IS NOT NULL OR backend_xmin IS NOT NULL OR backend_xid IS NOT NULL) \
 ORDER BY xact_start NULLS LAST";

pub(crate) const PREPARED_SQL: &str = "SELECT gid, prepared::text AS prepared_at, \
 extract(epoch FROM now() - prepared)::float8 AS age_s, owner::text AS owner, database::text AS database, \
 age(transaction)::int8 AS xid_age FROM pg_prepared_xacts ORDER BY prepared";

pub(crate) const SLOTS_SQL: &str = "SELECT slot_name::text AS name, slot_type, active, coalesce(database::text, '') AS database, \
 age(xmin)::int8 AS xmin_age, age(catalog_xmin)::int8 AS catalog_xmin_age, \
 CASE WHEN pg_is_in_recovery() OR restart_lsn IS NULL THEN NULL \
 ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 END AS retained_bytes, \
 coalesce(wal_status, '') AS wal_status FROM pg_replication_slots ORDER BY slot_name";

pub(crate) const BLOCKED_SQL: &str = "SELECT w.pid::int8 AS waiting_pid, coalesce(w.usename::text, '') AS waiting_user, \
 left(w.query, 500) AS waiting_query, extract(epoch FROM now() - w.query_start)::float8 AS waiting_s, \
 b.pid::int8 AS blocking_pid, coalesce(b.usename::text, '') AS blocking_user, coalesce(b.state, '') AS blocking_state, \
 left(b.query, 500) AS blocking_query, coalesce(l.locktype, '') AS lock_type, coalesce(l.mode, '') AS lock_mode, \
 coalesce(l.rel, '') AS relation \
 FROM pg_stat_activity w \
 CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp(pid) \
 JOIN pg_stat_activity b ON b.pid = bp.pid \
 LEFT JOIN LATERAL ( \
   SELECT lk.locktype, lk.mode, coalesce(lk.relation, ( \
       SELECT r.relation FROM pg_locks r WHERE r.pid = w.pid AND r.locktype = 'relation' AND r.granted \
       AND r.relation >= 16384 ORDER BY r.relation LIMIT 1))::regclass::text AS rel \
   FROM pg_locks lk WHERE lk.pid = w.pid AND NOT lk.granted LIMIT 1) l ON true \
 WHERE w.wait_event_type = 'Lock' ORDER BY w.query_start";

pub(crate) const ARCHIVER_SQL: &str = "SELECT current_setting('archive_mode') AS archive_mode, archived_count::int8 AS archived_count, \
 last_archived_wal, last_archived_time::text AS last_archived_time, failed_count::int8 AS failed_count, \
 last_failed_wal, last_failed_time::text AS last_failed_time, \
 (last_failed_time IS NOT NULL AND (last_archived_time IS NULL OR last_failed_time > last_archived_time)) AS failing \
 FROM pg_stat_archiver";

pub(crate) const CHECKSUMS_SQL: &str = "SELECT coalesce(datname::text, '<shared>') AS database, \
 checksum_failures::int8 AS failures, checksum_last_failure::text AS last_failure \
 FROM pg_stat_database WHERE coalesce(checksum_failures, 0) > 0";

pub(crate) const INVALID_INDEXES_SQL: &str = "SELECT i.indexrelid::regclass::text AS index, i.indrelid::regclass::text AS table_name, \
 pg_relation_size(i.indexrelid)::int8 AS bytes, \
 (c.relname ~ '_cc(new|old)[0-9]*$') AS leftover \
 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisvalid ORDER BY 1";

pub(crate) const SEQUENCES_SQL: &str = "SELECT format('%I.%I', s.schemaname, s.sequencename) AS sequence, \
 s.last_value::float8 AS last_value, s.increment_by::int8 AS increment_by, \
 s.max_value::float8 AS max_value, s.min_value::float8 AS min_value, s.cycle, \
 coalesce(col.column_name, '') AS column_name, coalesce(col.type_name, '') AS column_type \
 FROM pg_sequences s \
 LEFT JOIN LATERAL ( \
   SELECT format('%s.%I', d.refobjid::regclass, a.attname) AS column_name, t.typname::text AS type_name \
   FROM pg_depend d \
   JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
   JOIN pg_type t ON t.oid = a.atttypid \
   WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
     AND d.objid = format('%I.%I', s.schemaname, s.sequencename)::regclass AND d.deptype IN ('a', 'i') \
   LIMIT 1) col ON true \
 WHERE s.last_value IS NOT NULL";

fn parse_all<T>(
    rows: &[PgRow],
    f: impl Fn(&PgRow) -> Result<T, DbError>,
) -> Result<Vec<T>, DbError> {
    rows.iter().map(f).collect()
}

pub(crate) fn parse_server(rows: &[PgRow]) -> Result<ServerInfo, DbError> {
    let r = rows
        .first()
        .ok_or_else(|| DbError::UnexpectedReply("server query returned no row".into()))?;
    Ok(ServerInfo {
        version: r.str("version")?,
        version_num: r.i64("version_num")?,
        uptime_s: r.f64("uptime_s")?,
        connections: r.i64("connections")?,
        max_connections: r.i64("max_connections")?,
        reserved_connections: r.i64("reserved")?,
        database: r.str("database")?,
        user: r.str("user_name")?,
        data_checksums: r.bool("data_checksums")?,
        in_recovery: r.bool("in_recovery")?,
    })
}

pub(crate) fn parse_sessions(rows: &[PgRow]) -> Result<Vec<Session>, DbError> {
    parse_all(rows, |r| {
        Ok(Session {
            pid: r.i64("pid")?,
            user: r.str("user_name")?,
            application: r.str("application")?,
            client: r.str("client")?,
            database: r.str("database")?,
            state: r.str("state")?,
            xact_age_s: r.opt_f64("xact_age_s")?,
            state_age_s: r.opt_f64("state_age_s")?,
            query_start: r.opt_str("query_start")?,
            query_age_s: r.opt_f64("query_age_s")?,
            horizon_xid_age: r.opt_i64("horizon_xid_age")?,
            query: redact_url_passwords(&r.str("query")?),
            wait_event_type: r.str("wait_event_type")?,
        })
    })
}

/// Computes the usable limit and percent used of a sequence row.
pub(crate) fn parse_sequences(rows: &[PgRow]) -> Result<Vec<SequenceUsage>, DbError> {
    let mut v: Vec<SequenceUsage> = Vec::new();
    for r in rows {
        if r.bool("cycle")? {
            continue;
        }
        let last = r.f64("last_value")?;
        let inc = r.i64("increment_by")?;
        let column_type = r.str("column_type")?;
        let type_max = match column_type.as_str() {
            "int2" => Some(32_767.0),
            "int4" => Some(2_147_483_647.0),
            _ => None,
        };
        let (limit, used) = if inc >= 0 {
            let limit = r.f64("max_value")?.min(type_max.unwrap_or(f64::MAX));
            (limit, last)
        } else {
            let limit = r
                .f64("min_value")?
                .max(type_max.map_or(f64::MIN, |m| -m - 1.0));
            (limit, last)
        };
        let used_percent = if limit == 0.0 {
            0.0
        } else {
            (used / limit * 100.0).max(0.0)
        };
        v.push(SequenceUsage {
            sequence: r.str("sequence")?,
            column: r.str("column_name")?,
            column_type,
            last_value: last,
            limit,
            used_percent,
        });
    }
    v.sort_by(|a, b| b.used_percent.total_cmp(&a.used_percent));
    Ok(v)
}

/// Who holds back the horizon, oldest first.
pub(crate) fn horizon_holders(
    sessions: &[Session],
    prepared: &[PreparedXact],
    slots: &[ReplicationSlot],
) -> Vec<HorizonHolder> {
    let mut v = Vec::new();
    for s in sessions.iter().filter(|s| s.pins_horizon()) {
        let kind = if s.idle_in_transaction() {
            HorizonHolderKind::IdleInTransaction
        } else {
            HorizonHolderKind::Session
        };
        v.push(HorizonHolder {
            kind,
            name: format!("pid {}", s.pid),
            xid_age: s.horizon_xid_age.unwrap_or(0),
            age_s: s.xact_age_s,
            detail: format!(
                "user {:?}, application {:?}, {}, transaction open {}, last query started {}: {}",
                s.user,
                s.application,
                s.state,
                s.xact_age_s.map_or("?".into(), human_duration),
                s.query_start.as_deref().unwrap_or("?"),
                truncate(&s.query, 120)
            ),
        });
    }
    for p in prepared {
        v.push(HorizonHolder {
            kind: HorizonHolderKind::PreparedTransaction,
            name: format!("prepared transaction {:?}", p.gid),
            xid_age: p.xid_age,
            age_s: Some(p.age_s),
            detail: format!(
                "owner {:?}, database {:?}, prepared {} ago; COMMIT PREPARED or ROLLBACK PREPARED it",
                p.owner,
                p.database,
                human_duration(p.age_s)
            ),
        });
    }
    for s in slots {
        let age = s.xmin_age.into_iter().chain(s.catalog_xmin_age).max();
        if let Some(age) = age {
            v.push(HorizonHolder {
                kind: HorizonHolderKind::ReplicationSlot,
                name: format!("replication slot {:?}", s.name),
                xid_age: age,
                age_s: None,
                detail: format!(
                    "{} slot, {}",
                    s.slot_type,
                    if s.active { "active" } else { "inactive" }
                ),
            });
        }
    }
    v.sort_by_key(|h| std::cmp::Reverse(h.xid_age));
    v
}

/// Turns the collected facts into findings.
pub(crate) fn evaluate(report: &HealthReport, opts: &HealthOptions) -> Vec<Finding> {
    let mut f = Vec::new();
    let target = report.target.clone();
    if let Some(p) = &report.ping {
        f.push(
            Finding::measured(
                "postgres.reachable",
                "round_trip_ms",
                p.round_trip_ms,
                "ms",
                opts.latency_ms,
                format!(
                    "accepting connections; round trip {:.2} ms (connect {:.1} ms)",
                    p.round_trip_ms, p.connect_ms
                ),
            )
            .target(&target),
        );
    }
    if let Some(s) = &report.server {
        let usable = (s.max_connections - s.reserved_connections).max(1) as f64;
        let pct = s.connections as f64 / usable * 100.0;
        f.push(
            Finding::measured(
                "postgres.connections",
                "connections_used_percent",
                pct,
                "%",
                opts.connections_percent,
                format!(
                    "{} of {} usable connections in use ({pct:.0}%)",
                    s.connections, usable
                ),
            )
            .target(&target)
            .metric(Metric::new("connections", s.connections as f64, "count")),
        );
        f.push(
            Finding::ok(
                "postgres.server",
                format!(
                    "PostgreSQL {} up {}{}",
                    s.version,
                    human_duration(s.uptime_s),
                    if s.in_recovery { " (standby)" } else { "" }
                ),
            )
            .target(&target)
            .metric(Metric::new("uptime_s", s.uptime_s, "s")),
        );
    }
    // Wraparound.
    if let Some(worst) = report.databases.iter().max_by(|a, b| {
        a.xid_percent
            .max(a.mxid_percent)
            .total_cmp(&b.xid_percent.max(b.mxid_percent))
    }) {
        let pct = worst.xid_percent.max(worst.mxid_percent);
        let mut finding = Finding::measured(
            "postgres.wraparound",
            "wraparound_percent",
            pct,
            "%",
            opts.wraparound_percent,
            format!(
                "oldest database {:?}: transaction-ID age {} ({:.1}% of the limit), multixact age {} ({:.1}%)",
                worst.database, worst.xid_age, worst.xid_percent, worst.mxid_age, worst.mxid_percent
            ),
        )
        .target(&target);
        for d in &report.databases {
            finding = finding.metric(
                Metric::new("xid_age", d.xid_age as f64, "count").label("database", &d.database),
            );
        }
        if !report.oldest_frozen.is_empty() {
            finding = finding.detail(format!(
                "oldest relfrozenxid in this database: {}",
                report
                    .oldest_frozen
                    .iter()
                    .map(|r| format!(
                        "{} (age {}, {})",
                        r.relation,
                        r.xid_age,
                        human_bytes(r.bytes as f64)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        f.push(finding);
    }
    // The horizon.
    match report.horizon.first() {
        Some(h) => {
            let sev = match h.kind {
                HorizonHolderKind::ReplicationSlot => {
                    let inactive = report
                        .slots
                        .iter()
                        .any(|s| !s.active && h.name.contains(&format!("{:?}", s.name)));
                    if inactive {
                        Severity::Warning
                    } else {
                        Severity::Ok
                    }
                }
                _ => h
                    .age_s
                    .map_or(Severity::Ok, |a| opts.horizon_age_s.evaluate(a)),
            };
            let age = h
                .age_s
                .map_or(String::new(), |a| format!(" for {}", human_duration(a)));
            let mut summary = format!(
                "xmin horizon pinned by {}{age} ({} transactions behind)",
                h.name, h.xid_age
            );
            if sev != Severity::Ok {
                summary.push_str(": VACUUM cannot remove any row deleted or updated since then, so every VACUUM is useless until it ends");
            }
            let mut finding = Finding::new("postgres.xmin_horizon", sev, summary)
                .target(&target)
                .detail(
                    report
                        .horizon
                        .iter()
                        .map(|h| format!("{}: {}", h.name, h.detail))
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
            if let Some(a) = h.age_s {
                finding = finding.metric(
                    Metric::new("horizon_age_s", a, "s").with_threshold(opts.horizon_age_s),
                );
            }
            f.push(finding.metric(Metric::new("horizon_xid_age", h.xid_age as f64, "count")));
        }
        None => f.push(
            Finding::ok(
                "postgres.xmin_horizon",
                "nothing holds back the xmin horizon",
            )
            .target(&target),
        ),
    }
    // Idle in transaction.
    let mut idle_any = false;
    for s in report.sessions.iter().filter(|s| s.idle_in_transaction()) {
        let age = s.state_age_s.unwrap_or(0.0);
        let sev = opts.idle_in_transaction_s.evaluate(age);
        if sev == Severity::Ok {
            continue;
        }
        idle_any = true;
        f.push(
            Finding::new(
                "postgres.idle_in_transaction",
                sev,
                format!(
                    "pid {} (user {:?}, application {:?}) idle in transaction for {}{}",
                    s.pid,
                    s.user,
                    s.application,
                    human_duration(age),
                    if s.pins_horizon() { ", pinning the xmin horizon" } else { "" }
                ),
            )
            .target(format!("pid:{}", s.pid))
            .detail(format!(
                "transaction open {}, last query started {}: {}; end it with pg_terminate_backend({}) if the application cannot",
                s.xact_age_s.map_or("?".into(), human_duration),
                s.query_start.as_deref().unwrap_or("?"),
                truncate(&s.query, 200),
                s.pid
            ))
            .metric(Metric::new("idle_in_transaction_s", age, "s").with_threshold(opts.idle_in_transaction_s)),
        );
    }
    if !idle_any {
        f.push(
            Finding::ok(
                "postgres.idle_in_transaction",
                "no session idle in transaction beyond the threshold",
            )
            .target(&target),
        );
    }
    // Long queries.
    let mut long_any = false;
    for s in report.sessions.iter().filter(|s| s.state == "active") {
        let age = s.query_age_s.unwrap_or(0.0);
        let sev = opts.long_query_s.evaluate(age);
        if sev == Severity::Ok {
            continue;
        }
        long_any = true;
        f.push(
            Finding::new(
                "postgres.long_queries",
                sev,
                format!(
                    "pid {} (user {:?}) has run one query for {}",
                    s.pid,
                    s.user,
                    human_duration(age)
                ),
            )
            .target(format!("pid:{}", s.pid))
            .detail(truncate(&s.query, 300))
            .metric(Metric::new("query_age_s", age, "s").with_threshold(opts.long_query_s)),
        );
    }
    if !long_any {
        f.push(
            Finding::ok(
                "postgres.long_queries",
                "no query running beyond the threshold",
            )
            .target(&target),
        );
    }
    // Prepared transactions.
    for p in &report.prepared {
        f.push(
            Finding::measured(
                "postgres.prepared_transactions",
                "prepared_age_s",
                p.age_s,
                "s",
                opts.prepared_xact_s,
                format!(
                    "prepared transaction {:?} open for {} (owner {:?})",
                    p.gid,
                    human_duration(p.age_s),
                    p.owner
                ),
            )
            .target(format!("gid:{}", p.gid)),
        );
    }
    // Slots.
    for s in report.slots.iter().filter(|s| !s.active) {
        let retained = s.retained_bytes.unwrap_or(0) as f64;
        let sev = opts
            .slot_retained_bytes
            .evaluate(retained)
            .worst(Severity::Warning);
        let sev = if s.wal_status == "lost" {
            Severity::Critical
        } else {
            sev
        };
        f.push(
            Finding::new(
                "postgres.replication_slots",
                sev,
                format!(
                    "inactive {} replication slot {:?} retains {} of WAL (wal_status {})",
                    s.slot_type,
                    s.name,
                    human_bytes(retained),
                    if s.wal_status.is_empty() { "?" } else { &s.wal_status }
                ),
            )
            .target(format!("slot:{}", s.name))
            .detail("drop it with pg_drop_replication_slot() if its consumer is gone; it keeps WAL and holds back the horizon")
            .metric(Metric::new("slot_retained_bytes", retained, "B").with_threshold(opts.slot_retained_bytes)),
        );
    }
    // Locks.
    if report.blocked.is_empty() {
        f.push(
            Finding::ok("postgres.blocking_locks", "no query is waiting for a lock")
                .target(&target),
        );
    }
    for b in &report.blocked {
        f.push(
            Finding::measured(
                "postgres.blocking_locks",
                "lock_wait_s",
                b.waiting_s,
                "s",
                opts.lock_wait_s,
                format!(
                    "pid {} waits {} for a {} lock ({}){} held by pid {} ({:?}, {})",
                    b.waiting_pid,
                    human_duration(b.waiting_s),
                    b.lock_type,
                    b.lock_mode,
                    if b.relation.is_empty() {
                        String::new()
                    } else {
                        format!(" on {}", b.relation)
                    },
                    b.blocking_pid,
                    b.blocking_user,
                    b.blocking_state
                ),
            )
            .target(format!("pid:{}", b.waiting_pid))
            .detail(format!(
                "waiting: {}\nblocking: {}",
                truncate(&b.waiting_query, 200),
                truncate(&b.blocking_query, 200)
            )),
        );
    }
    // Archiver.
    if let Some(a) = &report.archiver {
        let finding = if a.archive_mode == "off" {
            Finding::ok(
                "postgres.archiver",
                "WAL archiving is off (archive_mode = off)",
            )
        } else if a.failing {
            Finding::new(
                "postgres.archiver",
                Severity::Critical,
                format!(
                    "WAL archiving is failing: last failed WAL {} at {} ({} failures); WAL piles up in pg_wal until archive_command succeeds",
                    a.last_failed_wal.as_deref().unwrap_or("?"),
                    a.last_failed_time.as_deref().unwrap_or("?"),
                    a.failed_count
                ),
            )
        } else {
            Finding::ok(
                "postgres.archiver",
                format!(
                    "archiving works: {} WAL files archived, last {} at {}{}",
                    a.archived_count,
                    a.last_archived_wal.as_deref().unwrap_or("-"),
                    a.last_archived_time.as_deref().unwrap_or("-"),
                    if a.failed_count > 0 {
                        format!(" ({} earlier failures)", a.failed_count)
                    } else {
                        String::new()
                    }
                ),
            )
        };
        f.push(finding.target(&target).metric(Metric::new(
            "archive_failed_count",
            a.failed_count as f64,
            "count",
        )));
    }
    // Checksums.
    let checksums_on = report.server.as_ref().is_some_and(|s| s.data_checksums);
    if report.checksum_failures.is_empty() {
        f.push(
            Finding::ok(
                "postgres.checksums",
                if checksums_on {
                    "no data-checksum failures recorded"
                } else {
                    "data checksums are disabled: page corruption is not detected on read (use amcheck)"
                },
            )
            .target(&target),
        );
    }
    for c in &report.checksum_failures {
        f.push(
            Finding::new(
                "postgres.checksums",
                Severity::Critical,
                format!(
                    "{} data-checksum failures in database {:?}, last at {}: run amcheck and restore damaged relations",
                    c.failures,
                    c.database,
                    c.last_failure.as_deref().unwrap_or("?")
                ),
            )
            .target(format!("database:{}", c.database))
            .metric(Metric::new("checksum_failures", c.failures as f64, "count")),
        );
    }
    // Invalid indexes.
    if report.invalid_indexes.is_empty() {
        f.push(Finding::ok("postgres.invalid_indexes", "no invalid indexes").target(&target));
    }
    for i in &report.invalid_indexes {
        f.push(
            Finding::new(
                "postgres.invalid_indexes",
                Severity::Warning,
                format!(
                    "index {} on {} is invalid ({}){}",
                    i.index,
                    i.table,
                    human_bytes(i.bytes as f64),
                    if i.reindex_leftover {
                        ": leftover of a failed REINDEX CONCURRENTLY, drop it"
                    } else {
                        ": it is maintained on writes but never used; drop and recreate it"
                    }
                ),
            )
            .target(&i.index),
        );
    }
    // Sequences.
    let mut seq_any = false;
    for s in &report.sequences {
        let sev = opts.sequence_percent.evaluate(s.used_percent);
        if sev == Severity::Ok {
            continue;
        }
        seq_any = true;
        f.push(
            Finding::measured(
                "postgres.sequences",
                "sequence_used_percent",
                s.used_percent,
                "%",
                opts.sequence_percent,
                format!(
                    "sequence {} has used {:.1}% of its range ({} of {}){}",
                    s.sequence,
                    s.used_percent,
                    s.last_value,
                    s.limit,
                    if s.column.is_empty() {
                        String::new()
                    } else {
                        format!(", feeding {} ({})", s.column, s.column_type)
                    }
                ),
            )
            .target(&s.sequence),
        );
    }
    if !seq_any {
        f.push(
            Finding::ok("postgres.sequences", "no sequence close to exhaustion").target(&target),
        );
    }
    f
}

fn unknown(check: &str, target: &str, e: &DbError) -> Finding {
    Finding::new(check, Severity::Unknown, format!("check failed: {e}")).target(target)
}

/// Runs the daily check. Never fails: an unreachable server or a failing query becomes a finding.
pub async fn check_health<A: PgAdmin + ?Sized>(admin: &A, opts: &HealthOptions) -> HealthReport {
    let target = admin.target();
    let mut report = HealthReport {
        target: target.clone(),
        reachable: false,
        ping: None,
        server: None,
        databases: Vec::new(),
        oldest_frozen: Vec::new(),
        sessions: Vec::new(),
        prepared: Vec::new(),
        slots: Vec::new(),
        horizon: Vec::new(),
        blocked: Vec::new(),
        archiver: None,
        checksum_failures: Vec::new(),
        invalid_indexes: Vec::new(),
        sequences: Vec::new(),
        findings: Vec::new(),
    };
    match admin.ping().await {
        Ok(p) => {
            report.reachable = true;
            report.ping = Some(p);
        }
        Err(e) => {
            let summary = match &e {
                DbError::AuthRefused { .. }
                | DbError::DatabaseMissing { .. }
                | DbError::PermissionDenied { .. } => {
                    format!("server accepts connections, but tej cannot log in: {e}")
                }
                DbError::Rejecting { .. } => format!("server is rejecting connections: {e}"),
                _ => format!("no response: {e}"),
            };
            report.findings.push(
                Finding::new("postgres.reachable", Severity::Critical, summary).target(&target),
            );
            return report;
        }
    }
    let limit = [super::PgParam::Int(opts.oldest_relations)];
    let (
        server,
        wrap,
        frozen,
        sessions,
        prepared,
        slots,
        blocked,
        archiver,
        checksums,
        invalid,
        sequences,
    ) = tokio::join!(
        admin.query(Sql::new(SERVER_SQL), &[]),
        admin.query(Sql::new(WRAPAROUND_SQL), &[]),
        admin.query(Sql::new(OLDEST_FROZEN_SQL), &limit),
        admin.query(Sql::new(SESSIONS_SQL), &[]),
        admin.query(Sql::new(PREPARED_SQL), &[]),
        admin.query(Sql::new(SLOTS_SQL), &[]),
        admin.query(Sql::new(BLOCKED_SQL), &[]),
        admin.query(Sql::new(ARCHIVER_SQL), &[]),
        admin.query(Sql::new(CHECKSUMS_SQL), &[]),
        admin.query(Sql::new(INVALID_INDEXES_SQL), &[]),
        admin.query(Sql::new(SEQUENCES_SQL), &[]),
    );
    let mut failures = Vec::new();
    let mut take = |check: &str, r: Result<Vec<PgRow>, DbError>| -> Vec<PgRow> {
        match r {
            Ok(rows) => rows,
            Err(e) => {
                failures.push(unknown(check, &target, &e));
                Vec::new()
            }
        }
    };
    let server_rows = take("postgres.server", server);
    let wrap_rows = take("postgres.wraparound", wrap);
    let frozen_rows = take("postgres.wraparound", frozen);
    let session_rows = take("postgres.sessions", sessions);
    let prepared_rows = take("postgres.prepared_transactions", prepared);
    let slot_rows = take("postgres.replication_slots", slots);
    let blocked_rows = take("postgres.blocking_locks", blocked);
    let archiver_rows = take("postgres.archiver", archiver);
    let checksum_rows = take("postgres.checksums", checksums);
    let invalid_rows = take("postgres.invalid_indexes", invalid);
    let sequence_rows = take("postgres.sequences", sequences);

    let parsed: Result<(), DbError> = (|| {
        if !server_rows.is_empty() {
            report.server = Some(parse_server(&server_rows)?);
        }
        report.databases = parse_all(&wrap_rows, |r| {
            let xid_age = r.i64("xid_age")?;
            let mxid_age = r.i64("mxid_age")?;
            Ok(DatabaseAge {
                database: r.str("database")?,
                xid_age,
                mxid_age,
                xid_percent: xid_age as f64 / WRAPAROUND_LIMIT * 100.0,
                mxid_percent: mxid_age as f64 / WRAPAROUND_LIMIT * 100.0,
            })
        })?;
        report.oldest_frozen = parse_all(&frozen_rows, |r| {
            Ok(FrozenRelation {
                relation: r.str("relation")?,
                kind: r.str("kind")?,
                xid_age: r.i64("xid_age")?,
                mxid_age: r.i64("mxid_age")?,
                bytes: r.i64("bytes")?,
            })
        })?;
        report.sessions = parse_sessions(&session_rows)?;
        report.prepared = parse_all(&prepared_rows, |r| {
            Ok(PreparedXact {
                gid: r.str("gid")?,
                prepared_at: r.str("prepared_at")?,
                age_s: r.f64("age_s")?,
                owner: r.str("owner")?,
                database: r.str("database")?,
                xid_age: r.i64("xid_age")?,
            })
        })?;
        report.slots = parse_all(&slot_rows, |r| {
            Ok(ReplicationSlot {
                name: r.str("name")?,
                slot_type: r.str("slot_type")?,
                active: r.bool("active")?,
                database: r.str("database")?,
                xmin_age: r.opt_i64("xmin_age")?,
                catalog_xmin_age: r.opt_i64("catalog_xmin_age")?,
                retained_bytes: r.opt_i64("retained_bytes")?,
                wal_status: r.str("wal_status")?,
            })
        })?;
        report.blocked = parse_all(&blocked_rows, |r| {
            Ok(BlockedQuery {
                waiting_pid: r.i64("waiting_pid")?,
                waiting_user: r.str("waiting_user")?,
                waiting_query: redact_url_passwords(&r.str("waiting_query")?),
                waiting_s: r.opt_f64("waiting_s")?.unwrap_or(0.0),
                blocking_pid: r.i64("blocking_pid")?,
                blocking_user: r.str("blocking_user")?,
                blocking_state: r.str("blocking_state")?,
                blocking_query: redact_url_passwords(&r.str("blocking_query")?),
                lock_type: r.str("lock_type")?,
                lock_mode: r.str("lock_mode")?,
                relation: r.str("relation")?,
            })
        })?;
        if let Some(r) = archiver_rows.first() {
            report.archiver = Some(ArchiverStatus {
                archive_mode: r.str("archive_mode")?,
                archived_count: r.i64("archived_count")?,
                last_archived_wal: r.opt_str("last_archived_wal")?,
                last_archived_time: r.opt_str("last_archived_time")?,
                failed_count: r.i64("failed_count")?,
                last_failed_wal: r.opt_str("last_failed_wal")?,
                last_failed_time: r.opt_str("last_failed_time")?,
                failing: r.bool("failing")?,
            });
        }
        report.checksum_failures = parse_all(&checksum_rows, |r| {
            Ok(ChecksumFailures {
                database: r.str("database")?,
                failures: r.i64("failures")?,
                last_failure: r.opt_str("last_failure")?,
            })
        })?;
        report.invalid_indexes = parse_all(&invalid_rows, |r| {
            Ok(InvalidIndex {
                index: r.str("index")?,
                table: r.str("table_name")?,
                bytes: r.i64("bytes")?,
                reindex_leftover: r.bool("leftover")?,
            })
        })?;
        report.sequences = parse_sequences(&sequence_rows)?;
        Ok(())
    })();
    report.horizon = horizon_holders(&report.sessions, &report.prepared, &report.slots);
    let mut findings = evaluate(&report, opts);
    if let Err(e) = parsed {
        findings.push(unknown("postgres.health", &target, &e));
    }
    findings.extend(failures);
    report.findings = findings;
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::{MockPgAdmin, PgValue};

    fn row<const N: usize>(pairs: [(&str, PgValue); N]) -> PgRow {
        PgRow::from_pairs(pairs)
    }

    fn server_row(connections: i64) -> PgRow {
        row([
            ("version", "15.8".into()),
            ("version_num", 150008.into()),
            ("uptime_s", 90000.0.into()),
            ("connections", connections.into()),
            ("max_connections", 103.into()),
            ("reserved", 3.into()),
            ("database", "app".into()),
            ("user_name", "postgres".into()),
            ("data_checksums", "on".into()),
            ("in_recovery", false.into()),
        ])
    }

    fn idle_session(pid: i64, age: f64) -> PgRow {
        row([
            ("pid", pid.into()),
            ("user_name", "app".into()),
            ("application", "worker".into()),
            ("client", "10.0.0.5".into()),
            ("database", "app".into()),
            ("state", "idle in transaction".into()),
            ("xact_age_s", age.into()),
            ("state_age_s", age.into()),
            ("query_start", "2025-01-16 04:00:00+00".into()),
            ("query_age_s", age.into()),
            ("horizon_xid_age", 5000.into()),
            ("query", "UPDATE jobs SET state = 'x'".into()),
            ("wait_event_type", "Client".into()),
        ])
    }

    fn mock(
        rows: impl Fn(&str) -> Result<Vec<PgRow>, DbError> + Send + Sync + 'static,
    ) -> MockPgAdmin {
        let mut m = MockPgAdmin::new();
        m.expect_target().return_const("db:app@h:5432".to_string());
        m.expect_ping().returning(|| {
            Ok(Ping {
                round_trip_ms: 0.4,
                connect_ms: 3.0,
            })
        });
        m.expect_query().returning(move |sql, _| rows(&sql));
        m
    }

    #[tokio::test]
    async fn unreachable_server_is_one_critical_finding_and_no_queries() {
        let mut m = MockPgAdmin::new();
        m.expect_target().return_const("db:app@h:5432".to_string());
        m.expect_ping().returning(|| {
            Err(DbError::Unreachable {
                target: "h:5432".into(),
                reason: "Connection refused".into(),
            })
        });
        m.expect_query().never();
        let r = check_health(&m, &HealthOptions::default()).await;
        assert!(!r.reachable);
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.findings[0].severity, Severity::Critical);
        assert!(r.findings[0].summary.contains("no response"));
        let mut m = MockPgAdmin::new();
        m.expect_target().return_const("db:app@h:5432".to_string());
        m.expect_ping().returning(|| {
            Err(DbError::AuthRefused {
                user: "tej".into(),
                reason: "password authentication failed".into(),
            })
        });
        let r = check_health(&m, &HealthOptions::default()).await;
        assert!(
            r.findings[0].summary.contains("accepts connections"),
            "{}",
            r.findings[0].summary
        );
    }

    #[tokio::test]
    async fn findings_follow_thresholds_and_name_culprits() {
        let m = mock(|sql| {
            Ok(match sql {
                s if s == SERVER_SQL => vec![server_row(90)],
                s if s == WRAPAROUND_SQL => vec![
                    row([
                        ("database", "app".into()),
                        ("xid_age", 1_200_000_000i64.into()),
                        ("mxid_age", 10.into()),
                    ]),
                    row([
                        ("database", "postgres".into()),
                        ("xid_age", 100.into()),
                        ("mxid_age", 10.into()),
                    ]),
                ],
                s if s == OLDEST_FROZEN_SQL => vec![row([
                    ("relation", "public.events".into()),
                    ("kind", "r".into()),
                    ("xid_age", 1_200_000_000i64.into()),
                    ("mxid_age", 1.into()),
                    ("bytes", 8192.into()),
                ])],
                s if s == SESSIONS_SQL => vec![idle_session(4242, 5.0 * 3600.0)],
                s if s == BLOCKED_SQL => vec![row([
                    ("waiting_pid", 77.into()),
                    ("waiting_user", "app".into()),
                    ("waiting_query", "UPDATE jobs SET x = 1 WHERE id = 1".into()),
                    ("waiting_s", 120.0.into()),
                    ("blocking_pid", 4242.into()),
                    ("blocking_user", "app".into()),
                    ("blocking_state", "idle in transaction".into()),
                    ("blocking_query", "UPDATE jobs".into()),
                    ("lock_type", "transactionid".into()),
                    ("lock_mode", "ShareLock".into()),
                    ("relation", "jobs".into()),
                ])],
                s if s == ARCHIVER_SQL => vec![row([
                    ("archive_mode", "on".into()),
                    ("archived_count", 10.into()),
                    ("last_archived_wal", "000000010000000000000009".into()),
                    ("last_archived_time", "2025-01-16 03:00:00+00".into()),
                    ("failed_count", 4.into()),
                    ("last_failed_wal", "00000001000000000000000A".into()),
                    ("last_failed_time", "2025-01-16 04:00:00+00".into()),
                    ("failing", true.into()),
                ])],
                s if s == SEQUENCES_SQL => vec![row([
                    ("sequence", "public.orders_id_seq".into()),
                    ("last_value", 2_000_000_000.0.into()),
                    ("increment_by", 1.into()),
                    ("max_value", 9.2e18.into()),
                    ("min_value", 1.0.into()),
                    ("cycle", false.into()),
                    ("column_name", "public.orders.id".into()),
                    ("column_type", "int4".into()),
                ])],
                s if s == CHECKSUMS_SQL => {
                    return Err(DbError::PermissionDenied {
                        message: "permission denied for view pg_stat_database".into(),
                        privilege: "membership in pg_monitor".into(),
                    });
                }
                _ => vec![],
            })
        });
        let r = check_health(&m, &HealthOptions::default()).await;
        let find = |check: &str| -> Vec<&Finding> {
            r.findings.iter().filter(|f| f.check == check).collect()
        };
        // 90 of 100 usable connections
        assert_eq!(find("postgres.connections")[0].severity, Severity::Warning);
        // 1.2e9 of 2^31 = 55.9%
        let w = find("postgres.wraparound")[0];
        assert_eq!(w.severity, Severity::Warning);
        assert!(
            w.summary.contains("\"app\"") && w.summary.contains("55.9%"),
            "{}",
            w.summary
        );
        assert!(w.detail.as_deref().unwrap().contains("public.events"));
        // horizon pinned 5 h by pid 4242
        let h = find("postgres.xmin_horizon")[0];
        assert_eq!(h.severity, Severity::Critical);
        assert!(
            h.summary.contains("pid 4242") && h.summary.contains("VACUUM"),
            "{}",
            h.summary
        );
        assert!(h.detail.as_deref().unwrap().contains("worker"));
        assert_eq!(r.horizon[0].kind, HorizonHolderKind::IdleInTransaction);
        let idle = find("postgres.idle_in_transaction")[0];
        assert_eq!(idle.severity, Severity::Critical);
        assert!(idle.summary.contains("pinning the xmin horizon"));
        // blocked query names its blocker
        let b = find("postgres.blocking_locks")[0];
        assert_eq!(b.severity, Severity::Critical);
        assert!(
            b.summary.contains("pid 77")
                && b.summary.contains("pid 4242")
                && b.summary.contains("jobs")
        );
        // archiver failing
        let a = find("postgres.archiver")[0];
        assert_eq!(a.severity, Severity::Critical);
        assert!(a.summary.contains("00000001000000000000000A"));
        // int4 column caps a bigint sequence: 2e9 / 2147483647 = 93%
        let s = find("postgres.sequences")[0];
        assert_eq!(s.severity, Severity::Critical);
        assert!(s.summary.contains("public.orders.id"));
        // a failing check is Unknown with the privilege, the rest still ran
        let c = find("postgres.checksums");
        assert!(
            c.iter()
                .any(|f| f.severity == Severity::Unknown && f.summary.contains("pg_monitor"))
        );
        assert_eq!(r.severity(), Severity::Critical);
    }

    #[tokio::test]
    async fn quiet_server_is_ok() {
        let m = mock(|sql| {
            Ok(match sql {
                s if s == SERVER_SQL => vec![server_row(5)],
                s if s == WRAPAROUND_SQL => vec![row([
                    ("database", "app".into()),
                    ("xid_age", 1000.into()),
                    ("mxid_age", 1.into()),
                ])],
                s if s == SESSIONS_SQL => vec![idle_session(9, 2.0)],
                s if s == ARCHIVER_SQL => vec![row([
                    ("archive_mode", "off".into()),
                    ("archived_count", 0.into()),
                    ("last_archived_wal", PgValue::Null),
                    ("last_archived_time", PgValue::Null),
                    ("failed_count", 0.into()),
                    ("last_failed_wal", PgValue::Null),
                    ("last_failed_time", PgValue::Null),
                    ("failing", false.into()),
                ])],
                _ => vec![],
            })
        });
        let r = check_health(&m, &HealthOptions::default()).await;
        assert_eq!(r.severity(), Severity::Ok, "{:#?}", r.report().problems());
        // A young idle-in-transaction session is still named as the horizon holder, at OK.
        let h = r
            .findings
            .iter()
            .find(|f| f.check == "postgres.xmin_horizon")
            .unwrap();
        assert!(h.summary.contains("pid 9") && !h.summary.contains("useless"));
    }

    #[tokio::test]
    async fn a_malformed_reply_is_unknown_not_a_panic() {
        let m = mock(|sql| {
            Ok(if sql == SERVER_SQL {
                vec![row([("version", "15".into())])]
            } else {
                vec![]
            })
        });
        let r = check_health(&m, &HealthOptions::default()).await;
        assert!(
            r.findings
                .iter()
                .any(|f| f.severity == Severity::Unknown && f.summary.contains("missing"))
        );
    }

    #[test]
    fn sequences_descending_and_cycling() {
        let mk = |last: f64, inc: i64, min: f64, cycle: bool, ty: &str| {
            row([
                ("sequence", "s".into()),
                ("last_value", last.into()),
                ("increment_by", inc.into()),
                ("max_value", 9.2e18.into()),
                ("min_value", min.into()),
                ("cycle", cycle.into()),
                ("column_name", "".into()),
                ("column_type", ty.into()),
            ])
        };
        let v = parse_sequences(&[
            mk(-30_000.0, -1, -9.2e18, false, "int2"),
            mk(1e9, 1, 1.0, true, "int4"),
        ])
        .unwrap();
        assert_eq!(v.len(), 1, "cycling sequences never run out");
        assert!((v[0].used_percent - 30_000.0 / 32_768.0 * 100.0).abs() < 1e-6);
    }
}

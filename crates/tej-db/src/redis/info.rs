//! `INFO` parsed into typed sections, and findings whose thresholds follow `MEMORY DOCTOR`.

use serde::Serialize;
use std::collections::BTreeMap;
use tej_core::{Finding, Metric, Severity, Threshold};

/// The `# Server` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerInfo {
    /// `redis_version`.
    pub redis_version: Option<String>,
    /// `redis_mode` (standalone, cluster, sentinel).
    pub redis_mode: Option<String>,
    /// `os`.
    pub os: Option<String>,
    /// `tcp_port`.
    pub tcp_port: Option<u64>,
    /// `uptime_in_seconds`.
    pub uptime_in_seconds: Option<u64>,
}

/// The `# Clients` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClientsInfo {
    /// `connected_clients`.
    pub connected_clients: Option<u64>,
    /// `blocked_clients`.
    pub blocked_clients: Option<u64>,
    /// `maxclients`.
    pub maxclients: Option<u64>,
}

/// The `# Memory` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemoryInfo {
    /// `used_memory`, bytes allocated by Redis.
    pub used_memory: Option<u64>,
    /// `used_memory_rss`, bytes resident.
    pub used_memory_rss: Option<u64>,
    /// `used_memory_peak`.
    pub used_memory_peak: Option<u64>,
    /// `used_memory_dataset`.
    pub used_memory_dataset: Option<u64>,
    /// `maxmemory` (0: no limit).
    pub maxmemory: Option<u64>,
    /// `maxmemory_policy`.
    pub maxmemory_policy: Option<String>,
    /// `mem_fragmentation_ratio` (RSS / used).
    pub mem_fragmentation_ratio: Option<f64>,
    /// `mem_fragmentation_bytes`.
    pub mem_fragmentation_bytes: Option<i64>,
    /// `allocator_frag_ratio`.
    pub allocator_frag_ratio: Option<f64>,
    /// `allocator_frag_bytes`.
    pub allocator_frag_bytes: Option<i64>,
    /// `allocator_rss_ratio`.
    pub allocator_rss_ratio: Option<f64>,
    /// `allocator_rss_bytes`.
    pub allocator_rss_bytes: Option<i64>,
    /// `rss_overhead_ratio`.
    pub rss_overhead_ratio: Option<f64>,
    /// `rss_overhead_bytes`.
    pub rss_overhead_bytes: Option<i64>,
    /// `mem_allocator`.
    pub mem_allocator: Option<String>,
}

/// The `# Persistence` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PersistenceInfo {
    /// `loading` (a dump is being loaded).
    pub loading: Option<bool>,
    /// `rdb_changes_since_last_save`.
    pub rdb_changes_since_last_save: Option<u64>,
    /// `rdb_last_save_time` (Unix seconds).
    pub rdb_last_save_time: Option<i64>,
    /// `rdb_last_bgsave_status` (`ok` or `err`).
    pub rdb_last_bgsave_status: Option<String>,
    /// `aof_enabled`.
    pub aof_enabled: Option<bool>,
    /// `aof_last_bgrewrite_status`.
    pub aof_last_bgrewrite_status: Option<String>,
    /// `aof_last_write_status`.
    pub aof_last_write_status: Option<String>,
}

/// The `# Stats` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatsInfo {
    /// `total_connections_received`.
    pub total_connections_received: Option<u64>,
    /// `total_commands_processed`.
    pub total_commands_processed: Option<u64>,
    /// `instantaneous_ops_per_sec`.
    pub instantaneous_ops_per_sec: Option<u64>,
    /// `rejected_connections` (maxclients reached).
    pub rejected_connections: Option<u64>,
    /// `expired_keys`.
    pub expired_keys: Option<u64>,
    /// `evicted_keys` (removed by the maxmemory policy).
    pub evicted_keys: Option<u64>,
    /// `keyspace_hits`.
    pub keyspace_hits: Option<u64>,
    /// `keyspace_misses`.
    pub keyspace_misses: Option<u64>,
}

/// The `# Replication` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplicationInfo {
    /// `role` (`master` or `slave`).
    pub role: Option<String>,
    /// `connected_slaves`.
    pub connected_slaves: Option<u64>,
    /// `master_host` (replicas).
    pub master_host: Option<String>,
    /// `master_link_status` (`up` or `down`, replicas).
    pub master_link_status: Option<String>,
    /// `master_last_io_seconds_ago` (replicas).
    pub master_last_io_seconds_ago: Option<i64>,
}

/// One `dbN:keys=...,expires=...,avg_ttl=...` line of `# Keyspace`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KeyspaceDb {
    /// Database index.
    pub db: u32,
    /// Keys.
    pub keys: u64,
    /// Keys with an expiry.
    pub expires: u64,
    /// Average TTL in milliseconds.
    pub avg_ttl: u64,
}

/// `INFO` as typed sections. Unknown sections and fields (future versions, modules) are
/// kept in [`InfoReport::raw`]; missing or malformed fields are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InfoReport {
    /// Server.
    pub server: ServerInfo,
    /// Clients.
    pub clients: ClientsInfo,
    /// Memory.
    pub memory: MemoryInfo,
    /// Persistence.
    pub persistence: PersistenceInfo,
    /// Stats.
    pub stats: StatsInfo,
    /// Replication.
    pub replication: ReplicationInfo,
    /// Keyspace, one entry per non-empty database.
    pub keyspace: Vec<KeyspaceDb>,
    /// Every field of every section, by lower-case section name.
    pub raw: BTreeMap<String, BTreeMap<String, String>>,
}

impl InfoReport {
    /// Parses the text of `INFO` (any sections, CRLF or LF). Never fails: lines that are not
    /// `name:value` are ignored.
    pub fn parse(text: &str) -> InfoReport {
        let mut raw: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut section = String::from("default");
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('#') {
                section = name.trim().to_ascii_lowercase();
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                raw.entry(section.clone())
                    .or_default()
                    .insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        let get = |sec: &str, key: &str| -> Option<String> {
            raw.get(sec).and_then(|m| m.get(key)).cloned().or_else(|| {
                // Fields are unique across sections; find a moved one anywhere.
                raw.values().find_map(|m| m.get(key).cloned())
            })
        };
        let u = |sec: &str, key: &str| get(sec, key).and_then(|v| v.parse::<u64>().ok());
        let i = |sec: &str, key: &str| get(sec, key).and_then(|v| v.parse::<i64>().ok());
        let f = |sec: &str, key: &str| {
            get(sec, key)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|x| x.is_finite())
        };
        let b = |sec: &str, key: &str| get(sec, key).map(|v| v == "1");
        let keyspace = raw
            .get("keyspace")
            .map(|m| {
                let mut dbs: Vec<KeyspaceDb> = m
                    .iter()
                    .filter_map(|(k, v)| {
                        let db = k.strip_prefix("db")?.parse().ok()?;
                        let mut out = KeyspaceDb {
                            db,
                            ..KeyspaceDb::default()
                        };
                        for part in v.split(',') {
                            let (name, val) = part.split_once('=')?;
                            let val = val.parse().unwrap_or(0);
                            match name {
                                "keys" => out.keys = val,
                                "expires" => out.expires = val,
                                "avg_ttl" => out.avg_ttl = val,
                                _ => {}
                            }
                        }
                        Some(out)
                    })
                    .collect();
                dbs.sort_by_key(|d| d.db);
                dbs
            })
            .unwrap_or_default();
        InfoReport {
            server: ServerInfo {
                redis_version: get("server", "redis_version"),
                redis_mode: get("server", "redis_mode"),
                os: get("server", "os"),
                tcp_port: u("server", "tcp_port"),
                uptime_in_seconds: u("server", "uptime_in_seconds"),
            },
            clients: ClientsInfo {
                connected_clients: u("clients", "connected_clients"),
                blocked_clients: u("clients", "blocked_clients"),
                maxclients: u("clients", "maxclients"),
            },
            memory: MemoryInfo {
                used_memory: u("memory", "used_memory"),
                used_memory_rss: u("memory", "used_memory_rss"),
                used_memory_peak: u("memory", "used_memory_peak"),
                used_memory_dataset: u("memory", "used_memory_dataset"),
                maxmemory: u("memory", "maxmemory"),
                maxmemory_policy: get("memory", "maxmemory_policy"),
                mem_fragmentation_ratio: f("memory", "mem_fragmentation_ratio"),
                mem_fragmentation_bytes: i("memory", "mem_fragmentation_bytes"),
                allocator_frag_ratio: f("memory", "allocator_frag_ratio"),
                allocator_frag_bytes: i("memory", "allocator_frag_bytes"),
                allocator_rss_ratio: f("memory", "allocator_rss_ratio"),
                allocator_rss_bytes: i("memory", "allocator_rss_bytes"),
                rss_overhead_ratio: f("memory", "rss_overhead_ratio"),
                rss_overhead_bytes: i("memory", "rss_overhead_bytes"),
                mem_allocator: get("memory", "mem_allocator"),
            },
            persistence: PersistenceInfo {
                loading: b("persistence", "loading"),
                rdb_changes_since_last_save: u("persistence", "rdb_changes_since_last_save"),
                rdb_last_save_time: i("persistence", "rdb_last_save_time"),
                rdb_last_bgsave_status: get("persistence", "rdb_last_bgsave_status"),
                aof_enabled: b("persistence", "aof_enabled"),
                aof_last_bgrewrite_status: get("persistence", "aof_last_bgrewrite_status"),
                aof_last_write_status: get("persistence", "aof_last_write_status"),
            },
            stats: StatsInfo {
                total_connections_received: u("stats", "total_connections_received"),
                total_commands_processed: u("stats", "total_commands_processed"),
                instantaneous_ops_per_sec: u("stats", "instantaneous_ops_per_sec"),
                rejected_connections: u("stats", "rejected_connections"),
                expired_keys: u("stats", "expired_keys"),
                evicted_keys: u("stats", "evicted_keys"),
                keyspace_hits: u("stats", "keyspace_hits"),
                keyspace_misses: u("stats", "keyspace_misses"),
            },
            replication: ReplicationInfo {
                role: get("replication", "role"),
                connected_slaves: u("replication", "connected_slaves"),
                master_host: get("replication", "master_host"),
                master_link_status: get("replication", "master_link_status"),
                master_last_io_seconds_ago: i("replication", "master_last_io_seconds_ago"),
            },
            keyspace,
            raw,
        }
    }

    /// Keys in all databases.
    pub fn total_keys(&self) -> u64 {
        self.keyspace.iter().map(|d| d.keys).sum()
    }
}

/// Thresholds for [`redis_findings`]. The memory defaults are `MEMORY DOCTOR`'s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RedisThresholds {
    /// Below this `used_memory` the instance is "empty" and memory ratios are not judged
    /// (MEMORY DOCTOR: 5 MB).
    pub min_used_memory: u64,
    /// Fragmentation/RSS ratios only count when the wasted bytes exceed this (10 MB).
    pub min_wasted_bytes: i64,
    /// Allocator fragmentation ratio and RSS ratios above this are flagged (1.1).
    pub ratio_warn: f64,
    /// ... and critical above this.
    pub ratio_crit: f64,
    /// Peak above current by this factor is flagged (1.5).
    pub peak_ratio: f64,
    /// `used_memory / maxmemory`, warn and crit.
    pub maxmemory_usage: Threshold,
    /// Keyspace hit ratio, warn and crit (lower is worse).
    pub hit_ratio: Threshold,
    /// Hit ratio is only judged after this many lookups.
    pub min_lookups: u64,
}

impl Default for RedisThresholds {
    fn default() -> Self {
        RedisThresholds {
            min_used_memory: 5 * 1024 * 1024,
            min_wasted_bytes: 10 * 1024 * 1024,
            ratio_warn: 1.1,
            ratio_crit: 1.5,
            peak_ratio: 1.5,
            maxmemory_usage: Threshold::above(0.85, 0.95),
            hit_ratio: Threshold::below(0.8, 0.5),
            min_lookups: 1000,
        }
    }
}

const MB: f64 = 1024.0 * 1024.0;

/// Findings from one `INFO`: memory (as `MEMORY DOCTOR` judges it), maxmemory, evictions,
/// rejected connections, hit ratio, persistence and replication. Target is `target`.
pub fn redis_findings(info: &InfoReport, t: &RedisThresholds, target: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let m = &info.memory;
    let used = m.used_memory.unwrap_or(0);
    let small = used < t.min_used_memory;
    if small {
        out.push(
            Finding::ok(
                "redis.memory",
                format!(
                    "{:.1} MB used: too small for fragmentation to matter",
                    used as f64 / MB
                ),
            )
            .metric(Metric::new("redis_used_memory_bytes", used as f64, "B")),
        );
    } else {
        let ratio_threshold = Threshold::above(t.ratio_warn, t.ratio_crit);
        let ratios = [
            (
                "allocator_frag_ratio",
                m.allocator_frag_ratio,
                m.allocator_frag_bytes,
                "allocator fragmentation",
            ),
            (
                "allocator_rss_ratio",
                m.allocator_rss_ratio,
                m.allocator_rss_bytes,
                "allocator RSS overhead",
            ),
            (
                "rss_overhead_ratio",
                m.rss_overhead_ratio,
                m.rss_overhead_bytes,
                "process RSS overhead",
            ),
        ];
        let mut any = false;
        for (name, ratio, bytes, what) in ratios {
            let (Some(ratio), Some(bytes)) = (ratio, bytes) else {
                continue;
            };
            any = true;
            let sev = if bytes > t.min_wasted_bytes {
                ratio_threshold.evaluate(ratio)
            } else {
                Severity::Ok
            };
            out.push(
                Finding::new(
                    "redis.memory",
                    sev,
                    format!("{what} ratio {ratio:.2} ({:.1} MB)", bytes as f64 / MB),
                )
                .metric(Metric::new(format!("redis_{name}"), ratio, "ratio").with_threshold(ratio_threshold))
                .detail("high fragmentation: consider `activedefrag yes` or a restart in the maintenance window"),
            );
        }
        if !any && let (Some(ratio), Some(rss)) = (m.mem_fragmentation_ratio, m.used_memory_rss) {
            // Older servers: only the overall ratio.
            let wasted = rss as i64 - used as i64;
            let sev = if wasted > t.min_wasted_bytes {
                ratio_threshold.evaluate(ratio)
            } else {
                Severity::Ok
            };
            out.push(
                Finding::new(
                    "redis.memory",
                    sev,
                    format!("fragmentation ratio {ratio:.2}"),
                )
                .metric(Metric::new(
                    "redis_mem_fragmentation_ratio",
                    ratio,
                    "ratio",
                )),
            );
        }
        if let Some(peak) = m.used_memory_peak {
            let r = peak as f64 / used.max(1) as f64;
            let sev = if r > t.peak_ratio {
                Severity::Warning
            } else {
                Severity::Ok
            };
            out.push(
                Finding::new(
                    "redis.memory-peak",
                    sev,
                    format!(
                        "peak {:.1} MB is {r:.2}x the current {:.1} MB",
                        peak as f64 / MB,
                        used as f64 / MB
                    ),
                )
                .metric(Metric::new("redis_peak_to_used_ratio", r, "ratio")),
            );
        }
    }
    if let Some(max) = m.maxmemory.filter(|&x| x > 0) {
        let r = used as f64 / max as f64;
        out.push(Finding::measured(
            "redis.maxmemory",
            "redis_maxmemory_used_ratio",
            r,
            "ratio",
            t.maxmemory_usage,
            format!(
                "{:.0}% of maxmemory used (policy {})",
                r * 100.0,
                m.maxmemory_policy.as_deref().unwrap_or("unknown")
            ),
        ));
    }
    if let Some(ev) = info.stats.evicted_keys {
        let sev = if ev > 0 {
            Severity::Warning
        } else {
            Severity::Ok
        };
        out.push(
            Finding::new(
                "redis.evictions",
                sev,
                format!("{ev} keys evicted since start"),
            )
            .metric(Metric::new("redis_evicted_keys", ev as f64, "count")),
        );
    }
    if let Some(rej) = info.stats.rejected_connections {
        let sev = if rej > 0 {
            Severity::Warning
        } else {
            Severity::Ok
        };
        out.push(
            Finding::new(
                "redis.connections",
                sev,
                format!("{rej} connections rejected (maxclients)"),
            )
            .metric(Metric::new(
                "redis_rejected_connections",
                rej as f64,
                "count",
            )),
        );
    }
    if let (Some(h), Some(mi)) = (info.stats.keyspace_hits, info.stats.keyspace_misses) {
        let total = h + mi;
        if total >= t.min_lookups {
            let r = h as f64 / total as f64;
            out.push(Finding::measured(
                "redis.hit-ratio",
                "redis_keyspace_hit_ratio",
                r,
                "ratio",
                t.hit_ratio,
                format!("keyspace hit ratio {:.1}% over {total} lookups", r * 100.0),
            ));
        }
    }
    let p = &info.persistence;
    if let Some(s) = &p.rdb_last_bgsave_status {
        let sev = if s == "ok" {
            Severity::Ok
        } else {
            Severity::Critical
        };
        out.push(Finding::new(
            "redis.persistence",
            sev,
            format!("last RDB save: {s}"),
        ));
    }
    if p.aof_enabled == Some(true) {
        for (what, s) in [
            ("AOF write", &p.aof_last_write_status),
            ("AOF rewrite", &p.aof_last_bgrewrite_status),
        ] {
            if let Some(s) = s {
                let sev = if s == "ok" {
                    Severity::Ok
                } else {
                    Severity::Critical
                };
                out.push(Finding::new(
                    "redis.persistence",
                    sev,
                    format!("last {what}: {s}"),
                ));
            }
        }
    }
    if p.loading == Some(true) {
        out.push(Finding::new(
            "redis.loading",
            Severity::Warning,
            "loading its dataset into memory",
        ));
    }
    let r = &info.replication;
    if r.role.as_deref() == Some("slave") {
        let up = r.master_link_status.as_deref() == Some("up");
        out.push(Finding::new(
            "redis.replication",
            if up { Severity::Ok } else { Severity::Critical },
            format!(
                "replica of {}: link {}",
                r.master_host.as_deref().unwrap_or("?"),
                r.master_link_status.as_deref().unwrap_or("unknown")
            ),
        ));
    }
    out.into_iter().map(|f| f.target(target)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\nos:Linux 6.1 x86_64\r\ntcp_port:6379\r\nuptime_in_seconds:100\r\nfuture_field:whatever\r\n\r\n# Clients\r\nconnected_clients:3\r\nmaxclients:10000\r\n\r\n# Memory\r\nused_memory:104857600\r\nused_memory_rss:209715200\r\nused_memory_peak:419430400\r\nmaxmemory:115343360\r\nmaxmemory_policy:allkeys-lru\r\nallocator_frag_ratio:1.80\r\nallocator_frag_bytes:83886080\r\nallocator_rss_ratio:1.02\r\nallocator_rss_bytes:1048576\r\nrss_overhead_ratio:1.20\r\nrss_overhead_bytes:2097152\r\nmem_fragmentation_ratio:2.00\r\n\r\n# Persistence\r\nloading:0\r\nrdb_last_bgsave_status:err\r\naof_enabled:1\r\naof_last_write_status:ok\r\naof_last_bgrewrite_status:ok\r\n\r\n# Stats\r\nrejected_connections:2\r\nevicted_keys:10\r\nkeyspace_hits:100\r\nkeyspace_misses:900\r\n\r\n# Replication\r\nrole:slave\r\nmaster_host:10.0.0.1\r\nmaster_link_status:down\r\n\r\n# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=5,subexpiry=0\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n# Modulex\r\nnew:1\r\n";

    fn sev(fs: &[Finding], check: &str) -> Vec<Severity> {
        fs.iter()
            .filter(|f| f.check == check)
            .map(|f| f.severity)
            .collect()
    }

    #[test]
    fn parses_sections_and_keeps_unknown_fields() {
        let i = InfoReport::parse(SAMPLE);
        assert_eq!(i.server.redis_version.as_deref(), Some("7.0.15"));
        assert_eq!(i.clients.connected_clients, Some(3));
        assert_eq!(i.memory.used_memory, Some(104_857_600));
        assert_eq!(i.memory.allocator_frag_ratio, Some(1.8));
        assert_eq!(i.persistence.loading, Some(false));
        assert_eq!(i.stats.evicted_keys, Some(10));
        assert_eq!(i.replication.role.as_deref(), Some("slave"));
        assert_eq!(i.keyspace.len(), 2);
        assert_eq!(i.keyspace[0].keys, 10);
        assert_eq!(i.keyspace[1].db, 3);
        assert_eq!(i.total_keys(), 11);
        assert_eq!(i.raw["server"]["future_field"], "whatever");
        assert_eq!(i.raw["modulex"]["new"], "1");
    }

    #[test]
    fn findings_follow_memory_doctor() {
        let i = InfoReport::parse(SAMPLE);
        let f = redis_findings(&i, &RedisThresholds::default(), "redis:cache");
        assert!(f.iter().all(|f| f.target == "redis:cache"));
        // frag 1.8 with 80 MB wasted: critical; rss ratios with < 10 MB: ok.
        assert_eq!(
            sev(&f, "redis.memory"),
            vec![Severity::Critical, Severity::Ok, Severity::Ok]
        );
        assert_eq!(sev(&f, "redis.memory-peak"), vec![Severity::Warning]);
        // 100 MB of 110 MB: 91% -> warning.
        assert_eq!(sev(&f, "redis.maxmemory"), vec![Severity::Warning]);
        assert_eq!(sev(&f, "redis.evictions"), vec![Severity::Warning]);
        assert_eq!(sev(&f, "redis.connections"), vec![Severity::Warning]);
        assert_eq!(sev(&f, "redis.hit-ratio"), vec![Severity::Critical]);
        assert_eq!(
            sev(&f, "redis.persistence"),
            vec![Severity::Critical, Severity::Ok, Severity::Ok]
        );
        assert_eq!(sev(&f, "redis.replication"), vec![Severity::Critical]);
    }

    #[test]
    fn small_instances_are_never_flagged_for_fragmentation() {
        let text = "# Memory\nused_memory:900000\nused_memory_rss:9000000\nused_memory_peak:4000000\nmem_fragmentation_ratio:10.0\nallocator_frag_ratio:5.0\nallocator_frag_bytes:8000000\n# Stats\nkeyspace_hits:1\nkeyspace_misses:50\nevicted_keys:0\nrejected_connections:0\n";
        let f = redis_findings(&InfoReport::parse(text), &RedisThresholds::default(), "r");
        assert!(f.iter().all(|f| f.severity == Severity::Ok), "{f:#?}");
        // Too few lookups to judge the hit ratio.
        assert!(sev(&f, "redis.hit-ratio").is_empty());
    }

    #[test]
    fn empty_or_garbage_info_is_not_an_error() {
        let i = InfoReport::parse("");
        assert_eq!(i, InfoReport::default());
        let i =
            InfoReport::parse("garbage\n# Memory\nused_memory:lots\nmem_fragmentation_ratio:nan\n");
        assert_eq!(i.memory.used_memory, None);
        assert_eq!(i.memory.mem_fragmentation_ratio, None);
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in "(#? ?[a-z_0-9]{0,12}(:[ -~]{0,20})?\r?\n){0,40}") {
            let i = InfoReport::parse(&text);
            let _ = redis_findings(&i, &RedisThresholds::default(), "x");
        }

        #[test]
        fn parser_never_panics_on_any_text(text in any::<String>()) {
            let _ = InfoReport::parse(&text);
        }

        #[test]
        fn numeric_fields_round_trip(used in 0u64..u64::MAX / 2, hits in 0u64..1_000_000) {
            let text = format!("# Memory\r\nused_memory:{used}\r\n# Stats\r\nkeyspace_hits:{hits}\r\n");
            let i = InfoReport::parse(&text);
            prop_assert_eq!(i.memory.used_memory, Some(used));
            prop_assert_eq!(i.stats.keyspace_hits, Some(hits));
        }
    }
}

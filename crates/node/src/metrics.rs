//! A node's own Prometheus metrics, appended to the cluster-wide ones of `/metrics`: per-volume
//! I/O (operations, bytes, errors, latency histograms) of the volumes it exports, and its cache
//! (capacity, used and dirty bytes, destaged bytes, the destage rate limit, hits and misses).

use std::fmt::Write;
use std::sync::Arc;

use alcubierre_block::metered::{DirStats, LATENCY_BOUNDS_US};
use alcubierre_block::RateLimiter;
use alcubierre_cache::Engine;
use alcubierre_control::api::NodeMetrics;

use crate::parts::VolumeStats;

/// What a node reports.
#[derive(Clone)]
pub struct NodeSources {
    /// The node's name (the `node` label).
    pub node: String,
    /// Its cache engine, if it has one.
    pub engine: Option<Arc<Engine>>,
    /// Its destage limit.
    pub destage_limit: Option<Arc<RateLimiter>>,
    /// Its exported volumes' statistics.
    pub volumes: VolumeStats,
    /// What its agent leaves as it is or fails to serve.
    pub health: Option<Arc<crate::parts::AgentHealth>>,
}

/// The renderer the API calls on every scrape, for one node or several (the demo's three nodes
/// in one process): each family is written once, with every node's samples.
pub fn renderer(srcs: Vec<NodeSources>) -> NodeMetrics {
    Arc::new(move || {
        let mut fams = Families::default();
        for s in &srcs {
            render(&mut fams, s);
        }
        fams.text()
    })
}

/// Metric families in first-seen order, each with its samples.
#[derive(Default)]
struct Families {
    order: Vec<(String, String)>,
    samples: std::collections::HashMap<String, String>,
}

impl Families {
    fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut String {
        if !self.samples.contains_key(name) {
            self.order.push((
                name.to_string(),
                format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"),
            ));
            self.samples.insert(name.to_string(), String::new());
        }
        self.samples.get_mut(name).expect("inserted")
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for (name, head) in &self.order {
            out.push_str(head);
            out.push_str(&self.samples[name]);
        }
        out
    }
}

fn render(fams: &mut Families, src: &NodeSources) {
    use std::sync::atomic::Ordering::Relaxed;
    let node = &src.node;
    let vols: Vec<(String, String, Arc<alcubierre_block::IoStats>)> = src
        .volumes
        .read()
        .iter()
        .map(|(id, m)| (id.clone(), m.name.clone(), m.io.clone()))
        .collect();
    if let Some(health) = &src.health {
        let out = fams.family(
            "alcubierre_volumes_held",
            "gauge",
            "Volumes a node leaves as they are (served as before, nothing dropped) because their \
             record is missing without a deletion request or cannot be read; see the node's log.",
        );
        let _ = writeln!(
            out,
            "alcubierre_volumes_held{{node=\"{node}\"}} {}",
            health.held.load(Relaxed)
        );
        let out = fams.family(
            "alcubierre_volume_failed",
            "gauge",
            "1 for each volume replica a node fails to serve (attach, export, follow); it retries \
             with backoff, and the reason is in the API's status and the node's log.",
        );
        for (id, name) in health.failing.read().iter() {
            let _ = writeln!(
                out,
                "alcubierre_volume_failed{{node=\"{node}\",volume=\"{id}\",name=\"{name}\"}} 1"
            );
        }
    }
    {
        let out = fams.family(
            "alcubierre_volume_qos_limit",
            "gauge",
            "QoS limits in force on the exporting node (IOPS or bytes per second).",
        );
        for (id, m) in src.volumes.read().iter() {
            for (kind, v) in m.qos.limits().named() {
                if let Some(v) = v {
                    let _ = writeln!(
                        out,
                        "alcubierre_volume_qos_limit{{node=\"{node}\",volume=\"{id}\",name=\"{}\",limit=\"{kind}\"}} {v}",
                        m.name
                    );
                }
            }
        }
    }
    {
        let out = fams.family(
            "alcubierre_volume_primary",
            "gauge",
            "1 while this node serves the volume as its primary (its paths are ANA optimized).",
        );
        for (id, m) in src.volumes.read().iter() {
            let on = u8::from(m.role.primary.lock().is_some());
            let _ = writeln!(
                out,
                "alcubierre_volume_primary{{node=\"{node}\",volume=\"{id}\",name=\"{}\"}} {on}",
                m.name
            );
        }
        let out = fams.family(
            "alcubierre_volume_promotions_total",
            "counter",
            "Times this node started serving the volume as its primary (placement, failover, handover).",
        );
        for (id, m) in src.volumes.read().iter() {
            let _ = writeln!(
                out,
                "alcubierre_volume_promotions_total{{node=\"{node}\",volume=\"{id}\",name=\"{}\"}} {}",
                m.name,
                m.role.promotions.load(Relaxed)
            );
        }
        for (metric, help, get) in [
            (
                "alcubierre_replica_resyncs_total",
                "Followers that reconnected and were sent the writes they missed, by this node as the volume's primary.",
                (|e: &alcubierre_replica::volume::ReplicaEvents| e.resyncs)
                    as fn(&alcubierre_replica::volume::ReplicaEvents) -> u64,
            ),
            (
                "alcubierre_replica_rebuilds_total",
                "Followers rebuilt from the destage point (new, emptied or too far behind), by this node as the volume's primary.",
                |e| e.rebuilds,
            ),
            (
                "alcubierre_replica_forced_destages_total",
                "Rebuilds that needed writes no longer in the primary's memory, so it destaged them at once past the rate limit.",
                |e| e.forced_destages,
            ),
            (
                "alcubierre_replica_journal_replays_total",
                "Resyncs and rebuilds that read writes no longer in the primary's memory back from its journal.",
                |e| e.journal_replays,
            ),
            (
                "alcubierre_replica_connections_total",
                "Replication connections this node made to the volume's followers as its primary (one per follower, one per reconnect).",
                |e| e.connections,
            ),
        ] {
            let out = fams.family(metric, "counter", help);
            for (id, m) in src.volumes.read().iter() {
                let _ = writeln!(
                    out,
                    "{metric}{{node=\"{node}\",volume=\"{id}\",name=\"{}\"}} {}",
                    m.name,
                    get(&m.role.events())
                );
            }
        }
        let followers: Vec<(
            String,
            String,
            alcubierre_replica::primary::FollowerProgress,
        )> = src
            .volumes
            .read()
            .iter()
            .filter_map(|(id, m)| {
                Some((id.clone(), m.name.clone(), m.role.primary.lock().clone()?))
            })
            .flat_map(|(id, name, p)| {
                p.followers()
                    .into_iter()
                    .map(move |f| (id.clone(), name.clone(), f))
            })
            .collect();
        for (metric, help, get) in [
            (
                "alcubierre_replica_behind_writes",
                "Writes a follower has yet to make durable (reported by the primary).",
                (|f: &alcubierre_replica::primary::FollowerProgress| f.head.saturating_sub(f.acked))
                    as fn(&alcubierre_replica::primary::FollowerProgress) -> u64,
            ),
            (
                "alcubierre_replica_in_sync",
                "1 while a follower is in the volume's in-sync set (reported by the primary).",
                |f| u64::from(f.in_sync),
            ),
            (
                "alcubierre_replica_connected",
                "1 while a follower is connected and receiving writes (reported by the primary).",
                |f| u64::from(f.streaming),
            ),
        ] {
            let out = fams.family(metric, "gauge", help);
            for (id, name, f) in &followers {
                let _ = writeln!(
                    out,
                    "{metric}{{node=\"{node}\",volume=\"{id}\",name=\"{name}\",follower=\"{}\"}} {}",
                    f.node,
                    get(f)
                );
            }
        }
    }
    type Pick = fn(&alcubierre_block::IoStats) -> &DirStats;
    let dirs: [(&str, Pick); 3] = [
        ("read", |s| &s.read),
        ("write", |s| &s.write),
        ("flush", |s| &s.flush),
    ];
    for (metric, help, get) in [
        (
            "alcubierre_volume_ops_total",
            "I/O operations completed, by operation.",
            (|d: &DirStats| d.ops.load(Relaxed)) as fn(&DirStats) -> u64,
        ),
        (
            "alcubierre_volume_bytes_total",
            "Bytes read or written (write includes write zeroes and unmap ranges).",
            |d: &DirStats| d.bytes.load(Relaxed),
        ),
        (
            "alcubierre_volume_errors_total",
            "I/O operations that failed, by operation.",
            |d: &DirStats| d.errors.load(Relaxed),
        ),
    ] {
        let out = fams.family(metric, "counter", help);
        for (id, name, s) in &vols {
            for (op, pick) in dirs {
                let _ = writeln!(
                    out,
                    "{metric}{{node=\"{node}\",volume=\"{id}\",name=\"{name}\",op=\"{op}\"}} {}",
                    get(pick(s))
                );
            }
        }
    }
    let metric = "alcubierre_volume_latency_seconds";
    let out = fams.family(
        metric,
        "histogram",
        "I/O latency at the node, from request to completion, by operation.",
    );
    for (id, name, s) in &vols {
        for (op, pick) in dirs {
            let (counts, sum) = pick(s).latency.snapshot();
            let labels = format!("node=\"{node}\",volume=\"{id}\",name=\"{name}\",op=\"{op}\"");
            for (i, c) in counts.iter().enumerate() {
                let le = LATENCY_BOUNDS_US
                    .get(i)
                    .map_or("+Inf".to_string(), |us| format!("{}", *us as f64 / 1e6));
                let _ = writeln!(out, "{metric}_bucket{{{labels},le=\"{le}\"}} {c}");
            }
            let _ = writeln!(out, "{metric}_sum{{{labels}}} {sum}");
            let _ = writeln!(
                out,
                "{metric}_count{{{labels}}} {}",
                counts.last().unwrap_or(&0)
            );
        }
    }
    if let Some(e) = &src.engine {
        let st = e.stats();
        for (metric, kind, help, v) in [
            (
                "alcubierre_cache_capacity_bytes",
                "gauge",
                "Journal capacity of the node's cache device.",
                st.capacity_bytes,
            ),
            (
                "alcubierre_cache_used_bytes",
                "gauge",
                "Journal space holding data (dirty and clean).",
                st.used_bytes,
            ),
            (
                "alcubierre_cache_dirty_bytes",
                "gauge",
                "Journal data not yet destaged to the backend.",
                st.dirty_bytes,
            ),
            (
                "alcubierre_cache_destaged_bytes_total",
                "counter",
                "Bytes written to the backend by destage.",
                st.destaged_bytes,
            ),
            (
                "alcubierre_cache_read_hit_blocks_total",
                "counter",
                "Blocks read from the cache.",
                st.read_hit_blocks,
            ),
            (
                "alcubierre_cache_read_miss_blocks_total",
                "counter",
                "Blocks read from the backend.",
                st.read_miss_blocks,
            ),
            (
                "alcubierre_cache_backend_errors_total",
                "counter",
                "Destage rounds the backend failed.",
                st.backend_errors,
            ),
            (
                "alcubierre_cache_backend_claims_total",
                "counter",
                "Backend images claimed as a volume's primary (on RBD: the image's exclusive lock).",
                st.claims,
            ),
            (
                "alcubierre_cache_backend_claims_lost_total",
                "counter",
                "Backend claims lost to another node, which fenced this node off the image.",
                st.claims_lost,
            ),
            (
                "alcubierre_cache_failed_partitions",
                "gauge",
                "Journal partitions stopped after a device error (fail-stop).",
                st.failed_partitions,
            ),
        ] {
            let out = fams.family(metric, kind, help);
            let _ = writeln!(out, "{metric}{{node=\"{node}\"}} {v}");
        }
    }
    if let Some(l) = &src.destage_limit {
        let metric = "alcubierre_cache_destage_rate_limit_bytes";
        let out = fams.family(
            metric,
            "gauge",
            "This node's destage rate limit, bytes per second.",
        );
        let _ = writeln!(out, "{metric}{{node=\"{node}\"}} {}", l.rate());
    }
}

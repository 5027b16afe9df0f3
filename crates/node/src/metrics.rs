//! A node's own Prometheus metrics, appended to the cluster-wide ones of `/metrics`: per-volume
//! I/O (operations, bytes, errors, latency histograms) of the volumes it exports, and its cache
//! (capacity, used and dirty bytes, destaged bytes, the destage rate limit, hits and misses).

use std::sync::Arc;

use alcubierre_block::metered::{DirStats, LATENCY_BOUNDS_US};
use alcubierre_block::RateLimiter;
use alcubierre_cache::Engine;
use alcubierre_control::api::NodeMetrics;
use alcubierre_control::metrics::Registry;

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

/// What the API calls on every scrape, for one node or several (the demo's three nodes in one
/// process): each family gets every node's samples.
pub fn renderer(srcs: Vec<NodeSources>) -> NodeMetrics {
    Arc::new(move |r: &mut Registry| {
        for s in &srcs {
            render(r, s);
        }
    })
}

fn render(r: &mut Registry, src: &NodeSources) {
    use std::sync::atomic::Ordering::Relaxed;
    let node = &src.node;
    let vols: Vec<(String, String, Arc<alcubierre_block::IoStats>)> = src
        .volumes
        .read()
        .iter()
        .map(|(id, m)| (id.clone(), m.name.clone(), m.io.clone()))
        .collect();
    if let Some(health) = &src.health {
        r.gauge(
            "alcubierre_volumes_held",
            "Volumes a node leaves as they are (served as before, nothing dropped) because their \
             record is missing without a deletion request or cannot be read; see the node's log.",
        )
        .sample(&[("node", node)], health.held.load(Relaxed));
        let f = r.gauge(
            "alcubierre_volume_failed",
            "1 for each volume replica a node fails to serve (attach, export, follow); it retries \
             with backoff, and the reason is in the API's status and the node's log.",
        );
        for (id, name) in health.failing.read().iter() {
            f.sample(&[("node", node), ("volume", id), ("name", name)], 1);
        }
    }
    {
        let f = r.gauge(
            "alcubierre_volume_qos_limit",
            "QoS limits in force on the exporting node (IOPS or bytes per second).",
        );
        for (id, m) in src.volumes.read().iter() {
            for (kind, rate) in m.qos.limits().named() {
                let Some(rate) = rate else { continue };
                let labels: [(&str, &str); 4] = [
                    ("node", node),
                    ("volume", id),
                    ("name", &m.name),
                    ("limit", kind),
                ];
                f.sample(&labels, rate.per_sec);
                if let Some(peak) = rate.peak {
                    let burst = format!("{kind}_max");
                    let mut labels = labels;
                    labels[3] = ("limit", &burst);
                    f.sample(&labels, peak);
                }
            }
        }
    }
    {
        let f = r.gauge(
            "alcubierre_volume_primary",
            "1 while this node serves the volume as its primary (its paths are ANA optimized).",
        );
        for (id, m) in src.volumes.read().iter() {
            let on = u8::from(m.role.primary.lock().is_some());
            f.sample(&[("node", node), ("volume", id), ("name", &m.name)], on);
        }
        let f = r.counter(
            "alcubierre_volume_promotions_total",
            "Times this node started serving the volume as its primary (placement, failover, handover).",
        );
        for (id, m) in src.volumes.read().iter() {
            f.sample(
                &[("node", node), ("volume", id), ("name", &m.name)],
                m.role.promotions.load(Relaxed),
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
            let f = r.counter(metric, help);
            for (id, m) in src.volumes.read().iter() {
                f.sample(
                    &[("node", node), ("volume", id), ("name", &m.name)],
                    get(&m.role.events()),
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
                (|f: &alcubierre_replica::primary::FollowerProgress| f.head.since(f.acked))
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
            let fam = r.gauge(metric, help);
            for (id, name, f) in &followers {
                fam.sample(
                    &[
                        ("node", node),
                        ("volume", id),
                        ("name", name),
                        ("follower", &f.node),
                    ],
                    get(f),
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
        let f = r.counter(metric, help);
        for (id, name, s) in &vols {
            for (op, pick) in dirs {
                f.sample(
                    &[("node", node), ("volume", id), ("name", name), ("op", op)],
                    get(pick(s)),
                );
            }
        }
    }
    let bounds: Vec<f64> = LATENCY_BOUNDS_US
        .iter()
        .map(|us| *us as f64 / 1e6)
        .collect();
    let f = r.histogram(
        "alcubierre_volume_latency_seconds",
        "I/O latency at the node, from request to completion, by operation.",
    );
    for (id, name, s) in &vols {
        for (op, pick) in dirs {
            let (counts, sum) = pick(s).latency.snapshot();
            f.histogram(
                &[("node", node), ("volume", id), ("name", name), ("op", op)],
                &bounds,
                &counts,
                sum,
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
                "alcubierre_cache_ring_batches_total",
                "counter",
                "Journal batches written through io_uring (the rest by the writer thread).",
                st.ring_batches,
            ),
            (
                "alcubierre_cache_superseded_blocks_total",
                "counter",
                "Blocks destage passed over because the journal held a newer version of them.",
                st.superseded_blocks,
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
            let f = match kind {
                "counter" => r.counter(metric, help),
                _ => r.gauge(metric, help),
            };
            f.sample(&[("node", node)], v);
        }
    }
    if let Some(l) = &src.destage_limit {
        r.gauge(
            "alcubierre_cache_destage_rate_limit_bytes",
            "This node's destage rate limit, bytes per second.",
        )
        .sample(&[("node", node)], l.rate());
    }
}

//! `alcubierre plan`: the seed's planning rules (its section 3 and the post-install rules of
//! section 4), from a few inputs, with warnings for inputs below the minimums.
//!
//! Rules, as the seed states them (`shared/seed/README.md`):
//! 1. Threads per node >= OSDs per node x 3 + 8 (base storage service) + 8 (below 80 TB raw per
//!    node) or 16 (above).
//! 2. Cache capacity per disk >= raw capacity / (nodes x cache disks per node x 12); at least
//!    1.5 TB, 2 TB recommended; 1-2 cache disks per node; at least 3 nodes.
//! 3. Ceph OSDs in total >= nodes x 8: each OSD gives about 1,200 IOPS, each node about 100k IOPS,
//!    and Ceph must deliver a tenth of the tier's peak (`M x 1200 >= N x 100k / 10`).
//! 4. Destage ("flush-back") rate: nodes x 50 MB/s.
//! 5. CPU clock >= 2.2 GHz recommended, 2.0 minimum; two sockets of >= 10 cores (12 recommended).
//!
//! The seed's worked example: 3 nodes, 40 TB usable at 3 Ceph replicas (120 TB raw), 2 cache
//! disks per node: at least 1.6 TB per disk. The rule gives 1.667 TB; the seed states it rounded
//! down to one decimal, and [`Plan`] reports both.

use serde::{Deserialize, Serialize};

/// What the operator tells `plan`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PlanInput {
    /// High-performance (cache) nodes.
    pub nodes: u32,
    /// Usable capacity needed, TB (10^12 bytes).
    pub usable_tb: f64,
    /// Ceph replicas (raw = usable x replicas).
    pub ceph_replicas: u32,
    /// Cache disks per node.
    pub cache_disks_per_node: u32,
    /// Ceph OSDs planned in total, if known.
    pub osds: Option<u32>,
    /// CPU clock, GHz, if known.
    pub cpu_ghz: Option<f64>,
    /// Cores per socket, if known.
    pub cores_per_socket: Option<u32>,
    /// Sockets per node, if known.
    pub sockets: Option<u32>,
    /// Size of the cache disks planned, TB, if known.
    pub cache_disk_tb: Option<f64>,
}

pub use alcubierre_api::v1::{Check, Finding, Level, Plan};

/// Why the inputs cannot be planned at all.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    /// An input is out of its domain.
    #[error("{field}: {reason}")]
    Invalid {
        /// The input's name (as the CLI flag).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> PlanError {
    PlanError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Per-node IOPS of the tier and per-OSD IOPS of Ceph, from the seed.
const NODE_IOPS: u64 = 100_000;
const OSD_IOPS: u64 = 1_200;

/// Applies the rules.
pub fn plan(i: &PlanInput) -> Result<Plan, PlanError> {
    // Bounds keep every product in range (no overflow, whatever the input).
    if !(1..=10_000).contains(&i.nodes) {
        return Err(invalid("nodes", "must be between 1 and 10000"));
    }
    if !(i.usable_tb.is_finite() && i.usable_tb > 0.0 && i.usable_tb <= 1e6) {
        return Err(invalid(
            "usable-tb",
            "must be a positive number of TB, at most 1000000",
        ));
    }
    if !(1..=10).contains(&i.ceph_replicas) {
        return Err(invalid("ceph-replicas", "must be between 1 and 10"));
    }
    if !(1..=16).contains(&i.cache_disks_per_node) {
        return Err(invalid("cache-disks", "must be between 1 and 16"));
    }
    if i.osds.is_some_and(|o| !(1..=1_000_000).contains(&o)) {
        return Err(invalid("osds", "must be between 1 and 1000000"));
    }
    if i.cores_per_socket.is_some_and(|c| !(1..=1024).contains(&c)) {
        return Err(invalid("cores-per-socket", "must be between 1 and 1024"));
    }
    if i.sockets.is_some_and(|c| !(1..=16).contains(&c)) {
        return Err(invalid("sockets", "must be between 1 and 16"));
    }
    if i.cpu_ghz
        .is_some_and(|g| !(g.is_finite() && g > 0.0 && g <= 100.0))
    {
        return Err(invalid("cpu-ghz", "must be a positive clock in GHz"));
    }
    if i.cache_disk_tb
        .is_some_and(|t| !(t.is_finite() && t > 0.0 && t <= 1e4))
    {
        return Err(invalid("cache-disk-tb", "must be a positive size in TB"));
    }
    let mut warnings = Vec::new();
    if i.nodes < 3 {
        warnings.push(format!(
            "nodes: {} is below the minimum of 3 (a first activation needs 3 nodes with cache disks)",
            i.nodes
        ));
    }
    if i.cache_disks_per_node > 2 {
        warnings.push(format!(
            "cache-disks: {} per node is above the maximum of 2 (a second disk adds density, not speed)",
            i.cache_disks_per_node
        ));
    }
    let n = i.nodes as f64;
    let raw = i.usable_tb * i.ceph_replicas as f64;
    let raw_per_node = raw / n;
    let large = raw_per_node > 80.0;
    let cache = raw / (n * i.cache_disks_per_node as f64 * 12.0);
    // Round the exact figure to 3 decimals first so 1.6 is not floored to 1.5 by binary error.
    let cache_seed = ((cache * 1000.0).round() / 100.0).floor() / 10.0;
    let cache_min = cache.max(1.5);
    let min_osds = i.nodes * 8;
    let headroom_osds = (i.nodes as u64 * NODE_IOPS / 10).div_ceil(OSD_IOPS) as u32;
    let osds = i.osds.unwrap_or(min_osds.max(headroom_osds));
    if let Some(o) = i.osds {
        if o < min_osds {
            warnings.push(format!(
                "osds: {o} is below the minimum of {min_osds} (nodes x 8)"
            ));
        }
        if (o as u64) * OSD_IOPS < i.nodes as u64 * NODE_IOPS / 10 {
            warnings.push(format!(
                "osds: {o} OSDs give about {} IOPS, less than a tenth of the tier's {} peak IOPS; \
                 Ceph will not keep up with destage",
                o as u64 * OSD_IOPS,
                i.nodes as u64 * NODE_IOPS
            ));
        }
    }
    let osds_per_node = osds.div_ceil(i.nodes);
    let threads = osds_per_node * 3 + 8 + if large { 16 } else { 8 };
    if let Some(g) = i.cpu_ghz {
        if g < 2.0 {
            warnings.push(format!("cpu-ghz: {g} is below the minimum of 2.0 GHz"));
        } else if g < 2.2 {
            warnings.push(format!(
                "cpu-ghz: {g} is below the recommended 2.2 GHz (small random IOPS scale with clock)"
            ));
        }
    }
    if let Some(c) = i.cores_per_socket {
        if c < 10 {
            warnings.push(format!("cores-per-socket: {c} is below the minimum of 10"));
        } else if c < 12 {
            warnings.push(format!("cores-per-socket: {c} is below the recommended 12"));
        }
        let sockets = i.sockets.unwrap_or(2);
        // Two hardware threads per core.
        let have = c * sockets * 2;
        if have < threads {
            warnings.push(format!(
                "cores-per-socket: {sockets} x {c} cores give {have} threads, below the {threads} needed"
            ));
        }
    }
    if let Some(s) = i.sockets {
        if s < 2 {
            warnings.push(format!("sockets: {s} is below the recommended 2"));
        }
    }
    if let Some(d) = i.cache_disk_tb {
        if d < 1.5 {
            warnings.push(format!(
                "cache-disk-tb: {d} TB is below the minimum of 1.5 TB"
            ));
        } else if d + 1e-9 < cache {
            warnings.push(format!(
                "cache-disk-tb: {d} TB is below the {cache:.3} TB per disk the capacity needs"
            ));
        } else if d < 2.0 {
            warnings.push(format!(
                "cache-disk-tb: {d} TB is below the recommended 2 TB"
            ));
        }
    }
    let recommended = if large {
        "2 x 14 cores >= 2.3 GHz; one 6.4 TB or two 3.2 TB mixed-use NVMe as cache; 12 x 8 TB or \
         10 x 10 TB HDD"
    } else {
        "2 x 12 cores >= 2.1 GHz; one >= 3.2 TB mixed-use NVMe as cache; two >= 960 GB SATA SSD or \
         one >= 1.6 TB NVMe as OSD journal; 12 x 6 TB or 10 x 8 TB HDD"
    };
    Ok(Plan {
        raw_tb: raw,
        raw_tb_per_node: raw_per_node,
        large_nodes: large,
        cache_tb_per_disk: cache,
        cache_tb_per_disk_seed: cache_seed,
        cache_tb_per_disk_min: cache_min,
        min_osds,
        headroom_osds,
        osds,
        osds_per_node,
        threads_per_node: threads,
        destage_mb_per_s: i.nodes * 50,
        ceph_iops: osds as u64 * OSD_IOPS,
        tier_peak_iops: i.nodes as u64 * NODE_IOPS,
        recommended_node: recommended.to_string(),
        multipath_paths: (4, 1, 2),
        baseline_vms: i.nodes * 4,
        warnings,
    })
}

/// What a live cluster offers, per active node.
pub struct LiveNode<'a> {
    /// Name.
    pub name: &'a str,
    /// Cache device sizes, bytes.
    pub cache_bytes: Vec<u64>,
    /// CPU threads, when the node reported them.
    pub cpu_threads: Option<u32>,
}

/// A byte count in decimal units, as the seed's rules are stated (TB, GB, MB), with enough
/// digits to show it: a 256 MiB demo cache is "268.435 MB", not "0.000 TB".
fn decimal_size(b: u64) -> String {
    let b = b as f64;
    for (unit, size) in [("TB", 1e12), ("GB", 1e9), ("MB", 1e6)] {
        if b >= size {
            return format!("{:.3} {unit}", b / size);
        }
    }
    format!("{b} B")
}

/// `plan --check`: checks live nodes and the configured destage rate (bytes/s) against the
/// plan for `usable_tb` (with `ceph_replicas` and, if known, `osds`).
pub fn check(
    nodes: &[LiveNode],
    destage_rate: u64,
    usable_tb: f64,
    ceph_replicas: u32,
    osds: Option<u32>,
) -> Result<Check, PlanError> {
    let disks = nodes
        .iter()
        .map(|n| n.cache_bytes.len())
        .max()
        .unwrap_or(1)
        .max(1) as u32;
    let plan = plan(&PlanInput {
        nodes: (nodes.len() as u32).max(1),
        usable_tb,
        ceph_replicas,
        cache_disks_per_node: disks,
        osds,
        cpu_ghz: None,
        cores_per_socket: None,
        sockets: None,
        cache_disk_tb: None,
    })?;
    let mut f = Vec::new();
    let mut add = |level, rule: &str, detail: String| {
        f.push(Finding {
            level,
            rule: rule.to_string(),
            detail,
        })
    };
    add(
        if nodes.len() >= 3 {
            Level::Ok
        } else {
            Level::Fail
        },
        "nodes",
        format!("{} active nodes (at least 3)", nodes.len()),
    );
    let counts: std::collections::BTreeSet<usize> =
        nodes.iter().map(|n| n.cache_bytes.len()).collect();
    add(
        if counts.len() <= 1 && counts.iter().all(|c| (1..=2).contains(c)) {
            Level::Ok
        } else {
            Level::Fail
        },
        "cache disks per node",
        format!(
            "{} (1 or 2, the same on every node)",
            counts
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let need = plan.cache_tb_per_disk * 1e12;
    let smallest = nodes
        .iter()
        .flat_map(|n| n.cache_bytes.iter().map(move |b| (n.name, *b)))
        .min_by_key(|(_, b)| *b);
    if let Some((name, b)) = smallest {
        let level = if (b as f64) < need {
            Level::Fail
        } else if (b as f64) < plan.cache_tb_per_disk_min * 1e12 {
            Level::Warn
        } else {
            Level::Ok
        };
        add(
            level,
            "cache disk size",
            format!(
                "smallest {} on {name}; the rule needs {:.3} TB (raw {:.1} TB / ({} nodes x {disks} disks x 12)), {:.1} TB recommended",
                decimal_size(b),
                plan.cache_tb_per_disk,
                plan.raw_tb,
                nodes.len(),
                plan.cache_tb_per_disk_min
            ),
        );
    }
    for n in nodes {
        if let Some(t) = n.cpu_threads {
            add(
                if t >= plan.threads_per_node {
                    Level::Ok
                } else {
                    Level::Warn
                },
                "CPU threads",
                format!(
                    "{}: {t} threads; the plan wants {}",
                    n.name, plan.threads_per_node
                ),
            );
        }
    }
    let want = plan.destage_mb_per_s as u64 * 1_000_000;
    add(
        if destage_rate >= want {
            Level::Ok
        } else {
            Level::Warn
        },
        "destage rate",
        format!(
            "{} MB/s configured; the seed's rule gives {} MB/s (active nodes x 50 MB/s)",
            destage_rate / 1_000_000,
            plan.destage_mb_per_s
        ),
    );
    if let Some(o) = osds {
        add(
            if o >= plan.min_osds.max(plan.headroom_osds) {
                Level::Ok
            } else {
                Level::Warn
            },
            "Ceph OSDs",
            format!(
                "{o} OSDs; at least {} (nodes x 8) and {} for the 1,200-IOPS headroom rule",
                plan.min_osds, plan.headroom_osds
            ),
        );
    }
    Ok(Check { plan, findings: f })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(nodes: u32, usable_tb: f64, disks: u32) -> PlanInput {
        PlanInput {
            nodes,
            usable_tb,
            ceph_replicas: 3,
            cache_disks_per_node: disks,
            osds: None,
            cpu_ghz: None,
            cores_per_socket: None,
            sockets: None,
            cache_disk_tb: None,
        }
    }

    #[test]
    fn the_seeds_example() {
        // Seed section 3: 3 nodes, 40 TB usable (120 TB raw), 2 disks -> at least 1.6 TB/disk.
        let p = plan(&input(3, 40.0, 2)).unwrap();
        assert_eq!(p.raw_tb, 120.0);
        assert_eq!(p.cache_tb_per_disk_seed, 1.6);
        assert!((p.cache_tb_per_disk - 120.0 / 72.0).abs() < 1e-12);
        assert_eq!(p.min_osds, 24);
        assert_eq!(
            p.headroom_osds, 25,
            "3 x 100k / 10 / 1200 = 25 (rounded up)"
        );
        assert_eq!(p.destage_mb_per_s, 150);
        // 40 TB raw per node: the "below 80 TB" class, 8 threads for the service.
        assert!(!p.large_nodes);
        assert_eq!(p.osds_per_node, 9);
        assert_eq!(p.threads_per_node, 9 * 3 + 8 + 8);
        assert_eq!(p.multipath_paths, (4, 1, 2));
        assert_eq!(p.baseline_vms, 12);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn large_nodes_get_sixteen_service_threads() {
        let mut i = input(3, 100.0, 2);
        i.osds = Some(30);
        let p = plan(&i).unwrap();
        assert_eq!(p.raw_tb_per_node, 100.0);
        assert!(p.large_nodes);
        assert_eq!(p.threads_per_node, 10 * 3 + 8 + 16);
        assert!(p.recommended_node.starts_with("2 x 14 cores"));
    }

    #[test]
    fn below_minimum_inputs_warn() {
        let mut i = input(2, 10.0, 3);
        i.osds = Some(10);
        i.cpu_ghz = Some(1.9);
        i.cores_per_socket = Some(8);
        i.sockets = Some(1);
        i.cache_disk_tb = Some(1.0);
        let p = plan(&i).unwrap();
        let w = p.warnings.join("\n");
        for needle in [
            "nodes: 2 is below the minimum of 3",
            "cache-disks: 3 per node",
            "osds: 10 is below the minimum of 16",
            "cpu-ghz: 1.9 is below the minimum",
            "cores-per-socket: 8 is below the minimum of 10",
            "sockets: 1",
            "cache-disk-tb: 1 TB is below the minimum of 1.5 TB",
        ] {
            assert!(w.contains(needle), "missing {needle:?} in:\n{w}");
        }
        let mut ok = input(3, 40.0, 2);
        ok.cache_disk_tb = Some(1.6);
        let w = plan(&ok).unwrap().warnings.join("\n");
        assert!(w.contains("below the 1.667 TB per disk"), "{w}");
    }

    #[test]
    fn impossible_inputs_name_the_field() {
        assert_eq!(
            plan(&input(0, 1.0, 1)).unwrap_err(),
            invalid("nodes", "must be between 1 and 10000")
        );
        // Found by schemathesis: huge inputs are refused, not overflowed.
        assert_eq!(
            plan(&input(85_899_346, 1.0, 1)).unwrap_err(),
            invalid("nodes", "must be between 1 and 10000")
        );
        let mut big = input(10_000, 1e6, 16);
        big.osds = Some(1_000_000);
        big.cores_per_socket = Some(1024);
        big.sockets = Some(16);
        plan(&big).unwrap();
        assert!(matches!(
            plan(&input(3, -1.0, 1)),
            Err(PlanError::Invalid {
                field: "usable-tb",
                ..
            })
        ));
        assert!(matches!(
            plan(&input(3, 1.0, 0)),
            Err(PlanError::Invalid {
                field: "cache-disks",
                ..
            })
        ));
    }

    #[test]
    fn check_grades_a_live_cluster() {
        let node = |name, tb: f64, threads| LiveNode {
            name,
            cache_bytes: vec![(tb * 1e12) as u64; 2],
            cpu_threads: Some(threads),
        };
        // The seed's example: 3 nodes, 40 TB usable, 2 disks each of 1.6 TB: the rule's
        // 1.667 TB is not met.
        let nodes = [node("a", 1.6, 64), node("b", 2.0, 64), node("c", 2.0, 8)];
        let c = check(&nodes, 150_000_000, 40.0, 3, Some(30)).unwrap();
        let level = |rule: &str| {
            c.findings
                .iter()
                .filter(|f| f.rule == rule)
                .map(|f| f.level)
                .max_by_key(|l| *l as u8)
                .unwrap()
        };
        assert_eq!(level("nodes"), Level::Ok);
        assert_eq!(level("cache disks per node"), Level::Ok);
        assert_eq!(level("cache disk size"), Level::Fail, "{:?}", c.findings);
        assert_eq!(level("CPU threads"), Level::Warn);
        assert_eq!(level("destage rate"), Level::Ok);
        assert_eq!(level("Ceph OSDs"), Level::Ok);
        let small = check(&nodes[..2], 50_000_000, 40.0, 3, None).unwrap();
        assert!(small
            .findings
            .iter()
            .any(|f| f.rule == "nodes" && f.level == Level::Fail));
        assert!(small
            .findings
            .iter()
            .any(|f| f.rule == "destage rate" && f.level == Level::Warn));
        // The demo's nodes: one 256 MiB cache file each. Details read as an operator would
        // write them: no set literal, no size rounded to nothing.
        let demo: Vec<LiveNode> = ["n1", "n2", "n3"]
            .into_iter()
            .map(|name| LiveNode {
                name,
                cache_bytes: vec![256 << 20],
                cpu_threads: None,
            })
            .collect();
        let d = check(&demo, 150_000_000, 1.0, 3, None).unwrap();
        let detail = |rule: &str| {
            d.findings
                .iter()
                .find(|f| f.rule == rule)
                .unwrap()
                .detail
                .clone()
        };
        assert_eq!(
            detail("cache disks per node"),
            "1 (1 or 2, the same on every node)"
        );
        assert!(
            detail("cache disk size").starts_with("smallest 268.435 MB on n1;"),
            "{}",
            detail("cache disk size")
        );
    }
}

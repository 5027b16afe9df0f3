//! `alcubierre plan`: sizing from the seed's rules (`alcubierre_control::plan`); with `--check`,
//! the live cluster (over the API) graded against them.

use alcubierre_control::plan::{plan, PlanInput};

/// Options of `plan`.
#[derive(clap::Args)]
pub struct PlanArgs {
    /// High-performance (cache) nodes (with --check: the cluster's active nodes).
    #[arg(long, required_unless_present = "check")]
    nodes: Option<u32>,
    /// Check the live cluster's active nodes, cache disks, CPU threads and destage rate
    /// against the plan for --usable-tb (over the API); exits 1 when a rule fails.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    api: crate::client::ApiArgs,
    /// Usable capacity needed, TB.
    #[arg(long)]
    usable_tb: f64,
    /// Cache disks per node (1 or 2).
    #[arg(long, default_value_t = 1)]
    cache_disks: u32,
    /// Ceph replicas (raw capacity = usable x replicas).
    #[arg(long, default_value_t = 3)]
    ceph_replicas: u32,
    /// Ceph OSDs planned in total.
    #[arg(long)]
    osds: Option<u32>,
    /// CPU clock, GHz.
    #[arg(long)]
    cpu_ghz: Option<f64>,
    /// Cores per socket.
    #[arg(long)]
    cores_per_socket: Option<u32>,
    /// Sockets per node.
    #[arg(long)]
    sockets: Option<u32>,
    /// Size of the planned cache disks, TB.
    #[arg(long)]
    cache_disk_tb: Option<f64>,
}

/// Prints the plan.
pub fn run(a: &PlanArgs, json: bool) -> anyhow::Result<()> {
    if a.check {
        return check(a, json);
    }
    let p = plan(&PlanInput {
        nodes: a.nodes.expect("required without --check"),
        usable_tb: a.usable_tb,
        ceph_replicas: a.ceph_replicas,
        cache_disks_per_node: a.cache_disks,
        osds: a.osds,
        cpu_ghz: a.cpu_ghz,
        cores_per_socket: a.cores_per_socket,
        sockets: a.sockets,
        cache_disk_tb: a.cache_disk_tb,
    })?;
    if json {
        say!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(());
    }
    let rows = [
        (
            "raw capacity",
            format!("{:.1} TB ({:.1} TB per node)", p.raw_tb, p.raw_tb_per_node),
        ),
        (
            "cache per disk",
            format!(
                ">= {:.3} TB (the seed states it as {:.1} TB); buy >= {:.2} TB, 2 TB recommended",
                p.cache_tb_per_disk, p.cache_tb_per_disk_seed, p.cache_tb_per_disk_min
            ),
        ),
        (
            "Ceph OSDs",
            format!(
                ">= {} (nodes x 8); {} for the 1,200-IOPS headroom; planned {} ({} per node)",
                p.min_osds, p.headroom_osds, p.osds, p.osds_per_node
            ),
        ),
        (
            "Ceph IOPS",
            format!(
                "{} vs tier peak {} (needs a tenth)",
                p.ceph_iops, p.tier_peak_iops
            ),
        ),
        (
            "CPU threads per node",
            format!(
                ">= {} (OSDs per node x 3 + 8 + {})",
                p.threads_per_node,
                if p.large_nodes { 16 } else { 8 }
            ),
        ),
        (
            "destage rate",
            format!("{} MB/s (nodes x 50 MB/s)", p.destage_mb_per_s),
        ),
        (
            "multipath paths",
            format!(
                "iSCSI {}, NVMe/TCP {}, NVMe/RDMA {}",
                p.multipath_paths.0, p.multipath_paths.1, p.multipath_paths.2
            ),
        ),
        (
            "baseline test",
            format!("{} VMs with 100 GB volumes", p.baseline_vms),
        ),
        ("recommended node", p.recommended_node.clone()),
    ];
    for (k, v) in rows {
        say!("{k:<22} {v}");
    }
    for w in &p.warnings {
        say!("warning: {w}");
    }
    Ok(())
}

fn check(a: &PlanArgs, json: bool) -> anyhow::Result<()> {
    let mut q = format!(
        "/api/v1/plan/check?usable_tb={}&ceph_replicas={}",
        a.usable_tb, a.ceph_replicas
    );
    if let Some(o) = a.osds {
        q.push_str(&format!("&osds={o}"));
    }
    let c = crate::client::request(&a.api, "GET", &q, None)?;
    let findings = c["findings"].as_array().cloned().unwrap_or_default();
    if json {
        say!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        for f in &findings {
            say!(
                "{:<5} {:<22} {}",
                f["level"].as_str().unwrap_or("?"),
                f["rule"].as_str().unwrap_or("?"),
                f["detail"].as_str().unwrap_or("")
            );
        }
    }
    let failed = findings.iter().filter(|f| f["level"] == "fail").count();
    anyhow::ensure!(failed == 0, "{failed} planning rule(s) failed");
    Ok(())
}

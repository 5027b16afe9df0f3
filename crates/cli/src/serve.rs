//! `alcubierre serve`: one node from a config file (`alcubierre_storage_node::Node::start`).
//! Runs until SIGINT or SIGTERM, then stops accepting, stops the cache threads (every
//! acknowledged write is already in the journal) and exits.

use std::path::Path;

use alcubierre_storage_node::config::NodeConfig;
use alcubierre_storage_node::{ExportedVolume, Node, NodeSpec};
use alcubierre_types::ByteSize;
use serde::Serialize;

#[derive(Serialize)]
struct Ready<'a> {
    node: &'a str,
    listening: Vec<String>,
    iscsi: Vec<String>,
    volumes: &'a [ExportedVolume],
    api: Option<String>,
}

/// `alcubierre serve --config FILE`.
pub fn run(config: &Path, json: bool) -> anyhow::Result<()> {
    let cfg = NodeConfig::load(config)?;
    let threads = cfg
        .node
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    // One thread: a current-thread runtime (no work stealing, no cross-thread wake-ups).
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("nvmf")
            .enable_all()
            .build()?
    };
    rt.block_on(async {
        let node = Node::start(NodeSpec::from_config(cfg)).await?;
        let ready = Ready {
            node: &node.name,
            listening: node.listeners.iter().map(|l| l.local_addr().to_string()).collect(),
            iscsi: node
                .iscsi
                .as_ref()
                .map(|(_, b)| b.iter().map(|a| a.to_string()).collect())
                .unwrap_or_default(),
            volumes: &node.volumes,
            api: node.api_url().map(str::to_string),
        };
        if json {
            println!("{}", serde_json::to_string(&ready)?);
        } else {
            println!("node {} serving NVMe/TCP on {}", ready.node, ready.listening.join(", "));
            if !ready.iscsi.is_empty() {
                println!("  and iSCSI on {}", ready.iscsi.join(", "));
            }
            for v in &node.volumes {
                println!(
                    "  volume {} ({}, {}{}): {}",
                    v.name,
                    v.id,
                    ByteSize(v.size),
                    if v.memory { ", memory" } else { "" },
                    v.nqn
                );
            }
            if let Some(p) = node.target.config.portals.first() {
                println!(
                    "connect: nvme discover -t tcp -a {} -s {}; nvme connect-all -t tcp -a {} -s {}",
                    p.addr, p.port, p.addr, p.port
                );
            }
        }
        use std::io::Write;
        std::io::stdout().flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        node.stop();
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

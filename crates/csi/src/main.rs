//! `alcubierre-csi`: the CSI driver's gRPC server on a Unix socket (see the library).

use std::path::PathBuf;
use std::sync::Arc;

use alcubierre_csi::controller::ControllerService;
use alcubierre_csi::identity::IdentityService;
use alcubierre_csi::node::NodeService;
use alcubierre_csi::proto::controller_server::ControllerServer;
use alcubierre_csi::proto::identity_server::IdentityServer;
use alcubierre_csi::proto::node_server::NodeServer;
use alcubierre_host::endpoints::Api;
use anyhow::Context;
use clap::Parser;

/// The Alcubierre CSI driver.
#[derive(Parser)]
#[command(name = "alcubierre-csi", version)]
struct Cli {
    /// Where to serve: `unix:///path/csi.sock` (or a path).
    #[arg(long, env = "CSI_ENDPOINT")]
    endpoint: String,
    /// The cluster's API: one URL or several, comma-separated (every storage node's, say); a
    /// call goes to the one that answered last, and on to the next when it does not answer.
    #[arg(long, env = "ALCUBIERRE_API", value_delimiter = ',', required = true)]
    api: Vec<String>,
    /// The API token.
    #[arg(long, env = "ALCUBIERRE_TOKEN", hide_env_values = true)]
    token: String,
    /// The CA bundle an https:// API is verified with.
    #[arg(long, env = "ALCUBIERRE_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// This node's id: the host's name in the cluster (default: the hostname).
    #[arg(long, env = "CSI_NODE_ID")]
    node_id: Option<String>,
    /// The node's NVMe host NQN (default: /etc/nvme/hostnqn).
    #[arg(long, env = "CSI_NODE_NQN")]
    node_nqn: Option<String>,
    /// The node's iSCSI initiator IQN (default: /etc/iscsi/initiatorname.iscsi).
    #[arg(long, env = "CSI_NODE_IQN")]
    node_iqn: Option<String>,
    /// Which services: `controller` (the Deployment), `node` (the DaemonSet: it also keeps its
    /// volumes' paths and reports the node's liveness, as the host agent's daemon does) or `all`.
    #[arg(long, default_value = "all", value_parser = ["all", "controller", "node"])]
    mode: String,
    /// Where the node keeps the volumes it staged (so a restarted plugin adopts them).
    #[arg(long, default_value = "/var/lib/alcubierre-csi")]
    state_dir: PathBuf,
}

/// How often an unregistered node plugin tries to register its host again.
const REGISTER_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a call to the cluster's API may take on one endpoint.
const API_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let node_id = match cli.node_id {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("--node-id: none given and the hostname cannot be read")?
            .trim()
            .to_string(),
    };
    let cfg = alcubierre_host::config::Config {
        api: cli.api.clone(),
        token: cli.token.clone(),
        ca_cert: cli.ca_cert.clone(),
        host: Some(node_id.clone()),
        protocol: alcubierre_host::Protocol::NvmeTcp,
        state_dir: cli.state_dir.clone(),
        interval_ms: 2000,
        chap_secret_file: None,
    };
    let client = Arc::new(Api::new(&cfg, API_TIMEOUT).context("--api")?);
    let controller = cli.mode != "node";
    let node = cli.mode != "controller";
    let agent = if node {
        // Until it is registered: the API may not answer yet, or the node's NQN or IQN may
        // appear later (nvme-cli or open-iscsi installed after the plugin started).
        let (c, n, nqn, iqn) = (client.clone(), node_id.clone(), cli.node_nqn, cli.node_iqn);
        if !register(&c, &n, nqn.clone(), iqn.clone()).await {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(REGISTER_RETRY).await;
                    if register(&c, &n, nqn.clone(), iqn.clone()).await {
                        break;
                    }
                }
            });
        }
        match alcubierre_host::agent::Agent::new(cfg, Default::default()) {
            Ok(a) => {
                let a = Arc::new(
                    a.reported_as(format!("alcubierre-csi {}", env!("CARGO_PKG_VERSION")))
                        .published_only(),
                );
                // The staged volumes' paths kept, and the node's liveness reported.
                let daemon = a.clone();
                std::thread::spawn(move || daemon.run(&std::sync::atomic::AtomicBool::new(false)));
                Some(a)
            }
            Err(e) => {
                tracing::error!("this node cannot attach volumes: {e}");
                None
            }
        }
    } else {
        None
    };
    let path = PathBuf::from(
        cli.endpoint
            .strip_prefix("unix://")
            .unwrap_or(&cli.endpoint),
    );
    // A socket left by a previous run.
    if path.exists() {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("--endpoint: listening on {}", path.display()))?;
    tracing::info!(endpoint = %path.display(), mode = %cli.mode, "serving the CSI services");
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(IdentityService::new(controller)))
        .add_optional_service(
            controller.then(|| ControllerServer::new(ControllerService::new(client))),
        )
        .add_optional_service(node.then(|| NodeServer::new(NodeService::new(node_id, agent))))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    Ok(())
}

/// Registers this node's host in the cluster (its NVMe host NQN, Host Identifier and IQN), so
/// that ControllerPublishVolume can attach volumes to it; an existing host is kept (its CHAP
/// credentials with it). Whether the host is registered.
async fn register(client: &Arc<Api>, node: &str, nqn: Option<String>, iqn: Option<String>) -> bool {
    let id = alcubierre_host::identity::Identity::read(&Default::default(), Some(node));
    let host = alcubierre_api::v1::Host {
        name: node.to_string(),
        nqn: nqn.or(id.nqn),
        iqn: iqn.or(id.iqn),
        nvme_hostid: id.hostid,
        chap: None,
        target_chap: None,
    };
    if host.nqn.is_none() && host.iqn.is_none() {
        tracing::error!(node, "no NVMe host NQN and no iSCSI IQN on this node (/etc/nvme/hostnqn, /etc/iscsi/initiatorname.iscsi): volumes cannot be published to it until one is there");
        return false;
    }
    let c = client.clone();
    let node = node.to_string();
    let r = tokio::task::spawn_blocking(move || {
        c.call(|c| match c.host(&node) {
            Ok(_) => Ok(false),
            Err(e) if e.is_not_found() => c
                .call::<alcubierre_api::v1::HostView>(
                    "PUT",
                    &format!("/api/v1/hosts/{node}"),
                    Some(&host),
                )
                .map(|_| true),
            Err(e) => Err(e),
        })
    })
    .await;
    match r {
        Ok(Ok(made)) => {
            if made {
                tracing::info!("registered this node's host in the cluster");
            }
            true
        }
        Ok(Err(e)) => {
            tracing::error!("registering this node's host (retried every 10 s): {e}");
            false
        }
        Err(e) => {
            tracing::error!("registering this node's host (retried every 10 s): {e}");
            false
        }
    }
}

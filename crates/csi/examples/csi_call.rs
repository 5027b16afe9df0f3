//! `csi_call`: one CSI call to a driver's Unix socket, as a container orchestrator makes it, for
//! scripts and the VM tests (`testing/vm/csi-failures-guest.sh`): what Kubernetes' sidecars and
//! the kubelet would ask, one step at a time.
//!
//! `csi_call --endpoint unix:///run/csi.sock COMMAND ...`; the answer's fields are printed one
//! per line as `key=value`. A gRPC error prints `error=CODE` and `message=...` and exits 3.

use std::collections::HashMap;

use alcubierre_csi::proto::controller_client::ControllerClient;
use alcubierre_csi::proto::node_client::NodeClient;
use alcubierre_csi::proto::volume_capability::{access_mode::Mode, AccessType};
use alcubierre_csi::proto::*;
use clap::{Parser, Subcommand};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
struct Cli {
    /// The driver's socket: `unix:///path` or a path.
    #[arg(long)]
    endpoint: String,
    /// Raw block access instead of a file system.
    #[arg(long)]
    block: bool,
    /// The file system of mount access.
    #[arg(long, default_value = "ext4")]
    fs: String,
    /// Context entries (`key=value`): parameters for `create`, publish context for `stage`
    /// and `node-publish`.
    #[arg(long = "ctx")]
    ctx: Vec<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// CreateVolume NAME of BYTES.
    Create { name: String, bytes: i64 },
    /// DeleteVolume.
    Delete { volume: String },
    /// ControllerPublishVolume to NODE.
    Publish { volume: String, node: String },
    /// ControllerUnpublishVolume from NODE.
    Unpublish { volume: String, node: String },
    /// ControllerExpandVolume to BYTES.
    Expand { volume: String, bytes: i64 },
    /// NodeStageVolume at STAGING.
    Stage { volume: String, staging: String },
    /// NodeUnstageVolume from STAGING.
    Unstage { volume: String, staging: String },
    /// NodePublishVolume from STAGING at TARGET.
    NodePublish {
        volume: String,
        staging: String,
        target: String,
    },
    /// NodeUnpublishVolume from TARGET.
    NodeUnpublish { volume: String, target: String },
    /// NodeGetVolumeStats of PATH.
    Stats { volume: String, path: String },
    /// NodeExpandVolume at PATH to BYTES.
    NodeExpand {
        volume: String,
        path: String,
        bytes: i64,
    },
}

fn capability(cli: &Cli) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(volume_capability::AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(if cli.block {
            AccessType::Block(volume_capability::BlockVolume {})
        } else {
            AccessType::Mount(volume_capability::MountVolume {
                fs_type: cli.fs.clone(),
                ..Default::default()
            })
        }),
    }
}

fn context(entries: &[String]) -> anyhow::Result<HashMap<String, String>> {
    entries
        .iter()
        .map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--ctx {e:?}: expected key=value"))
        })
        .collect()
}

async fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    let path = endpoint.trim_start_matches("unix://").to_string();
    // The URI is not used: every connection goes to the socket.
    Ok(Endpoint::try_from("http://[::1]:1")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await?)
}

fn print_map(prefix: &str, m: &HashMap<String, String>) {
    let mut keys: Vec<_> = m.keys().collect();
    keys.sort();
    for k in keys {
        println!("{prefix}{k}={}", m[k]);
    }
}

async fn call(cli: &Cli) -> anyhow::Result<Result<(), tonic::Status>> {
    let ch = channel(&cli.endpoint).await?;
    let mut ctl = ControllerClient::new(ch.clone());
    let mut node = NodeClient::new(ch);
    let ctx = context(&cli.ctx)?;
    let cap = Some(capability(cli));
    let r = match &cli.cmd {
        Cmd::Create { name, bytes } => ctl
            .create_volume(CreateVolumeRequest {
                name: name.clone(),
                capacity_range: Some(CapacityRange {
                    required_bytes: *bytes,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![capability(cli)],
                parameters: ctx,
                ..Default::default()
            })
            .await
            .map(|r| {
                let v = r.into_inner().volume.unwrap_or_default();
                println!("volume_id={}", v.volume_id);
                println!("capacity_bytes={}", v.capacity_bytes);
                print_map("ctx.", &v.volume_context);
            }),
        Cmd::Delete { volume } => ctl
            .delete_volume(DeleteVolumeRequest {
                volume_id: volume.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        Cmd::Publish { volume, node: n } => ctl
            .controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: volume.clone(),
                node_id: n.clone(),
                volume_capability: cap,
                ..Default::default()
            })
            .await
            .map(|r| print_map("pctx.", &r.into_inner().publish_context)),
        Cmd::Unpublish { volume, node: n } => ctl
            .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: volume.clone(),
                node_id: n.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        Cmd::Expand { volume, bytes } => ctl
            .controller_expand_volume(ControllerExpandVolumeRequest {
                volume_id: volume.clone(),
                capacity_range: Some(CapacityRange {
                    required_bytes: *bytes,
                    limit_bytes: 0,
                }),
                volume_capability: cap,
                ..Default::default()
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                println!("capacity_bytes={}", r.capacity_bytes);
                println!("node_expansion_required={}", r.node_expansion_required);
            }),
        Cmd::Stage { volume, staging } => node
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: volume.clone(),
                staging_target_path: staging.clone(),
                volume_capability: cap,
                publish_context: ctx.clone(),
                volume_context: ctx,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        Cmd::Unstage { volume, staging } => node
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: volume.clone(),
                staging_target_path: staging.clone(),
            })
            .await
            .map(|_| ()),
        Cmd::NodePublish {
            volume,
            staging,
            target,
        } => node
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: volume.clone(),
                staging_target_path: staging.clone(),
                target_path: target.clone(),
                volume_capability: cap,
                publish_context: ctx.clone(),
                volume_context: ctx,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        Cmd::NodeUnpublish { volume, target } => node
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: volume.clone(),
                target_path: target.clone(),
            })
            .await
            .map(|_| ()),
        Cmd::Stats { volume, path } => node
            .node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: volume.clone(),
                volume_path: path.clone(),
                ..Default::default()
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                for u in r.usage {
                    let unit =
                        volume_usage::Unit::try_from(u.unit).map_or("unknown", |u| u.as_str_name());
                    println!("{unit}.total={}", u.total);
                    println!("{unit}.used={}", u.used);
                    println!("{unit}.available={}", u.available);
                }
                let c = r.volume_condition.unwrap_or_default();
                println!("abnormal={}", c.abnormal);
                println!("condition={}", c.message);
            }),
        Cmd::NodeExpand {
            volume,
            path,
            bytes,
        } => node
            .node_expand_volume(NodeExpandVolumeRequest {
                volume_id: volume.clone(),
                volume_path: path.clone(),
                capacity_range: Some(CapacityRange {
                    required_bytes: *bytes,
                    limit_bytes: 0,
                }),
                volume_capability: cap,
                ..Default::default()
            })
            .await
            .map(|r| println!("capacity_bytes={}", r.into_inner().capacity_bytes)),
    };
    Ok(r)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Err(s) = call(&cli).await? {
        println!("error={:?}", s.code());
        println!("message={}", s.message().replace('\n', " "));
        std::process::exit(3);
    }
    Ok(())
}

//! The operator commands over the REST API: `node`, `volume`, `qos`, `host`, `cluster`,
//! `status`, through the API's client (`alcubierre_api::client`); tables by default, `--json`
//! prints the API's JSON. `--api` / `ALCUBIERRE_API` and `--token` / `ALCUBIERRE_TOKEN` say
//! where and who.

use anyhow::{bail, Context};
use serde_json::{json, Value};

use alcubierre_storage_node::config::parse_size;

pub use crate::api_args::{request, ApiArgs};
use crate::table::{print_table, s};

fn out(v: &Value, json: bool, table: impl FnOnce(&Value)) {
    if json {
        say!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        table(v);
    }
}

fn nodes_table(v: &Value) {
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    let cache = n["cache"].as_array().map_or(String::new(), |c| {
                        c.iter()
                            .map(|d| {
                                format!(
                                    "{} {}",
                                    alcubierre_types::ByteSize(d["size"].as_u64().unwrap_or(0)),
                                    s(&d["state"])
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    });
                    let mut activation = s(&n["activation"]["state"]);
                    if n["draining"].as_bool() == Some(true) {
                        activation.push_str(", draining");
                    }
                    vec![s(&n["name"]), activation, s(&n["service"]), cache]
                })
                .collect()
        })
        .unwrap_or_default();
    print_table(&["NODE", "ACTIVATION", "SERVICE", "CACHE"], rows);
}

/// A list answer as it is, a single object as a list of one.
fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        v => vec![v.clone()],
    }
}

fn volumes_table(v: &Value) {
    let list = as_list(v);
    let rows = list
        .iter()
        .map(|x| {
            vec![
                s(&x["name"]),
                s(&x["id"]),
                alcubierre_types::ByteSize(x["size"].as_u64().unwrap_or(0)).to_string(),
                x["replicas"].as_array().map_or(String::new(), |r| {
                    r.iter().map(s).collect::<Vec<_>>().join(",")
                }),
                s(&x["primary"]),
                format!(
                    "{}/{}",
                    x["in_sync"].as_array().map_or(0, Vec::len),
                    x["replicas"].as_array().map_or(0, Vec::len)
                ),
                s(&x["epoch"]),
                s(&x["qos"]),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME", "ID", "SIZE", "REPLICAS", "PRIMARY", "IN SYNC", "EPOCH", "QOS",
        ],
        rows,
    );
}

/// `alcubierre node ...`.
#[derive(clap::Subcommand)]
pub enum NodeCmd {
    /// Nodes with activation, service and cache states.
    List,
    /// Activates nodes (the first activation needs at least 3).
    Activate {
        /// Node names.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Deactivates a node.
    Deactivate {
        /// Node name.
        node: String,
    },
    /// Drains a node: it takes no new replicas and the leader moves its replicas away.
    Drain {
        /// Node name.
        node: String,
        /// Stop draining instead.
        #[arg(long)]
        stop: bool,
    },
}

/// `alcubierre volume ...`.
#[derive(clap::Subcommand)]
pub enum VolumeCmd {
    /// Creates a volume (3 replicas on distinct active nodes), empty or cloned from a snapshot.
    Create {
        /// Name.
        name: String,
        /// Size, e.g. 10GiB (with --from: at least the snapshot's; default the snapshot's).
        #[arg(long, required_unless_present = "from")]
        size: Option<String>,
        /// 512 (reporting 4096-byte physical blocks) or 4096 [default: 512; with --from: the
        /// snapshot's].
        #[arg(long)]
        block_size: Option<u64>,
        /// Clone it from a snapshot: VOLUME@SNAPSHOT.
        #[arg(long)]
        from: Option<String>,
        /// QoS policy.
        #[arg(long)]
        qos: Option<String>,
        /// Hosts allowed to attach (repeat).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Lists volumes.
    List,
    /// Shows a volume (by name or id).
    Show {
        /// Name or id.
        volume: String,
    },
    /// Grows a volume.
    Resize {
        /// Name or id.
        volume: String,
        /// New size.
        #[arg(long)]
        size: String,
    },
    /// Sets the hosts allowed to attach a volume (none: any host).
    Hosts {
        /// Name or id.
        volume: String,
        /// Host names (see `alcubierre host`).
        hosts: Vec<String>,
    },
    /// Sets a volume's QoS policy (none: no limits).
    Qos {
        /// Name or id.
        volume: String,
        /// Policy name (see `alcubierre qos`).
        policy: Option<String>,
    },
    /// Deletes a volume (and its snapshots).
    Delete {
        /// Name or id.
        volume: String,
    },
    /// Snapshots of a volume.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Attaches a host: it joins the volume's access list (recording the initiator names
    /// given; a host that does not exist is created with them). Prints how to connect.
    Attach {
        /// Name or id.
        volume: String,
        /// Host name.
        host: String,
        /// The host's NVMe host NQN.
        #[arg(long)]
        nqn: Option<String>,
        /// The host's iSCSI initiator IQN.
        #[arg(long)]
        iqn: Option<String>,
        /// The host's NVMe Host Identifier (a UUID, Linux's /etc/nvme/hostid): a force detach
        /// finds its NVMe reservations by it.
        #[arg(long)]
        nvme_hostid: Option<String>,
    },
    /// Detaches a host: it leaves the volume's access list (the last one leaving leaves nobody)
    /// and its connections to the volume end.
    Detach {
        /// Name or id.
        volume: String,
        /// Host name.
        host: String,
        /// Also remove the host's persistent reservations (fence a failed host so that
        /// another can take over); waits for the volume's primary to confirm.
        #[arg(long)]
        force: bool,
    },
    /// How hosts reach a volume: every replica node's portals with their states.
    Connection {
        /// Name or id.
        volume: String,
    },
}

/// `alcubierre volume snapshot ...`.
#[derive(clap::Subcommand)]
pub enum SnapshotCmd {
    /// Takes a snapshot: the volume's primary destages its cached writes, then snapshots its
    /// backend image; it holds every write acknowledged before the command. Waits until it is
    /// ready.
    Create {
        /// Volume name or id.
        volume: String,
        /// Snapshot name.
        name: String,
        /// Return once requested instead of waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Lists a volume's snapshots.
    List {
        /// Volume name or id.
        volume: String,
    },
    /// Deletes a snapshot (volumes cloned from it are independent of it).
    Delete {
        /// Volume name or id.
        volume: String,
        /// Snapshot name.
        name: String,
    },
}

/// `alcubierre qos ...`.
#[derive(clap::Subcommand)]
pub enum QosCmd {
    /// Creates or replaces a policy.
    Set {
        /// Name.
        name: String,
        /// Read IOPS limit.
        #[arg(long)]
        read_iops: Option<u64>,
        /// Write IOPS limit.
        #[arg(long)]
        write_iops: Option<u64>,
        /// IOPS limit of reads and writes together.
        #[arg(long)]
        total_iops: Option<u64>,
        /// Read bandwidth (e.g. 100MiB).
        #[arg(long)]
        read_bw: Option<String>,
        /// Write bandwidth.
        #[arg(long)]
        write_bw: Option<String>,
        /// Bandwidth of reads and writes together.
        #[arg(long)]
        total_bw: Option<String>,
        /// Burst rates, each above its limit: read-iops=N, write-iops=N, total-iops=N,
        /// read-bw=SIZE, write-bw=SIZE or total-bw=SIZE (repeat the option for several).
        #[arg(long, value_name = "LIMIT=RATE")]
        burst: Vec<String>,
        /// How long a burst lasts, in seconds (default 1).
        #[arg(long)]
        burst_seconds: Option<u64>,
    },
    /// Lists policies.
    List,
    /// Deletes a policy (refused while a volume uses it).
    Delete {
        /// Name.
        name: String,
    },
}

/// `alcubierre host ...`.
#[derive(clap::Subcommand)]
pub enum HostCmd {
    /// Creates or replaces a host.
    Set {
        /// Name.
        name: String,
        /// NVMe host NQN.
        #[arg(long)]
        nqn: Option<String>,
        /// iSCSI initiator name.
        #[arg(long)]
        iqn: Option<String>,
        /// CHAP user (with --chap-secret).
        #[arg(long, requires = "chap_secret")]
        chap_user: Option<String>,
        /// CHAP secret (12-16 characters).
        #[arg(long, requires = "chap_user")]
        chap_secret: Option<String>,
        /// Mutual CHAP: the user the target answers the host's challenge as (with
        /// --target-chap-secret and --chap-user).
        #[arg(long, requires_all = ["target_chap_secret", "chap_user"])]
        target_chap_user: Option<String>,
        /// Mutual CHAP: the target's secret (12-16 characters, not the host's).
        #[arg(long, requires = "target_chap_user")]
        target_chap_secret: Option<String>,
    },
    /// Lists hosts (secrets are not shown).
    List,
    /// Deletes a host (refused while a volume's access list names it).
    Delete {
        /// Name.
        name: String,
    },
    /// Fences a failed host: force-detaches it from every volume (access removed, its
    /// reservations preempted) so its instances can attach elsewhere. Refused while its agent
    /// reports it alive, unless --even-if-alive.
    Fence {
        /// Name.
        name: String,
        /// Fences a host whose agent still reports (it loses its volumes at once).
        #[arg(long)]
        even_if_alive: bool,
    },
}

/// `alcubierre cluster ...`.
#[derive(clap::Subcommand)]
pub enum ClusterCmd {
    /// Shows the cluster configuration.
    Show,
    /// Changes the fields a JSON file names and keeps the others (a merge patch; `null` resets
    /// a field to its default); prints what changed.
    Set {
        /// The file.
        file: std::path::PathBuf,
        /// Replace the whole configuration with the file's: a field it leaves out goes back to
        /// its default.
        #[arg(long)]
        replace: bool,
    },
}

fn size(field: &str, v: &str) -> anyhow::Result<u64> {
    parse_size(v).map_err(|e| anyhow::anyhow!("--{field}: {e}"))
}

/// Runs `node`.
pub fn node(a: &ApiArgs, c: NodeCmd, json: bool) -> anyhow::Result<()> {
    match c {
        NodeCmd::List => out(
            &request(a, "GET", "/api/v1/nodes", None)?,
            json,
            nodes_table,
        ),
        NodeCmd::Activate { nodes } => {
            let v = request(
                a,
                "POST",
                "/api/v1/nodes/activate",
                Some(&json!({ "nodes": nodes })),
            )?;
            out(&v, json, |_| say!("activating {}", nodes.join(", ")));
        }
        NodeCmd::Deactivate { node } => {
            let v = request(a, "POST", &format!("/api/v1/nodes/{node}/deactivate"), None)?;
            out(&v, json, |_| say!("{node} deactivated"));
        }
        NodeCmd::Drain { node, stop } => {
            let verb = if stop { "undrain" } else { "drain" };
            let v = request(a, "POST", &format!("/api/v1/nodes/{node}/{verb}"), None)?;
            out(&v, json, |_| {
                if stop {
                    say!("{node} no longer draining")
                } else {
                    say!("{node} draining; `alcubierre status` shows the volumes still on it")
                }
            });
        }
    }
    Ok(())
}

/// The replicas their nodes fail to serve (all, or `volume`'s), from the API's status.
fn print_failures(status: &Value, volume: Option<&Value>) {
    for f in status["failures"].as_array().into_iter().flatten() {
        if volume.is_some_and(|v| v["id"] != f["volume"]) {
            continue;
        }
        let since = f["since"].as_u64().unwrap_or(0);
        let ago = alcubierre_control::unix_now().saturating_sub(since);
        say!(
            "failed: volume {} on {} for {ago} s ({} attempts): {}",
            s(&f["name"]),
            s(&f["node"]),
            f["retries"],
            s(&f["reason"])
        );
    }
}

/// Runs `volume`.
pub fn volume(a: &ApiArgs, c: VolumeCmd, json: bool) -> anyhow::Result<()> {
    let v = match c {
        VolumeCmd::Create {
            name,
            size: sz,
            block_size,
            from,
            qos,
            hosts,
        } => {
            let mut body = json!({ "name": name, "qos": qos, "hosts": hosts });
            if let Some(bs) = block_size {
                body["block_size"] = json!(bs);
            }
            if let Some(sz) = &sz {
                body["size"] = json!(size("size", sz)?);
            }
            if let Some(from) = from {
                let (vol, snap) = from
                    .split_once('@')
                    .context("--from: write VOLUME@SNAPSHOT")?;
                let path = format!("/api/v1/volumes/{vol}/snapshots/{snap}");
                let snapshot = request(a, "GET", &path, None).context("--from")?;
                if sz.is_none() {
                    body["size"] = snapshot["size"].clone();
                }
                body["source"] = json!({ "volume": vol, "snapshot": snap });
            }
            request(a, "POST", "/api/v1/volumes", Some(&body))?
        }
        VolumeCmd::Snapshot(c) => return snapshot(a, c, json),
        VolumeCmd::List => request(a, "GET", "/api/v1/volumes", None)?,
        VolumeCmd::Show { volume } => {
            let d = crate::volume_show::details(a, &volume)?;
            if !json {
                crate::volume_show::print(&d);
                return Ok(());
            }
            d
        }
        VolumeCmd::Resize { volume, size: sz } => request(
            a,
            "POST",
            &format!("/api/v1/volumes/{volume}/resize"),
            Some(&json!({ "size": size("size", &sz)? })),
        )?,
        VolumeCmd::Hosts { volume, hosts } => request(
            a,
            "PUT",
            &format!("/api/v1/volumes/{volume}/hosts"),
            Some(&json!({ "hosts": hosts })),
        )?,
        VolumeCmd::Qos { volume, policy } => request(
            a,
            "PUT",
            &format!("/api/v1/volumes/{volume}/qos"),
            Some(&json!({ "qos": policy })),
        )?,
        VolumeCmd::Attach {
            volume,
            host,
            nqn,
            iqn,
            nvme_hostid,
        } => {
            let r = alcubierre_api::v1::AttachRequest {
                nqn,
                iqn,
                nvme_hostid,
            };
            let att = a.client()?.attach(&volume, &host, &r)?;
            if !json {
                say!("attached host {} to volume {}", att.host, att.volume_name);
                crate::volume_show::print_connection(&att.connection);
                return Ok(());
            }
            serde_json::to_value(att)?
        }
        VolumeCmd::Detach {
            volume,
            host,
            force,
        } => {
            let d = a.client()?.detach(&volume, &host, force)?;
            if !json {
                match d.was_attached {
                    true => say!("detached host {host} from volume {volume}"),
                    false => say!("host {host} was not attached to volume {volume}"),
                }
                match d.fence {
                    Some(alcubierre_api::v1::FenceState::Done) => {
                        say!("fenced: its persistent reservations are removed")
                    }
                    Some(alcubierre_api::v1::FenceState::Pending) => say!(
                        "fencing pending: the volume's primary removes its reservations \
                         when it serves the volume again"
                    ),
                    None => {}
                }
                return Ok(());
            }
            serde_json::to_value(d)?
        }
        VolumeCmd::Connection { volume } => {
            let c = a.client()?.connection(&volume)?;
            if !json {
                crate::volume_show::print_connection(&c);
                return Ok(());
            }
            serde_json::to_value(c)?
        }
        VolumeCmd::Delete { volume } => {
            let v = request(a, "DELETE", &format!("/api/v1/volumes/{volume}"), None)?;
            if !json {
                say!("deleted volume {} ({})", s(&v["name"]), s(&v["id"]));
                return Ok(());
            }
            v
        }
    };
    out(&v, json, volumes_table);
    Ok(())
}

/// How long `volume snapshot create` waits for the primary.
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Runs `volume snapshot`.
fn snapshot(a: &ApiArgs, c: SnapshotCmd, json: bool) -> anyhow::Result<()> {
    let v = match c {
        SnapshotCmd::Create {
            volume,
            name,
            no_wait,
        } => {
            let base = format!("/api/v1/volumes/{volume}/snapshots");
            let mut v = request(a, "POST", &base, Some(&json!({ "name": name })))?;
            let start = std::time::Instant::now();
            while !no_wait && v["state"] == "creating" {
                if start.elapsed() > SNAPSHOT_WAIT {
                    bail!("snapshot {volume}@{name} is still being taken after {SNAPSHOT_WAIT:?}; `alcubierre volume snapshot list {volume}` shows when it is ready");
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
                v = request(a, "GET", &format!("{base}/{name}"), None)?;
            }
            if v["state"] == "failed" {
                bail!("snapshot {volume}@{name} failed: {}", s(&v["error"]));
            }
            v
        }
        SnapshotCmd::List { volume } => request(
            a,
            "GET",
            &format!("/api/v1/volumes/{volume}/snapshots"),
            None,
        )?,
        SnapshotCmd::Delete { volume, name } => {
            let v = request(
                a,
                "DELETE",
                &format!("/api/v1/volumes/{volume}/snapshots/{name}"),
                None,
            )?;
            if !json {
                say!("deleted snapshot {volume}@{name}");
                return Ok(());
            }
            v
        }
    };
    out(&v, json, |v| {
        let list = as_list(v);
        let rows = list
            .iter()
            .map(|x| {
                vec![
                    s(&x["volume_name"]),
                    s(&x["name"]),
                    alcubierre_types::ByteSize(x["size"].as_u64().unwrap_or(0)).to_string(),
                    s(&x["state"]),
                    s(&x["node"]),
                    s(&x["error"]),
                ]
            })
            .collect();
        print_table(
            &["VOLUME", "SNAPSHOT", "SIZE", "STATE", "TAKEN BY", "ERROR"],
            rows,
        );
    });
    Ok(())
}

/// Runs `qos`.
pub fn qos(a: &ApiArgs, c: QosCmd, json: bool) -> anyhow::Result<()> {
    match c {
        QosCmd::Set {
            name,
            read_iops,
            write_iops,
            total_iops,
            read_bw,
            write_bw,
            total_bw,
            burst,
            burst_seconds,
        } => {
            let bw = |f: &str, v: Option<String>| v.map(|v| size(f, &v)).transpose();
            let mut body = json!({
                "read_iops": read_iops, "write_iops": write_iops, "total_iops": total_iops,
                "read_bps": bw("read-bw", read_bw)?, "write_bps": bw("write-bw", write_bw)?,
                "total_bps": bw("total-bw", total_bw)?, "burst_seconds": burst_seconds,
            });
            for b in &burst {
                let (limit, rate) = b
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--burst: {b:?} is not LIMIT=RATE"))?;
                let whole = || {
                    rate.parse::<u64>().map_err(|_| {
                        anyhow::anyhow!("--burst {limit}: {rate:?} is not a whole number")
                    })
                };
                let bw = || size(&format!("burst {limit}"), rate);
                let (field, value) = match limit {
                    "read-iops" => ("read_iops_max", whole()?),
                    "write-iops" => ("write_iops_max", whole()?),
                    "total-iops" => ("total_iops_max", whole()?),
                    "read-bw" => ("read_bps_max", bw()?),
                    "write-bw" => ("write_bps_max", bw()?),
                    "total-bw" => ("total_bps_max", bw()?),
                    _ => anyhow::bail!(
                        "--burst: unknown limit {limit:?} (read-iops, write-iops, total-iops, \
                         read-bw, write-bw or total-bw)"
                    ),
                };
                body[field] = json!(value);
            }
            let v = request(a, "PUT", &format!("/api/v1/qos/{name}"), Some(&body))?;
            out(&v, json, |_| say!("QoS policy {name} saved"));
        }
        QosCmd::Delete { name } => {
            request(a, "DELETE", &format!("/api/v1/qos/{name}"), None)?;
            if !json {
                say!("deleted QoS policy {name}");
            }
        }
        QosCmd::List => out(&request(a, "GET", "/api/v1/qos", None)?, json, |v| {
            let rows = v
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, q)| {
                            let mut row = vec![k.clone()];
                            for f in [
                                "read_iops",
                                "write_iops",
                                "total_iops",
                                "read_bps",
                                "write_bps",
                                "total_bps",
                            ] {
                                row.push(match q[format!("{f}_max")].as_u64() {
                                    Some(m) => format!("{} (burst {m})", s(&q[f])),
                                    None => s(&q[f]),
                                });
                            }
                            row.push(s(&q["burst_seconds"]));
                            row
                        })
                        .collect()
                })
                .unwrap_or_default();
            print_table(
                &[
                    "NAME",
                    "READ IOPS",
                    "WRITE IOPS",
                    "TOTAL IOPS",
                    "READ B/S",
                    "WRITE B/S",
                    "TOTAL B/S",
                    "BURST S",
                ],
                rows,
            );
        }),
    }
    Ok(())
}

/// Runs `host`.
pub fn host(a: &ApiArgs, c: HostCmd, json: bool) -> anyhow::Result<()> {
    match c {
        HostCmd::Set {
            name,
            nqn,
            iqn,
            chap_user,
            chap_secret,
            target_chap_user,
            target_chap_secret,
        } => {
            let chap = chap_user.zip(chap_secret);
            let target_chap = target_chap_user.zip(target_chap_secret);
            let body = json!({
                "name": name,
                "nqn": nqn,
                "iqn": iqn,
                "chap": chap,
                "target_chap": target_chap,
            });
            let v = request(a, "PUT", &format!("/api/v1/hosts/{name}"), Some(&body))?;
            out(&v, json, |_| say!("host {name} saved"));
        }
        HostCmd::Delete { name } => {
            request(a, "DELETE", &format!("/api/v1/hosts/{name}"), None)?;
            if !json {
                say!("deleted host {name}");
            }
        }
        HostCmd::Fence {
            name,
            even_if_alive,
        } => {
            let q = if even_if_alive { "?force=true" } else { "" };
            let v = request(a, "POST", &format!("/api/v1/hosts/{name}/fence{q}"), None)?;
            out(&v, json, |v| {
                for d in v["detached"].as_array().into_iter().flatten() {
                    say!(
                        "volume {}: detached, fence {}",
                        s(&d["volume"]),
                        s(&d["fence"])
                    );
                }
                say!("fenced host {name}");
            });
        }
        HostCmd::List => out(&request(a, "GET", "/api/v1/hosts", None)?, json, |v| {
            let rows = v
                .as_array()
                .map(|l| {
                    l.iter()
                        .map(|h| {
                            vec![
                                s(&h["name"]),
                                s(&h["nqn"]),
                                s(&h["iqn"]),
                                s(&h["chap_user"]),
                                match h["liveness"]["alive"].as_bool() {
                                    Some(true) => "alive".into(),
                                    Some(false) => "lost".into(),
                                    None => "-".into(),
                                },
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            print_table(&["NAME", "NQN", "IQN", "CHAP USER", "AGENT"], rows);
        }),
    }
    Ok(())
}

/// Runs `cluster`.
pub fn cluster(a: &ApiArgs, c: ClusterCmd, json: bool) -> anyhow::Result<()> {
    let v = match c {
        ClusterCmd::Show => request(a, "GET", "/api/v1/cluster/config", None)?,
        ClusterCmd::Set { file, replace } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let body: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let before = request(a, "GET", "/api/v1/cluster/config", None)?;
            let method = if replace { "PUT" } else { "PATCH" };
            let after = request(a, method, "/api/v1/cluster/config", Some(&body))?;
            if !json {
                let changes = changed(&before, &after);
                if changes.is_empty() {
                    say!("no change");
                }
                for (field, old, new) in changes {
                    say!("{field}: {old} -> {new}");
                }
                return Ok(());
            }
            after
        }
    };
    say!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// The fields (dotted paths) whose values differ between `a` and `b`, with both values.
fn changed(a: &Value, b: &Value) -> Vec<(String, String, String)> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<(String, String, String)>) {
        if let (Value::Object(x), Value::Object(y)) = (a, b) {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        } else if a != b {
            out.push((path.to_string(), a.to_string(), b.to_string()));
        }
    }
    let mut out = Vec::new();
    walk("", a, b, &mut out);
    out
}

/// Runs `status`: the summary, nodes and volumes.
pub fn status(a: &ApiArgs, json: bool) -> anyhow::Result<()> {
    let st = request(a, "GET", "/api/v1/status", None)?;
    let nodes = request(a, "GET", "/api/v1/nodes", None)?;
    let vols = request(a, "GET", "/api/v1/volumes", None)?;
    let progress = request(a, "GET", "/api/v1/replication", None)?;
    if json {
        say!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "status": st, "nodes": nodes, "volumes": vols, "replication": progress })
            )?
        );
        return Ok(());
    }
    let list = |v: &Value| {
        v.as_array()
            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
            .filter(|x| !x.is_empty())
            .unwrap_or_else(|| "none".into())
    };
    say!(
        "leader {}; nodes {} active of {}, {} available; volumes {} ({} provisioned, cache {})",
        st["leader"].as_str().unwrap_or("none (no node is leading)"),
        st["active"],
        st["nodes"],
        st["available"],
        st["volumes"],
        alcubierre_types::ByteSize(st["provisioned_bytes"].as_u64().unwrap_or(0)),
        alcubierre_types::ByteSize(st["capacity_bytes"].as_u64().unwrap_or(0)),
    );
    say!(
        "degraded: {}; unavailable: {}; draining: {}",
        list(&st["degraded"]),
        list(&st["unavailable"]),
        list(&st["draining"])
    );
    print_failures(&st, None);
    for u in st["unreadable"].as_array().into_iter().flatten() {
        say!(
            "unreadable record {}: {} (its volume is left as it is)",
            s(&u["key"]),
            s(&u["reason"])
        );
    }
    say!();
    nodes_table(&nodes);
    say!();
    volumes_table(&vols);
    let catching_up: Vec<String> = progress
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| {
            p["followers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| f["in_sync"] != json!(true))
                .map(move |f| {
                    format!(
                        "  {} on {}: {} writes behind the primary {}{}",
                        s(&p["name"]),
                        s(&f["node"]),
                        f["behind_writes"],
                        s(&p["primary"]),
                        if f["connected"] == json!(true) {
                            ""
                        } else {
                            " (not connected)"
                        }
                    )
                })
        })
        .collect();
    if !catching_up.is_empty() {
        say!();
        say!("replicas catching up (resync or rebuild):");
        for l in catching_up {
            say!("{l}");
        }
    }
    Ok(())
}

//! `alcubierre volume show`: one volume as a host administrator and an operator need it: the
//! names hosts connect to (NQN, IQN), every path with its access state, the hosts and QoS
//! policy it admits, and per replica its role, its node's state and how far behind it is.
//! Composed from the API's volume, nodes, replication and status resources.

use alcubierre_types::VolumeId;
use serde_json::{json, Value};

use crate::api_args::{request, ApiArgs};
use crate::table::{print_table, s};

/// The volume `name_or_id` with its connection names, paths and replica states.
pub fn details(a: &ApiArgs, name_or_id: &str) -> anyhow::Result<Value> {
    let v = request(a, "GET", &format!("/api/v1/volumes/{name_or_id}"), None)?;
    let nodes = request(a, "GET", "/api/v1/nodes", None)?;
    let progress = request(a, "GET", "/api/v1/replication", None)?;
    let status = request(a, "GET", "/api/v1/status", None)?;
    Ok(compose(&v, &nodes, &progress, &status))
}

/// The path state hosts see through `node`'s portals: its ANA state over NVMe/TCP, its
/// asymmetric access state over iSCSI (the same three words).
fn path_state(primary: bool, available: bool) -> &'static str {
    match (available, primary) {
        (false, _) => "inaccessible",
        (true, true) => "optimized",
        (true, false) => "non-optimized",
    }
}

/// The volume record `v` with `nqn`, `iqn`, `replica_states` and `paths` added.
fn compose(v: &Value, nodes: &Value, progress: &Value, status: &Value) -> Value {
    let mut out = v.clone();
    let id = v["id"].as_str().and_then(|i| i.parse().ok()).map(VolumeId);
    if let Some(id) = id {
        out["nqn"] = json!(alcubierre_nvmf::volume_nqn(id));
        out["iqn"] = json!(alcubierre_iscsi::volume_iqn(id));
    }
    let primary = v["primary"].as_str().unwrap_or("");
    let node = |name: &str| {
        nodes
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let follower = |name: &str| {
        progress
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["volume"] == v["id"])
            .and_then(|p| p["followers"].as_array())
            .and_then(|f| f.iter().find(|f| f["node"] == name).cloned())
            .unwrap_or(Value::Null)
    };
    let failure = |name: &str| {
        status["failures"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["volume"] == v["id"] && f["node"] == name)
            .map_or(Value::Null, |f| f["reason"].clone())
    };
    let in_sync = |name: &str| {
        v["in_sync"]
            .as_array()
            .is_some_and(|l| l.iter().any(|n| n == name))
    };
    let mut states = Vec::new();
    let mut paths = Vec::new();
    // The primary first, as discovery lists it.
    let mut replicas: Vec<&str> = v["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    replicas.sort_by_key(|r| *r != primary);
    for r in replicas {
        let n = node(r);
        let available = n["service"] == "available";
        let f = follower(r);
        states.push(json!({
            "node": r,
            "role": if r == primary { "primary" } else { "follower" },
            "service": n["service"],
            "in_sync": in_sync(r),
            "connected": f["connected"],
            "behind_writes": f["behind_writes"],
            "failure": failure(r),
        }));
        let state = path_state(r == primary, available);
        for (protocol, key) in [("nvme-tcp", "portals"), ("iscsi", "iscsi_portals")] {
            for p in n[key].as_array().into_iter().flatten() {
                paths.push(json!({
                    "protocol": protocol, "portal": p, "node": r, "state": state,
                }));
            }
        }
    }
    out["replica_states"] = json!(states);
    out["paths"] = json!(paths);
    out
}

/// Prints what [`details`] returned.
pub fn print(d: &Value) {
    let bs = d["block_size"].as_u64().unwrap_or(0);
    let hosts: Vec<String> = d["hosts"].as_array().into_iter().flatten().map(s).collect();
    say!("volume    {} ({})", s(&d["name"]), s(&d["id"]));
    say!(
        "size      {} in {bs}-byte blocks{}",
        alcubierre_types::ByteSize(d["size"].as_u64().unwrap_or(0)),
        if bs < 4096 {
            " (4096-byte physical)"
        } else {
            ""
        }
    );
    say!("nqn       {}", s(&d["nqn"]));
    say!("iqn       {}", s(&d["iqn"]));
    say!(
        "hosts     {}",
        match (hosts.is_empty(), d["any_host"] == true) {
            (true, true) => "any host (none named)".to_string(),
            (true, false) => "none (every attachment was detached)".to_string(),
            (false, _) => hosts.join(", "),
        }
    );
    say!(
        "qos       {}",
        d["qos"].as_str().unwrap_or("none (unlimited)")
    );
    say!("epoch     {}", s(&d["epoch"]));
    say!("");
    let rows = d["replica_states"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let sync = if r["role"] == "primary" {
                "-".to_string()
            } else {
                let behind = r["behind_writes"]
                    .as_u64()
                    .map_or("progress unknown".to_string(), |b| {
                        format!("{b} writes behind")
                    });
                let link = match r["connected"].as_bool() {
                    Some(true) => "connected",
                    Some(false) => "disconnected",
                    None => "no report",
                };
                let state = if r["in_sync"] == true {
                    "in sync"
                } else {
                    "out of sync"
                };
                format!("{state}, {link}, {behind}")
            };
            vec![
                s(&r["node"]),
                s(&r["role"]),
                s(&r["service"]),
                sync,
                r["failure"]
                    .as_str()
                    .map_or("-".into(), |f| format!("failed: {f}")),
            ]
        })
        .collect();
    print_table(&["REPLICA", "ROLE", "NODE", "SYNC", "FAILURE"], rows);
    say!("");
    let rows = d["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                s(&p["protocol"]),
                s(&p["portal"]),
                s(&p["node"]),
                s(&p["state"]),
            ]
        })
        .collect();
    print_table(&["PROTOCOL", "PORTAL", "NODE", "PATH STATE"], rows);
}

/// Prints connection info as a host administrator reads it.
pub fn print_connection(c: &alcubierre_api::v1::ConnectionInfo) {
    let state = |s: alcubierre_api::v1::PathState| match s {
        alcubierre_api::v1::PathState::Optimized => "optimized",
        alcubierre_api::v1::PathState::NonOptimized => "non-optimized",
        alcubierre_api::v1::PathState::Inaccessible => "inaccessible",
    };
    say!(
        "NVMe/TCP  {} (namespace {}, {} path(s) per host)",
        c.nvme.subsystem_nqn,
        c.nvme.namespace_id,
        c.nvme.multipath
    );
    print_table(
        &["NODE", "PORTAL", "ANA GROUP", "STATE"],
        c.nvme
            .portals
            .iter()
            .map(|p| {
                vec![
                    p.node.clone(),
                    format!("{}:{}", p.address, p.port),
                    p.ana_group.map_or("-".into(), |g| g.to_string()),
                    state(p.state).into(),
                ]
            })
            .collect(),
    );
    if let Some(i) = &c.iscsi {
        say!(
            "iSCSI     {} (LUN {}, {} path(s) per host{})",
            i.target_iqn,
            i.lun,
            i.multipath,
            i.chap_user
                .as_ref()
                .map_or(String::new(), |u| format!(", CHAP user {u}"))
        );
        print_table(
            &["NODE", "PORTAL", "TPGT", "STATE"],
            i.portals
                .iter()
                .map(|p| {
                    vec![
                        p.node.clone(),
                        format!("{}:{}", p.address, p.port),
                        p.portal_group_tag.to_string(),
                        state(p.state).into(),
                    ]
                })
                .collect(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_replica_states_from_the_api_resources() {
        let v = json!({
            "id": "5eed0000-0000-0000-0000-000000000001", "name": "v", "size": 1048576,
            "block_size": 512, "replicas": ["node-1", "node-2", "node-3"], "primary": "node-2",
            "in_sync": ["node-2", "node-1"], "epoch": 3, "qos": null, "hosts": [],
        });
        let nodes = json!([
            {"name": "node-1", "service": "available", "portals": ["10.0.0.1:4420"],
             "iscsi_portals": ["10.0.0.1:3260,1"]},
            {"name": "node-2", "service": "available", "portals": ["10.0.0.2:4420"],
             "iscsi_portals": []},
            {"name": "node-3", "service": "unavailable", "portals": ["10.0.0.3:4420"]},
        ]);
        let progress = json!([{"volume": v["id"], "followers": [
            {"node": "node-1", "in_sync": true, "connected": true, "behind_writes": 0},
            {"node": "node-3", "in_sync": false, "connected": false, "behind_writes": 17},
        ]}]);
        let status = json!({"failures": [
            {"volume": v["id"], "node": "node-3", "reason": "backend: image missing"},
        ]});
        let d = compose(&v, &nodes, &progress, &status);
        assert_eq!(
            d["nqn"],
            "nqn.2014-08.io.alcubierre:vol:5eed0000-0000-0000-0000-000000000001"
        );
        assert_eq!(
            d["iqn"],
            "iqn.2014-08.io.alcubierre:vol.5eed0000-0000-0000-0000-000000000001"
        );
        let r = d["replica_states"].as_array().unwrap();
        assert_eq!(r[0]["node"], "node-2", "the primary first");
        assert_eq!(r[0]["role"], "primary");
        assert_eq!(
            (r[2]["node"].as_str(), r[2]["behind_writes"].as_u64()),
            (Some("node-3"), Some(17))
        );
        assert_eq!(r[2]["in_sync"], false);
        assert_eq!(r[2]["failure"], "backend: image missing");
        let p: Vec<(String, String)> = d["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (s(&p["portal"]), s(&p["state"])))
            .collect();
        assert_eq!(
            p,
            [
                ("10.0.0.2:4420".into(), "optimized".into()),
                ("10.0.0.1:4420".into(), "non-optimized".into()),
                ("10.0.0.1:3260,1".into(), "non-optimized".into()),
                ("10.0.0.3:4420".into(), "inaccessible".into()),
            ]
        );
    }
}

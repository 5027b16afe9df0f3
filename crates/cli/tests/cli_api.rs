//! The operator commands against a running cluster (the demo's API): tables, JSON, and errors
//! that name the field.

mod common;

use common::cli;

#[test]
fn operator_commands_over_the_api() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (_demo, ready) =
        common::spawn_ready(&["demo".as_ref(), "--dir".as_ref(), dir.path().as_os_str()]);
    let (api, token) = (
        ready["api"].as_str().unwrap(),
        ready["token"].as_str().unwrap(),
    );

    let (ok, out, err) = cli(api, token, &["node", "list"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("NODE"), "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("active") && l.contains("available"))
            .count(),
        3,
        "{out}"
    );

    let (ok, out, err) = cli(api, token, &["volume", "create", "data1", "--size", "2GiB"]);
    assert!(ok, "{err}");
    assert!(out.contains("data1") && out.contains("2 GiB"), "{out}");
    let (ok, out, _) = cli(api, token, &["--json", "volume", "list"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "demo + data1");
    let (ok, out, _) = cli(api, token, &["volume", "resize", "data1", "--size", "3GiB"]);
    assert!(ok && out.contains("3 GiB"), "{out}");

    // `volume show`: the names hosts connect to, every path with its state, every replica.
    let (ok, out, err) = cli(api, token, &["volume", "show", "data1"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("3 GiB in 512-byte blocks (4096-byte physical)"),
        "the default block size: {out}"
    );
    assert!(
        out.contains("nqn       nqn.2014-08.io.alcubierre:vol:"),
        "{out}"
    );
    assert!(
        out.contains("iqn       iqn.2014-08.io.alcubierre:vol."),
        "{out}"
    );
    assert!(out.contains("hosts     any host"), "{out}");
    let primary_rows = out.lines().filter(|l| l.contains(" primary ")).count();
    let follower_rows = out.lines().filter(|l| l.contains(" follower ")).count();
    assert_eq!((primary_rows, follower_rows), (1, 2), "{out}");
    // Attach, connection info, detach.
    let (ok, out, err) = cli(
        api,
        token,
        &[
            "volume",
            "attach",
            "data1",
            "h9",
            "--nqn",
            "nqn.2014-08.org.example:h9",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("attached host h9 to volume data1"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains("optimized")).count(),
        6,
        "3 NVMe/TCP and 3 iSCSI paths: {out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.contains("non-optimized")).count(),
        4,
        "{out}"
    );
    let (ok, out, _) = cli(api, token, &["--json", "volume", "connection", "data1"]);
    assert!(ok);
    let c: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(c["nvme"]["portals"].as_array().unwrap().len(), 3, "{c}");
    let (ok, out, _) = cli(api, token, &["volume", "show", "data1"]);
    assert!(ok && out.contains("hosts     h9"), "{out}");
    let (ok, out, _) = cli(api, token, &["volume", "detach", "data1", "h9"]);
    assert!(ok && out.contains("detached host h9"), "{out}");
    let (ok, out, _) = cli(api, token, &["volume", "detach", "data1", "h9"]);
    assert!(ok && out.contains("was not attached"), "{out}");
    let (ok, out, _) = cli(api, token, &["volume", "show", "data1"]);
    assert!(
        ok && out.contains("hosts     none"),
        "detaching the last host leaves nobody: {out}"
    );
    let (ok, _, err) = cli(api, token, &["volume", "attach", "nope", "h9"]);
    assert!(!ok && err.contains("HTTP 404"), "{err}");
    let (ok, _, _) = cli(api, token, &["volume", "hosts", "data1"]);
    assert!(ok, "an explicit empty list opens it again");

    let (ok, out, _) = cli(api, token, &["--json", "volume", "show", "data1"]);
    assert!(ok);
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    let paths = d["paths"].as_array().unwrap();
    // Each of the three nodes: an NVMe/TCP and an iSCSI portal.
    assert_eq!(paths.len(), 6, "{d}");
    let state = |s: &str| paths.iter().filter(|p| p["state"] == s).count();
    assert_eq!((state("optimized"), state("non-optimized")), (2, 4), "{d}");
    assert_eq!(
        paths[0]["node"], d["primary"],
        "the primary's paths first: {d}"
    );
    let states = d["replica_states"].as_array().unwrap();
    assert!(states.iter().all(|r| r["service"] == "available"), "{d}");

    let (ok, _, err) = cli(api, token, &["volume", "create", "bad", "--size", "10XB"]);
    assert!(!ok);
    assert!(err.contains("--size") && err.contains("XB"), "{err}");
    let (ok, _, err) = cli(api, token, &["volume", "create", "data1", "--size", "1GiB"]);
    assert!(
        !ok && err.contains("name") && err.contains("HTTP 409"),
        "{err}"
    );
    let (ok, _, err) = cli(api, "wrong", &["status"]);
    assert!(!ok && err.contains("HTTP 401"), "{err}");
    let (ok, _, err) = cli(
        api,
        token,
        &[
            "host",
            "set",
            "h1",
            "--nqn",
            "nqn.2014-08.org.example:h1",
            "--chap-user",
            "u",
            "--chap-secret",
            "short",
        ],
    );
    assert!(!ok && err.contains("chap"), "{err}");
    let (ok, out, err) = cli(
        api,
        token,
        &[
            "qos",
            "set",
            "gold",
            "--write-iops",
            "5000",
            "--write-bw",
            "100MiB",
        ],
    );
    assert!(ok, "{err}: {out}");
    let (ok, out, _) = cli(api, token, &["qos", "list"]);
    assert!(
        ok && out.contains("gold") && out.contains("104857600"),
        "{out}"
    );
    let (ok, out, err) = cli(
        api,
        token,
        &[
            "qos",
            "set",
            "burst",
            "--total-iops",
            "100",
            "--burst",
            "total-iops=1000",
            "--burst-seconds",
            "10",
        ],
    );
    assert!(ok, "{err}: {out}");
    let (ok, out, _) = cli(api, token, &["qos", "list"]);
    assert!(ok && out.contains("100 (burst 1000)"), "{out}");
    // A burst below its limit is the API's error, naming the field.
    let (ok, _, err) = cli(
        api,
        token,
        &[
            "qos",
            "set",
            "burst",
            "--total-iops",
            "100",
            "--burst",
            "total-iops=10",
        ],
    );
    assert!(!ok && err.contains("total_iops_max"), "{err}");
    let (ok, _, err) = cli(api, token, &["qos", "set", "x", "--burst", "fast=1"]);
    assert!(!ok && err.contains("unknown limit"), "{err}");
    assert!(cli(api, token, &["qos", "delete", "burst"]).0);
    let (ok, out, _) = cli(api, token, &["status"]);
    assert!(
        ok && out.contains("NODE") && out.contains("REPLICAS"),
        "{out}"
    );
    let (ok, out, _) = cli(api, token, &["volume", "delete", "data1"]);
    assert!(ok && out.starts_with("deleted volume data1 ("), "{out}");

    // `cluster set` changes what the file names and keeps the rest; --replace resets the rest.
    let file = dir.path().join("partial.json");
    std::fs::write(&file, r#"{"destage_rate": 123456789}"#).unwrap();
    let (ok, out, err) = cli(api, token, &["cluster", "set", file.to_str().unwrap()]);
    assert!(
        ok && out.contains("destage_rate: null -> 123456789"),
        "{out}{err}"
    );
    std::fs::write(&file, r#"{"migration_delay_s": 120}"#).unwrap();
    let (ok, out, err) = cli(api, token, &["cluster", "set", file.to_str().unwrap()]);
    assert!(
        ok && out.contains("migration_delay_s: 600 -> 120"),
        "{out}{err}"
    );
    let (ok, out, _) = cli(api, token, &["--json", "cluster", "show"]);
    let c: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        ok && c["destage_rate"] == 123456789 && c["migration_delay_s"] == 120,
        "{c}"
    );
    let (ok, out, err) = cli(
        api,
        token,
        &["cluster", "set", "--replace", file.to_str().unwrap()],
    );
    assert!(
        ok && out.contains("destage_rate: 123456789 -> null"),
        "{out}{err}"
    );
    std::fs::write(&file, r#"{"data_transport": "rdma"}"#).unwrap();
    let (ok, _, err) = cli(api, token, &["cluster", "set", file.to_str().unwrap()]);
    assert!(
        !ok && err.contains("data_transport") && err.contains("rdma: not built"),
        "{err}"
    );
}

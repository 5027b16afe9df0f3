//! Volume snapshots and clones through the operator commands, on the demo's cluster (three
//! nodes, a file backend; SPEC §2 "Snapshot of a volume: flush its dirty data, then ... a file
//! copy; clone from it"): a snapshot holds what was written before it even though the writes
//! were still only in the cache, a clone reads it back over NVMe/TCP, and later writes to the
//! source do not reach either. The same on Ceph RBD is in `ceph.rs`.

mod common;

use common::cli;

use alcubierre_nvmf::initiator::{HostConfig, HostController};
use bytes::Bytes;

async fn cli_async(api: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let (api, token) = (api.to_string(), token.to_string());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&api, &token, &args)
    })
    .await
    .unwrap()
}

/// No keep-alive timeout: the test's host idles while the commands run.
fn host() -> HostConfig {
    HostConfig {
        kato: std::time::Duration::ZERO,
        ..HostConfig::default()
    }
}

fn pattern(seed: u8) -> Bytes {
    Bytes::from(
        (0..65536u32)
            .map(|i| (i % 251) as u8 ^ seed)
            .collect::<Vec<u8>>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_holds_cached_writes_and_a_clone_serves_them() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (_demo, ready) =
        common::spawn_ready(&["demo".as_ref(), "--dir".as_ref(), dir.path().as_os_str()]);
    let (api, token) = (
        ready["api"].as_str().unwrap().to_string(),
        ready["token"].as_str().unwrap().to_string(),
    );
    let addr = ready["primary_addr"].as_str().unwrap().parse().unwrap();
    let nqn = ready["nqn"].as_str().unwrap();
    let id = ready["volume_id"].as_str().unwrap();
    let backend = dir.path().join("backend");

    let mut c = HostController::connect(addr, nqn, &host(), 1)
        .await
        .unwrap();
    let (_, bs) = c.namespace().await.unwrap();
    // Destage all but stops: a rate of 1 byte/s per node, and a first write whose round puts
    // the primary's destager into debt for an hour.
    let api_addr = api.trim_start_matches("http://").to_string();
    let http = |method: &'static str, path: &'static str, body: String| {
        let (a, t) = (api_addr.clone(), token.clone());
        tokio::task::spawn_blocking(move || common::http(&a, method, path, &t, &body))
    };
    let (status, config) = http("GET", "/api/v1/cluster/config", String::new())
        .await
        .unwrap();
    assert_eq!(status, 200, "{config}");
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    config["destage_rate"] = 3.into();
    let (status, body) = http("PUT", "/api/v1/cluster/config", config.to_string())
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let metric = |text: &str, name: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    common::cluster::eventually(10, "every node destages at 1 byte/s", || async {
        let (_, m) = http("GET", "/metrics", String::new()).await.unwrap();
        (metric(&m, "alcubierre_cache_destage_rate_limit_bytes{") == 3).then_some(())
    })
    .await;
    c.write(0, 0, Bytes::from(vec![9u8; 4096]), bs)
        .await
        .unwrap();
    common::cluster::eventually(10, "the first write destaged", || async {
        let (_, m) = http("GET", "/metrics", String::new()).await.unwrap();
        (metric(&m, "alcubierre_cache_destaged_bytes_total{") >= 4096).then_some(())
    })
    .await;
    let (a, b) = (pattern(0x11), pattern(0x22));
    c.write(0, 1000, a.clone(), bs).await.unwrap();
    c.write(0, 5000, a.clone(), bs).await.unwrap();
    // The writes are only in the cache, so the snapshot must destage them first.
    let image = std::fs::read(backend.join(format!("{id}.img"))).unwrap();
    let off = 5000 * bs as usize;
    assert_ne!(
        &image[off..off + a.len()],
        &a[..],
        "the demo destaged before the snapshot: the test proves nothing"
    );

    let (ok, out, err) = cli_async(
        &api,
        &token,
        &["volume", "snapshot", "create", "demo", "s1"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("s1") && out.contains("ready"), "{out}");
    // The snapshot holds both writes (the file backend keeps it as a copy of the image).
    let snap = std::fs::read(backend.join(format!("{id}@s1.snap"))).unwrap();
    for lba in [1000usize, 5000] {
        let off = lba * bs as usize;
        assert_eq!(&snap[off..off + a.len()], &a[..], "lba {lba}");
    }

    // Later writes go to the volume only.
    c.write(0, 1000, b.clone(), bs).await.unwrap();

    // Bad requests name what is wrong.
    let (ok, _, err) = cli_async(
        &api,
        &token,
        &["volume", "snapshot", "create", "demo", "s1"],
    )
    .await;
    // A duplicate is a conflict, as a duplicate volume is.
    assert!(
        !ok && err.contains("name") && err.contains("HTTP 409"),
        "{err}"
    );
    let (ok, _, err) = cli_async(
        &api,
        &token,
        &["volume", "snapshot", "create", "demo", "bad/name"],
    )
    .await;
    assert!(!ok && err.contains("HTTP 40"), "{err}");
    let (ok, _, err) = cli_async(
        &api,
        &token,
        &["volume", "snapshot", "create", "nosuch", "s1"],
    )
    .await;
    assert!(!ok && err.contains("HTTP 404"), "{err}");
    let (ok, _, err) = cli_async(
        &api,
        &token,
        &[
            "volume", "create", "c0", "--from", "demo@s1", "--size", "1MiB",
        ],
    )
    .await;
    assert!(
        !ok && err.contains("size") && err.contains("HTTP 400"),
        "{err}"
    );
    let (ok, _, err) = cli_async(
        &api,
        &token,
        &["volume", "create", "c0", "--from", "demo@nope"],
    )
    .await;
    assert!(!ok && err.contains("nope"), "{err}");

    // A clone from the snapshot.
    let (ok, out, err) = cli_async(
        &api,
        &token,
        &["--json", "volume", "create", "c1", "--from", "demo@s1"],
    )
    .await;
    assert!(ok, "{err}");
    let clone: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(clone["size"], 1u64 << 30);
    assert_eq!(clone["source"]["snapshot"], "s1");
    assert_eq!(clone["source"]["volume"], id);
    let cnqn = alcubierre_nvmf::volume_nqn(alcubierre_types::VolumeId(
        clone["id"].as_str().unwrap().parse().unwrap(),
    ));
    // Every node exports every replica's path: this address serves the clone too.
    let mut cc = common::cluster::eventually(10, "the clone exported", || async {
        HostController::connect(addr, &cnqn, &host(), 1).await.ok()
    })
    .await;
    assert_eq!(cc.read(0, 1000, a.len() as u32 / bs, bs).await.unwrap(), a);
    assert_eq!(cc.read(0, 5000, a.len() as u32 / bs, bs).await.unwrap(), a);
    assert_eq!(c.read(0, 1000, b.len() as u32 / bs, bs).await.unwrap(), b);
    // The clone is its own volume: its writes do not reach the source.
    cc.write(0, 5000, b.clone(), bs).await.unwrap();
    assert_eq!(c.read(0, 5000, a.len() as u32 / bs, bs).await.unwrap(), a);

    let (ok, out, _) = cli_async(&api, &token, &["volume", "snapshot", "list", "demo"]).await;
    assert!(ok && out.contains("s1") && out.contains("ready"), "{out}");
    // The snapshot goes; the clone does not depend on it.
    let (ok, _, err) = cli_async(
        &api,
        &token,
        &["volume", "snapshot", "delete", "demo", "s1"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(!backend.join(format!("{id}@s1.snap")).exists());
    let (ok, out, _) = cli_async(
        &api,
        &token,
        &["--json", "volume", "snapshot", "list", "demo"],
    )
    .await;
    assert!(ok && out.trim() == "[]", "{out}");
    assert_eq!(cc.read(0, 1000, a.len() as u32 / bs, bs).await.unwrap(), a);
}

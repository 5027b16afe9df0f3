//! Helpers of the multi-process cluster tests: `alcubierre serve` nodes on a real etcd, API
//! calls, waiting for a condition, a path's ANA state.

use std::time::{Duration, Instant};

/// Writes node-i's configuration: its cache under `dir/node-i`, the cluster's one backend
/// under `dir/backend` (shared, as Ceph would be: destage and release assume it), NVMe/TCP on
/// `listen`, `cluster` in its [cluster] section and `tail` after it. Returns the file.
pub fn node_config(
    dir: &std::path::Path,
    i: usize,
    listen: &str,
    cluster: &str,
    tail: &str,
) -> std::path::PathBuf {
    node_config_nvmf(dir, i, listen, "", cluster, tail)
}

/// [`node_config`] with `nvmf` (more keys of the [nvmf] section, such as `advertise`).
pub fn node_config_nvmf(
    dir: &std::path::Path,
    i: usize,
    listen: &str,
    nvmf: &str,
    cluster: &str,
    tail: &str,
) -> std::path::PathBuf {
    let d = dir.join(format!("node-{i}"));
    std::fs::create_dir_all(&d).unwrap();
    let cfg = d.join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[node]
name = "node-{i}"
threads = 1
cntlid_base = {cntlid}
cntlid_count = 1000
ana_group = {i}
[cache]
device = "{d}/cache.img"
create_size = "64MiB"
[backend]
kind = "file"
dir = "{backend}"
[nvmf]
listen = ["{listen}"]
{nvmf}
[cluster]
{cluster}
{tail}
"#,
            d = d.display(),
            cntlid = i * 1000,
            backend = dir.join("backend").display(),
        ),
    )
    .unwrap();
    cfg
}

/// Starts node-i with `extra` lines in its [cluster] section; returns it and its ready line.
pub fn start_node_with(
    dir: &std::path::Path,
    i: usize,
    etcd: &str,
    extra: &str,
) -> (super::Proc, serde_json::Value) {
    let cluster = format!(
        "etcd = [\"{etcd}\"]\nheartbeat_interval_ms = 300\nheartbeat_timeout_ms = 3000\n{extra}"
    );
    let tail = format!(
        "[[volume]]\nname = \"v{i}\"\nsize = \"64MiB\"\nblock_size = 4096\nhosts = [\"*\"]"
    );
    let cfg = node_config(dir, i, "127.0.0.1:0", &cluster, &tail);
    let (p, v) = super::spawn_ready(&["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    assert!(v["listening"].is_array(), "node-{i} did not start: {v}");
    (p, v)
}

/// Activates node-1 ..= node-n through the API at `api` and waits until every one is active.
pub async fn activate_all(api: &str, store: &dyn alcubierre_store::Store, n: usize) {
    let names: Vec<String> = (1..=n).map(|i| format!("node-{i}")).collect();
    json_call(
        api,
        "POST",
        "/api/v1/nodes/activate",
        &serde_json::json!({ "nodes": names }).to_string(),
    )
    .await;
    alcubierre_control::registry::wait_active(store, &names, Duration::from_secs(20))
        .await
        .unwrap();
}

pub fn start_api_nodes(
    dir: &std::path::Path,
    n: usize,
    etcd: &str,
) -> (Vec<super::Proc>, Vec<serde_json::Value>, Vec<String>) {
    let api_extra = "api_listen = \"127.0.0.1:0\"\napi_token = \"t0ken-for-tests\"";
    let (procs, ready): (Vec<_>, Vec<_>) = (1..=n)
        .map(|i| start_node_with(dir, i, etcd, api_extra))
        .unzip();
    let apis = ready
        .iter()
        .map(|r| {
            r["api"]
                .as_str()
                .unwrap()
                .trim_start_matches("http://")
                .to_string()
        })
        .collect();
    (procs, ready, apis)
}

/// Three API nodes on `etcd`, activated, with a 300 ms heartbeat and a 2 s timeout (fast
/// failover), and a 16 MiB volume `name` replicated on all three: the nodes as
/// [`start_api_nodes`] gives them, the store, and the volume's record.
pub async fn three_nodes_and_a_volume(
    dir: &std::path::Path,
    etcd: &alcubierre_store::testing::EtcdServer,
    name: &str,
) -> (
    Vec<super::Proc>,
    Vec<serde_json::Value>,
    Vec<String>,
    alcubierre_store::EtcdStore,
    serde_json::Value,
) {
    let (procs, ready, apis) = start_api_nodes(dir, 3, &etcd.endpoint);
    let store = fast_failover_and_activate(&apis[0], etcd, 3).await;
    let body = format!(r#"{{"name":"{name}","size":16777216,"block_size":4096}}"#);
    let v = json_call(&apis[0], "POST", "/api/v1/volumes", &body).await;
    (procs, ready, apis, store, v)
}

/// Sets a 300 ms heartbeat and a 2 s timeout (fast failover) through the API at `api`, then
/// activates node-1 ..= node-n; the store.
pub async fn fast_failover_and_activate(
    api: &str,
    etcd: &alcubierre_store::testing::EtcdServer,
    n: usize,
) -> alcubierre_store::EtcdStore {
    json_call(
        api,
        "PUT",
        "/api/v1/cluster/config",
        r#"{"heartbeat_interval_ms":300,"heartbeat_timeout_ms":2000}"#,
    )
    .await;
    let store = etcd.connect().await;
    activate_all(api, &store, n).await;
    store
}

/// An API call with the test token, off the async workers.
pub async fn call(api: &str, method: &'static str, path: &str, body: &str) -> (u16, String) {
    let (api, path, body) = (api.to_string(), path.to_string(), body.to_string());
    tokio::task::spawn_blocking(move || super::http(&api, method, &path, "t0ken-for-tests", &body))
        .await
        .unwrap()
}

pub async fn json_call(
    api: &str,
    method: &'static str,
    path: &str,
    body: &str,
) -> serde_json::Value {
    let (st, b) = call(api, method, path, body).await;
    assert!((200..300).contains(&st), "{method} {path}: {st} {b}");
    serde_json::from_str(&b).unwrap()
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t0 = Instant::now();
    loop {
        if let Some(x) = f().await {
            return x;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ANA state a path reports for its group (ANA log page).
pub async fn ana_state(c: &mut alcubierre_nvmf::initiator::HostController) -> u8 {
    use alcubierre_nvmf::initiator::cmd;
    let log = c
        .admin
        .execute(cmd::get_log_page(0x0c, 0, 4096, 0), None, 4096)
        .await
        .unwrap()
        .ok()
        .unwrap();
    log.data[32]
}

pub fn node_index(name: &str) -> usize {
    name.trim_start_matches("node-").parse::<usize>().unwrap() - 1
}

/// Node `name`'s first NVMe/TCP portal, from the ready lines of node-1 ..= node-n.
pub fn portal(ready: &[serde_json::Value], name: &str) -> std::net::SocketAddr {
    ready[node_index(name)]["listening"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A host connection to volume `v` (its API record) through node `name`'s portal, once the
/// node exports it (within `secs`).
pub async fn connect_through(
    ready: &[serde_json::Value],
    v: &serde_json::Value,
    name: &str,
    secs: u64,
) -> alcubierre_nvmf::initiator::HostController {
    let id: uuid::Uuid = v["id"].as_str().unwrap().parse().unwrap();
    let nqn = alcubierre_nvmf::volume_nqn(alcubierre_types::VolumeId(id));
    let addr = portal(ready, name);
    eventually(secs, "the volume exported", || async {
        alcubierre_nvmf::initiator::HostController::connect(addr, &nqn, &Default::default(), 1)
            .await
            .ok()
    })
    .await
}

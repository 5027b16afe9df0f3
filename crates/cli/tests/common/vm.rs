//! Multipath tests in the QEMU test VM: three `alcubierre serve` nodes on a real etcd, each
//! reachable by the guest on 10.0.2.2 (the host's loopback), and a guest script run beside the
//! host's half of the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use alcubierre_store::testing::EtcdServer;

use super::cluster::{fast_failover_and_activate, node_config_nvmf};
use super::Proc;

/// A running three-node cluster.
pub struct Cluster {
    /// The nodes, `None` once killed.
    pub procs: Vec<Option<Proc>>,
    /// Each node's API address (`host:port`).
    pub apis: Vec<String>,
    /// Shared with the guest (mounted on /host there).
    pub share: PathBuf,
    _dir: tempfile::TempDir,
    /// The cluster's store.
    pub store: alcubierre_store::EtcdStore,
    /// Its etcd.
    pub etcd: EtcdServer,
}

/// Starts node-1..3 with NVMe/TCP on 127.0.0.1:`nvme_port(i)` plus the [nvmf] keys `nvmf(i)`
/// and the sections `tail(i)`, fast failover, all three activated.
pub async fn three_nodes(
    nvme_port: impl Fn(usize) -> u16,
    nvmf: impl Fn(usize) -> String,
    tail: impl Fn(usize) -> String,
) -> Cluster {
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut procs = Vec::new();
    let mut apis = Vec::new();
    for i in 1..=3usize {
        let cluster = format!(
            "etcd = [\"{}\"]\nheartbeat_interval_ms = 300\nheartbeat_timeout_ms = 3000\n\
             api_listen = \"127.0.0.1:0\"\napi_token = \"t0ken-for-tests\"",
            etcd.endpoint
        );
        let listen = format!("127.0.0.1:{}", nvme_port(i));
        let cfg = node_config_nvmf(dir.path(), i, &listen, &nvmf(i), &cluster, &tail(i));
        let (p, ready) =
            super::spawn_ready(&["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
        assert!(
            ready["listening"].is_array(),
            "node-{i} did not start: {ready}"
        );
        let api = ready["api"].as_str().unwrap().trim_start_matches("http://");
        apis.push(api.to_string());
        procs.push(Some(p));
    }
    let store = fast_failover_and_activate(&apis[0], &etcd, 3).await;
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    Cluster {
        procs,
        apis,
        share,
        _dir: dir,
        store,
        etcd,
    }
}

impl Cluster {
    /// Writes the guest's `params.sh`: the first node's API as the guest reaches it (`API`)
    /// and the token (`TOKEN`).
    pub fn write_guest_params(&self) {
        let port = self.apis[0].rsplit(':').next().unwrap();
        std::fs::write(
            self.share.join("params.sh"),
            format!("API=http://10.0.2.2:{port}\nTOKEN=t0ken-for-tests\n"),
        )
        .unwrap();
    }
}

/// Boots the VM on `share` running `testing/vm/<script>` (copied there as guest.sh, with the
/// shell functions it sources) for at most `secs`; joins to (exit code, console).
pub fn guest(share: &Path, script: &str, secs: u32) -> JoinHandle<(i32, String)> {
    let here = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testing/vm");
    std::fs::copy(format!("{here}/{script}"), share.join("guest.sh")).unwrap();
    let lib = "path-loss-writes.sh";
    std::fs::copy(format!("{here}/{lib}"), share.join(lib)).unwrap();
    let share = share.to_path_buf();
    std::thread::spawn(move || {
        let out = Command::new(format!("{here}/run.sh"))
            .arg(&share)
            .arg("guest.sh")
            .arg(secs.to_string())
            .output()
            .expect("running testing/vm/run.sh");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
}

/// Waits up to `secs` for the guest to create `p`; false when it does not (or the VM ended).
pub fn wait_file(p: &Path, secs: u64, vm: &JoinHandle<(i32, String)>) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if p.exists() {
            return true;
        }
        if vm.is_finished() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

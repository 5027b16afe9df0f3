//! Nodes joining a cluster on a real etcd: three `alcubierre serve` processes register and
//! heartbeat; one is killed with SIGKILL and its service state flips to unavailable within the
//! configured heartbeat timeout, while the others stay available; activation then refuses it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alcubierre_control::activation::{ActivationError, Licence};
use alcubierre_control::model::Service;
use alcubierre_control::registry::{activate, service_states, RegistryError};
use alcubierre_store::testing::EtcdServer;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node(dir: &std::path::Path, i: usize, etcd: &str) -> Proc {
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
[cache]
device = "{d}/cache.img"
create_size = "64MiB"
[backend]
kind = "file"
dir = "{d}/backend"
[nvmf]
listen = ["127.0.0.1:0"]
[cluster]
etcd = ["{etcd}"]
heartbeat_interval_ms = 300
heartbeat_timeout_ms = 2000
[[volume]]
name = "v{i}"
size = "64MiB"
hosts = ["*"]
"#,
            d = d.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_alcubierre"))
        .args(["--json", "serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.contains("listening"),
        "node-{i} did not start: {line:?}"
    );
    Proc(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_becomes_unavailable_within_the_timeout() {
    let etcd = EtcdServer::start().unwrap();
    let store = etcd.connect().await;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut nodes: Vec<Proc> = (1..=3)
        .map(|i| start_node(dir.path(), i, &etcd.endpoint))
        .collect();
    let st = service_states(&store).await.unwrap();
    assert_eq!(st.len(), 3, "{st:?}");
    assert!(st.values().all(|s| *s == Service::Available), "{st:?}");

    let killed = Instant::now();
    nodes[1].0.kill().unwrap();
    nodes[1].0.wait().unwrap();
    loop {
        let st = service_states(&store).await.unwrap();
        if st["node-2"] == Service::Unavailable {
            assert_eq!(st["node-1"], Service::Available);
            assert_eq!(st["node-3"], Service::Available);
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(6),
            "node-2 still available: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed.elapsed();
    eprintln!("node-2 unavailable {took:?} after SIGKILL (timeout 2 s)");
    assert!(took >= Duration::from_millis(1000), "too early: {took:?}");

    let names: Vec<String> = (1..=3).map(|i| format!("node-{i}")).collect();
    let e = activate(&store, &names, &Licence::default(), 0)
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::Activation(ActivationError::Unavailable { ref node }) if node == "node-2"),
        "{e}"
    );
}

//! `alcubierre serve` as an operator runs it: a config file, a process, hosts over NVMe/TCP.
//! The process is killed with SIGKILL mid-life and restarted: every acknowledged write must
//! read back (the cache journal replays; NVMe/TCP acknowledges only durable writes).

use std::net::SocketAddr;
use std::path::Path;
mod common;

use std::process::Command;

use alcubierre_nvmf::initiator::{cmd, HostConfig, HostController};
use bytes::Bytes;

struct Server {
    _proc: common::Proc,
    addr: SocketAddr,
    nqn: String,
}

fn config(dir: &Path, port: u16) -> String {
    format!(
        r#"
[node]
name = "test-node"
threads = 2

[cache]
device = "{dir}/cache.img"
create_size = "64MiB"
destage_rate = "1MB"

[backend]
kind = "file"
dir = "{dir}/backend"

[nvmf]
listen = ["127.0.0.1:{port}"]

[[volume]]
name = "vol1"
size = "256MiB"
block_size = 4096
hosts = ["*"]
"#,
        dir = dir.display()
    )
}

fn start(cfg: &Path) -> Server {
    let (p, v) = common::spawn_ready(&["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    Server {
        _proc: p,
        addr: v["listening"][0].as_str().unwrap().parse().unwrap(),
        nqn: v["volumes"][0]["nqn"].as_str().unwrap().to_string(),
    }
}

fn block(i: u64) -> Bytes {
    Bytes::from(
        (0..4096u64)
            .map(|j| (i.wrapping_mul(131) ^ j) as u8)
            .collect::<Vec<u8>>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = dir.path().join("node.toml");
    std::fs::write(&cfg, config(dir.path(), port)).unwrap();
    let s = start(&cfg);

    let disc = HostController::discover(s.addr, &HostConfig::default())
        .await
        .unwrap();
    assert_eq!(disc.len(), 1);
    assert_eq!(disc[0].subnqn, s.nqn);
    assert_eq!(disc[0].traddr, "127.0.0.1");

    let mut c = HostController::connect(s.addr, &s.nqn, &HostConfig::default(), 1)
        .await
        .unwrap();
    let (nsze, bs) = c.namespace().await.unwrap();
    assert_eq!((nsze, bs), (65536, 4096));
    let q = &mut c.io[0];
    for i in 0..512u64 {
        q.submit(cmd::write(i * 7 % 65536, 1), Some(block(i)), 0);
        if q.outstanding() >= 16 {
            let (_, comp) = q.next().await.unwrap();
            comp.ok().unwrap();
        }
    }
    while q.outstanding() > 0 {
        q.next().await.unwrap().1.ok().unwrap();
    }
    drop(c);
    drop(s); // SIGKILL: destage is held at 1 MB/s, so most data is only in the journal.

    let s = start(&cfg);
    let mut c = HostController::connect(s.addr, &s.nqn, &HostConfig::default(), 1)
        .await
        .unwrap();
    for i in 0..512u64 {
        let got = c.read(0, i * 7 % 65536, 1, 4096).await.unwrap();
        assert_eq!(got, block(i), "block of write {i}");
    }
    // Unwritten blocks read as zeroes.
    assert!(c.read(0, 1, 1, 4096).await.unwrap().iter().all(|b| *b == 0));
}

#[test]
fn bad_config_names_the_field() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        config(dir.path(), 1).replace("size = \"256MiB\"", "size = \"256XB\""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_alcubierre"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("size") && err.contains("XB"), "{err}");
}

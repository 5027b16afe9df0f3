//! `alcubierre serve` destaging into Ceph RBD (a throwaway monitor and memstore OSD started by
//! the test): writes through NVMe/TCP reach the image (checked with `rbd export`); while Ceph
//! is frozen, writes keep being acknowledged from the cache and reach the image after it
//! thaws; a SIGKILL mid-destage loses nothing: image plus cache hold every acknowledged write.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use alcubierre_nvmf::initiator::{cmd, HostConfig, HostController};
use alcubierre_rbd::testing::CephCluster;
use bytes::Bytes;

const BLOCKS: u64 = 65536; // a 256 MiB volume of 4 KiB blocks

struct Server {
    _proc: common::Proc,
    addr: SocketAddr,
    nqn: String,
    id: String,
}

fn config(dir: &Path, port: u16, ceph: &CephCluster, rate: &str) -> String {
    format!(
        r#"
[node]
name = "ceph-node"
threads = 2

[cache]
device = "{dir}/cache.img"
create_size = "64MiB"
destage_rate = "{rate}"

[backend]
kind = "rbd"
conf = "{conf}"
pool = "{pool}"
op_timeout_s = 3

[nvmf]
listen = ["127.0.0.1:{port}"]

[[volume]]
name = "vol1"
size = "256MiB"
block_size = 4096
hosts = ["*"]
"#,
        dir = dir.display(),
        conf = ceph.conf.display(),
        pool = ceph.pool,
    )
}

fn start(cfg: &Path) -> Server {
    let (p, v) = common::spawn_ready(&["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    Server {
        _proc: p,
        addr: v["listening"][0].as_str().unwrap().parse().unwrap(),
        nqn: v["volumes"][0]["nqn"].as_str().unwrap().to_string(),
        id: v["volumes"][0]["id"].as_str().unwrap().to_string(),
    }
}

fn block(i: u64) -> Bytes {
    Bytes::from(
        (0..4096u64)
            .map(|j| (i.wrapping_mul(131) ^ j ^ (i >> 3)) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// Where write `i` goes.
fn lba(i: u64) -> u64 {
    i * 7919 % BLOCKS
}

/// Writes `range` at QD16; every write is acknowledged.
async fn write(s: &Server, range: std::ops::Range<u64>) {
    let mut c = HostController::connect(s.addr, &s.nqn, &HostConfig::default(), 1)
        .await
        .unwrap();
    let q = &mut c.io[0];
    for i in range {
        q.submit(cmd::write(lba(i), 1), Some(block(i)), 0);
        if q.outstanding() >= 16 {
            q.next().await.unwrap().1.ok().unwrap();
        }
    }
    while q.outstanding() > 0 {
        q.next().await.unwrap().1.ok().unwrap();
    }
}

/// Reads every block of writes `range` through the node.
async fn verify_node(s: &Server, range: std::ops::Range<u64>) {
    let mut c = HostController::connect(s.addr, &s.nqn, &HostConfig::default(), 1)
        .await
        .unwrap();
    for i in range {
        assert_eq!(
            c.read(0, lba(i), 1, 4096).await.unwrap(),
            block(i),
            "write {i}"
        );
    }
}

/// Waits until `rbd export` of the volume's image holds every write of `range`.
fn image_holds(ceph: &CephCluster, id: &str, range: std::ops::Range<u64>, within: Duration) {
    let out = std::env::temp_dir().join(format!("alcubierre-export-{id}"));
    let start = Instant::now();
    loop {
        let _ = std::fs::remove_file(&out);
        ceph.rbd(&["export", &format!("alcubierre-{id}"), out.to_str().unwrap()])
            .unwrap();
        let img = std::fs::read(&out).unwrap();
        let missing = range
            .clone()
            .filter(|i| {
                let o = (lba(*i) * 4096) as usize;
                img[o..o + 4096] != block(*i)[..]
            })
            .count();
        if missing == 0 {
            let _ = std::fs::remove_file(&out);
            eprintln!(
                "the image holds writes {range:?} after {:?}",
                start.elapsed()
            );
            return;
        }
        assert!(
            start.elapsed() < within,
            "{missing} writes of {range:?} are not in the image after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_destages_into_rbd_through_outages_and_crashes() {
    let ceph = CephCluster::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = dir.path().join("node.toml");
    std::fs::write(&cfg, config(dir.path(), port, &ceph, "100MB")).unwrap();
    let s = start(&cfg);

    // Writes reach the image.
    write(&s, 0..512).await;
    image_holds(&ceph, &s.id, 0..512, Duration::from_secs(60));

    // Ceph frozen: writes are still acknowledged (the cache has room), reads are served, and
    // everything reaches the image once Ceph is back.
    ceph.freeze_osd().unwrap();
    let t = Instant::now();
    write(&s, 512..1024).await;
    eprintln!(
        "512 writes acknowledged with Ceph frozen in {:?}",
        t.elapsed()
    );
    verify_node(&s, 0..1024).await;
    // A block that is not in the cache must come from Ceph: the read fails, within the
    // operation timeout (3 s), with a retryable status, instead of hanging.
    let mut c = HostController::connect(s.addr, &s.nqn, &HostConfig::default(), 1)
        .await
        .unwrap();
    let t = Instant::now();
    let unwritten = (0..BLOCKS)
        .find(|b| (0..2048).all(|i| lba(i) != *b))
        .unwrap();
    match c.read(0, unwritten, 1, 4096).await {
        Err(alcubierre_nvmf::initiator::InitiatorError::Status { status, .. }) => {
            assert_eq!(status, alcubierre_nvmf::status::Status::NS_NOT_READY);
        }
        other => panic!("an uncached read with Ceph frozen: {other:?}"),
    }
    let failed_after = t.elapsed();
    eprintln!("an uncached read failed {failed_after:?} after it was sent");
    assert!(failed_after < Duration::from_secs(10), "{failed_after:?}");
    drop(c);
    ceph.thaw_osd().unwrap();
    image_holds(&ceph, &s.id, 0..1024, Duration::from_secs(90));

    // SIGKILL mid-destage (1 MB/s: most of 4 MiB is still only in the journal), restart:
    // image plus cache hold every acknowledged write, and the image gets them all.
    drop(s);
    std::fs::write(&cfg, config(dir.path(), port, &ceph, "1MB")).unwrap();
    let s = start(&cfg);
    write(&s, 1024..2048).await;
    drop(s);
    std::fs::write(&cfg, config(dir.path(), port, &ceph, "100MB")).unwrap();
    let s = start(&cfg);
    verify_node(&s, 0..2048).await;
    image_holds(&ceph, &s.id, 0..2048, Duration::from_secs(60));
}

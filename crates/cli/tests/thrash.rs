//! Kill -9 thrash: four `alcubierre serve` processes on a real etcd serve a replicated volume
//! while a thrasher SIGKILLs a random node, restarts it, waits for the volume to be whole again
//! (three in-sync replicas) and repeats, `THRASH_KILLS` times (default 50). Meanwhile a host
//! writes and reads through NVMe/TCP with paths to every node that exports the volume (our own
//! initiator, QD1), retrying a failed I/O on another path as a multipath host does. Every read
//! must return the newest acknowledged value of its block or a value written after it whose
//! acknowledgement was lost; at the end every block is read back the same way.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alcubierre_nvmf::initiator::{cmd, HostController};
use alcubierre_store::testing::EtcdServer;
use alcubierre_store::Store;
use bytes::Bytes;
use common::cluster::*;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

const BLOCKS: u64 = 512;
const BS: u32 = 4096;
/// Longer than a forwarded request's own timeout: an I/O that takes this long counts as a
/// broken path.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

fn block(b: u64, value: u64) -> Bytes {
    let mut d = vec![(value % 251) as u8; BS as usize];
    d[..8].copy_from_slice(&b.to_le_bytes());
    d[8..16].copy_from_slice(&value.to_le_bytes());
    Bytes::from(d)
}

/// What a block may read as: its newest acknowledged value (0: never written) and the values
/// written after it whose outcome is unknown.
#[derive(Default, Clone)]
struct Expect {
    acked: u64,
    maybe: Vec<u64>,
}

/// The value a block's data holds, checked against its header.
fn value_of(b: u64, d: &[u8]) -> Result<u64, String> {
    if d.iter().all(|&x| x == 0) {
        return Ok(0);
    }
    let hb = u64::from_le_bytes(d[..8].try_into().unwrap());
    let v = u64::from_le_bytes(d[8..16].try_into().unwrap());
    if hb != b || d[16..] != block(b, v)[16..] {
        return Err(format!(
            "block {b}: torn or misplaced data (header {hb}, value {v})"
        ));
    }
    Ok(v)
}

struct Host {
    portals: Arc<Mutex<BTreeMap<String, SocketAddr>>>,
    nqn: String,
    paths: BTreeMap<String, (HostController, Instant)>,
    last_connect: Instant,
}

impl Host {
    /// Connects paths to nodes it has none to (at most once a second).
    async fn connect_missing(&mut self) {
        if self.last_connect.elapsed() < Duration::from_secs(1) && !self.paths.is_empty() {
            return;
        }
        self.last_connect = Instant::now();
        let portals = self.portals.lock().clone();
        for (node, addr) in portals {
            if self.paths.contains_key(&node) {
                continue;
            }
            let c = tokio::time::timeout(
                Duration::from_secs(2),
                HostController::connect(addr, &self.nqn, &Default::default(), 1),
            )
            .await;
            if let Ok(Ok(c)) = c {
                self.paths.insert(node, (c, Instant::now()));
            }
        }
    }

    /// Runs `op` on one path after another until one succeeds; a path whose connection fails
    /// is dropped. `None` when every path failed this round.
    async fn on_any_path<T>(
        &mut self,
        mut op: impl FnMut(&mut HostController) -> futures::future::BoxFuture<'_, Result<T, String>>,
    ) -> Option<T> {
        self.connect_missing().await;
        let nodes: Vec<String> = self.paths.keys().cloned().collect();
        for node in nodes {
            let (c, alive) = self.paths.get_mut(&node).expect("listed");
            if alive.elapsed() > Duration::from_secs(1) {
                // Keep-alive, as a host does.
                let ka = c.admin.execute(cmd::new(0x18, 0), None, 0);
                if !matches!(tokio::time::timeout(IO_TIMEOUT, ka).await, Ok(Ok(_))) {
                    self.paths.remove(&node);
                    continue;
                }
                *alive = Instant::now();
            }
            match tokio::time::timeout(IO_TIMEOUT, op(c)).await {
                Ok(Ok(x)) => return Some(x),
                // A path status (e.g. inaccessible while there is no primary): try another.
                Ok(Err(e)) if e.starts_with("command failed") => continue,
                _ => {
                    self.paths.remove(&node);
                }
            }
        }
        None
    }
}

#[derive(Default)]
struct Tally {
    acked: u64,
    reads: u64,
    failed_rounds: u64,
    longest_stall: Duration,
    last_ack: Option<Instant>,
}

/// Writes and reads at QD1 until `stop`, checking every read; returns the expectations.
async fn workload(
    mut host: Host,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) -> (Host, HashMap<u64, Expect>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut expect: HashMap<u64, Expect> = HashMap::new();
    let mut next_value = 1u64;
    let mut since = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let b = rng.gen_range(0..BLOCKS);
        if rng.gen_range(0..4) == 0 {
            let r = host
                .on_any_path(|c| {
                    Box::pin(async move { c.read(0, b, 1, BS).await.map_err(|e| e.to_string()) })
                })
                .await;
            if let Some(d) = r {
                let v = value_of(b, &d).unwrap();
                let e = expect.get(&b).cloned().unwrap_or_default();
                assert!(
                    v == e.acked || e.maybe.contains(&v),
                    "block {b} read {v}, but its newest acknowledged value is {} (unknown: {:?})",
                    e.acked,
                    e.maybe
                );
                tally.lock().reads += 1;
            }
            continue;
        }
        let value = next_value;
        next_value += 1;
        let data = block(b, value);
        expect.entry(b).or_default().maybe.push(value);
        loop {
            let d = data.clone();
            let ok = host
                .on_any_path(|c| {
                    let d = d.clone();
                    Box::pin(async move { c.write(0, b, d, BS).await.map_err(|e| e.to_string()) })
                })
                .await;
            if ok.is_some() {
                let e = expect.get_mut(&b).expect("inserted");
                e.acked = value;
                e.maybe.clear();
                let mut t = tally.lock();
                t.acked += 1;
                t.longest_stall = t.longest_stall.max(since.elapsed());
                t.last_ack = Some(Instant::now());
                since = Instant::now();
                break;
            }
            tally.lock().failed_rounds += 1;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    (host, expect)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_random_nodes() {
    let kills: usize = std::env::var("THRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("THRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut procs, ready, apis) = start_api_nodes(dir.path(), 4, &etcd.endpoint);
    // Each node's API, by node; `api()` asks a node other than the one restarted last (which
    // may still be starting).
    let apis = Arc::new(Mutex::new(apis));
    let restarted = Arc::new(std::sync::atomic::AtomicUsize::new(3));
    let api = || apis.lock()[(restarted.load(Ordering::Relaxed) + 1) % 4].clone();
    json_call(
        &api(),
        "PUT",
        "/api/v1/cluster/config",
        r#"{"heartbeat_interval_ms":300,"heartbeat_timeout_ms":2000}"#,
    )
    .await;
    let store = etcd.connect().await;
    activate_all(&api(), &store, 4).await;
    let v = json_call(
        &api(),
        "POST",
        "/api/v1/volumes",
        &format!(
            r#"{{"name":"thrash","size":{},"block_size":{BS}}}"#,
            BLOCKS * u64::from(BS)
        ),
    )
    .await;
    let id = v["id"].as_str().unwrap().to_string();
    let nqn = alcubierre_nvmf::volume_nqn(alcubierre_types::VolumeId(id.parse().unwrap()));
    let portal = |r: &serde_json::Value| -> SocketAddr {
        r["listening"][0].as_str().unwrap().parse().unwrap()
    };
    let portals: BTreeMap<String, SocketAddr> = ready
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("node-{}", i + 1), portal(r)))
        .collect();
    let portals = Arc::new(Mutex::new(portals));
    let host = Host {
        portals: portals.clone(),
        nqn,
        paths: BTreeMap::new(),
        last_connect: Instant::now() - Duration::from_secs(5),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let io = tokio::spawn(workload(host, stop.clone(), tally.clone()));

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let t0 = Instant::now();
    let mut whole_waits = Vec::new();
    let mut acked_at_restart = 0;
    let mut primary_kills = 0;
    for k in 0..kills {
        // Before each kill the volume is whole again: the host's writes go on, three replicas
        // are in sync and every node heartbeats.
        let waited = Instant::now();
        let key = format!("volumes/{id}");
        let primary = loop {
            let kv = store.get(&key).await.unwrap().unwrap();
            let v: alcubierre_control::volumes::Volume = serde_json::from_slice(&kv.value).unwrap();
            let states = alcubierre_control::registry::service_states(&store)
                .await
                .unwrap();
            let up = states
                .values()
                .all(|s| *s == alcubierre_control::model::Service::Available);
            let acked = tally.lock().acked;
            if acked >= acked_at_restart + 5 && v.in_sync.len() == 3 && up {
                break v.primary.clone();
            }
            assert!(
                waited.elapsed() < Duration::from_secs(90),
                "the volume is not whole 90 s after kill {k}: {} writes acknowledged since the \
                 restart; volume {v:?}; nodes {states:?}",
                acked - acked_at_restart
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        whole_waits.push(waited.elapsed());
        let victim = rng.gen_range(0..4);
        if primary == format!("node-{}", victim + 1) {
            primary_kills += 1;
        }
        procs[victim].0.kill().unwrap();
        procs[victim].0.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..2000))).await;
        let (p, r) = start_node_with(
            dir.path(),
            victim + 1,
            &etcd.endpoint,
            "api_listen = \"127.0.0.1:0\"\napi_token = \"t0ken-for-tests\"",
        );
        procs[victim] = p;
        acked_at_restart = tally.lock().acked;
        portals
            .lock()
            .insert(format!("node-{}", victim + 1), portal(&r));
        apis.lock()[victim] = r["api"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://")
            .to_string();
        restarted.store(victim, Ordering::Relaxed);
        eprintln!(
            "kill {}: node-{} at {:?}; {} writes acknowledged so far",
            k + 1,
            victim + 1,
            t0.elapsed(),
            tally.lock().acked
        );
    }
    // Writes go on after the last kill.
    let before = tally.lock().acked;
    eventually(60, "writes after the last kill", || async {
        (tally.lock().acked > before + 20).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (mut host, expect) = io.await.unwrap();
    // Every block reads as its newest acknowledged value (or a later unacknowledged one).
    let mut verified = 0;
    for b in 0..BLOCKS {
        let d = loop {
            let r = host
                .on_any_path(|c| {
                    Box::pin(async move { c.read(0, b, 1, BS).await.map_err(|e| e.to_string()) })
                })
                .await;
            if let Some(d) = r {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let v = value_of(b, &d).unwrap();
        let e = expect.get(&b).cloned().unwrap_or_default();
        assert!(
            v == e.acked || e.maybe.contains(&v),
            "final read of block {b}: {v}, newest acknowledged {} (unknown: {:?})",
            e.acked,
            e.maybe
        );
        verified += 1;
    }
    // What the primaries did to bring followers back (since each node's last start): printed
    // with the figures.
    let mut events = BTreeMap::<String, u64>::new();
    let every = apis.lock().clone();
    for a in every {
        if std::net::TcpStream::connect(&a).is_err() {
            continue; // a node still starting
        }
        let (_, m) = call(&a, "GET", "/metrics", "").await;
        for l in m
            .lines()
            .filter(|l| l.starts_with("alcubierre_replica_") && l.contains("_total{"))
        {
            let name = l.split('{').next().unwrap_or("").to_string();
            let v: u64 = l
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            *events.entry(name).or_default() += v;
        }
    }
    eprintln!("follower events since each node's last start: {events:?}");
    let t = tally.lock();
    whole_waits.sort();
    eprintln!(
        "thrash: {kills} kills ({primary_kills} of the primary) in {:?}; {} writes acknowledged, {} reads checked during the run, \
         {verified} blocks verified at the end; {} rounds with every path failing; longest \
         wait for an acknowledgement {:?}; volume whole again after a kill: median {:?}, max {:?}",
        t0.elapsed(),
        t.acked,
        t.reads,
        t.failed_rounds,
        t.longest_stall,
        whole_waits.get(whole_waits.len() / 2),
        whole_waits.last()
    );
    assert!(
        t.acked > kills as u64 * 10,
        "too little progress: {}",
        t.acked
    );
}

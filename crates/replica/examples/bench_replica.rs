//! Replication benchmark: 4 KiB writes at QD1 and QD32 through a replicated volume (3 replicas:
//! three cache engines on O_DIRECT files, followers over loopback TCP, all in this process)
//! against the same writes on one engine without replication. Reports IOPS, latency
//! percentiles and CPU time per write (this process: primary, followers and the client). Then
//! a rebuild: one replica comes back empty while 192 MiB of writes are dirty (destage paused)
//! and is rebuilt from the primary; reports the time and MB/s.
//!
//! `cargo run --release -p alcubierre-replica --example bench_replica [seconds] [media]`
//! (default 5 s per run, 0 for the rebuild alone). Media: a directory DIR for 1 GiB journal
//! files (default /var/tmp); `mem`: memory media, no device syncs, which isolates the
//! replication path's own cost; `/dev/A,/dev/B,/dev/C`: three block devices, one per node,
//! e.g. from `scripts/zram-devices up 3`, so that each node commits to a device of its own,
//! as on a real cluster, instead of three journals sharing one disk (the devices are
//! formatted whole: their contents are lost). `REBUILD_MIB` sets the dirty data of the rebuild
//! (default 192: within the primary's 256 MiB in-memory window; more is replayed from its
//! journal, and the cache devices grow to hold it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alcubierre_backend::{Backend, MemBackend};
use alcubierre_block::BlockDevice;
use alcubierre_cache::{CacheService, Engine, FormatOptions, RateLimiter, ServiceConfig};
use alcubierre_io::{DirectFile, Medium};
use alcubierre_replica::node::{FollowerVolume, ReplicaServer};
use alcubierre_replica::primary::Config;
use alcubierre_replica::volume::{Ask, Control, Lease, PrimaryVolume};
use alcubierre_replica::{Membership, NodeId};
use alcubierre_types::{BlockSize, ByteSize, Lba, VolumeGeometry, VolumeId};
use alcubierre_types::{ByteOffset, Epoch};
use bytes::Bytes;

// The allocator the `alcubierre` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The leader's part: no requests are expected, except the primary asking to add the rebuilt
/// replica at the end.
struct NoControl;
impl Control for NoControl {
    fn ask(&self, _: VolumeId, ask: Ask) {
        if !matches!(ask, Ask::Add { .. }) {
            eprintln!("unexpected request during the benchmark: {ask:?}");
        }
    }
}

/// Bytes this process read from and wrote to block devices so far.
fn device_io() -> (u64, u64) {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("read_bytes:"), field("write_bytes:"))
}

fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command's `)`.
    let at = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = at(11) + at(12);
    Duration::from_millis(ticks * 10)
}

/// CPU time of this process's threads so far, by what they do: the engines' journal writers,
/// their destagers, and the rest (the runtime's workers: the client, the replication state
/// machines and the network).
#[derive(Clone, Copy, Default)]
struct Split {
    writers: Duration,
    destage: Duration,
    rest: Duration,
}

fn split() -> Split {
    let mut s = Split::default();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return s;
    };
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let Some((head, after)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let f: Vec<&str> = after.split_whitespace().collect();
        let at = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        let d = Duration::from_millis((at(11) + at(12)) * 10);
        if comm.starts_with("cache-writer") {
            s.writers += d;
        } else if comm.starts_with("cache-destage") {
            s.destage += d;
        } else {
            s.rest += d;
        }
    }
    s
}

async fn run(dev: Arc<dyn BlockDevice>, qd: usize, secs: u64) -> Run {
    let data = Bytes::from(vec![0x5a; 4096]);
    let stop = Instant::now() + Duration::from_secs(secs);
    let c0 = cpu();
    let s0 = split();
    let mut tasks = Vec::new();
    for q in 0..qd {
        let dev = dev.clone();
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut lba = q as u64 * 4096;
            while Instant::now() < stop {
                let t = Instant::now();
                dev.write(Lba(lba % (1 << 17)), data.clone()).await.unwrap();
                lat.push(t.elapsed());
                lba += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let cpu = cpu() - c0;
    let s1 = split();
    all.sort();
    Run {
        n: all.len() as u64,
        lat: all,
        cpu,
        split: Split {
            writers: s1.writers.saturating_sub(s0.writers),
            destage: s1.destage.saturating_sub(s0.destage),
            rest: s1.rest.saturating_sub(s0.rest),
        },
    }
}

/// One run's writes, their latencies (sorted), and the CPU time they took.
struct Run {
    n: u64,
    lat: Vec<Duration>,
    cpu: Duration,
    split: Split,
}

fn report(name: &str, qd: usize, secs: u64, r: Run) {
    let p = |q: f64| r.lat[((r.lat.len() as f64 * q) as usize).min(r.lat.len() - 1)];
    let per = |d: Duration| d.as_secs_f64() * 1e6 / r.n as f64;
    println!(
        "{name:<22} QD{qd:<3} {:>8.0} IOPS  p50 {:>7.1} us  p99 {:>7.1} us  CPU {:>6.1} us/write \
         (journal writers {:.1}, destage {:.1}, runtime: client, replication, network {:.1})",
        r.n as f64 / secs as f64,
        p(0.5).as_secs_f64() * 1e6,
        p(0.99).as_secs_f64() * 1e6,
        per(r.cpu),
        per(r.split.writers),
        per(r.split.destage),
        per(r.split.rest),
    );
}

/// Waits (up to 2 minutes) until every engine has destaged everything, so that no run pays for
/// destaging the one before.
async fn settle(engines: &[Arc<Engine>]) {
    let until = Instant::now() + Duration::from_secs(120);
    while engines.iter().any(|e| e.stats().dirty_bytes > 0) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    if args.get(2).is_some_and(|a| a.is_empty()) {
        eprintln!("bench_replica: the media argument is empty (a directory, `mem` or devices)");
        std::process::exit(2);
    }
    let media = match args.get(2).map(String::as_str) {
        Some("mem") => Media::Memory,
        Some(a) if a.starts_with("/dev/") => Media::Devices(a.split(',').map(Into::into).collect()),
        a => {
            let dir = std::path::PathBuf::from(a.unwrap_or("/var/tmp"))
                .join(format!("alcubierre-bench-replica-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Media::Files(dir)
        }
    };
    let backend = Arc::new(MemBackend::new());
    let vol = VolumeId(uuid::Uuid::new_v4());
    let dirty_mib: u64 = std::env::var("REBUILD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(192);
    // The journal holds the benchmark's writes and the rebuild's dirty data.
    let cache: u64 = (1u64 << 30).max((2 * dirty_mib + 512) << 20);
    if let Media::Devices(devices) = &media {
        if let Err(e) = check_devices(devices, cache) {
            eprintln!("bench_replica: {e}");
            std::process::exit(2);
        }
    }
    let vol_mib = 512u64.max(dirty_mib);
    let g = VolumeGeometry::new(BlockSize::B4096, ByteSize::mib(vol_mib)).unwrap();
    backend.create(vol, ByteSize::mib(vol_mib)).unwrap();
    // The 1-replica runs write volumes of their own, one per engine.
    let solos: Vec<VolumeId> = (0..3).map(|_| VolumeId(uuid::Uuid::new_v4())).collect();
    for s in &solos {
        backend.create(*s, ByteSize::mib(vol_mib)).unwrap();
    }
    let solo = solos[0];
    // The memory backend's images are touched up front (as the memory media are), so the
    // kernel's first-touch page faults are not counted as destage cost.
    let zeros = vec![0u8; 16 << 20];
    for v in [vol, solo] {
        for at in (0..vol_mib << 20).step_by(zeros.len()) {
            backend.write(v, ByteOffset(at), &zeros).unwrap();
        }
        backend.flush(v).unwrap();
    }
    let mut engines = Vec::new();
    let mut services = Vec::new();
    let mut servers = Vec::new();
    let mut limits = Vec::new();
    for (i, solo_i) in solos.iter().enumerate() {
        let m: Arc<dyn Medium> = match &media {
            Media::Memory => {
                // Touched up front, so first-touch page faults are not counted as write cost.
                let mut image = vec![0u8; cache as usize];
                image
                    .iter_mut()
                    .step_by(4096)
                    .for_each(|b| *b = std::hint::black_box(0));
                Arc::new(alcubierre_io::MemMedium::from_image(image))
            }
            Media::Devices(devices) => Arc::new(DirectFile::open(&devices[i]).unwrap()),
            Media::Files(dir) => Arc::new(
                DirectFile::create_file(&dir.join(format!("cache-{i}.img")), cache).unwrap(),
            ),
        };
        Engine::format(&*m, &FormatOptions::default()).unwrap();
        let e = Arc::new(Engine::open(m, backend.clone() as Arc<dyn Backend>).unwrap());
        e.attach(vol, g).unwrap();
        e.attach(*solo_i, g).unwrap();
        let limit = Arc::new(RateLimiter::new(u64::MAX / 4, 1 << 20));
        let svc = CacheService::start(
            e.clone(),
            ServiceConfig {
                destage_limit: Some(limit.clone()),
                ..ServiceConfig::default()
            },
        );
        limits.push(limit);
        servers.push(
            ReplicaServer::bind("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
        engines.push(e);
        services.push(svc);
    }
    println!(
        "machine: {} CPUs; cache media: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        match &media {
            Media::Memory => "memory".to_string(),
            Media::Devices(devices) => {
                let names: Vec<String> = devices.iter().map(|d| d.display().to_string()).collect();
                format!("one device per node: {}", names.join(", "))
            }
            Media::Files(dir) => dir.display().to_string(),
        }
    );
    // One replica: the primary's engine alone (the same cache path without replication).
    let single: Arc<dyn BlockDevice> = Arc::new(services[0].volume(solo).unwrap());
    // `0` seconds: the rebuild alone.
    let qds: &[usize] = if secs == 0 { &[] } else { &[1, 32] };
    for &qd in qds {
        settle(&engines).await;
        report(
            "1 replica (cache)",
            qd,
            secs,
            run(single.clone(), qd, secs).await,
        );
    }
    // The same QD1 writes without replication on all three engines at once: each replicated
    // write makes three journal commits at the same moment. With journal files, the three
    // share one disk, which slows each commit down; with a device per node or memory media,
    // this shows what three busy engines cost each other on this machine's CPUs.
    if secs > 0 {
        settle(&engines).await;
        let dev =
            |i: usize| -> Arc<dyn BlockDevice> { Arc::new(services[i].volume(solos[i]).unwrap()) };
        let (a, b, c) = tokio::join!(
            run(dev(0), 1, secs),
            run(dev(1), 1, secs),
            run(dev(2), 1, secs)
        );
        let p50 = |r: &Run| r.lat[r.lat.len() / 2].as_secs_f64() * 1e6;
        println!(
            "1 replica x3 at once   QD1  p50 {:.1} / {:.1} / {:.1} us (three engines, no replication)",
            p50(&a),
            p50(&b),
            p50(&c)
        );
    }
    settle(&engines).await;
    // Three replicas.
    let mut peers: HashMap<NodeId, _> = HashMap::new();
    for i in 1..3 {
        let f =
            FollowerVolume::new(engines[i].clone(), &services[i].volumes(), vol, Epoch(1)).unwrap();
        servers[i].add(f);
        peers.insert(format!("n{i}").into(), servers[i].local_addr());
    }
    let lease = Lease::default();
    lease.renew(Duration::from_secs(3600));
    let p = PrimaryVolume::start(
        engines[0].clone(),
        services[0].volume(vol).unwrap(),
        &"n0".into(),
        Membership {
            epoch: Epoch(1),
            primary: "n0".into(),
            replicas: vec!["n0".into(), "n1".into(), "n2".into()],
            in_sync: vec!["n0".into(), "n1".into(), "n2".into()],
        },
        peers,
        Arc::new(NoControl),
        lease,
        Config::default(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rep: Arc<dyn BlockDevice> = p.clone();
    for &qd in qds {
        settle(&engines).await;
        report("3 replicas", qd, secs, run(rep.clone(), qd, secs).await);
    }
    // Rebuild: n2 loses its copy while the other two take `dirty` bytes that stay in the
    // caches (destage paused); then n2 comes back empty and is rebuilt from the primary.
    let dirty: u64 = dirty_mib << 20;
    for l in &limits {
        l.set_rate(1);
    }
    servers[2].remove(vol);
    let m2 = |epoch, in_sync: &[&str]| Membership {
        epoch,
        primary: "n0".into(),
        replicas: vec!["n0".into(), "n1".into(), "n2".into()],
        in_sync: in_sync.iter().map(|s| (*s).into()).collect(),
    };
    let peers: HashMap<NodeId, std::net::SocketAddr> = (1..3)
        .map(|i| (format!("n{i}").into(), servers[i].local_addr()))
        .collect();
    p.membership(m2(Epoch(2), &["n0", "n1"]), peers.clone());
    let chunk = Bytes::from(vec![0x3c; 64 << 10]);
    let mut tasks = Vec::new();
    for q in 0..8u64 {
        let (p, chunk) = (p.clone(), chunk.clone());
        tasks.push(tokio::spawn(async move {
            let per = dirty / (64 << 10) / 8;
            for k in 0..per {
                let lba = ((q * per + k) * 16) % (vol_mib << 8);
                p.write(Lba(lba), chunk.clone()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    engines[2]
        .reset_replica(vol, alcubierre_cache::LogPos::default())
        .unwrap();
    let f = FollowerVolume::new(engines[2].clone(), &services[2].volumes(), vol, Epoch(2)).unwrap();
    let dirty_now = engines[0].stats().dirty_bytes;
    let logged = engines[2].stats().log_bytes_written;
    let c0 = cpu();
    let io0 = device_io();
    eprintln!("rebuild: starting");
    let t0 = Instant::now();
    servers[2].add(f);
    p.membership(m2(Epoch(2), &["n0", "n1"]), peers);
    let mut streaming = None;
    loop {
        let fs = p.followers();
        let Some(f2) = fs.iter().find(|f| f.node == "n2") else {
            panic!("n2 left the replica set during the rebuild");
        };
        if f2.streaming {
            streaming.get_or_insert(t0.elapsed());
        }
        if f2.streaming && f2.acked == f2.head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = t0.elapsed();
    let cpu_used = cpu() - c0;
    let io = device_io();
    let copied = engines[2].stats().log_bytes_written - logged;
    println!(
        "rebuild: {} MiB written, {} MiB dirty on the primary; {} MiB journaled on the new \
         replica in {:.2} s: {:.0} MB/s, CPU {:.2} s; device reads {} MiB, writes {} MiB",
        dirty >> 20,
        dirty_now >> 20,
        copied >> 20,
        took.as_secs_f64(),
        copied as f64 / took.as_secs_f64() / 1e6,
        cpu_used.as_secs_f64(),
        (io.0 - io0.0) >> 20,
        (io.1 - io0.1) >> 20,
    );
    println!(
        "rebuild: connected and streaming after {:.0} ms; the primary's events: {:?}",
        streaming.unwrap_or_default().as_secs_f64() * 1e3,
        p.events()
    );
    for l in &limits {
        l.set_rate(u64::MAX / 4);
    }
    for (i, e) in engines.iter().enumerate() {
        let st = e.stats();
        println!(
            "engine n{i}: {} writes in {} batches ({:.1} per batch)",
            st.ops,
            st.batches,
            st.ops as f64 / st.batches.max(1) as f64
        );
    }
    drop(rep);
    drop(p);
    for s in services {
        s.shutdown();
    }
    if let Media::Files(dir) = &media {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Where the three nodes' journals are.
enum Media {
    /// Memory media (no device syncs).
    Memory,
    /// One block device per node.
    Devices(Vec<std::path::PathBuf>),
    /// Three journal files in this (benchmark-made) directory, on one file system.
    Files(std::path::PathBuf),
}

/// The devices mode's checks: three distinct block devices that nothing else holds open
/// exclusively (a mounted file system or a device-mapper table would), each large enough for
/// the journal.
fn check_devices(devices: &[std::path::PathBuf], min_len: u64) -> Result<(), String> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    if devices.len() != 3 {
        return Err(format!(
            "devices: expected three block devices, comma-separated (one per node), got {}",
            devices.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for d in devices {
        let meta = std::fs::metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        if !meta.file_type().is_block_device() {
            return Err(format!("{}: not a block device", d.display()));
        }
        if !seen.insert(std::os::unix::fs::MetadataExt::rdev(&meta)) {
            return Err(format!("{}: named twice", d.display()));
        }
        // O_EXCL on a block device fails with EBUSY while it is mounted or otherwise claimed.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(d)
            .map_err(|e| format!("{}: {e} (is it mounted or in use?)", d.display()))?;
        let len = std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0))
            .map_err(|e| format!("{}: {e}", d.display()))?;
        if len < min_len {
            return Err(format!(
                "{}: {} MiB; the benchmark needs at least {} MiB per device",
                d.display(),
                len >> 20,
                min_len >> 20
            ));
        }
    }
    Ok(())
}

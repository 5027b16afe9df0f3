//! `alcubierre bench nvmf`: 4 KiB random read and write at each queue depth over NVMe/TCP on
//! loopback, with the crate's initiator (one queue, one task, like SPDK's perf), against a
//! memory-backed volume (the front end alone) and a cache-backed volume (front end + engine).
//! The target runs as its own `alcubierre serve` process so its CPU time is measured apart
//! from the initiator's. `--addr/--nqn` point the same client at another target (e.g. SPDK's
//! `nvmf_tgt`) for a side-by-side run.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alcubierre_nvmf::initiator::{cmd, HostConfig, HostController};
use alcubierre_nvmf::pdu::Digests;
use anyhow::{bail, Context};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::sysinfo;

/// Options of `bench nvmf`.
#[derive(clap::Args)]
pub struct NvmfBenchArgs {
    /// Directory for the cache file and the backend (must support O_DIRECT).
    #[arg(long, default_value = "target/bench-nvmf")]
    dir: PathBuf,
    /// Seconds per workload.
    #[arg(long, default_value_t = 10)]
    runtime: u64,
    /// Queue depths.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    qd: Vec<usize>,
    /// Target worker threads.
    #[arg(long, default_value_t = 1)]
    target_threads: usize,
    /// Working set per volume in MiB (prefilled before the reads).
    #[arg(long, default_value_t = 256)]
    span_mib: u64,
    /// Target busy polling after work, microseconds (nvmf.busy_poll_us; 0: sleep at once).
    #[arg(long, default_value_t = 0)]
    target_poll_us: u32,
    /// The initiator busy-polls its socket (as SPDK's perf does) instead of sleeping.
    #[arg(long)]
    poll: bool,
    /// Header and data digests on.
    #[arg(long)]
    digests: bool,
    /// Benchmark an external target at this address instead of starting one.
    #[arg(long, requires = "nqn")]
    addr: Option<SocketAddr>,
    /// Subsystem NQN of the external target.
    #[arg(long)]
    nqn: Option<String>,
    /// PID of the external target, to measure its CPU time.
    #[arg(long)]
    target_pid: Option<u32>,
}

#[derive(Serialize, Clone)]
struct Row {
    volume: String,
    workload: String,
    qd: usize,
    iops: f64,
    p50_us: f64,
    p99_us: f64,
    target_cpu_us_per_op: f64,
    initiator_cpu_us_per_op: f64,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    target_threads: usize,
    target_poll_us: u32,
    initiator_poll: bool,
    digests: bool,
    rows: Vec<Row>,
    /// Target CPU time over 5 idle seconds with a host connected (no busy polling: ~0).
    idle_target_cpu_ms: Option<f64>,
}

struct Server {
    child: Child,
}

/// (volume name, subsystem NQN).
type NamedVolume = (String, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_target(args: &NvmfBenchArgs) -> anyhow::Result<(Server, SocketAddr, Vec<NamedVolume>)> {
    std::fs::create_dir_all(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let _ = std::fs::remove_file(dir.join("cache.img"));
    let _ = std::fs::remove_dir_all(dir.join("backend"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let cfg = format!(
        r#"
[node]
name = "bench"
threads = {threads}
[cache]
device = "{dir}/cache.img"
create_size = "{cache}MiB"
[backend]
kind = "file"
dir = "{dir}/backend"
[nvmf]
listen = ["127.0.0.1:{port}"]
busy_poll_us = {poll}
[[volume]]
name = "memory"
size = "{span}MiB"
block_size = 4096
hosts = ["*"]
memory = true
[[volume]]
name = "cache"
size = "{span}MiB"
block_size = 4096
hosts = ["*"]
"#,
        threads = args.target_threads,
        poll = args.target_poll_us,
        dir = dir.display(),
        cache = args.span_mib * 4,
        span = args.span_mib,
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, cfg)?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--json", "serve", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting alcubierre serve")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let server = Server { child };
    let v: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("serve printed {line:?}"))?;
    let addr = v["listening"][0].as_str().unwrap_or_default().parse()?;
    let vols = v["volumes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap_or_default().to_string(),
                        v["nqn"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((server, addr, vols))
}

struct Measured {
    ops: u64,
    elapsed: Duration,
    lat_ns: Vec<u64>,
}

async fn workload(
    c: &mut HostController,
    write: bool,
    qd: usize,
    blocks: u64,
    runtime: Duration,
) -> anyhow::Result<Measured> {
    let q = &mut c.io[0];
    let mut rng = rand::rngs::SmallRng::seed_from_u64(qd as u64);
    let data = Bytes::from(vec![0x5a; 4096]);
    let mut started = vec![Instant::now(); 65536];
    let mut lat_ns = Vec::with_capacity(1 << 20);
    let submit = |q: &mut alcubierre_nvmf::initiator::HostQueue,
                  rng: &mut rand::rngs::SmallRng,
                  started: &mut Vec<Instant>| {
        let lba = rng.gen_range(0..blocks);
        let cid = if write {
            q.submit(cmd::write(lba, 1), Some(data.clone()), 0)
        } else {
            q.submit(cmd::read(lba, 1), None, 4096)
        };
        started[cid as usize] = Instant::now();
    };
    let t0 = Instant::now();
    let end = t0 + runtime;
    for _ in 0..qd {
        submit(q, &mut rng, &mut started);
    }
    let mut ops = 0u64;
    loop {
        let (cid, comp) = q.next().await?;
        let now = Instant::now();
        comp.ok()?;
        lat_ns.push((now - started[cid as usize]).as_nanos() as u64);
        ops += 1;
        if now < end {
            submit(q, &mut rng, &mut started);
        } else if q.outstanding() == 0 {
            break;
        }
    }
    let elapsed = t0.elapsed();
    lat_ns.sort_unstable();
    Ok(Measured {
        ops,
        elapsed,
        lat_ns,
    })
}

async fn prefill(c: &mut HostController, blocks: u64) -> anyhow::Result<()> {
    let q = &mut c.io[0];
    let data = Bytes::from(vec![0xa5; 128 * 1024]);
    let mut lba = 0;
    while lba < blocks || q.outstanding() > 0 {
        if lba < blocks && q.outstanding() < 16 {
            let n = 32.min(blocks - lba) as u32;
            q.submit(cmd::write(lba, n), Some(data.slice(..n as usize * 4096)), 0);
            lba += n as u64;
            continue;
        }
        q.next().await?.1.ok()?;
    }
    Ok(())
}

/// Runs the benchmark and prints a table (or JSON).
pub fn run(args: &NvmfBenchArgs, json: bool) -> anyhow::Result<()> {
    let (_server, addr, vols, pid) = match (&args.addr, &args.nqn) {
        (Some(a), Some(n)) => (
            None,
            *a,
            vec![("external".to_string(), n.clone())],
            args.target_pid,
        ),
        _ => {
            let (s, a, v) = start_target(args)?;
            let pid = s.child.id();
            (Some(s), a, v, Some(pid))
        }
    };
    if vols.is_empty() {
        bail!("the target exports no volume");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cfg = HostConfig {
        digests: if args.digests {
            Digests {
                header: true,
                data: true,
            }
        } else {
            Digests::default()
        },
        disable_sqflow: true,
        // The client is one task that does not send Keep Alive; KATO 0 disables the timer
        // (Fabrics 1.1 section 3.3) rather than letting it expire mid-run.
        kato: Duration::ZERO,
        poll: args.poll,
        ..HostConfig::default()
    };
    let runtime = Duration::from_secs(args.runtime);
    let mut rows = Vec::new();
    let mut idle = None;
    rt.block_on(async {
        // Idle first (before any write leaves dirty data to destage): a host stays connected
        // (admin and I/O queue) and sends nothing for 5 s.
        let (_, nqn) = &vols[0];
        let c = HostController::connect(addr, nqn, &cfg, 1).await?;
        let t0 = pid.map(sysinfo::pid_cpu);
        tokio::time::sleep(Duration::from_secs(5)).await;
        idle = match (pid, t0) {
            (Some(p), Some(t0)) => Some(sysinfo::pid_cpu(p).saturating_sub(t0).as_secs_f64() * 1e3),
            _ => None,
        };
        drop(c);
        for (name, nqn) in &vols {
            let mut c = HostController::connect(addr, nqn, &cfg, 1).await?;
            let (nsze, bs) = c.namespace().await?;
            if bs != 4096 {
                bail!("volume {name}: block size {bs}, the benchmark needs 4096");
            }
            let blocks = nsze.min(args.span_mib * 256);
            prefill(&mut c, blocks).await?;
            for write in [false, true] {
                for &qd in &args.qd {
                    let tc0 = pid.map(sysinfo::pid_cpu);
                    let ic0 = sysinfo::process_cpu();
                    let m = workload(&mut c, write, qd, blocks, runtime).await?;
                    let tcpu = match (pid, tc0) {
                        (Some(p), Some(t0)) => sysinfo::pid_cpu(p).saturating_sub(t0),
                        _ => Duration::ZERO,
                    };
                    let icpu = sysinfo::process_cpu().saturating_sub(ic0);
                    let q = |p: f64| m.lat_ns[((m.lat_ns.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
                    let per = |d: Duration| d.as_secs_f64() * 1e6 / m.ops as f64;
                    let row = Row {
                        volume: name.clone(),
                        workload: if write { "randwrite" } else { "randread" }.into(),
                        qd,
                        iops: m.ops as f64 / m.elapsed.as_secs_f64(),
                        p50_us: q(0.5),
                        p99_us: q(0.99),
                        target_cpu_us_per_op: per(tcpu),
                        initiator_cpu_us_per_op: per(icpu),
                    };
                    if !json {
                        println!(
                            "{:<9} {:<9} QD{:<3} {:>9.0} IOPS  p50 {:>7.1} us  p99 {:>8.1} us  target CPU {:>5.2} us/op  initiator CPU {:>5.2} us/op",
                            row.volume, row.workload, row.qd, row.iops, row.p50_us, row.p99_us,
                            row.target_cpu_us_per_op, row.initiator_cpu_us_per_op
                        );
                    }
                    rows.push(row);
                }
            }
            let _ = c.disconnect().await;
        }
        anyhow::Ok(())
    })?;
    let report = Report {
        machine: sysinfo::machine(),
        target_threads: args.target_threads,
        target_poll_us: args.target_poll_us,
        initiator_poll: args.poll,
        digests: args.digests,
        rows,
        idle_target_cpu_ms: idle,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if let Some(ms) = report.idle_target_cpu_ms {
            println!("idle target CPU with a host connected: {ms:.0} ms over 5 s");
        }
        println!("machine: {}", report.machine);
    }
    Ok(())
}

//! `alcubierre`: the one binary operators use.
//!
//! It runs a storage node (`serve`) and the whole cluster on one machine (`demo`), formats and
//! inspects cache devices, runs the benchmarks, and drives the cluster through its REST API
//! (`cluster`, `node`, `volume`, `qos`, `host`, `plan`, `status`, ...).
#![forbid(unsafe_code)]

// mimalloc rather than glibc's allocator: the I/O path allocates and frees many small buffers
// per request; in `bench_replica` it cut the CPU per replicated write by about 2 µs (8%).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Prints a line on stdout. A reader that went away (`alcubierre status | head -1`) ends the
/// command quietly, as it ends other Unix tools, rather than with a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("error: writing to stdout: {e}");
            std::process::exit(1);
        }
    }};
}

mod api_args;
mod bench;
mod bench_nvmf;
mod bench_rewrite;
mod client;
mod cluster_demo;
mod demo;
mod load;
mod plan;
mod serve;
mod sysinfo;
mod table;
mod volume_show;

use std::path::PathBuf;
use std::sync::Arc;

use alcubierre_backend::{Backend, FileBackend};
use alcubierre_cache::{Engine, FormatOptions};
use alcubierre_io::{DirectFile, Medium};
use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "alcubierre", version, about = "Alcubierre block-storage tier")]
struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Formats a cache device (block device or file). Everything on it is lost.
    Format {
        /// The device or file.
        #[arg(long)]
        device: PathBuf,
        /// Create a regular file of this many bytes first (e.g. 1073741824).
        #[arg(long)]
        create_size: Option<u64>,
        /// Independent journals on the device.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
    },
    /// Shows a cache device's superblock and what recovery finds in its journal (read-only
    /// except for clearing the block after the journal's end).
    Inspect {
        /// The device or file.
        #[arg(long)]
        device: PathBuf,
    },
    /// Runs a whole cluster on this machine: 3 nodes, embedded store, file caches and backend,
    /// activated, one volume exported over NVMe/TCP and iSCSI on loopback, the REST API and web
    /// console; until Ctrl-C.
    Demo {
        /// Directory for the demo's files (default: a new directory under /var/tmp).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Run the single-node cache-engine walk-through instead (write, crash, recover,
        /// destage, compare) and exit.
        #[arg(long)]
        engine: bool,
    },
    /// Runs a node from a config file: cache, backend, NVMe/TCP and iSCSI targets (see
    /// docs/serve.md).
    Serve {
        /// The node's config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Nodes: list, activate, deactivate, drain (over the REST API).
    Node {
        #[command(flatten)]
        api: client::ApiArgs,
        #[command(subcommand)]
        cmd: client::NodeCmd,
    },
    /// Volumes: create (or clone), list, show, resize, hosts, qos, snapshot, delete (over the
    /// REST API).
    Volume {
        #[command(flatten)]
        api: client::ApiArgs,
        #[command(subcommand)]
        cmd: client::VolumeCmd,
    },
    /// QoS policies: set, list, delete (over the REST API).
    Qos {
        #[command(flatten)]
        api: client::ApiArgs,
        #[command(subcommand)]
        cmd: client::QosCmd,
    },
    /// Hosts and their credentials: set, list, delete (over the REST API).
    Host {
        #[command(flatten)]
        api: client::ApiArgs,
        #[command(subcommand)]
        cmd: client::HostCmd,
    },
    /// The cluster configuration (over the REST API).
    Cluster {
        #[command(flatten)]
        api: client::ApiArgs,
        #[command(subcommand)]
        cmd: client::ClusterCmd,
    },
    /// Nodes and volumes at a glance (over the REST API).
    Status {
        #[command(flatten)]
        api: client::ApiArgs,
    },
    /// Sizes a cluster with the seed's planning rules (cache disks, OSDs, CPU threads, destage).
    Plan(plan::PlanArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// 4K random write and read through the cache engine to a cache file, side by side with
    /// fio on the same file.
    Engine(bench::EngineBenchArgs),
    /// 4K random read and write over NVMe/TCP on loopback, memory- and cache-backed volumes,
    /// with target and initiator CPU time per I/O.
    Nvmf(bench_nvmf::NvmfBenchArgs),
    /// A small working set rewritten while destage is slow: the cache's dirty bytes and what
    /// destage writes, against what the host wrote.
    Rewrite(bench_rewrite::RewriteBenchArgs),
}

fn main() {
    if let Err(e) = run() {
        // One line per cause, no backtrace: errors name the field and say what to do.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Format {
            device,
            create_size,
            partitions,
        } => format(&device, create_size, partitions, cli.json),
        Cmd::Inspect { device } => inspect(&device, cli.json),
        Cmd::Demo { dir, engine: true } => demo::run(dir, cli.json),
        Cmd::Demo { dir, engine: false } => cluster_demo::run(dir, cli.json),
        Cmd::Serve { config } => serve::run(&config, cli.json),
        Cmd::Plan(args) => plan::run(&args, cli.json),
        Cmd::Node { api, cmd } => client::node(&api, cmd, cli.json),
        Cmd::Volume { api, cmd } => client::volume(&api, cmd, cli.json),
        Cmd::Qos { api, cmd } => client::qos(&api, cmd, cli.json),
        Cmd::Host { api, cmd } => client::host(&api, cmd, cli.json),
        Cmd::Cluster { api, cmd } => client::cluster(&api, cmd, cli.json),
        Cmd::Status { api } => client::status(&api, cli.json),
        Cmd::Bench {
            what: BenchCmd::Engine(args),
        } => bench::run(&args, cli.json),
        Cmd::Bench {
            what: BenchCmd::Nvmf(args),
        } => bench_nvmf::run(&args, cli.json),
        Cmd::Bench {
            what: BenchCmd::Rewrite(args),
        } => bench_rewrite::run(&args, cli.json),
    }
}

fn format(
    device: &std::path::Path,
    create_size: Option<u64>,
    partitions: u32,
    json: bool,
) -> anyhow::Result<()> {
    let medium = match create_size {
        Some(n) => DirectFile::create_file(device, n),
        None => DirectFile::open(device),
    }
    .with_context(|| format!("opening {}", device.display()))?;
    let sb = Engine::format(
        &medium,
        &FormatOptions {
            partitions,
            ..Default::default()
        },
    )?;
    if json {
        let parts: Vec<_> = sb
            .partitions
            .iter()
            .map(|p| serde_json::json!({"start_block": p.start, "blocks": p.blocks}))
            .collect();
        say!(
            "{}",
            serde_json::json!({"device": device, "device_id": sb.device_id.to_string(),
                "partitions": parts})
        );
    } else {
        say!(
            "formatted {} ({} partitions, {} log blocks each), device id {}",
            device.display(),
            sb.partitions.len(),
            sb.partitions[0].blocks,
            sb.device_id
        );
    }
    Ok(())
}

fn inspect(device: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let medium: Arc<dyn Medium> = Arc::new(
        DirectFile::open(device).with_context(|| format!("opening {}", device.display()))?,
    );
    // Inspection needs no backend data: an empty directory stands in for it.
    let scratch = tempfile::tempdir()?;
    let backend: Arc<dyn Backend> = Arc::new(FileBackend::new(scratch.path())?);
    let e = Engine::open(medium, backend)?;
    let sb = e.superblock();
    let r = e.recovery_report();
    if json {
        let parts: Vec<_> = r
            .partitions
            .iter()
            .map(|p| {
                serde_json::json!({"partition": p.partition, "batches": p.batches,
                "entries": p.entries, "torn_batches": p.torn_batches,
                "corrupt_entries": p.corrupt_entries, "poisoned_blocks": p.poisoned_blocks,
                "dirty_bytes": p.dirty_blocks * 4096})
            })
            .collect();
        say!(
            "{}",
            serde_json::json!({"device_id": sb.device_id.to_string(), "created": sb.created,
                "device_bytes": sb.device_blocks * 4096, "partitions": parts})
        );
    } else {
        say!("device id   {}", sb.device_id);
        say!(
            "size        {}",
            alcubierre_types::ByteSize(sb.device_blocks * 4096)
        );
        say!("PARTITION  BATCHES  ENTRIES  DIRTY        TORN  CORRUPT  POISONED");
        for p in &r.partitions {
            say!(
                "{:<10} {:<8} {:<8} {:<12} {:<5} {:<8} {}",
                p.partition,
                p.batches,
                p.entries,
                alcubierre_types::ByteSize(p.dirty_blocks * 4096).to_string(),
                p.torn_batches,
                p.corrupt_entries,
                p.poisoned_blocks
            );
        }
    }
    Ok(())
}

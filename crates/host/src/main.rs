//! `alcubierre-node`: the host agent's command line (see the library's documentation and
//! docs/host-agent.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use alcubierre_host::agent::Agent;
use alcubierre_host::config::{Config, Flags};
use alcubierre_host::doctor::{self, Verdict};
use alcubierre_host::sysfs::Root;
use alcubierre_host::Protocol;
use clap::{Parser, Subcommand};

/// Attaches Alcubierre volumes to this host with multipath, keeps them attached, checks the
/// host.
#[derive(Parser)]
#[command(name = "alcubierre-node", version)]
struct Cli {
    /// The configuration file (default /etc/alcubierre/node.toml when it exists).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The cluster's API (repeat, or separate with commas: every node's, tried in turn).
    #[arg(long, global = true, env = "ALCUBIERRE_API")]
    api: Vec<String>,
    /// The API token.
    #[arg(long, global = true, env = "ALCUBIERRE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// This host's name in the cluster (default: its hostname).
    #[arg(long, global = true)]
    host: Option<String>,
    /// Where the desired attachments are kept (default /var/lib/alcubierre-node).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Attaches a volume (id or name) over every replica node's portal; prints its device.
    Attach {
        /// The volume's id or name.
        volume: String,
        /// nvme-tcp or iscsi (default: the configuration's, else nvme-tcp).
        #[arg(long)]
        protocol: Option<String>,
        /// Prints the attachment (device, paths) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Detaches a volume: refuses while its device is mounted or open, unless --force.
    Detach {
        /// The volume's id or name.
        volume: String,
        /// Detaches even though the device is in use (its users get I/O errors).
        #[arg(long)]
        force: bool,
    },
    /// The desired attachments and their devices and paths.
    Status {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Keeps the desired attachments: reconnects lost paths, follows replica moves, reports
    /// the host's liveness.
    Daemon,
    /// Checks the host: kernel modules, multipathd, initiator names, the cluster's portals.
    Doctor,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("alcubierre-node: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let flags = Flags {
        config: cli.config,
        api: cli.api,
        token: cli.token,
        host: cli.host,
        state_dir: cli.state_dir,
    };
    let root = Root::default();
    if let Cmd::Doctor = cli.cmd {
        // The host's checks need no cluster; the cluster's need the configuration.
        let agent = Config::load(&flags).and_then(|c| Agent::new(c, root.clone()));
        let mut checks = doctor::host_checks(&root, agent.as_ref().ok());
        match &agent {
            Ok(a) => checks.extend(doctor::cluster_checks(a)),
            Err(e) => checks.push(doctor::Check {
                verdict: Verdict::Fail,
                what: "configuration".into(),
                detail: e.to_string(),
            }),
        }
        for c in &checks {
            println!("{c}");
        }
        let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
        println!(
            "{} checks, {failed} failed",
            checks.iter().filter(|c| c.verdict != Verdict::Info).count()
        );
        return Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let cfg = Config::load(&flags)?;
    let agent = Agent::new(cfg, root)?;
    match cli.cmd {
        Cmd::Attach {
            volume,
            protocol,
            json,
        } => {
            let protocol: Protocol = match protocol {
                Some(p) => p.parse()?,
                None => agent.cfg.protocol,
            };
            let a = agent.attach(&volume, protocol)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                for p in &a.paths {
                    eprintln!("path {} {} {}", p.portal, p.handle, p.state);
                }
                println!("{}", a.device);
            }
        }
        Cmd::Detach { volume, force } => {
            let was = agent.detach(&volume, force)?;
            eprintln!(
                "{volume}: {}",
                if was { "detached" } else { "was not attached" }
            );
        }
        Cmd::Status { json } => {
            let all = agent.status()?;
            if json {
                let v: Vec<_> = all
                    .iter()
                    .map(|(w, a)| serde_json::json!({"wanted": w, "attached": a}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for (w, a) in all {
                    match a {
                        Some(a) => {
                            println!("{} {} {} {}", w.name, w.volume, w.protocol, a.device);
                            for p in a.paths {
                                println!("  {} {} {}", p.portal, p.handle, p.state);
                            }
                        }
                        None => println!("{} {} {} (no device)", w.name, w.volume, w.protocol),
                    }
                }
            }
        }
        Cmd::Daemon => agent.run(&AtomicBool::new(false)),
        Cmd::Doctor => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

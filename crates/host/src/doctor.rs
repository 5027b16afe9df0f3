//! `alcubierre-node doctor`: whether this host can attach volumes, each check with what to do
//! when it fails. Failures make the command exit non-zero; `info` lines say what the kernel
//! supports (NVMe in-band authentication and TLS, from the fabrics device's options).

use crate::agent::Agent;
use crate::iscsi::{self, MULTIPATH_CONF, MULTIPATH_SECTION};
use crate::nvme::Nvme;
use crate::plan::Portal;
use crate::sysfs::Root;

/// How a check went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Fine.
    Ok,
    /// What the host supports (no verdict).
    Info,
    /// Attaching over one protocol will fail until it is fixed.
    Fail,
}

/// One check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Its verdict.
    pub verdict: Verdict,
    /// What was checked.
    pub what: String,
    /// What was found, and for a failure what to do.
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = match self.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Info => "info",
            Verdict::Fail => "FAIL",
        };
        write!(f, "{v} {}: {}", self.what, self.detail)
    }
}

fn check(ok: bool, what: &str, good: String, bad: String) -> Check {
    Check {
        verdict: if ok { Verdict::Ok } else { Verdict::Fail },
        what: what.into(),
        detail: if ok { good } else { bad },
    }
}

fn module(root: &Root, name: &str, load: &str) -> Check {
    let ok = root.path(&format!("sys/module/{name}")).exists();
    check(
        ok,
        &format!("kernel module {load}"),
        "loaded".into(),
        format!("not loaded: modprobe {load} (and list it in /etc/modules-load.d/)"),
    )
}

fn process_running(root: &Root, comm: &str) -> bool {
    root.list("proc").iter().any(|pid| {
        pid.bytes().all(|b| b.is_ascii_digit())
            && root.attr(&format!("proc/{pid}/comm")).as_deref() == Some(comm)
    })
}

/// The host-side checks (no cluster needed).
pub fn host_checks(root: &Root, agent: Option<&Agent>) -> Vec<Check> {
    let nvme = Nvme::new(root.clone());
    let mut out = vec![
        module(root, "nvme_tcp", "nvme-tcp"),
        module(root, "iscsi_tcp", "iscsi_tcp"),
        module(root, "dm_multipath", "dm-multipath"),
    ];
    out.push(match nvme.native_multipath() {
        Some(true) => check(
            true,
            "native NVMe multipath",
            "on (nvme_core.multipath=Y)".into(),
            String::new(),
        ),
        Some(false) => check(
            false,
            "native NVMe multipath",
            String::new(),
            "off: boot with nvme_core.multipath=Y, or attach over iSCSI".into(),
        ),
        None => check(
            false,
            "native NVMe multipath",
            String::new(),
            "nvme_core is not loaded: modprobe nvme-tcp".into(),
        ),
    });
    let id = crate::identity::Identity::read(root, agent.and_then(|a| a.cfg.host.as_deref()));
    out.push(check(
        id.nqn.is_some(),
        "NVMe host NQN",
        id.nqn.clone().unwrap_or_default(),
        "/etc/nvme/hostnqn is missing: nvme gen-hostnqn > /etc/nvme/hostnqn".into(),
    ));
    out.push(check(
        id.hostid.is_some(),
        "NVMe Host Identifier",
        id.hostid.clone().unwrap_or_default(),
        "/etc/nvme/hostid is missing: uuidgen > /etc/nvme/hostid".into(),
    ));
    out.push(check(
        id.iqn.is_some(),
        "iSCSI initiator name",
        id.iqn.clone().unwrap_or_default(),
        "/etc/iscsi/initiatorname.iscsi is missing: install open-iscsi".into(),
    ));
    out.push(check(
        process_running(root, "iscsid"),
        "iscsid",
        "running".into(),
        "not running: systemctl enable --now iscsid".into(),
    ));
    let mpd = iscsi::multipathd_running();
    out.push(check(
        mpd,
        "multipathd",
        "running".into(),
        "not running: systemctl enable --now multipathd".into(),
    ));
    if mpd {
        let config = iscsi::run("multipathd", &["show", "config"]).unwrap_or_default();
        let ours = config.contains("ALCUBIER")
            && std::fs::read_to_string(root.path(MULTIPATH_CONF))
                .is_ok_and(|s| s == MULTIPATH_SECTION);
        out.push(check(
            ours,
            "multipath configuration",
            format!("/{MULTIPATH_CONF} in effect (ALUA, group_by_prio, failback immediate, no_path_retry queue)"),
            format!("Alcubierre's device section is not in effect: the first iSCSI attach writes /{MULTIPATH_CONF}; or check multipath.conf's config_dir"),
        ));
    }
    match nvme.fabrics_options() {
        Ok(opts) => {
            let has = |o: &str| opts.split(',').any(|kv| kv.split('=').next() == Some(o));
            // The options table lists some options whatever the kernel was built with; the
            // module that implements them is loaded with nvme-core when it was built in.
            let support = |option: &str, module: &str| {
                match (has(option), root.path(&format!("sys/module/{module}")).exists()) {
                (true, true) => "supported by this kernel".to_string(),
                (true, false) => format!("not supported: the fabrics options list {option}, but {module} is not loaded (a kernel without it)"),
                (false, _) => format!("not supported by this kernel (no {option} option)"),
            }
            };
            out.push(Check {
                verdict: Verdict::Info,
                what: "NVMe in-band authentication (DH-HMAC-CHAP)".into(),
                detail: support("dhchap_secret", "nvme_auth"),
            });
            out.push(Check {
                verdict: Verdict::Info,
                what: "NVMe/TCP TLS".into(),
                detail: support("tls", "nvme_keyring"),
            });
        }
        Err(e) => out.push(check(
            false,
            "NVMe fabrics device",
            String::new(),
            format!("{e}: modprobe nvme-tcp"),
        )),
    }
    out
}

/// The cluster-side checks: the API, the token, each node's portals.
pub fn cluster_checks(agent: &Agent) -> Vec<Check> {
    let mut out = Vec::new();
    let nodes = match agent.api().call(|c| c.nodes()) {
        Ok(n) => {
            out.push(check(
                true,
                "cluster API",
                format!("{} nodes", n.len()),
                String::new(),
            ));
            n
        }
        Err(e) => {
            out.push(check(false, "cluster API", String::new(), e.to_string()));
            return out;
        }
    };
    for n in nodes {
        let portals = n.portals.iter().map(|p| ("NVMe/TCP", p.as_str())).chain(
            n.iscsi_portals
                .iter()
                .map(|p| ("iSCSI", p.split(',').next().unwrap_or(p))),
        );
        for (kind, p) in portals {
            let Ok(addr) = p.parse::<std::net::SocketAddr>() else {
                continue;
            };
            if addr.ip().is_unspecified() {
                continue;
            }
            let portal = Portal::new(&addr.ip().to_string(), addr.port());
            let r = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3));
            out.push(check(
                r.is_ok(),
                &format!("{} {kind} portal {portal}", n.name),
                "reachable".into(),
                format!(
                    "unreachable ({}): check the route and firewall to it",
                    r.err().map(|e| e.to_string()).unwrap_or_default()
                ),
            ));
        }
    }
    out
}

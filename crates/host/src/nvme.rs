//! NVMe/TCP on the host: the controllers Linux has (`/sys/class/nvme`), connecting one through
//! the fabrics device (`/dev/nvme-fabrics`, what `nvme connect` writes), deleting one, and the
//! multipath namespace head a volume appears as.
//!
//! The recommended connection settings ([`Settings::recommended`], docs/host-agent.md):
//! - `ctrl_loss_tmo=-1`: a lost path reconnects until the agent drops it (its node left the
//!   volume's replica set) or the volume is detached. With every path lost, I/O queues instead
//!   of failing (as dm-multipath's `no_path_retry queue`): a cluster outage stalls applications,
//!   it never hands them an I/O error or a read-only file system.
//! - `reconnect_delay=2`: a node back from a restart carries I/O again within seconds (the
//!   kernel's default is 10 s).
//! - `keep_alive_tmo=5`: a dead node's path is noticed within 5 s, so I/O fails over to the
//!   promoted primary's path within the ANA transition time plus that.
//! - the subsystem's `iopolicy` `numa`: I/O goes to the ANA-optimized path (the primary's); the
//!   others are non-optimized (they forward to the primary) and carry I/O only when no
//!   optimized path is left. `round-robin` would not spread it further: there is one optimized
//!   path per volume.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use crate::plan::Portal;
use crate::sysfs::{numbered, Root};
use crate::{Error, Result};

/// A controller: one path of a subsystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Controller {
    /// Its name, `nvmeN`.
    pub name: String,
    /// The subsystem's NQN.
    pub subsysnqn: String,
    /// `tcp`, `rdma`, `pcie`, ...
    pub transport: String,
    /// Where it goes (`traddr`, `trsvcid`), when it is a fabrics controller.
    pub portal: Option<Portal>,
    /// `live`, `connecting`, `resetting`, `deleting`, ...
    pub state: String,
}

/// The host's NVMe state, read from under a [`Root`].
#[derive(Clone, Debug, Default)]
pub struct Nvme {
    root: Root,
}

/// The connection settings of a controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Seconds to keep reconnecting a lost controller; -1: until it is deleted.
    pub ctrl_loss_tmo: i32,
    /// Seconds between reconnect attempts.
    pub reconnect_delay: u32,
    /// The keep-alive timeout in seconds.
    pub keep_alive_tmo: u32,
}

impl Settings {
    /// What the product recommends (see the module's documentation).
    pub fn recommended() -> Self {
        Self {
            ctrl_loss_tmo: -1,
            reconnect_delay: 2,
            keep_alive_tmo: 5,
        }
    }
}

/// The I/O policy the agent sets on a volume's subsystem.
pub const IOPOLICY: &str = "numa";

/// Who connects: the host's NVMe identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostId {
    /// The host NQN.
    pub nqn: String,
    /// The Host Identifier (a UUID).
    pub hostid: String,
}

/// The options line the fabrics device takes for a connection of `host` to `subnqn` at
/// `portal`.
pub fn connect_options(host: &HostId, subnqn: &str, portal: &Portal, s: Settings) -> String {
    format!(
        "nqn={subnqn},transport=tcp,traddr={},trsvcid={},hostnqn={},hostid={},\
         ctrl_loss_tmo={},reconnect_delay={},keep_alive_tmo={}",
        portal.address,
        portal.port,
        host.nqn,
        host.hostid,
        s.ctrl_loss_tmo,
        s.reconnect_delay,
        s.keep_alive_tmo
    )
}

/// A sysfs `address` attribute (`traddr=10.0.2.2,trsvcid=4420,src_addr=10.0.2.15`) as keys and
/// values.
pub fn parse_address(s: &str) -> BTreeMap<String, String> {
    s.trim()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

impl Nvme {
    /// The NVMe state under `root`.
    pub fn new(root: Root) -> Self {
        Self { root }
    }

    /// Every controller the host has.
    pub fn controllers(&self) -> Vec<Controller> {
        let mut out = Vec::new();
        for name in self.root.list("sys/class/nvme") {
            if !numbered(&name, "nvme") {
                continue;
            }
            let a = |attr: &str| self.root.attr(&format!("sys/class/nvme/{name}/{attr}"));
            let address = parse_address(&a("address").unwrap_or_default());
            let portal = match (address.get("traddr"), address.get("trsvcid")) {
                (Some(addr), Some(port)) => port.parse().ok().map(|p| Portal::new(addr, p)),
                _ => None,
            };
            out.push(Controller {
                subsysnqn: a("subsysnqn").unwrap_or_default(),
                transport: a("transport").unwrap_or_default(),
                state: a("state").unwrap_or_default(),
                portal,
                name,
            });
        }
        out
    }

    /// The controllers of subsystem `subnqn`.
    pub fn controllers_of(&self, subnqn: &str) -> Vec<Controller> {
        self.controllers()
            .into_iter()
            .filter(|c| c.subsysnqn == subnqn)
            .collect()
    }

    /// The block device (`nvmeXnY`, the multipath head when native multipath is on) of the
    /// namespace with UUID `uuid`.
    pub fn namespace_by_uuid(&self, uuid: &str) -> Option<String> {
        let uuid = uuid.to_ascii_lowercase();
        self.root.list("sys/block").into_iter().find(|name| {
            is_head(name)
                && self
                    .root
                    .attr(&format!("sys/block/{name}/uuid"))
                    .is_some_and(|u| u.to_ascii_lowercase() == uuid)
        })
    }

    /// The ANA state of controller `ctrl`'s path to its namespace (`optimized`,
    /// `non-optimized`, `inaccessible`, ...), when it has one.
    pub fn ana_state(&self, ctrl: &str) -> Option<String> {
        let dir = format!("sys/class/nvme/{ctrl}");
        self.root
            .list(&dir)
            .into_iter()
            .find(|n| n.starts_with("nvme") && n.contains('c') && n.contains('n'))
            .and_then(|ns| self.root.attr(&format!("{dir}/{ns}/ana_state")))
    }

    /// Whether the kernel has the fabrics device (`nvme-fabrics` and a transport loaded).
    pub fn fabrics_present(&self) -> bool {
        self.root.path("dev/nvme-fabrics").exists()
    }

    /// Whether native NVMe multipath is on (`nvme_core.multipath`), `None` when nvme_core is not
    /// loaded.
    pub fn native_multipath(&self) -> Option<bool> {
        self.root
            .attr("sys/module/nvme_core/parameters/multipath")
            .map(|v| v == "Y")
    }

    /// The options the fabrics device accepts (reading it lists them): `dhchap_secret` for
    /// in-band authentication, `tls` for TLS.
    pub fn fabrics_options(&self) -> Result<String> {
        let p = self.root.path("dev/nvme-fabrics");
        std::fs::read_to_string(&p).map_err(|e| Error::io("reading the fabrics options", p, e))
    }

    /// Connects a controller: writes `options` to the fabrics device; the new controller's
    /// name.
    pub fn connect(&self, options: &str) -> Result<String> {
        let p = self.root.path("dev/nvme-fabrics");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io("opening the NVMe fabrics device", &p, e))?;
        // The kernel takes the whole line in one write and answers `instance=N,cntlid=M`.
        f.write_all(options.as_bytes())
            .map_err(|e| Error::io("connecting", &p, e))?;
        let mut answer = String::new();
        f.read_to_string(&mut answer)
            .map_err(|e| Error::io("reading the new controller", &p, e))?;
        parse_address(&answer)
            .get("instance")
            .map(|i| format!("nvme{i}"))
            .ok_or_else(|| Error::Invalid(format!("the fabrics device answered {answer:?}")))
    }

    /// Deletes controller `ctrl` (its path goes away; the namespace head with it when it was
    /// the last).
    pub fn disconnect(&self, ctrl: &str) -> Result<()> {
        let p = self
            .root
            .path(&format!("sys/class/nvme/{ctrl}/delete_controller"));
        match std::fs::write(&p, "1") {
            Ok(()) => Ok(()),
            // Gone already.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("deleting the controller", p, e)),
        }
    }

    /// Sets the I/O policy of the subsystem that controller `ctrl` belongs to.
    pub fn set_iopolicy(&self, ctrl: &str, policy: &str) -> Result<()> {
        for s in self.root.list("sys/class/nvme-subsystem") {
            let dir = format!("sys/class/nvme-subsystem/{s}");
            if self.root.path(&format!("{dir}/{ctrl}")).exists() {
                let p = self.root.path(&format!("{dir}/iopolicy"));
                if self.root.attr(&format!("{dir}/iopolicy")).as_deref() == Some(policy) {
                    return Ok(());
                }
                return std::fs::write(&p, policy)
                    .map_err(|e| Error::io("setting the I/O policy", p, e));
            }
        }
        Ok(())
    }
}

/// Whether block device `name` is a namespace head (`nvme1n1`), not a path's hidden device
/// (`nvme1c2n1`) or a partition (`nvme1n1p1`).
fn is_head(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("nvme") else {
        return false;
    };
    let Some((ctrl, ns)) = rest.split_once('n') else {
        return false;
    };
    !ctrl.is_empty()
        && ctrl.bytes().all(|b| b.is_ascii_digit())
        && !ns.is_empty()
        && ns.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sysfs::write_file as write;

    #[test]
    fn connect_line_has_every_setting() {
        let host = HostId {
            nqn: "nqn.2014-08.org.nvmexpress:uuid:a".into(),
            hostid: "a".into(),
        };
        let line = connect_options(
            &host,
            "nqn.2024-01.io.alcubierre:vol.x",
            &Portal::new("10.0.2.2", 4421),
            Settings::recommended(),
        );
        assert_eq!(
            line,
            "nqn=nqn.2024-01.io.alcubierre:vol.x,transport=tcp,traddr=10.0.2.2,trsvcid=4421,\
             hostnqn=nqn.2014-08.org.nvmexpress:uuid:a,hostid=a,ctrl_loss_tmo=-1,\
             reconnect_delay=2,keep_alive_tmo=5"
        );
    }

    #[test]
    fn controllers_namespaces_and_paths_are_read_from_sysfs() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        // Debian 12's kernel appends src_addr to the address.
        for (c, port, state) in [("nvme0", 4421, "live"), ("nvme1", 4422, "connecting")] {
            write(r, &format!("sys/class/nvme/{c}/subsysnqn"), "nqn.x:vol.a\n");
            write(r, &format!("sys/class/nvme/{c}/transport"), "tcp\n");
            write(
                r,
                &format!("sys/class/nvme/{c}/state"),
                &format!("{state}\n"),
            );
            write(
                r,
                &format!("sys/class/nvme/{c}/address"),
                &format!("traddr=10.0.2.2,trsvcid={port},src_addr=10.0.2.15\n"),
            );
        }
        write(r, "sys/class/nvme/nvme0/nvme0c0n1/ana_state", "optimized\n");
        write(r, "sys/class/nvme/nvme2/subsysnqn", "nqn.other\n");
        write(r, "sys/class/nvme/nvme-fabrics/x", "");
        write(
            r,
            "sys/block/nvme0n1/uuid",
            "0A0B0C0D-0000-4000-8000-000000000001\n",
        );
        write(
            r,
            "sys/block/nvme0c0n1/uuid",
            "0a0b0c0d-0000-4000-8000-000000000001\n",
        );
        write(
            r,
            "sys/block/nvme0n1p1/uuid",
            "0a0b0c0d-0000-4000-8000-000000000001\n",
        );
        let n = Nvme::new(Root::at(r));
        let cs = n.controllers_of("nqn.x:vol.a");
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].portal, Some(Portal::new("10.0.2.2", 4421)));
        assert_eq!(cs[1].state, "connecting");
        assert_eq!(n.controllers().len(), 3);
        assert_eq!(n.ana_state("nvme0").as_deref(), Some("optimized"));
        assert_eq!(n.ana_state("nvme1"), None);
        assert_eq!(
            n.namespace_by_uuid("0a0b0c0d-0000-4000-8000-000000000001")
                .as_deref(),
            Some("nvme0n1")
        );
        assert_eq!(
            n.namespace_by_uuid("0a0b0c0d-0000-4000-8000-000000000002"),
            None
        );
        assert!(!n.fabrics_present());
        assert_eq!(n.native_multipath(), None);
    }

    #[test]
    fn heads_are_told_from_paths_and_partitions() {
        assert!(is_head("nvme0n1"));
        assert!(is_head("nvme12n3"));
        assert!(!is_head("nvme0c1n1"));
        assert!(!is_head("nvme0n1p1"));
        assert!(!is_head("nvme0"));
        assert!(!is_head("sda"));
    }
}

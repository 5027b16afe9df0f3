//! iSCSI on the host: the sessions open-iscsi has (`/sys/class/iscsi_session`), logging in and
//! out through `iscsiadm`, the SCSI disks of a session's LUN, and dm-multipath: the device
//! section for Alcubierre's LUs and the map a volume's disks make.
//!
//! The recommended settings (docs/host-agent.md):
//! - dm-multipath's device section ([`MULTIPATH_SECTION`]): paths grouped by ALUA priority
//!   (`group_by_prio`, `prio alua`, the ALUA hardware handler), so I/O goes to the primary's
//!   active/optimized path; `failback immediate` to the new primary's path after a failover;
//!   `no_path_retry queue` (with every path lost I/O queues, it never fails: applications stall
//!   through a cluster outage instead of seeing an I/O error); `fast_io_fail_tmo 5`.
//! - open-iscsi's `node.session.timeo.replacement_timeout = 5`: a dead path's I/O is handed back
//!   to dm-multipath after 5 s, which retries it on the next path; with noop-outs every 5 s
//!   (timeout 5 s) a dead node is noticed within that.
//! - `node.startup = manual`: the agent, not iscsid at boot, logs in (from its desired state).

use std::path::Path;
use std::process::Command;

use crate::plan::Portal;
use crate::sysfs::{numbered, Root};
use crate::{Error, Result};

/// A session: one path of a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Its id (`sessionN`).
    pub sid: u32,
    /// The target's IQN.
    pub target: String,
    /// Where it goes.
    pub portal: Option<Portal>,
    /// `LOGGED_IN`, `FAILED`, `FREE`.
    pub state: String,
}

/// dm-multipath's device section for Alcubierre's LUs (vendor `ALCUBIER`, product
/// `Alcubierre vol`, as the target's INQUIRY data says).
pub const MULTIPATH_SECTION: &str = r#"# Written by alcubierre-node: Alcubierre's volumes under dm-multipath with ALUA.
devices {
	device {
		vendor "ALCUBIER"
		product "Alcubierre vol"
		path_grouping_policy group_by_prio
		prio alua
		hardware_handler "1 alua"
		path_checker tur
		failback immediate
		no_path_retry queue
		fast_io_fail_tmo 5
	}
}
"#;

/// Where the device section goes (multipath.conf's default `config_dir`).
pub const MULTIPATH_CONF: &str = "etc/multipath/conf.d/alcubierre.conf";

/// The open-iscsi node settings the agent sets on every portal's record.
pub const NODE_SETTINGS: [(&str, &str); 4] = [
    ("node.startup", "manual"),
    ("node.session.timeo.replacement_timeout", "5"),
    ("node.conn[0].timeo.noop_out_interval", "5"),
    ("node.conn[0].timeo.noop_out_timeout", "5"),
];

/// The host's iSCSI state, read from under a [`Root`].
#[derive(Clone, Debug, Default)]
pub struct Iscsi {
    root: Root,
}

impl Iscsi {
    /// The iSCSI state under `root`.
    pub fn new(root: Root) -> Self {
        Self { root }
    }

    /// The sessions to target `iqn`.
    pub fn sessions_of(&self, iqn: &str) -> Vec<Session> {
        let mut out = Vec::new();
        for name in self.root.list("sys/class/iscsi_session") {
            if !numbered(&name, "session") {
                continue;
            }
            let sid: u32 = name["session".len()..].parse().unwrap_or(0);
            let dir = format!("sys/class/iscsi_session/{name}");
            if self.root.attr(&format!("{dir}/targetname")).as_deref() != Some(iqn) {
                continue;
            }
            let conn = format!("sys/class/iscsi_connection/connection{sid}:0");
            let addr = self.root.attr(&format!("{conn}/persistent_address"));
            let port = self
                .root
                .attr(&format!("{conn}/persistent_port"))
                .and_then(|p| p.parse().ok());
            out.push(Session {
                sid,
                target: iqn.to_string(),
                portal: addr.zip(port).map(|(a, p)| Portal::new(&a, p)),
                state: self.root.attr(&format!("{dir}/state")).unwrap_or_default(),
            });
        }
        out
    }

    /// The SCSI disk (`sdX`) of LUN `lun` in session `sid`, once the kernel made it.
    pub fn disk(&self, sid: u32, lun: u32) -> Option<String> {
        let dev = format!("sys/class/iscsi_session/session{sid}/device");
        for t in self.root.list(&dev) {
            if !t.starts_with("target") {
                continue;
            }
            for hctl in self.root.list(&format!("{dev}/{t}")) {
                if hctl.rsplit(':').next() != Some(&lun.to_string()) || hctl.split(':').count() != 4
                {
                    continue;
                }
                if let Some(b) = self
                    .root
                    .list(&format!("{dev}/{t}/{hctl}/block"))
                    .into_iter()
                    .next()
                {
                    return Some(b);
                }
            }
        }
        None
    }

    /// The dm-multipath map (`dm-N`, its name) holding disk `sd`.
    pub fn map_of(&self, sd: &str) -> Option<(String, String)> {
        self.root
            .list(&format!("sys/block/{sd}/holders"))
            .into_iter()
            .find(|h| {
                self.root
                    .attr(&format!("sys/block/{h}/dm/uuid"))
                    .is_some_and(|u| u.starts_with("mpath-"))
            })
            .map(|dm| {
                let name = self
                    .root
                    .attr(&format!("sys/block/{dm}/dm/name"))
                    .unwrap_or_default();
                (dm, name)
            })
    }

    /// The disks of dm map `dm`.
    pub fn map_disks(&self, dm: &str) -> Vec<String> {
        self.root.list(&format!("sys/block/{dm}/slaves"))
    }

    /// The map's WWID (its dm uuid without `mpath-`).
    pub fn map_wwid(&self, dm: &str) -> Option<String> {
        self.root
            .attr(&format!("sys/block/{dm}/dm/uuid"))
            .and_then(|u| u.strip_prefix("mpath-").map(str::to_string))
    }

    /// Writes the multipath device section when it differs; whether it changed.
    pub fn write_multipath_section(&self) -> Result<bool> {
        let p = self.root.path(MULTIPATH_CONF);
        if std::fs::read_to_string(&p).is_ok_and(|s| s == MULTIPATH_SECTION) {
            return Ok(false);
        }
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io("creating multipath's conf.d", d, e))?;
        }
        let tmp = p.with_extension("conf.tmp");
        std::fs::write(&tmp, MULTIPATH_SECTION)
            .map_err(|e| Error::io("writing the multipath section", &tmp, e))?;
        std::fs::rename(&tmp, &p).map_err(|e| Error::io("writing the multipath section", &p, e))?;
        Ok(true)
    }

    /// Deletes SCSI disk `sd` (after its map let it go).
    pub fn delete_disk(&self, sd: &str) -> Result<()> {
        let p = self.root.path(&format!("sys/block/{sd}/device/delete"));
        match std::fs::write(&p, "1") {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("deleting the SCSI disk", p, e)),
        }
    }
}

/// Runs `program args`; its standard output, or an error with what it said.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| Error::Host(format!("cannot run {program}: {e} (is it installed?)")))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(Error::Command {
        command: format!("{program} {}", args.join(" ")),
        status: out.status.to_string(),
        stderr: {
            let e = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if e.is_empty() {
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            } else {
                e
            }
        },
    })
}

/// `iscsiadm`'s portal argument.
fn portal_arg(p: &Portal) -> String {
    p.to_string()
}

/// open-iscsi's lock directory.
const LOCK_DIR: &str = "/run/lock/iscsi";

/// The CHAP credentials the host logs in with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chap {
    /// The user.
    pub user: String,
    /// The secret.
    pub secret: String,
}

/// Creates (or updates) the node record of `iqn` at `portal` with [`NODE_SETTINGS`] and `chap`,
/// and logs in. Logging in to a portal with a session already is not an error.
pub fn login(iqn: &str, portal: &Portal, chap: Option<&Chap>) -> Result<()> {
    let p = portal_arg(portal);
    let node = ["-m", "node", "-T", iqn, "-p", p.as_str()];
    // open-iscsi makes its lock directory on first use, and two iscsiadm runs making it at
    // once fail ("File exists"): it is made here first.
    let _ = std::fs::create_dir_all(LOCK_DIR);
    run("iscsiadm", &[&node[..], &["-o", "new"]].concat())?;
    let mut settings: Vec<(&str, &str)> = NODE_SETTINGS.to_vec();
    if let Some(c) = chap {
        settings.extend([
            ("node.session.auth.authmethod", "CHAP"),
            ("node.session.auth.username", c.user.as_str()),
            ("node.session.auth.password", c.secret.as_str()),
        ]);
    }
    for (k, v) in settings {
        run(
            "iscsiadm",
            &[&node[..], &["-o", "update", "-n", k, "-v", v]].concat(),
        )
        .map_err(|e| match (e, k.starts_with("node.session.auth.")) {
            // Never the secret in a message or a log.
            (Error::Command { status, stderr, .. }, true) => Error::Command {
                command: format!("iscsiadm -m node -T {iqn} -p {p} -o update -n {k} -v <hidden>"),
                status,
                stderr: stderr.replace(v, "<hidden>"),
            },
            (e, _) => e,
        })?;
    }
    match run("iscsiadm", &[&node[..], &["--login"]].concat()) {
        Ok(_) => Ok(()),
        // 15: ISCSI_ERR_SESS_EXISTS.
        Err(Error::Command { status, .. }) if status.ends_with("status: 15") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Logs out of `iqn` at `portal` and deletes its node record; neither existing is not an error.
pub fn logout(iqn: &str, portal: &Portal) -> Result<()> {
    let p = portal_arg(portal);
    let node = ["-m", "node", "-T", iqn, "-p", p.as_str()];
    for op in [&["--logout"][..], &["-o", "delete"][..]] {
        match run("iscsiadm", &[&node[..], op].concat()) {
            Ok(_) => {}
            // 21: no session or record (ISCSI_ERR_NO_OBJS_FOUND).
            Err(Error::Command { status, .. }) if status.ends_with("status: 21") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes every node record of target `iqn`; none existing is not an error.
pub fn delete_records(iqn: &str) -> Result<()> {
    match run("iscsiadm", &["-m", "node", "-T", iqn, "-o", "delete"]) {
        Ok(_) => Ok(()),
        // 21: no record (ISCSI_ERR_NO_OBJS_FOUND).
        Err(Error::Command { status, .. }) if status.ends_with("status: 21") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether multipathd answers.
pub fn multipathd_running() -> bool {
    run("multipathd", &["show", "daemon"]).is_ok()
}

/// The host's initiator IQN from open-iscsi's file.
pub fn initiator_name(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().and_then(|s| {
        s.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix("InitiatorName="))
            .map(|v| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sysfs::write_file as write;

    #[test]
    fn sessions_disks_and_maps_are_read_from_sysfs() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for (sid, port, sd) in [(1, 3261, "sda"), (2, 3262, "sdb")] {
            let s = format!("sys/class/iscsi_session/session{sid}");
            write(r, &format!("{s}/targetname"), "iqn.x:vol.a\n");
            write(r, &format!("{s}/state"), "LOGGED_IN\n");
            write(
                r,
                &format!("{s}/device/target{sid}:0:0/{sid}:0:0:0/block/{sd}/size"),
                "",
            );
            let c = format!("sys/class/iscsi_connection/connection{sid}:0");
            write(r, &format!("{c}/persistent_address"), "10.0.2.2\n");
            write(r, &format!("{c}/persistent_port"), &format!("{port}\n"));
            write(r, &format!("sys/block/{sd}/holders/dm-0"), "");
            write(r, &format!("sys/block/dm-0/slaves/{sd}"), "");
        }
        write(
            r,
            "sys/class/iscsi_session/session3/targetname",
            "iqn.x:vol.b\n",
        );
        write(r, "sys/block/dm-0/dm/uuid", "mpath-36001405abc\n");
        write(r, "sys/block/dm-0/dm/name", "36001405abc\n");
        let i = Iscsi::new(Root::at(r));
        let s = i.sessions_of("iqn.x:vol.a");
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].portal, Some(Portal::new("10.0.2.2", 3262)));
        assert_eq!(s[0].state, "LOGGED_IN");
        assert_eq!(i.disk(2, 0).as_deref(), Some("sdb"));
        assert_eq!(i.disk(2, 1), None);
        assert_eq!(
            i.map_of("sda"),
            Some(("dm-0".to_string(), "36001405abc".to_string()))
        );
        assert_eq!(i.map_disks("dm-0"), vec!["sda", "sdb"]);
        assert_eq!(i.map_wwid("dm-0").as_deref(), Some("36001405abc"));
        assert!(i.write_multipath_section().unwrap());
        assert!(!i.write_multipath_section().unwrap());
    }

    #[test]
    fn the_initiator_name_is_read_from_open_iscsis_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("initiatorname.iscsi");
        std::fs::write(&p, "## comment\nInitiatorName=iqn.2004-10.com.x:h1\n").unwrap();
        assert_eq!(initiator_name(&p).as_deref(), Some("iqn.2004-10.com.x:h1"));
        assert_eq!(initiator_name(&d.path().join("none")), None);
    }
}

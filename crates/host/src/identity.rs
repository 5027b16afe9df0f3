//! Who the host is to the cluster: its name, its NVMe host NQN and Host Identifier (Linux's
//! `/etc/nvme/hostnqn` and `/etc/nvme/hostid`, which `nvme connect` uses too) and its iSCSI
//! initiator IQN (`/etc/iscsi/initiatorname.iscsi`).

use crate::sysfs::Root;

/// The host's names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The host's name in the cluster (its hostname unless configured).
    pub name: String,
    /// The NVMe host NQN.
    pub nqn: Option<String>,
    /// The NVMe Host Identifier.
    pub hostid: Option<String>,
    /// The iSCSI initiator IQN.
    pub iqn: Option<String>,
}

impl Identity {
    /// The identity read under `root`, named `name` (or the hostname).
    pub fn read(root: &Root, name: Option<&str>) -> Self {
        let nqn = root.attr("etc/nvme/hostnqn").filter(|s| !s.is_empty());
        let hostid = root
            .attr("etc/nvme/hostid")
            .filter(|s| !s.is_empty())
            .or_else(|| {
                // An `nqn.2014-08.org.nvmexpress:uuid:` NQN carries the Host Identifier.
                nqn.as_deref()
                    .and_then(|n| n.strip_prefix("nqn.2014-08.org.nvmexpress:uuid:"))
                    .map(str::to_string)
            });
        let iqn = crate::iscsi::initiator_name(&root.path("etc/iscsi/initiatorname.iscsi"));
        let name = name
            .map(str::to_string)
            .or_else(|| root.attr("etc/hostname"))
            .or_else(|| root.attr("proc/sys/kernel/hostname"))
            .unwrap_or_default();
        Self {
            name,
            nqn,
            hostid,
            iqn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_initiators_files() {
        let d = tempfile::tempdir().unwrap();
        let w = |rel: &str, s: &str| crate::sysfs::write_file(d.path(), rel, s);
        w(
            "etc/nvme/hostnqn",
            "nqn.2014-08.org.nvmexpress:uuid:a1c0b1e2-0000-4000-8000-000000000001\n",
        );
        w(
            "etc/iscsi/initiatorname.iscsi",
            "InitiatorName=iqn.2004-10.com.x:h\n",
        );
        w("proc/sys/kernel/hostname", "compute-1\n");
        let root = Root::at(d.path());
        let id = Identity::read(&root, None);
        assert_eq!(id.name, "compute-1");
        assert_eq!(
            id.hostid.as_deref(),
            Some("a1c0b1e2-0000-4000-8000-000000000001")
        );
        assert_eq!(id.iqn.as_deref(), Some("iqn.2004-10.com.x:h"));
        w("etc/nvme/hostid", "b2\n");
        let id = Identity::read(&root, Some("h9"));
        assert_eq!((id.name.as_str(), id.hostid.as_deref()), ("h9", Some("b2")));
    }
}

//! Network namespaces for multi-host tests, made and removed by the test (root and iproute2
//! needed). Traffic goes only to addresses inside these namespaces.
//!
//! Layout: a switch namespace holds two bridges, the cluster network (`br0`, 10.231.7.0/24:
//! etcd, the API, replication) and the host network (`br1`, 10.231.8.0/24: NVMe/TCP). Each node
//! namespace has a port on both; the test process (root namespace) has one on each, at `.200`,
//! to reach the nodes. Cutting a node's cluster port isolates it from etcd and the other nodes
//! while hosts still reach it, as a failed storage-network switch port would.

use std::process::{Command, Stdio};

/// The cluster network's prefix.
pub const CLUSTER: &str = "10.231.7";
/// The host network's prefix.
pub const HOSTS: &str = "10.231.8";

/// Runs `ip args`; panics with its output when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running ip (install iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test's namespaces; removed when dropped.
pub struct Net {
    tag: String,
    namespaces: Vec<String>,
}

impl Net {
    /// Makes the switch namespace and the root namespace's ports.
    pub fn new() -> Self {
        assert!(
            is_root(),
            "network namespace tests need root (CI runs as root)"
        );
        let tag = format!("alc{}", std::process::id() % 100_000);
        let mut net = Self {
            tag,
            namespaces: Vec::new(),
        };
        let sw = net.add_ns("sw");
        for br in ["br0", "br1"] {
            ip(&["-n", &sw, "link", "add", br, "type", "bridge"]);
            ip(&["-n", &sw, "link", "set", br, "up"]);
        }
        for (port, br, prefix) in [("r7", "br0", CLUSTER), ("r8", "br1", HOSTS)] {
            let root = format!("{}{port}", net.tag);
            ip(&[
                "link", "add", &root, "type", "veth", "peer", "name", port, "netns", &sw,
            ]);
            ip(&["-n", &sw, "link", "set", port, "master", br, "up"]);
            ip(&["addr", "add", &format!("{prefix}.200/24"), "dev", &root]);
            ip(&["link", "set", &root, "up"]);
        }
        net
    }

    fn add_ns(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.tag);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        self.namespaces.push(ns.clone());
        ns
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.tag)
    }

    /// A host namespace `name` at `.last` on the cluster network (port `c<last>` on the switch)
    /// and, with `hosts`, on the host network (port `h<last>`). Returns the namespace.
    pub fn host(&mut self, name: &str, last: u8, hosts: bool) -> String {
        let ns = self.add_ns(name);
        let sw = self.switch();
        let mut nets = vec![("c0", format!("c{last}"), "br0", CLUSTER)];
        if hosts {
            nets.push(("h0", format!("h{last}"), "br1", HOSTS));
        }
        for (inner, port, br, prefix) in nets {
            ip(&[
                "link", "add", inner, "netns", &ns, "type", "veth", "peer", "name", &port, "netns",
                &sw,
            ]);
            ip(&["-n", &sw, "link", "set", &port, "master", br, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{prefix}.{last}/24"),
                "dev",
                inner,
            ]);
            ip(&["-n", &ns, "link", "set", inner, "up"]);
        }
        ns
    }

    /// Cuts (`up = false`) or restores the cluster-network port of the host at `.last`.
    pub fn cluster_port(&self, last: u8, up: bool) {
        let port = format!("c{last}");
        ip(&[
            "-n",
            &self.switch(),
            "link",
            "set",
            &port,
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veths, and with them their peers.
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn is_root() -> bool {
    // The effective user id, from /proc (no libc call needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

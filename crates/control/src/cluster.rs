//! The cluster configuration (the seed's "server-side solution configuration", section 4 step 2),
//! validated field by field. Node groups such as `node-[10-12]` give each node of the group a
//! data address: the group's start address goes to the lowest-numbered node, the next address to
//! the next node, all inside the group's subnet.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use alcubierre_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

/// Where the cluster configuration is stored.
pub const CONFIG_KEY: &str = "cluster/config";

/// The backend the cluster destages to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackendAddress {
    /// A directory of sparse files, one per volume (one machine, or a shared file system).
    File {
        /// Absolute path of the directory.
        path: String,
    },
    /// A Ceph cluster's RBD pool.
    Rbd {
        /// Monitor addresses, `ip:port` (msgr2 3300 or legacy 6789).
        monitors: Vec<String>,
        /// The pool holding the images.
        pool: String,
        /// The Ceph user, without `client.` (default `admin`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// A keyring file on every node (absolute path); none with cephx off.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keyring: Option<String>,
    },
}

impl BackendAddress {
    /// A Ceph backend's client settings (`None` for a file backend): the monitors as
    /// librados's `mon_host`, operations bounded by `timeout`.
    pub fn rbd_config(&self, timeout: Duration) -> Option<alcubierre_rbd::RbdConfig> {
        let BackendAddress::Rbd {
            monitors,
            pool,
            user,
            keyring,
        } = self
        else {
            return None;
        };
        Some(alcubierre_rbd::RbdConfig {
            conf_file: None,
            mon_host: Some(monitors.join(",")),
            pool: pool.clone(),
            user: user.clone().unwrap_or_else(|| "admin".into()),
            keyring: keyring.clone(),
            op_timeout: timeout,
        })
    }
}

/// Data and replica transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// TCP.
    Tcp,
    /// RDMA (RoCE).
    Rdma,
}

/// Multipath paths per host, per protocol (seed: iSCSI 4, NVMe/TCP 1, NVMe/RDMA 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Multipath {
    /// iSCSI paths.
    pub iscsi: u32,
    /// NVMe/TCP paths.
    pub nvme_tcp: u32,
    /// NVMe/RDMA paths.
    pub nvme_rdma: u32,
}

impl Default for Multipath {
    fn default() -> Self {
        Self {
            iscsi: 4,
            nvme_tcp: 1,
            nvme_rdma: 2,
        }
    }
}

/// A group of nodes sharing a data subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeGroup {
    /// `node-[10-12]`, or a single name.
    pub nodes: String,
    /// Data subnet, `192.168.10.0/24`.
    pub subnet: String,
    /// Address of the lowest-numbered node.
    pub start: String,
}

/// The cluster configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The backend; saved only after a connectivity test passes ([`probe_backend`]).
    #[serde(default)]
    pub backend: Option<BackendAddress>,
    /// Data (front-end) transport.
    #[serde(default = "tcp")]
    pub data_transport: Transport,
    /// Replica transport.
    #[serde(default = "tcp")]
    pub replica_transport: Transport,
    /// Node groups and their data subnets.
    #[serde(default)]
    pub node_groups: Vec<NodeGroup>,
    /// Journals per cache device.
    #[serde(default = "one")]
    pub partitions_per_cache_device: u32,
    /// Move a lost replica to another node automatically.
    #[serde(default = "yes")]
    pub dynamic_migration: bool,
    /// How long a lost replica's node may come back before it is replaced, seconds.
    #[serde(default = "default_delay")]
    pub migration_delay_s: u64,
    /// Destage rate in bytes per second; default: active nodes x 50 MB/s.
    pub destage_rate: Option<u64>,
    /// Multipath defaults.
    #[serde(default)]
    pub multipath: Multipath,
    /// Heartbeat interval, milliseconds.
    #[serde(default = "default_hb")]
    pub heartbeat_interval_ms: u64,
    /// A node without heartbeat for this long is unavailable, milliseconds.
    #[serde(default = "default_hb_timeout")]
    pub heartbeat_timeout_ms: u64,
}

fn tcp() -> Transport {
    Transport::Tcp
}
fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_delay() -> u64 {
    600
}
fn default_hb() -> u64 {
    1000
}
fn default_hb_timeout() -> u64 {
    5000
}

impl Default for ClusterConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults")
    }
}

/// A configuration error naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The field, as a path (`node_groups[0].start`).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Expands `node-[10-12]` to `node-10`, `node-11`, `node-12`; a plain name to itself.
pub fn expand_group(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('[') else {
        if pattern.is_empty() {
            return Err("empty node name".into());
        }
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find(']')
        .map(|c| open + c)
        .ok_or_else(|| format!("{pattern:?}: missing ']'"))?;
    let (prefix, range, suffix) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let (a, b) = range
        .split_once('-')
        .ok_or_else(|| format!("{pattern:?}: the range must be [FIRST-LAST]"))?;
    let width = a.len();
    let (a, b): (u32, u32) = (
        a.parse()
            .map_err(|_| format!("{pattern:?}: {a:?} is not a number"))?,
        b.parse()
            .map_err(|_| format!("{pattern:?}: {b:?} is not a number"))?,
    );
    if a > b || b - a > 1000 {
        return Err(format!(
            "{pattern:?}: the range is empty or longer than 1000 nodes"
        ));
    }
    Ok((a..=b)
        .map(|i| format!("{prefix}{i:0width$}{suffix}"))
        .collect())
}

fn parse_subnet(s: &str) -> Result<(Ipv4Addr, u32), String> {
    let (ip, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX"))?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
    let len: u32 = len
        .parse()
        .map_err(|_| format!("prefix {len:?} is not a number"))?;
    if !(8..=30).contains(&len) {
        return Err(format!("prefix /{len} is outside /8../30"));
    }
    Ok((ip, len))
}

impl ClusterConfig {
    /// Checks every field; the first error names it. A field this release stores but does not
    /// apply is refused unless it keeps its default, so nothing is accepted that does nothing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, t) in [
            ("data_transport", self.data_transport),
            ("replica_transport", self.replica_transport),
        ] {
            if t == Transport::Rdma {
                return Err(bad(field, "rdma: not built in this release (tcp only)"));
            }
        }
        if !(1..=16).contains(&self.partitions_per_cache_device) {
            return Err(bad(
                "partitions_per_cache_device",
                "must be between 1 and 16",
            ));
        }
        if !(100..=60_000).contains(&self.heartbeat_interval_ms) {
            return Err(bad(
                "heartbeat_interval_ms",
                "must be between 100 and 60000 milliseconds",
            ));
        }
        if self.partitions_per_cache_device != 1 {
            return Err(bad(
                "partitions_per_cache_device",
                "not applied cluster-wide in this release: a cache device's journals are set \
                 when it is formatted (`alcubierre format --partitions N`, or `partitions` in a \
                 node's [cache] section)",
            ));
        }
        if self.heartbeat_timeout_ms > 600_000 {
            return Err(bad(
                "heartbeat_timeout_ms",
                "must be at most 600000 milliseconds",
            ));
        }
        if self.migration_delay_s > 7 * 86_400 {
            return Err(bad("migration_delay_s", "must be at most 604800 (a week)"));
        }
        if self.heartbeat_timeout_ms < 2 * self.heartbeat_interval_ms {
            return Err(bad(
                "heartbeat_timeout_ms",
                format!(
                    "must be at least twice heartbeat_interval_ms ({})",
                    self.heartbeat_interval_ms
                ),
            ));
        }
        if self.destage_rate == Some(0) {
            return Err(bad("destage_rate", "must be positive (bytes per second)"));
        }
        // Handed to hosts with the connection info (how many of the portals to use).
        for (k, v) in [
            ("multipath.iscsi", self.multipath.iscsi),
            ("multipath.nvme_tcp", self.multipath.nvme_tcp),
            ("multipath.nvme_rdma", self.multipath.nvme_rdma),
        ] {
            if !(1..=8).contains(&v) {
                return Err(bad(k, "must be between 1 and 8 paths"));
            }
        }
        match &self.backend {
            None => {}
            Some(BackendAddress::File { path }) if !path.starts_with('/') => {
                return Err(bad(
                    "backend.path",
                    format!("{path:?} is not an absolute path"),
                ));
            }
            Some(BackendAddress::File { .. }) => {}
            Some(BackendAddress::Rbd {
                monitors,
                pool,
                user,
                keyring,
            }) => {
                if let Some(u) = user {
                    if u.is_empty()
                        || u.starts_with("client.")
                        || !u
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    {
                        return Err(bad(
                            "backend.user",
                            format!("{u:?} is not a Ceph user name (without \"client.\")"),
                        ));
                    }
                }
                if let Some(k) = keyring {
                    if !k.starts_with('/') {
                        return Err(bad(
                            "backend.keyring",
                            format!("{k:?} is not an absolute path"),
                        ));
                    }
                }
                if monitors.is_empty() {
                    return Err(bad(
                        "backend.monitors",
                        "at least one monitor address is needed",
                    ));
                }
                for (i, m) in monitors.iter().enumerate() {
                    if monitor_addr(m).is_none() {
                        return Err(bad(
                            format!("backend.monitors[{i}]"),
                            format!("{m:?} is not ip:port (optionally v1: or v2:)"),
                        ));
                    }
                }
                if pool.is_empty()
                    || pool.len() > 128
                    || !pool
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(bad("backend.pool", format!("{pool:?} is not a pool name")));
                }
            }
        }
        let mut seen = BTreeMap::new();
        for (i, g) in self.node_groups.iter().enumerate() {
            let f = |k: &str| format!("node_groups[{i}].{k}");
            let names = expand_group(&g.nodes).map_err(|e| bad(f("nodes"), e))?;
            for n in &names {
                if let Some(j) = seen.insert(n.clone(), i) {
                    return Err(bad(f("nodes"), format!("{n} is also in node_groups[{j}]")));
                }
            }
            let (net, len) = parse_subnet(&g.subnet).map_err(|e| bad(f("subnet"), e))?;
            let start: Ipv4Addr = g
                .start
                .parse()
                .map_err(|_| bad(f("start"), format!("{:?} is not an IPv4 address", g.start)))?;
            let mask = u32::MAX << (32 - len);
            let base = u32::from(net) & mask;
            let last = start.to_bits() as u64 + names.len() as u64 - 1;
            let broadcast = (base | !mask) as u64;
            if start.to_bits() & mask != base || start.to_bits() == base || last >= broadcast {
                return Err(bad(
                    f("start"),
                    format!(
                        "{} addresses from {start} do not fit in {} (host addresses only)",
                        names.len(),
                        g.subnet
                    ),
                ));
            }
        }
        if !self.node_groups.is_empty() {
            return Err(bad(
                "node_groups",
                "not applied in this release: each node advertises the data addresses of its \
                 own configuration (nvmf.advertise, iscsi.advertise)",
            ));
        }
        Ok(())
    }

    /// The data address of every node in a group, in node order.
    pub fn data_addresses(&self) -> BTreeMap<String, Ipv4Addr> {
        let mut out = BTreeMap::new();
        for g in &self.node_groups {
            let (Ok(names), Ok(start)) = (expand_group(&g.nodes), g.start.parse::<Ipv4Addr>())
            else {
                continue;
            };
            for (i, n) in names.into_iter().enumerate() {
                out.insert(n, Ipv4Addr::from_bits(start.to_bits() + i as u32));
            }
        }
        out
    }

    /// The destage rate for `active_nodes`: the configured one or nodes x 50 MB/s.
    pub fn destage_rate(&self, active_nodes: u32) -> u64 {
        self.destage_rate
            .unwrap_or(active_nodes.max(1) as u64 * 50_000_000)
    }
}

/// The stored configuration, or the defaults when none was saved.
pub async fn load(store: &dyn Store) -> Result<ClusterConfig, StoredConfigError> {
    match store.get(CONFIG_KEY).await? {
        Some(kv) => {
            serde_json::from_slice(&kv.value).map_err(|e| StoredConfigError::Corrupt(e.to_string()))
        }
        None => Ok(ClusterConfig::default()),
    }
}

/// Why the stored configuration could not be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum StoredConfigError {
    /// A field is invalid or the backend did not answer.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored record does not parse.
    #[error("the stored cluster configuration ({CONFIG_KEY}) does not parse: {0}")]
    Corrupt(String),
}

/// Validates `c`, runs the backend connectivity test when the backend changed, and saves it.
/// Nodes watch the key and apply it while running.
pub async fn save(store: &dyn Store, c: &ClusterConfig) -> Result<(), StoredConfigError> {
    c.validate()?;
    let old = load(store).await?;
    if c.backend != old.backend {
        if let Some(b) = &c.backend {
            probe_backend(b, Duration::from_secs(3)).await?;
        }
    }
    store
        .put(CONFIG_KEY, serde_json::to_vec(c).expect("serialises"), None)
        .await?;
    Ok(())
}

/// The backend connectivity test: a file backend's directory must exist and take a synced file;
/// a Ceph backend needs a majority of its monitors to answer with Ceph's banner (`ceph v2` for
/// msgr2, `ceph v027` for msgr1) within `timeout`, and then a client connection (librados,
/// loaded at run time) as the configured user to find the pool enabled for RBD; the error names
/// the field at fault.
pub async fn probe_backend(b: &BackendAddress, timeout: Duration) -> Result<(), ConfigError> {
    match b {
        BackendAddress::File { path } => {
            let probe = std::path::Path::new(path)
                .join(format!(".alcubierre-probe-{}", std::process::id()));
            let r = (|| -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::File::create(&probe)?;
                f.write_all(b"alcubierre backend probe\n")?;
                f.sync_all()?;
                std::fs::remove_file(&probe)
            })();
            r.map_err(|e| bad("backend.path", format!("{path}: {e}")))
        }
        BackendAddress::Rbd {
            monitors, keyring, ..
        } => {
            let mut failures = Vec::new();
            let mut answered = Vec::new();
            for m in monitors {
                match probe_monitor(m, timeout).await {
                    Ok((v2, a)) => answered.push(format!("{}:{a}", if v2 { "v2" } else { "v1" })),
                    Err(e) => failures.push(format!("{m}: {e}")),
                }
            }
            if failures.len() * 2 >= monitors.len() {
                return Err(bad(
                    "backend.monitors",
                    format!(
                        "no majority of monitors answered as Ceph ({})",
                        failures.join("; ")
                    ),
                ));
            }
            // Then as a client would: the monitors let the user in, the pool exists and is
            // for RBD.
            let mut cfg = b.rbd_config(timeout).expect("a Ceph backend");
            cfg.mon_host = Some(answered.join(","));
            let r = tokio::task::spawn_blocking(move || {
                alcubierre_rbd::RbdBackend::connect_checked(&cfg).map(drop)
            })
            .await
            .map_err(|e| bad("backend", format!("the probe failed: {e}")))?;
            r.map_err(|(culprit, e)| {
                let field = match culprit {
                    alcubierre_rbd::Culprit::Monitors => "backend.monitors",
                    alcubierre_rbd::Culprit::User if keyring.is_some() => "backend.keyring",
                    alcubierre_rbd::Culprit::User => "backend.user",
                    alcubierre_rbd::Culprit::Pool => "backend.pool",
                };
                bad(field, e.to_string())
            })
        }
    }
}

/// A monitor address: `ip:port`, optionally with Ceph's `v1:` or `v2:` prefix.
pub fn monitor_addr(m: &str) -> Option<SocketAddr> {
    let bare = m
        .strip_prefix("v2:")
        .or_else(|| m.strip_prefix("v1:"))
        .unwrap_or(m);
    bare.parse().ok()
}

/// Whether `addr` answers with Ceph's banner within `timeout`: msgr2 (`true`) or msgr1, and
/// its address.
async fn probe_monitor(addr: &str, timeout: Duration) -> Result<(bool, SocketAddr), String> {
    let addr = monitor_addr(addr).ok_or_else(|| "not ip:port".to_string())?;
    let talk = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut banner = [0u8; 8];
        s.read_exact(&mut banner)
            .await
            .map_err(|e| format!("no banner: {e}"))?;
        if banner.starts_with(b"ceph v2") {
            Ok((true, addr))
        } else if banner.starts_with(b"ceph v") {
            Ok((false, addr))
        } else {
            Err(format!(
                "answered {:?}, not a Ceph monitor",
                String::from_utf8_lossy(&banner)
            ))
        }
    };
    tokio::time::timeout(timeout, talk)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_seed() {
        let c = ClusterConfig::default();
        assert_eq!(c.partitions_per_cache_device, 1);
        assert!(c.dynamic_migration);
        assert_eq!(
            c.multipath,
            Multipath {
                iscsi: 4,
                nvme_tcp: 1,
                nvme_rdma: 2
            }
        );
        assert_eq!(c.destage_rate(3), 150_000_000);
        c.validate().unwrap();
    }

    #[test]
    fn node_groups_assign_addresses_in_node_order() {
        assert_eq!(
            expand_group("node-[10-12]").unwrap(),
            ["node-10", "node-11", "node-12"]
        );
        assert_eq!(expand_group("n[08-10]").unwrap(), ["n08", "n09", "n10"]);
        assert!(expand_group("node-[12-10]").is_err());
        let c = ClusterConfig {
            node_groups: vec![NodeGroup {
                nodes: "node-[10-12]".into(),
                subnet: "192.168.10.0/24".into(),
                start: "192.168.10.100".into(),
            }],
            ..ClusterConfig::default()
        };
        // A well-formed group: refused only because groups are not applied yet.
        assert_eq!(c.validate().unwrap_err().field, "node_groups");
        let a = c.data_addresses();
        assert_eq!(a["node-10"], Ipv4Addr::new(192, 168, 10, 100));
        assert_eq!(a["node-12"], Ipv4Addr::new(192, 168, 10, 102));
    }

    #[test]
    fn errors_name_the_field() {
        let group = |nodes: &str, subnet: &str, start: &str| NodeGroup {
            nodes: nodes.into(),
            subnet: subnet.into(),
            start: start.into(),
        };
        let cases = [
            (
                vec![group("node-[1-3]", "10.0.0.0/24", "10.0.1.5")],
                "node_groups[0].start",
            ),
            (
                vec![group("node-[1-3]", "10.0.0.0/24", "10.0.0.254")],
                "node_groups[0].start",
            ),
            (
                vec![group("node-[1-3]", "10.0.0.0", "10.0.0.5")],
                "node_groups[0].subnet",
            ),
            (
                vec![group("node-[1-", "10.0.0.0/24", "10.0.0.5")],
                "node_groups[0].nodes",
            ),
            (
                vec![
                    group("node-[1-3]", "10.0.0.0/24", "10.0.0.5"),
                    group("node-3", "10.0.1.0/24", "10.0.1.5"),
                ],
                "node_groups[1].nodes",
            ),
        ];
        for (groups, field) in cases {
            let c = ClusterConfig {
                node_groups: groups,
                ..ClusterConfig::default()
            };
            assert_eq!(c.validate().unwrap_err().field, field);
        }
        let c = ClusterConfig {
            heartbeat_timeout_ms: 1500,
            ..ClusterConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "heartbeat_timeout_ms");
        let c = ClusterConfig {
            partitions_per_cache_device: 0,
            ..ClusterConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().field,
            "partitions_per_cache_device"
        );
        let e = serde_json::from_str::<ClusterConfig>(r#"{"bogus": 1}"#).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    /// Fields stored but not applied in this release are refused, naming the field and why,
    /// unless they keep their defaults.
    #[test]
    fn fields_not_applied_are_refused() {
        let refused = |c: ClusterConfig| c.validate().unwrap_err();
        let e = refused(ClusterConfig {
            data_transport: Transport::Rdma,
            ..ClusterConfig::default()
        });
        assert_eq!(e.field, "data_transport");
        assert!(e.reason.contains("rdma: not built"), "{e}");
        let e = refused(ClusterConfig {
            replica_transport: Transport::Rdma,
            ..ClusterConfig::default()
        });
        assert_eq!(e.field, "replica_transport");
        let e = refused(ClusterConfig {
            partitions_per_cache_device: 2,
            ..ClusterConfig::default()
        });
        assert_eq!(e.field, "partitions_per_cache_device");
        let e = refused(ClusterConfig {
            multipath: Multipath {
                iscsi: 9,
                ..Multipath::default()
            },
            ..ClusterConfig::default()
        });
        assert_eq!(e.field, "multipath.iscsi");
        let e = refused(ClusterConfig {
            node_groups: vec![NodeGroup {
                nodes: "node-[1-3]".into(),
                subnet: "10.0.0.0/24".into(),
                start: "10.0.0.10".into(),
            }],
            ..ClusterConfig::default()
        });
        assert_eq!(e.field, "node_groups");
        assert!(ClusterConfig::default().validate().is_ok());
    }

    #[test]
    fn backend_fields_are_checked() {
        let mut c = ClusterConfig {
            backend: Some(BackendAddress::File {
                path: "rel/dir".into(),
            }),
            ..ClusterConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "backend.path");
        c.backend = Some(BackendAddress::Rbd {
            monitors: vec!["127.0.0.1:3300".into(), "mon-a".into()],
            pool: "rbd".into(),
            user: None,
            keyring: None,
        });
        assert_eq!(c.validate().unwrap_err().field, "backend.monitors[1]");
        c.backend = Some(BackendAddress::Rbd {
            monitors: vec!["127.0.0.1:3300".into()],
            pool: "a pool".into(),
            user: None,
            keyring: None,
        });
        assert_eq!(c.validate().unwrap_err().field, "backend.pool");
        c.backend = Some(BackendAddress::Rbd {
            monitors: vec!["127.0.0.1:3300".into()],
            pool: "rbd".into(),
            user: Some("client.admin".into()),
            keyring: None,
        });
        assert_eq!(c.validate().unwrap_err().field, "backend.user");
        c.backend = Some(BackendAddress::Rbd {
            monitors: vec!["127.0.0.1:3300".into()],
            pool: "rbd".into(),
            user: Some("cinder".into()),
            keyring: Some("keyring".into()),
        });
        assert_eq!(c.validate().unwrap_err().field, "backend.keyring");
        let j: ClusterConfig = serde_json::from_str(
            r#"{"backend":{"kind":"rbd","monitors":["[::1]:3300","v2:10.0.0.2:3300","v1:10.0.0.3:6789"],"pool":"volumes"}}"#,
        )
        .unwrap();
        j.validate().unwrap();
    }

    #[tokio::test]
    async fn file_backend_probe_needs_a_writable_directory() {
        let d = tempfile::tempdir().unwrap();
        let ok = BackendAddress::File {
            path: d.path().display().to_string(),
        };
        probe_backend(&ok, Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            0,
            "probe removed"
        );
        let missing = BackendAddress::File {
            path: d.path().join("nope").display().to_string(),
        };
        let e = probe_backend(&missing, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(e.field, "backend.path");
        assert!(e.reason.contains("nope"), "{e}");
    }

    #[tokio::test]
    async fn rbd_probe_wants_a_majority_of_ceph_banners() {
        // A closed port, a listener that speaks something else, and one that sends msgr2's
        // banner (a real monitor's first bytes; a real cluster: tests/ceph_probe.rs).
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let serve = |banner: &'static [u8]| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let a = l.local_addr().unwrap().to_string();
            std::thread::spawn(move || {
                use std::io::Write;
                while let Ok((mut s, _)) = l.accept() {
                    let _ = s.write_all(banner);
                }
            });
            a
        };
        let ceph = serve(b"ceph v2\n");
        let http = serve(b"HTTP/1.1 400 Bad Request\r\n");
        let rbd = |m: Vec<&String>| BackendAddress::Rbd {
            monitors: m.into_iter().cloned().collect(),
            pool: "rbd".into(),
            user: None,
            keyring: None,
        };
        let t = Duration::from_secs(2);
        // The banner is Ceph's, but nothing behind it speaks Ceph: the client connection
        // fails on the monitors (a real cluster: tests/ceph_probe.rs).
        let e = probe_backend(&rbd(vec![&ceph]), t).await.unwrap_err();
        assert_eq!(e.field, "backend.monitors", "{e}");
        let e = probe_backend(&rbd(vec![&ceph, &closed]), t)
            .await
            .unwrap_err();
        assert_eq!(e.field, "backend.monitors");
        assert!(e.reason.contains(&closed), "{e}");
        let e = probe_backend(&rbd(vec![&http]), t).await.unwrap_err();
        assert!(e.reason.contains("not a Ceph monitor"), "{e}");
    }
}

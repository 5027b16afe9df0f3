//! The node configuration file of `alcubierre serve` (TOML). Unknown keys are errors; every
//! error names the field. Example (`docs/serve.md` explains each key):
//!
//! ```toml
//! [node]
//! name = "node-1"
//!
//! [cache]
//! device = "/var/lib/alcubierre/cache.img"   # NVMe block device or file
//! create_size = "4GiB"                       # file only: create and format when missing
//! partitions = 1
//! destage_rate = "50MB"                      # bytes per second
//!
//! [backend]
//! kind = "file"                              # "file" (a directory) or "rbd" (Ceph)
//! dir = "/var/lib/alcubierre/backend"        # file: the directory
//! # rbd: pool = "rbd", conf = "/etc/ceph/ceph.conf", mon_host = "...", user = "admin",
//! #      keyring = "...", op_timeout_s = 10
//!
//! [nvmf]
//! listen = ["0.0.0.0:4420"]                 # I/O portals (also serve discovery)
//! discovery_listen = ["0.0.0.0:8009"]        # discovery only
//! advertise = ["192.0.2.10"]                 # addresses hosts reach this node by
//!
//! [iscsi]                                    # optional: serve iSCSI too
//! listen = ["0.0.0.0:3260"]
//! advertise = "192.0.2.10:3260"              # same form: IP or IP:port, one or a list
//!
//! [[volume]]
//! name = "vol1"
//! size = "10GiB"
//! block_size = 4096
//! hosts = ["nqn.2014-08.org.nvmexpress:uuid:..."]   # or ["*"] for any host
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alcubierre_types::{BlockSize, ByteSize, VolumeId};
use anyhow::{bail, Context};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node.
    #[serde(default)]
    pub node: NodeSection,
    /// The cache device; absent only when every volume is `memory = true`.
    pub cache: Option<CacheSection>,
    /// The capacity backend; in a cluster, absent means the cluster configuration's.
    pub backend: Option<BackendSection>,
    /// NVMe/TCP front end.
    pub nvmf: NvmfSection,
    /// iSCSI front end (off when absent).
    pub iscsi: Option<IscsiSection>,
    /// Exported volumes.
    #[serde(default, rename = "volume")]
    pub volumes: Vec<VolumeSection>,
    /// Join a cluster: register in its metadata store and heartbeat.
    pub cluster: Option<ClusterSection>,
}

/// `[cluster]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// etcd client URLs (`http://host:2379`).
    pub etcd: Vec<String>,
    /// Heartbeat interval, milliseconds.
    #[serde(default = "default_hb")]
    pub heartbeat_interval_ms: u64,
    /// Lease TTL: without heartbeats for this long the node is unavailable, milliseconds.
    #[serde(default = "default_hb_timeout")]
    pub heartbeat_timeout_ms: u64,
    /// Serve the REST API here (any node can: it is stateless over the store).
    pub api_listen: Option<SocketAddr>,
    /// The API's bearer token (or the environment's ALCUBIERRE_TOKEN).
    pub api_token: Option<String>,
    /// Where followers listen for their primaries (`ip:port`, reachable by the other nodes);
    /// default: the first NVMe/TCP listen address (127.0.0.1 if that is a wildcard), any port.
    pub replica_listen: Option<SocketAddr>,
    /// Serve the API over TLS with this PEM certificate chain (with `api_tls_key`).
    pub api_tls_cert: Option<std::path::PathBuf>,
    /// The certificate's PEM private key.
    pub api_tls_key: Option<std::path::PathBuf>,
}

fn default_hb() -> u64 {
    1000
}
fn default_hb_timeout() -> u64 {
    5000
}

/// `[node]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Node name, for logs.
    #[serde(default = "default_name")]
    pub name: String,
    /// First NVMe controller id of this node (ranges must not overlap across the cluster).
    #[serde(default = "default_cntlid_base")]
    pub cntlid_base: u16,
    /// Number of controller ids.
    #[serde(default = "default_cntlid_count")]
    pub cntlid_count: u16,
    /// This node's ANA group id (1-based, distinct per node).
    #[serde(default = "default_ana_group")]
    pub ana_group: u32,
    /// Runtime worker threads (default: one per CPU).
    pub threads: Option<usize>,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            name: default_name(),
            cntlid_base: default_cntlid_base(),
            cntlid_count: default_cntlid_count(),
            ana_group: default_ana_group(),
            threads: None,
        }
    }
}

fn default_name() -> String {
    "node-1".into()
}
fn default_cntlid_base() -> u16 {
    1
}
fn default_cntlid_count() -> u16 {
    4096
}
fn default_ana_group() -> u32 {
    1
}

/// `[cache]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Block device or file.
    pub device: PathBuf,
    /// Create (and format) a file of this size when `device` does not exist.
    pub create_size: Option<Size>,
    /// Journals on the device when formatting.
    #[serde(default = "one")]
    pub partitions: u32,
    /// Destage rate limit in bytes per second (default 50 MB/s).
    #[serde(default = "default_rate")]
    pub destage_rate: Size,
}

fn one() -> u32 {
    1
}
fn default_rate() -> Size {
    Size(50_000_000)
}

/// `[backend]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    /// Backend kind: `file` or `rbd`.
    pub kind: String,
    /// Directory of the file backend.
    pub dir: Option<PathBuf>,
    /// RBD: the pool holding the images (default `rbd`).
    pub pool: Option<String>,
    /// RBD: a ceph.conf to read.
    pub conf: Option<PathBuf>,
    /// RBD: monitor addresses (Ceph's `mon_host` syntax), overriding the conf file's.
    pub mon_host: Option<String>,
    /// RBD: the Ceph user without `client.` (default `admin`).
    pub user: Option<String>,
    /// RBD: a keyring file, overriding the conf file's.
    pub keyring: Option<PathBuf>,
    /// RBD: the longest a Ceph operation may take before it fails and is retried, seconds
    /// (default 10).
    pub op_timeout_s: Option<u64>,
}

impl BackendSection {
    /// The RBD backend's settings (for `kind = "rbd"`).
    pub fn rbd(&self) -> alcubierre_rbd::RbdConfig {
        let d = alcubierre_rbd::RbdConfig::default();
        alcubierre_rbd::RbdConfig {
            conf_file: self.conf.as_ref().map(|p| p.display().to_string()),
            mon_host: self.mon_host.clone(),
            pool: self.pool.clone().unwrap_or(d.pool),
            user: self.user.clone().unwrap_or(d.user),
            keyring: self.keyring.as_ref().map(|p| p.display().to_string()),
            op_timeout: self
                .op_timeout_s
                .map_or(d.op_timeout, std::time::Duration::from_secs),
        }
    }
}

/// `[nvmf]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmfSection {
    /// Listen addresses; each serves I/O and discovery.
    pub listen: Vec<SocketAddr>,
    /// Extra discovery listeners (port 8009 by convention); not listed as I/O portals.
    #[serde(default)]
    pub discovery_listen: Vec<SocketAddr>,
    /// Addresses hosts reach this node by, each `IP` (on every listen port) or `IP:port`
    /// (default: the listen addresses that are not wildcards).
    #[serde(default, deserialize_with = "one_or_many")]
    pub advertise: Vec<String>,
    /// In-capsule data size for I/O queues, bytes.
    #[serde(default = "default_icd")]
    pub in_capsule_data: u32,
    /// Microseconds a connection keeps polling after work before it sleeps (0: never).
    #[serde(default)]
    pub busy_poll_us: u32,
}

/// `[iscsi]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IscsiSection {
    /// Listen addresses (port 3260 by convention).
    pub listen: Vec<SocketAddr>,
    /// The portals hosts reach this node's iSCSI target on, in `nvmf.advertise`'s form: `IP`
    /// (on every listen port) or `IP:port`, one or a list. SendTargets on every node serving a
    /// volume here lists them (default: the bound listen addresses).
    #[serde(default, deserialize_with = "one_or_many")]
    pub advertise: Vec<String>,
}

/// One address or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(s)) => Ok(vec![s]),
        Ok(OneOrMany::Many(v)) => Ok(v),
        Err(_) => Err(serde::de::Error::custom(
            "expected an address (\"IP\" or \"IP:port\") or a list of them",
        )),
    }
}

/// The portals an `advertise` list names: each entry `IP` (with every port of `listen`) or
/// `IP:port` (IPv6 as `[addr]:port`). An error names `field` and the entry.
pub fn advertised(
    field: &str,
    list: &[String],
    listen: &[SocketAddr],
) -> anyhow::Result<Vec<SocketAddr>> {
    let mut ports: Vec<u16> = listen.iter().map(SocketAddr::port).collect();
    ports.sort_unstable();
    ports.dedup();
    let mut out: Vec<SocketAddr> = Vec::new();
    for (i, a) in list.iter().enumerate() {
        if let Ok(s) = a.parse::<SocketAddr>() {
            if s.port() == 0 {
                bail!("{field}[{i}]: {a:?}: port 0 cannot be reached");
            }
            out.push(s);
        } else if let Ok(ip) = a.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
            if ports.is_empty() {
                bail!("{field}[{i}]: {a:?} has no port, and there is no listen port to take");
            }
            out.extend(ports.iter().map(|p| SocketAddr::new(ip, *p)));
        } else {
            bail!(
                "{field}[{i}]: {a:?} is not an IP address or IP:port (hosts are told to connect \
                 to it, so it must be an address they reach this node by)"
            );
        }
        if out.last().is_some_and(|s| s.ip().is_unspecified()) {
            bail!("{field}[{i}]: {a:?} is a wildcard; hosts need this node's own address");
        }
    }
    // The same portal named twice is listed once.
    let mut seen = std::collections::HashSet::new();
    out.retain(|a| seen.insert(*a));
    Ok(out)
}

fn default_icd() -> u32 {
    8192
}

/// `[[volume]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSection {
    /// Name; the volume id is derived from it unless `id` is given.
    pub name: String,
    /// Volume UUID.
    pub id: Option<uuid::Uuid>,
    /// Size.
    pub size: Size,
    /// 512 (reported with 4096-byte physical blocks) or 4096; required, since a volume served
    /// by a release whose default was 4096 must keep it.
    #[serde(default)]
    pub block_size: Option<u64>,
    /// Host NQNs (NVMe/TCP) and initiator IQNs (iSCSI) allowed to connect; `["*"]` allows
    /// any.
    pub hosts: Vec<String>,
    /// iSCSI: the CHAP user initiators must log in with (with `chap_secret`).
    #[serde(default)]
    pub chap_user: Option<String>,
    /// iSCSI: the CHAP secret (12 to 16 characters).
    #[serde(default)]
    pub chap_secret: Option<String>,
    /// Serve from memory without the cache (front-end benchmarks only; not durable).
    #[serde(default)]
    pub memory: bool,
}

impl VolumeSection {
    /// The volume id: `id`, or a UUID v5 of the name (stable across restarts).
    pub fn volume_id(&self) -> VolumeId {
        const NS: uuid::Uuid = uuid::Uuid::from_u128(0x6a1c_b1e2_0000_4000_8000_a1c0_b1e2_a1c0);
        VolumeId(
            self.id
                .unwrap_or_else(|| uuid::Uuid::new_v5(&NS, self.name.as_bytes())),
        )
    }
}

/// A byte size written as a number or a string with a unit (`"4GiB"`, `"50MB"`, `"512KiB"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `"10GiB"`, `"50MB"`, `"4096"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size {s:?} does not start with a number"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        u => {
            return Err(format!(
                "unknown size unit {u:?} in {s:?} (use B, KB, MB, GB, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

impl NodeConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config {}", path.display()))
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let c: NodeConfig = toml::from_str(text)?;
        c.validate(false)?;
        Ok(c)
    }

    /// Checks the configuration; with `embedded_store` the node is handed its cluster's store
    /// (the demo, tests) and `cluster.etcd` is not used.
    pub fn validate(&self, embedded_store: bool) -> anyhow::Result<()> {
        for v in &self.volumes {
            match (&v.chap_user, &v.chap_secret) {
                (Some(_), Some(s)) if !(12..=16).contains(&s.len()) => bail!(
                    "volume {}: chap_secret must be 12 to 16 characters (RFC 7143 section 12.1.3)",
                    v.name
                ),
                (Some(_), None) | (None, Some(_)) => {
                    bail!("volume {}: chap_user and chap_secret go together", v.name)
                }
                _ => {}
            }
        }
        if self.nvmf.listen.is_empty() {
            bail!("nvmf.listen: at least one address is needed");
        }
        if self.node.cntlid_base == 0
            || self.node.cntlid_base as u32 + self.node.cntlid_count as u32 > 0xfff0
        {
            bail!("node.cntlid_base/cntlid_count: controller ids must lie in 1..=65519");
        }
        if self.node.ana_group == 0 {
            bail!("node.ana_group: must be at least 1");
        }
        if self.iscsi.is_some() && self.node.ana_group > u32::from(u16::MAX) {
            bail!(
                "node.ana_group: at most 65535 on a node serving iSCSI (it is the node's target \
                 port group)"
            );
        }
        advertised("nvmf.advertise", &self.nvmf.advertise, &self.nvmf.listen)?;
        if let Some(i) = &self.iscsi {
            advertised("iscsi.advertise", &i.advertise, &i.listen)?;
        }
        if self.nvmf.busy_poll_us > 10_000 {
            bail!("nvmf.busy_poll_us: at most 10000 microseconds");
        }
        if self.nvmf.in_capsule_data < 4096 || self.nvmf.in_capsule_data > 1 << 20 {
            bail!("nvmf.in_capsule_data: must be between 4096 and 1048576 bytes");
        }
        let mut ids = std::collections::HashSet::new();
        for (i, v) in self.volumes.iter().enumerate() {
            let f = |k: &str| format!("volume[{i}] ({}).{k}", v.name);
            if v.name.is_empty() {
                bail!("volume[{i}].name: must not be empty");
            }
            let Some(block_size) = v.block_size else {
                bail!(
                    "{}: required: 512 (reported with 4096-byte physical blocks) or 4096. A \
                     volume served before without it has 4096-byte blocks: give it \
                     block_size = 4096, or its data is read at the wrong addresses",
                    f("block_size")
                );
            };
            BlockSize::from_bytes(block_size)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f("block_size")))?;
            if v.size.0 == 0 || v.size.0 % block_size != 0 {
                bail!(
                    "{}: {} is not a positive multiple of the block size",
                    f("size"),
                    ByteSize(v.size.0)
                );
            }
            if v.hosts.is_empty() {
                bail!(
                    "{}: list the host NQNs allowed, or [\"*\"] for any host",
                    f("hosts")
                );
            }
            if !ids.insert(v.volume_id()) {
                bail!("{}: two volumes have the same id", f("id"));
            }
            if !v.memory && self.cache.is_none() {
                bail!(
                    "{}: needs a [cache] section (or memory = true)",
                    f("memory")
                );
            }
            if !v.memory && self.backend.is_none() {
                bail!("{}: needs a [backend] section", f("memory"));
            }
        }
        if let Some(c) = &self.cluster {
            if c.etcd.is_empty() && !embedded_store {
                bail!("cluster.etcd: list at least one etcd URL");
            }
            if let Some(u) = c.etcd.iter().find(|u| !u.starts_with("http://")) {
                bail!("cluster.etcd: {u:?} is not an http:// URL");
            }
            if c.heartbeat_interval_ms == 0 || c.heartbeat_timeout_ms < 2 * c.heartbeat_interval_ms
            {
                bail!("cluster.heartbeat_timeout_ms: must be at least twice a positive heartbeat_interval_ms");
            }
            // Without [backend], the node opens the cluster configuration's backend.
            if self.cache.is_none() {
                bail!("cluster: a node in a cluster needs a [cache] section");
            }
            match (&c.api_tls_cert, &c.api_tls_key) {
                (Some(_), None) => bail!("cluster.api_tls_key: required with api_tls_cert"),
                (None, Some(_)) => bail!("cluster.api_tls_cert: required with api_tls_key"),
                (Some(_), Some(_)) if c.api_listen.is_none() => {
                    bail!("cluster.api_listen: required to serve the API over TLS")
                }
                _ => {}
            }
        }
        if let Some(b) = &self.backend {
            match b.kind.as_str() {
                "file" if b.dir.is_none() => bail!("backend.dir: required for kind = \"file\""),
                "file" => {}
                "rbd" if b.conf.is_none() && b.mon_host.is_none() => {
                    bail!("backend.conf: kind = \"rbd\" needs conf (a ceph.conf) or mon_host")
                }
                "rbd" if b.op_timeout_s == Some(0) => {
                    bail!("backend.op_timeout_s: must be at least 1")
                }
                "rbd" => {}
                k => bail!("backend.kind: unknown kind {k:?} (supported: \"file\", \"rbd\")"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[cache]
device = "/tmp/c.img"
create_size = "1GiB"
[backend]
kind = "file"
dir = "/tmp/b"
[nvmf]
listen = ["127.0.0.1:4420"]
[[volume]]
name = "v"
size = "1GiB"
block_size = 512
hosts = ["*"]
"#;

    #[test]
    fn parses_and_defaults() {
        let c = NodeConfig::parse(GOOD).unwrap();
        assert_eq!(c.cache.as_ref().unwrap().create_size, Some(Size(1 << 30)));
        assert_eq!(c.cache.unwrap().destage_rate, Size(50_000_000));
        assert_eq!(c.volumes[0].block_size, Some(512));
        assert_eq!(c.volumes[0].volume_id(), c.volumes[0].volume_id());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                GOOD.replace("size = \"1GiB\"\nblock_size", "size = \"1000\"\nblock_size"),
                "volume[0] (v).size",
            ),
            (
                GOOD.replace("hosts = [\"*\"]", "hosts = []"),
                "volume[0] (v).hosts",
            ),
            (
                GOOD.replace("kind = \"file\"", "kind = \"ceph\""),
                "backend.kind",
            ),
            (
                GOOD.replace("size = \"1GiB\"\nblock_size", "size = \"1XB\"\nblock_size"),
                "unknown size unit",
            ),
            (GOOD.replace("[nvmf]", "[nvmf]\nbogus = 1"), "bogus"),
            (
                GOOD.replace("kind = \"file\"", "kind = \"rbd\""),
                "backend.conf",
            ),
            (
                GOOD.replace("listen = [\"127.0.0.1:4420\"]", "listen = [\"nope\"]"),
                "listen",
            ),
            (
                GOOD.replace("block_size = 512", "block_size = 1000"),
                "volume[0] (v).block_size: block_size must be 512 or 4096, got 1000",
            ),
            (
                // No default: a volume served when the default was 4096 keeps its blocks.
                GOOD.replace("block_size = 512\n", ""),
                "volume[0] (v).block_size: required",
            ),
            (
                // The mistake a user made: the port given twice.
                GOOD.replace("[nvmf]", "[nvmf]\nadvertise = [\"10.0.2.2:20361:20361\"]"),
                "nvmf.advertise[0]: \"10.0.2.2:20361:20361\" is not an IP address or IP:port",
            ),
            (
                GOOD.replace(
                    "[nvmf]",
                    "[iscsi]\nlisten = []\nadvertise = \"node-1\"\n[nvmf]",
                ),
                "iscsi.advertise[0]: \"node-1\" is not an IP address",
            ),
            (
                GOOD.replace("[nvmf]", "[nvmf]\nadvertise = \"0.0.0.0\""),
                "nvmf.advertise[0]: \"0.0.0.0\" is a wildcard",
            ),
            (
                GOOD.replace("[nvmf]", "[nvmf]\nadvertise = 7"),
                "expected an address (\"IP\" or \"IP:port\") or a list of them",
            ),
        ];
        for (text, want) in cases {
            let e = format!("{:#}", NodeConfig::parse(&text).unwrap_err());
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }

    #[test]
    fn advertise_takes_the_same_form_for_both_protocols() {
        let listen: Vec<SocketAddr> = vec!["0.0.0.0:4420".parse().unwrap()];
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got = advertised(
            "f",
            &list(&["10.0.2.2", "10.0.2.3:20361", "[fd00::1]:4421"]),
            &listen,
        )
        .unwrap();
        let want: Vec<SocketAddr> = ["10.0.2.2:4420", "10.0.2.3:20361", "[fd00::1]:4421"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
        let text = GOOD.replace(
            "[nvmf]",
            "[iscsi]\nlisten = [\"0.0.0.0:3260\"]\nadvertise = [\"10.0.2.2\", \"10.0.2.3:3261\"]\n[nvmf]\nadvertise = \"10.0.2.2:20361\"",
        );
        let c = NodeConfig::parse(&text).unwrap();
        assert_eq!(c.nvmf.advertise, ["10.0.2.2:20361"]);
        let iscsi = c.iscsi.unwrap();
        let got = advertised("iscsi.advertise", &iscsi.advertise, &iscsi.listen).unwrap();
        assert_eq!(
            got,
            [
                "10.0.2.2:3260".parse::<SocketAddr>().unwrap(),
                "10.0.2.3:3261".parse().unwrap()
            ]
        );
    }
}

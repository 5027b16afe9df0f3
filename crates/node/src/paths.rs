//! A node's paths: every node holding a replica of a volume exports it over NVMe/TCP, with the
//! same subsystem NQN, serial and namespace ids everywhere and this node's ANA group, and over
//! iSCSI when the node serves it (the same target name and LUN identity everywhere).
//!
//! * On the primary the path serves locally (ANA optimized).
//! * On a follower it forwards each I/O to the primary over the replica network (ANA
//!   non-optimized), so a host with paths to several nodes keeps working through any of them.
//! * While the node cannot serve the volume (a restarted primary waiting for its new epoch), the
//!   path is ANA inaccessible and I/O fails with that path status, which hosts retry on another
//!   path.
//!
//! Role changes switch the route under live connections and tell the hosts with an ANA change
//! notice.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use alcubierre_block::{BlockDevice, IoStats, Metered, Qos, QosLimits};
use alcubierre_control::model::Node;
use alcubierre_control::volumes::{Host, Volume};
use alcubierre_nvmf::{volume_nqn, AnaState, HostAcl, Subsystem};
use alcubierre_replica::forward::{Forwarder, PathDevice, Peers, Route};
use alcubierre_types::VolumeId;

use crate::parts::{NodeParts, VolumeMetrics};
use crate::replication::Role;

/// This node's path to one volume.
pub struct Path {
    pub id: VolumeId,
    pub size: u64,
    pub acl: HostAcl,
    /// The hosts whose IQNs and CHAP credentials the iSCSI target admits.
    pub iscsi_hosts: IscsiHosts,
    /// The iSCSI portals of every node holding a replica (`ip:port,tpgt`), for SendTargets.
    pub iscsi_portals: Vec<String>,
    pub qos: Arc<Qos>,
    /// The limits applied to `qos`.
    pub policy: QosLimits,
    /// Its role here, for metrics.
    pub role: Arc<Role>,
    device: Arc<PathDevice>,
    forwarder: Arc<Forwarder>,
    /// The other replica nodes, told of logical-unit-wide unit attentions raised here.
    peers: Arc<Peers>,
    subsystem: Arc<Subsystem>,
    /// The iSCSI logical unit, when the node serves iSCSI.
    lun: Option<Arc<alcubierre_iscsi::scsi::Lun>>,
}

/// The NVMe/TCP portals of `nodes` (the primary's first), as every node's discovery log lists
/// them for the volume so that a host's `nvme connect-all` sets up a path through each. Port ids
/// are the node's ANA group times 16 plus the portal's place (one port id per node portal, the
/// same in every subsystem's entries).
fn nvme_portals(nodes: &[&Node]) -> Vec<alcubierre_nvmf::Portal> {
    let mut out = Vec::new();
    for n in nodes {
        let group = n.nvme.map_or(0, |i| i.ana_group);
        for (i, a) in n.portals.iter().enumerate() {
            let addr = match a.parse::<SocketAddr>() {
                Ok(addr) if !addr.ip().is_unspecified() => addr,
                // A wildcard listener with nothing advertised: the node lists the address each
                // host reached it by itself.
                Ok(_) => continue,
                Err(_) => {
                    tracing::warn!(node = %n.name, portal = %a,
                        "node record: portal is not IP:port; not listed");
                    continue;
                }
            };
            out.push(alcubierre_nvmf::Portal {
                addr: addr.ip().to_string(),
                port: addr.port(),
                port_id: (group as u16).wrapping_mul(16).wrapping_add(i as u16 + 1),
            });
        }
    }
    out
}

/// Exports (or re-exports with new access rules) volume `id`'s LU on the node's iSCSI target.
fn export_iscsi(
    t: &alcubierre_iscsi::Target,
    id: VolumeId,
    lun: &Arc<alcubierre_iscsi::scsi::Lun>,
    hosts: &IscsiHosts,
    portals: &[String],
) {
    t.export(
        &alcubierre_iscsi::volume_iqn(id),
        alcubierre_iscsi::Export {
            lun: lun.clone(),
            access: iscsi_access(hosts),
            portals: portals.to_vec(),
        },
    );
}

/// Who may log in to a volume's iSCSI target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IscsiHosts {
    /// Any initiator: the volume names no hosts.
    Any,
    /// Only these hosts' IQNs, with their CHAP credentials: the hosts the volume names whose
    /// records could be read. None of them, when none could: access fails closed.
    Only(Vec<Host>),
}

/// The iSCSI target access for `hosts`.
pub fn iscsi_access(hosts: &IscsiHosts) -> alcubierre_iscsi::login::Access {
    use alcubierre_iscsi::login::{Access, Chap};
    let IscsiHosts::Only(hosts) = hosts else {
        return Access::default();
    };
    Access {
        // Only the hosts' IQNs (none when they have only NQNs, or none could be read).
        initiators: Some(hosts.iter().filter_map(|h| h.iqn.clone()).collect()),
        per_initiator: hosts
            .iter()
            .filter_map(|h| {
                let (user, secret) = h.chap.clone()?;
                let mutual = h
                    .target_chap
                    .clone()
                    .map(|(user, secret)| Chap { user, secret });
                Some((h.iqn.clone()?, Chap { user, secret }, mutual))
            })
            .collect(),
        ..Access::default()
    }
}

impl Path {
    /// Exports `v` (already attached to the cache) from this node, with no route yet.
    pub fn open(
        p: &NodeParts,
        v: &Volume,
        id: VolumeId,
        acl: HostAcl,
        iscsi_hosts: IscsiHosts,
        policy: QosLimits,
    ) -> anyhow::Result<Self> {
        let engine = p.engine.clone();
        let device = Arc::new(PathDevice::new(
            Arc::new(move || engine.geometry(id).ok()),
            crate::parts::geometry(v)?,
            p.engine.max_transfer(),
            Route::Down("the node is starting to serve the volume".into()),
        ));
        let qos = Arc::new(Qos::default());
        qos.apply(&policy);
        let stats = Arc::new(IoStats::default());
        let role = Arc::new(Role::default());
        let dev: Arc<dyn BlockDevice> = Arc::new(Metered::new(device.clone(), stats.clone()));
        let subsystem = Arc::new(Subsystem::new(id, dev.clone(), acl.clone(), p.ana_group));
        let lun = p.iscsi.as_ref().map(|t| {
            let lun = Arc::new(alcubierre_iscsi::scsi::Lun::new(
                dev.clone(),
                id.to_bytes(),
                p.ana_group as u16,
            ));
            lun.set_alua(alcubierre_iscsi::scsi::alua::TRANSITIONING);
            export_iscsi(t, id, &lun, &iscsi_hosts, &[]);
            lun
        });
        let peers = Peers::new(id);
        if let Some(lun) = &lun {
            // The LU is one across the cluster: a reset through this node reaches the nexuses
            // on the others, and theirs reach the nexuses here.
            let to = peers.clone();
            lun.pass_attentions_on(Arc::new(move |asc, ascq, hosts| {
                let to = to.clone();
                Box::pin(async move { to.attention(asc, ascq, hosts).await })
            }));
            if let Some(server) = &p.replica {
                let here = Arc::downgrade(lun);
                server.take_attentions(
                    id,
                    Arc::new(move |asc, ascq, hosts: &[[u8; 16]]| {
                        if let Some(l) = here.upgrade() {
                            l.attention_from_elsewhere(asc, ascq, hosts);
                        }
                    }),
                );
            }
        }
        let iscsi_hosts = iscsi_hosts.clone();
        subsystem.set_ana(AnaState::Inaccessible);
        p.target.add_subsystem(subsystem.clone());
        p.stats.write().insert(
            v.id.clone(),
            VolumeMetrics {
                name: v.name.clone(),
                io: stats,
                qos: qos.clone(),
                role: role.clone(),
            },
        );
        Ok(Self {
            id,
            size: v.size,
            acl,
            iscsi_hosts,
            iscsi_portals: Vec::new(),
            qos,
            policy,
            role,
            device,
            forwarder: Forwarder::new(id),
            peers,
            subsystem,
            lun,
        })
    }

    /// This node is the primary: I/O is served on `dev` (the replicated volume behind its QoS
    /// limits).
    pub fn serve(&self, dev: Arc<dyn BlockDevice>) {
        self.forwarder.set_primary(None);
        self.device.set_route(Route::Local(dev));
        self.subsystem.set_ana(AnaState::Optimized);
        self.set_alua(alcubierre_iscsi::scsi::alua::OPTIMIZED);
    }

    /// Another node is the primary, reachable at `primary` on the replica network.
    pub fn forward(&self, primary: Option<SocketAddr>) {
        if !matches!(self.device.route(), Route::Forward(_)) || self.forwarder.primary() != primary
        {
            self.forwarder.set_primary(primary);
            self.device
                .set_route(Route::Forward(self.forwarder.clone()));
        }
        self.subsystem.set_ana(if primary.is_some() {
            AnaState::NonOptimized
        } else {
            AnaState::Inaccessible
        });
        self.set_alua(if primary.is_some() {
            alcubierre_iscsi::scsi::alua::NON_OPTIMIZED
        } else {
            alcubierre_iscsi::scsi::alua::TRANSITIONING
        });
    }

    /// The node cannot serve the volume for now (`why` goes to the hosts' failed I/O).
    pub fn down(&self, why: &str) {
        if !matches!(self.device.route(), Route::Down(_)) {
            self.device.set_route(Route::Down(why.to_string()));
        }
        self.subsystem.set_ana(AnaState::Inaccessible);
        self.set_alua(alcubierre_iscsi::scsi::alua::TRANSITIONING);
    }

    /// The iSCSI path's asymmetric access state, when the node serves iSCSI.
    fn set_alua(&self, state: u8) {
        if let Some(l) = &self.lun {
            l.set_alua(state);
        }
    }

    /// Replaces the host access list; NVMe/TCP controllers and iSCSI sessions of hosts it no
    /// longer admits end.
    pub fn set_acl(&mut self, p: &NodeParts, acl: HostAcl, iscsi_hosts: IscsiHosts) {
        self.subsystem.set_acl(acl.clone());
        if self.acl != acl {
            // Which hosts the discovery log lists this subsystem to.
            p.target.discovery_changed();
        }
        self.acl = acl;
        self.iscsi_hosts = iscsi_hosts;
        self.reexport_iscsi(p);
    }

    /// Follows the replica set for iSCSI: SendTargets lists every replica node's portals (the
    /// primary's first), and REPORT TARGET PORT GROUPS the other nodes' groups (their portal
    /// group tags) in the states the store gives them: active/optimized for the primary,
    /// active/non-optimized for the others (their paths forward to it).
    pub fn set_replica_nodes(&mut self, p: &NodeParts, v: &Volume, nodes: &BTreeMap<String, Node>) {
        use alcubierre_iscsi::scsi::alua;
        let replica_nodes: Vec<&Node> = std::iter::once(&v.primary)
            .chain(v.replicas.iter().filter(|r| **r != v.primary))
            .filter_map(|r| nodes.get(r.as_str()))
            .collect();
        if self.subsystem.set_portals(nvme_portals(&replica_nodes)) {
            p.target.discovery_changed();
        }
        let others: Vec<SocketAddr> = replica_nodes
            .iter()
            .filter(|n| n.name != p.name)
            .filter_map(|n| n.replica.parse().ok())
            .collect();
        self.peers.set(&others);
        let portals: Vec<String> = replica_nodes
            .iter()
            .flat_map(|n| n.iscsi_portals.iter().cloned())
            .collect();
        if self.iscsi_portals != portals {
            self.iscsi_portals = portals;
            self.reexport_iscsi(p);
        }
        let Some(lun) = &self.lun else { return };
        let groups = v
            .replicas
            .iter()
            .filter(|r| **r != p.name)
            .filter_map(|r| {
                let tag = nodes
                    .get(r.as_str())?
                    .iscsi_portals
                    .first()?
                    .rsplit_once(',')?
                    .1;
                let state = if *r == v.primary {
                    alua::OPTIMIZED
                } else {
                    alua::NON_OPTIMIZED
                };
                Some((tag.parse().ok()?, state))
            })
            .collect();
        lun.set_peer_groups(groups);
    }

    fn reexport_iscsi(&self, p: &NodeParts) {
        if let (Some(t), Some(lun)) = (&p.iscsi, &self.lun) {
            export_iscsi(t, self.id, lun, &self.iscsi_hosts, &self.iscsi_portals);
        }
    }

    /// Stops exporting.
    pub fn close(&self, p: &NodeParts, id: &str) {
        self.device
            .set_route(Route::Down("the volume left this node".into()));
        p.target.remove_subsystem(&volume_nqn(self.id));
        if let Some(t) = &p.iscsi {
            t.unexport(&alcubierre_iscsi::volume_iqn(self.id));
        }
        if let Some(server) = &p.replica {
            server.drop_attentions(self.id);
        }
        p.stats.write().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(iqn: Option<&str>) -> Host {
        Host {
            name: "h".into(),
            nqn: None,
            iqn: iqn.map(str::to_string),
            nvme_hostid: None,
            chap: None,
            target_chap: None,
        }
    }

    /// A volume that names hosts admits only those read: when none could be read, nobody (as
    /// NVMe's empty access list does); only a volume that names no hosts admits any initiator.
    #[test]
    fn iscsi_access_fails_closed() {
        assert_eq!(iscsi_access(&IscsiHosts::Any).initiators, None);
        assert_eq!(
            iscsi_access(&IscsiHosts::Only(vec![])).initiators,
            Some(vec![])
        );
        assert_eq!(
            iscsi_access(&IscsiHosts::Only(vec![
                host(Some("iqn.2024-01.org.example:a")),
                host(None)
            ]))
            .initiators,
            Some(vec!["iqn.2024-01.org.example:a".to_string()])
        );
    }
}

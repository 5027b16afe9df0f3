//! The agent's decisions: a pure function from what the store wants ([`Desired`]) and what this
//! node holds ([`Have`], by volume) to the [`Action`]s that bring the node there. The agent
//! (`super`) reads the store, runs [`plan`], and carries the actions out in order; an action that
//! fails for a volume (attach, export, serve, follow) ends that volume's actions for the round (it
//! is tried again later), never the other volumes'; a store write that fails ends the round.
//!
//! Rules, for each volume:
//! 1. **Leaving.** A volume held here that was deleted (its record gone with a deletion request)
//!    or whose replica set no longer names this node: its role ends (a primary retires, a
//!    follower stops following and, when it left the set, drops its journal entries; a deleted
//!    volume's data goes with its deletion request), then its exports close. A volume whose
//!    record is missing without a deletion request, or cannot be read, is left as it is.
//! 2. **Fenced.** A primary fenced off its backend image by another node retires and serves again
//!    only in a newer epoch (rule 5).
//! 3. **Role changes.** A primary the store no longer names retires (and follows, rule 6); a
//!    follower the store names primary stops following (and serves, rule 5).
//! 4. **Exports.** Every volume whose replica set names this node is exported here (attached to
//!    the cache, with its access lists and QoS limits) unless it is backing off after failures;
//!    changed limits and access lists are applied; the replica set's portals are followed; a
//!    grown volume grows (its backend image too, on the primary).
//! 5. **Primary.** A volume this node serves as primary follows epoch changes, publishes its
//!    progress and carries out requests to fence hosts off its reservations. One it does not serve yet, that existed when the agent started or was fenced
//!    here, waits for an epoch newer than the one it found (so no `(epoch, seq)` is assigned
//!    twice across restarts); otherwise it starts serving.
//! 6. **Follower.** Its path forwards to the primary; it follows the volume's epoch, or starts
//!    following (on a node with a replica listener).
//! 7. **Afterwards.** Failure records of volumes that left this node are cleared; deletion
//!    requests naming this node are carried out for volumes without a record.

use std::collections::{BTreeMap, BTreeSet};

use alcubierre_block::{QosLimits, QosRate, DEFAULT_QOS_BURST};
use alcubierre_control::volumes::{Deletion, Host, QosPolicy, Volume};
use alcubierre_nvmf::HostAcl;
use alcubierre_types::Epoch;

use crate::paths::IscsiHosts;

/// What the store wants, as the agent read it this round.
pub struct Desired<'a> {
    /// This node's name.
    pub me: &'a str,
    /// Volume records that could be read, by id.
    pub volumes: &'a BTreeMap<String, Volume>,
    /// Each volume record's creation revision, by id.
    pub created: &'a BTreeMap<String, i64>,
    /// Volume records that cannot be read, by id, with why.
    pub unreadable: &'a BTreeMap<String, String>,
    /// Pending deletion requests, by volume id.
    pub deletions: &'a BTreeMap<String, Deletion>,
    /// Host records that could be read, by name.
    pub hosts: &'a BTreeMap<String, Host>,
    /// QoS policies, by name.
    pub policies: &'a BTreeMap<String, QosPolicy>,
    /// Volumes with requests to fence hosts off their reservations (force detaches).
    pub fences: &'a BTreeSet<String>,
}

/// What this node holds of one volume.
#[derive(Clone, Debug, PartialEq)]
pub struct Have {
    /// The size it is exported with.
    pub size: u64,
    /// Its NVMe access list.
    pub acl: HostAcl,
    /// Its iSCSI access.
    pub iscsi_hosts: IscsiHosts,
    /// Its QoS limits.
    pub limits: QosLimits,
    /// Its role here.
    pub role: Held,
}

/// A volume's role on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Exported, not serving: starting, waiting for a new epoch, or failed.
    Idle,
    /// Served as its primary in `epoch`; `fenced` when another node claimed its backend image.
    Primary {
        /// The epoch it serves in.
        epoch: Epoch,
        /// Whether it was fenced off its backend image.
        fenced: bool,
    },
    /// Followed in `epoch`.
    Follower {
        /// The epoch it follows in.
        epoch: Epoch,
    },
}

/// What the node knows of itself beyond the volumes it holds.
pub struct Node<'a> {
    /// The volumes it holds, by id.
    pub held: &'a BTreeMap<String, Have>,
    /// Volumes it serves again as primary only in an epoch newer than this one.
    pub floors: &'a BTreeMap<String, Epoch>,
    /// The store's revision when the agent started: volumes created after it have no floor.
    pub start_rev: i64,
    /// Volumes with a failure record here.
    pub failing: &'a BTreeSet<String>,
    /// Those of them still backing off (not to be tried this round).
    pub backing_off: &'a BTreeSet<String>,
    /// Whether it has a replica listener (it follows volumes).
    pub replicates: bool,
}

/// Why a primary stops serving here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retirement {
    /// The volume was deleted.
    Deleted,
    /// The volume's replica set no longer names this node.
    Left,
    /// Another node is its primary now.
    NotPrimary,
    /// Another node claimed its backend image: it waits for a newer epoch than `epoch`.
    Fenced {
        /// The epoch it served in.
        epoch: Epoch,
    },
}

/// One step towards the desired state.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Stop serving `id` as its primary.
    Retire {
        /// The volume.
        id: String,
        /// Why.
        why: Retirement,
    },
    /// Stop following `id`; its journal entries are dropped unless `keep`.
    Unfollow {
        /// The volume.
        id: String,
        /// Keep its journal entries (still a member, or its deletion request drops them).
        keep: bool,
    },
    /// Stop exporting `id`.
    Close {
        /// The volume.
        id: String,
    },
    /// Attach `id` to the cache and export it with these access lists and limits.
    Open {
        /// The volume.
        id: String,
        /// NVMe access list.
        acl: HostAcl,
        /// iSCSI access.
        iscsi_hosts: IscsiHosts,
        /// QoS limits.
        limits: QosLimits,
    },
    /// Apply new QoS limits.
    Limit {
        /// The volume.
        id: String,
        /// The limits.
        limits: QosLimits,
    },
    /// Apply new access lists.
    Admit {
        /// The volume.
        id: String,
        /// NVMe access list.
        acl: HostAcl,
        /// iSCSI access.
        iscsi_hosts: IscsiHosts,
    },
    /// Follow the replica set's nodes (portals, ALUA groups, unit attention peers).
    Portals {
        /// The volume.
        id: String,
    },
    /// Grow to the record's size (the backend image too, on the primary).
    Grow {
        /// The volume.
        id: String,
        /// Resize the backend image.
        backend: bool,
    },
    /// Serve no I/O; ask the leader for an epoch newer than `floor`.
    AwaitEpoch {
        /// The volume.
        id: String,
        /// The newest epoch it may not serve in.
        floor: Epoch,
    },
    /// Start serving as primary.
    Serve {
        /// The volume.
        id: String,
    },
    /// Keep serving as primary: take the record's membership (a new epoch) or its members'
    /// addresses, and publish progress.
    Refresh {
        /// The volume.
        id: String,
        /// The new epoch, when it changed.
        epoch: Option<Epoch>,
    },
    /// Remove the reservations of the hosts the volume's fence requests name, then drop the
    /// requests.
    Fence {
        /// The volume.
        id: String,
    },
    /// Route the path's I/O to the primary.
    Forward {
        /// The volume.
        id: String,
    },
    /// Start following.
    Follow {
        /// The volume.
        id: String,
    },
    /// Follow in a new epoch.
    FollowEpoch {
        /// The volume.
        id: String,
        /// The epoch.
        epoch: Epoch,
    },
    /// Clear the failure record of a volume that left this node.
    Forget {
        /// The volume.
        id: String,
    },
    /// Carry out this node's part of the volume's deletion request.
    Delete {
        /// The volume.
        id: String,
    },
}

impl Action {
    /// The volume it acts on.
    pub fn volume(&self) -> &str {
        match self {
            Action::Retire { id, .. }
            | Action::Unfollow { id, .. }
            | Action::Close { id }
            | Action::Open { id, .. }
            | Action::Limit { id, .. }
            | Action::Admit { id, .. }
            | Action::Portals { id }
            | Action::Grow { id, .. }
            | Action::AwaitEpoch { id, .. }
            | Action::Serve { id }
            | Action::Refresh { id, .. }
            | Action::Fence { id }
            | Action::Forward { id }
            | Action::Follow { id }
            | Action::FollowEpoch { id, .. }
            | Action::Forget { id }
            | Action::Delete { id } => id,
        }
    }
}

/// The limits of QoS policy `p` (`None`: the volume names no policy, or one that is not
/// there).
pub fn qos_limits(p: Option<&QosPolicy>) -> QosLimits {
    let Some(p) = p else {
        return QosLimits::default();
    };
    let rate =
        |per_sec: Option<u64>, peak: Option<u64>| per_sec.map(|per_sec| QosRate { per_sec, peak });
    QosLimits {
        read_iops: rate(p.read_iops, p.read_iops_max),
        write_iops: rate(p.write_iops, p.write_iops_max),
        total_iops: rate(p.total_iops, p.total_iops_max),
        read_bps: rate(p.read_bps, p.read_bps_max),
        write_bps: rate(p.write_bps, p.write_bps_max),
        total_bps: rate(p.total_bps, p.total_bps_max),
        burst: p
            .burst_seconds
            .map_or(DEFAULT_QOS_BURST, std::time::Duration::from_secs),
    }
}

/// The NVMe access list of `v`: its hosts' NQNs, or any host when it names none and was never
/// attached.
pub fn acl(v: &Volume, hosts: &BTreeMap<String, Host>) -> HostAcl {
    if v.any_host() {
        return HostAcl::Any;
    }
    HostAcl::Only(
        v.hosts
            .iter()
            .filter_map(|h| hosts.get(h).and_then(|h| h.nqn.clone()))
            .collect(),
    )
}

/// The iSCSI access of `v`. A volume that names hosts admits only those whose records were
/// read: a host record that cannot be read locks its host out; it never opens the volume to
/// everyone.
pub fn iscsi_hosts(v: &Volume, hosts: &BTreeMap<String, Host>) -> IscsiHosts {
    if v.any_host() {
        return IscsiHosts::Any;
    }
    IscsiHosts::Only(
        v.hosts
            .iter()
            .filter_map(|h| hosts.get(h).cloned())
            .collect(),
    )
}

/// The actions that bring `node` to `want` (the rules in the module's documentation).
pub fn plan(want: &Desired, node: &Node) -> Vec<Action> {
    let me = want.me;
    let mut out = Vec::new();
    // Deleted: no record, not even one that cannot be read, and a deletion request.
    let deleted = |id: &str| {
        !want.volumes.contains_key(id)
            && !want.unreadable.contains_key(id)
            && want.deletions.contains_key(id)
    };
    let record = |id: &str| want.volumes.get(id);
    // The role each held volume has once rules 1-3 ran.
    let mut role: BTreeMap<&str, Held> = BTreeMap::new();
    let mut floors = node.floors.clone();
    for (id, have) in node.held {
        let leaving = deleted(id) || record(id).is_some_and(|v| !v.has_replica(me));
        let primary_here = record(id).is_some_and(|v| v.primary == me);
        let mut now = have.role;
        match have.role {
            Held::Primary { .. } if leaving => {
                let why = if deleted(id) {
                    Retirement::Deleted
                } else {
                    Retirement::Left
                };
                out.push(Action::Retire {
                    id: id.clone(),
                    why,
                });
                now = Held::Idle;
            }
            Held::Primary {
                epoch,
                fenced: true,
            } => {
                out.push(Action::Retire {
                    id: id.clone(),
                    why: Retirement::Fenced { epoch },
                });
                floors.insert(id.clone(), epoch);
                now = Held::Idle;
            }
            Held::Primary { .. } if record(id).is_some() && !primary_here => {
                out.push(Action::Retire {
                    id: id.clone(),
                    why: Retirement::NotPrimary,
                });
                now = Held::Idle;
            }
            Held::Follower { .. } if leaving || primary_here => {
                // A deleted volume's data goes with its deletion request; a promoted one keeps
                // it; one that left the set drops it.
                let keep = deleted(id) || record(id).is_some_and(|v| v.has_replica(me));
                out.push(Action::Unfollow {
                    id: id.clone(),
                    keep,
                });
                now = Held::Idle;
            }
            _ => {}
        }
        if leaving {
            out.push(Action::Close { id: id.clone() });
        } else {
            role.insert(id, now);
        }
    }
    for v in want.volumes.values().filter(|v| v.has_replica(me)) {
        let id = &v.id;
        let backing_off = node.backing_off.contains(id);
        let acl = acl(v, want.hosts);
        let iscsi_hosts = iscsi_hosts(v, want.hosts);
        let limits = qos_limits(v.qos.as_ref().and_then(|q| want.policies.get(q)));
        let now = match node.held.get(id) {
            None if backing_off => continue,
            None => {
                out.push(Action::Open {
                    id: id.clone(),
                    acl,
                    iscsi_hosts,
                    limits,
                });
                Held::Idle
            }
            Some(have) => {
                if have.limits != limits {
                    out.push(Action::Limit {
                        id: id.clone(),
                        limits,
                    });
                }
                if have.acl != acl || have.iscsi_hosts != iscsi_hosts {
                    out.push(Action::Admit {
                        id: id.clone(),
                        acl,
                        iscsi_hosts,
                    });
                }
                role[id.as_str()]
            }
        };
        out.push(Action::Portals { id: id.clone() });
        if node.held.get(id).is_some_and(|h| v.size > h.size) {
            out.push(Action::Grow {
                id: id.clone(),
                backend: v.primary == me,
            });
        }
        if v.primary == me {
            if let Held::Primary { epoch, .. } = now {
                out.push(Action::Refresh {
                    id: id.clone(),
                    epoch: (epoch != v.epoch).then_some(v.epoch),
                });
                if want.fences.contains(id) {
                    out.push(Action::Fence { id: id.clone() });
                }
                continue;
            }
            // After a restart (or once fenced): serve only in a newer epoch than the one found.
            let existed = want.created.get(id).copied().unwrap_or(0) <= node.start_rev;
            if existed || floors.contains_key(id) {
                let floor = *floors.entry(id.clone()).or_insert(v.epoch);
                if v.epoch <= floor {
                    out.push(Action::AwaitEpoch {
                        id: id.clone(),
                        floor,
                    });
                    continue;
                }
            }
            if !backing_off {
                out.push(Action::Serve { id: id.clone() });
            }
        } else {
            if !node.replicates {
                continue;
            }
            out.push(Action::Forward { id: id.clone() });
            match now {
                Held::Follower { epoch } if epoch != v.epoch => out.push(Action::FollowEpoch {
                    id: id.clone(),
                    epoch: v.epoch,
                }),
                Held::Follower { .. } => {}
                _ if backing_off => {}
                _ => out.push(Action::Follow { id: id.clone() }),
            }
        }
    }
    // Failures of volumes that left this node (deleted, moved) are no longer this node's.
    for id in node.failing {
        let here = record(id).is_some_and(|v| v.has_replica(me));
        if !here && !want.unreadable.contains_key(id) {
            out.push(Action::Forget { id: id.clone() });
        }
    }
    // A volume that still has a record (or one that cannot be read) is never deleted here.
    for (id, d) in want.deletions {
        if d.nodes.iter().any(|n| n == me)
            && !want.volumes.contains_key(id)
            && !want.unreadable.contains_key(id)
        {
            out.push(Action::Delete { id: id.clone() });
        }
    }
    out
}

#[cfg(test)]
mod tests;

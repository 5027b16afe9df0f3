//! Table tests of the agent's decisions.

use super::*;
use alcubierre_control::volumes::Extra;
use alcubierre_types::Epoch;

fn volume(id: &str, primary: &str, replicas: &[&str], epoch: u64) -> Volume {
    Volume {
        version: 2,
        id: id.into(),
        name: format!("vol-{id}"),
        size: 1 << 30,
        block_size: 512,
        replicas: replicas.iter().map(|r| (*r).into()).collect(),
        primary: primary.into(),
        in_sync: replicas.iter().map(|r| (*r).into()).collect(),
        qos: None,
        hosts: vec![],
        closed: false,
        epoch: Epoch(epoch),
        source: None,
        extra: Extra::default(),
    }
}

fn have(role: Held) -> Have {
    Have {
        size: 1 << 30,
        acl: HostAcl::Any,
        iscsi_hosts: IscsiHosts::Any,
        limits: QosLimits::default(),
        role,
    }
}

/// The store's side and the node's side of one table row.
#[derive(Default)]
struct World {
    volumes: BTreeMap<String, Volume>,
    created: BTreeMap<String, i64>,
    unreadable: BTreeMap<String, String>,
    deletions: BTreeMap<String, Deletion>,
    hosts: BTreeMap<String, Host>,
    policies: BTreeMap<String, QosPolicy>,
    fences: BTreeSet<String>,
    held: BTreeMap<String, Have>,
    floors: BTreeMap<String, Epoch>,
    failing: BTreeSet<String>,
    backing_off: BTreeSet<String>,
}

impl World {
    /// Volume `v`, created after the agent started (revision 100 > 10).
    fn with(mut self, v: Volume) -> Self {
        self.created.insert(v.id.clone(), 100);
        self.volumes.insert(v.id.clone(), v);
        self
    }

    fn holding(mut self, id: &str, h: Have) -> Self {
        self.held.insert(id.into(), h);
        self
    }

    fn plan(&self) -> Vec<Action> {
        plan(
            &Desired {
                me: "n1",
                volumes: &self.volumes,
                created: &self.created,
                unreadable: &self.unreadable,
                deletions: &self.deletions,
                hosts: &self.hosts,
                policies: &self.policies,
                fences: &self.fences,
            },
            &Node {
                held: &self.held,
                floors: &self.floors,
                start_rev: 10,
                failing: &self.failing,
                backing_off: &self.backing_off,
                replicates: true,
            },
        )
    }
}

fn open(id: &str) -> Action {
    Action::Open {
        id: id.into(),
        acl: HostAcl::Any,
        iscsi_hosts: IscsiHosts::Any,
        limits: QosLimits::default(),
    }
}

fn portals(id: &str) -> Action {
    Action::Portals { id: id.into() }
}

#[test]
fn a_new_volume_is_exported_and_served_or_followed() {
    let w = World::default().with(volume("a", "n1", &["n1", "n2", "n3"], 1));
    assert_eq!(
        w.plan(),
        vec![open("a"), portals("a"), Action::Serve { id: "a".into() }]
    );
    let w = World::default().with(volume("b", "n2", &["n2", "n1", "n3"], 1));
    assert_eq!(
        w.plan(),
        vec![
            open("b"),
            portals("b"),
            Action::Forward { id: "b".into() },
            Action::Follow { id: "b".into() }
        ]
    );
    // A volume elsewhere: nothing here.
    let w = World::default().with(volume("c", "n2", &["n2", "n3", "n4"], 1));
    assert_eq!(w.plan(), vec![]);
}

#[test]
fn a_volume_that_existed_at_start_waits_for_a_newer_epoch() {
    let mut w = World::default().with(volume("a", "n1", &["n1", "n2"], 4));
    w.created.insert("a".into(), 5); // before the agent started (10)
    assert_eq!(
        w.plan(),
        vec![
            open("a"),
            portals("a"),
            Action::AwaitEpoch {
                id: "a".into(),
                floor: Epoch(4)
            }
        ]
    );
    // The leader raised the epoch past the floor: it serves.
    w.floors.insert("a".into(), Epoch(4));
    w.volumes.get_mut("a").unwrap().epoch = Epoch(5);
    let w = w.holding("a", have(Held::Idle));
    assert_eq!(
        w.plan(),
        vec![portals("a"), Action::Serve { id: "a".into() }]
    );
}

#[test]
fn a_fenced_primary_retires_and_waits_for_a_newer_epoch() {
    let w = World::default()
        .with(volume("a", "n1", &["n1", "n2"], 7))
        .holding(
            "a",
            have(Held::Primary {
                epoch: Epoch(7),
                fenced: true,
            }),
        );
    assert_eq!(
        w.plan(),
        vec![
            Action::Retire {
                id: "a".into(),
                why: Retirement::Fenced { epoch: Epoch(7) }
            },
            portals("a"),
            Action::AwaitEpoch {
                id: "a".into(),
                floor: Epoch(7)
            }
        ]
    );
}

#[test]
fn fence_requests_are_carried_out_by_the_serving_primary_only() {
    let mut w = World::default()
        .with(volume("a", "n1", &["n1", "n2"], 7))
        .with(volume("b", "n2", &["n1", "n2"], 7))
        .holding(
            "a",
            have(Held::Primary {
                epoch: Epoch(7),
                fenced: false,
            }),
        )
        .holding("b", have(Held::Follower { epoch: Epoch(7) }));
    w.fences = ["a".to_string(), "b".to_string()].into();
    assert_eq!(
        w.plan(),
        vec![
            portals("a"),
            Action::Refresh {
                id: "a".into(),
                epoch: None
            },
            Action::Fence { id: "a".into() },
            portals("b"),
            Action::Forward { id: "b".into() },
        ]
    );
    // Not serving yet (waiting for a newer epoch after a restart): the request waits.
    let mut w = World::default()
        .with(volume("a", "n1", &["n1", "n2"], 7))
        .holding("a", have(Held::Idle));
    w.created.insert("a".into(), 5);
    w.fences = ["a".to_string()].into();
    assert_eq!(
        w.plan(),
        vec![
            portals("a"),
            Action::AwaitEpoch {
                id: "a".into(),
                floor: Epoch(7)
            }
        ]
    );
}

#[test]
fn failover_promotes_a_follower_and_demotes_the_old_primary() {
    // Promoted here.
    let w = World::default()
        .with(volume("a", "n1", &["n1", "n2"], 3))
        .holding("a", have(Held::Follower { epoch: Epoch(2) }));
    assert_eq!(
        w.plan(),
        vec![
            Action::Unfollow {
                id: "a".into(),
                keep: true
            },
            portals("a"),
            Action::Serve { id: "a".into() }
        ]
    );
    // Demoted here: it retires and follows the new primary.
    let w = World::default()
        .with(volume("a", "n2", &["n2", "n1"], 3))
        .holding(
            "a",
            have(Held::Primary {
                epoch: Epoch(2),
                fenced: false,
            }),
        );
    assert_eq!(
        w.plan(),
        vec![
            Action::Retire {
                id: "a".into(),
                why: Retirement::NotPrimary
            },
            portals("a"),
            Action::Forward { id: "a".into() },
            Action::Follow { id: "a".into() }
        ]
    );
}

#[test]
fn epochs_are_followed_in_place() {
    let w = World::default()
        .with(volume("a", "n1", &["n1", "n2"], 3))
        .with(volume("b", "n2", &["n2", "n1"], 9))
        .holding(
            "a",
            have(Held::Primary {
                epoch: Epoch(2),
                fenced: false,
            }),
        )
        .holding("b", have(Held::Follower { epoch: Epoch(8) }));
    assert_eq!(
        w.plan(),
        vec![
            portals("a"),
            Action::Refresh {
                id: "a".into(),
                epoch: Some(Epoch(3))
            },
            portals("b"),
            Action::Forward { id: "b".into() },
            Action::FollowEpoch {
                id: "b".into(),
                epoch: Epoch(9)
            }
        ]
    );
}

#[test]
fn only_a_deletion_request_removes_data() {
    let gone = || {
        World::default().holding(
            "a",
            have(Held::Primary {
                epoch: Epoch(1),
                fenced: false,
            }),
        )
    };
    // Missing without a request: left as it is.
    assert_eq!(gone().plan(), vec![]);
    // Unreadable, even with a request: left as it is, still served (an earlier release
    // retired and closed it, while reporting it left as it is).
    let mut w = gone();
    w.unreadable.insert("a".into(), "bad json".into());
    w.deletions.insert(
        "a".into(),
        Deletion {
            id: "a".into(),
            name: "vol-a".into(),
            nodes: vec!["n1".into()],
            primary: "n1".into(),
        },
    );
    assert_eq!(w.plan(), vec![]);
    // Deleted: retire, close, delete.
    w.unreadable.clear();
    assert_eq!(
        w.plan(),
        vec![
            Action::Retire {
                id: "a".into(),
                why: Retirement::Deleted
            },
            Action::Close { id: "a".into() },
            Action::Delete { id: "a".into() }
        ]
    );
}

#[test]
fn a_replica_that_moved_away_drops_its_journal_entries() {
    let w = World::default()
        .with(volume("a", "n2", &["n2", "n3"], 4))
        .holding("a", have(Held::Follower { epoch: Epoch(3) }));
    assert_eq!(
        w.plan(),
        vec![
            Action::Unfollow {
                id: "a".into(),
                keep: false
            },
            Action::Close { id: "a".into() }
        ]
    );
}

#[test]
fn limits_access_and_size_changes_are_applied() {
    let mut v = volume("a", "n1", &["n1", "n2"], 1);
    v.qos = Some("gold".into());
    v.hosts = vec!["h1".into(), "h2".into()];
    v.size = 2 << 30;
    let mut w = World::default().with(v).holding(
        "a",
        have(Held::Primary {
            epoch: Epoch(1),
            fenced: false,
        }),
    );
    w.policies.insert(
        "gold".into(),
        QosPolicy {
            write_iops: Some(5000),
            ..QosPolicy::default()
        },
    );
    let h1 = Host {
        name: "h1".into(),
        nqn: Some("nqn.2014-08.org.example:h1".into()),
        iqn: None,
        nvme_hostid: None,
        chap: None,
        target_chap: None,
    };
    w.hosts.insert("h1".into(), h1.clone());
    // h2's record cannot be read: it is locked out, never everyone let in.
    assert_eq!(
        w.plan(),
        vec![
            Action::Limit {
                id: "a".into(),
                limits: QosLimits {
                    write_iops: Some(alcubierre_block::QosRate::per_sec(5000)),
                    ..QosLimits::default()
                }
            },
            Action::Admit {
                id: "a".into(),
                acl: HostAcl::Only(vec!["nqn.2014-08.org.example:h1".into()]),
                iscsi_hosts: IscsiHosts::Only(vec![h1]),
            },
            portals("a"),
            Action::Grow {
                id: "a".into(),
                backend: true
            },
            Action::Refresh {
                id: "a".into(),
                epoch: None
            }
        ]
    );
}

#[test]
fn a_failing_volume_backs_off_and_its_record_goes_when_it_leaves() {
    let mut w = World::default().with(volume("a", "n1", &["n1", "n2"], 1));
    w.failing.insert("a".into());
    w.backing_off.insert("a".into());
    assert_eq!(w.plan(), vec![]);
    // Exported, but serving failed: it is not tried again before its backoff passed.
    let w2 = World {
        failing: w.failing.clone(),
        backing_off: w.backing_off.clone(),
        ..World::default()
    }
    .with(volume("a", "n1", &["n1", "n2"], 1))
    .holding("a", have(Held::Idle));
    assert_eq!(w2.plan(), vec![portals("a")]);
    // The volume moved away: its failure record here goes.
    let mut w3 = World {
        failing: w.failing.clone(),
        ..World::default()
    }
    .with(volume("a", "n2", &["n2", "n3"], 2));
    assert_eq!(w3.plan(), vec![Action::Forget { id: "a".into() }]);
    // Unless its record cannot be read.
    w3.volumes.clear();
    w3.unreadable.insert("a".into(), "bad json".into());
    assert_eq!(w3.plan(), vec![]);
}

#[test]
fn a_policy_becomes_limits_with_its_bursts() {
    let p = alcubierre_control::volumes::QosPolicy {
        total_iops: Some(100),
        total_iops_max: Some(1000),
        write_bps: Some(1 << 20),
        burst_seconds: Some(10),
        ..Default::default()
    };
    let l = super::qos_limits(Some(&p));
    let rate = |per_sec, peak| Some(alcubierre_block::QosRate { per_sec, peak });
    assert_eq!(l.total_iops, rate(100, Some(1000)));
    assert_eq!(l.write_bps, rate(1 << 20, None));
    assert_eq!((l.read_iops, l.read_bps, l.total_bps), (None, None, None));
    assert_eq!(l.burst, std::time::Duration::from_secs(10));
    assert_eq!(super::qos_limits(None), QosLimits::default());
}

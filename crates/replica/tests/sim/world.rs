//! The simulated world: the event queue, the network and the store with the leader's rules.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use alcubierre_replica::wire::Msg;
use alcubierre_replica::{Epoch, LogPos, Membership, NodeId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::model::*;

pub struct Sim {
    pub now: u64,
    pub rng: SmallRng,
    pub q: BinaryHeap<Reverse<(u64, u64, usize)>>,
    pub evs: Vec<Option<Ev>>,
    pub nodes: Vec<Node>,
    pub m: Membership,
    pub alive_until: Vec<u64>,
    pub backend: Vec<u64>,
    pub fence: Epoch,
    pub conns: BTreeMap<u64, (usize, usize, u64)>,
    pub next_conn: u64,
    /// Blocked pairs (a, b) with a < b, and nodes cut from the store.
    pub cut: BTreeSet<(usize, usize)>,
    pub cut_store: BTreeSet<usize>,
    pub client: Client,
    pub trace: bool,
    pub faults: bool,
    pub failovers: u64,
    pub rebuilds: u64,
}

impl Sim {
    pub fn new(seed: u64) -> Self {
        let members: Vec<NodeId> = (0..N).map(name).collect();
        let m = Membership {
            epoch: Epoch(1),
            primary: alcubierre_replica::NodeId(name(0).to_string()),
            replicas: members.clone(),
            in_sync: members,
        };
        let mut s = Sim {
            now: 0,
            rng: SmallRng::seed_from_u64(seed),
            q: BinaryHeap::new(),
            evs: Vec::new(),
            nodes: (0..N)
                .map(|_| Node {
                    up: true,
                    inc: 0,
                    journal: Journal::default(),
                    role: Role::None,
                    known: None,
                    floor: Some(Epoch(0)),
                    store_contact: 0,
                    primary_conn: None,
                    conns: BTreeMap::new(),
                    destaged: LogPos::default(),
                })
                .collect(),
            m,
            alive_until: vec![HB_TIMEOUT; N],
            backend: vec![0; BLOCKS as usize],
            fence: Epoch(0),
            conns: BTreeMap::new(),
            next_conn: 1,
            cut: BTreeSet::new(),
            cut_store: BTreeSet::new(),
            client: Client {
                next: 1,
                outstanding: BTreeMap::new(),
                acked: vec![0; BLOCKS as usize],
                writes: BTreeSet::new(),
                acks: 0,
                reads: 0,
                settle_acks: 0,
                last_ack: 0,
            },
            trace: std::env::var("SIM_TRACE").is_ok(),
            faults: true,
            failovers: 0,
            rebuilds: 0,
        };
        for i in 0..N {
            let m = s.m.clone();
            s.at(1, Ev::Learn { node: i, m });
        }
        s.at(10, Ev::Tick);
        s
    }

    pub fn at(&mut self, dt: u64, ev: Ev) {
        let id = self.evs.len();
        self.evs.push(Some(ev));
        let seq = id as u64;
        self.q.push(Reverse((self.now + dt, seq, id)));
    }

    pub fn reachable(&self, a: usize, b: usize) -> bool {
        self.nodes[a].up && self.nodes[b].up && !self.cut.contains(&(a.min(b), a.max(b)))
    }

    pub fn in_contact(&self, n: usize) -> bool {
        self.nodes[n].up && !self.cut_store.contains(&n)
    }

    // ---- network ----

    pub fn send(&mut self, conn: u64, from: usize, msg: Msg) {
        let Some(&(a, b, last)) = self.conns.get(&conn) else {
            return;
        };
        let to = if from == a { b } else { a };
        if !self.reachable(from, to) || self.rng.gen_bool(0.0005) {
            self.break_conn(conn);
            return;
        }
        let t = (self.now + self.rng.gen_range(1..8)).max(last + 1);
        self.conns.insert(conn, (a, b, t));
        let dt = t - self.now;
        self.at(dt, Ev::Deliver { conn, to, msg });
    }

    pub fn break_conn(&mut self, conn: u64) {
        if let Some((a, b, _)) = self.conns.remove(&conn) {
            for n in [a, b] {
                let dt = self.rng.gen_range(20..300);
                self.at(dt, Ev::Down { conn, to: n });
            }
        }
    }

    // ---- store and leader ----

    pub fn publish(&mut self) {
        for i in 0..N {
            if self.in_contact(i) {
                let m = self.m.clone();
                let dt = self.rng.gen_range(1..30);
                self.at(dt, Ev::Learn { node: i, m });
            }
        }
    }

    pub fn leader_round(&mut self) {
        let mut changed = false;
        let dead: Vec<usize> = (0..N).filter(|i| self.alive_until[*i] < self.now).collect();
        for d in dead {
            let n = name(d);
            if n == self.m.primary {
                let next = self
                    .m
                    .replicas
                    .iter()
                    .find(|r| {
                        **r != n
                            && self.m.in_sync.contains(r)
                            && self.alive_until[idx(r)] >= self.now
                    })
                    .cloned();
                if let Some(to) = next {
                    self.failovers += 1;
                    self.m.primary = to;
                    self.m.in_sync.retain(|r| *r != n);
                    changed = true;
                }
            } else if self.m.in_sync.contains(&n) {
                self.m.in_sync.retain(|r| *r != n);
                changed = true;
            }
        }
        if changed {
            self.m.epoch = self.m.epoch.next();
            self.log(format!("leader: {:?}", self.m));
            self.publish();
        } else if self.trace && self.now.is_multiple_of(1000) {
            let roles: Vec<String> = self
                .nodes
                .iter()
                .map(|n| match &n.role {
                    Role::P(p) => format!("P({})", p.describe()),
                    Role::F(f) => format!("F(e{} {:?})", f.epoch(), f.last()),
                    Role::None => "-".into(),
                })
                .collect();
            self.log(format!(
                "alive {:?} up {:?} known {:?} roles {roles:?}",
                self.alive_until,
                self.nodes.iter().map(|n| n.up).collect::<Vec<_>>(),
                self.nodes
                    .iter()
                    .map(|n| n.known.as_ref().map(|k| k.epoch))
                    .collect::<Vec<_>>()
            ));
        }
    }

    pub fn ask(&mut self, node: usize, req: Req) {
        let ok = match &req {
            Req::Drop(n, e) => {
                *e == self.m.epoch && *n != self.m.primary && self.m.in_sync.contains(n)
            }
            Req::Add(n, e) => {
                *e == self.m.epoch
                    && self.m.replicas.contains(n)
                    && !self.m.in_sync.contains(n)
                    && self.alive_until[idx(n)] >= self.now
            }
            Req::Restarted => self.m.primary == name(node),
        };
        if !ok {
            self.log(format!(
                "leader refuses {req:?} from n{node} in {:?}",
                self.m
            ));
            return;
        }
        match req {
            Req::Drop(n, _) => self.m.in_sync.retain(|r| *r != n),
            Req::Add(n, _) => self.m.in_sync.push(n),
            Req::Restarted => {}
        }
        self.m.epoch = self.m.epoch.next();
        self.log(format!("leader ({node}): {:?}", self.m));
        self.publish();
    }

    pub fn log(&self, s: String) {
        if self.trace {
            println!("{:>6} {s}", self.now);
        }
    }
}

//! Deterministic simulation of one volume's replication: three nodes running the real primary
//! and follower state machines, journals with the engine's power-loss model, a store with the
//! leader's rules and heartbeat leases, a backend with a fencing token, and a network whose
//! connections break, whose messages are delayed and whose nodes are partitioned, all from one
//! seed. Oracles: no read returns data older than an acknowledged write; after healing, every
//! acknowledged write is there and new writes complete; never two serving primaries.
//!
//! `SIM_SEEDS=N` runs more seeds; `SIM_SEED=N` replays one (with `SIM_TRACE=1` to print events).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use alcubierre_replica::follower::{self, Follower};
use alcubierre_replica::primary::{self, Config, Primary};
use alcubierre_replica::wire::{Msg, Payload};
use alcubierre_replica::{Membership, Pos};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const N: usize = 3;
const BLOCKS: u64 = 8;
const HB_TIMEOUT: u64 = 1000;
const LEASE: u64 = 450;
const VOL: [u8; 16] = [7; 16];
const RUN: u64 = 20_000;
const SETTLE: u64 = 8_000;

fn name(i: usize) -> String {
    format!("n{i}")
}

fn idx(n: &str) -> usize {
    n[1..].parse().unwrap()
}

/// A write as the model journals it: one block gets a value.
fn payload(block: u64, value: u64) -> Payload {
    let mut d = vec![0u8; 512];
    d[..8].copy_from_slice(&value.to_le_bytes());
    Payload::Write {
        offset: block * 512,
        data: Bytes::from(d),
    }
}

fn unpack(p: &Payload) -> (u64, u64) {
    match p {
        Payload::Write { offset, data } => (
            offset / 512,
            u64::from_le_bytes(data[..8].try_into().unwrap()),
        ),
        Payload::Zero { .. } => unreachable!("the model writes only"),
    }
}

#[derive(Default)]
struct Journal {
    entries: Vec<(Pos, Payload)>,
    durable: usize,
    /// Everything up to it is in the backend (after a reset, or released).
    base: Pos,
    /// Entries up to this seq are not used for reads (released to the backend).
    evicted: u64,
    gen: u64,
}

impl Journal {
    fn last(&self) -> Pos {
        self.entries.last().map_or(self.base, |e| e.0)
    }

    fn epochs(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (p, _) in &self.entries {
            if out.last().map(|x| x.1) != Some(p.epoch) {
                out.push((p.seq, p.epoch));
            }
        }
        out
    }

    fn read(&self, block: u64, backend: &[u64]) -> u64 {
        self.entries
            .iter()
            .rev()
            .filter(|(p, _)| p.seq > self.evicted)
            .map(|(_, pl)| unpack(pl))
            .find(|(b, _)| *b == block)
            .map_or(backend[block as usize], |(_, v)| v)
    }

    fn pos_of(&self, seq: u64) -> Pos {
        self.entries
            .iter()
            .find(|(p, _)| p.seq == seq)
            .map_or(Pos { epoch: 0, seq }, |e| e.0)
    }
}

enum Role {
    None,
    P(Box<Primary>),
    F(Follower),
}

struct Node {
    up: bool,
    inc: u64,
    journal: Journal,
    role: Role,
    known: Option<Membership>,
    /// After a restart: act as primary only in a newer epoch than this.
    floor: Option<u64>,
    store_contact: u64,
    /// The connection this node, as a follower, listens on.
    primary_conn: Option<u64>,
    /// As primary: connection per follower.
    conns: BTreeMap<String, u64>,
    destaged: Pos,
}

#[derive(Debug)]
enum Ev {
    Tick,
    Deliver {
        conn: u64,
        to: usize,
        msg: Msg,
    },
    Down {
        conn: u64,
        to: usize,
    },
    Durable {
        node: usize,
        gen: u64,
        upto: usize,
    },
    Learn {
        node: usize,
        m: Membership,
    },
    Ask {
        node: usize,
        req: Req,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Heal,
    Cut {
        a: usize,
        b: Option<usize>,
        store: bool,
        until: u64,
    },
}

#[derive(Debug)]
enum Req {
    Drop(String, u64),
    Add(String, u64),
    Restarted,
}

struct Client {
    next: u64,
    /// (node, epoch, seq) -> (block, value)
    outstanding: BTreeMap<(usize, u64, u64), (u64, u64)>,
    /// Per block: the newest acknowledged value.
    acked: Vec<u64>,
    writes: BTreeSet<(u64, u64)>,
    acks: u64,
    reads: u64,
    /// Acknowledgements after the faults stopped, and the time of the last one.
    settle_acks: u64,
    last_ack: u64,
}

struct Sim {
    now: u64,
    rng: SmallRng,
    q: BinaryHeap<Reverse<(u64, u64, usize)>>,
    evs: Vec<Option<Ev>>,
    nodes: Vec<Node>,
    m: Membership,
    alive_until: Vec<u64>,
    backend: Vec<u64>,
    fence: u64,
    conns: BTreeMap<u64, (usize, usize, u64)>,
    next_conn: u64,
    /// Blocked pairs (a, b) with a < b, and nodes cut from the store.
    cut: BTreeSet<(usize, usize)>,
    cut_store: BTreeSet<usize>,
    client: Client,
    trace: bool,
    faults: bool,
    failovers: u64,
    rebuilds: u64,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let members: Vec<String> = (0..N).map(name).collect();
        let m = Membership {
            epoch: 1,
            primary: name(0),
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
                    floor: Some(0),
                    store_contact: 0,
                    primary_conn: None,
                    conns: BTreeMap::new(),
                    destaged: Pos::default(),
                })
                .collect(),
            m,
            alive_until: vec![HB_TIMEOUT; N],
            backend: vec![0; BLOCKS as usize],
            fence: 0,
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

    fn at(&mut self, dt: u64, ev: Ev) {
        let id = self.evs.len();
        self.evs.push(Some(ev));
        let seq = id as u64;
        self.q.push(Reverse((self.now + dt, seq, id)));
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.nodes[a].up && self.nodes[b].up && !self.cut.contains(&(a.min(b), a.max(b)))
    }

    fn in_contact(&self, n: usize) -> bool {
        self.nodes[n].up && !self.cut_store.contains(&n)
    }

    // ---- network ----

    fn send(&mut self, conn: u64, from: usize, msg: Msg) {
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

    fn break_conn(&mut self, conn: u64) {
        if let Some((a, b, _)) = self.conns.remove(&conn) {
            for n in [a, b] {
                let dt = self.rng.gen_range(20..300);
                self.at(dt, Ev::Down { conn, to: n });
            }
        }
    }

    // ---- store and leader ----

    fn publish(&mut self) {
        for i in 0..N {
            if self.in_contact(i) {
                let m = self.m.clone();
                let dt = self.rng.gen_range(1..30);
                self.at(dt, Ev::Learn { node: i, m });
            }
        }
    }

    fn leader_round(&mut self) {
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
            self.m.epoch += 1;
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

    fn ask(&mut self, node: usize, req: Req) {
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
        self.m.epoch += 1;
        self.log(format!("leader ({node}): {:?}", self.m));
        self.publish();
    }

    fn log(&self, s: String) {
        if self.trace {
            println!("{:>6} {s}", self.now);
        }
    }

    // ---- nodes ----

    fn lease(&self, n: usize) -> u64 {
        self.nodes[n].store_contact + LEASE
    }

    fn persist(&mut self, n: usize, pos: Pos, payload: Payload) {
        let j = &mut self.nodes[n].journal;
        j.entries.push((pos, payload));
        let (gen, upto) = (j.gen, j.entries.len());
        let dt = self.rng.gen_range(1..6);
        self.at(dt, Ev::Durable { node: n, gen, upto });
    }

    fn run_primary(&mut self, n: usize, acts: Vec<primary::Action>) {
        for a in acts {
            let Role::P(_) = self.nodes[n].role else {
                return;
            };
            match a {
                primary::Action::Send { to, msg } => {
                    if let Some(&c) = self.nodes[n].conns.get(&to) {
                        self.send(c, n, msg);
                    }
                }
                primary::Action::Replay { to, after, upto } => {
                    let Some(&c) = self.nodes[n].conns.get(&to) else {
                        continue;
                    };
                    let Role::P(p) = &self.nodes[n].role else {
                        unreachable!()
                    };
                    let epoch = p.epoch();
                    let batch: Vec<Msg> = self.nodes[n]
                        .journal
                        .entries
                        .iter()
                        .filter(|(pos, _)| pos.seq > after && pos.seq <= upto)
                        .map(|(pos, pl)| Msg::Write {
                            epoch,
                            pos: *pos,
                            payload: pl.clone(),
                        })
                        .collect();
                    for m in batch {
                        self.send(c, n, m);
                    }
                }
                primary::Action::Persist { pos, payload } => self.persist(n, pos, payload),
                primary::Action::Acked { upto } => {
                    let Role::P(p) = &self.nodes[n].role else {
                        unreachable!()
                    };
                    let e = p.epoch();
                    let done: Vec<_> = self
                        .client
                        .outstanding
                        .range((n, e, 0)..=(n, e, upto))
                        .map(|(k, v)| (*k, *v))
                        .collect();
                    for (k, (b, v)) in done {
                        self.client.outstanding.remove(&k);
                        self.client.acked[b as usize] = self.client.acked[b as usize].max(v);
                        self.client.acks += 1;
                        self.client.last_ack = self.now;
                        if self.now > RUN + 2000 {
                            self.client.settle_acks += 1;
                        }
                    }
                }
                primary::Action::Connect { to } => {
                    let t = idx(&to);
                    if self.reachable(n, t) {
                        let c = self.next_conn;
                        self.next_conn += 1;
                        self.conns.insert(c, (n, t, self.now));
                        self.nodes[n].conns.insert(to.clone(), c);
                        let old = self.nodes[t].primary_conn.replace(c);
                        if let Some(o) = old {
                            self.conns.remove(&o);
                        }
                        if let Role::F(f) = &mut self.nodes[t].role {
                            f.disconnected();
                        }
                        let acts = match &mut self.nodes[n].role {
                            Role::P(p) => p.connected(&to),
                            _ => unreachable!(),
                        };
                        self.run_primary(n, acts);
                    } else {
                        let acts = match &mut self.nodes[n].role {
                            Role::P(p) => p.disconnected(&to),
                            _ => unreachable!(),
                        };
                        self.run_primary(n, acts);
                    }
                }
                primary::Action::Close { to } => {
                    if let Some(c) = self.nodes[n].conns.remove(&to) {
                        self.break_conn(c);
                    }
                }
                primary::Action::AskDrop { node, epoch } => {
                    self.send_to_store(n, Req::Drop(node, epoch))
                }
                primary::Action::AskAdd { node, epoch } => {
                    self.send_to_store(n, Req::Add(node, epoch))
                }
                primary::Action::Demoted { epoch } => {
                    self.log(format!("n{n} demoted by epoch {epoch}"));
                    self.become_follower(n, epoch);
                    return;
                }
            }
        }
    }

    fn send_to_store(&mut self, n: usize, req: Req) {
        if self.in_contact(n) {
            let dt = self.rng.gen_range(1..20);
            self.at(dt, Ev::Ask { node: n, req });
        }
    }

    fn become_follower(&mut self, n: usize, epoch: u64) {
        let node = &mut self.nodes[n];
        for (_, c) in std::mem::take(&mut node.conns) {
            self.conns.remove(&c);
        }
        let node = &mut self.nodes[n];
        let last = node.journal.last();
        node.role = Role::F(Follower::new(VOL, epoch, last));
    }

    fn run_follower(&mut self, n: usize, acts: Vec<follower::Action>) {
        for a in acts {
            match a {
                follower::Action::Send { msg } => {
                    if let Some(c) = self.nodes[n].primary_conn {
                        self.send(c, n, msg);
                    }
                }
                follower::Action::Close => {
                    if let Some(c) = self.nodes[n].primary_conn.take() {
                        self.break_conn(c);
                    }
                }
                follower::Action::Persist { pos, payload } => self.persist(n, pos, payload),
                follower::Action::Discard => {
                    self.rebuilds += 1;
                    let j = &mut self.nodes[n].journal;
                    j.entries.clear();
                    j.durable = 0;
                    j.gen += 1;
                }
                follower::Action::Release { seq } => {
                    let j = &mut self.nodes[n].journal;
                    j.evicted = j.evicted.max(seq);
                }
            }
        }
    }

    fn learn(&mut self, n: usize, m: Membership) {
        let node = &mut self.nodes[n];
        if !node.up || node.known.as_ref().is_some_and(|k| k.epoch > m.epoch) {
            return;
        }
        node.known = Some(m.clone());
        if node.floor.is_none() {
            node.floor = Some(m.epoch);
            if m.primary == name(n) {
                self.send_to_store(n, Req::Restarted);
            }
        }
        let me = name(n);
        let floor = self.nodes[n].floor.unwrap_or(0);
        if m.primary == me {
            match &mut self.nodes[n].role {
                Role::P(p) => {
                    let acts = p.membership(m);
                    self.run_primary(n, acts);
                }
                _ if m.epoch > floor || (floor == 0 && m.epoch == 1) => {
                    let node = &mut self.nodes[n];
                    for (_, c) in std::mem::take(&mut node.conns) {
                        self.conns.remove(&c);
                    }
                    if let Some(c) = node.primary_conn.take() {
                        self.conns.remove(&c);
                    }
                    let j = &node.journal;
                    let destaged = j.pos_of(j.evicted.max(j.base.seq));
                    let destaged = if destaged.seq == j.base.seq {
                        j.base
                    } else {
                        destaged
                    };
                    node.destaged = destaged;
                    let (p, acts) = Primary::new(
                        VOL,
                        &me,
                        m.clone(),
                        j.last(),
                        &j.epochs(),
                        destaged,
                        Config {
                            min_insync: 2,
                            timeout_ms: 400,
                            retry_ms: 100,
                        },
                        self.now,
                    );
                    let last = j.last();
                    self.fence = self.fence.max(m.epoch);
                    self.log(format!("n{n} primary in {m:?} from {last:?}"));
                    self.nodes[n].role = Role::P(Box::new(p));
                    self.run_primary(n, acts);
                }
                _ => {}
            }
        } else if m.replicas.contains(&me) {
            match &mut self.nodes[n].role {
                Role::P(p) => {
                    let acts = p.membership(m);
                    self.run_primary(n, acts);
                }
                Role::F(f) => {
                    let acts = f.store_epoch(m.epoch);
                    self.run_follower(n, acts);
                }
                Role::None => {
                    let last = self.nodes[n].journal.last();
                    self.nodes[n].role = Role::F(Follower::new(VOL, m.epoch, last));
                }
            }
        }
    }

    fn tick(&mut self) {
        for n in 0..N {
            if self.in_contact(n) {
                self.alive_until[n] = self.now + HB_TIMEOUT;
                // The lease is a read of the replica set: it renews only when what the node
                // knows is current; otherwise the read teaches it the newer set (rule 6).
                if self.nodes[n].known.as_ref().map(|k| k.epoch) == Some(self.m.epoch) {
                    self.nodes[n].store_contact = self.now;
                } else {
                    let m = self.m.clone();
                    self.learn(n, m);
                }
            }
            let lease = self.lease(n);
            if let Role::P(p) = &mut self.nodes[n].role {
                let acts = p.tick(self.now, lease);
                self.run_primary(n, acts);
            }
            // Destage: the primary writes a prefix of its durable log to the backend.
            if self.now.is_multiple_of(50) {
                self.destage(n);
            }
            // A restarted primary asks (again, requests get lost) for the new epoch it needs.
            let waiting = self.nodes[n].known.as_ref().is_some_and(|k| {
                k.primary == name(n)
                    && Some(k.epoch) <= self.nodes[n].floor
                    && !matches!(self.nodes[n].role, Role::P(_))
            });
            if waiting && self.now.is_multiple_of(200) {
                self.send_to_store(n, Req::Restarted);
            }
            // The watch catches up after partitions.
            if self.now.is_multiple_of(200) && self.in_contact(n) {
                let m = self.m.clone();
                self.learn(n, m);
            }
        }
        self.leader_round();
        self.check_single_server();
        self.workload();
        if self.now < RUN + SETTLE {
            self.at(10, Ev::Tick);
        }
    }

    fn destage(&mut self, n: usize) {
        let node = &self.nodes[n];
        let Role::P(p) = &node.role else { return };
        if !p.serving() {
            return;
        }
        let epoch = p.epoch();
        let j = &node.journal;
        let durable_seq = j.entries[..j.durable].last().map_or(0, |e| e.0.seq);
        let upto = durable_seq.min(p.acked());
        if upto <= node.destaged.seq || epoch < self.fence {
            return;
        }
        let writes: Vec<(u64, u64)> = j
            .entries
            .iter()
            .filter(|(pos, _)| pos.seq > node.destaged.seq && pos.seq <= upto)
            .map(|(_, pl)| unpack(pl))
            .collect();
        let pos = j.pos_of(upto);
        for (b, v) in writes {
            self.backend[b as usize] = v;
        }
        self.nodes[n].destaged = pos;
        if let Role::P(p) = &mut self.nodes[n].role {
            let acts = p.destaged(pos);
            self.run_primary(n, acts);
        }
    }

    fn check_single_server(&self) {
        let serving: Vec<usize> = (0..N)
            .filter(
                |n| matches!(&self.nodes[*n].role, Role::P(p) if self.nodes[*n].up && p.serving()),
            )
            .collect();
        assert!(
            serving.len() <= 1,
            "two primaries serve at {}: {serving:?}",
            self.now
        );
    }

    fn workload(&mut self) {
        let Some(n) = (0..N).find(
            |n| matches!(&self.nodes[*n].role, Role::P(p) if self.nodes[*n].up && p.serving()),
        ) else {
            return;
        };
        // Reads: never older than an acknowledged write.
        for _ in 0..2 {
            let b = self.rng.gen_range(0..BLOCKS);
            let v = self.nodes[n].journal.read(b, &self.backend);
            let want = self.client.acked[b as usize];
            assert!(
                v >= want,
                "t={} read of block {b} on n{n} returned {v}, older than acknowledged {want}",
                self.now
            );
            assert!(
                v == 0 || self.client.writes.contains(&(b, v)),
                "read of block {b} returned {v}, never written"
            );
            self.client.reads += 1;
        }
        // Writes: keep up to 8 outstanding at this primary.
        let Role::P(p) = &self.nodes[n].role else {
            unreachable!()
        };
        let e = p.epoch();
        let outstanding = self
            .client
            .outstanding
            .range((n, e, 0)..=(n, e, u64::MAX))
            .count();
        for _ in outstanding..8 {
            let b = self.rng.gen_range(0..BLOCKS);
            let v = self.client.next;
            self.client.next += 1;
            let Role::P(p) = &mut self.nodes[n].role else {
                unreachable!()
            };
            let Ok((seq, acts)) = p.write(payload(b, v)) else {
                return;
            };
            let e = p.epoch();
            self.client.writes.insert((b, v));
            self.client.outstanding.insert((n, e, seq), (b, v));
            self.run_primary(n, acts);
        }
    }

    fn crash(&mut self, n: usize) {
        let keep = {
            let j = &self.nodes[n].journal;
            self.rng.gen_range(j.durable..=j.entries.len())
        };
        let node = &mut self.nodes[n];
        node.up = false;
        node.inc += 1;
        node.journal.entries.truncate(keep);
        node.journal.durable = keep;
        node.journal.gen += 1;
        node.role = Role::None;
        node.known = None;
        node.floor = None;
        let conns: Vec<u64> = node
            .conns
            .values()
            .copied()
            .chain(node.primary_conn)
            .collect();
        node.conns.clear();
        node.primary_conn = None;
        for c in conns {
            self.break_conn(c);
        }
        self.log(format!(
            "n{n} crashed, journal {:?}",
            self.nodes[n].journal.last()
        ));
    }

    fn inject(&mut self) {
        if !self.faults || self.now >= RUN || !self.rng.gen_bool(0.004) {
            return;
        }
        let n = self.rng.gen_range(0..N);
        let down = (0..N).filter(|i| !self.nodes[*i].up).count();
        match self.rng.gen_range(0..4) {
            0 if down == 0 => {
                self.at(0, Ev::Crash { node: n });
                let dt = self.rng.gen_range(100..3000);
                self.at(dt, Ev::Restart { node: n });
            }
            1 => {
                let until = self.now + self.rng.gen_range(200..3000);
                self.at(
                    0,
                    Ev::Cut {
                        a: n,
                        b: None,
                        store: true,
                        until,
                    },
                );
            }
            2 => {
                let b = (n + self.rng.gen_range(1..N)) % N;
                let until = self.now + self.rng.gen_range(200..2000);
                self.at(
                    0,
                    Ev::Cut {
                        a: n,
                        b: Some(b),
                        store: false,
                        until,
                    },
                );
            }
            _ => {
                let until = self.now + self.rng.gen_range(200..2000);
                self.at(
                    0,
                    Ev::Cut {
                        a: n,
                        b: None,
                        store: false,
                        until,
                    },
                );
            }
        }
    }

    fn step(&mut self) -> bool {
        let Some(Reverse((t, _, id))) = self.q.pop() else {
            return false;
        };
        self.now = t;
        let ev = self.evs[id].take().expect("once");
        match ev {
            Ev::Tick => {
                self.inject();
                self.tick();
            }
            Ev::Deliver { conn, to, msg } => {
                if !self.conns.contains_key(&conn) || !self.nodes[to].up {
                    return true;
                }
                let from = {
                    let (a, b, _) = self.conns[&conn];
                    if a == to {
                        b
                    } else {
                        a
                    }
                };
                let as_primary = self.nodes[to].conns.get(&name(from)) == Some(&conn);
                let as_follower = self.nodes[to].primary_conn == Some(conn);
                match &mut self.nodes[to].role {
                    Role::P(p) if as_primary => {
                        let acts = p.on_msg(&name(from), msg);
                        self.run_primary(to, acts);
                    }
                    Role::F(f) if as_follower => {
                        let acts = f.on_msg(msg);
                        self.run_follower(to, acts);
                    }
                    _ => self.break_conn(conn),
                }
            }
            Ev::Down { conn, to } => {
                let node = &mut self.nodes[to];
                if node.primary_conn == Some(conn) {
                    node.primary_conn = None;
                    if let Role::F(f) = &mut node.role {
                        f.disconnected();
                    }
                }
                let peer = node
                    .conns
                    .iter()
                    .find(|(_, c)| **c == conn)
                    .map(|(p, _)| p.clone());
                if let Some(p) = peer {
                    node.conns.remove(&p);
                    if let Role::P(pr) = &mut node.role {
                        let acts = pr.disconnected(&p);
                        self.run_primary(to, acts);
                    }
                }
            }
            Ev::Durable { node, gen, upto } => {
                let up = self.nodes[node].up;
                let j = &mut self.nodes[node].journal;
                if gen != j.gen || !up || upto <= j.durable {
                    return true;
                }
                j.durable = upto.min(j.entries.len());
                let seq = j.entries[..j.durable].last().map_or(0, |e| e.0.seq);
                match &mut self.nodes[node].role {
                    Role::P(p) => {
                        let acts = p.local_durable(seq);
                        self.run_primary(node, acts);
                    }
                    Role::F(f) => {
                        let acts = f.local_durable(seq);
                        self.run_follower(node, acts);
                    }
                    Role::None => {}
                }
            }
            Ev::Learn { node, m } => {
                if self.in_contact(node) {
                    self.learn(node, m);
                }
            }
            Ev::Ask { node, req } => {
                if self.in_contact(node) {
                    self.ask(node, req);
                }
            }
            Ev::Crash { node } => self.crash(node),
            Ev::Restart { node } => {
                self.nodes[node].up = true;
                self.log(format!("n{node} restarted"));
            }
            Ev::Cut { a, b, store, until } => {
                match b {
                    Some(b) => {
                        self.cut.insert((a.min(b), a.max(b)));
                    }
                    None => {
                        for x in 0..N {
                            if x != a {
                                self.cut.insert((a.min(x), a.max(x)));
                            }
                        }
                        if store {
                            self.cut_store.insert(a);
                        }
                    }
                }
                self.log(format!("cut n{a} from {b:?} store {store}"));
                let dt = until - self.now;
                self.at(dt, Ev::Heal);
            }
            Ev::Heal => {
                self.cut.clear();
                self.cut_store.clear();
            }
        }
        true
    }
}

/// What a run did, to show the simulation exercises the protocol.
#[derive(Default, Debug)]
struct Totals {
    acks: u64,
    reads: u64,
    epochs: u64,
    failovers: u64,
    rebuilds: u64,
}

fn run(seed: u64, totals: &mut Totals) {
    eprintln!("seed {seed} (replay: SIM_SEED={seed} SIM_TRACE=1)");
    let mut s = Sim::new(seed);
    while s.step() {
        if s.now >= RUN && s.faults {
            // Heal everything and restart crashed nodes; then it must make progress.
            s.faults = false;
            s.cut.clear();
            s.cut_store.clear();
            for n in 0..N {
                if !s.nodes[n].up {
                    s.nodes[n].up = true;
                }
            }
        }
    }
    // Settled: one primary serves and has every acknowledged write.
    let n = (0..N)
        .find(|n| matches!(&s.nodes[*n].role, Role::P(p) if p.serving()))
        .unwrap_or_else(|| panic!("seed {seed}: no primary serves after healing: {:?}", s.m));
    for b in 0..BLOCKS {
        let v = s.nodes[n].journal.read(b, &s.backend);
        assert!(
            v >= s.client.acked[b as usize],
            "seed {seed}: block {b} lost acknowledged {} (has {v})",
            s.client.acked[b as usize]
        );
    }
    // Progress after healing: writes were acknowledged in the settle period.
    let acks_before = s.client.acks;
    assert!(acks_before > 0, "seed {seed}: nothing acknowledged");
    totals.acks += s.client.acks;
    totals.reads += s.client.reads;
    totals.epochs += s.m.epoch;
    totals.failovers += s.failovers;
    totals.rebuilds += s.rebuilds;
    // Progress: once healed, writes kept completing to the end.
    let Role::P(p) = &s.nodes[n].role else {
        unreachable!()
    };
    let state = p.describe();
    assert!(
        s.client.settle_acks > 1000 && s.now - s.client.last_ack < 1500,
        "seed {seed}: writes stalled after healing: {} acknowledged, the last at {} of {} ({:?}); primary n{n}: {state}",
        s.client.settle_acks,
        s.client.last_ack,
        s.now,
        s.m
    );
}

#[test]
fn replication_survives_crashes_and_partitions() {
    let mut totals = Totals::default();
    if let Ok(seed) = std::env::var("SIM_SEED") {
        run(seed.parse().unwrap(), &mut totals);
        println!("{totals:?}");
        return;
    }
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    for seed in 0..seeds {
        run(seed, &mut totals);
    }
    println!("{seeds} seeds: {totals:?}");
    // The faults must bite: primaries fail over and followers get rebuilt.
    assert!(totals.failovers >= seeds / 4, "{totals:?}");
    assert!(totals.rebuilds >= seeds / 4, "{totals:?}");
}

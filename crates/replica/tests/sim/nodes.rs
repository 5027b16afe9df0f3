//! The simulated nodes: the real state machines' actions carried out, the workload and its
//! oracles, faults.

use std::cmp::Reverse;

use alcubierre_replica::follower::{self, Follower};
use alcubierre_replica::primary::{self, Config, Primary};
use alcubierre_replica::wire::{Msg, Payload};
use alcubierre_replica::{Epoch, LogPos, Membership, SeqNo};
use rand::Rng;

use crate::model::*;
use crate::world::Sim;

impl Sim {
    // ---- nodes ----

    pub fn lease(&self, n: usize) -> u64 {
        self.nodes[n].store_contact + LEASE
    }

    pub fn persist(&mut self, n: usize, pos: LogPos, payload: Payload) {
        let j = &mut self.nodes[n].journal;
        j.entries.push((pos, payload));
        let (gen, upto) = (j.gen, j.entries.len());
        let dt = self.rng.gen_range(1..6);
        self.at(dt, Ev::Durable { node: n, gen, upto });
    }

    pub fn run_primary(&mut self, n: usize, acts: Vec<primary::Action>) {
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
                        .range((n, e, SeqNo(0))..=(n, e, upto))
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
                        // The follower takes the connection over when its Open arrives.
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
                    self.send_to_store(n, Req::Drop(node.clone(), epoch))
                }
                primary::Action::AskAdd { node, epoch } => {
                    self.send_to_store(n, Req::Add(node.clone(), epoch))
                }
                primary::Action::Demoted { epoch } => {
                    self.log(format!("n{n} demoted by epoch {epoch}"));
                    self.become_follower(n, epoch);
                    return;
                }
            }
        }
    }

    pub fn send_to_store(&mut self, n: usize, req: Req) {
        if self.in_contact(n) {
            let dt = self.rng.gen_range(1..20);
            self.at(dt, Ev::Ask { node: n, req });
        }
    }

    pub fn become_follower(&mut self, n: usize, epoch: Epoch) {
        let node = &mut self.nodes[n];
        for (_, c) in std::mem::take(&mut node.conns) {
            self.conns.remove(&c);
        }
        let node = &mut self.nodes[n];
        let last = node.journal.last();
        node.role = Role::F(Follower::new(VOL, epoch, last));
    }

    pub fn run_follower(&mut self, n: usize, acts: Vec<follower::Action>) {
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
                follower::Action::Discard { base } => {
                    self.rebuilds += 1;
                    let j = &mut self.nodes[n].journal;
                    j.base = base;
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

    pub fn learn(&mut self, n: usize, m: Membership) {
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
        let floor = self.nodes[n].floor.unwrap_or(Epoch(0));
        if m.primary == me {
            match &mut self.nodes[n].role {
                Role::P(p) => {
                    let acts = p.membership(m);
                    self.run_primary(n, acts);
                }
                _ if m.epoch > floor || (floor == Epoch(0) && m.epoch == Epoch(1)) => {
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

    pub fn tick(&mut self) {
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

    pub fn destage(&mut self, n: usize) {
        let node = &self.nodes[n];
        let Role::P(p) = &node.role else { return };
        if !p.serving() {
            return;
        }
        let epoch = p.epoch();
        let j = &node.journal;
        let durable_seq = j.entries[..j.durable].last().map_or(SeqNo(0), |e| e.0.seq);
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

    pub fn check_single_server(&self) {
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

    pub fn workload(&mut self) {
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
            .range((n, e, SeqNo(0))..=(n, e, SeqNo(u64::MAX)))
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

    pub fn crash(&mut self, n: usize) {
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

    pub fn inject(&mut self) {
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

    pub fn step(&mut self) -> bool {
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
                    // A new connection's first frame: screened before it replaces the one in
                    // use (as the node's listener does); a refusal goes back on it alone and
                    // the primary closes it.
                    Role::F(f) if matches!(msg, Msg::Open { .. }) => {
                        if let Some(r) = f.refusal(&msg) {
                            self.send(conn, to, r);
                            return true;
                        }
                        f.disconnected();
                        let old = self.nodes[to].primary_conn.replace(conn);
                        if let Some(o) = old {
                            self.break_conn(o);
                        }
                        let Role::F(f) = &mut self.nodes[to].role else {
                            unreachable!()
                        };
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
                let seq = j.entries[..j.durable].last().map_or(SeqNo(0), |e| e.0.seq);
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

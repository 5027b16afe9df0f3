//! The primary's side of a volume (rules 1, 2, 3, 4, 6, 7 and 8 of the design).

use std::collections::BTreeMap;

use crate::wire::{Msg, Payload, VERSION};
use crate::{Epoch, LogPos, Membership, NodeId, SeqNo};
use alcubierre_types::VolumeId;

/// Settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Fewest in-sync members (the primary included) for a write to be acknowledged.
    pub min_insync: usize,
    /// A follower that does not acknowledge for this long (ms) is reported lost.
    pub timeout_ms: u64,
    /// How often to retry connecting to a follower (ms).
    pub retry_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            min_insync: 2,
            timeout_ms: 3000,
            retry_ms: 500,
        }
    }
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send on the connection to `to`, after everything sent or replayed to it before.
    Send {
        /// The follower.
        to: NodeId,
        /// The message.
        msg: Msg,
    },
    /// Send the writes `(after, upto]` from the local log to `to`, in order, as
    /// [`Msg::Write`]s of the current epoch, before any later `Send` to it.
    Replay {
        /// The follower.
        to: NodeId,
        /// Last write it has.
        after: SeqNo,
        /// Last write to send.
        upto: SeqNo,
    },
    /// Persist a write in the local journal, then call [`Primary::local_durable`] (in order).
    Persist {
        /// Its position.
        pos: LogPos,
        /// What it does.
        payload: Payload,
    },
    /// Every host write up to `upto` may be acknowledged.
    Acked {
        /// The highest acknowledged sequence number.
        upto: SeqNo,
    },
    /// Open a connection to `to` and call [`Primary::connected`] (or
    /// [`Primary::disconnected`] on failure).
    Connect {
        /// The follower.
        to: NodeId,
    },
    /// Close the connection to `to`.
    Close {
        /// The follower.
        to: NodeId,
    },
    /// Ask the leader to drop `node` from the in-sync set of epoch `epoch`.
    AskDrop {
        /// The follower.
        node: NodeId,
        /// The epoch the request is based on.
        epoch: Epoch,
    },
    /// Ask the leader to add `node` to the in-sync set of epoch `epoch` (it has every
    /// acknowledged write).
    AskAdd {
        /// The follower.
        node: NodeId,
        /// The epoch the request is based on.
        epoch: Epoch,
    },
    /// The store named another primary in a newer epoch: stop serving the volume; pending
    /// writes are not acknowledged here.
    Demoted {
        /// The newer epoch.
        epoch: Epoch,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// No connection; retry after `at`.
    Down { retry_at: u64 },
    /// Connecting, or Open sent.
    Opening,
    /// Writes flow.
    Streaming,
}

#[derive(Debug)]
struct Peer {
    link: Link,
    /// Highest sequence number durable on it (kept across reconnections: it does not go back
    /// except by a reset).
    acked: SeqNo,
    /// Since when it has owed an acknowledgement, or been disconnected while needed.
    owing_since: Option<u64>,
    asked_drop: bool,
    asked_add: bool,
    /// When the last request about it went to the leader (requests can be lost: retried).
    asked_at: u64,
    /// Its log diverged: rebuild it once it is out of the in-sync set.
    needs_rebuild: bool,
    /// When the last connection attempt started: the next one starts `retry_ms` after it, so a
    /// follower that held the attempt open (waiting for the volume to be registered there) is
    /// tried again at once.
    connect_at: u64,
}

/// How far a follower is, as its primary sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's node.
    pub node: NodeId,
    /// Whether it is in the in-sync set.
    pub in_sync: bool,
    /// Writes flow to it (otherwise it is disconnected or connecting).
    pub streaming: bool,
    /// The highest sequence number durable on it.
    pub acked: SeqNo,
    /// The primary's newest sequence number.
    pub head: SeqNo,
}

/// Why a host write was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// This node is no longer the primary.
    #[error("not the primary (epoch {0} is newer)")]
    NotPrimary(Epoch),
}

/// The primary of one volume.
pub struct Primary {
    volume: VolumeId,
    me: NodeId,
    cfg: Config,
    m: Membership,
    /// Last assigned sequence number.
    head: SeqNo,
    /// Highest locally durable sequence number.
    durable: SeqNo,
    /// Highest sequence number acknowledged to hosts.
    acked: SeqNo,
    /// The destage point: everything up to it is in the backend.
    destaged: LogPos,
    /// Runs of sequence numbers by epoch: `(first seq, epoch)`, ascending.
    epochs: Vec<(SeqNo, Epoch)>,
    peers: BTreeMap<NodeId, Peer>,
    now: u64,
    lease_until: u64,
    demoted: Option<Epoch>,
    /// A follower named this newer epoch before the store's membership for it reached here:
    /// nothing is acknowledged or read until [`Primary::membership`] says whether this node is
    /// still the primary in it (the followers' and the primary's nodes learn a new epoch from
    /// the store independently, in either order).
    stale: Option<Epoch>,
}

impl Primary {
    /// Takes the primary role for `volume` with `m` (its `primary` must be `me`), the local log
    /// ending at `last` (`log_epochs`: the epoch of each run of its sequence numbers, as
    /// `(first seq, epoch)` ascending, from the journal) with writes up to `destaged` in the
    /// backend, at time `now` (ms). The epoch must be one this node has not served as primary
    /// in before (the leader raises it when a primary restarts), so no `(epoch, seq)` is ever
    /// assigned twice.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        volume: VolumeId,
        me: &NodeId,
        m: Membership,
        last: LogPos,
        log_epochs: &[(SeqNo, Epoch)],
        destaged: LogPos,
        cfg: Config,
        now: u64,
    ) -> (Self, Vec<Action>) {
        let mut p = Primary {
            volume,
            me: me.clone(),
            cfg,
            head: last.seq,
            durable: last.seq,
            acked: last.seq,
            destaged,
            epochs: std::iter::once((SeqNo(0), Epoch(0)))
                .chain(log_epochs.iter().copied())
                .collect(),
            peers: BTreeMap::new(),
            now,
            lease_until: 0,
            demoted: None,
            stale: None,
            m: m.clone(),
        };
        let mut out = Vec::new();
        p.apply_membership(m, &mut out);
        (p, out)
    }

    /// The current epoch.
    pub fn epoch(&self) -> Epoch {
        self.m.epoch
    }

    /// The last assigned sequence number.
    pub fn head(&self) -> SeqNo {
        self.head
    }

    /// The highest sequence number acknowledged to hosts.
    pub fn acked(&self) -> SeqNo {
        self.acked
    }

    /// Its state in one line, for logs and test failures.
    pub fn describe(&self) -> String {
        format!(
            "epoch {} head {} durable {} acked {} destaged {:?} lease_until {} now {} demoted {:?} stale {:?} peers {:?}",
            self.m.epoch,
            self.head,
            self.durable,
            self.acked,
            self.destaged,
            self.lease_until,
            self.now,
            self.demoted,
            self.stale,
            self.peers
        )
    }

    /// Every follower's progress.
    pub fn followers(&self) -> Vec<FollowerProgress> {
        let mut out: Vec<FollowerProgress> = self
            .peers
            .iter()
            .map(|(n, p)| FollowerProgress {
                node: n.clone(),
                in_sync: self.m.in_sync.contains(n),
                streaming: p.link == Link::Streaming,
                acked: p.acked,
                head: self.head,
            })
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }

    /// Whether it may serve (reads too): not demoted, not waiting to learn a newer epoch, and
    /// the lease is valid.
    pub fn serving(&self) -> bool {
        self.demoted.is_none() && self.stale.is_none() && self.now < self.lease_until
    }

    /// Whether a follower named a newer epoch that the store's membership has not yet brought.
    pub fn stale(&self) -> Option<Epoch> {
        self.stale
    }

    /// The epoch a sequence number was assigned in (0: unknown / before the log).
    fn epoch_of(&self, seq: SeqNo) -> Epoch {
        match self.epochs.iter().rev().find(|(first, _)| *first <= seq) {
            Some((_, e)) => *e,
            None => Epoch(0),
        }
    }

    fn peer(&mut self, n: &NodeId) -> Option<&mut Peer> {
        self.peers.get_mut(n)
    }

    /// A host write: its sequence number, or why not.
    pub fn write(&mut self, payload: Payload) -> Result<(SeqNo, Vec<Action>), WriteError> {
        if let Some(e) = self.demoted {
            return Err(WriteError::NotPrimary(e));
        }
        self.head = self.head.next();
        let pos = LogPos {
            epoch: self.m.epoch,
            seq: self.head,
        };
        if self.epochs.last().map(|(_, e)| *e) != Some(pos.epoch) {
            self.epochs.push((pos.seq, pos.epoch));
        }
        let mut out = vec![Action::Persist {
            pos,
            payload: payload.clone(),
        }];
        let now = self.now;
        for (n, p) in &mut self.peers {
            if p.link == Link::Streaming {
                out.push(Action::Send {
                    to: n.clone(),
                    msg: Msg::Write {
                        epoch: pos.epoch,
                        pos,
                        payload: payload.clone(),
                    },
                });
            }
            if p.owing_since.is_none() {
                p.owing_since = Some(now);
            }
        }
        Ok((self.head, out))
    }

    /// The local journal made everything up to `seq` durable.
    pub fn local_durable(&mut self, seq: SeqNo) -> Vec<Action> {
        self.durable = self.durable.max(seq.min(self.head));
        let mut out = Vec::new();
        self.commit(&mut out);
        out
    }

    /// The destage point advanced: everything up to `pos` is in the backend (flushed).
    pub fn destaged(&mut self, pos: LogPos) -> Vec<Action> {
        let mut out = Vec::new();
        if pos.seq <= self.destaged.seq {
            return out;
        }
        self.destaged = pos;
        for (n, p) in &self.peers {
            if p.link == Link::Streaming {
                out.push(Action::Send {
                    to: n.clone(),
                    msg: Msg::Release {
                        epoch: self.m.epoch,
                        seq: pos.seq,
                    },
                });
            }
        }
        out
    }

    /// The clock and the lease, without the timer's work: called before every input, so the
    /// lease is judged at the time of the input (not at the last tick).
    pub fn clock(&mut self, now: u64, lease_until: u64) {
        self.now = self.now.max(now);
        self.lease_until = lease_until;
    }

    /// Time passes; `lease_until` is when the node's store lease runs out.
    pub fn tick(&mut self, now: u64, lease_until: u64) -> Vec<Action> {
        self.now = now;
        self.lease_until = lease_until;
        let mut out = Vec::new();
        let epoch = self.m.epoch;
        let in_sync = self.m.in_sync.clone();
        for (n, p) in &mut self.peers {
            if (p.asked_drop || p.asked_add)
                && now.saturating_sub(p.asked_at) >= self.cfg.timeout_ms
            {
                // No new epoch came of it: the request or its answer was lost; ask again.
                p.asked_drop = false;
                p.asked_add = false;
            }
            if p.needs_rebuild && in_sync.contains(n) && !p.asked_drop && self.demoted.is_none() {
                p.asked_drop = true;
                p.asked_at = now;
                out.push(Action::AskDrop {
                    node: n.clone(),
                    epoch,
                });
            }
            if let Link::Down { retry_at } = p.link {
                if now >= retry_at {
                    p.link = Link::Opening;
                    p.connect_at = now;
                    out.push(Action::Connect { to: n.clone() });
                }
            }
            let late = p
                .owing_since
                .is_some_and(|t| now.saturating_sub(t) >= self.cfg.timeout_ms);
            if late && in_sync.contains(n) && !p.asked_drop && self.demoted.is_none() {
                p.asked_drop = true;
                p.asked_at = now;
                out.push(Action::AskDrop {
                    node: n.clone(),
                    epoch,
                });
            }
        }
        self.commit(&mut out);
        out
    }

    /// The driver connected to `to`.
    pub fn connected(&mut self, to: &NodeId) -> Vec<Action> {
        let (volume, epoch) = (self.volume, self.m.epoch);
        match self.peer(to) {
            Some(p) => {
                p.link = Link::Opening;
                vec![Action::Send {
                    to: to.clone(),
                    msg: Msg::Open {
                        version: VERSION,
                        volume,
                        epoch,
                    },
                }]
            }
            None => vec![Action::Close { to: to.clone() }],
        }
    }

    /// The connection to `to` failed or closed.
    pub fn disconnected(&mut self, to: &NodeId) -> Vec<Action> {
        let (now, retry) = (self.now, self.cfg.retry_ms);
        if let Some(p) = self.peer(to) {
            // At once if the attempt took `retry_ms` or more.
            p.link = Link::Down {
                retry_at: p.connect_at + retry,
            };
            if p.owing_since.is_none() {
                p.owing_since = Some(now);
            }
        }
        Vec::new()
    }

    /// A message from follower `from`.
    pub fn on_msg(&mut self, from: &NodeId, msg: Msg) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.peers.contains_key(from) {
            out.push(Action::Close { to: from.clone() });
            return out;
        }
        match msg {
            Msg::Refused { epoch, .. } => {
                if epoch > self.m.epoch {
                    self.heard_newer(from, epoch, &mut out);
                } else {
                    out.push(Action::Close { to: from.clone() });
                    self.disconnected(from);
                }
            }
            Msg::Opened { epoch, last } => {
                if epoch != self.m.epoch {
                    out.push(Action::Close { to: from.clone() });
                    self.disconnected(from);
                    return out;
                }
                self.opened(from, last, &mut out);
            }
            Msg::Ack { epoch, seq } => {
                if epoch > self.m.epoch {
                    self.heard_newer(from, epoch, &mut out);
                    return out;
                }
                let head = self.head;
                let p = self.peers.get_mut(from).expect("checked");
                if p.link != Link::Streaming {
                    return out;
                }
                if seq > p.acked {
                    p.acked = seq.min(head);
                }
                p.owing_since = if p.acked >= head {
                    None
                } else {
                    Some(self.now)
                };
                self.commit(&mut out);
            }
            // Followers do not send these.
            Msg::Open { .. }
            | Msg::Reset { .. }
            | Msg::Write { .. }
            | Msg::Release { .. }
            | Msg::ForwardOpen { .. }
            | Msg::Request { .. }
            | Msg::Reply { .. } => {
                out.push(Action::Close { to: from.clone() });
                self.disconnected(from);
            }
        }
        out
    }

    fn opened(&mut self, from: &NodeId, last: LogPos, out: &mut Vec<Action>) {
        // Its log is a prefix of this one (log matching on the entry at `last`).
        let prefix = last.seq <= self.head
            && (last.seq == SeqNo(0) || self.epoch_of(last.seq) == last.epoch);
        let matches = prefix && last.seq >= self.destaged.seq;
        let in_sync = self.m.in_sync.iter().any(|n| n == from);
        let (head, destaged, epoch) = (self.head, self.destaged, self.m.epoch);
        let p = self.peers.get_mut(from).expect("checked");
        if matches {
            p.link = Link::Streaming;
            p.needs_rebuild = false;
            p.acked = p.acked.min(last.seq);
            out.push(Action::Replay {
                to: from.clone(),
                after: last.seq,
                upto: head,
            });
            out.push(Action::Send {
                to: from.clone(),
                msg: Msg::Release {
                    epoch,
                    seq: destaged.seq,
                },
            });
        } else if prefix {
            // A prefix ending before the destage point: what it lacks up to there is in the
            // backend, so it restarts from the destage point (nothing it holds is lost, nothing
            // foreign is kept) and stays in the in-sync set.
            Self::rebuild(from, p, destaged, head, epoch, out);
        } else if in_sync {
            // It holds every acknowledged write but also writes this log never had: it must
            // leave the in-sync set before its log is discarded (rule 7).
            p.needs_rebuild = true;
            p.link = Link::Opening;
            if !p.asked_drop {
                p.asked_drop = true;
                p.asked_at = self.now;
                out.push(Action::AskDrop {
                    node: from.clone(),
                    epoch,
                });
            }
        } else {
            Self::rebuild(from, p, destaged, head, epoch, out);
        }
    }

    fn rebuild(
        to: &NodeId,
        p: &mut Peer,
        destaged: LogPos,
        head: SeqNo,
        epoch: Epoch,
        out: &mut Vec<Action>,
    ) {
        p.link = Link::Streaming;
        p.needs_rebuild = false;
        p.acked = destaged.seq;
        out.push(Action::Send {
            to: to.clone(),
            msg: Msg::Reset {
                epoch,
                base: destaged,
            },
        });
        out.push(Action::Replay {
            to: to.clone(),
            after: destaged.seq,
            upto: head,
        });
    }

    /// Follower `from` is in `epoch`, newer than this one. Whether this node is still the
    /// primary in it only the store says (through [`Primary::membership`]): until then it
    /// acknowledges and serves nothing, holding its writes, and keeps retrying the follower.
    /// Waiting is bounded: the node's own agent brings the membership from the same store, or
    /// the node loses its lease.
    fn heard_newer(&mut self, from: &NodeId, epoch: Epoch, out: &mut Vec<Action>) {
        if self.demoted.is_some() {
            return;
        }
        self.stale = self.stale.max(Some(epoch));
        out.push(Action::Close { to: from.clone() });
        out.extend(self.disconnected(from));
    }

    fn demote(&mut self, epoch: Epoch, out: &mut Vec<Action>) {
        if self.demoted.is_none() {
            self.demoted = Some(epoch);
            out.push(Action::Demoted { epoch });
            for n in self.peers.keys() {
                out.push(Action::Close { to: n.clone() });
            }
        }
    }

    /// The store's replica set changed.
    pub fn membership(&mut self, m: Membership) -> Vec<Action> {
        let mut out = Vec::new();
        if m.epoch < self.m.epoch || self.demoted.is_some() {
            return out;
        }
        if m.primary != self.me {
            self.demote(m.epoch, &mut out);
            return out;
        }
        if self.stale.is_some_and(|e| m.epoch >= e) {
            self.stale = None;
        }
        if m.epoch > self.m.epoch {
            // The new epoch is announced by reopening every connection.
            for (n, p) in &mut self.peers {
                if p.link != (Link::Down { retry_at: 0 }) {
                    out.push(Action::Close { to: n.clone() });
                }
                p.link = Link::Down { retry_at: 0 };
            }
        }
        self.apply_membership(m, &mut out);
        out
    }

    fn apply_membership(&mut self, m: Membership, out: &mut Vec<Action>) {
        let gone: Vec<NodeId> = self
            .peers
            .keys()
            .filter(|n| !m.replicas.contains(n))
            .cloned()
            .collect();
        for n in gone {
            self.peers.remove(&n);
            out.push(Action::Close { to: n });
        }
        for n in &m.replicas {
            if *n == self.me || self.peers.contains_key(n) {
                continue;
            }
            self.peers.insert(
                n.clone(),
                Peer {
                    link: Link::Opening,
                    acked: SeqNo(0),
                    owing_since: Some(self.now),
                    asked_drop: false,
                    asked_add: false,
                    asked_at: 0,
                    needs_rebuild: false,
                    connect_at: self.now,
                },
            );
            out.push(Action::Connect { to: n.clone() });
        }
        let (head, destaged, epoch) = (self.head, self.destaged, m.epoch);
        let new_epoch = epoch != self.m.epoch;
        for (n, p) in &mut self.peers {
            if new_epoch {
                // Requests name the epoch they are based on; the leader ignores stale ones, so
                // they are made again in the new epoch where still needed.
                p.asked_drop = false;
                p.asked_add = false;
            }
            let in_sync = m.in_sync.contains(n);
            if in_sync {
                p.asked_add = false;
            } else {
                p.asked_drop = false;
                if p.needs_rebuild && p.link == Link::Opening && self.m.epoch == epoch {
                    Self::rebuild(n, p, destaged, head, epoch, out);
                }
            }
        }
        self.m = m;
        self.commit(out);
    }

    /// Acknowledges what rule 2 allows, and asks to add caught-up followers.
    fn commit(&mut self, out: &mut Vec<Action>) {
        if self.demoted.is_some() || self.stale.is_some() {
            return;
        }
        let mut c = self.durable;
        let mut members = 0;
        for n in &self.m.in_sync {
            members += 1;
            if *n == self.me {
                continue;
            }
            c = c.min(self.peers.get(n).map_or(SeqNo(0), |p| p.acked));
        }
        let me_in = self.m.in_sync.contains(&self.me);
        if me_in && members >= self.cfg.min_insync && self.now < self.lease_until && c > self.acked
        {
            self.acked = c;
            out.push(Action::Acked { upto: c });
        }
        let (epoch, now) = (self.m.epoch, self.now);
        for (n, p) in &mut self.peers {
            if !self.m.in_sync.contains(n)
                && p.link == Link::Streaming
                && !p.asked_add
                && p.acked >= self.acked
                && p.acked >= self.durable.min(self.head)
            {
                p.asked_add = true;
                p.asked_at = now;
                out.push(Action::AskAdd {
                    node: n.clone(),
                    epoch,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! A follower's side of a volume (rules 1, 3, 7 and 8 of the design).

use crate::wire::{Msg, Payload, VERSION};
use crate::{Epoch, LogPos, SeqNo};
use alcubierre_types::VolumeId;

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send to the primary on the connection the message came from.
    Send {
        /// The message.
        msg: Msg,
    },
    /// Close the connection to the primary.
    Close,
    /// Persist a write in the local journal, then call [`Follower::local_durable`] (in order).
    Persist {
        /// Its position.
        pos: LogPos,
        /// What it does.
        payload: Payload,
    },
    /// Forget every write of the volume (a rebuild starts): the log restarts after `base`,
    /// everything up to which is in the backend. The journal must remember `base` as its newest
    /// position (and as released).
    Discard {
        /// The primary's destage point.
        base: LogPos,
    },
    /// Evict writes up to `seq`: they are in the backend.
    Release {
        /// The released sequence number.
        seq: SeqNo,
    },
}

/// A follower of one volume.
pub struct Follower {
    volume: VolumeId,
    epoch: Epoch,
    /// Newest write appended (durable or on its way).
    last: LogPos,
    /// Highest durable sequence number.
    durable: SeqNo,
    released: SeqNo,
    /// Whether a primary's Open was accepted on the current connection.
    open: bool,
}

impl Follower {
    /// A follower whose local log ends at `last` (everything up to `durable` is durable; after a
    /// restart they are equal), knowing epoch `epoch` from the store.
    pub fn new(volume: VolumeId, epoch: Epoch, last: LogPos) -> Self {
        Self {
            volume,
            epoch,
            last,
            durable: last.seq,
            released: SeqNo(0),
            open: false,
        }
    }

    /// The newest write appended.
    pub fn last(&self) -> LogPos {
        self.last
    }

    /// The newest epoch known.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The store shows epoch `e`: writes of older epochs are refused from now on.
    pub fn store_epoch(&mut self, e: Epoch) -> Vec<Action> {
        if e > self.epoch {
            self.epoch = e;
            if self.open {
                self.open = false;
                return vec![Action::Close];
            }
        }
        Vec::new()
    }

    /// The refusal owed to a new connection whose first frame is `first`, or `None` when it may
    /// take over from the connection in use: only an `Open` of this volume, in this version, in
    /// the epoch known or a newer one. A refused connection is answered on its own and leaves
    /// the one in use alone, so a stale primary cannot cut the current primary's stream.
    pub fn refusal(&self, first: &Msg) -> Option<Msg> {
        let fits = matches!(first, Msg::Open { version, volume, epoch }
            if *version == VERSION && *volume == self.volume && *epoch >= self.epoch);
        (!fits).then_some(Msg::Refused {
            epoch: self.epoch,
            version: VERSION,
        })
    }

    /// The connection to the primary closed.
    pub fn disconnected(&mut self) {
        self.open = false;
    }

    /// A message from the primary.
    pub fn on_msg(&mut self, msg: Msg) -> Vec<Action> {
        let refuse = |epoch| {
            vec![
                Action::Send {
                    msg: Msg::Refused {
                        epoch,
                        version: VERSION,
                    },
                },
                Action::Close,
            ]
        };
        match msg {
            Msg::Open { epoch, .. } => {
                if self.refusal(&msg).is_some() {
                    self.open = false;
                    return refuse(self.epoch);
                }
                self.epoch = epoch;
                self.open = true;
                vec![
                    Action::Send {
                        msg: Msg::Opened {
                            epoch,
                            last: self.last,
                        },
                    },
                    Action::Send {
                        msg: Msg::Ack {
                            epoch,
                            seq: self.durable,
                        },
                    },
                ]
            }
            Msg::Write { epoch, .. } | Msg::Reset { epoch, .. } | Msg::Release { epoch, .. }
                if !self.open || epoch != self.epoch =>
            {
                self.open = false;
                if epoch < self.epoch {
                    refuse(self.epoch)
                } else {
                    vec![Action::Close]
                }
            }
            Msg::Write { pos, payload, .. } => {
                if pos.seq <= self.last.seq {
                    // A replayed write it already has (same position: checked at Open).
                    return Vec::new();
                }
                if pos.seq != self.last.seq.next() || pos.epoch > self.epoch {
                    self.open = false;
                    return vec![Action::Close];
                }
                self.last = pos;
                vec![Action::Persist { pos, payload }]
            }
            Msg::Reset { base, .. } => {
                self.last = base;
                self.durable = base.seq;
                self.released = base.seq;
                vec![
                    Action::Discard { base },
                    Action::Send {
                        msg: Msg::Ack {
                            epoch: self.epoch,
                            seq: base.seq,
                        },
                    },
                ]
            }
            Msg::Release { seq, .. } => {
                let seq = seq.min(self.durable);
                if seq > self.released {
                    self.released = seq;
                    vec![Action::Release { seq }]
                } else {
                    Vec::new()
                }
            }
            // A primary does not send these.
            Msg::Opened { .. }
            | Msg::Refused { .. }
            | Msg::Ack { .. }
            | Msg::ForwardOpen { .. }
            | Msg::Request { .. }
            | Msg::Reply { .. } => {
                self.open = false;
                vec![Action::Close]
            }
        }
    }

    /// The local journal made everything up to `seq` durable.
    pub fn local_durable(&mut self, seq: SeqNo) -> Vec<Action> {
        let seq = seq.min(self.last.seq);
        if seq <= self.durable {
            return Vec::new();
        }
        self.durable = seq;
        if self.open {
            vec![Action::Send {
                msg: Msg::Ack {
                    epoch: self.epoch,
                    seq,
                },
            }]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alcubierre_types::ByteOffset;
    use bytes::Bytes;

    fn w(epoch: u64, seq: u64) -> Msg {
        Msg::Write {
            epoch: Epoch(epoch),
            pos: LogPos::new(epoch, seq),
            payload: Payload::Write {
                offset: ByteOffset(0),
                data: Bytes::from(vec![0u8; 512]),
            },
        }
    }

    fn open(epoch: u64) -> Msg {
        Msg::Open {
            version: VERSION,
            volume: VolumeId::from_bytes([1; 16]),
            epoch: Epoch(epoch),
        }
    }

    #[test]
    fn appends_in_order_and_acks_durable_writes() {
        let mut f = Follower::new(VolumeId::from_bytes([1; 16]), Epoch(2), LogPos::default());
        let a = f.on_msg(open(2));
        assert!(matches!(
            &a[0],
            Action::Send {
                msg: Msg::Opened {
                    epoch: Epoch(2),
                    ..
                }
            }
        ));
        assert!(matches!(f.on_msg(w(2, 1))[0], Action::Persist { .. }));
        assert!(matches!(f.on_msg(w(2, 2))[0], Action::Persist { .. }));
        assert!(f.on_msg(w(2, 2)).is_empty(), "a duplicate is ignored");
        assert_eq!(f.on_msg(w(2, 4)), vec![Action::Close], "a gap closes");
        assert_eq!(
            f.local_durable(SeqNo(2)),
            Vec::<Action>::new(),
            "closed: acks wait for the next Open"
        );
    }

    #[test]
    fn older_epochs_are_refused() {
        let mut f = Follower::new(VolumeId::from_bytes([1; 16]), Epoch(5), LogPos::default());
        let a = f.on_msg(open(4));
        assert!(matches!(
            &a[0],
            Action::Send {
                msg: Msg::Refused {
                    epoch: Epoch(5),
                    ..
                }
            }
        ));
        f.on_msg(open(5));
        assert!(
            f.refusal(&open(5)).is_none(),
            "the same epoch may reconnect"
        );
        assert!(f.refusal(&open(7)).is_none());
        assert!(
            matches!(
                f.refusal(&open(4)),
                Some(Msg::Refused {
                    epoch: Epoch(5),
                    ..
                })
            ),
            "a stale primary's connection is refused on its own"
        );
        assert!(
            f.refusal(&w(5, 1)).is_some(),
            "only an Open starts a connection"
        );
        assert!(
            matches!(f.on_msg(w(5, 1))[0], Action::Persist { .. }),
            "the connection in use stays open"
        );
        assert_eq!(f.store_epoch(Epoch(6)), vec![Action::Close]);
        let a = f.on_msg(w(5, 2));
        assert!(matches!(
            &a[0],
            Action::Send {
                msg: Msg::Refused {
                    epoch: Epoch(6),
                    ..
                }
            }
        ));
    }
}

//! A replicated volume on its primary: a [`BlockDevice`] whose writes go through the
//! [`Primary`] state machine. Each write is journaled locally with its `(epoch, seq)` and sent to
//! every follower; it completes when the state machine acknowledges it (rule 2). Reads are
//! served from the local cache while the primary serves (not demoted, lease valid).
//!
//! Actions are carried out under the state machine's lock, so local journal submissions and
//! sends to each follower happen in sequence order. Writes after the destage point are kept in
//! memory for resync and rebuild (bounded; a follower that needs older writes stays out of sync
//! until reading them back from the journal exists).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alcubierre_block::{BlockDevice, BlockError, IoFuture};
use alcubierre_cache::{
    CacheVolume, ClaimState, DestageFence, Engine, LogPos, ReplayEnd, Replayed, WriteCallback,
};
use alcubierre_types::{BlockCount, ByteOffset, ByteSize, Lba, VolumeGeometry, VolumeId};
use bytes::Bytes;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::link;
use crate::primary::{Action, Config, Primary};
use crate::wire::{Msg, Payload};
use crate::{Epoch, Membership, NodeId, SeqNo};

/// What the primary asks of the control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Drop `node` from the in-sync set of `epoch`.
    Drop {
        /// The follower.
        node: NodeId,
        /// The epoch.
        epoch: Epoch,
    },
    /// Add `node` to the in-sync set of `epoch`.
    Add {
        /// The follower.
        node: NodeId,
        /// The epoch.
        epoch: Epoch,
    },
}

/// Where the primary's requests go (the node agent writes them to the store).
pub trait Control: Send + Sync {
    /// Asks the leader; answers come back as a new [`Membership`].
    fn ask(&self, volume: VolumeId, ask: Ask);
}

/// The node's store lease, shared by its primaries: milliseconds since `base` until which the
/// node may serve.
#[derive(Clone)]
pub struct Lease {
    base: Instant,
    until_ms: Arc<AtomicU64>,
}

impl Default for Lease {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            until_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Lease {
    /// Milliseconds since the lease's base.
    pub fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// The lease runs until `d` from now.
    pub fn renew(&self, d: Duration) {
        let until = self.now_ms() + d.as_millis() as u64;
        self.until_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// The lease runs until `d` after `start` (e.g. when a successful store round trip began).
    pub fn renew_from(&self, start: Instant, d: Duration) {
        let from = start.saturating_duration_since(self.base).as_millis() as u64;
        self.until_ms
            .fetch_max(from + d.as_millis() as u64, Ordering::AcqRel);
    }

    /// Ends the lease now.
    pub fn revoke(&self) {
        self.until_ms.store(0, Ordering::Release);
    }

    fn until(&self) -> u64 {
        self.until_ms.load(Ordering::Acquire)
    }

    /// Whether the lease holds now.
    pub fn holds(&self) -> bool {
        self.now_ms() < self.until()
    }
}

/// Why a fenced primary refuses I/O.
const FENCED: &str = "another node claimed the volume's backend image; retry on another path";

/// Most bytes of written data kept in memory for resync (older writes come from the journal).
const WINDOW_BYTES: usize = 256 << 20;

/// Most bytes a replay from the journal queues ahead of the follower's connection.
const REPLAY_QUEUE: usize = 64 << 20;

struct Window {
    entries: VecDeque<(LogPos, Payload)>,
    bytes: usize,
    /// Writes up to here are not in the window.
    floor: SeqNo,
}

struct Inner {
    core: Primary,
    pending: BTreeMap<SeqNo, oneshot::Sender<Result<(), BlockError>>>,
    links: HashMap<NodeId, (u64, link::Sender)>,
    window: Window,
    destaged: SeqNo,
}

/// A volume this node is primary of.
pub struct PrimaryVolume {
    volume: VolumeId,
    dev: CacheVolume,
    engine: Arc<Engine>,
    geometry: VolumeGeometry,
    peers: Mutex<HashMap<NodeId, SocketAddr>>,
    control: Arc<dyn Control>,
    lease: Lease,
    inner: Mutex<Inner>,
    next_conn: AtomicU64,
    failed: Mutex<Option<String>>,
    /// Its destage fence, shared with the cache: a lost claim on the backend image fails it.
    fence: DestageFence,
    /// Itself, for the tasks it starts from `&self` (block device calls).
    this: std::sync::Weak<PrimaryVolume>,
    /// The runtime it started in (journal completions may run on the writer thread).
    rt: tokio::runtime::Handle,
    /// A destage for a rebuild is under way.
    destaging: std::sync::atomic::AtomicBool,
    /// Followers brought back up to date, and connections made to them.
    events: EventCounters,
    /// The span its tasks run in: the volume, this node and the epoch (recorded anew on every
    /// membership change).
    span: tracing::Span,
}

/// What a primary did to bring followers up to date, since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaEvents {
    /// A follower that reconnected was sent the writes after its last one (it kept its log).
    pub resyncs: u64,
    /// A follower was rebuilt: reset to the destage point, then sent every write after it
    /// (a new or emptied replica, or one whose log ended before the destage point).
    pub rebuilds: u64,
    /// A follower needed writes no longer in memory: the primary destaged them at once (past
    /// the destage rate limit) and rebuilt the follower from the new destage point.
    pub forced_destages: u64,
    /// Resyncs and rebuilds that read writes no longer in memory back from the journal.
    pub journal_replays: u64,
    /// Connections made to followers: one per follower, and one per reconnect.
    pub connections: u64,
}

/// The live counters behind [`ReplicaEvents`].
#[derive(Default)]
struct EventCounters {
    resyncs: AtomicU64,
    rebuilds: AtomicU64,
    forced_destages: AtomicU64,
    journal_replays: AtomicU64,
    connections: AtomicU64,
}

impl EventCounters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl std::ops::AddAssign for ReplicaEvents {
    fn add_assign(&mut self, o: Self) {
        self.resyncs += o.resyncs;
        self.rebuilds += o.rebuilds;
        self.forced_destages += o.forced_destages;
        self.journal_replays += o.journal_replays;
        self.connections += o.connections;
    }
}

impl PrimaryVolume {
    /// Takes the primary role of `volume` (attached to `engine`) in `m`; followers are reached
    /// at `peers`. Starts its timer task.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        engine: Arc<Engine>,
        dev: CacheVolume,
        me: &NodeId,
        m: Membership,
        peers: HashMap<NodeId, SocketAddr>,
        control: Arc<dyn Control>,
        lease: Lease,
        cfg: Config,
    ) -> Result<Arc<Self>, alcubierre_cache::CacheError> {
        let volume = dev.id();
        let epoch = m.epoch;
        let geometry = engine.geometry(volume)?;
        let log = engine.replication_log(volume);
        let last = LogPos {
            epoch: log.last.epoch,
            seq: log.last.seq.max(log.released),
        };
        // In the backend: what this journal holds as released, and every write before the
        // oldest one it still holds (the journal keeps a volume's writes after its destage
        // point, in order; older ones were destaged here or released by a primary).
        let before_kept = log.runs.first().map_or(last.seq, |(first, _)| first.prev());
        let destaged_seq = before_kept.max(log.released).max(log.destaged);
        let destaged = LogPos {
            epoch: epoch_in(&log.runs, destaged_seq),
            seq: destaged_seq,
        };
        // Destage only under the lease, and only once an earlier primary's backend writes are
        // done (docs/design/replication.md, "Backend fencing").
        let held = lease.clone();
        let fence = DestageFence::new(
            Arc::new(move || held.holds()),
            Instant::now() + engine.backend().write_timeout(),
        );
        engine.set_primary_fenced(volume, fence.clone());
        let (core, acts) = Primary::new(
            volume,
            me,
            m,
            last,
            &log.runs,
            destaged,
            cfg,
            lease.now_ms(),
        );
        let v = Arc::new_cyclic(|this| Self {
            this: this.clone(),
            volume,
            dev,
            engine,
            geometry,
            peers: Mutex::new(peers),
            control,
            lease,
            inner: Mutex::new(Inner {
                core,
                pending: BTreeMap::new(),
                links: HashMap::new(),
                window: Window {
                    entries: VecDeque::new(),
                    bytes: 0,
                    floor: log.last.seq.max(log.released),
                },
                destaged: destaged_seq,
            }),
            next_conn: AtomicU64::new(1),
            failed: Mutex::new(None),
            fence,
            rt: tokio::runtime::Handle::current(),
            destaging: std::sync::atomic::AtomicBool::new(false),
            events: Default::default(),
            span: tracing::info_span!("primary", volume = %volume, node = %me, epoch = epoch.0),
        });
        {
            let mut inner = v.inner.lock();
            v.run(&mut inner, acts);
        }
        let weak = Arc::downgrade(&v);
        tokio::spawn(
            async move {
                let mut t = tokio::time::interval(Duration::from_millis(50));
                loop {
                    t.tick().await;
                    let Some(v) = weak.upgrade() else { return };
                    v.tick();
                }
            }
            .instrument(v.span.clone()),
        );
        Ok(v)
    }

    /// The store's replica set changed; `peers` are the members' replica addresses.
    pub fn membership(self: &Arc<Self>, m: Membership, peers: HashMap<NodeId, SocketAddr>) {
        self.span.record("epoch", m.epoch.0);
        *self.peers.lock() = peers;
        let _ = self.step(|inner| Ok::<_, ()>(inner.core.membership(m)));
    }

    /// The members' replica addresses changed (e.g. a node restarted on another port): later
    /// connections use them.
    pub fn set_peers(&self, peers: HashMap<NodeId, SocketAddr>) {
        *self.peers.lock() = peers;
    }

    /// The state machine's state, for logs and tests.
    pub fn describe(&self) -> String {
        self.inner.lock().core.describe()
    }

    /// Every follower's progress (rebuilds and resyncs catch up to `head`).
    pub fn followers(&self) -> Vec<crate::primary::FollowerProgress> {
        self.inner.lock().core.followers()
    }

    /// What it did to bring followers up to date since it started.
    pub fn events(&self) -> ReplicaEvents {
        let e = &self.events;
        ReplicaEvents {
            resyncs: e.resyncs.load(Ordering::Relaxed),
            rebuilds: e.rebuilds.load(Ordering::Relaxed),
            forced_destages: e.forced_destages.load(Ordering::Relaxed),
            journal_replays: e.journal_replays.load(Ordering::Relaxed),
            connections: e.connections.load(Ordering::Relaxed),
        }
    }

    /// Whether it serves.
    pub fn serving(&self) -> bool {
        let mut inner = self.inner.lock();
        inner.core.clock(self.lease.now_ms(), self.lease.until());
        inner.core.serving() && self.failed.lock().is_none()
    }

    fn tick(self: &Arc<Self>) {
        let destaged = self.engine.replication_log(self.volume).destaged;
        let _ = self.step(|inner| Ok::<_, ()>(self.tick_locked(inner, destaged)));
    }

    fn tick_locked(&self, inner: &mut Inner, destaged: SeqNo) -> Vec<Action> {
        if self.fence.claim_state() == ClaimState::Lost && self.failed.lock().is_none() {
            // Another node claimed the backend image (docs/design/replication.md, "Backend
            // fencing"): this node cannot destage the volume, so it stops serving it. The
            // agent asks for a new epoch; the store decides who serves next.
            tracing::error!(volume = %self.volume,
                "another node claimed the volume's backend image: no longer serving it here");
            self.stop_serving(inner, BlockError::Unavailable(FENCED.into()));
        }
        let now = self.lease.now_ms();
        let mut acts = inner.core.tick(now, self.lease.until());
        // (Writes held while a follower's newer epoch is confirmed by the store are not failed:
        // the membership comes from the same store soon, or the lease runs out.)
        let waiting = inner.core.stale().is_some() && self.lease.holds();
        if !inner.core.serving() && !waiting && !inner.pending.is_empty() {
            // The lease ran out (the node lost the store): nothing more is acknowledged here
            // until it is back, and a new primary may be chosen meanwhile. Waiting writes fail
            // with a path error now, so hosts retry them on another path rather than time out.
            // (Their outcome is unknown to the host, as for any failed write; one that reached
            // the journals is ordered before whatever the host writes next.)
            let e = BlockError::Unavailable(
                "this node lost its lease on the cluster store; retry on another path".into(),
            );
            for (_, tx) in std::mem::take(&mut inner.pending) {
                let _ = tx.send(Err(e.clone()));
            }
        }
        if destaged > inner.destaged {
            inner.destaged = destaged;
            let epoch = inner
                .window
                .entries
                .iter()
                .find(|(p, _)| p.seq == destaged)
                .map_or(Epoch(0), |(p, _)| p.epoch);
            acts.extend(inner.core.destaged(LogPos {
                epoch,
                seq: destaged,
            }));
            let w = &mut inner.window;
            while w.entries.front().is_some_and(|(p, _)| p.seq <= destaged) {
                let (p, pl) = w.entries.pop_front().expect("front");
                w.bytes -= payload_bytes(&pl);
                w.floor = p.seq;
            }
        }
        acts
    }

    /// Runs `f` on the state under its lock and carries out the actions it returns; the frames
    /// they send are written after the lock is released, so senders do not queue behind one
    /// another's system calls (the order of frames is fixed under the lock).
    fn step<E>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Inner) -> Result<Vec<Action>, E>,
    ) -> Result<(), E> {
        let r = link::deferring(|| {
            let mut inner = self.inner.lock();
            inner.core.clock(self.lease.now_ms(), self.lease.until());
            let acts = f(&mut inner)?;
            self.run(&mut inner, acts);
            Ok(())
        });
        // Frames for the followers leave once the tasks ready now have run, so the writes of
        // many hosts' queues share one socket write per follower.
        link::flush_deferred_soon();
        r
    }

    /// Carries out the state machine's actions (under its lock, so order holds).
    fn run(self: &Arc<Self>, inner: &mut Inner, acts: Vec<Action>) {
        // The follower just sent a Reset: the replay after it is a rebuild, not a resync.
        let mut reset: Option<String> = None;
        for a in acts {
            match a {
                Action::Send { to, msg } => {
                    if let Some((_, tx)) = inner.links.get(&to) {
                        if let Msg::Reset { base, .. } = &msg {
                            EventCounters::bump(&self.events.rebuilds);
                            tracing::info!(volume = %self.volume, follower = %to, from = base.seq.0,
                                head = inner.core.head().0, "rebuilding a follower from the destage point");
                            reset = Some(to.to_string());
                        }
                        let _ = tx.send(msg);
                    }
                }
                Action::Replay { to, after, upto } => {
                    let Some((conn, tx)) = inner.links.get(&to).map(|(c, t)| (*c, t.clone()))
                    else {
                        continue;
                    };
                    if reset.as_deref() != Some(to.as_str()) && after < upto {
                        EventCounters::bump(&self.events.resyncs);
                        tracing::info!(volume = %self.volume, follower = %to, after = after.0, upto = upto.0,
                            "resyncing a follower from its last write");
                    }
                    let epoch = inner.core.epoch();
                    let floor = inner.window.floor;
                    if after < floor {
                        // It needs writes from before what memory holds (this node restarted
                        // or took over, or the backlog outgrew the window): they come from the
                        // journal, ahead of the window's and of every later frame, which the
                        // link holds back meanwhile.
                        tx.hold();
                    }
                    for (pos, pl) in &inner.window.entries {
                        if pos.seq > after && pos.seq <= upto {
                            let _ = tx.send(Msg::Write {
                                epoch,
                                pos: *pos,
                                payload: pl.clone(),
                            });
                        }
                    }
                    if after < floor {
                        self.replay_from_journal(to, conn, tx, epoch, after, floor);
                    }
                }
                Action::Persist { pos, payload } => {
                    let w = &mut inner.window;
                    w.bytes += payload_bytes(&payload);
                    w.entries.push_back((pos, payload.clone()));
                    while w.bytes > WINDOW_BYTES {
                        let (p, pl) = w.entries.pop_front().expect("over the limit");
                        w.bytes -= payload_bytes(&pl);
                        w.floor = p.seq;
                    }
                    let me = self.clone();
                    let done = move |r: Result<(), alcubierre_cache::CacheError>, last| {
                        // Where the journal completes (its reaper task or writer thread): in
                        // the runtime's context for what the actions start, with sends
                        // gathered over the commit group.
                        let _rt = me.rt.enter();
                        link::deferring(|| {
                            let mut inner = me.inner.lock();
                            inner.core.clock(me.lease.now_ms(), me.lease.until());
                            match r {
                                Ok(()) => {
                                    let acts = inner.core.local_durable(pos.seq);
                                    me.run(&mut inner, acts);
                                }
                                Err(e) => me.journal_failed(&mut inner, e),
                            }
                        });
                        if last {
                            link::flush_deferred();
                        }
                    };
                    if let Err(e) = persist(&self.dev, &self.geometry, pos, payload, Box::new(done))
                    {
                        self.journal_failed(inner, e);
                    }
                }
                Action::Acked { upto } => {
                    let rest = inner.pending.split_off(&upto.next());
                    for (_, tx) in std::mem::replace(&mut inner.pending, rest) {
                        let _ = tx.send(Ok(()));
                    }
                }
                Action::Connect { to } => self.connect(to),
                Action::Close { to } => {
                    inner.links.remove(&to);
                }
                Action::AskDrop { node, epoch } => {
                    self.control.ask(self.volume, Ask::Drop { node, epoch })
                }
                Action::AskAdd { node, epoch } => {
                    self.control.ask(self.volume, Ask::Add { node, epoch })
                }
                Action::Demoted { epoch } => {
                    tracing::warn!(volume = %self.volume, epoch = epoch.0, "demoted: another node is the primary in a newer epoch");
                    let e = BlockError::Unavailable(format!(
                        "this node is no longer the volume's primary (epoch {epoch})"
                    ));
                    for (_, tx) in std::mem::take(&mut inner.pending) {
                        let _ = tx.send(Err(e.clone()));
                    }
                    inner.links.clear();
                }
            }
        }
    }

    /// Sends follower `to` (on connection `conn`, whose later frames `tx` holds back) the
    /// writes in `(after, floor]` from the journal, then lets the held frames go. If the
    /// journal no longer holds them all (the destager passed them and eviction reused the
    /// space), the follower is disconnected, the volume destaged, and the follower rebuilt from
    /// the new destage point when it reconnects.
    fn replay_from_journal(
        self: &Arc<Self>,
        to: NodeId,
        conn: u64,
        tx: link::Sender,
        epoch: Epoch,
        after: SeqNo,
        floor: SeqNo,
    ) {
        let me = self.clone();
        self.rt.spawn_blocking(move || {
            let t0 = Instant::now();
            let mut sent = 0u64;
            let r = me.engine.replay_replicated(me.volume, after, floor, |tag, r| {
                let payload = match r {
                    Replayed::Write { offset, data } => Payload::Write { offset, data },
                    Replayed::Zero { offset, len } => Payload::Zero { offset, len },
                };
                let pos = LogPos {
                    epoch: tag.epoch,
                    seq: tag.seq,
                };
                if tx.send_ahead(Msg::Write { epoch, pos, payload }).is_err() {
                    return false;
                }
                sent += 1;
                // Keep no more than REPLAY_QUEUE bytes ahead of the socket.
                let wait = Instant::now();
                while tx.queued() > REPLAY_QUEUE {
                    if wait.elapsed() > Duration::from_secs(30) {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                true
            });
            match r {
                Ok(ReplayEnd::Complete) => {
                    EventCounters::bump(&me.events.journal_replays);
                    tracing::info!(volume = %me.volume, follower = %to, after = after.0, floor = floor.0, writes = sent,
                        took_ms = t0.elapsed().as_millis() as u64, "replayed writes from the journal");
                    let _ = tx.release();
                }
                other => {
                    tracing::warn!(volume = %me.volume, follower = %to, after = after.0, floor = floor.0, ?other,
                        "the journal no longer holds the writes a follower needs: destaging them, then rebuilding the follower");
                    let _rt = me.rt.enter();
                    link::deferring(|| {
                        let mut inner = me.inner.lock();
                        if inner.links.get(&to).is_some_and(|(c, _)| *c == conn) {
                            EventCounters::bump(&me.events.forced_destages);
                            inner.links.remove(&to);
                            let acts = inner.core.disconnected(&to);
                            me.run(&mut inner, acts);
                            me.destage_for_rebuild();
                        }
                    });
                    link::flush_deferred();
                }
            }
        });
    }

    /// Destages the volume's partition in the background (once at a time), for a rebuild that
    /// needs a destage point past what the journal holds.
    fn destage_for_rebuild(&self) {
        if self.destaging.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.arc();
        self.rt.spawn_blocking(move || {
            let r = me
                .engine
                .destage_now(me.volume, Some(Duration::from_secs(30)));
            if let Err(e) = r {
                tracing::warn!(volume = %me.volume, "destaging for a rebuild failed: {e}");
            }
            me.destaging.store(false, Ordering::Release);
        });
    }

    /// The local journal failed (fail-stop) or stopped: nothing more is acknowledged here.
    fn journal_failed(&self, inner: &mut Inner, e: alcubierre_cache::CacheError) {
        self.stop_serving(inner, e.into_block(self.geometry().block_size()));
    }

    /// Nothing more is acknowledged here; waiting writes fail with `e`.
    fn stop_serving(&self, inner: &mut Inner, e: BlockError) {
        *self.failed.lock() = Some(e.to_string());
        for (_, tx) in std::mem::take(&mut inner.pending) {
            let _ = tx.send(Err(e.clone()));
        }
    }

    /// Whether another node claimed the volume's backend image, so this primary stopped.
    pub fn fenced(&self) -> bool {
        self.fence.claim_state() == ClaimState::Lost
    }

    fn connect(self: &Arc<Self>, to: NodeId) {
        let addr = self.peers.lock().get(&to).copied();
        let me = self.clone();
        let span = tracing::info_span!(parent: &self.span, "link", follower = %to);
        tokio::spawn(
            async move {
                let stream = match addr {
                    Some(a) => {
                        tokio::time::timeout(
                            Duration::from_secs(2),
                            tokio::net::TcpStream::connect(a),
                        )
                        .await
                    }
                    None => Ok(Err(std::io::Error::other("no replica address"))),
                };
                let Ok(Ok(stream)) = stream else {
                    let _ = me.step(|inner| Ok::<_, ()>(inner.core.disconnected(&to)));
                    return;
                };
                let (tx, rx) = link::spawn(stream);
                EventCounters::bump(&me.events.connections);
                let id = me.next_conn.fetch_add(1, Ordering::Relaxed);
                let _ = me.step(|inner| {
                    inner.links.insert(to.clone(), (id, tx));
                    Ok::<_, ()>(inner.core.connected(&to))
                });
                // Frames are handled on the connection's reader task, as they arrive. The task
                // holds the primary weakly: once its last handle is dropped, its links close.
                let weak = Arc::downgrade(&me);
                drop(me);
                rx.run(move |m| {
                    let Some(me) = weak.upgrade() else {
                        return false;
                    };
                    let mut go = true;
                    let _ = me.step(|inner| {
                        if inner.links.get(&to).map(|l| l.0) != Some(id) {
                            go = false;
                            return Ok::<_, ()>(Vec::new());
                        }
                        Ok(match m {
                            Some(m) => inner.core.on_msg(&to, m),
                            None => {
                                inner.links.remove(&to);
                                inner.core.disconnected(&to)
                            }
                        })
                    });
                    go
                });
            }
            .instrument(span),
        );
    }

    fn submit(&self, payload: Payload) -> IoFuture<()> {
        if let Some(e) = &*self.failed.lock() {
            return futures::future::ready(Err(BlockError::DeviceFailed(e.clone()))).boxed();
        }
        let (tx, rx) = oneshot::channel();
        let me = self.arc();
        let r = me.step(|inner| match inner.core.write(payload) {
            Ok((seq, acts)) => {
                inner.pending.insert(seq, tx);
                Ok(acts)
            }
            Err(e) => Err(e),
        });
        if let Err(e) = r {
            return futures::future::ready(Err(BlockError::Unavailable(e.to_string()))).boxed();
        }
        async move {
            rx.await.unwrap_or_else(|_| {
                Err(BlockError::Unavailable(
                    "the replicated volume stopped".into(),
                ))
            })
        }
        .boxed()
    }

    fn arc(&self) -> Arc<Self> {
        self.this
            .upgrade()
            .expect("a PrimaryVolume lives in the Arc `start` made")
    }

    /// The byte range of a request, checked against `g` (looked up once per request).
    fn range(
        &self,
        g: &VolumeGeometry,
        lba: Lba,
        count: BlockCount,
    ) -> Result<(u64, u64), BlockError> {
        alcubierre_block::check_range(g, self.max_transfer(), lba, count)?;
        let bs = g.block_size().bytes();
        Ok((lba.0 * bs, count.0 * bs))
    }
}

impl BlockDevice for PrimaryVolume {
    fn geometry(&self) -> VolumeGeometry {
        self.engine.geometry(self.volume).unwrap_or(self.geometry)
    }

    fn max_transfer(&self) -> ByteSize {
        self.dev.max_transfer()
    }

    fn read(&self, lba: Lba, count: BlockCount) -> IoFuture<Bytes> {
        if !self.serving() {
            return futures::future::ready(Err(BlockError::Unavailable(
                "not serving: no valid lease or no longer the primary".into(),
            )))
            .boxed();
        }
        self.dev.read(lba, count)
    }

    fn write(&self, lba: Lba, data: Bytes) -> IoFuture<()> {
        let g = self.geometry();
        let n = match alcubierre_block::check_payload(&g, data.len()) {
            Ok(n) => n,
            Err(e) => return futures::future::ready(Err(e)).boxed(),
        };
        match self.range(&g, lba, n) {
            Ok((offset, _)) => self.submit(Payload::Write {
                offset: ByteOffset(offset),
                data,
            }),
            Err(e) => futures::future::ready(Err(e)).boxed(),
        }
    }

    fn write_zeroes(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        match self.range(&self.geometry(), lba, count) {
            Ok((offset, len)) => self.submit(Payload::Zero {
                offset: ByteOffset(offset),
                len: ByteSize(len),
            }),
            Err(e) => futures::future::ready(Err(e)).boxed(),
        }
    }

    fn unmap(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        self.write_zeroes(lba, count)
    }

    fn flush(&self) -> IoFuture<()> {
        // An acknowledged write is durable on every in-sync replica already.
        let r = match &*self.failed.lock() {
            Some(e) => Err(BlockError::DeviceFailed(e.clone())),
            None => Ok(()),
        };
        futures::future::ready(r).boxed()
    }
}

/// Submits a replicated write to the local journal (in call order) with its tag; `done` runs
/// where the journal completes when it is durable (see [`WriteCallback`]), unless the
/// submission fails at once (returned here; `done` is then never called).
pub(crate) fn persist(
    dev: &CacheVolume,
    geometry: &VolumeGeometry,
    pos: LogPos,
    payload: Payload,
    done: WriteCallback,
) -> Result<(), alcubierre_cache::CacheError> {
    let tag = LogPos {
        epoch: pos.epoch,
        seq: pos.seq,
    };
    let bs = geometry.block_size().bytes();
    match payload {
        Payload::Write { offset, data } => {
            dev.submit_with(Lba(offset.0 / bs), Some(data), BlockCount(0), tag, done)
        }
        Payload::Zero { offset, len } => {
            dev.submit_with(Lba(offset.0 / bs), None, BlockCount(len.0 / bs), tag, done)
        }
    }
}

fn payload_bytes(p: &Payload) -> usize {
    match p {
        Payload::Write { data, .. } => data.len(),
        Payload::Zero { .. } => 64,
    }
}

fn epoch_in(runs: &[(SeqNo, Epoch)], seq: SeqNo) -> Epoch {
    runs.iter()
        .rev()
        .find(|(first, _)| *first <= seq)
        .map_or(Epoch(0), |(_, e)| *e)
}

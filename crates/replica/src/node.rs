//! A node's follower side: the replica listener and the follower volumes it feeds.
//!
//! The listener accepts a primary's connection, reads its first frame (`Open`) and hands the
//! connection to that volume's [`FollowerVolume`]; a newer connection that the follower accepts
//! (this volume, this version, the epoch it knows or a newer one) replaces an older one. A
//! follower volume runs the [`Follower`] state machine and applies its actions to the local
//! cache: writes are submitted to the journal in the order they arrive (so the journal's order
//! is the sequence order), acknowledged when durable, released when the primary says so.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alcubierre_block::BlockDevice;
use alcubierre_cache::{CacheVolume, Engine, VolumeOpener};
use alcubierre_types::{VolumeGeometry, VolumeId};
use parking_lot::Mutex;
use tokio::net::TcpListener;

use crate::follower::{Action, Follower};
use crate::link;
use crate::wire::{Msg, VERSION};
use crate::{Epoch, LogPos};

/// One volume this node follows.
pub struct FollowerVolume {
    volume: VolumeId,
    engine: Arc<Engine>,
    dev: CacheVolume,
    geometry: VolumeGeometry,
    core: Mutex<Follower>,
    /// The connection in use (its number and sender).
    conn: Mutex<Option<(u64, link::Sender)>>,
    next_conn: AtomicU64,
    /// The runtime it started in (journal completions may run on the writer thread).
    rt: tokio::runtime::Handle,
}

impl FollowerVolume {
    /// Follows `volume` (attached to `engine`), knowing `epoch` from the store; its log is what
    /// the journal holds.
    pub fn new(
        engine: Arc<Engine>,
        opener: &VolumeOpener,
        volume: VolumeId,
        epoch: Epoch,
    ) -> Result<Arc<Self>, alcubierre_cache::CacheError> {
        let log = engine.replication_log(volume);
        let last = LogPos {
            epoch: log.last.epoch,
            seq: log.last.seq.max(log.released),
        };
        engine.set_replica_role(volume, alcubierre_cache::ReplicaRole::Follower);
        Ok(Arc::new(Self {
            volume,
            geometry: engine.geometry(volume)?,
            dev: opener.volume(volume)?,
            engine,
            core: Mutex::new(Follower::new(volume, epoch, last)),
            conn: Mutex::new(None),
            next_conn: AtomicU64::new(1),
            rt: tokio::runtime::Handle::current(),
        }))
    }

    /// The volume.
    pub fn volume(&self) -> VolumeId {
        self.volume
    }

    /// The newest write it holds.
    pub fn last(&self) -> LogPos {
        self.core.lock().last()
    }

    /// Stops following: the current connection closes and nothing more is applied from it.
    pub fn stop(&self) {
        self.conn.lock().take();
    }

    /// The store shows epoch `e`.
    pub fn store_epoch(self: &Arc<Self>, e: Epoch) {
        let acts = self.core.lock().store_epoch(e);
        let id = self.conn.lock().as_ref().map_or(0, |c| c.0);
        self.run(id, acts);
    }

    fn run(self: &Arc<Self>, conn: u64, acts: Vec<Action>) {
        for a in acts {
            match a {
                Action::Send { msg } => {
                    if let Some((id, tx)) = &*self.conn.lock() {
                        if *id == conn {
                            let _ = tx.send(msg);
                        }
                    }
                }
                Action::Close => {
                    let mut c = self.conn.lock();
                    if c.as_ref().is_some_and(|(id, _)| *id == conn) {
                        *c = None;
                    }
                }
                Action::Persist { pos, payload } => {
                    let me = self.clone();
                    let done = move |r: Result<(), alcubierre_cache::CacheError>, last| {
                        // Where the journal completes (its reaper task or writer thread): the
                        // commit group's acknowledgements leave in one socket write.
                        let _rt = me.rt.enter();
                        link::deferring(|| match r {
                            Ok(()) => {
                                let acts = me.core.lock().local_durable(pos.seq);
                                me.run(conn, acts);
                            }
                            Err(e) => {
                                tracing::error!(volume = %me.volume, seq = pos.seq.0,
                                    "a replicated write failed here: {e}");
                                me.conn.lock().take();
                            }
                        });
                        if last {
                            link::flush_deferred();
                        }
                    };
                    let r = crate::volume::persist(
                        &self.dev,
                        &self.geometry,
                        pos,
                        payload,
                        Box::new(done),
                    );
                    if let Err(e) = r {
                        tracing::error!(volume = %self.volume, seq = pos.seq.0,
                            "a replicated write failed here: {e}");
                        let mut c = self.conn.lock();
                        if c.as_ref().is_some_and(|(id, _)| *id == conn) {
                            *c = None;
                        }
                    }
                }
                Action::Discard { base } => {
                    // A rebuild starts: the journal forgets the volume's writes but keeps
                    // `base` as its position (the volume stays attached).
                    let base = alcubierre_cache::LogPos {
                        epoch: base.epoch,
                        seq: base.seq,
                    };
                    if let Err(e) = self.engine.reset_replica(self.volume, base) {
                        tracing::error!(volume = %self.volume, "discarding for a rebuild failed: {e}");
                        self.conn.lock().take();
                    }
                }
                Action::Release { seq } => {
                    let (engine, volume) = (self.engine.clone(), self.volume);
                    self.rt.spawn_blocking(move || {
                        if let Err(e) = engine.release(volume, seq) {
                            tracing::warn!(%volume, seq = seq.0, "journaling a release failed: {e}");
                        }
                    });
                }
            }
        }
    }

    /// Whether connection `id` is the one in use.
    fn current(&self, id: u64) -> bool {
        self.conn.lock().as_ref().is_some_and(|(c, _)| *c == id)
    }

    /// Serves a primary's connection, whose first frame was `first`; later frames are handled
    /// on the connection's reader task as they arrive.
    fn serve(self: Arc<Self>, tx: link::Sender, rx: link::Reader, first: Msg) {
        // Screened before it replaces the connection in use: an old primary that has not
        // heard of the new epoch yet must not cut the current primary off.
        let refusal = self.core.lock().refusal(&first);
        if let Some(r) = refusal {
            let offered = match first {
                Msg::Open { epoch, .. } => epoch,
                _ => Epoch(0),
            };
            tracing::info!(volume = %self.volume, offered = offered.0, "refused a replication connection (older epoch, other version or volume)");
            let _ = tx.send(r);
            return;
        }
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.core.lock().disconnected();
        *self.conn.lock() = Some((id, tx));
        if self.on_frame(id, Some(first)) {
            rx.run(move |m| self.on_frame(id, m));
        }
    }

    /// A frame (or the end, `None`) of connection `id`; whether to go on reading it.
    fn on_frame(self: &Arc<Self>, id: u64, m: Option<Msg>) -> bool {
        if let Some(m) = m {
            if !self.current(id) {
                return false;
            }
            let acts = self.core.lock().on_msg(m);
            self.run(id, acts);
            if self.current(id) {
                return true;
            }
        }
        let mut c = self.conn.lock();
        if c.as_ref().is_some_and(|(c, _)| *c == id) {
            *c = None;
            self.core.lock().disconnected();
        }
        false
    }
}

/// How long a primary's connection for a volume this node does not follow waits for it.
const WAIT_FOR_VOLUME: Duration = Duration::from_secs(2);

/// Devices a node serves forwarded I/O on, by volume.
type Serving = Mutex<HashMap<VolumeId, Arc<dyn BlockDevice>>>;

/// Where a node takes the unit attentions other nodes pass on, by volume.
type AttentionSinks = Mutex<HashMap<VolumeId, crate::forward::AttentionSink>>;

/// The node's replica listener: replication connections from primaries, and forwarded I/O
/// from the volume's other paths.
pub struct ReplicaServer {
    followers: Mutex<HashMap<VolumeId, Arc<FollowerVolume>>>,
    /// Signalled when a volume is added.
    added: tokio::sync::Notify,
    serving: Arc<Serving>,
    attentions: Arc<AttentionSinks>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReplicaServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReplicaServer {
    /// Listens on `addr`.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Arc<Self>> {
        let l = TcpListener::bind(addr).await?;
        let addr = l.local_addr()?;
        let server = Arc::new_cyclic(|weak: &std::sync::Weak<ReplicaServer>| {
            let weak = weak.clone();
            let task = tokio::spawn(async move {
                loop {
                    let Ok((s, peer)) = l.accept().await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let Some(me) = weak.upgrade() else { return };
                    tokio::spawn(async move { me.accept(s, peer).await });
                }
            });
            ReplicaServer {
                followers: Mutex::new(HashMap::new()),
                added: tokio::sync::Notify::new(),
                serving: Arc::new(Mutex::new(HashMap::new())),
                attentions: Arc::new(Mutex::new(HashMap::new())),
                addr,
                task,
            }
        });
        Ok(server)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts following a volume.
    pub fn add(&self, f: Arc<FollowerVolume>) {
        self.followers.lock().insert(f.volume, f);
        self.added.notify_waiters();
    }

    /// Stops following a volume (its connection closes).
    pub fn remove(&self, volume: VolumeId) -> Option<Arc<FollowerVolume>> {
        let f = self.followers.lock().remove(&volume);
        if let Some(f) = &f {
            f.stop();
        }
        f
    }

    /// Serves forwarded I/O of `volume` (of which this node is the primary) on `dev`.
    pub fn serve_forwarded(&self, volume: VolumeId, dev: Arc<dyn BlockDevice>) {
        self.serving.lock().insert(volume, dev);
    }

    /// Stops serving forwarded I/O of `volume`: requests fail as unavailable.
    pub fn stop_forwarded(&self, volume: VolumeId) {
        self.serving.lock().remove(&volume);
    }

    /// Unit attentions other nodes pass on for `volume` go to `sink` (its LU on this node).
    pub fn take_attentions(&self, volume: VolumeId, sink: crate::forward::AttentionSink) {
        self.attentions.lock().insert(volume, sink);
    }

    /// `volume` has no LU here any more.
    pub fn drop_attentions(&self, volume: VolumeId) {
        self.attentions.lock().remove(&volume);
    }

    async fn accept(self: Arc<Self>, s: tokio::net::TcpStream, peer: SocketAddr) {
        let (tx, mut rx) = link::spawn(s);
        let first = tokio::time::timeout(Duration::from_secs(10), rx.next()).await;
        let Ok(Some(first)) = first else {
            return;
        };
        if let Msg::ForwardOpen { version, volume } = first {
            if version != VERSION {
                let _ = tx.send(Msg::Refused {
                    epoch: Epoch(0),
                    version: VERSION,
                });
                return;
            }
            let serving = self.serving.clone();
            let lookup = Arc::new(move |v: &VolumeId| serving.lock().get(v).cloned());
            let sinks = self.attentions.clone();
            let attentions = Arc::new(move |v: &VolumeId| sinks.lock().get(v).cloned());
            crate::forward::serve(volume, lookup, attentions, tx, rx);
            return;
        }
        let Msg::Open { volume, .. } = &first else {
            tracing::warn!(%peer, "replication connection did not start with Open or ForwardOpen");
            return;
        };
        // A primary may connect before this node registers the volume (a new replica, or
        // this node just restarted): the connection waits for it a while rather than making
        // the primary retry later.
        let deadline = tokio::time::Instant::now() + WAIT_FOR_VOLUME;
        loop {
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            if let Some(f) = self.followers.lock().get(volume).cloned() {
                f.serve(tx, rx, first);
                return;
            }
            if tokio::time::timeout_at(deadline, added).await.is_err() {
                let _ = tx.send(Msg::Refused {
                    epoch: Epoch(0),
                    version: VERSION,
                });
                return;
            }
        }
    }
}

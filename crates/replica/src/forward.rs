//! Paths on every replica: a node that is not a volume's primary still exports it, and forwards
//! its hosts' I/O to the primary over the replica network; [`PathDevice`] is what such a node
//! exports, switching between serving locally (primary) and forwarding as roles change.
//!
//! On the primary, the replica listener hands a forwarding connection ([`Msg::ForwardOpen`]) to
//! [`serve`], which runs each request on the device the node registered for the volume (the
//! replicated volume behind its QoS limits). A request for a volume the node does not serve
//! fails with "unavailable", which the host sees as an inaccessible path and retries elsewhere.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alcubierre_block::{BlockDevice, BlockError, HostId, IoFuture, Op, Reservations, ResvCommand};
use alcubierre_types::{BlockCount, ByteSize, Lba, VolumeGeometry, VolumeId};
use bytes::Bytes;
use futures::FutureExt;
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::link;
use crate::wire::{Msg, Request, VERSION};

/// How long a forwarded request may take before the path reports it failed (the host then
/// retries on another path).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
/// How long connecting to the primary may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Finds the device a node serves forwarded I/O of a volume on.
pub(crate) type Lookup = Arc<dyn Fn(&VolumeId) -> Option<Arc<dyn BlockDevice>> + Send + Sync>;

/// Takes a unit attention `(asc, ascq)` for the I_T nexuses of `hosts` (empty: every nexus) of
/// a volume's LU on this node.
pub type AttentionSink = Arc<dyn Fn(u8, u8, &[HostId]) + Send + Sync>;

/// Finds where a node takes a volume's unit attentions.
pub(crate) type Attentions = Arc<dyn Fn(&VolumeId) -> Option<AttentionSink> + Send + Sync>;

/// Serves a forwarding connection: every I/O request runs on `lookup(volume)`'s device (this
/// node is the primary), concurrently, and replies go back as they complete; a unit attention
/// from another node goes to `attentions(volume)` (any replica node) and is answered at once.
pub(crate) fn serve(
    volume: VolumeId,
    lookup: Lookup,
    attentions: Attentions,
    tx: link::Sender,
    rx: link::Reader,
) {
    rx.run(move |m| {
        let Some(Msg::Request { id, host, req }) = m else {
            return false; // the end, or a frame that has no place here
        };
        if let Request::Attention { asc, ascq, hosts } = req {
            // No nexus of the volume here (no path, no iSCSI): nothing to tell.
            if let Some(sink) = attentions(&volume) {
                sink(asc, ascq, &hosts);
            }
            let _ = tx.send(Msg::Reply {
                id,
                result: Ok(Bytes::new()),
            });
            return true;
        }
        let dev = lookup(&volume);
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = match dev {
                Some(dev) => run(&*dev, host, req).await,
                None => Err(BlockError::Unavailable(
                    "this node is not the volume's primary".into(),
                )),
            };
            let _ = tx.send(Msg::Reply { id, result });
        });
        true
    });
}

async fn run(dev: &dyn BlockDevice, host: HostId, req: Request) -> Result<Bytes, BlockError> {
    match req {
        Request::Io(op) => dev.submit(&host, op).await,
        Request::Reserve { cntlid, cmd } => {
            let state = dev.reserve(host, cntlid, cmd).await?;
            Ok(Bytes::from(state.encode()))
        }
        Request::Attention { .. } => Ok(Bytes::new()),
    }
}

type Pending = Mutex<HashMap<u64, oneshot::Sender<Result<Bytes, BlockError>>>>;

struct Conn {
    tx: link::Sender,
    pending: Arc<Pending>,
    /// Cleared when the connection ends.
    alive: Arc<AtomicBool>,
}

/// Forwards a volume's I/O to its primary, over one connection opened on first use and again
/// after it breaks or the primary changes.
pub struct Forwarder {
    volume: VolumeId,
    primary: Mutex<Option<SocketAddr>>,
    conn: tokio::sync::Mutex<Option<(SocketAddr, Arc<Conn>)>>,
    next_id: AtomicU64,
}

impl Forwarder {
    /// A forwarder for `volume`, with no primary yet.
    pub fn new(volume: VolumeId) -> Arc<Self> {
        Arc::new(Self {
            volume,
            primary: Mutex::new(None),
            conn: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
        })
    }

    /// The primary's replica address (`None`: unknown, requests fail as unavailable).
    pub fn set_primary(&self, addr: Option<SocketAddr>) {
        *self.primary.lock() = addr;
    }

    /// The primary it forwards to.
    pub fn primary(&self) -> Option<SocketAddr> {
        *self.primary.lock()
    }

    async fn conn(&self) -> Result<Arc<Conn>, BlockError> {
        let unavailable = |why: String| BlockError::Unavailable(why);
        let Some(addr) = *self.primary.lock() else {
            return Err(unavailable("no primary is known for the volume".into()));
        };
        let mut slot = self.conn.lock().await;
        if let Some((a, c)) = &*slot {
            if *a == addr && c.alive.load(Ordering::Acquire) {
                return Ok(c.clone());
            }
        }
        *slot = None;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| unavailable(format!("connecting to the primary at {addr} timed out")))?
            .map_err(|e| unavailable(format!("connecting to the primary at {addr}: {e}")))?;
        let (tx, rx) = link::spawn(stream);
        let open = Msg::ForwardOpen {
            version: VERSION,
            volume: self.volume,
        };
        tx.send(open)
            .map_err(|_| unavailable(format!("the primary at {addr} closed the connection")))?;
        let pending: Arc<Pending> = Arc::new(Mutex::new(HashMap::new()));
        let alive = Arc::new(AtomicBool::new(true));
        let (p, a) = (pending.clone(), alive.clone());
        rx.run(move |m| match m {
            Some(Msg::Reply { id, result }) => {
                if let Some(done) = p.lock().remove(&id) {
                    let _ = done.send(result);
                }
                true
            }
            // Refused (another version), the end, or a frame out of place: every request
            // still waiting fails (dropping its sender).
            _ => {
                a.store(false, Ordering::Release);
                p.lock().clear();
                false
            }
        });
        let c = Arc::new(Conn { tx, pending, alive });
        *slot = Some((addr, c.clone()));
        Ok(c)
    }

    async fn forward(&self, host: HostId, req: Request) -> Result<Bytes, BlockError> {
        self.forward_within(host, req, REQUEST_TIMEOUT).await
    }

    /// [`Forwarder::forward`], failing as unavailable after `timeout` (the request is then
    /// forgotten here; a late reply is dropped).
    async fn forward_within(
        &self,
        host: HostId,
        req: Request,
        timeout: Duration,
    ) -> Result<Bytes, BlockError> {
        let conn = self.conn().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, rx) = oneshot::channel();
        conn.pending.lock().insert(id, done);
        if conn.tx.send(Msg::Request { id, host, req }).is_err() {
            conn.pending.lock().remove(&id);
            return Err(BlockError::Unavailable(
                "the connection to the primary closed".into(),
            ));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(BlockError::Unavailable(
                "the connection to the primary closed".into(),
            )),
            Err(_) => {
                conn.pending.lock().remove(&id);
                Err(BlockError::Unavailable(format!(
                    "the node did not answer within {} s",
                    timeout.as_secs()
                )))
            }
        }
    }
}

/// How long telling another node of a unit attention may take; a node that does not answer
/// in time (down, partitioned) has no host that could still be told through it.
const ATTENTION_TIMEOUT: Duration = Duration::from_secs(2);

/// The other nodes holding a replica of a volume, to tell of logical-unit-wide unit attentions
/// (a LOGICAL UNIT RESET through this node's path): the LU is one across the cluster, so every
/// nexus on every node must see them (SAM-5 5.14, libiscsi's MultipathIO.Reset).
pub struct Peers {
    volume: VolumeId,
    nodes: Mutex<Vec<(SocketAddr, Arc<Forwarder>)>>,
}

impl Peers {
    /// None yet.
    pub fn new(volume: VolumeId) -> Arc<Self> {
        Arc::new(Self {
            volume,
            nodes: Mutex::new(Vec::new()),
        })
    }

    /// The other replica nodes' replica addresses (connections to nodes that stay are kept).
    pub fn set(&self, addrs: &[SocketAddr]) {
        let mut nodes = self.nodes.lock();
        nodes.retain(|(a, _)| addrs.contains(a));
        for a in addrs {
            if !nodes.iter().any(|(n, _)| n == a) {
                let f = Forwarder::new(self.volume);
                f.set_primary(Some(*a));
                nodes.push((*a, f));
            }
        }
    }

    /// Gives the nexuses of `hosts` (empty: every nexus) of the LU on the other nodes unit
    /// attention `(asc, ascq)`; returns once each node has it, or could not be reached within
    /// [`ATTENTION_TIMEOUT`] (logged).
    pub async fn attention(&self, asc: u8, ascq: u8, hosts: Vec<HostId>) {
        let nodes: Vec<_> = self.nodes.lock().clone();
        let sends = nodes.into_iter().map(|(addr, f)| {
            let hosts = hosts.clone();
            async move {
                let req = Request::Attention { asc, ascq, hosts };
                if let Err(e) = f.forward_within([0; 16], req, ATTENTION_TIMEOUT).await {
                    tracing::warn!(volume = %self.volume, node = %addr, asc, ascq,
                        "could not pass a unit attention on: {e}");
                }
            }
        });
        futures::future::join_all(sends).await;
    }
}

/// Where a path sends its I/O.
#[derive(Clone)]
pub enum Route {
    /// This node is the primary: served here.
    Local(Arc<dyn BlockDevice>),
    /// Forwarded to the primary.
    Forward(Arc<Forwarder>),
    /// Nowhere for now (e.g. a restarted primary waiting for a new epoch): requests fail as
    /// unavailable, with this reason.
    Down(String),
}

/// What a node exports for a volume it holds a replica of: requests go where the current
/// [`Route`] says. Geometry and limits come from the local cache, which every replica has.
pub struct PathDevice {
    geometry: Arc<dyn Fn() -> Option<VolumeGeometry> + Send + Sync>,
    fallback: VolumeGeometry,
    max_transfer: ByteSize,
    route: RwLock<Route>,
}

impl PathDevice {
    /// A path whose geometry is `geometry()` (or `fallback` when that is unknown).
    pub fn new(
        geometry: Arc<dyn Fn() -> Option<VolumeGeometry> + Send + Sync>,
        fallback: VolumeGeometry,
        max_transfer: ByteSize,
        route: Route,
    ) -> Self {
        Self {
            geometry,
            fallback,
            max_transfer,
            route: RwLock::new(route),
        }
    }

    /// Sends later requests along `route` (requests under way finish where they are).
    pub fn set_route(&self, route: Route) {
        *self.route.write() = route;
    }

    /// The current route.
    pub fn route(&self) -> Route {
        self.route.read().clone()
    }

    fn check(&self, lba: Lba, count: BlockCount) -> Result<(), BlockError> {
        alcubierre_block::check_range(&self.geometry(), self.max_transfer, lba, count)
    }
}

fn failed<T: Send + 'static>(e: BlockError) -> IoFuture<T> {
    futures::future::ready(Err(e)).boxed()
}

/// The host of requests that name none (the plain [`BlockDevice`] operations): it is
/// registered nowhere, so the volume's reservations apply to it as to any unregistered host.
const NO_HOST: HostId = [0; 16];

impl BlockDevice for PathDevice {
    fn geometry(&self) -> VolumeGeometry {
        (self.geometry)().unwrap_or(self.fallback)
    }

    fn max_transfer(&self) -> ByteSize {
        self.max_transfer
    }

    fn read(&self, lba: Lba, count: BlockCount) -> IoFuture<Bytes> {
        self.submit(&NO_HOST, Op::Read { lba, count })
    }

    fn write(&self, lba: Lba, data: Bytes) -> IoFuture<()> {
        done(self.submit(&NO_HOST, Op::Write { lba, data }))
    }

    fn write_zeroes(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        done(self.submit(&NO_HOST, Op::WriteZeroes { lba, count }))
    }

    fn unmap(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        done(self.submit(&NO_HOST, Op::Unmap { lba, count }))
    }

    fn flush(&self) -> IoFuture<()> {
        done(self.submit(&NO_HOST, Op::Flush))
    }

    // The local device checks requests itself; other routes check here, so a bad request is
    // refused without a round trip to the primary. The primary checks the host's access.
    fn submit(&self, host: &HostId, op: Op) -> IoFuture<Bytes> {
        let f = match self.route() {
            Route::Local(d) => return d.submit(host, op),
            Route::Forward(f) => f,
            Route::Down(why) => return failed(BlockError::Unavailable(why)),
        };
        let checked = match &op {
            Op::Read { lba, count } => self.check(*lba, *count),
            Op::Write { lba, data } => {
                let g = self.geometry();
                alcubierre_block::check_payload(&g, data.len())
                    .and_then(|n| alcubierre_block::check_range(&g, self.max_transfer, *lba, n))
            }
            // No data travels with these: only the range is checked, not the transfer size.
            Op::WriteZeroes { lba, count } | Op::Unmap { lba, count } => {
                alcubierre_block::check_range(&self.geometry(), ByteSize(u64::MAX), *lba, *count)
            }
            Op::Flush => Ok(()),
        };
        if let Err(e) = checked {
            return failed(e);
        }
        let host = *host;
        async move { f.forward(host, Request::Io(op)).await }.boxed()
    }

    fn reserve(&self, host: HostId, cntlid: u16, cmd: ResvCommand) -> IoFuture<Reservations> {
        let f = match self.route() {
            Route::Local(d) => return d.reserve(host, cntlid, cmd),
            Route::Forward(f) => f,
            Route::Down(why) => return failed(BlockError::Unavailable(why)),
        };
        async move {
            let state = f.forward(host, Request::Reserve { cntlid, cmd }).await?;
            Reservations::decode(&state).map_err(|e| {
                BlockError::Unavailable(format!("the primary's reservation state: {e}"))
            })
        }
        .boxed()
    }
}

fn done(f: IoFuture<Bytes>) -> IoFuture<()> {
    f.map(|r| r.map(|_| ())).boxed()
}

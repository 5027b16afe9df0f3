//! The tokio TCP driver: accepts connections and runs one task per connection that reads PDUs,
//! feeds them to its [`QueuePair`], runs the I/O it asks for and writes what it produced.
//!
//! Per wake-up the task reads everything available, decodes every whole PDU, starts the I/O,
//! collects completions that are already done, and writes all output with one `write` call, so
//! a deep queue costs few system calls per command. An idle connection waits in `epoll`; the
//! only timer is the keep-alive deadline of admin queues.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::queue::{Output, QueuePair};
use crate::subsystem::Portal;
use crate::target::Target;

/// Read buffer growth step.
const READ_CHUNK: usize = 256 * 1024;

/// A running listener; dropping it stops accepting (open connections finish on their own).
pub struct Listener {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Listener {
    /// Binds `addr` and serves `target` on it; `port_id` identifies the port in discovery logs.
    pub async fn bind(
        target: Arc<Target>,
        addr: SocketAddr,
        port_id: u16,
    ) -> std::io::Result<Self> {
        let l = TcpListener::bind(addr).await?;
        let addr = l.local_addr()?;
        let task = tokio::spawn(serve(target, l, port_id));
        Ok(Self { addr, task })
    }

    /// Serves `target` on a socket already bound (so the caller knows the port before the
    /// target exists); `port_id` identifies the port in discovery logs.
    pub fn from_std(
        target: Arc<Target>,
        l: std::net::TcpListener,
        port_id: u16,
    ) -> std::io::Result<Self> {
        l.set_nonblocking(true)?;
        let l = TcpListener::from_std(l)?;
        let addr = l.local_addr()?;
        let task = tokio::spawn(serve(target, l, port_id));
        Ok(Self { addr, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections on `listener` forever.
pub async fn serve(target: Arc<Target>, listener: TcpListener, port_id: u16) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let target = target.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(target, stream, port_id).await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(target: Arc<Target>, stream: TcpStream, port_id: u16) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?;
    let peer = stream.peer_addr()?;
    let (mut rd, mut wr) = stream.into_split();
    let portal = Portal {
        addr: local.ip().to_string(),
        port: local.port(),
        port_id,
    };
    let busy_poll = target.config.busy_poll;
    let mut scratch = if busy_poll.is_zero() {
        Vec::new()
    } else {
        vec![0u8; READ_CHUNK]
    };
    let mut qp = QueuePair::new(target, portal);
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut ios = FuturesUnordered::new();
    let mut out = Output::default();
    let mut watch: Option<tokio::sync::watch::Receiver<u64>> = None;
    let result = loop {
        // Start new I/O, then collect every completion that is already there.
        loop {
            for r in out.ios.drain(..) {
                ios.push(r.run());
            }
            match ios.next().now_or_never() {
                Some(Some((cid, res))) => qp.io_done(cid, res, &mut out),
                _ => break,
            }
        }
        if !out.bytes.is_empty() {
            if let Err(e) = wr.write_all(&out.bytes).await {
                break Err(e);
            }
            out.bytes.clear();
        }
        if let Some(reason) = out.close.take() {
            tracing::info!(%peer, qid = ?qp.qid(), "closing connection: {reason}");
            break Ok(());
        }
        if watch.is_none() {
            watch = qp.controller().map(|c| c.watch());
        }
        // Optional bounded polling before sleeping (TargetConfig::busy_poll).
        if !busy_poll.is_zero() {
            let until = Instant::now() + busy_poll;
            let mut progressed = false;
            let mut eof = false;
            while Instant::now() < until {
                if let Some(Some((cid, res))) = ios.next().now_or_never() {
                    qp.io_done(cid, res, &mut out);
                    progressed = true;
                    break;
                }
                match poll_read(rd.as_ref(), &mut scratch, &mut rbuf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(_) => {
                        feed(&mut qp, &mut rbuf, &mut out, peer);
                        progressed = true;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
            if eof {
                break Ok(());
            }
            if progressed {
                continue;
            }
        }
        let deadline = qp.deadline();
        tokio::select! {
            r = rd.read_buf(&mut rbuf) => {
                match r {
                    Ok(0) => break Ok(()),
                    Ok(_) => {}
                    Err(e) => break Err(e),
                }
                feed(&mut qp, &mut rbuf, &mut out, peer);
            }
            Some((cid, res)) = ios.next(), if !ios.is_empty() => qp.io_done(cid, res, &mut out),
            changed = async {
                match watch.as_mut() {
                    Some(w) => w.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            } => {
                if !changed {
                    watch = None;
                }
                qp.wake(Instant::now(), &mut out);
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            } => qp.wake(Instant::now(), &mut out),
        }
    };
    qp.shutdown();
    let _ = wr.shutdown().await;
    result
}

/// One non-blocking `recv` straight on the socket (tokio's `try_read` would only consult the
/// readiness its reactor last saw, which a polling loop never lets it refresh).
pub(crate) fn poll_read(
    s: &TcpStream,
    scratch: &mut [u8],
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    use std::io::Read;
    let sock = socket2::SockRef::from(s);
    let n = (&*sock).read(scratch)?;
    buf.extend_from_slice(&scratch[..n]);
    Ok(n)
}

/// Decodes every whole PDU in `rbuf` and feeds it to the queue pair.
fn feed(qp: &mut QueuePair, rbuf: &mut BytesMut, out: &mut Output, peer: SocketAddr) {
    let now = Instant::now();
    loop {
        match qp.decoder().decode(rbuf) {
            Ok(Some(pdu)) => {
                qp.receive(pdu, now, out);
                if out.close.is_some() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%peer, "malformed PDU: {e}");
                qp.decode_error(e, out);
                break;
            }
        }
    }
    if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
        rbuf.reserve(READ_CHUNK);
    }
}

//! One replication connection.
//!
//! Frames go out from the caller's thread: [`Sender::send`] encodes the frame into the
//! connection's queue (bulk data of 4 KiB or more by reference, not copied) and, when no
//! other thread is writing, writes it to the socket at once, so a frame costs no task wake-up.
//! Inside [`deferring`] it is written at the next [`flush_deferred`], so a caller can queue
//! frames under its own lock and write them after releasing it; or with
//! [`flush_deferred_soon`], once the runtime has run the tasks ready now, so their frames for
//! the same connection share one system call. Frames that other threads queue during a write
//! leave with the writer's next system call. What the socket does not take at once stays
//! queued and a flusher task writes it when the socket becomes writable; later frames queue
//! behind it, so frames leave in call order. Frames come in on a reader task that hands each
//! to its owner's handler inside that task (again no wake-up in between). Dropping every
//! sender closes the connection (after what is queued is written); the reader then reports the
//! end with `None`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{ErrorKind, IoSlice};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::wire::Msg;

/// The connection is closed (by us, by the peer, or after an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// Bulk data of at least this many bytes is queued by reference, not copied: a rebuild queues
/// hundreds of MiB of writes held in memory faster than the socket takes them, and a 4 KiB
/// host write saves a copy per follower (the kernel copies it from the write's own buffer).
const BY_REFERENCE: usize = 4 << 10;
/// The most pieces one system call writes.
const MAX_IOV: usize = 64;

/// Frames queued for the socket, in order: pieces already cut (frame heads and bulk data held
/// by reference), then `tail`, where small frames are encoded back to back.
#[derive(Default)]
struct Queue {
    pieces: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl Queue {
    fn push(&mut self, m: &Msg) {
        let before = self.tail.len();
        match m.encode_split(&mut self.tail, BY_REFERENCE) {
            Some(data) => {
                self.len += self.tail.len() - before + data.len();
                self.pieces.push_back(self.tail.split().freeze());
                self.pieces.push_back(data);
            }
            None => self.len += self.tail.len() - before,
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Everything queued, leaving this queue empty.
    fn take(&mut self) -> Queue {
        Queue {
            pieces: std::mem::take(&mut self.pieces),
            tail: self.tail.split(),
            len: std::mem::take(&mut self.len),
        }
    }

    /// Queues `later` after what is here.
    fn append(&mut self, mut later: Queue) {
        if later.is_empty() {
            return;
        }
        if !self.tail.is_empty() {
            self.pieces.push_back(self.tail.split().freeze());
        }
        self.pieces.append(&mut later.pieces);
        if self.pieces.is_empty() {
            self.tail = later.tail;
        } else if !later.tail.is_empty() {
            self.pieces.push_back(later.tail.freeze());
        }
        self.len += later.len;
    }

    fn clear(&mut self) {
        *self = Queue::default();
    }

    /// Writes what the socket takes now; `Ok(true)` when all of it went.
    fn write_to(&mut self, stream: &TcpStream) -> std::io::Result<bool> {
        while !self.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for p in self.pieces.iter().take(MAX_IOV) {
                iov[n] = IoSlice::new(p);
                n += 1;
            }
            if n < MAX_IOV && !self.tail.is_empty() {
                iov[n] = IoSlice::new(&self.tail);
                n += 1;
            }
            match stream.try_write_vectored(&iov[..n]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(written) => self.advance(written),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.pieces.front_mut() else {
                self.tail.advance(n);
                return;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.pieces.pop_front();
        }
    }
}

struct Out {
    queue: Queue,
    /// The flusher owns the socket's writes until the buffer is empty.
    flushing: bool,
    /// A sender's thread is writing to the socket (outside the lock) and takes what is queued
    /// meanwhile.
    writing: bool,
    /// Every sender is gone.
    closed: bool,
    /// A write failed; nothing more is sent.
    failed: bool,
    /// Queued by a deferred send, on its thread's list to flush.
    deferred: bool,
    /// A write is due once the runtime has run the tasks ready now ([`flush_deferred_soon`]);
    /// frames sent meanwhile join it.
    soon: bool,
    /// While some frames are still to go ahead of them (a replay from the journal), frames
    /// sent are kept here, and queued after those at [`Sender::release`].
    held: Option<Queue>,
}

thread_local! {
    static DEFERRING: Cell<bool> = const { Cell::new(false) };
    static DEFERRED: RefCell<Vec<Arc<Shared>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's sends deferred: their frames are queued, and written by the
/// next [`flush_deferred`] on this thread. Several frames (e.g. the acknowledgements of one
/// journal commit group) then leave in one socket write.
pub fn deferring<R>(f: impl FnOnce() -> R) -> R {
    let was = DEFERRING.with(|d| d.replace(true));
    let r = f();
    DEFERRING.with(|d| d.set(was));
    r
}

/// Writes what deferred sends on this thread queued.
pub fn flush_deferred() {
    for_each_deferred(|shared, out| {
        let _ = shared.start_write(out);
    });
}

/// [`flush_deferred`], except that each connection's write waits until the runtime has run
/// the tasks that are ready now, so frames that they send on it join the same system call (on
/// a runtime worker: many hosts' writes replicated with one write per follower).
pub fn flush_deferred_soon() {
    for_each_deferred(|shared, mut out| {
        if out.soon || out.flushing || out.writing || out.failed || out.queue.is_empty() {
            return;
        }
        out.soon = true;
        drop(out);
        shared.soon.notify_one();
    });
}

/// Takes this thread's deferred connections and hands each to `f`, locked and no longer marked
/// deferred.
fn for_each_deferred(mut f: impl FnMut(&Arc<Shared>, parking_lot::MutexGuard<'_, Out>)) {
    let list = DEFERRED.with(|l| std::mem::take(&mut *l.borrow_mut()));
    for shared in &list {
        let mut out = shared.out.lock();
        out.deferred = false;
        f(shared, out);
    }
}

struct Shared {
    stream: TcpStream,
    out: Mutex<Out>,
    wake: Notify,
    soon: Notify,
}

impl Shared {
    /// Writes the queue now unless another thread or the flusher is writing to the socket:
    /// frames queued meanwhile leave with that writer's next write (so concurrent senders share
    /// system calls). The socket is written outside the lock; what it does not take goes to the
    /// flusher, ahead of anything queued since.
    fn start_write<'a>(&'a self, mut out: parking_lot::MutexGuard<'a, Out>) -> Result<(), Closed> {
        if out.failed {
            return Err(Closed);
        }
        if out.flushing || out.writing || out.queue.is_empty() {
            return Ok(());
        }
        out.writing = true;
        loop {
            let mut chunk = out.queue.take();
            drop(out);
            let r = chunk.write_to(&self.stream);
            out = self.out.lock();
            match r {
                Ok(true) if out.queue.is_empty() => {
                    out.writing = false;
                    if out.closed {
                        self.shutdown();
                    }
                    return Ok(());
                }
                Ok(true) => {}
                Ok(false) => {
                    let later = out.queue.take();
                    chunk.append(later);
                    out.queue = chunk;
                    out.writing = false;
                    out.flushing = true;
                    drop(out);
                    self.wake.notify_one();
                    return Ok(());
                }
                Err(_) => {
                    out.writing = false;
                    self.fail(&mut out);
                    return Err(Closed);
                }
            }
        }
    }

    fn shutdown(&self) {
        let _ = socket2::SockRef::from(&self.stream).shutdown(std::net::Shutdown::Both);
    }

    fn fail(&self, out: &mut Out) {
        out.failed = true;
        out.queue.clear();
        self.shutdown();
    }

    /// Writes for [`flush_deferred_soon`]: after the tasks ready now have run.
    async fn soon_task(self: Arc<Self>) {
        loop {
            self.soon.notified().await;
            if !self.out.lock().closed {
                tokio::task::yield_now().await;
            }
            let mut out = self.out.lock();
            out.soon = false;
            if out.closed {
                // The last sender went: the flusher writes what is queued.
                return;
            }
            let _ = self.start_write(out);
        }
    }

    /// The flusher: writes queued frames when the socket is writable; closes the socket once
    /// every sender is gone and the queue is empty.
    async fn flush_task(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            loop {
                {
                    let mut out = self.out.lock();
                    if out.failed {
                        return;
                    }
                    match out.queue.write_to(&self.stream) {
                        Ok(true) => {
                            out.flushing = false;
                            if out.closed {
                                self.shutdown();
                                return;
                            }
                            break;
                        }
                        Ok(false) => {}
                        Err(_) => {
                            self.fail(&mut out);
                            return;
                        }
                    }
                }
                if self.stream.writable().await.is_err() {
                    let mut out = self.out.lock();
                    self.fail(&mut out);
                    return;
                }
            }
        }
    }
}

/// Closes the connection when the last [`Sender`] goes.
struct Handle(Arc<Shared>);

impl Drop for Handle {
    fn drop(&mut self) {
        let mut out = self.0.out.lock();
        out.closed = true;
        if out.flushing || out.writing {
            // The flusher closes it after the queue.
        } else if !out.queue.is_empty() && !out.failed {
            // Deferred frames: the flusher writes them, then closes.
            out.flushing = true;
        } else {
            self.0.shutdown();
        }
        drop(out);
        self.0.wake.notify_one();
        // Ends the task of `flush_deferred_soon` (after `closed` is set, which it checks).
        self.0.soon.notify_one();
    }
}

/// Sends frames on a connection; cheap to clone. Usable from any thread.
#[derive(Clone)]
pub struct Sender(Arc<Handle>);

impl Sender {
    /// Queues `m` after every frame sent before it, writing it to the socket now when nothing
    /// is queued ahead (or at the next [`flush_deferred`] inside [`deferring`]).
    pub fn send(&self, m: Msg) -> Result<(), Closed> {
        let shared = &self.0 .0;
        let mut out = shared.out.lock();
        if out.failed {
            return Err(Closed);
        }
        if let Some(held) = &mut out.held {
            held.push(&m);
            return Ok(());
        }
        out.queue.push(&m);
        if out.soon {
            return Ok(());
        }
        if DEFERRING.with(Cell::get) && !out.flushing && !out.writing {
            if !out.deferred {
                out.deferred = true;
                DEFERRED.with(|l| l.borrow_mut().push(shared.clone()));
            }
            return Ok(());
        }
        shared.start_write(out)
    }
}

impl Sender {
    /// From now on, frames sent are held back until [`Self::release`]; frames sent with
    /// [`Self::send_ahead`] meanwhile go before them.
    pub fn hold(&self) {
        let mut out = self.0 .0.out.lock();
        if out.held.is_none() {
            out.held = Some(Queue::default());
        }
    }

    /// Sends `m` ahead of the frames held back by [`Self::hold`] (at once, like
    /// [`Self::send`] outside [`deferring`]).
    pub fn send_ahead(&self, m: Msg) -> Result<(), Closed> {
        let shared = &self.0 .0;
        let mut out = shared.out.lock();
        if out.failed {
            return Err(Closed);
        }
        out.queue.push(&m);
        shared.start_write(out)
    }

    /// Queues the frames held back since [`Self::hold`] after everything sent ahead of them.
    pub fn release(&self) -> Result<(), Closed> {
        let shared = &self.0 .0;
        let mut out = shared.out.lock();
        if let Some(held) = out.held.take() {
            out.queue.append(held);
        }
        if out.failed {
            return Err(Closed);
        }
        shared.start_write(out)
    }

    /// Bytes queued and not yet taken by the socket (for a sender that must not run ahead of
    /// the connection).
    pub fn queued(&self) -> usize {
        self.0 .0.out.lock().queue.len
    }
}

/// Receives frames on a connection.
pub struct Reader {
    shared: Arc<Shared>,
    buf: BytesMut,
    /// Receive chunks read out, oldest first, each kept (as an empty view) until the frames
    /// decoded from it are gone, to be read into again: a fresh chunk's pages are faulted in
    /// and zeroed by the kernel on the first read, which cost about 5% of a replicated write's
    /// CPU.
    spare: VecDeque<BytesMut>,
    /// Receive chunks allocated afresh (not reused).
    fresh: usize,
}

/// A receive chunk: room for a large write frame or many small ones per read.
const RECV_CHUNK: usize = 1 << 20;
/// Most receive chunks kept for reuse per connection.
const RECV_SPARE: usize = 4;

impl Reader {
    /// The next frame; `None` once the connection ended (closed, reset, or a bad frame).
    pub async fn next(&mut self) -> Option<Msg> {
        loop {
            match Msg::decode_shared(&mut self.buf) {
                Ok(Some(m)) => return Some(m),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("replication connection: bad frame: {e}");
                    self.shared.shutdown();
                    return None;
                }
            }
            if self.buf.capacity() - self.buf.len() < 64 << 10 {
                self.next_chunk();
            }
            loop {
                self.shared.stream.readable().await.ok()?;
                match self.shared.stream.try_read_buf(&mut self.buf) {
                    Ok(0) => return None,
                    Ok(_) => break,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                    Err(_) => return None,
                }
            }
        }
    }

    /// Moves the partial frame read so far into a chunk read out before whose frames are all
    /// gone, or else into a new one. (Decoded frames share a chunk's memory, so it cannot be
    /// reused while any of them lives.)
    fn next_chunk(&mut self) {
        let want = RECV_CHUNK.max(self.buf.len() + (64 << 10));
        let reused = self
            .spare
            .iter_mut()
            .position(|c| c.try_reclaim(want))
            .and_then(|i| self.spare.remove(i));
        let mut next = reused.unwrap_or_else(|| {
            self.fresh += 1;
            BytesMut::with_capacity(want)
        });
        next.extend_from_slice(&self.buf);
        let mut old = std::mem::replace(&mut self.buf, next);
        old.clear();
        if self.spare.len() == RECV_SPARE {
            self.spare.pop_front();
        }
        self.spare.push_back(old);
    }

    /// Hands every further frame to `handler` on a task of its own, then `None` at the end;
    /// stops early when the handler returns `false`.
    pub fn run(mut self, mut handler: impl FnMut(Option<Msg>) -> bool + Send + 'static) {
        tokio::spawn(async move {
            loop {
                let m = self.next().await;
                let end = m.is_none();
                if !handler(m) || end {
                    return;
                }
            }
        });
    }
}

/// Starts a connection: its sender, and its reader (not yet reading).
pub fn spawn(stream: TcpStream) -> (Sender, Reader) {
    let _ = stream.set_nodelay(true);
    let shared = Arc::new(Shared {
        stream,
        out: Mutex::new(Out {
            queue: Queue::default(),
            flushing: false,
            writing: false,
            closed: false,
            failed: false,
            deferred: false,
            soon: false,
            held: None,
        }),
        wake: Notify::new(),
        soon: Notify::new(),
    });
    tokio::spawn(shared.clone().flush_task());
    tokio::spawn(shared.clone().soon_task());
    (
        Sender(Arc::new(Handle(shared.clone()))),
        Reader {
            shared,
            buf: BytesMut::with_capacity(64 << 10),
            spare: VecDeque::new(),
            fresh: 0,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> ((Sender, Reader), (Sender, Reader)) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap());
        let (a, b) = tokio::join!(a, l.accept());
        (spawn(a.unwrap()), spawn(b.unwrap().0))
    }

    fn release(seq: u64) -> Msg {
        Msg::Release {
            epoch: crate::Epoch(1),
            seq: crate::SeqNo(seq),
        }
    }

    #[tokio::test]
    async fn frames_arrive_in_order_and_deferred_ones_only_after_the_flush() {
        let ((tx, _ra), (_tb, mut rb)) = pair().await;
        tx.send(release(1)).unwrap();
        deferring(|| {
            tx.send(release(2)).unwrap();
            tx.send(release(3)).unwrap();
        });
        assert_eq!(rb.next().await, Some(release(1)));
        let early = tokio::time::timeout(std::time::Duration::from_millis(100), rb.next()).await;
        assert!(early.is_err(), "a deferred frame left before the flush");
        flush_deferred();
        assert_eq!(rb.next().await, Some(release(2)));
        assert_eq!(rb.next().await, Some(release(3)));
    }

    #[tokio::test]
    async fn receive_chunks_are_reused_once_their_frames_are_gone() {
        let ((tx, _ra), (_tb, mut rb)) = pair().await;
        let write = |seq: u64, byte: u8| Msg::Write {
            epoch: crate::Epoch(1),
            pos: crate::LogPos {
                epoch: crate::Epoch(1),
                seq: crate::SeqNo(seq),
            },
            payload: crate::wire::Payload::Write {
                offset: alcubierre_types::ByteOffset(seq * 4096),
                data: bytes::Bytes::from(vec![byte; 64 << 10]),
            },
        };
        // 64 MiB through the connection, each frame dropped once checked.
        let n = 1024u64;
        let sending = tokio::spawn(async move {
            for seq in 1..=n {
                tx.send(write(seq, seq as u8)).unwrap();
                if seq % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            tx
        });
        for seq in 1..=n {
            assert_eq!(rb.next().await, Some(write(seq, seq as u8)));
        }
        drop(sending.await.unwrap());
        assert!(rb.fresh <= 2, "{} fresh 1 MiB chunks for 64 MiB", rb.fresh);
        // A frame still held keeps its chunk from being reused, and nothing is overwritten.
        let ((tx, _ra), (_tb, mut rb)) = pair().await;
        let held = {
            tx.send(write(1, 0xaa)).unwrap();
            rb.next().await.unwrap()
        };
        for seq in 2..=64 {
            tx.send(write(seq, 0x55)).unwrap();
            assert_eq!(rb.next().await, Some(write(seq, 0x55)));
        }
        assert_eq!(held, write(1, 0xaa));
    }

    #[tokio::test]
    async fn dropping_the_last_sender_delivers_what_is_queued_then_closes() {
        let ((tx, _ra), (_tb, mut rb)) = pair().await;
        // A large queue the socket cannot take at once, plus deferred frames never flushed.
        let big = Msg::Write {
            epoch: crate::Epoch(1),
            pos: crate::LogPos::new(1, 1),
            payload: crate::wire::Payload::Write {
                offset: alcubierre_types::ByteOffset(0),
                data: bytes::Bytes::from(vec![7u8; 1 << 20]),
            },
        };
        for _ in 0..8 {
            tx.send(big.clone()).unwrap();
        }
        deferring(|| tx.send(release(9)).unwrap());
        drop(tx);
        for _ in 0..8 {
            assert_eq!(rb.next().await, Some(big.clone()));
        }
        assert_eq!(rb.next().await, Some(release(9)));
        assert_eq!(rb.next().await, None);
    }

    #[tokio::test]
    async fn frames_flushed_soon_leave_together_even_when_the_sender_goes() {
        let ((tx, _ra), (_tb, mut rb)) = pair().await;
        deferring(|| tx.send(release(1)).unwrap());
        flush_deferred_soon();
        // Due soon: a later send joins the pending write instead of writing at once.
        tx.send(release(2)).unwrap();
        assert!(tx.0 .0.out.lock().soon, "the write was not left for later");
        assert_eq!(tx.queued(), 2 * 21, "two frames wait");
        assert_eq!(rb.next().await, Some(release(1)));
        assert_eq!(rb.next().await, Some(release(2)));
        // Pending when the last sender goes: still delivered, then the connection closes.
        deferring(|| tx.send(release(3)).unwrap());
        flush_deferred_soon();
        drop(tx);
        assert_eq!(rb.next().await, Some(release(3)));
        assert_eq!(rb.next().await, None);
    }

    /// The bytes a queue would write, in order.
    fn contents(q: &Queue) -> Vec<u8> {
        let mut v: Vec<u8> = q.pieces.iter().flat_map(|p| p.iter().copied()).collect();
        v.extend_from_slice(&q.tail);
        assert_eq!(v.len(), q.len);
        v
    }

    #[test]
    fn a_queue_holds_frames_in_order_with_bulk_data_by_reference() {
        let write = |seq: u64, len: usize| Msg::Write {
            epoch: crate::Epoch(1),
            pos: crate::LogPos {
                epoch: crate::Epoch(1),
                seq: crate::SeqNo(seq),
            },
            payload: crate::wire::Payload::Write {
                offset: alcubierre_types::ByteOffset(0),
                data: bytes::Bytes::from(vec![seq as u8; len]),
            },
        };
        // Forwarded I/O carries bulk data at the end of its frames too.
        let forwarded_write = Msg::Request {
            id: 8,
            host: [3; 16],
            req: crate::wire::Request::Io(alcubierre_block::Op::Write {
                lba: alcubierre_types::Lba(5),
                data: bytes::Bytes::from(vec![8u8; 8192]),
            }),
        };
        let read_reply = Msg::Reply {
            id: 9,
            result: Ok(bytes::Bytes::from(vec![9u8; 4096])),
        };
        let msgs = [
            release(1),
            write(2, 512),
            write(3, 64 << 10),
            release(4),
            write(5, BY_REFERENCE),
            write(6, 1 << 20),
            forwarded_write,
            read_reply,
        ];
        let mut expect = BytesMut::new();
        msgs.iter().for_each(|m| m.encode(&mut expect));
        // Built in two queues, the second appended to the first, with some bytes written.
        let (mut a, mut b) = (Queue::default(), Queue::default());
        msgs[..3].iter().for_each(|m| a.push(m));
        msgs[3..].iter().for_each(|m| b.push(m));
        assert_eq!(
            a.pieces.len() + b.pieces.len(),
            10,
            "five frames' data by reference"
        );
        a.append(b);
        assert_eq!(contents(&a), expect[..]);
        let mut gone = 0;
        for n in [1, 30, 4096, 70_000, 16 << 10, 3] {
            a.advance(n);
            gone += n;
            assert_eq!(contents(&a), expect[gone..]);
        }
        let later = a.take();
        assert!(a.is_empty());
        a.push(&release(7));
        let mut rest = later;
        rest.append(a.take());
        release(7).encode(&mut expect);
        assert_eq!(contents(&rest), expect[gone..]);
    }

    #[tokio::test]
    async fn a_bad_frame_ends_the_reader() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        let (_tb, mut rb) = spawn(b);
        a.write_all(&[0xff; 64]).await.unwrap();
        assert_eq!(rb.next().await, None);
    }
}

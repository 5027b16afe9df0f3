//! Completion-based reads and durable writes of a cache device through io_uring.
//!
//! A [`Ring`] reads and writes one file (registered with the ring, so the kernel holds it open for
//! as long as the ring lives) at offsets given to [`Ring::read_at`] and [`Ring::write_dsync_at`]
//! from any thread, and completes them as events: the kernel posts each completion to the ring's
//! completion queue and signals an eventfd ([`Ring::event_fd`]), which the caller's reactor
//! watches and answers with [`Ring::reap`]. A read is a future ([`ReadAt`]) that resolves to its
//! buffer; no thread blocks on the device. Polling a read also reaps, so a read completes for a
//! caller that polls without the reactor (a busy-polling task, `now_or_never`). A write
//! ([`WriteAt`]) is checked, not polled: its owner looks at it after reaping.
//!
//! Safety of the buffers: an operation's buffer belongs to its slot, whose reference is handed to
//! the kernel with the request (as the entry's user data) and taken back only when the completion
//! is reaped, so the memory stays allocated while the device may read or write it, even when the
//! future is dropped first. A ring dropped with operations in flight leaks their slots rather than
//! free memory the kernel may still use.

use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use io_uring::{opcode, types, IoUring};
use parking_lot::Mutex;

use crate::AlignedBuf;

/// An io_uring instance for reads and durable writes, with the eventfd its completions signal.
pub struct Ring {
    ring: Mutex<IoUring>,
    event: OwnedFd,
    in_flight: std::sync::atomic::AtomicUsize,
    /// The completion queue's size: operations in flight beyond it wait in the kernel.
    cq_entries: usize,
    /// Whether the kernel has the WRITE operation (Linux 5.6 or later).
    writes: bool,
}

#[derive(Default)]
struct SlotState {
    done: Option<std::io::Result<()>>,
    waker: Option<Waker>,
    buf: Option<AlignedBuf>,
}

/// One operation in flight: its buffer, its outcome and who waits for it.
#[derive(Default)]
struct Slot(Mutex<SlotState>);

impl Ring {
    /// A ring of `entries` submission slots that reads `file`, or why the kernel refused one
    /// (io_uring disabled by `kernel.io_uring_disabled`, not built in, or refused by a seccomp
    /// filter).
    pub fn new(entries: u32, file: std::os::fd::BorrowedFd<'_>) -> std::io::Result<Arc<Self>> {
        let ring = IoUring::new(entries)?;
        // The ring's own reference to the file: a read queued in the ring can never reach
        // another file that took the descriptor's number after the caller closed it.
        ring.submitter().register_files(&[file.as_raw_fd()])?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::Read::CODE) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "this kernel's io_uring has no READ operation (Linux 5.6 or later has it)",
            ));
        }
        // SAFETY: eventfd(2) with valid flags returns a new descriptor or -1; a new descriptor
        // is owned by nobody else, so OwnedFd may take it.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd(2) and is owned by nothing else.
        let event = unsafe { OwnedFd::from_raw_fd(fd) };
        ring.submitter().register_eventfd(event.as_raw_fd())?;
        let cq_entries = ring.params().cq_entries() as usize;
        Ok(Arc::new(Self {
            ring: Mutex::new(ring),
            event,
            in_flight: Default::default(),
            cq_entries,
            writes: probe.is_supported(opcode::Write::CODE),
        }))
    }

    /// Whether [`Ring::write_dsync_at`] is available (the kernel has the WRITE operation).
    pub fn writes(&self) -> bool {
        self.writes
    }

    /// Signals the eventfd as a completion would, so its watcher runs [`Ring::reap`] and
    /// whatever its owner does after reaping (e.g. to deliver results decided without the
    /// device).
    pub fn signal(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writing 8 bytes from a local array to a descriptor this ring owns. An eventfd
        // write fails only when the counter would overflow, and then it is signalled already.
        let _ = unsafe { libc::write(self.event.as_raw_fd(), one.as_ptr().cast(), 8) };
    }

    /// The eventfd signalled when completions are posted: watch it for readability and call
    /// [`Ring::reap`].
    pub fn event_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.event.as_fd()
    }

    /// Whether the ring has room for another read without its completions overflowing.
    pub fn has_room(&self) -> bool {
        self.in_flight() < self.cq_entries / 2
    }

    /// Reads `buf.len()` bytes of the file at `offset` into `buf`; the future gives the buffer
    /// back once the read completed (short reads are errors). With `O_DIRECT`, `buf` and
    /// `offset` must be aligned as the device requires.
    pub fn read_at(self: &Arc<Self>, buf: AlignedBuf, offset: u64) -> ReadAt {
        let (ring, slot) = self.start(buf, |ptr, len| {
            opcode::Read::new(types::Fixed(0), ptr, len)
                .offset(offset)
                .build()
        });
        ReadAt { ring, slot }
    }

    /// Writes all of `buf` at `offset` with per-write data integrity (`RWF_DSYNC`: a FUA write,
    /// or the write followed by a cache flush), as `pwritev2(RWF_DSYNC)` does. Short writes are
    /// errors. Only when [`Ring::writes`] says the kernel has the operation.
    pub fn write_dsync_at(self: &Arc<Self>, buf: AlignedBuf, offset: u64) -> WriteAt {
        let (_, slot) = self.start(buf, |ptr, len| {
            opcode::Write::new(types::Fixed(0), ptr, len)
                .offset(offset)
                .rw_flags(libc::RWF_DSYNC)
                .build()
        });
        WriteAt { slot }
    }

    /// Hands `buf` and the entry `build` makes for it to the kernel; the ring (to reap from
    /// when polled; `None` when it failed before the kernel took it) and the operation's slot.
    fn start(
        self: &Arc<Self>,
        mut buf: AlignedBuf,
        build: impl FnOnce(*mut u8, u32) -> io_uring::squeue::Entry,
    ) -> (Option<Arc<Self>>, Arc<Slot>) {
        let slot = Arc::new(Slot::default());
        let ptr = buf.as_mut_ptr();
        let Ok(len32) = u32::try_from(buf.len()) else {
            let e = std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an operation of 4 GiB or more",
            );
            self.signal();
            return (None, Slot::failed(buf, e));
        };
        slot.0.lock().buf = Some(buf);
        let user = Arc::into_raw(slot.clone()) as u64;
        let entry = build(ptr, len32).user_data(user);
        let mut ring = self.ring.lock();
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        loop {
            // SAFETY: the entry's buffer (`ptr`, `len`) is owned by the slot, which the user
            // data keeps alive until `reap` takes the completion back (see the module
            // documentation); the file is the ring's registered one, open while it lives.
            let pushed = unsafe { ring.submission().push(&entry) };
            if pushed.is_ok() {
                break;
            }
            // The submission queue is full: hand it to the kernel and try again.
            if let Err(e) = ring.submit() {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    drop(ring);
                    self.in_flight
                        .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    self.failed_submit(user, e, &slot);
                    return (None, slot);
                }
            }
        }
        // The entry is the kernel's from the push on (it owns the slot reference): it is
        // never failed here. A submission the kernel refuses for now (EBUSY: completions to
        // reap first; EAGAIN: memory) leaves it queued; every reap submits what is queued, and
        // a read's own polls reap.
        let refused = loop {
            match ring.submit() {
                Ok(_) => break None,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Some(e),
            }
        };
        drop(ring);
        if let Some(e) = refused {
            if !matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) {
                tracing::warn!(error = %e, "io_uring submission failed; the operation stays queued");
            }
            // Reaping submits what is queued, and signals the eventfd while the kernel still
            // refuses, so its watcher tries again.
            self.reap();
        }
        (Some(self.clone()), slot)
    }

    /// An operation whose submission failed before the kernel took it: its slot reference
    /// comes back and the operation fails (keeping its buffer). The eventfd is signalled as for
    /// a completion, so an owner that looks after reaping (a [`WriteAt`]'s) sees it.
    fn failed_submit(&self, user: u64, e: std::io::Error, slot: &Slot) {
        // SAFETY: `user` came from `Arc::into_raw` in `start` and the kernel never saw it
        // (the push failed), so this is the only place that takes it back.
        drop(unsafe { Arc::from_raw(user as *const Slot) });
        let e = std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!("io_uring refused the submission: {e}"),
        );
        slot.0.lock().done = Some(Err(e));
        self.signal();
    }

    /// Resets the eventfd: `Ok` when it was signalled (then [`Ring::reap`]: a completion posted
    /// from here on signals it again), `WouldBlock` when it was not.
    pub fn take_event(&self) -> std::io::Result<()> {
        let mut count = [0u8; 8];
        // SAFETY: reading 8 bytes into a local array from a descriptor this ring owns.
        let n = unsafe { libc::read(self.event.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Operations in flight (submitted, not yet reaped).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Takes every posted completion and wakes its waiter; returns how many. A completion
    /// nobody waits for (a [`WriteAt`]'s, whose owner looks after reaping) signals the eventfd
    /// again, so the eventfd's watcher looks even when someone else reaped it; so do entries a
    /// refused submission leaves queued, so they are submitted again.
    pub fn reap(&self) -> usize {
        self.reap_inner(true)
    }

    /// [`Ring::reap`] for the eventfd's watcher, which looks at every [`WriteAt`] after it: no
    /// signal for completions nobody waits for.
    pub fn reap_then_look(&self) -> usize {
        self.reap_inner(false)
    }

    fn reap_inner(&self, signal_unwatched: bool) -> usize {
        let mut done = Vec::new();
        let mut refused = false;
        {
            let mut ring = self.ring.lock();
            loop {
                for cqe in ring.completion() {
                    done.push((cqe.user_data(), cqe.result()));
                }
                // Completions beyond the queue's room wait in the kernel until an enter
                // flushes them (the submission does, seeing the overflow flag); entries a
                // refused submission left queued go now.
                let sq = ring.submission();
                let (overflow, queued) = (sq.cq_overflow(), !sq.is_empty());
                drop(sq);
                if !overflow && !queued {
                    break;
                }
                if let Err(e) = ring.submit() {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        if !matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) {
                            tracing::warn!(error = %e, "io_uring: submitting failed");
                        }
                        refused = !ring.submission().is_empty();
                        break;
                    }
                }
                if !overflow {
                    break;
                }
            }
        }
        let mut unwatched = false;
        let n = done.len();
        self.in_flight
            .fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
        for (user, res) in done {
            // SAFETY: every submitted entry's user data is a slot reference from
            // `Arc::into_raw` in `start`, completed exactly once by the kernel.
            let slot = unsafe { Arc::from_raw(user as *const Slot) };
            let waker = {
                let mut s = slot.0.lock();
                let want = s.buf.as_ref().map_or(0, AlignedBuf::len);
                s.done = Some(match res {
                    r if r < 0 => Err(std::io::Error::from_raw_os_error(-r)),
                    r if r as usize != want => Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("short transfer: {r} of {want} bytes"),
                    )),
                    _ => Ok(()),
                });
                s.waker.take()
            };
            match waker {
                Some(w) => w.wake(),
                None => unwatched = true,
            }
        }
        if refused || (unwatched && signal_unwatched) {
            self.signal();
        }
        n
    }
}

/// A read through a [`Ring`]: resolves to the filled buffer.
pub struct ReadAt {
    /// The ring, to reap from when polled (`None` once failed before submission).
    ring: Option<Arc<Ring>>,
    slot: Arc<Slot>,
}

impl Slot {
    fn failed(buf: AlignedBuf, e: std::io::Error) -> Arc<Self> {
        let slot = Slot::default();
        {
            let mut s = slot.0.lock();
            s.done = Some(Err(e));
            s.buf = Some(buf);
        }
        Arc::new(slot)
    }
}

/// A durable write through a [`Ring`]. Its owner checks it with [`WriteAt::try_take`] after
/// reaping (nothing is woken when it completes); dropped early, its buffer stays with the
/// kernel's reference until the completion is reaped.
pub struct WriteAt {
    slot: Arc<Slot>,
}

impl WriteAt {
    /// The outcome and the buffer, once the write completed; `None` before. Does not reap.
    pub fn try_take(&mut self) -> Option<(std::io::Result<()>, Option<AlignedBuf>)> {
        let mut s = self.slot.0.lock();
        let done = s.done.take()?;
        Some((done, s.buf.take()))
    }
}

impl SlotState {
    /// The outcome, if the read is done.
    fn outcome(&mut self) -> Option<std::io::Result<AlignedBuf>> {
        match self.done.take()? {
            Ok(()) => Some(Ok(self
                .buf
                .take()
                .expect("a completed read has its buffer"))),
            Err(e) => Some(Err(e)),
        }
    }
}

impl Future for ReadAt {
    type Output = std::io::Result<AlignedBuf>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.slot.0.lock().outcome() {
            return Poll::Ready(r);
        }
        // Reap here too (no system call unless something is queued or overflowed), so the
        // read completes for a caller that polls without the reactor running.
        if let Some(ring) = &self.ring {
            ring.reap();
        }
        let mut s = self.slot.0.lock();
        if let Some(r) = s.outcome() {
            return Poll::Ready(r);
        }
        // Under the slot's lock: a completion reaped from now on finds this waker.
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DirectFile, Medium};

    /// Polls `fut` until it is done (no reactor here: its polls reap the ring).
    fn wait(mut fut: ReadAt) -> std::io::Result<AlignedBuf> {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(r) = Pin::new(&mut fut).poll(&mut cx) {
                return r;
            }
            std::thread::yield_now();
        }
    }

    #[test]
    fn reads_complete_through_the_ring() {
        let dir =
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/tmp"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("uring-{}.img", std::process::id()));
        let f = DirectFile::create_file(&path, 1 << 20).unwrap();
        let mut w = AlignedBuf::zeroed(8192);
        for (i, b) in w.iter_mut().enumerate() {
            *b = (i / 512) as u8 + 1;
        }
        f.write_at(&w, 16384).unwrap();
        let file = f.fd().unwrap();
        if std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .is_ok_and(|s| s.trim() != "0")
        {
            assert!(Ring::new(8, file).is_err());
            return;
        }
        let ring = Ring::new(8, file).unwrap();
        // Many at once, more than the queues hold: completions overflow and are flushed.
        let reads: Vec<ReadAt> = (0..64)
            .map(|_| ring.read_at(AlignedBuf::zeroed(8192), 16384))
            .collect();
        for r in reads {
            assert_eq!(&wait(r).unwrap()[..], &w[..]);
        }
        assert_eq!(ring.in_flight(), 0);
        // Past the end: a short read is an error, not zeroes.
        let r = ring.read_at(AlignedBuf::zeroed(8192), (1 << 20) - 4096);
        let e = wait(r).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
        // Unaligned O_DIRECT: the kernel's error comes back.
        let r = ring.read_at(AlignedBuf::zeroed(4096), 100);
        assert!(wait(r).is_err());
        // The file closed by its owner: the ring's registered reference still reads it.
        drop(f);
        let r = ring.read_at(AlignedBuf::zeroed(8192), 16384);
        assert_eq!(&wait(r).unwrap()[..], &w[..]);
        // A durable write, then read back; an unaligned one fails and gives its buffer back.
        let mut b = AlignedBuf::zeroed(4096);
        b.fill(0xa5);
        assert!(ring.writes(), "Linux 5.6 or later has WRITE");
        let mut write = ring.write_dsync_at(b, 8192);
        let (r, back) = loop {
            ring.reap();
            if let Some(done) = write.try_take() {
                break done;
            }
            std::thread::yield_now();
        };
        r.unwrap();
        assert_eq!(back.map(|b| b.len()), Some(4096), "the buffer comes back");
        assert!(wait(ring.read_at(AlignedBuf::zeroed(4096), 8192))
            .unwrap()
            .iter()
            .all(|&x| x == 0xa5));
        let mut write = ring.write_dsync_at(AlignedBuf::zeroed(4096), 100);
        let (r, back) = loop {
            ring.reap();
            if let Some(done) = write.try_take() {
                break done;
            }
            std::thread::yield_now();
        };
        assert!(r.is_err(), "unaligned O_DIRECT write");
        assert!(back.is_some(), "a failed write keeps its buffer");
        // A read dropped before its completion: a reap later takes its slot back.
        drop(ring.read_at(AlignedBuf::zeroed(4096), 0));
        while ring.in_flight() > 0 {
            ring.reap();
        }
        std::fs::remove_file(&path).unwrap();
    }
}

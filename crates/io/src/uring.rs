//! Completion-based reads of a cache device through io_uring.
//!
//! A [`Ring`] reads one file (registered with the ring, so the kernel holds it open for as long as
//! the ring lives) at offsets given to [`Ring::read_at`] from any thread, and completes the reads
//! as events: the kernel posts each completion to the ring's completion queue and signals an
//! eventfd ([`Ring::event_fd`]), which the caller's reactor watches and answers with
//! [`Ring::reap`]. A read is a future ([`ReadAt`]) that resolves to its buffer; no thread blocks
//! on the device. Polling a read also reaps, so a read completes for a caller that polls without
//! the reactor (a busy-polling task, `now_or_never`).
//!
//! Safety of the buffers: a read's buffer belongs to its slot, whose reference is handed to the
//! kernel with the request (as the entry's user data) and taken back only when the completion is
//! reaped, so the memory stays allocated while the device may write it, even when the future is
//! dropped first. A ring dropped with reads in flight leaks their slots rather than free memory
//! the kernel may still fill.

use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use io_uring::{opcode, types, IoUring};
use parking_lot::Mutex;

use crate::AlignedBuf;

/// An io_uring instance for reads, with the eventfd its completions signal.
pub struct Ring {
    ring: Mutex<IoUring>,
    event: OwnedFd,
    in_flight: std::sync::atomic::AtomicUsize,
    /// The completion queue's size: reads in flight beyond it wait in the kernel.
    cq_entries: usize,
}

#[derive(Default)]
struct SlotState {
    done: Option<std::io::Result<()>>,
    waker: Option<Waker>,
    buf: Option<AlignedBuf>,
}

/// One read in flight: its buffer, its outcome and who waits for it.
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
        }))
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
    pub fn read_at(self: &Arc<Self>, mut buf: AlignedBuf, offset: u64) -> ReadAt {
        let slot = Arc::new(Slot::default());
        let ptr = buf.as_mut_ptr();
        let Ok(len32) = u32::try_from(buf.len()) else {
            return ReadAt::failed(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a read of 4 GiB or more",
            ));
        };
        slot.0.lock().buf = Some(buf);
        let user = Arc::into_raw(slot.clone()) as u64;
        let entry = opcode::Read::new(types::Fixed(0), ptr, len32)
            .offset(offset)
            .build()
            .user_data(user);
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
                    return self.failed_submit(user, e);
                }
            }
        }
        // The entry is the kernel's from the push on (it owns the slot reference): it is
        // never failed here. A submission the kernel refuses for now (EBUSY: completions to
        // reap first; EAGAIN: memory) leaves it queued; every reap submits what is queued, and
        // this read's own polls reap.
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
                tracing::warn!(error = %e, "io_uring submission failed; the read stays queued");
            }
            self.reap();
        }
        ReadAt {
            ring: Some(self.clone()),
            slot,
        }
    }

    /// A read whose submission failed before the kernel took it: its slot reference comes back
    /// and the future fails.
    fn failed_submit(&self, user: u64, e: std::io::Error) -> ReadAt {
        // SAFETY: `user` came from `Arc::into_raw` in `read_at` and the kernel never saw it
        // (the push failed), so this is the only place that takes it back.
        drop(unsafe { Arc::from_raw(user as *const Slot) });
        ReadAt::failed(e)
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

    /// Reads in flight (submitted, not yet reaped).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Takes every posted completion and wakes its reader; returns how many.
    pub fn reap(&self) -> usize {
        let mut done = Vec::new();
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
                        break;
                    }
                }
                if !overflow {
                    break;
                }
            }
        }
        let n = done.len();
        self.in_flight
            .fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
        for (user, res) in done {
            // SAFETY: every submitted entry's user data is a slot reference from
            // `Arc::into_raw` in `read_at`, completed exactly once by the kernel.
            let slot = unsafe { Arc::from_raw(user as *const Slot) };
            let waker = {
                let mut s = slot.0.lock();
                let want = s.buf.as_ref().map_or(0, AlignedBuf::len);
                s.done = Some(match res {
                    r if r < 0 => Err(std::io::Error::from_raw_os_error(-r)),
                    r if r as usize != want => Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("short read: {r} of {want} bytes"),
                    )),
                    _ => Ok(()),
                });
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
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

impl ReadAt {
    fn failed(e: std::io::Error) -> Self {
        let slot = Slot::default();
        slot.0.lock().done = Some(Err(e));
        Self {
            ring: None,
            slot: Arc::new(slot),
        }
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
        // A read dropped before its completion: a reap later takes its slot back.
        drop(ring.read_at(AlignedBuf::zeroed(4096), 0));
        while ring.in_flight() > 0 {
            ring.reap();
        }
        std::fs::remove_file(&path).unwrap();
    }
}

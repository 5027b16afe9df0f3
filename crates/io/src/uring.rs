//! Completion-based reads of a cache device through io_uring.
//!
//! A [`Ring`] takes reads ([`Ring::read_at`]) from any thread and completes them as events: the
//! kernel posts each completion to the ring's completion queue and signals an eventfd
//! ([`Ring::event_fd`]), which the caller's reactor watches and answers with [`Ring::reap`].
//! A read is a future ([`ReadAt`]) that resolves to its buffer; no thread blocks on the device.
//!
//! Safety of the buffers: a read's buffer belongs to its slot, whose reference is handed to the
//! kernel with the request (as the entry's user data) and taken back only when the completion is
//! reaped, so the memory stays allocated while the device may write it, even when the future is
//! dropped first. A ring dropped with reads in flight leaks their slots rather than free memory
//! the kernel may still fill.

use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
    /// A ring of `entries` submission slots, or why the kernel refused one (io_uring disabled
    /// by `kernel.io_uring_disabled`, not built in, or refused by a seccomp filter).
    pub fn new(entries: u32) -> std::io::Result<Self> {
        let ring = IoUring::new(entries)?;
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
        Ok(Self {
            ring: Mutex::new(ring),
            event,
            in_flight: Default::default(),
        })
    }

    /// The eventfd signalled when completions are posted: watch it for readability and call
    /// [`Ring::reap`].
    pub fn event_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.event.as_fd()
    }

    /// Reads `buf.len()` bytes of `fd` at `offset` into `buf`; the future gives the buffer back
    /// once the read completed (short reads are errors). `fd` must stay open until then; with
    /// `O_DIRECT`, `buf` and `offset` must be aligned as the device requires.
    pub fn read_at(&self, fd: RawFd, mut buf: AlignedBuf, offset: u64) -> ReadAt {
        let slot = Arc::new(Slot::default());
        let (ptr, len) = (buf.as_mut_ptr(), buf.len());
        let Ok(len32) = u32::try_from(len) else {
            return ReadAt::failed(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a read of 4 GiB or more",
            ));
        };
        slot.0.lock().buf = Some(buf);
        let user = Arc::into_raw(slot.clone()) as u64;
        let entry = opcode::Read::new(types::Fd(fd), ptr, len32)
            .offset(offset)
            .build()
            .user_data(user);
        let mut ring = self.ring.lock();
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        loop {
            // SAFETY: the entry's buffer (`ptr`, `len`) is owned by the slot, which the user
            // data keeps alive until `reap` takes the completion back (see the module
            // documentation); the descriptor is the caller's to keep open.
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
        loop {
            match ring.submit() {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // EBUSY/EAGAIN: the completion queue is full; the entry stays queued and goes
                // with the next submission (the reactor reaps meanwhile).
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => break,
                Err(e) => {
                    // The kernel took none of the queue. The entry stays queued (the kernel
                    // owns its slot reference from the push on), so it is not failed here: the
                    // next submission carries it.
                    tracing::warn!(error = %e, "io_uring submission failed; the read stays queued");
                    break;
                }
            }
        }
        ReadAt { slot, len }
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
                // flushes them (the submission does, seeing the overflow flag).
                if !ring.submission().cq_overflow() {
                    break;
                }
                if let Err(e) = ring.submit() {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        tracing::warn!(error = %e, "io_uring: flushing overflowed completions failed");
                        break;
                    }
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
    slot: Arc<Slot>,
    len: usize,
}

impl ReadAt {
    fn failed(e: std::io::Error) -> Self {
        let slot = Slot::default();
        slot.0.lock().done = Some(Err(e));
        Self {
            slot: Arc::new(slot),
            len: 0,
        }
    }

    /// The bytes asked for.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty read.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Future for ReadAt {
    type Output = std::io::Result<AlignedBuf>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.slot.0.lock();
        match s.done.take() {
            Some(Ok(())) => Poll::Ready(Ok(s.buf.take().expect("a completed read has its buffer"))),
            Some(Err(e)) => Poll::Ready(Err(e)),
            None => {
                if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    s.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DirectFile, Medium};

    /// Reaps until `fut` is done (no reactor here: the test polls the ring itself).
    fn wait(ring: &Ring, mut fut: ReadAt) -> std::io::Result<AlignedBuf> {
        let waker = futures_noop();
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(r) = Pin::new(&mut fut).poll(&mut cx) {
                return r;
            }
            ring.reap();
            std::thread::yield_now();
        }
    }

    fn futures_noop() -> Waker {
        Waker::noop().clone()
    }

    #[test]
    fn reads_complete_through_the_ring() {
        let Ok(ring) = Ring::new(8) else {
            eprintln!("io_uring unavailable here: nothing to test");
            return;
        };
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
        let fd = f.raw_fd().unwrap();
        // Many at once, more than the queue holds.
        let reads: Vec<ReadAt> = (0..32)
            .map(|_| ring.read_at(fd, AlignedBuf::zeroed(8192), 16384))
            .collect();
        for r in reads {
            assert_eq!(&wait(&ring, r).unwrap()[..], &w[..]);
        }
        // Past the end: a short read is an error, not zeroes.
        let r = ring.read_at(fd, AlignedBuf::zeroed(8192), (1 << 20) - 4096);
        let e = wait(&ring, r).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
        // Unaligned O_DIRECT: the kernel's error comes back.
        let r = ring.read_at(fd, AlignedBuf::zeroed(4096), 100);
        assert!(wait(&ring, r).is_err());
        // A read dropped before its completion: the reap later takes its slot back.
        drop(ring.read_at(fd, AlignedBuf::zeroed(4096), 0));
        let mut reaped = 0;
        while reaped == 0 {
            reaped = ring.reap();
        }
        std::fs::remove_file(&path).unwrap();
    }
}

//! The io_uring ring of a running cache service and its reaper task: the task reaps completions
//! when the ring's eventfd signals them (on the runtime the service started in), then lets the
//! journal writers finish what completed (see `service` and `ring_writer`).

use std::sync::Arc;
use std::time::Duration;

use alcubierre_io::Ring;

use crate::engine::Engine;
use crate::ring_writer::RingWriter;

/// Cache hits read through io_uring: the ring, the cache device's descriptor, and how many
/// reads it served.
#[derive(Clone)]
pub(crate) struct RingReads {
    pub(crate) ring: Arc<Ring>,
    pub(crate) served: Arc<std::sync::atomic::AtomicU64>,
    /// Set at shutdown: reads go to the (stopped) pool, which answers "shutting down", since
    /// nothing reaps the ring any more. Held shared while a read is submitted, so that once
    /// shutdown has set it no read enters the ring.
    pub(crate) stopped: Arc<parking_lot::RwLock<bool>>,
}

/// Ends the ring's use when its reaper task ends (aborted at shutdown, or its runtime shut
/// down): later reads go to the pool, and reads still in flight are reaped here (their own polls
/// reap as well), so none waits on a reaper that is gone.
struct ReaperGone {
    ring: Arc<Ring>,
    stopped: Arc<parking_lot::RwLock<bool>>,
    writers: Vec<Arc<RingWriter>>,
}

impl Drop for ReaperGone {
    fn drop(&mut self) {
        *self.stopped.write() = true;
        for w in &self.writers {
            w.ring_gone();
        }
        let start = std::time::Instant::now();
        while self.ring.in_flight() > 0 && start.elapsed() < Duration::from_secs(5) {
            self.ring.reap();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A ring's eventfd, as the reactor watches it: its own duplicate of the descriptor, so it is
/// open for as long as the registration lives.
struct EventFd(std::os::fd::OwnedFd);

impl std::os::fd::AsRawFd for EventFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// A ring on the cache device, its eventfd as the current runtime watches it, and the runtime.
pub(crate) struct OpenRing {
    pub(crate) ring: Arc<Ring>,
    afd: tokio::io::unix::AsyncFd<EventFd>,
    rt: tokio::runtime::Handle,
}

/// Sets up io_uring, if the medium, the kernel and the caller allow: the ring, watched by the
/// current tokio runtime. Says so when it cannot.
pub(crate) fn open_ring(engine: &Engine) -> Option<OpenRing> {
    let medium = &engine.partitions().first()?.medium;
    let file = medium.fd()?;
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::info!("no async runtime at start: cache hits are read by the reader threads");
        return None;
    };
    let ring = match Ring::new(256, file) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e,
                "io_uring is not available: cache hits are read by the reader threads");
            return None;
        }
    };
    let watched = match ring.event_fd().try_clone_to_owned() {
        Ok(fd) => EventFd(fd),
        Err(e) => {
            tracing::warn!(error = %e,
                "cannot watch the io_uring eventfd: cache hits are read by the reader threads");
            return None;
        }
    };
    // Deprecated for descriptors the registration does not own (I/O safety); this one owns its
    // descriptor, which stays open until the registration is dropped. (The replacement is an
    // `unsafe` function, and this crate has no unsafe code.)
    #[allow(deprecated)]
    let afd = match tokio::io::unix::AsyncFd::with_interest(watched, tokio::io::Interest::READABLE)
    {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e,
                "cannot watch the io_uring eventfd: cache hits are read by the reader threads");
            return None;
        }
    };
    Some(OpenRing { ring, afd, rt })
}

/// Starts the ring's reaper task: it reaps completions when the eventfd signals them, then lets
/// the journal `writers` finish what completed.
pub(crate) fn start_reaper(
    open: OpenRing,
    writers: Vec<Arc<RingWriter>>,
) -> (RingReads, tokio::task::JoinHandle<()>) {
    let OpenRing { ring, afd, rt } = open;
    let reaper = ring.clone();
    let stopped: Arc<parking_lot::RwLock<bool>> = Default::default();
    let guard = ReaperGone {
        ring: ring.clone(),
        stopped: stopped.clone(),
        writers: writers.clone(),
    };
    let task = rt.spawn(async move {
        let _gone = guard;
        loop {
            let Ok(mut ready) = afd.readable().await else {
                return;
            };
            // Readiness is cleared only when the eventfd was not signalled; a completion posted
            // after `take_event` signals it again.
            if ready.try_io(|_| reaper.take_event()).is_ok() {
                reaper.reap_then_look();
                for w in &writers {
                    if w.advance() {
                        w.deliver_calls();
                    }
                }
            }
        }
    });
    (
        RingReads {
            ring,
            served: Default::default(),
            stopped,
        },
        task,
    )
}

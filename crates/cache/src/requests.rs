//! A journal write request as the writer thread and the ring's journal writer take it, and how
//! it is answered.

use alcubierre_types::LogPos;
use tokio::sync::oneshot;

use crate::error::CacheError;
use crate::partition::Op;

/// A write (or zeroes, release, drop) queued for the journal.
pub(crate) struct WriteReq {
    pub(crate) op: Op,
    pub(crate) tag: LogPos,
    pub(crate) done: Done,
}

/// A completion run once the write is durable (or failed): on the ring's reaper task (or a
/// waiting write's poll) when the journal is written through io_uring, else on the partition's
/// writer thread; in submission order, one commit group at a time. Its flag says whether it is
/// the last callback of its commit group, so a caller can gather the group's effects (e.g. one
/// acknowledgement frame for several writes). It must be quick and must not block: nothing else
/// completes while it runs.
pub type WriteCallback = Box<dyn FnOnce(Result<(), CacheError>, bool) + Send>;

/// How a request is answered: a future's reply, or a callback.
pub(crate) enum Done {
    Reply(oneshot::Sender<Result<(), CacheError>>),
    Call(Call),
}

/// A callback that is always called: with "shutting down" if the request is dropped unserved.
pub(crate) struct Call(pub(crate) Option<WriteCallback>);

impl Call {
    pub(crate) fn call(mut self, r: Result<(), CacheError>, last: bool) {
        if let Some(f) = self.0.take() {
            f(r, last);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(CacheError::ShuttingDown), true);
        }
    }
}

/// What a partition's writer thread is given.
pub(crate) enum WriterMsg {
    Req(WriteReq),
    /// A group the ring's journal writer hands over for the blocking path (see `ring_writer`).
    Group(Vec<Op>, Vec<LogPos>, Vec<Done>),
    Stop,
}

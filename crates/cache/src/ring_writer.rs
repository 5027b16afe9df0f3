//! The journal writer on io_uring: group commit without a writer thread.
//!
//! A request joins the partition's queue from the caller's task. When no batch is being written,
//! the caller stages the next group (as many queued requests as one batch holds) and hands its
//! device write (`RWF_DSYNC`) to the ring, then returns; the caller's future waits for its reply.
//! Whoever reaps the ring next finishes the batch (`advance`): the reactor's reaper task, any
//! waiting writer's own poll, or a blocking committer waiting for its reply. Finishing applies the
//! batch to the index, moves the head, answers the futures, and stages the next group at once, so
//! one batch is always in flight while requests wait, as the writer thread did.
//!
//! Callbacks (`Done::Call`, the replicated volume's) run in journal order and one group at a time
//! (`deliver_calls`), never inside `submit` or under a lock of this module, so a caller may hold
//! locks its callbacks take while it submits.
//!
//! What staging cannot do without blocking (a partial block to merge with data read from the
//! device or the backend, space to free by eviction or by waiting for destage, a group larger than
//! one batch) goes to the partition's writer thread, which commits it the blocking way; the queue
//! waits for it, so requests keep their order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alcubierre_io::{Ring, WriteAt};
use alcubierre_types::LogPos;
use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::commit::{Staged, Staging};
use crate::error::CacheError;
use crate::format::MAX_ENTRIES;
use crate::partition::{Committer, Op, Partition};
use crate::requests::{Call, Done, WriteReq, WriterMsg};

/// One partition's journal writer on the ring.
pub(crate) struct RingWriter {
    part: Arc<Partition>,
    ring: Arc<Ring>,
    /// The partition's writer thread, for groups that need blocking work.
    thread: Sender<WriterMsg>,
    max_group: usize,
    state: Mutex<State>,
    /// Held while callbacks run, so they run one group at a time, in order.
    delivering: Mutex<()>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<WriteReq>,
    busy: Busy,
    /// Callbacks of finished groups, in journal order, to run (`deliver_calls`).
    calls: VecDeque<Vec<(Call, Result<(), CacheError>)>>,
    /// No new requests (the service is shutting down).
    stopped: bool,
    /// The ring's reaper is gone: groups go to the writer thread.
    ring_gone: bool,
}

#[derive(Default)]
enum Busy {
    #[default]
    Idle,
    /// A batch is being written through the ring; `group` waits for it.
    Ring {
        staged: Staged,
        write: WriteAt,
        group: Vec<(Done, Option<Result<(), CacheError>>)>,
    },
    /// The writer thread commits a group.
    Thread,
}

/// Answers of a finished group: replies to send, callbacks to queue.
type Answers = Vec<(Done, Result<(), CacheError>)>;

impl RingWriter {
    pub(crate) fn new(
        part: Arc<Partition>,
        ring: Arc<Ring>,
        thread: Sender<WriterMsg>,
        max_group: usize,
    ) -> Self {
        Self {
            part,
            ring,
            thread,
            max_group: max_group.max(1),
            state: Mutex::new(State::default()),
            delivering: Mutex::new(()),
        }
    }

    /// Queues `req`; stages it at once when no batch is in flight. `Err` gives it back when the
    /// writer has stopped. Runs no callback.
    pub(crate) fn submit(&self, req: WriteReq) -> Result<(), WriteReq> {
        self.submit_all(std::iter::once(req))
            .map_err(|mut r| r.next().expect("the request back"))
    }

    /// Queues `reqs` one after the other, nothing between them (see [`RingWriter::submit`]);
    /// `Err` gives them back untouched when the writer has stopped.
    fn submit_all<I: IntoIterator<Item = WriteReq>>(&self, reqs: I) -> Result<(), I> {
        let mut replies = Vec::new();
        let calls = {
            let mut s = self.state.lock();
            if s.stopped {
                return Err(reqs);
            }
            s.queue.extend(reqs);
            if matches!(s.busy, Busy::Idle) {
                self.start_next(&mut s, &mut replies);
            }
            !s.calls.is_empty()
        };
        send_replies(replies);
        if calls {
            // Callbacks decided here run on the reaper, not inside the caller's submit.
            self.ring.signal();
        }
        Ok(())
    }

    /// Stages the next group while nothing is in flight: onto the ring, or to the writer thread.
    /// Groups answered at once go to `replies` and `s.calls`.
    fn start_next(&self, s: &mut State, replies: &mut Answers) {
        while matches!(s.busy, Busy::Idle) && !s.queue.is_empty() {
            let n = self.group_len(&s.queue);
            let (mut ops, mut tags, mut dones) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for r in s.queue.drain(..n) {
                ops.push(r.op);
                tags.push(r.tag);
                dones.push(r.done);
            }
            let staging = if s.ring_gone {
                Staging::Blocking
            } else {
                self.part.stage(&ops, &tags)
            };
            match staging {
                Staging::Answered(results) => {
                    split(dones.into_iter().zip(results).collect(), replies, s);
                }
                Staging::Write(mut staged, results) => {
                    let write = self
                        .ring
                        .write_dsync_at(staged.take_buf(), staged.dev_offset(&self.part));
                    s.busy = Busy::Ring {
                        staged,
                        write,
                        group: dones.into_iter().zip(results).collect(),
                    };
                }
                Staging::Blocking => {
                    let msg = WriterMsg::Group(ops, tags, dones);
                    match self.thread.send(msg) {
                        Ok(()) => s.busy = Busy::Thread,
                        Err(e) => {
                            let WriterMsg::Group(_, _, dones) = e.0 else {
                                unreachable!("the group sent")
                            };
                            let answers = dones
                                .into_iter()
                                .map(|d| (d, Err(CacheError::ShuttingDown)));
                            split(answers.collect(), replies, s);
                        }
                    }
                }
            }
        }
    }

    /// How many queued requests the next group takes: as many as one batch holds (at least
    /// one), up to the group limit, all of a kind: built without reads (for the ring) or not
    /// (for the writer thread), so that one partial block does not send a whole group to the
    /// thread.
    fn group_len(&self, queue: &VecDeque<WriteReq>) -> usize {
        let (mut entries, mut data, mut n) = (0usize, 0u32, 0usize);
        let kind = queue
            .front()
            .is_some_and(|r| Partition::builds_without_reads(&r.op));
        for r in queue.iter().take(self.max_group) {
            let (e, d) = self.part.cost(&r.op);
            if n > 0
                && (entries + e > MAX_ENTRIES
                    || data + d > self.part.max_batch_data
                    || Partition::builds_without_reads(&r.op) != kind)
            {
                break;
            }
            entries += e;
            data += d;
            n += 1;
        }
        n.max(1)
    }

    /// Finishes the batch in flight if its write completed (call after reaping), answers its
    /// replies and queues its callbacks, and stages the next group. Returns whether callbacks
    /// wait to be delivered.
    pub(crate) fn advance(&self) -> bool {
        let mut replies = Vec::new();
        let calls = {
            let mut s = self.state.lock();
            let done = match &mut s.busy {
                Busy::Ring { write, .. } => write.try_take(),
                _ => None,
            };
            if let Some((outcome, buf)) = done {
                let Busy::Ring { staged, group, .. } = std::mem::take(&mut s.busy) else {
                    unreachable!("a batch was in flight")
                };
                let r = self.part.staged_written(staged, outcome, buf);
                if r.is_ok() {
                    self.part
                        .counters
                        .ring_batches
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let answers = group
                    .into_iter()
                    .map(|(d, pre)| (d, pre.unwrap_or_else(|| self.part.batch_result(&r))))
                    .collect();
                split(answers, &mut replies, &mut s);
                self.start_next(&mut s, &mut replies);
            }
            !s.calls.is_empty()
        };
        send_replies(replies);
        calls
    }

    /// The writer thread finished a group (`answers`): its replies go now, its callbacks in
    /// turn (on the reaper while there is one: a callback that commits directly must not wait
    /// for this thread); the next group is staged.
    pub(crate) fn thread_done(&self, answers: Answers) {
        let mut replies = Vec::new();
        let (calls, ring_gone) = {
            let mut s = self.state.lock();
            debug_assert!(matches!(s.busy, Busy::Thread));
            s.busy = Busy::Idle;
            split(answers, &mut replies, &mut s);
            self.start_next(&mut s, &mut replies);
            (!s.calls.is_empty(), s.ring_gone)
        };
        send_replies(replies);
        if ring_gone {
            self.deliver_calls();
        } else if calls {
            self.ring.signal();
        }
    }

    /// Runs the callbacks of finished groups, in order, unless another thread is at it (it
    /// runs these too).
    pub(crate) fn deliver_calls(&self) {
        loop {
            {
                let Some(_turn) = self.delivering.try_lock() else {
                    return;
                };
                loop {
                    let Some(group) = self.state.lock().calls.pop_front() else {
                        break;
                    };
                    let n = group.len();
                    for (i, (c, r)) in group.into_iter().enumerate() {
                        c.call(r, i + 1 == n);
                    }
                }
            }
            // A group queued after the last look but before the turn was given up would wait
            // for the next reap: look once more.
            if self.state.lock().calls.is_empty() {
                return;
            }
        }
    }

    /// Reaps the ring, finishes what completed and runs the callbacks due: what waiting
    /// writers do.
    pub(crate) fn drive(&self) {
        self.ring.reap();
        if self.advance() {
            self.deliver_calls();
        }
    }

    /// Whether nothing is queued or in flight.
    fn idle(&self) -> bool {
        let s = self.state.lock();
        matches!(s.busy, Busy::Idle) && s.queue.is_empty() && s.calls.is_empty()
    }

    /// The reaper is gone: later groups go to the writer thread; the batch in flight is
    /// finished here.
    pub(crate) fn ring_gone(&self) {
        self.state.lock().ring_gone = true;
        self.settle(Duration::from_secs(5));
    }

    /// Stops taking requests and finishes those queued (bounded by `limit`).
    pub(crate) fn stop(&self) {
        self.state.lock().stopped = true;
        self.settle(Duration::from_secs(30));
    }

    /// Drives the writer until nothing is queued or in flight, for at most `limit`.
    fn settle(&self, limit: Duration) {
        let start = Instant::now();
        while !self.idle() && start.elapsed() < limit {
            self.drive();
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Committer for RingWriter {
    /// Reaps the ring and finishes what completed, leaving callbacks to the reaper: what a
    /// thread that may hold the callbacks' locks does while it waits.
    fn finish_completed(&self) {
        self.ring.reap();
        if self.advance() {
            self.ring.signal();
        }
    }

    /// Commits `ops` through the queue and waits for them, for a caller without a task
    /// ([`Partition::commit_tagged`]). Reaps and finishes batches itself while it waits, so it
    /// needs no reaper, but leaves callbacks to the reaper (its caller may hold their locks).
    /// `None` when the writer has stopped.
    fn commit_and_wait(&self, ops: &[Op], tags: &[LogPos]) -> Option<Vec<Result<(), CacheError>>> {
        let mut rxs = Vec::with_capacity(ops.len());
        let mut reqs = Vec::with_capacity(ops.len());
        for (op, tag) in ops.iter().zip(tags) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            reqs.push(WriteReq {
                op: op.clone(),
                tag: *tag,
                done: Done::Reply(tx),
            });
            rxs.push(rx);
        }
        if self.submit_all(reqs).is_err() {
            return None;
        }
        let mut pause = Duration::from_micros(20);
        let mut results = Vec::with_capacity(rxs.len());
        for mut rx in rxs {
            loop {
                match rx.try_recv() {
                    Ok(r) => break results.push(r),
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                        break results.push(Err(CacheError::ShuttingDown))
                    }
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                }
                self.finish_completed();
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(1));
            }
        }
        Some(results)
    }
}

/// Sends the replies of `answers` to `replies` and queues their callbacks as one group.
fn split(answers: Answers, replies: &mut Answers, s: &mut State) {
    let mut calls = Vec::new();
    for (d, r) in answers {
        match d {
            Done::Reply(_) => replies.push((d, r)),
            Done::Call(c) => calls.push((c, r)),
        }
    }
    if !calls.is_empty() {
        s.calls.push_back(calls);
    }
}

fn send_replies(replies: Answers) {
    for (d, r) in replies {
        if let Done::Reply(tx) = d {
            let _ = tx.send(r);
        }
    }
}

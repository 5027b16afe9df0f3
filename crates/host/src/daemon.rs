//! The daemon: the host's liveness reports on their own thread, and rounds. A round: for each
//! desired volume its connection info and one pass of the plan: lost paths connected again, new
//! replica nodes' portals connected, departed nodes' paths dropped. A round never tears a volume
//! down: when the API does not answer, the paths stay and the round says so; only a volume the
//! cluster took the host off (a fence, a detach elsewhere) or deleted loses its paths.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alcubierre_api::v1;
use tracing::{info, warn};

use crate::agent::{Agent, RoundReport};
use crate::{Error, Result};

/// How often the daemon reports the host's liveness (the cluster's timeout is 10 s).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

impl Agent {
    /// Reports the host's liveness to the cluster (short timeouts per endpoint).
    pub fn heartbeat(&self) -> Result<v1::HostLiveness> {
        let body = v1::Heartbeat {
            agent: self.reporter.clone(),
        };
        self.beat.call(|c| c.heartbeat(&self.id.name, &body))
    }

    /// One round of the daemon (the liveness reports go on beside it, see [`Agent::run`]).
    pub fn round(&self) -> Result<RoundReport> {
        let mut all = RoundReport::default();
        let _lock = self.state.lock()?;
        let mut d = self.state.load()?;
        let mut revoked = Vec::new();
        for w in &d.attachments {
            // Paths that can never carry I/O for this host again go now, with queueing off:
            // the cluster took the host off the volume (a fence, a detach elsewhere), so what
            // is queued must fail, never reach the volume later; or the volume is gone.
            let gone = match self.api.call(|c| c.volume(&w.volume)) {
                Ok(v) if !v.any_host && !v.hosts.contains(&self.id.name) => Some(
                    "this host lost its access to the volume (fenced or detached by the cluster): dropping its paths; queued I/O fails",
                ),
                Ok(_) => None,
                Err(Error::Api(a)) if a.is_not_found() => {
                    Some("the volume was deleted: dropping its paths")
                }
                Err(e) => {
                    all.errors
                        .push(format!("{}: the paths stay as they are: {e}", w.name));
                    continue;
                }
            };
            if let Some(why) = gone {
                warn!(volume = %w.name, "{why}");
                match self.tear_down(w, true) {
                    Ok(()) => revoked.push(w.volume.clone()),
                    Err(e) => all
                        .errors
                        .push(format!("{}: dropping its paths: {e}", w.name)),
                }
                continue;
            }
            match self.api.call(|c| c.connection(&w.volume)) {
                Ok(conn) => {
                    let r = self.step_paths(&conn, w);
                    all.connected.extend(r.connected);
                    all.dropped.extend(r.dropped);
                    all.errors.extend(r.errors);
                }
                Err(e) => all
                    .errors
                    .push(format!("{}: the paths stay as they are: {e}", w.name)),
            }
        }
        if !revoked.is_empty() {
            d.attachments.retain(|w| !revoked.contains(&w.volume));
            self.state.save(&d)?;
        }
        Ok(all)
    }

    /// The daemon: liveness reports every [`HEARTBEAT_EVERY`] from their own thread (no round,
    /// lock or slow portal delays them), rounds every `interval_ms`, until `stop`.
    pub fn run(&self, stop: &AtomicBool) {
        info!(host = %self.id.name, "alcubierre-node daemon started");
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    if let Err(e) = self.heartbeat() {
                        warn!("liveness report: {e}");
                    }
                    std::thread::sleep(HEARTBEAT_EVERY.saturating_sub(t0.elapsed()));
                }
            });
            while !stop.load(Ordering::Relaxed) {
                match self.round() {
                    Ok(r) => {
                        for e in &r.errors {
                            warn!("{e}");
                        }
                    }
                    Err(e) => warn!("round: {e}"),
                }
                std::thread::sleep(Duration::from_millis(self.cfg.interval_ms));
            }
        });
    }
}

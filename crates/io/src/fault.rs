//! Fault injection for media (feature `fault-injection`): power loss and failing devices.
//!
//! [`CrashMedium`] keeps the bytes that are durable apart from the writes issued since the last
//! completed sync, as a real device with a volatile write cache does. A *power cut* can be
//! scheduled at the N-th operation: a write cut in the middle lands only partly, a sync cut in the
//! middle makes nothing durable, and every later operation fails. [`CrashMedium::image_after_power_loss`]
//! then gives what the device holds when power returns: the durable bytes plus a random subset of
//! the 512-byte sectors written since the last sync (sectors are atomic; their order is not).

use std::collections::BTreeMap;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::Medium;

/// The unit the model treats as atomic.
pub const SECTOR: usize = 512;

/// What a [`CrashMedium`] does when its trigger fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Power is lost: the trigger operation lands partly, everything after fails.
    PowerCut,
    /// Writes and syncs fail with EIO from the trigger on; reads keep working.
    FailWrites,
}

struct State {
    durable: Vec<u8>,
    /// Sectors written since the last completed sync, newest value per sector.
    pending: BTreeMap<usize, [u8; SECTOR]>,
    ops: u64,
    trigger: Option<(u64, Fault)>,
    fired: Option<Fault>,
    rng: SmallRng,
    writes: u64,
    syncs: u64,
}

enum Tick {
    Ok,
    Fires(Fault),
    Dead(Fault),
}

/// A medium with a volatile write cache, a schedulable power cut and write failures.
pub struct CrashMedium {
    state: Mutex<State>,
}

fn eio(what: &str) -> std::io::Error {
    std::io::Error::other(format!("injected fault: {what}"))
}

impl CrashMedium {
    /// A zeroed medium of `len` bytes (a multiple of [`SECTOR`]); `seed` drives torn writes.
    pub fn new(len: usize, seed: u64) -> Self {
        Self::from_image(vec![0; len], seed)
    }

    /// A medium whose durable bytes are `image`.
    pub fn from_image(image: Vec<u8>, seed: u64) -> Self {
        assert_eq!(
            image.len() % SECTOR,
            0,
            "medium length must be whole sectors"
        );
        Self {
            state: Mutex::new(State {
                durable: image,
                pending: BTreeMap::new(),
                ops: 0,
                trigger: None,
                fired: None,
                rng: SmallRng::seed_from_u64(seed),
                writes: 0,
                syncs: 0,
            }),
        }
    }

    /// Fires `fault` at the `op`-th write or sync from now (1 = the next one).
    pub fn schedule(&self, op: u64, fault: Fault) {
        let mut s = self.state.lock();
        let at = s.ops + op;
        s.trigger = Some((at, fault));
    }

    /// Cuts power now.
    pub fn cut_power(&self) {
        self.state.lock().fired = Some(Fault::PowerCut);
    }

    /// True once a scheduled fault has fired.
    pub fn fired(&self) -> bool {
        self.state.lock().fired.is_some()
    }

    /// Number of writes and of syncs that completed.
    pub fn counts(&self) -> (u64, u64) {
        let s = self.state.lock();
        (s.writes, s.syncs)
    }

    /// The bytes found when power returns: durable data plus a random subset of the sectors
    /// written since the last completed sync.
    pub fn image_after_power_loss(&self) -> Vec<u8> {
        let mut s = self.state.lock();
        let mut image = s.durable.clone();
        let pending: Vec<(usize, [u8; SECTOR])> = s.pending.iter().map(|(k, v)| (*k, *v)).collect();
        for (sector, data) in pending {
            if s.rng.gen_bool(0.5) {
                image[sector * SECTOR..(sector + 1) * SECTOR].copy_from_slice(&data);
            }
        }
        image
    }

    fn tick(s: &mut State) -> Tick {
        if let Some(f) = s.fired {
            return Tick::Dead(f);
        }
        s.ops += 1;
        match s.trigger {
            Some((at, fault)) if at == s.ops => {
                s.fired = Some(fault);
                s.trigger = None;
                Tick::Fires(fault)
            }
            _ => Tick::Ok,
        }
    }
}

impl Medium for CrashMedium {
    fn len(&self) -> u64 {
        self.state.lock().durable.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let s = self.state.lock();
        if s.fired == Some(Fault::PowerCut) {
            return Err(eio("power is off"));
        }
        let start = offset as usize;
        if !start.is_multiple_of(SECTOR)
            || !buf.len().is_multiple_of(SECTOR)
            || start + buf.len() > s.durable.len()
        {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        buf.copy_from_slice(&s.durable[start..start + buf.len()]);
        let first = start / SECTOR;
        for (sector, data) in s.pending.range(first..first + buf.len() / SECTOR) {
            let at = (sector - first) * SECTOR;
            buf[at..at + SECTOR].copy_from_slice(data);
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let mut s = self.state.lock();
        let start = offset as usize;
        if !start.is_multiple_of(SECTOR)
            || !buf.len().is_multiple_of(SECTOR)
            || start + buf.len() > s.durable.len()
        {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        let tick = Self::tick(&mut s);
        let sectors = buf.len() / SECTOR;
        let landed = match tick {
            Tick::Ok => sectors,
            // The write in progress when power went: only some of its sectors reached the cache.
            Tick::Fires(Fault::PowerCut) => s.rng.gen_range(0..=sectors),
            Tick::Fires(Fault::FailWrites) | Tick::Dead(_) => 0,
        };
        for i in 0..landed {
            let mut data = [0u8; SECTOR];
            data.copy_from_slice(&buf[i * SECTOR..(i + 1) * SECTOR]);
            s.pending.insert(start / SECTOR + i, data);
        }
        match tick {
            Tick::Ok => {
                s.writes += 1;
                Ok(())
            }
            Tick::Fires(Fault::PowerCut) | Tick::Dead(Fault::PowerCut) => {
                Err(eio("power cut during write"))
            }
            Tick::Fires(Fault::FailWrites) | Tick::Dead(Fault::FailWrites) => {
                Err(eio("write failed"))
            }
        }
    }

    fn sync(&self) -> std::io::Result<()> {
        let mut s = self.state.lock();
        match Self::tick(&mut s) {
            Tick::Ok => {
                let pending = std::mem::take(&mut s.pending);
                for (sector, data) in pending {
                    s.durable[sector * SECTOR..(sector + 1) * SECTOR].copy_from_slice(&data);
                }
                s.syncs += 1;
                Ok(())
            }
            Tick::Fires(Fault::PowerCut) | Tick::Dead(Fault::PowerCut) => {
                Err(eio("power cut during sync"))
            }
            Tick::Fires(Fault::FailWrites) | Tick::Dead(Fault::FailWrites) => {
                Err(eio("sync failed"))
            }
        }
    }

    fn describe(&self) -> String {
        "crash-model".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_may_vanish_synced_ones_stay() {
        let m = CrashMedium::new(64 * SECTOR, 7);
        m.write_at(&[1u8; 4096], 0).unwrap();
        m.sync().unwrap();
        m.write_at(&[2u8; 4096], 4096).unwrap();
        let mut r = vec![0u8; 4096];
        m.read_at(&mut r, 4096).unwrap();
        assert_eq!(r, vec![2u8; 4096], "reads see unsynced writes");
        m.cut_power();
        assert!(m.read_at(&mut r, 0).is_err());
        let mut seen_some = false;
        let mut seen_none = false;
        for _ in 0..50 {
            let img = m.image_after_power_loss();
            assert!(img[..4096].iter().all(|&b| b == 1));
            let landed = img[4096..8192].chunks(SECTOR).filter(|s| s[0] == 2).count();
            seen_some |= landed > 0;
            seen_none |= landed < 8;
        }
        assert!(seen_some && seen_none);
    }

    #[test]
    fn scheduled_cut_fails_later_ops() {
        let m = CrashMedium::new(64 * SECTOR, 1);
        m.schedule(2, Fault::PowerCut);
        m.write_at(&[1u8; 512], 0).unwrap();
        assert!(m.sync().is_err());
        assert!(m.write_at(&[1u8; 512], 0).is_err());
        assert!(m.fired());
    }

    #[test]
    fn fail_writes_keeps_reads() {
        let m = CrashMedium::new(64 * SECTOR, 1);
        m.write_at(&[3u8; 512], 0).unwrap();
        m.schedule(1, Fault::FailWrites);
        assert!(m.write_at(&[4u8; 512], 512).is_err());
        assert!(m.sync().is_err());
        let mut r = [0u8; 512];
        m.read_at(&mut r, 0).unwrap();
        assert_eq!(r, [3u8; 512]);
    }
}

//! A backend in memory that models power loss: writes since a volume's last flush are volatile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use alcubierre_types::{ByteOffset, ByteSize, VolumeId};
use parking_lot::Mutex;

use crate::{check_io, check_size, Backend, BackendError};

const SECTOR: usize = 512;

#[derive(Clone, Default)]
struct Image {
    durable: Vec<u8>,
    /// Writes since the last flush, oldest first: byte offset and data. (Kept whole rather
    /// than per sector: per-sector boxes cost more CPU than the rest of a replicated write's
    /// destage in the replication benchmark.)
    pending: Vec<(usize, Vec<u8>)>,
}

impl Image {
    fn current(&self, offset: usize, buf: &mut [u8]) {
        buf.copy_from_slice(&self.durable[offset..offset + buf.len()]);
        let end = offset + buf.len();
        for (at, data) in &self.pending {
            let (s, e) = ((*at).max(offset), (at + data.len()).min(end));
            if s < e {
                buf[s - offset..e - offset].copy_from_slice(&data[s - at..e - at]);
            }
        }
    }

    fn put(&mut self, offset: usize, data: &[u8]) {
        self.pending.push((offset, data.to_vec()));
    }

    fn flush(&mut self) {
        for (at, data) in std::mem::take(&mut self.pending) {
            self.durable[at..at + data.len()].copy_from_slice(&data);
        }
    }

    /// The newest pending contents of each sector written since the last flush, by sector.
    #[cfg(feature = "fault-injection")]
    fn pending_sectors(&self) -> std::collections::BTreeMap<usize, &[u8]> {
        let mut sectors = std::collections::BTreeMap::new();
        for (at, data) in &self.pending {
            for (i, chunk) in data.chunks(SECTOR).enumerate() {
                sectors.insert(at / SECTOR + i, chunk);
            }
        }
        sectors
    }

    fn snapshot(&self) -> Image {
        let mut img = self.clone();
        img.flush();
        img
    }
}

/// A [`Backend`] in memory, for tests: offsets must be multiples of 512; writes and discards
/// are volatile until `flush`; it can be made unavailable to model a backend outage, and (with
/// the `fault-injection` feature) lose power.
#[derive(Default)]
pub struct MemBackend {
    images: Mutex<HashMap<VolumeId, Image>>,
    snapshots: Mutex<HashMap<(VolumeId, String), Image>>,
    down: AtomicBool,
    writes: AtomicU64,
    flushes: AtomicU64,
    /// Volumes another node claimed (see [`MemBackend::fence_off`]).
    fenced: Mutex<std::collections::HashSet<VolumeId>>,
    /// Claims and releases made, in order (`true` for a claim).
    claims: Mutex<Vec<(VolumeId, bool)>>,
    refuse_claims: AtomicBool,
}

impl MemBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every operation fail with [`BackendError::Unavailable`] (`false`) or work again.
    pub fn set_available(&self, available: bool) {
        self.down.store(!available, Ordering::SeqCst);
    }

    /// Models another node claiming `volume`'s image: this backend's writes, discards and
    /// flushes of it fail with [`BackendError::Fenced`] until it claims the image again.
    pub fn fence_off(&self, volume: VolumeId) {
        self.fenced.lock().insert(volume);
    }

    /// Makes claims fail with [`BackendError::Unavailable`] (`true`) or work again.
    pub fn refuse_claims(&self, refuse: bool) {
        self.refuse_claims.store(refuse, Ordering::SeqCst);
    }

    /// The claims (`true`) and releases made so far, in order.
    pub fn claim_log(&self) -> Vec<(VolumeId, bool)> {
        self.claims.lock().clone()
    }

    fn unfenced(&self, volume: VolumeId) -> Result<(), BackendError> {
        if self.fenced.lock().contains(&volume) {
            return Err(BackendError::Fenced { volume });
        }
        Ok(())
    }

    /// The number of `write` calls (each extent of `write_many` counts) and of `flush` calls.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.writes.load(Ordering::Relaxed),
            self.flushes.load(Ordering::Relaxed),
        )
    }

    /// The current contents of a volume's image (what a read would return).
    pub fn contents(&self, volume: VolumeId) -> Option<Vec<u8>> {
        let images = self.images.lock();
        let img = images.get(&volume)?;
        let mut buf = vec![0; img.durable.len()];
        img.current(0, &mut buf);
        Some(buf)
    }

    /// Loses power: each sector written since its volume's last flush survives with
    /// probability one half; the rest are lost.
    #[cfg(feature = "fault-injection")]
    pub fn lose_power(&self, seed: u64) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut images = self.images.lock();
        let mut ids: Vec<VolumeId> = images.keys().copied().collect();
        ids.sort();
        for id in ids {
            let img = images.get_mut(&id).expect("listed");
            let kept: Vec<(usize, Vec<u8>)> = img
                .pending_sectors()
                .into_iter()
                .filter(|_| rng.gen_bool(0.5))
                .map(|(s, data)| (s, data.to_vec()))
                .collect();
            img.pending.clear();
            for (s, data) in kept {
                img.durable[s * SECTOR..(s + 1) * SECTOR].copy_from_slice(&data);
            }
        }
    }

    fn up(&self) -> Result<(), BackendError> {
        if self.down.load(Ordering::SeqCst) {
            Err(BackendError::Unavailable(
                "memory backend is set unavailable".into(),
            ))
        } else {
            Ok(())
        }
    }

    fn with_image<T>(
        &self,
        volume: VolumeId,
        f: impl FnOnce(&mut Image) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        self.up()?;
        let mut images = self.images.lock();
        let img = images
            .get_mut(&volume)
            .ok_or_else(|| BackendError::NotFound {
                what: volume.to_string(),
            })?;
        f(img)
    }
}

fn check_sector(volume: VolumeId, offset: u64, len: u64, size: u64) -> Result<(), BackendError> {
    check_io(volume, size, offset, len)?;
    if !offset.is_multiple_of(SECTOR as u64) || !len.is_multiple_of(SECTOR as u64) {
        return Err(BackendError::OutOfRange {
            volume,
            offset,
            len,
            size,
        });
    }
    Ok(())
}

impl Backend for MemBackend {
    fn create(&self, volume: VolumeId, size: ByteSize) -> Result<(), BackendError> {
        self.up()?;
        check_size(volume, size)?;
        let mut images = self.images.lock();
        if images.contains_key(&volume) {
            return Err(BackendError::Exists {
                what: volume.to_string(),
            });
        }
        images.insert(
            volume,
            Image {
                durable: vec![0; size.0 as usize],
                pending: Vec::new(),
            },
        );
        Ok(())
    }

    fn resize(&self, volume: VolumeId, size: ByteSize) -> Result<(), BackendError> {
        check_size(volume, size)?;
        self.with_image(volume, |img| {
            if (size.0 as usize) < img.durable.len() {
                return Err(BackendError::InvalidSize {
                    volume,
                    size: size.0,
                    reason: "images only grow",
                });
            }
            img.durable.resize(size.0 as usize, 0);
            Ok(())
        })
    }

    fn delete(&self, volume: VolumeId) -> Result<(), BackendError> {
        self.up()?;
        self.snapshots.lock().retain(|(v, _), _| *v != volume);
        self.images
            .lock()
            .remove(&volume)
            .map(|_| ())
            .ok_or_else(|| BackendError::NotFound {
                what: volume.to_string(),
            })
    }

    fn size(&self, volume: VolumeId) -> Result<ByteSize, BackendError> {
        self.with_image(volume, |img| Ok(ByteSize(img.durable.len() as u64)))
    }

    fn read(
        &self,
        volume: VolumeId,
        offset: ByteOffset,
        buf: &mut [u8],
    ) -> Result<(), BackendError> {
        self.with_image(volume, |img| {
            check_sector(volume, offset.0, buf.len() as u64, img.durable.len() as u64)?;
            img.current(offset.0 as usize, buf);
            Ok(())
        })
    }

    fn write(&self, volume: VolumeId, offset: ByteOffset, data: &[u8]) -> Result<(), BackendError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.unfenced(volume)?;
        self.with_image(volume, |img| {
            check_sector(
                volume,
                offset.0,
                data.len() as u64,
                img.durable.len() as u64,
            )?;
            img.put(offset.0 as usize, data);
            Ok(())
        })
    }

    fn discard(
        &self,
        volume: VolumeId,
        offset: ByteOffset,
        len: ByteSize,
    ) -> Result<(), BackendError> {
        self.unfenced(volume)?;
        self.with_image(volume, |img| {
            check_sector(volume, offset.0, len.0, img.durable.len() as u64)?;
            img.put(offset.0 as usize, &vec![0; len.0 as usize]);
            Ok(())
        })
    }

    fn flush(&self, volume: VolumeId) -> Result<(), BackendError> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.unfenced(volume)?;
        self.with_image(volume, |img| {
            img.flush();
            Ok(())
        })
    }

    fn snapshot(&self, volume: VolumeId, name: &str) -> Result<(), BackendError> {
        let snap = self.with_image(volume, |img| Ok(img.snapshot()))?;
        let mut snaps = self.snapshots.lock();
        let key = (volume, name.to_string());
        if snaps.contains_key(&key) {
            return Err(BackendError::Exists {
                what: format!("{volume}@{name}"),
            });
        }
        snaps.insert(key, snap);
        Ok(())
    }

    fn list_snapshots(&self, volume: VolumeId) -> Result<Vec<String>, BackendError> {
        self.with_image(volume, |_| Ok(()))?;
        let mut names: Vec<String> = self
            .snapshots
            .lock()
            .keys()
            .filter(|(v, _)| *v == volume)
            .map(|(_, n)| n.clone())
            .collect();
        names.sort();
        Ok(names)
    }

    fn delete_snapshot(&self, volume: VolumeId, name: &str) -> Result<(), BackendError> {
        self.up()?;
        self.snapshots
            .lock()
            .remove(&(volume, name.to_string()))
            .map(|_| ())
            .ok_or_else(|| BackendError::NotFound {
                what: format!("{volume}@{name}"),
            })
    }

    fn clone_snapshot(
        &self,
        source: VolumeId,
        name: &str,
        target: VolumeId,
    ) -> Result<(), BackendError> {
        self.up()?;
        let snap = self
            .snapshots
            .lock()
            .get(&(source, name.to_string()))
            .cloned()
            .ok_or_else(|| BackendError::NotFound {
                what: format!("{source}@{name}"),
            })?;
        let mut images = self.images.lock();
        if images.contains_key(&target) {
            return Err(BackendError::Exists {
                what: target.to_string(),
            });
        }
        images.insert(target, snap);
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".into()
    }

    fn claim(&self, volume: VolumeId) -> Result<(), BackendError> {
        self.up()?;
        if self.refuse_claims.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable(
                "memory backend refuses claims".into(),
            ));
        }
        self.fenced.lock().remove(&volume);
        self.claims.lock().push((volume, true));
        Ok(())
    }

    fn release_claim(&self, volume: VolumeId) -> Result<(), BackendError> {
        self.claims.lock().push((volume, false));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_writes_read_back_newest_first_before_and_after_a_flush() {
        let b = MemBackend::new();
        let v = VolumeId::random();
        b.create(v, ByteSize(1 << 20)).unwrap();
        b.write(v, ByteOffset(0), &[1; 4096]).unwrap();
        b.write(v, ByteOffset(1024), &[2; 1024]).unwrap();
        b.write(v, ByteOffset(3584), &[3; 1024]).unwrap();
        b.discard(v, ByteOffset(512), ByteSize(512)).unwrap();
        let mut want = vec![1u8; 4608];
        want[512..1024].fill(0);
        want[1024..2048].fill(2);
        want[3584..4608].fill(3);
        let mut got = vec![9u8; 4608];
        b.read(v, ByteOffset(0), &mut got).unwrap();
        assert_eq!(got, want);
        // A read inside one write, starting in the middle of it.
        let mut part = vec![0u8; 1536];
        b.read(v, ByteOffset(1536), &mut part).unwrap();
        assert_eq!(part, want[1536..3072]);
        b.flush(v).unwrap();
        b.read(v, ByteOffset(0), &mut got).unwrap();
        assert_eq!(got, want);
    }
}

//! The commands that compare or change data beyond plain reads and writes: VERIFY, UNMAP,
//! WRITE SAME, COMPARE AND WRITE.

use alcubierre_block::{HostId, Op};
use alcubierre_types::{BlockCount, Lba};
use bytes::Bytes;

use super::{Lun, Outcome, Sense, MAX_CAW_BLOCKS, MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS};

impl Lun {
    pub(super) async fn verify(
        &self,
        host: &HostId,
        cdb: &[u8],
        lba: u64,
        n: u64,
        data: Bytes,
    ) -> Result<Outcome, Outcome> {
        if cdb[1] >> 5 != 0 {
            return Err(Outcome::check(Sense::INVALID_FIELD));
        }
        self.check_lba((lba, n))?;
        let bytchk = (cdb[1] >> 1) & 3;
        if bytchk == 0 || n == 0 {
            return Ok(Outcome::good(Bytes::new()));
        }
        if bytchk == 2 {
            return Err(Outcome::check(Sense::INVALID_FIELD));
        }
        let have = self.read(host, lba, n).await?;
        let bs = self.block_size() as usize;
        let want: Vec<u8> = if bytchk == 3 {
            data.iter().copied().cycle().take(n as usize * bs).collect()
        } else {
            data.to_vec()
        };
        if want.len() != have.len() {
            return Err(Outcome::check(Sense::INVALID_FIELD));
        }
        match have.iter().zip(&want).position(|(a, b)| a != b) {
            None => Ok(Outcome::good(Bytes::new())),
            Some(at) => Err(Outcome::check(Sense {
                info: Some(at as u32),
                ..Sense::MISCOMPARE
            })),
        }
    }

    pub(super) async fn unmap(
        &self,
        host: &HostId,
        cdb: &[u8],
        data: Bytes,
    ) -> Result<Outcome, Outcome> {
        if cdb[1] & 1 != 0 {
            // ANCHOR is not supported.
            return Err(Outcome::check(Sense::INVALID_FIELD));
        }
        if data.is_empty() {
            return Ok(Outcome::good(Bytes::new()));
        }
        if data.len() < 8 {
            return Err(Outcome::check(Sense::PARAMETER_LENGTH));
        }
        let desc_len = u16::from_be_bytes([data[2], data[3]]) as usize;
        if !desc_len.is_multiple_of(16) || 8 + desc_len > data.len() {
            return Err(Outcome::check(Sense::PARAMETER_LENGTH));
        }
        if desc_len / 16 > MAX_UNMAP_DESCRIPTORS as usize {
            return Err(Outcome::check(Sense::INVALID_PARAMETER));
        }
        let mut ranges = Vec::new();
        for d in data[8..8 + desc_len].chunks(16) {
            let lba = u64::from_be_bytes(d[..8].try_into().expect("8"));
            let n = u64::from(u32::from_be_bytes(d[8..12].try_into().expect("4")));
            if n > u64::from(MAX_UNMAP_BLOCKS) {
                return Err(Outcome::check(Sense::INVALID_PARAMETER));
            }
            self.check_lba((lba, n))?;
            ranges.push((lba, n));
        }
        for (lba, n) in ranges {
            if n > 0 {
                self.io(
                    host,
                    Op::Unmap {
                        lba: Lba(lba),
                        count: BlockCount(n),
                    },
                )
                .await?;
            }
        }
        Ok(Outcome::good(Bytes::new()))
    }

    pub(super) async fn write_same(
        &self,
        host: &HostId,
        cdb: &[u8],
        lba: u64,
        n: u64,
        data: Bytes,
    ) -> Result<Outcome, Outcome> {
        if cdb[1] >> 5 != 0 || cdb[1] & 0x16 != 0 {
            // No protection information; ANCHOR and the obsolete bits are not supported.
            return Err(Outcome::check(Sense::INVALID_FIELD));
        }
        let ndob = cdb[0] == 0x93 && cdb[1] & 1 != 0;
        self.check_lba((lba, n))?;
        if n == 0 || n > u64::from(MAX_UNMAP_BLOCKS).min(self.max_transfer_blocks()) {
            // A length of 0 would mean "to the end" (SBC-4 5.50) only when allowed.
            return Err(Outcome::check(Sense::INVALID_FIELD));
        }
        let bs = self.block_size() as usize;
        let zero = ndob || data.iter().all(|&b| b == 0);
        if !ndob && data.len() != bs {
            return Err(Outcome::check(Sense::INVALID_FIELD));
        }
        if zero {
            let op = if cdb[1] & 0x08 != 0 {
                Op::Unmap {
                    lba: Lba(lba),
                    count: BlockCount(n),
                }
            } else {
                Op::WriteZeroes {
                    lba: Lba(lba),
                    count: BlockCount(n),
                }
            };
            self.io(host, op).await?;
            return Ok(Outcome::good(Bytes::new()));
        }
        let chunk = self.max_transfer_blocks().clamp(1, 256);
        let mut at = lba;
        while at < lba + n {
            let k = chunk.min(lba + n - at);
            let buf: Vec<u8> = data.iter().copied().cycle().take(k as usize * bs).collect();
            self.io(
                host,
                Op::Write {
                    lba: Lba(at),
                    data: Bytes::from(buf),
                },
            )
            .await?;
            at += k;
        }
        Ok(Outcome::good(Bytes::new()))
    }

    pub(super) async fn compare_and_write(
        &self,
        host: &HostId,
        cdb: &[u8],
        data: Bytes,
    ) -> Result<Outcome, Outcome> {
        if cdb[1] >> 5 != 0 {
            return Err(Outcome::check(Sense::INVALID_FIELD));
        }
        let lba = u64::from_be_bytes(cdb[2..10].try_into().expect("8"));
        let n = u64::from(cdb[13]);
        if n == 0 {
            return Ok(Outcome::good(Bytes::new()));
        }
        if n > u64::from(MAX_CAW_BLOCKS) {
            return Err(Outcome::check(Sense::INVALID_FIELD));
        }
        self.check_lba((lba, n))?;
        let len = n as usize * self.block_size() as usize;
        if data.len() != 2 * len {
            return Err(Outcome::check(Sense::INVALID_FIELD));
        }
        let _one = self.caw.lock().await;
        let have = self.read(host, lba, n).await?;
        if let Some(at) = have.iter().zip(&data[..len]).position(|(a, b)| a != b) {
            return Err(Outcome::check(Sense {
                info: Some(at as u32),
                ..Sense::MISCOMPARE
            }));
        }
        self.io(
            host,
            Op::Write {
                lba: Lba(lba),
                data: data.slice(len..),
            },
        )
        .await?;
        Ok(Outcome::good(Bytes::new()))
    }
}

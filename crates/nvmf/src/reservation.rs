//! NVMe reservations for one namespace (Base 1.4 section 8.8): registrants keyed by Host
//! Identifier, one reservation of six types, and the access table of figure 403. Pure state; the
//! replication issue makes it cluster-wide.

use crate::status::Status;

/// Reservation types (Base 1.4 figure 401).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResvType {
    /// Write Exclusive.
    WriteExclusive = 1,
    /// Exclusive Access.
    ExclusiveAccess = 2,
    /// Write Exclusive - Registrants Only.
    WriteExclusiveRegOnly = 3,
    /// Exclusive Access - Registrants Only.
    ExclusiveAccessRegOnly = 4,
    /// Write Exclusive - All Registrants.
    WriteExclusiveAllReg = 5,
    /// Exclusive Access - All Registrants.
    ExclusiveAccessAllReg = 6,
}

impl ResvType {
    /// Parses RTYPE; `None` for reserved values.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::WriteExclusive,
            2 => Self::ExclusiveAccess,
            3 => Self::WriteExclusiveRegOnly,
            4 => Self::ExclusiveAccessRegOnly,
            5 => Self::WriteExclusiveAllReg,
            6 => Self::ExclusiveAccessAllReg,
            _ => return None,
        })
    }

    fn all_registrants(self) -> bool {
        matches!(
            self,
            Self::WriteExclusiveAllReg | Self::ExclusiveAccessAllReg
        )
    }

    fn registrants_have_access(self) -> bool {
        !matches!(self, Self::WriteExclusive | Self::ExclusiveAccess)
    }

    fn exclusive_access(self) -> bool {
        matches!(
            self,
            Self::ExclusiveAccess | Self::ExclusiveAccessRegOnly | Self::ExclusiveAccessAllReg
        )
    }
}

/// A 128-bit Host Identifier (from the Connect command's HOSTID).
pub type HostId = [u8; 16];

#[derive(Clone, Debug)]
struct Registrant {
    host: HostId,
    key: u64,
    cntlid: u16,
}

/// The reservation state of one namespace.
#[derive(Clone, Debug, Default)]
pub struct Reservations {
    generation: u32,
    registrants: Vec<Registrant>,
    /// The holder's host and the type; with all-registrants types every registrant holds it.
    holder: Option<(HostId, ResvType)>,
}

impl Reservations {
    fn find(&self, host: &HostId) -> Option<usize> {
        self.registrants.iter().position(|r| &r.host == host)
    }

    fn is_holder(&self, host: &HostId) -> bool {
        match self.holder {
            Some((_, t)) if t.all_registrants() => self.find(host).is_some(),
            Some((h, _)) => &h == host,
            None => false,
        }
    }

    /// The current reservation type, if any.
    pub fn reservation(&self) -> Option<ResvType> {
        self.holder.map(|(_, t)| t)
    }

    /// The generation counter (incremented by Register and Preempt).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Whether `host` may read (`write == false`) or write the namespace (figure 403).
    pub fn check_io(&self, host: &HostId, write: bool) -> Result<(), Status> {
        let Some((_, t)) = self.holder else {
            return Ok(());
        };
        if !write && !t.exclusive_access() {
            return Ok(());
        }
        let allowed = if t.registrants_have_access() {
            self.find(host).is_some()
        } else {
            self.is_holder(host)
        };
        if allowed {
            Ok(())
        } else {
            Err(Status::RESERVATION_CONFLICT)
        }
    }

    fn key_ok(&self, i: usize, iekey: bool, crkey: u64) -> bool {
        iekey || self.registrants[i].key == crkey
    }

    /// Reservation Register (section 6.11): RREGA 0 register, 1 unregister, 2 replace.
    pub fn register(
        &mut self,
        host: HostId,
        cntlid: u16,
        rrega: u8,
        iekey: bool,
        crkey: u64,
        nrkey: u64,
    ) -> Result<(), Status> {
        let me = self.find(&host);
        match (rrega, me) {
            (0, None) => {
                self.registrants.push(Registrant {
                    host,
                    key: nrkey,
                    cntlid,
                });
            }
            (0, Some(i)) => {
                return if self.registrants[i].key == nrkey {
                    Ok(())
                } else {
                    Err(Status::RESERVATION_CONFLICT)
                };
            }
            (1, Some(i)) => {
                if !self.key_ok(i, iekey, crkey) {
                    return Err(Status::RESERVATION_CONFLICT);
                }
                let was_holder = self.is_holder(&host);
                self.registrants.remove(i);
                if let Some((_, t)) = self.holder {
                    if (was_holder && !t.all_registrants())
                        || (t.all_registrants() && self.registrants.is_empty())
                    {
                        self.holder = None;
                    }
                }
            }
            (2, Some(i)) => {
                if !self.key_ok(i, iekey, crkey) {
                    return Err(Status::RESERVATION_CONFLICT);
                }
                self.registrants[i].key = nrkey;
            }
            (2, None) if iekey => {
                self.registrants.push(Registrant {
                    host,
                    key: nrkey,
                    cntlid,
                });
            }
            (1 | 2, None) => return Err(Status::RESERVATION_CONFLICT),
            _ => return Err(Status::INVALID_FIELD),
        }
        self.generation = self.generation.wrapping_add(1);
        Ok(())
    }

    /// Reservation Acquire (section 6.13): RACQA 0 acquire, 1 preempt, 2 preempt and abort.
    pub fn acquire(
        &mut self,
        host: HostId,
        racqa: u8,
        crkey: u64,
        prkey: u64,
        rtype: u8,
    ) -> Result<(), Status> {
        let rtype = ResvType::from_u8(rtype).ok_or(Status::INVALID_FIELD)?;
        let Some(i) = self.find(&host) else {
            return Err(Status::RESERVATION_CONFLICT);
        };
        if self.registrants[i].key != crkey {
            return Err(Status::RESERVATION_CONFLICT);
        }
        match racqa {
            0 => match self.holder {
                None => {
                    self.holder = Some((host, rtype));
                    Ok(())
                }
                Some((_, t)) if t == rtype && self.is_holder(&host) => Ok(()),
                Some(_) => Err(Status::RESERVATION_CONFLICT),
            },
            1 | 2 => {
                match self.holder {
                    Some((_, t)) if t.all_registrants() && prkey == 0 => {
                        self.registrants.retain(|r| r.host == host);
                        self.holder = Some((host, rtype));
                    }
                    Some((h, _)) if !rtype_all(self.holder) && self.key_of(&h) == Some(prkey) => {
                        self.registrants
                            .retain(|r| r.host == host || r.key != prkey);
                        self.holder = Some((host, rtype));
                    }
                    _ => {
                        if prkey == 0 {
                            return Err(Status::INVALID_FIELD);
                        }
                        self.registrants
                            .retain(|r| r.host == host || r.key != prkey);
                        if let Some((h, t)) = self.holder {
                            if !t.all_registrants() && self.find(&h).is_none() {
                                self.holder = None;
                            }
                        }
                    }
                }
                self.generation = self.generation.wrapping_add(1);
                Ok(())
            }
            _ => Err(Status::INVALID_FIELD),
        }
    }

    fn key_of(&self, host: &HostId) -> Option<u64> {
        self.find(host).map(|i| self.registrants[i].key)
    }

    /// Reservation Release (section 6.14): RRELA 0 release, 1 clear.
    pub fn release(
        &mut self,
        host: HostId,
        rrela: u8,
        crkey: u64,
        rtype: u8,
    ) -> Result<(), Status> {
        let Some(i) = self.find(&host) else {
            return Err(Status::RESERVATION_CONFLICT);
        };
        if self.registrants[i].key != crkey {
            return Err(Status::RESERVATION_CONFLICT);
        }
        match rrela {
            0 => {
                if !self.is_holder(&host) {
                    return Ok(());
                }
                let (_, t) = self.holder.expect("holder");
                if t as u8 != rtype {
                    return Err(Status::INVALID_FIELD);
                }
                self.holder = None;
                Ok(())
            }
            1 => {
                self.registrants.clear();
                self.holder = None;
                self.generation = self.generation.wrapping_add(1);
                Ok(())
            }
            _ => Err(Status::INVALID_FIELD),
        }
    }

    /// The Reservation Status data structure (figures 396-399), extended (128-bit host ids)
    /// when `eds`.
    pub fn report(&self, eds: bool) -> Vec<u8> {
        let (hdr, ent) = if eds { (64, 64) } else { (24, 24) };
        let mut b = vec![0u8; hdr + ent * self.registrants.len()];
        b[0..4].copy_from_slice(&self.generation.to_le_bytes());
        b[4] = self.reservation().map_or(0, |t| t as u8);
        b[5..7].copy_from_slice(&(self.registrants.len() as u16).to_le_bytes());
        for (n, r) in self.registrants.iter().enumerate() {
            let e = &mut b[hdr + n * ent..hdr + (n + 1) * ent];
            e[0..2].copy_from_slice(&r.cntlid.to_le_bytes());
            e[2] = self.is_holder(&r.host) as u8;
            if eds {
                e[8..16].copy_from_slice(&r.key.to_le_bytes());
                e[16..32].copy_from_slice(&r.host);
            } else {
                e[8..16].copy_from_slice(&r.host[8..16]);
                e[16..24].copy_from_slice(&r.key.to_le_bytes());
            }
        }
        b
    }
}

fn rtype_all(h: Option<(HostId, ResvType)>) -> bool {
    h.is_some_and(|(_, t)| t.all_registrants())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: HostId = [1; 16];
    const B: HostId = [2; 16];

    #[test]
    fn register_acquire_release_and_access() {
        // Base 1.4 sections 8.8.2-8.8.4 and the access table of figure 403.
        let mut r = Reservations::default();
        assert_eq!(
            r.acquire(A, 0, 1, 0, 1),
            Err(Status::RESERVATION_CONFLICT),
            "acquire needs a registration"
        );
        r.register(A, 1, 0, false, 0, 0xa).unwrap();
        r.register(B, 2, 0, false, 0, 0xb).unwrap();
        assert_eq!(r.generation(), 2);
        // Registering again with another key conflicts; with the same key succeeds.
        assert_eq!(
            r.register(A, 1, 0, false, 0, 0xc),
            Err(Status::RESERVATION_CONFLICT)
        );
        r.register(A, 1, 0, false, 0, 0xa).unwrap();
        // A wrong current key is refused.
        assert_eq!(
            r.acquire(A, 0, 0xb, 0, 1),
            Err(Status::RESERVATION_CONFLICT)
        );
        r.acquire(A, 0, 0xa, 0, ResvType::WriteExclusive as u8)
            .unwrap();
        assert_eq!(
            r.acquire(B, 0, 0xb, 0, 1),
            Err(Status::RESERVATION_CONFLICT)
        );
        // Write Exclusive: everyone reads, only the holder writes.
        r.check_io(&B, false).unwrap();
        assert_eq!(r.check_io(&B, true), Err(Status::RESERVATION_CONFLICT));
        r.check_io(&A, true).unwrap();
        // Release with the wrong type is an invalid field; the right type releases.
        assert_eq!(r.release(A, 0, 0xa, 2), Err(Status::INVALID_FIELD));
        r.release(A, 0, 0xa, 1).unwrap();
        r.check_io(&B, true).unwrap();
    }

    #[test]
    fn exclusive_access_registrants_only() {
        let mut r = Reservations::default();
        let c: HostId = [3; 16];
        r.register(A, 1, 0, false, 0, 0xa).unwrap();
        r.register(B, 2, 0, false, 0, 0xb).unwrap();
        r.acquire(A, 0, 0xa, 0, ResvType::ExclusiveAccessRegOnly as u8)
            .unwrap();
        r.check_io(&B, false).unwrap();
        r.check_io(&B, true).unwrap();
        assert_eq!(r.check_io(&c, false), Err(Status::RESERVATION_CONFLICT));
    }

    #[test]
    fn preempt_takes_over_and_removes_the_preempted() {
        // Section 8.8.4.2: preempting the holder's key moves the reservation and unregisters it.
        let mut r = Reservations::default();
        r.register(A, 1, 0, false, 0, 0xa).unwrap();
        r.register(B, 2, 0, false, 0, 0xb).unwrap();
        r.acquire(A, 0, 0xa, 0, ResvType::ExclusiveAccess as u8)
            .unwrap();
        r.acquire(B, 1, 0xb, 0xa, ResvType::ExclusiveAccess as u8)
            .unwrap();
        assert_eq!(r.check_io(&A, false), Err(Status::RESERVATION_CONFLICT));
        r.check_io(&B, true).unwrap();
        let rep = r.report(false);
        assert_eq!(
            u16::from_le_bytes([rep[5], rep[6]]),
            1,
            "A was unregistered"
        );
        assert_eq!(rep[4], 2);
    }

    #[test]
    fn unregistering_the_holder_releases_and_clear_wipes() {
        let mut r = Reservations::default();
        r.register(A, 1, 0, false, 0, 0xa).unwrap();
        r.acquire(A, 0, 0xa, 0, 1).unwrap();
        r.register(A, 1, 1, false, 0xa, 0).unwrap();
        assert_eq!(r.reservation(), None);
        r.register(A, 1, 0, false, 0, 0xa).unwrap();
        r.register(B, 2, 0, false, 0, 0xb).unwrap();
        r.acquire(B, 0, 0xb, 0, ResvType::WriteExclusiveAllReg as u8)
            .unwrap();
        // All-registrants: every registrant holds it.
        r.check_io(&A, true).unwrap();
        r.release(A, 1, 0xa, 0).unwrap();
        assert_eq!(r.reservation(), None);
        assert_eq!(r.report(true).len(), 64);
    }

    #[test]
    fn replace_key_and_ignore_existing_key() {
        let mut r = Reservations::default();
        r.register(A, 1, 0, false, 0, 0xa).unwrap();
        assert_eq!(
            r.register(A, 1, 2, false, 0xdead, 0xc),
            Err(Status::RESERVATION_CONFLICT)
        );
        r.register(A, 1, 2, true, 0xdead, 0xc).unwrap();
        r.acquire(A, 0, 0xc, 0, 1).unwrap();
        assert_eq!(r.register(A, 1, 7, false, 0, 0), Err(Status::INVALID_FIELD));
    }
}

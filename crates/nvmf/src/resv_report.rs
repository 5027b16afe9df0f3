//! The Reservation Status data structure Reservation Report returns.

use alcubierre_block::Reservations;

/// The Reservation Status data structure (figures 396-399), extended (128-bit host ids) when
/// `eds`.
pub(crate) fn reservation_status(r: &Reservations, eds: bool) -> Vec<u8> {
    let (hdr, ent) = if eds { (64, 64) } else { (24, 24) };
    let regs = r.registrants();
    let mut b = vec![0u8; hdr + ent * regs.len()];
    b[0..4].copy_from_slice(&r.generation().to_le_bytes());
    b[4] = r.reservation().map_or(0, |t| t as u8);
    b[5..7].copy_from_slice(&(regs.len() as u16).to_le_bytes());
    for (n, reg) in regs.iter().enumerate() {
        let e = &mut b[hdr + n * ent..hdr + (n + 1) * ent];
        e[0..2].copy_from_slice(&reg.cntlid.to_le_bytes());
        e[2] = r.holds(&reg.host) as u8;
        if eds {
            e[8..16].copy_from_slice(&reg.key.to_le_bytes());
            e[16..32].copy_from_slice(&reg.host);
        } else {
            e[8..16].copy_from_slice(&reg.host[8..16]);
            e[16..24].copy_from_slice(&reg.key.to_le_bytes());
        }
    }
    b
}

//! REPORT SUPPORTED OPERATION CODES (SPC-4 section 6.35): the commands the SCSI layer
//! implements, with their CDB lengths and usage masks.

use crate::sense::{Outcome, Sense};

/// `(operation code, service action, CDB length)` of every command implemented.
const SUPPORTED: &[(u8, Option<u16>, u8)] = &[
    (0x00, None, 6),        // TEST UNIT READY
    (0x03, None, 6),        // REQUEST SENSE
    (0x08, None, 6),        // READ (6)
    (0x0a, None, 6),        // WRITE (6)
    (0x12, None, 6),        // INQUIRY
    (0x15, None, 6),        // MODE SELECT (6)
    (0x16, None, 6),        // RESERVE (6)
    (0x17, None, 6),        // RELEASE (6)
    (0x1a, None, 6),        // MODE SENSE (6)
    (0x1b, None, 6),        // START STOP UNIT
    (0x1e, None, 6),        // PREVENT ALLOW MEDIUM REMOVAL
    (0x25, None, 10),       // READ CAPACITY (10)
    (0x28, None, 10),       // READ (10)
    (0x2a, None, 10),       // WRITE (10)
    (0x2e, None, 10),       // WRITE AND VERIFY (10)
    (0x2f, None, 10),       // VERIFY (10)
    (0x34, None, 10),       // PRE-FETCH (10)
    (0x35, None, 10),       // SYNCHRONIZE CACHE (10)
    (0x37, None, 10),       // READ DEFECT DATA (10)
    (0x41, None, 10),       // WRITE SAME (10)
    (0x42, None, 10),       // UNMAP
    (0x55, None, 10),       // MODE SELECT (10)
    (0x5a, None, 10),       // MODE SENSE (10)
    (0x5e, Some(0x00), 10), // PERSISTENT RESERVE IN, READ KEYS
    (0x5e, Some(0x01), 10), // PERSISTENT RESERVE IN, READ RESERVATION
    (0x5e, Some(0x02), 10), // PERSISTENT RESERVE IN, REPORT CAPABILITIES
    (0x5e, Some(0x03), 10), // PERSISTENT RESERVE IN, READ FULL STATUS
    (0x5f, Some(0x00), 10), // PERSISTENT RESERVE OUT, REGISTER
    (0x5f, Some(0x01), 10), // PERSISTENT RESERVE OUT, RESERVE
    (0x5f, Some(0x02), 10), // PERSISTENT RESERVE OUT, RELEASE
    (0x5f, Some(0x03), 10), // PERSISTENT RESERVE OUT, CLEAR
    (0x5f, Some(0x04), 10), // PERSISTENT RESERVE OUT, PREEMPT
    (0x5f, Some(0x05), 10), // PERSISTENT RESERVE OUT, PREEMPT AND ABORT
    (0x5f, Some(0x06), 10), // PERSISTENT RESERVE OUT, REGISTER AND IGNORE EXISTING KEY
    (0x88, None, 16),       // READ (16)
    (0x89, None, 16),       // COMPARE AND WRITE
    (0x83, Some(0x00), 16), // EXTENDED COPY (LID1)
    (0x84, Some(0x00), 16), // RECEIVE COPY RESULTS, COPY STATUS
    (0x84, Some(0x03), 16), // RECEIVE COPY RESULTS, OPERATING PARAMETERS
    (0x8a, None, 16),       // WRITE (16)
    (0x8e, None, 16),       // WRITE AND VERIFY (16)
    (0x8f, None, 16),       // VERIFY (16)
    (0x90, None, 16),       // PRE-FETCH (16)
    (0x91, None, 16),       // SYNCHRONIZE CACHE (16)
    (0x93, None, 16),       // WRITE SAME (16)
    (0x9e, Some(0x10), 16), // READ CAPACITY (16)
    (0x9e, Some(0x12), 16), // GET LBA STATUS (16)
    (0xa0, None, 12),       // REPORT LUNS
    (0xa3, Some(0x0a), 12), // REPORT TARGET PORT GROUPS
    (0xa3, Some(0x0c), 12), // REPORT SUPPORTED OPERATION CODES
    (0xa8, None, 12),       // READ (12)
    (0xaa, None, 12),       // WRITE (12)
    (0xae, None, 12),       // WRITE AND VERIFY (12)
    (0xaf, None, 12),       // VERIFY (12)
    (0xb7, None, 12),       // READ DEFECT DATA (12)
];

/// The CDB usage data of a command: its operation code, its service action in byte 1 where it
/// has one, every other bit marked as used but the control byte's (no NACA, no link).
fn usage(op: u8, sa: Option<u16>, len: u8) -> Vec<u8> {
    let mut u = vec![0xffu8; len as usize];
    u[0] = op;
    if let Some(sa) = sa {
        u[1] = 0xe0 | sa as u8;
    }
    u[len as usize - 1] = 0x00;
    u
}

/// The command timeouts descriptor (no timeouts reported).
fn timeouts() -> [u8; 12] {
    let mut t = [0u8; 12];
    t[1] = 0x0a;
    t
}

/// The parameter data for `cdb` (before truncation to the allocation length).
pub fn report(cdb: &[u8]) -> Result<Vec<u8>, Outcome> {
    let rctd = cdb[2] & 0x80 != 0;
    let options = cdb[2] & 0x07;
    let op = cdb[3];
    let sa = u16::from_be_bytes([cdb[4], cdb[5]]);
    match options {
        0 => {
            let mut body = Vec::new();
            for &(o, s, len) in SUPPORTED {
                body.push(o);
                body.push(0);
                body.extend_from_slice(&s.unwrap_or(0).to_be_bytes());
                body.push(0);
                body.push(if rctd { 0x02 } else { 0 } | u8::from(s.is_some()));
                body.extend_from_slice(&u16::from(len).to_be_bytes());
                if rctd {
                    body.extend_from_slice(&timeouts());
                }
            }
            let mut d = (body.len() as u32).to_be_bytes().to_vec();
            d.extend_from_slice(&body);
            Ok(d)
        }
        1 | 2 => {
            let entry = SUPPORTED.iter().find(|(o, _, _)| *o == op);
            // Option 1 is for commands without service actions, 2 for those with.
            if let Some((_, s, _)) = entry {
                if (options == 1) == s.is_some() {
                    return Err(Outcome::check(Sense::INVALID_FIELD));
                }
            }
            let found = SUPPORTED
                .iter()
                .find(|(o, s, _)| *o == op && (options == 1 || *s == Some(sa)));
            let mut d = vec![0u8, if rctd { 0x80 } else { 0 }];
            match found {
                Some(&(o, s, len)) => {
                    d[1] |= 0x03; // supported, as the standard says
                    d.extend_from_slice(&u16::from(len).to_be_bytes());
                    d.extend_from_slice(&usage(o, s, len));
                }
                None => {
                    d[1] |= 0x01; // not supported
                    d.extend_from_slice(&[0, 0]);
                }
            }
            if rctd {
                d.extend_from_slice(&timeouts());
            }
            Ok(d)
        }
        _ => Err(Outcome::check(Sense::INVALID_FIELD)),
    }
}

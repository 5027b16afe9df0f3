//! PERSISTENT RESERVE IN / OUT (SPC-4 sections 6.15-6.16) on the volume's reservations
//! (`alcubierre_block::resv`, the same state NVMe reservations use, kept by the volume's
//! primary and saved in the store: cluster-wide, and they survive a failover). The I_T nexus
//! is the host identity (initiator name and ISID).
//!
//! PR OUT service actions map onto the NVMe commands: REGISTER and REGISTER AND IGNORE
//! EXISTING KEY onto Register (register, unregister or replace, by the current state), RESERVE
//! onto Acquire, RELEASE and CLEAR onto Release, PREEMPT (AND ABORT) onto Acquire's preempt.
//! REGISTER AND MOVE is not supported (INVALID FIELD IN CDB).

use alcubierre_block::{BlockDevice, BlockError, HostId, Reservations, ResvCommand};
use bytes::Bytes;

use crate::sense::{key, status, Outcome, Sense};

fn fail(e: &BlockError) -> Outcome {
    match e {
        BlockError::ReservationConflict => Outcome {
            status: status::RESERVATION_CONFLICT,
            sense: None,
            data: Bytes::new(),
        },
        BlockError::InvalidField(f) if f == "RTYPE" => Outcome::check(Sense {
            key: key::ILLEGAL_REQUEST,
            asc: 0x26,
            ascq: 0x04, // INVALID RELEASE OF PERSISTENT RESERVATION
            info: None,
            command: None,
        }),
        BlockError::InvalidField(_) => Outcome::check(Sense::INVALID_FIELD),
        _ => Outcome::check(Sense::INTERNAL_FAILURE),
    }
}

async fn run(
    dev: &dyn BlockDevice,
    host: HostId,
    cmd: ResvCommand,
) -> Result<Reservations, Outcome> {
    dev.reserve(host, 0, cmd).await.map_err(|e| fail(&e))
}

/// The reservation model's types (NVMe's numbering, 1-6) and SCSI's PR types (SPC-4 table
/// 169), in the same order.
const SCSI_TYPES: [u8; 6] = [1, 3, 5, 6, 7, 8];

/// The SCSI type of a model type, and whether every registrant holds it.
fn scsi_type(t: alcubierre_block::resv::ResvType) -> (u8, bool) {
    let i = (t as usize).clamp(1, 6) - 1;
    (SCSI_TYPES[i], i >= 4)
}

/// A unit attention a PR OUT command leaves for other I_T nexuses (SPC-4 5.14.11): `sense` for
/// each of `hosts`, on whichever node their nexus is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The nexuses told.
    pub hosts: Vec<HostId>,
    /// UNIT ATTENTION with RESERVATIONS PREEMPTED, RELEASED or REGISTRATIONS PREEMPTED.
    pub sense: Sense,
}

/// What `host`'s PR OUT changed for the other registrants, from the state before and after:
/// a CLEAR preempts every reservation and registration (RESERVATIONS PREEMPTED), a PREEMPT
/// removes the preempted registrations (REGISTRATIONS PREEMPTED), and releasing a reservation
/// that every registrant or the registrants only held tells those left (RESERVATIONS
/// RELEASED).
fn notices(sa: u8, host: &HostId, before: &Reservations, after: &Reservations) -> Vec<Notice> {
    let others = |st: &Reservations| -> Vec<HostId> {
        st.registrants()
            .iter()
            .map(|r| r.host)
            .filter(|h| h != host)
            .collect()
    };
    let ua = |ascq: u8| Sense::unit_attention(0x2a, ascq);
    let (hosts, sense) = match sa {
        3 => (others(before), ua(0x03)),
        4 | 5 => {
            let gone = others(before)
                .into_iter()
                .filter(|h| !after.registrants().iter().any(|r| r.host == *h))
                .collect();
            (gone, ua(0x05))
        }
        // Only a reservation the registrants held (not WE or EA) is announced as released.
        2 if before
            .reservation()
            .is_some_and(|t| !matches!(t as u8, 1 | 2))
            && after.reservation().is_none() =>
        {
            (others(after), ua(0x04))
        }
        _ => return Vec::new(),
    };
    if hosts.is_empty() {
        return Vec::new();
    }
    vec![Notice { hosts, sense }]
}

/// `host`'s registered key.
fn key_of(st: &Reservations, host: &HostId) -> Option<u64> {
    st.registrants()
        .iter()
        .find(|r| r.host == *host)
        .map(|r| r.key)
}

/// PERSISTENT RESERVE IN: the parameter data (before the allocation length cut).
pub async fn reserve_in(
    dev: &dyn BlockDevice,
    host: HostId,
    cdb: &[u8],
) -> Result<Vec<u8>, Outcome> {
    let sa = cdb[1] & 0x1f;
    if sa == 2 {
        // REPORT CAPABILITIES: no CRH, no SIP_C/ATP_C/PTPL_C; TMV with every type.
        let mut d = vec![0u8; 8];
        d[1] = 8;
        d[3] = 0x80; // TMV
        d[4] = 0xea; // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
        d[5] = 0x01; // EX_AC_AR
        return Ok(d);
    }
    let st = run(dev, host, ResvCommand::Report).await?;
    let mut d = st.generation().to_be_bytes().to_vec();
    match sa {
        0 => {
            // READ KEYS
            let keys: Vec<u8> = st
                .registrants()
                .iter()
                .flat_map(|r| r.key.to_be_bytes())
                .collect();
            d.extend_from_slice(&(keys.len() as u32).to_be_bytes());
            d.extend_from_slice(&keys);
        }
        1 => {
            // READ RESERVATION
            let holder = st.registrants().iter().find(|r| st.holds(&r.host));
            match (st.reservation(), holder) {
                (Some(t), Some(h)) => {
                    d.extend_from_slice(&16u32.to_be_bytes());
                    // The model's types (NVMe numbering) as SCSI's; all-registrants types
                    // report key 0.
                    let (scsi_type, all) = scsi_type(t);
                    let key = if all { 0 } else { h.key };
                    d.extend_from_slice(&key.to_be_bytes());
                    d.extend_from_slice(&[0, 0, 0, 0, 0, scsi_type, 0, 0]);
                }
                _ => d.extend_from_slice(&0u32.to_be_bytes()),
            }
        }
        3 => {
            // READ FULL STATUS. The reservation state keeps each nexus's 128-bit identity,
            // not its initiator name, so each TransportID names it as "naa.<identity>" (a
            // valid iSCSI name, unique per nexus; not the initiator's own name).
            let mut body = Vec::new();
            for r in st.registrants() {
                let holder = st.holds(&r.host);
                body.extend_from_slice(&r.key.to_be_bytes());
                body.extend_from_slice(&[0, 0, 0, 0]);
                body.push(u8::from(holder));
                let t = st.reservation().map_or(0, |t| scsi_type(t).0);
                body.push(if holder { t } else { 0 });
                body.extend_from_slice(&[0, 0, 0, 0]);
                body.extend_from_slice(&1u16.to_be_bytes()); // relative target port 1
                let name: String = std::iter::once("naa.".to_string())
                    .chain(r.host.iter().map(|b| format!("{b:02x}")))
                    .collect();
                let mut tid = vec![0x05, 0];
                let mut n = name.into_bytes();
                n.push(0);
                while !n.len().is_multiple_of(4) {
                    n.push(0);
                }
                tid.extend_from_slice(&(n.len() as u16).to_be_bytes());
                tid.extend_from_slice(&n);
                body.extend_from_slice(&(tid.len() as u32).to_be_bytes());
                body.extend_from_slice(&tid);
            }
            d.extend_from_slice(&(body.len() as u32).to_be_bytes());
            d.extend_from_slice(&body);
        }
        _ => return Err(Outcome::check(Sense::INVALID_FIELD)),
    }
    Ok(d)
}

/// PERSISTENT RESERVE OUT with its parameter list `data`.
pub async fn reserve_out(
    dev: &dyn BlockDevice,
    host: HostId,
    cdb: &[u8],
    data: &[u8],
) -> Result<Vec<Notice>, Outcome> {
    let sa = cdb[1] & 0x1f;
    let rtype = cdb[2] & 0x0f;
    let scope = cdb[2] >> 4;
    let len = u32::from_be_bytes(cdb[5..9].try_into().expect("4")) as usize;
    if len != 24 || data.len() < 24 {
        return Err(Outcome::check(Sense::PARAMETER_LENGTH));
    }
    let key = u64::from_be_bytes(data[0..8].try_into().expect("8"));
    let sa_key = u64::from_be_bytes(data[8..16].try_into().expect("8"));
    let flags = data[20];
    if flags & 0x0d != 0 {
        // SPEC_I_PT, ALL_TG_PT and APTPL are not supported.
        return Err(Outcome::check(Sense::INVALID_PARAMETER));
    }
    let needs_type = matches!(sa, 1 | 2 | 4 | 5);
    if needs_type && (scope != 0 || !SCSI_TYPES.contains(&rtype)) {
        return Err(Outcome::check(Sense::INVALID_FIELD));
    }
    // SCSI types (SPC-4 table 169) -> the reservation model's (NVMe's numbering).
    // The SCSI type as the model's (0: none given).
    let t = SCSI_TYPES
        .iter()
        .position(|&x| x == rtype)
        .map_or(0, |i| i as u8 + 1);
    // What the other registrants must be told depends on the state before.
    let before = if matches!(sa, 2..=5) {
        Some(run(dev, host, ResvCommand::Report).await?)
    } else {
        None
    };
    let cmd = match sa {
        0 | 6 => {
            let ignore = sa == 6;
            let st = run(dev, host, ResvCommand::Report).await?;
            let mine = key_of(&st, &host);
            match mine {
                None if !ignore && key != 0 => {
                    return Err(fail(&BlockError::ReservationConflict));
                }
                None if sa_key == 0 => return Ok(Vec::new()),
                None => ResvCommand::Register {
                    action: 0,
                    ignore_key: false,
                    current: 0,
                    new: sa_key,
                },
                Some(k) if !ignore && k != key => {
                    return Err(fail(&BlockError::ReservationConflict));
                }
                Some(_) => ResvCommand::Register {
                    action: if sa_key == 0 { 1 } else { 2 },
                    ignore_key: ignore,
                    current: key,
                    new: sa_key,
                },
            }
        }
        1 => ResvCommand::Acquire {
            action: 0,
            current: key,
            preempt: 0,
            rtype: t,
        },
        2 => {
            // RELEASE by a registrant that does not hold it changes nothing (SPC-4 5.14.11.2).
            let st = before.as_ref().expect("read above");
            let mine = key_of(st, &host);
            match mine {
                None => return Err(fail(&BlockError::ReservationConflict)),
                Some(k) if k != key => return Err(fail(&BlockError::ReservationConflict)),
                Some(_) if !st.holds(&host) => return Ok(Vec::new()),
                Some(_) => {}
            }
            if st.reservation().map(|r| r as u8) != Some(t) {
                return Err(fail(&BlockError::InvalidField("RTYPE".into())));
            }
            ResvCommand::Release {
                action: 0,
                current: key,
                rtype: t,
            }
        }
        3 => ResvCommand::Release {
            action: 1,
            current: key,
            rtype: 0,
        },
        4 | 5 => ResvCommand::Acquire {
            action: sa - 3,
            current: key,
            preempt: sa_key,
            rtype: t,
        },
        _ => return Err(Outcome::check(Sense::INVALID_FIELD)),
    };
    let after = run(dev, host, cmd).await?;
    Ok(before.map_or(Vec::new(), |b| notices(sa, &host, &b, &after)))
}

/// The outcome of a PR command's result.
pub fn outcome(r: Result<Vec<u8>, Outcome>, alloc: usize) -> Outcome {
    match r {
        Ok(mut d) => {
            d.truncate(alloc);
            Outcome {
                status: status::GOOD,
                sense: None,
                data: Bytes::from(d),
            }
        }
        Err(o) => o,
    }
}

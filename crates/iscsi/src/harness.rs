//! Hostile bytes through the whole target without sockets, for the fuzzer
//! (`fuzz/fuzz_targets/decode_iscsi.rs`) and the corpus replay in the normal test run: the PDU
//! decoder, the login state machine, the connection state machine and the SCSI layer on a small
//! memory LU. Nothing may panic (RFC 7143 section 7: errors end the connection, not the target).

use std::sync::Arc;

use alcubierre_block::{MemBlockDevice, Reserved};
use alcubierre_types::{BlockSize, ByteSize, VolumeGeometry};
use bytes::{Bytes, BytesMut};

use crate::conn::{Action, Conn};
use crate::login::{encode_keys, Access, Login};
use crate::pdu::{op, Bhs, Framing, Pdu, PduError};
use crate::scsi::Lun;
use crate::target::{Export, Target};

/// The target name the sample sessions log in to.
pub const TARGET: &str = "iqn.2014-08.io.alcubierre:vol.fuzz";

/// A target with one 1 MiB LU of 512-byte blocks.
pub fn target() -> Arc<Target> {
    let t = Target::new();
    let g = VolumeGeometry::new(BlockSize::B512, ByteSize::mib(1)).expect("geometry");
    t.export(
        TARGET,
        Export {
            lun: Arc::new(Lun::new(
                Arc::new(Reserved::volatile(MemBlockDevice::new(g))),
                [7; 16],
                1,
            )),
            access: Access::default(),
            portals: vec!["127.0.0.1:3260,1".into()],
        },
    );
    t
}

/// Feeds `data` to a new connection of `t` as the initiator's bytes; returns what the target
/// sent.
pub fn run(t: &Arc<Target>, data: &[u8]) -> Vec<u8> {
    let mut framing = Framing::default();
    let mut buf = data;
    let mut out = BytesMut::new();
    let mut login = Login::new(t.clone(), t.next_tsih());
    let mut last_cmd_sn = 0;
    while !login.done() {
        let Ok(Some((pdu, n))) = framing.decode(buf) else {
            return out.to_vec();
        };
        buf = &buf[n..];
        last_cmd_sn = pdu.bhs.u32_at(24);
        framing.encode(&login.step(&pdu), &mut out);
        if login.failed() {
            return out.to_vec();
        }
    }
    let params = login.params.clone();
    framing = Framing {
        header_digest: params.header_digest,
        data_digest: params.data_digest,
        max_recv: params.target_max_recv as usize,
    };
    let lun = login
        .target
        .as_deref()
        .and_then(|n| t.get(n))
        .map(|e| e.lun.clone());
    let mut conn = Conn::new(
        params,
        login.initiator.clone().unwrap_or_default(),
        login.session_type,
        login.target.clone(),
        lun.clone(),
        t.clone(),
        login.stat_sn(),
        last_cmd_sn,
    );
    let host = [1u8; 16];
    if let Some(l) = &lun {
        l.nexus_joined(&host);
    }
    loop {
        let actions = match framing.decode(buf) {
            Ok(Some((pdu, n))) => {
                buf = &buf[n..];
                conn.handle(pdu)
            }
            Err(PduError::DataDigest(bhs)) => {
                let n = framing.wire_len(&bhs).min(buf.len());
                buf = &buf[n..];
                conn.data_digest_error(&bhs)
            }
            Ok(None) | Err(_) => return out.to_vec(),
        };
        let mut queue = actions;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for a in queue {
                match a {
                    Action::Send(p) => framing.encode(&p, &mut out),
                    Action::Execute { itt, cdb, data } => {
                        let o = match &lun {
                            Some(l) => futures::executor::block_on(l.execute(&host, &cdb, data)),
                            None => continue,
                        };
                        next.extend(conn.completed(itt, o));
                    }
                    Action::ResetLun => {
                        if let Some(l) = &lun {
                            futures::executor::block_on(l.reset());
                        }
                    }
                    Action::Close => return out.to_vec(),
                }
            }
            queue = next;
        }
    }
}

fn pdu(opcode: u8, flags: u8, itt: u32, cmd_sn: u32, data: Bytes) -> Pdu {
    let mut b = Bhs::new(opcode);
    b.set_flags(flags);
    b.put_u32(16, itt);
    b.put_u32(24, cmd_sn);
    Pdu::new(b, data)
}

fn keys(pairs: &[(&str, &str)]) -> Bytes {
    let k: Vec<(String, String)> = pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    encode_keys(&k)
}

/// A one-PDU login (security straight to full feature phase, transit) of our initiator name
/// with `rest`.
fn final_login(rest: &[(&str, &str)]) -> Pdu {
    let mut k = vec![("InitiatorName", "iqn.2024-01.org.example:host")];
    k.extend_from_slice(rest);
    pdu(op::LOGIN_REQ | 0x40, 0x87, 1, 1, keys(&k))
}

fn scsi(itt: u32, cmd_sn: u32, flags: u8, edtl: u32, cdb: &[u8], data: Bytes) -> Pdu {
    let mut p = pdu(op::SCSI_CMD, flags, itt, cmd_sn, data);
    p.bhs.put_u32(20, edtl);
    p.bhs.0[32..32 + cdb.len()].copy_from_slice(cdb);
    p
}

/// The login of a normal session of `initiator` to `target` without authentication or
/// digests, in two requests (security, then operational negotiation into full feature phase).
pub fn login(initiator: &str, target: &str) -> Vec<u8> {
    let f = Framing::default();
    let mut s = BytesMut::new();
    f.encode(
        &pdu(
            op::LOGIN_REQ | 0x40,
            0x81,
            1,
            1,
            keys(&[
                ("InitiatorName", initiator),
                ("TargetName", target),
                ("SessionType", "Normal"),
                ("AuthMethod", "None"),
            ]),
        ),
        &mut s,
    );
    f.encode(
        &pdu(
            op::LOGIN_REQ | 0x40,
            0x87,
            1,
            1,
            keys(&[
                ("HeaderDigest", "None"),
                ("DataDigest", "None"),
                ("MaxRecvDataSegmentLength", "8192"),
            ]),
        ),
        &mut s,
    );
    s.to_vec()
}

/// A NOP-Out ping (ITT `itt`, CmdSN `cmd_sn`) that the target answers with a NOP-In.
pub fn ping(itt: u32, cmd_sn: u32) -> Vec<u8> {
    let mut s = BytesMut::new();
    Framing::default().encode(
        &pdu(
            op::NOP_OUT | 0x40,
            0x80,
            itt,
            cmd_sn,
            Bytes::from_static(b"ping"),
        ),
        &mut s,
    );
    s.to_vec()
}

/// Valid sessions for seeds and tests: a normal session with `digests` on or off that logs in,
/// runs INQUIRY, a write with immediate data, a write that needs an R2T and Data-Out, a read, a
/// NOP, an ABORT TASK and a Text request, and logs out; then a discovery session.
pub fn sample_sessions() -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for digests in [false, true] {
        let mut f = Framing::default();
        let mut s = BytesMut::new();
        let digest = if digests { "CRC32C" } else { "None" };
        f.encode(
            &pdu(
                op::LOGIN_REQ | 0x40,
                0x81,
                1,
                1,
                keys(&[
                    ("InitiatorName", "iqn.2024-01.org.example:host"),
                    ("TargetName", TARGET),
                    ("SessionType", "Normal"),
                    ("AuthMethod", "None"),
                ]),
            ),
            &mut s,
        );
        f.encode(
            &pdu(
                op::LOGIN_REQ | 0x40,
                0x87,
                1,
                1,
                keys(&[
                    ("HeaderDigest", digest),
                    ("DataDigest", digest),
                    ("InitialR2T", "Yes"),
                    ("ImmediateData", "Yes"),
                    ("MaxRecvDataSegmentLength", "8192"),
                ]),
            ),
            &mut s,
        );
        f.header_digest = digests;
        f.data_digest = digests;
        f.max_recv = 1 << 20;
        let block = Bytes::from(vec![0x5a; 512]);
        f.encode(
            &scsi(2, 1, 0xc0, 96, &[0x12, 0, 0, 0, 96, 0], Bytes::new()),
            &mut s,
        );
        let w10 = [0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0];
        f.encode(&scsi(3, 2, 0xa0, 512, &w10, block.clone()), &mut s);
        let w10b = [0x2a, 0, 0, 0, 0, 16, 0, 0, 2, 0];
        f.encode(&scsi(4, 3, 0xa0, 1024, &w10b, Bytes::new()), &mut s);
        // The Data-Out answering the target's first R2T (TTT 1).
        let mut d = pdu(op::DATA_OUT, 0x80, 4, 0, Bytes::from(vec![0x6b; 1024]));
        d.bhs.put_u32(20, 1);
        f.encode(&d, &mut s);
        let r10 = [0x28, 0, 0, 0, 0, 8, 0, 0, 3, 0];
        f.encode(&scsi(5, 4, 0xc0, 1536, &r10, Bytes::new()), &mut s);
        f.encode(
            &pdu(op::NOP_OUT | 0x40, 0x80, 6, 5, Bytes::from_static(b"ping")),
            &mut s,
        );
        let mut tmf = pdu(op::TMF_REQ | 0x40, 0x81, 7, 5, Bytes::new());
        tmf.bhs.put_u32(20, 99);
        f.encode(&tmf, &mut s);
        f.encode(
            &pdu(op::TEXT_REQ, 0x80, 8, 5, keys(&[("SendTargets", "All")])),
            &mut s,
        );
        f.encode(
            &pdu(op::LOGOUT_REQ | 0x40, 0x80, 9, 6, Bytes::new()),
            &mut s,
        );
        all.push(s.to_vec());
    }
    let f = Framing::default();
    let mut s = BytesMut::new();
    f.encode(
        &final_login(&[("SessionType", "Discovery"), ("AuthMethod", "None")]),
        &mut s,
    );
    f.encode(
        &pdu(op::TEXT_REQ, 0x80, 2, 1, keys(&[("SendTargets", "All")])),
        &mut s,
    );
    all.push(s.to_vec());
    all.push(copy_session());
    all
}

/// A normal session that writes block 8, asks GET LBA STATUS and RECEIVE COPY RESULTS
/// (operating parameters), copies block 8 to 40 with EXTENDED COPY, reads block 40 and logs
/// out: a seed that reaches the copy manager's parameter list parser.
fn copy_session() -> Vec<u8> {
    let f = Framing::default();
    let mut s = BytesMut::new();
    f.encode(
        &final_login(&[
            ("TargetName", TARGET),
            ("SessionType", "Normal"),
            ("AuthMethod", "None"),
            ("ImmediateData", "Yes"),
        ]),
        &mut s,
    );
    let w10 = [0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0];
    f.encode(
        &scsi(2, 1, 0xa0, 512, &w10, Bytes::from(vec![0x3c; 512])),
        &mut s,
    );
    let mut lba_status = [0u8; 16];
    lba_status[0] = 0x9e;
    lba_status[1] = 0x12;
    lba_status[13] = 24;
    f.encode(&scsi(3, 2, 0xc0, 24, &lba_status, Bytes::new()), &mut s);
    let mut params = [0u8; 16];
    params[0] = 0x84;
    params[1] = 0x03;
    params[13] = 255;
    f.encode(&scsi(4, 3, 0xc0, 255, &params, Bytes::new()), &mut s);
    // The parameter list: header, the LU's identification descriptor (its NAA designator, as
    // VPD page 83h reports it), one block-to-block segment.
    let lun = target().get(TARGET).expect("exported").lun.clone();
    let vpd = futures::executor::block_on(lun.execute(
        &[0; 16],
        &[0x12, 1, 0x83, 0, 64, 0],
        Bytes::new(),
    ));
    let mut list = vec![0u8; 16];
    list[3] = 32; // target descriptor list length
    list[11] = 28; // segment descriptor list length
    let mut t = [0u8; 32];
    t[0] = 0xe4;
    t[4..24].copy_from_slice(&vpd.data[4..24]);
    t[30] = 2; // 512-byte blocks
    list.extend_from_slice(&t);
    let mut seg = [0u8; 28];
    seg[0] = 0x02;
    seg[3] = 24;
    seg[11] = 1;
    seg[19] = 8;
    seg[27] = 40;
    list.extend_from_slice(&seg);
    let mut xcopy = [0u8; 16];
    xcopy[0] = 0x83;
    xcopy[13] = list.len() as u8;
    f.encode(
        &scsi(5, 4, 0xa0, list.len() as u32, &xcopy, Bytes::from(list)),
        &mut s,
    );
    let r10 = [0x28, 0, 0, 0, 0, 40, 0, 0, 1, 0];
    f.encode(&scsi(6, 5, 0xc0, 512, &r10, Bytes::new()), &mut s);
    f.encode(
        &pdu(op::LOGOUT_REQ | 0x40, 0x80, 7, 6, Bytes::new()),
        &mut s,
    );
    s.to_vec()
}

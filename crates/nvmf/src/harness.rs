//! Drives a [`QueuePair`] from raw bytes, synchronously and without sockets: the fuzz target
//! (`fuzz/fuzz_targets/decode_pdu.rs`) and the corpus replay test use it, so the decoder *and*
//! the state machine behind it see hostile input. Device I/O runs on a memory device, whose
//! futures complete at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alcubierre_block::{MemBlockDevice, Reserved};
use alcubierre_types::{BlockSize, ByteSize, VolumeGeometry, VolumeId};
use bytes::{Bytes, BytesMut};
use futures::FutureExt;

use crate::capsule::{Sqe, SGL_INCAPSULE, SGL_TRANSPORT};
use crate::initiator::cmd;
use crate::pdu::{DataPdu, Digests, Encoder, IcReq, Pdu};
use crate::queue::{Output, QueuePair};
use crate::spec::{cns, feat, io_op, log_id, prop};
use crate::subsystem::{HostAcl, Portal, Subsystem};
use crate::target::{Target, TargetConfig};

/// The volume id of the harness's subsystem (fixed, so seeds can connect to it).
pub const VOLUME: u128 = 0x0123_4567_89ab_4def_8123_4567_89ab_cdef;

/// A target with one 128 KiB memory-backed subsystem.
pub fn target() -> Arc<Target> {
    let t = Arc::new(Target::new(TargetConfig::default()));
    let g = VolumeGeometry::new(BlockSize::B512, ByteSize(128 << 10)).expect("geometry");
    t.add_subsystem(Arc::new(Subsystem::new(
        VolumeId(uuid::Uuid::from_u128(VOLUME)),
        Arc::new(Reserved::volatile(MemBlockDevice::new(g))),
        HostAcl::Any,
        1,
    )));
    t
}

/// Feeds `input` to a fresh admin-or-I/O connection (and a second one, so I/O queue connects
/// find the first one's controller). Returns the bytes the target sent on each connection. Never panics on any
/// input; that is the property fuzzed.
pub fn run(target: &Arc<Target>, input: &[u8]) -> Vec<Vec<u8>> {
    let local = Portal {
        addr: "127.0.0.1".into(),
        port: 4420,
        port_id: 1,
    };
    let mut sent = vec![Vec::new(), Vec::new()];
    let mut qps = vec![
        QueuePair::new(target.clone(), local.clone()),
        QueuePair::new(target.clone(), local),
    ];
    // The input is split at the first 0xFF 0xFF 0xFF 0xFF marker between the two connections.
    let split = input
        .windows(4)
        .position(|w| w == [0xff; 4])
        .unwrap_or(input.len());
    let parts = [&input[..split], input.get(split + 4..).unwrap_or(&[])];
    let mut now = Instant::now();
    for ((qp, part), sent) in qps.iter_mut().zip(parts).zip(sent.iter_mut()) {
        let mut buf = BytesMut::from(part);
        let mut out = Output::default();
        loop {
            match qp.decoder().decode(&mut buf) {
                Ok(Some(pdu)) => qp.receive(pdu, now, &mut out),
                Ok(None) => break,
                Err(e) => {
                    qp.decode_error(e, &mut out);
                    break;
                }
            }
            while !out.ios.is_empty() {
                for io in std::mem::take(&mut out.ios) {
                    let (cid, r) = io.run().now_or_never().expect("memory I/O is immediate");
                    qp.io_done(cid, r, &mut out);
                }
            }
            now += Duration::from_millis(100);
            qp.wake(now, &mut out);
            sent.extend_from_slice(&out.bytes);
            out.bytes.clear();
            if out.close.is_some() {
                break;
            }
        }
    }
    for mut qp in qps {
        qp.shutdown();
    }
    sent
}

fn capsule(enc: &Encoder, out: &mut BytesMut, mut sqe: Sqe, cid: u16, data: &[u8], in_len: u32) {
    sqe.set_cid(cid);
    if data.is_empty() {
        sqe.set_sgl(0, in_len, SGL_TRANSPORT);
    } else {
        sqe.set_sgl(0, data.len() as u32, SGL_INCAPSULE);
    }
    enc.capsule_cmd(out, &sqe, data);
}

/// Valid sessions (an admin queue with the usual Linux start-up, and I/O with in-capsule and
/// R2T writes) to seed the fuzzer and to replay in tests.
pub fn sample_sessions() -> Vec<Vec<u8>> {
    let nqn = crate::subsystem::volume_nqn(VolumeId(uuid::Uuid::from_u128(VOLUME)));
    let host = "nqn.2014-08.org.nvmexpress:uuid:fuzz";
    let mut out = Vec::new();
    for (hd, dd) in [(false, false), (true, true)] {
        let digests = Digests {
            header: hd,
            data: dd,
        };
        let enc = Encoder { digests, pda: 0 };
        let mut b = BytesMut::new();
        let ic = IcReq {
            pfv: 0,
            hpda: 0,
            dgst: hd as u8 | ((dd as u8) << 1),
            maxr2t: 0,
        };
        Encoder::ic_req(&mut b, &ic);
        let cd = cmd::connect_data([7; 16], 0xffff, &nqn, host);
        capsule(&enc, &mut b, cmd::connect(0, 31, 5000, false), 1, &cd, 0);
        let startup = [
            (cmd::property_get(prop::CAP, true), 0),
            (cmd::property_set(prop::CC, 1 | (6 << 16) | (4 << 20)), 0),
            (cmd::identify(cns::CONTROLLER, 0), 4096),
            (cmd::set_features(feat::NUM_QUEUES, 0), 0),
            (cmd::identify(cns::NAMESPACE, 1), 4096),
            (cmd::get_log_page(log_id::ANA, 0, 4096, 0), 4096),
        ];
        for (cid, (sqe, in_len)) in (2..).zip(startup) {
            capsule(&enc, &mut b, sqe, cid, &[], in_len);
        }
        let mut admin = b.to_vec();
        let mut io = BytesMut::new();
        Encoder::ic_req(&mut io, &ic);
        // Controller ids start at 1 in the harness target.
        let cd = cmd::connect_data([7; 16], 1, &nqn, host);
        capsule(&enc, &mut io, cmd::connect(1, 127, 0, false), 1, &cd, 0);
        capsule(&enc, &mut io, cmd::write(0, 8), 2, &[0xab; 4096], 0);
        capsule(&enc, &mut io, cmd::read(0, 8), 3, &[], 4096);
        // 32 KiB at LBA 8: beyond the in-capsule size, so it goes by R2T.
        let mut w = cmd::write(8, 64);
        w.set_cid(4);
        w.set_sgl(0, 32768, SGL_TRANSPORT);
        enc.capsule_cmd(&mut io, &w, &[]);
        enc.pdu(
            &mut io,
            &Pdu::H2CData(DataPdu {
                cccid: 4,
                ttag: 4,
                datao: 0,
                data: Bytes::from(vec![0xcd; 32768]),
                last: true,
                success: false,
                ddgst_ok: true,
            }),
        );
        capsule(
            &enc,
            &mut io,
            cmd::rw(io_op::COMPARE, 8, 8),
            5,
            &[0xcd; 4096],
            0,
        );
        admin.extend_from_slice(&[0xff; 4]);
        admin.extend_from_slice(&io);
        out.push(admin);
    }
    out
}

//! Hostile input in the normal test run: the fuzz corpus (`fuzz/corpus/decode_iscsi`), the
//! valid sample sessions, and random mutations of them, all fed through the PDU decoder, the
//! login and connection state machines and the SCSI layer. Nothing may panic (RFC 7143
//! section 7: an error ends the connection, not the target).

use alcubierre_iscsi::harness::{run, sample_sessions, target};
use alcubierre_iscsi::pdu::{op, Framing};
use proptest::prelude::*;

/// Every PDU the target sent for a session, decoded (digests as the session negotiated).
fn replies(out: &[u8], digests: bool) -> Vec<alcubierre_iscsi::pdu::Pdu> {
    let mut f = Framing {
        max_recv: 1 << 24,
        ..Framing::default()
    };
    let mut at = 0;
    let mut all = Vec::new();
    while at < out.len() {
        let (p, n) = f.decode(&out[at..]).unwrap().unwrap();
        at += n;
        // The final Login Response turns the negotiated digests on.
        if p.bhs.opcode() == op::LOGIN_RESP && p.bhs.flags() & 0x83 == 0x83 {
            f.header_digest = digests;
            f.data_digest = digests;
        }
        all.push(p);
    }
    all
}

#[test]
fn sample_sessions_complete_every_command() {
    let s = sample_sessions();
    for (i, digests) in [(0, false), (1, true)] {
        let got = replies(&run(&target(), &s[i]), digests);
        let ops: Vec<u8> = got.iter().map(|p| p.bhs.opcode()).collect();
        // INQUIRY and the read end in Data-In with status, the two writes in SCSI Responses
        // (one after an R2T), then NOP-In, the TMF response, Text and Logout.
        assert_eq!(
            ops,
            [
                op::LOGIN_RESP,
                op::LOGIN_RESP,
                op::DATA_IN,
                op::SCSI_RESP,
                op::R2T,
                op::SCSI_RESP,
                op::DATA_IN,
                op::NOP_IN,
                op::TMF_RESP,
                op::TEXT_RESP,
                op::LOGOUT_RESP
            ],
            "session {i}"
        );
        for p in &got {
            match p.bhs.opcode() {
                op::SCSI_RESP => assert_eq!(p.bhs.0[3], 0, "GOOD"),
                op::DATA_IN => assert_eq!(p.bhs.flags() & 0x81, 0x81, "final, with status"),
                _ => {}
            }
        }
        // The read returns the two writes: block 8 from immediate data, 16-17 via R2T.
        let read = &got[6].data;
        assert_eq!(read.len(), 1536);
        assert!(read[..512].iter().all(|&b| b == 0x5a));
        assert!(read[512..].iter().all(|&b| b == 0));
        let text = String::from_utf8_lossy(&got[9].data);
        assert!(
            text.contains("TargetName=iqn.2014-08.io.alcubierre:vol.fuzz"),
            "{text}"
        );
    }
    // The copy offload session: every command GOOD, and block 40 holds block 8's data.
    let got = replies(&run(&target(), &s[3]), false);
    let ops: Vec<u8> = got.iter().map(|p| p.bhs.opcode()).collect();
    assert_eq!(
        ops,
        [
            op::LOGIN_RESP,
            op::SCSI_RESP,
            op::DATA_IN,
            op::DATA_IN,
            op::SCSI_RESP,
            op::DATA_IN,
            op::LOGOUT_RESP
        ]
    );
    for p in &got {
        if p.bhs.opcode() == op::SCSI_RESP {
            assert_eq!(p.bhs.0[3], 0, "GOOD");
        }
    }
    assert!(got[5].data.iter().all(|&b| b == 0x3c), "the copied block");
    let disc = replies(&run(&target(), &s[2]), false);
    assert_eq!(disc.len(), 2);
    assert!(String::from_utf8_lossy(&disc[1].data).contains("TargetAddress=127.0.0.1:3260,1"));
}

#[test]
fn corpus_replays_without_panics() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/corpus/decode_iscsi"
    );
    let t = target();
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("corpus directory") {
        run(&t, &std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0, "the corpus is empty");
}

/// Writes the sample sessions as fuzz seeds when `ISCSI_WRITE_SEEDS` names a directory.
#[test]
fn write_seeds_on_request() {
    if let Ok(dir) = std::env::var("ISCSI_WRITE_SEEDS") {
        for (i, s) in sample_sessions().iter().enumerate() {
            std::fs::write(format!("{dir}/session-{i}"), s).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn mutated_sessions_never_panic(
        which in 0usize..3,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let t = target();
        let mut s = sample_sessions()[which].clone();
        for (i, v) in flips {
            let at = i.index(s.len());
            s[at] = v;
        }
        let n = cut.index(s.len() + 1);
        run(&t, &s[..n]);
    }
}

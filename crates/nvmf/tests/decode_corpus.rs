//! Hostile input in the normal test run: the fuzz corpus (`fuzz/corpus/decode_pdu`, with the
//! committed regressions), the valid sample sessions, and random mutations of them, all fed
//! through the decoder and the queue-pair state machine. Nothing may panic (TCP 1.0 section
//! 7.4.6: errors end the connection, not the target).

use alcubierre_nvmf::harness::{run, sample_sessions, target};
use alcubierre_nvmf::pdu::{Decoder, Digests, Pdu};
use bytes::BytesMut;
use proptest::prelude::*;

#[test]
fn sample_sessions_complete_every_command() {
    for s in sample_sessions() {
        // A fresh target: controller ids start at 1, as the sessions expect.
        let t = target();
        let mut responses = 0;
        let mut c2h = 0;
        for out in run(&t, &s) {
            let mut dec = Decoder::new(1 << 20);
            let mut buf = BytesMut::from(&out[..]);
            let first = dec.decode(&mut buf).unwrap().unwrap();
            let Pdu::IcResp(r) = first else {
                panic!("expected ICResp, got {first:?}")
            };
            dec.connected = true;
            dec.digests = Digests {
                header: r.dgst & 1 != 0,
                data: r.dgst & 2 != 0,
            };
            while let Some(p) = dec.decode(&mut buf).unwrap() {
                match p {
                    Pdu::CapsuleResp(c) => {
                        assert!(c.status.is_success(), "{c:?}");
                        responses += 1;
                    }
                    Pdu::C2HData(_) => c2h += 1,
                    Pdu::R2T(_) => {}
                    p => panic!("unexpected {p:?}"),
                }
            }
            assert!(buf.is_empty());
        }
        assert_eq!(responses, 7 + 5, "7 admin and 5 I/O commands answered");
        assert!(c2h >= 4);
    }
}

#[test]
fn corpus_replays_without_panics() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/decode_pdu");
    let t = target();
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("corpus directory") {
        run(&t, &std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0, "the corpus is empty");
}

/// Writes the sample sessions as fuzz seeds when `NVMF_WRITE_SEEDS` names a directory.
#[test]
fn write_seeds_on_request() {
    if let Ok(dir) = std::env::var("NVMF_WRITE_SEEDS") {
        for (i, s) in sample_sessions().iter().enumerate() {
            std::fs::write(format!("{dir}/session-{i}"), s).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn mutated_sessions_never_panic(
        which in 0usize..2,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let t = target();
        let mut s = sample_sessions()[which].clone();
        for (i, v) in flips {
            let i = i.index(s.len());
            s[i] = v;
        }
        let end = cut.index(s.len() + 1);
        run(&t, &s[..end]);
    }
}

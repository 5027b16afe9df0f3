//! Format version 1, read from a device image checked into the repository. Later versions of the
//! engine must keep opening it with the same contents (CONVENTIONS 4).
//!
//! Regenerate (only when deliberately changing what the fixture holds, never the format):
//! `cargo test -p alcubierre-cache --test fixture_v1 -- --ignored make_fixture`

mod common;

use std::sync::Arc;

use alcubierre_backend::{Backend, MemBackend};
use alcubierre_cache::Engine;
use alcubierre_io::{Medium, MemMedium};
use alcubierre_types::{BlockCount, Lba};
use bytes::Bytes;
use common::{geometry, pattern, small_format, vol};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cache-v1.img");
const VOL: u64 = 1 << 20;

enum Step {
    Write(u64, u64, u64), // id, lba, sectors
    Zero(u64, u64),
}

const STEPS: &[Step] = &[
    Step::Write(1, 0, 16),
    Step::Write(2, 3, 1),
    Step::Zero(8, 16),
    Step::Write(3, 100, 8),
    Step::Write(4, 1000, 37),
];

fn data(id: u64, lba: u64, n: u64) -> Vec<u8> {
    let mut d = vec![0u8; (n * 512) as usize];
    for (i, s) in d.chunks_mut(512).enumerate() {
        pattern(id, lba + i as u64, s);
    }
    d
}

fn expected() -> Vec<u8> {
    let mut m = vec![0u8; VOL as usize];
    for s in STEPS {
        match *s {
            Step::Write(id, lba, n) => {
                m[(lba * 512) as usize..((lba + n) * 512) as usize]
                    .copy_from_slice(&data(id, lba, n));
            }
            Step::Zero(lba, n) => m[(lba * 512) as usize..((lba + n) * 512) as usize].fill(0),
        }
    }
    m
}

#[test]
#[ignore = "writes the fixture"]
fn make_fixture() {
    let m = Arc::new(MemMedium::new(2 << 20));
    Engine::format(&*m, &small_format(1)).unwrap();
    let b = Arc::new(MemBackend::new());
    b.create(vol(1), alcubierre_types::ByteSize(VOL)).unwrap();
    let e = common::open(m.clone(), b, &[(vol(1), geometry(VOL))]);
    for s in STEPS {
        match *s {
            Step::Write(id, lba, n) => e
                .write(vol(1), Lba(lba), Bytes::from(data(id, lba, n)))
                .unwrap(),
            Step::Zero(lba, n) => e.zero(vol(1), Lba(lba), BlockCount(n)).unwrap(),
        }
    }
    std::fs::write(PATH, m.image()).unwrap();
}

#[test]
fn version_1_device_still_opens_with_its_data() {
    let image = std::fs::read(PATH).expect("fixture present");
    let m: Arc<dyn Medium> = Arc::new(MemMedium::from_image(image));
    let b = Arc::new(MemBackend::new());
    b.create(vol(1), alcubierre_types::ByteSize(VOL)).unwrap();
    let e = Engine::open(m, b.clone() as Arc<dyn Backend>).unwrap();
    assert_eq!(e.recovery_report().batches(), STEPS.len() as u64);
    e.attach(vol(1), geometry(VOL)).unwrap();
    let want = expected();
    for lba in (0..VOL / 512).step_by(64) {
        let got = e.read(vol(1), Lba(lba), BlockCount(64)).unwrap();
        assert!(
            got[..] == want[(lba * 512) as usize..((lba + 64) * 512) as usize],
            "sector {lba}"
        );
    }
    e.destage_all().unwrap();
    assert!(b.contents(vol(1)).unwrap() == want);
}

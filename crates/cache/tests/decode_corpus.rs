//! The metadata decoders on hostile input, in the normal test run: the fuzz corpus and committed
//! regressions (`fuzz/corpus/decode_metadata`), plus property tests that flip, truncate and
//! randomise valid blocks. Decoders must return errors, never panic, and whatever decodes must
//! re-encode to itself.

use alcubierre_cache::format::{check_decoders as check, Superblock, BLOCK};
use proptest::prelude::*;

#[test]
fn corpus_replays_without_panics() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/corpus/decode_metadata"
    );
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("corpus directory") {
        let path = entry.unwrap().path();
        check(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "the corpus is empty");
}

/// A valid header to mutate: taken from the v1 fixture's first batch.
fn valid_blocks() -> Vec<Vec<u8>> {
    let img = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cache-v1.img"
    ))
    .unwrap();
    let sb = Superblock::decode(&img[..BLOCK]).unwrap();
    let log = sb.partitions[0].start as usize * BLOCK;
    vec![
        img[..BLOCK].to_vec(),
        img[BLOCK..2 * BLOCK].to_vec(),
        img[log..log + BLOCK].to_vec(),
    ]
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..5000)) {
        check(&data);
    }

    #[test]
    fn mutated_valid_blocks_never_panic(
        which in 0usize..3,
        flips in proptest::collection::vec((0usize..BLOCK, any::<u8>()), 1..8),
        cut in 0usize..=BLOCK,
        reseal in any::<bool>(),
    ) {
        let mut b = valid_blocks()[which].clone();
        for (at, x) in flips {
            b[at] ^= x;
        }
        if reseal {
            // Keep the checksum valid so the field checks themselves are exercised.
            let crc = crc32c::crc32c(&b[..BLOCK - 4]);
            b[BLOCK - 4..].copy_from_slice(&crc.to_le_bytes());
        }
        check(&b[..cut]);
        check(&b);
    }
}

//! The metadata decoders on hostile input, in the normal test run: the fuzz corpus and committed
//! regressions (`fuzz/corpus/decode_metadata`), plus property tests that flip, truncate and
//! randomise valid blocks. Decoders must return errors, never panic, and whatever decodes must
//! re-encode to itself.

use alcubierre_cache::format::{BatchHeader, Checkpoint, Superblock, BLOCK};
use proptest::prelude::*;

fn check(data: &[u8]) {
    let mut block = [0u8; BLOCK];
    let n = data.len().min(BLOCK);
    block[..n].copy_from_slice(&data[..n]);
    if let Ok(sb) = Superblock::decode(&block) {
        assert_eq!(Superblock::decode(&sb.encode()).unwrap(), sb);
    }
    if let Ok(cp) = Checkpoint::decode(&block) {
        assert_eq!(Checkpoint::decode(&cp.encode()).unwrap(), cp);
    }
    if let Ok(h) = BatchHeader::decode(&block) {
        assert_eq!(BatchHeader::decode(&h.encode()).unwrap(), h);
    }
    let _ = BatchHeader::decode(data);
    let _ = Superblock::decode(data);
    let _ = Checkpoint::decode(data);
}

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

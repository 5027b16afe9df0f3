//! Any bytes given to the cache's metadata decoders: no panic, and whatever decodes re-encodes
//! to the same block.
#![no_main]

use alcubierre_cache::format::{BatchHeader, Checkpoint, Superblock, BLOCK};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});

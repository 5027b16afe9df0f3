//! Any bytes given to the cache's metadata decoders: no panic, and whatever decodes re-encodes
//! to the same block.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| alcubierre_cache::format::check_decoders(data));

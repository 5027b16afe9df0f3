//! The replication wire format on hostile bytes: the frame decoder, and a follower and a
//! primary fed whatever decodes. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    alcubierre_replica::harness::run(data);
});

//! NVMe/TCP on hostile bytes: the PDU decoder and the queue-pair state machine behind it (two
//! connections, so I/O queue connects can find a controller). Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t = alcubierre_nvmf::harness::target();
    alcubierre_nvmf::harness::run(&t, data);
});

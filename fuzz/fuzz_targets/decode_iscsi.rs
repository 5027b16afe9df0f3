//! iSCSI on hostile bytes: the PDU decoder, login, the connection state machine and the SCSI
//! layer on a memory LU (`alcubierre_iscsi::harness`). Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t = alcubierre_iscsi::harness::target();
    alcubierre_iscsi::harness::run(&t, data);
});

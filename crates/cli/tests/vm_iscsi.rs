//! Linux's own iSCSI initiator (open-iscsi, the kernel's iscsi_tcp) against `alcubierre serve`
//! in the QEMU test VM (`testing/vm/iscsi-e2e.sh`: SendTargets discovery, a CHAP login with a
//! wrong secret refused, a CHAP login, fio randwrite with crc32c verification and a read-back
//! pass, logout, a second login with header and data digests reading the data back).
//!
//! Needs QEMU and the guest image (`scripts/setup`), like `vm_nvmf`.

use std::process::Command;

#[test]
fn linux_iscsi_initiator_end_to_end() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testing/vm/iscsi-e2e.sh");
    let out = Command::new(script)
        .arg(env!("CARGO_BIN_EXE_alcubierre"))
        .output()
        .expect("running testing/vm/iscsi-e2e.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("iscsi-e2e: passed"),
        "VM test failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

//! Linux's own NVMe/TCP initiator against `alcubierre serve`, in the QEMU test VM
//! (`testing/vm/nvmf-e2e.sh`: nvme discover / connect / list / id-ctrl / id-ns / ana-log, fio
//! randwrite with crc32c verification and a read-back pass, digests, disconnect).
//!
//! The VM needs QEMU and a guest image (`testing/vm/build.sh`, cached outside the repo), which
//! `scripts/setup` installs; without them the test fails, naming what is missing.

use std::process::Command;

#[test]
fn linux_nvme_tcp_initiator_end_to_end() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testing/vm/nvmf-e2e.sh");
    let out = Command::new(script)
        .arg(env!("CARGO_BIN_EXE_alcubierre"))
        .output()
        .expect("running testing/vm/nvmf-e2e.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("nvmf-e2e: passed"),
        "VM test failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

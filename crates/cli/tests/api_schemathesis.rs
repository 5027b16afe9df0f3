//! schemathesis (PyPI) against the running API from the OpenAPI document it serves
//! (`testing/api/schemathesis.sh`): no 5xx, every 4xx with a message. schemathesis lives in a
//! virtualenv that `scripts/setup` makes; without it the test fails, naming the command.

use std::process::Command;

#[test]
fn schemathesis_finds_no_server_errors() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testing/api/schemathesis.sh"
    );
    let out = Command::new(script)
        .arg(env!("CARGO_BIN_EXE_alcubierre"))
        .output()
        .expect("running testing/api/schemathesis.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("schemathesis: passed"),
        "schemathesis failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

//! The Cinder driver (integrations/cinder) on Cinder's and os-brick's own code, against the
//! demo's live cluster (`testing/cinder/run.sh`): Cinder's driver compliance tests, the
//! driver's tests on Cinder's test base class, and os-brick's parsers reading its connection
//! properties. Cinder and os-brick live in a virtualenv that `scripts/setup` makes; without it
//! the test fails, naming the command.

use std::process::Command;

#[test]
fn cinder_driver_passes_on_cinders_own_code() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testing/cinder/run.sh");
    let out = Command::new(script)
        .arg(env!("CARGO_BIN_EXE_alcubierre"))
        .output()
        .expect("running testing/cinder/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let passed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("cinder: passed "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u32>().ok());
    assert!(
        out.status.success() && passed.is_some_and(|n| n >= 30),
        "the Cinder tests failed ({}), passed {passed:?}:\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

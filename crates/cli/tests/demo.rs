//! The README's main command, run as a user runs it.

use std::process::Command;

#[test]
fn demo_runs_end_to_end() {
    // Under target/: the demo's cache file needs a file system with O_DIRECT.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_alcubierre"))
        .args(["demo", "--engine", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("verified every block after the restart"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the backend image matches every write"),
        "{stdout}"
    );
    let replayed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("recovery replayed "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("a recovery line");
    assert!(
        replayed > 0,
        "the restart should replay a journal: {stdout}"
    );
}

#[test]
fn bad_arguments_name_the_problem() {
    let out = Command::new(env!("CARGO_BIN_EXE_alcubierre"))
        .args(["format", "--device", "/nonexistent/dir/cache.img"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/dir/cache.img"), "{err}");
}

//! `alcubierre plan` as an operator runs it: the seed's worked example, JSON, and a bad input.

use std::process::Command;

fn plan(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_alcubierre"))
        .arg("plan")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn reproduces_the_seeds_example() {
    // Seed section 3: 3 nodes, 40 TB usable, 2 cache disks per node -> at least 1.6 TB per disk.
    let out = plan(&["--nodes", "3", "--usable-tb", "40", "--cache-disks", "2"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("the seed states it as 1.6 TB"), "{s}");
    assert!(s.contains("150 MB/s"), "{s}");
    assert!(!s.contains("warning"), "{s}");

    let out = Command::new(env!("CARGO_BIN_EXE_alcubierre"))
        .args([
            "--json",
            "plan",
            "--nodes",
            "3",
            "--usable-tb",
            "40",
            "--cache-disks",
            "2",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cache_tb_per_disk_seed"], 1.6);
    assert_eq!(v["min_osds"], 24);
    assert_eq!(v["destage_mb_per_s"], 150);
}

#[test]
fn bad_and_below_minimum_inputs() {
    let out = plan(&["--nodes", "0", "--usable-tb", "40"]);
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.starts_with("error: nodes:"), "{e}");
    let out = plan(&["--nodes", "2", "--usable-tb", "10", "--cpu-ghz", "1.8"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("warning: nodes: 2 is below the minimum of 3"),
        "{s}"
    );
    assert!(
        s.contains("warning: cpu-ghz: 1.8 is below the minimum"),
        "{s}"
    );
}

/// Output into a pipe whose reader is gone (`alcubierre status | head -1`) ends the command
/// quietly: no panic, no backtrace.
#[test]
fn a_closed_stdout_ends_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_alcubierre"))
        .args(["plan", "--nodes", "3", "--usable-tb", "40"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}

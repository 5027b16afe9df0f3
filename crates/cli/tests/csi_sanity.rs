//! The CSI driver's Identity and Controller services under kubernetes-csi's `csi-sanity`
//! (csi-test v5.4.0, built by scripts/setup) against the demo's API: every controller spec
//! passes. Left out, and said so: the node specs and the controller's "volume lifecycle" (it
//! stages the volume on the node), which need Linux's initiators: they run in the QEMU VM
//! (vm_csi.rs). The driver is given a dead API endpoint before the demo's, as a driver given
//! every storage node's API meets a node that is down: calls go on to the next.
//!
//! Shown with --nocapture: csi-sanity's summary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn csi_sanity() -> PathBuf {
    let dir = std::env::var("ALCUBIERRE_GO_BIN").unwrap_or("/var/tmp/alcubierre-go/bin".into());
    let bin = Path::new(&dir).join("csi-sanity");
    assert!(
        bin.exists(),
        "{} is missing: scripts/setup builds it (go install .../csi-test/v5/cmd/csi-sanity@v5.4.0)",
        bin.display()
    );
    bin
}

/// The numbers of csi-sanity's last line: passed, failed, pending, skipped.
fn summary(out: &str) -> Option<[u32; 4]> {
    let line = out.lines().rev().find(|l| l.contains(" Passed | "))?;
    let mut n = [0; 4];
    for (i, word) in ["Passed", "Failed", "Pending", "Skipped"]
        .iter()
        .enumerate()
    {
        let before = line.split(&format!(" {word}")).next()?;
        n[i] = before.rsplit(' ').next()?.parse().ok()?;
    }
    Some(n)
}

#[test]
fn csi_sanity_passes_the_controller_specs() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (_demo, ready) = common::spawn_ready(&[
        "demo".as_ref(),
        "--dir".as_ref(),
        dir.path().join("demo").as_os_str(),
    ]);
    let sock = dir.path().join("csi.sock");
    let driver = common::Proc(
        Command::new(common::workspace_binary("alcubierre-csi"))
            .arg("--endpoint")
            .arg(format!("unix://{}", sock.display()))
            .arg("--api")
            .arg(format!(
                "http://127.0.0.1:9,{}",
                ready["api"].as_str().unwrap()
            ))
            .args(["--token", ready["token"].as_str().unwrap()])
            .args(["--node-id", "csi-node-1"])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args([
                "--node-nqn",
                "nqn.2014-08.org.nvmexpress:uuid:a1c0b1e2-0000-4000-8000-0000000000c1",
            ])
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = Command::new(csi_sanity())
        .arg(format!("--csi.endpoint={}", sock.display()))
        .arg(format!(
            "--csi.mountdir={}",
            dir.path().join("mnt").display()
        ))
        .arg(format!(
            "--csi.stagingdir={}",
            dir.path().join("stage").display()
        ))
        .arg("--csi.testvolumesize=67108864")
        .arg("--csi.testvolumeexpandsize=134217728")
        .arg("--ginkgo.skip=Node Service|volume lifecycle")
        .arg("--ginkgo.no-color")
        .output()
        .unwrap();
    drop(driver);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let n = summary(&text).unwrap_or_else(|| panic!("no csi-sanity summary:\n{text}"));
    eprintln!(
        "csi-sanity (controller specs): {} passed, {} failed, {} pending, {} skipped",
        n[0], n[1], n[2], n[3]
    );
    assert!(
        n[1] == 0 && n[0] >= 50 && out.status.success(),
        "csi-sanity: {n:?}\n{text}"
    );
}

#[test]
fn the_summary_line_is_read() {
    assert_eq!(
        summary("x\nFAIL! -- 58 Passed | 2 Failed | 1 Pending | 31 Skipped\n"),
        Some([58, 2, 1, 31])
    );
    assert_eq!(summary("nothing"), None);
}

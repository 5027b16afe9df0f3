//! libiscsi's conformance suite (`iscsi-test-cu`, Debian's `libiscsi-bin`) against the demo's
//! replicated volume over iSCSI, with `--dataloss`, every family. The result of every test is
//! compared with the baseline in `testing/iscsi/baseline.txt`: a test that passed there and
//! fails or is skipped now, or that was skipped there and fails now, fails this test. `ISCSI_BASELINE_WRITE=1` rewrites the baseline from this run.
//! Without libiscsi's tools (Debian's `libiscsi-bin`, which `scripts/setup` installs) the tests
//! fail, naming the tool.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

/// A test's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Fail,
    Skip,
    Pass,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Skip => "SKIP",
            Verdict::Fail => "FAIL",
        }
    }
}

/// Each test's result from iscsi-test-cu's verbose output: `Suite.Test` -> verdict. A test
/// runs from its "  Test: NAME ..." line to the first "passed" or "FAILED" after it; one that
/// passed after printing "[SKIPPED]" was skipped. A test that runs in several families keeps
/// its worst verdict.
fn results(out: &str) -> BTreeMap<String, Verdict> {
    let mut found: BTreeMap<String, Verdict> = BTreeMap::new();
    let mut suite = "";
    let mut rest = out;
    loop {
        let next_suite = rest.find("\nSuite: ");
        let next_test = rest.find("  Test: ");
        match (next_suite, next_test) {
            (Some(s), t) if t.is_none_or(|t| s < t) => {
                let line = &rest[s + 8..];
                suite = line.split('\n').next().unwrap_or("").trim();
                rest = &rest[s + 8..];
            }
            (_, Some(t)) => {
                let body = &rest[t + 8..];
                let name = body.split(" ...").next().unwrap_or("").trim();
                // The verdict "FAILED", not a test's own "[FAILED] ..." log line.
                let f = body
                    .match_indices("FAILED")
                    .map(|(i, _)| i)
                    .find(|&i| i == 0 || body.as_bytes()[i - 1] != b'[');
                let p = body.find("passed");
                let (end, verdict) = match (p, f) {
                    (Some(p), Some(f)) if f < p => (f, Verdict::Fail),
                    (Some(p), _) => (p, Verdict::Pass),
                    (None, Some(f)) => (f, Verdict::Fail),
                    (None, None) => (body.len(), Verdict::Fail),
                };
                let verdict = if verdict == Verdict::Pass && body[..end].contains("[SKIPPED]") {
                    Verdict::Skip
                } else {
                    verdict
                };
                let e = found.entry(format!("{suite}.{name}")).or_insert(verdict);
                *e = (*e).min(verdict);
                rest = &body[end..];
            }
            _ => break,
        }
    }
    found
}

/// Fails the test when libiscsi's `tool` is not installed, naming it and how to get it.
fn require(tool: &str) {
    if let Err(e) = Command::new(tool).arg("--help").output() {
        panic!("{tool} cannot run ({e}): install Debian's libiscsi-bin (scripts/setup, as root)");
    }
}

#[test]
fn libiscsi_conformance_does_not_regress() {
    require("iscsi-test-cu");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (_demo, ready) =
        common::spawn_ready(&["demo".as_ref(), "--dir".as_ref(), dir.path().as_os_str()]);
    patient_lease(&ready);
    let url = ready["iscsi_url"].as_str().unwrap();
    let out = Command::new("iscsi-test-cu")
        .args(["--dataloss", "-v", url])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Run Summary"),
        "iscsi-test-cu did not finish ({}): {}\n{}",
        out.status,
        &text[text.len().saturating_sub(4000)..],
        String::from_utf8_lossy(&out.stderr)
    );
    let now = results(&text);
    let count = |v: Verdict| now.values().filter(|&&x| x == v).count();
    eprintln!(
        "iscsi-test-cu: {} tests, {} passed, {} failed, {} skipped",
        now.len(),
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Skip)
    );
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testing/iscsi/baseline.txt"
    );
    if std::env::var("ISCSI_BASELINE_WRITE").as_deref() == Ok("1") {
        let mut text = String::from(
            "# iscsi-test-cu --dataloss against the demo's volume: PASS, SKIP or FAIL per Suite.Test\n\
             # (crates/cli/tests/iscsi_conformance.rs; ISCSI_BASELINE_WRITE=1 rewrites it)\n",
        );
        for (t, v) in &now {
            text.push_str(&format!("{} {t}\n", v.word()));
        }
        std::fs::write(path, text).unwrap();
        return;
    }
    let baseline = std::fs::read_to_string(path).unwrap();
    let mut regressed = Vec::new();
    let mut newly = Vec::new();
    for line in baseline.lines().filter(|l| !l.starts_with('#')) {
        let Some((verdict, test)) = line.split_once(' ') else {
            continue;
        };
        let got = now.get(test).copied().unwrap_or(Verdict::Fail);
        match verdict {
            "PASS" if got != Verdict::Pass => regressed.push(format!("{test} ({})", got.word())),
            "SKIP" if got == Verdict::Fail => regressed.push(format!("{test} (FAIL)")),
            "FAIL" | "SKIP" if got == Verdict::Pass => newly.push(test.to_string()),
            _ => {}
        }
    }
    if !newly.is_empty() {
        eprintln!("now passing (update the baseline): {}", newly.join(", "));
    }
    if !regressed.is_empty() {
        // What the tool said of each regressed test, and its whole output kept for a look.
        let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("iscsi-test-cu.log");
        let _ = std::fs::write(&kept, text.as_bytes());
        let said: Vec<String> = regressed
            .iter()
            .filter_map(|t| {
                let name = t.split(" (").next()?.rsplit('.').next()?;
                let at = text.find(&format!("  Test: {name} ..."))?;
                let end = text[at + 1..]
                    .find("  Test: ")
                    .map_or(text.len(), |e| at + 1 + e);
                Some(text[at..end.min(at + 2000)].to_string())
            })
            .collect();
        panic!(
            "tests that passed in the baseline fail now: {}\n{}\n(the whole output: {})",
            regressed.join(", "),
            said.join(""),
            kept.display()
        );
    }
}

/// The LU is one across the cluster: libiscsi's MultipathIO family (Simple, Reset,
/// CompareAndWrite, CompareAndWriteAsync) through two nodes' portals of the demo volume, for
/// each pair of the three nodes (this libiscsi takes two paths per run): a LOGICAL UNIT RESET
/// through one node gives every nexus on both a unit attention, writes through one are read
/// through the other, COMPARE AND WRITE holds across them. Every test must pass, none skipped.
#[test]
fn multipath_io_passes_through_every_pair_of_nodes() {
    require("iscsi-test-cu");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (_demo, ready) =
        common::spawn_ready(&["demo".as_ref(), "--dir".as_ref(), dir.path().as_os_str()]);
    let urls: Vec<&str> = ready["iscsi_urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), 3, "{ready}");
    patient_lease(&ready);
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        zero_block_256(&ready);
        let out = Command::new("iscsi-test-cu")
            .args([
                "--dataloss",
                "-v",
                "--test=ALL.MultipathIO",
                urls[a],
                urls[b],
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let r = results(&text);
        eprintln!(
            "MultipathIO through node {} and node {}: {r:?}",
            a + 1,
            b + 1
        );
        assert_eq!(r.len(), 4, "{text}");
        assert!(
            r.values().all(|v| *v == Verdict::Pass),
            "paths {a} and {b}: {r:?}\n{text}"
        );
    }
}

/// libiscsi's CompareAndWrite writes zeroes over blocks 0..256 but then compares blocks 0..=256:
/// block 256 must read as zeroes before each run (it does on a new volume, not after a run).
/// These tests judge SCSI semantics, not failover timing: libiscsi's tests do not retry a
/// command that meets NOT READY / ASYMMETRIC ACCESS STATE TRANSITION, which a primary answers
/// while its store lease (half the heartbeat timeout) has run out. On a 2-core CI machine with
/// two demos, libiscsi and the build at once, a heartbeat round trip can stall past the
/// default 2.5 s lease; a 30 s timeout (15 s lease) keeps such a stall from failing a test.
/// The lease's own behaviour is tested by the partition and failover tests.
fn patient_lease(ready: &serde_json::Value) {
    let api = ready["api"].as_str().unwrap().trim_start_matches("http://");
    let token = ready["token"].as_str().unwrap();
    let (status, body) = common::http(
        api,
        "PATCH",
        "/api/v1/cluster/config",
        token,
        r#"{"heartbeat_timeout_ms":30000}"#,
    );
    assert_eq!(status, 200, "setting the heartbeat timeout: {body}");
    let (status, body) = common::http(api, "GET", "/api/v1/cluster/config", token, "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"heartbeat_timeout_ms\":30000"), "{body}");
}

fn zero_block_256(ready: &serde_json::Value) {
    use alcubierre_nvmf::initiator::{cmd, HostConfig, HostController};
    let addr = ready["primary_addr"].as_str().unwrap().parse().unwrap();
    let nqn = ready["nqn"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = HostController::connect(addr, &nqn, &HostConfig::default(), 1)
            .await
            .unwrap();
        let (_, bs) = c.namespace().await.unwrap();
        let zeroes = bytes::Bytes::from(vec![0u8; bs as usize]);
        c.io[0]
            .execute(cmd::write(256, 1), Some(zeroes), 0)
            .await
            .unwrap()
            .ok()
            .unwrap();
    });
}

#[test]
fn the_output_parser_tells_passes_skips_and_failures() {
    let out = "     CUnit - A unit testing framework\n\
        \nSuite: Inquiry\n  Test: Standard ...passed\n  Test: BlockLimits ...FAILED\n    1. x.c:1  - CU_ASSERT\n\
        \nSuite: Multipathio\n  Test: Simple ...    [SKIPPED] Multipath unavailable. Skipping test\npassed    [SKIPPED] PERSISTENT RESERVE IN is not implemented.\n  Test: Reset ...    [FAILED] WRITE10 failed\nFAILED\n\
        \nSuite: Inquiry\n  Test: Standard ...    [FAILED] again\nFAILED\n\
        \nSuite: iSCSIdatasn\n  Test: DataSn ...    [FAILED] WRITE10 failed, as it should\npassed\nRun Summary:";
    let r = results(out);
    assert_eq!(r["Inquiry.Standard"], Verdict::Fail, "worst of two runs");
    assert_eq!(r["Inquiry.BlockLimits"], Verdict::Fail);
    assert_eq!(r["Multipathio.Simple"], Verdict::Skip);
    assert_eq!(r["Multipathio.Reset"], Verdict::Fail);
    assert_eq!(
        r["iSCSIdatasn.DataSn"],
        Verdict::Pass,
        "a logged [FAILED] is not the verdict"
    );
    assert_eq!(r.len(), 5);
}

/// SendTargets on any node lists the volume on every node holding a replica, each portal with
/// its node's target portal group tag; libiscsi's `iscsi-ls` asks each portal in turn.
#[test]
fn send_targets_on_every_node_lists_every_nodes_portal() {
    require("iscsi-ls");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (_demo, ready) =
        common::spawn_ready(&["demo".as_ref(), "--dir".as_ref(), dir.path().as_os_str()]);
    // iscsi://host:port/iqn/0
    let url = ready["iscsi_url"].as_str().unwrap();
    let rest = url.strip_prefix("iscsi://").unwrap();
    let (portal, target) = rest.split_once('/').unwrap();
    let target = target.trim_end_matches("/0");
    let list = |portal: &str| {
        let out = Command::new("iscsi-ls")
            .arg(format!("iscsi://{portal}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "iscsi-ls {portal}: {out:?}");
        let mut found: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (t, p) = l.strip_prefix("Target:")?.split_once(" Portal:")?;
                Some((t.to_string(), p.to_string()))
            })
            .collect();
        found.sort();
        found
    };
    let first = list(portal);
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(first.iter().all(|(t, _)| t == target), "{first:?}");
    let mut tags: Vec<&str> = first
        .iter()
        .map(|(_, p)| p.rsplit_once(',').unwrap().1)
        .collect();
    tags.sort();
    tags.dedup();
    assert_eq!(
        tags,
        ["1", "2", "3"],
        "one portal group per node: {first:?}"
    );
    assert!(
        first
            .iter()
            .any(|(_, p)| p.starts_with(&format!("{portal},"))),
        "{first:?}"
    );
    // Every node answers the same, once its agent has exported the volume (the demo is ready
    // when the first node serves it; the others follow within moments).
    for (_, p) in &first {
        let addr = p.rsplit_once(',').unwrap().0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut got = list(addr);
        while got != first && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
            got = list(addr);
        }
        assert_eq!(got, first, "SendTargets on {addr}");
    }
}

/// A volume's host with CHAP and mutual CHAP credentials set through the operator's CLI: its
/// initiator logs in only with its own secret and only accepts the target that proves the
/// target secret (libiscsi's `iscsi-inq`, `target_user` / `target_password` in the URL);
/// another initiator name is refused.
#[test]
fn mutual_chap_credentials_come_from_the_control_plane() {
    require("iscsi-inq");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (_demo, ready) =
        common::spawn_ready(&["demo".as_ref(), "--dir".as_ref(), dir.path().as_os_str()]);
    let (api, token) = (
        ready["api"].as_str().unwrap(),
        ready["token"].as_str().unwrap(),
    );
    let iqn = "iqn.2024-01.org.example:mutual";
    let (ok, _, err) = common::cli(
        api,
        token,
        &[
            "host",
            "set",
            "h1",
            "--iqn",
            iqn,
            "--chap-user",
            "h1user",
            "--chap-secret",
            "host-secret-1",
            "--target-chap-user",
            "tgtuser",
            "--target-chap-secret",
            "target-secret-2",
        ],
    );
    assert!(ok, "{err}");
    // The same secret both ways is refused, naming the field.
    let (ok, _, err) = common::cli(
        api,
        token,
        &[
            "host",
            "set",
            "h2",
            "--iqn",
            iqn,
            "--chap-user",
            "u",
            "--chap-secret",
            "same-secret-3",
            "--target-chap-user",
            "t",
            "--target-chap-secret",
            "same-secret-3",
        ],
    );
    assert!(!ok && err.contains("target_chap"), "{err}");
    let volume = ready["volume"].as_str().unwrap();
    let (ok, _, err) = common::cli(api, token, &["volume", "hosts", volume, "h1"]);
    assert!(ok, "{err}");
    let url = ready["iscsi_url"].as_str().unwrap();
    let rest = url.strip_prefix("iscsi://").unwrap();
    let inq = |initiator: &str, user: &str, target: Option<(&str, &str)>| {
        let mut u = format!("iscsi://{user}@{rest}");
        if let Some((t, p)) = target {
            u.push_str(&format!("?target_user={t}&target_password={p}"));
        }
        Command::new("iscsi-inq")
            .args(["-i", initiator, &u])
            .output()
            .unwrap()
    };
    // The agents apply the new access rules within a reconcile.
    let t0 = std::time::Instant::now();
    loop {
        let o = inq(
            iqn,
            "h1user%host-secret-1",
            Some(("tgtuser", "target-secret-2")),
        );
        if o.status.success() {
            assert!(String::from_utf8_lossy(&o.stdout).contains("ALCUBIER"));
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(15),
            "mutual CHAP login failed: {o:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // One-way CHAP with the right secret still works (the host need not ask).
    assert!(inq(iqn, "h1user%host-secret-1", None).status.success());
    // The target does not know the secret the initiator expects: the initiator refuses it.
    assert!(!inq(
        iqn,
        "h1user%host-secret-1",
        Some(("tgtuser", "wrong-secret-9"))
    )
    .status
    .success());
    // A wrong host secret, or another initiator name: refused.
    assert!(!inq(iqn, "h1user%wrong-secret-8", None).status.success());
    assert!(!inq(
        "iqn.2024-01.org.example:other",
        "h1user%host-secret-1",
        None
    )
    .status
    .success());
}

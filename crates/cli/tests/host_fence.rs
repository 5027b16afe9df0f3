//! Host HA against the demo's API: a host agent's heartbeats make its host alive; fencing an
//! alive host, or one without an agent, is refused (it would cut off what runs there) unless
//! forced; a host whose
//! heartbeats stopped for the liveness timeout is shown lost and fenced: force-detached from
//! every volume, its reservations' removal confirmed by the volume's primary. Bad requests name
//! the field.

mod common;

use common::{cli, http};

#[test]
fn a_lost_host_is_fenced_and_a_live_one_only_when_forced() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (_demo, ready) =
        common::spawn_ready(&["demo".as_ref(), "--dir".as_ref(), dir.path().as_os_str()]);
    let api = ready["api"].as_str().unwrap().trim_start_matches("http://");
    let token = ready["token"].as_str().unwrap();
    let call = |m: &str, p: &str, b: &str| http(api, m, p, token, b);
    let url = format!("http://{api}");

    for h in ["h1", "h2"] {
        let (st, b) = call(
            "PUT",
            &format!("/api/v1/volumes/demo/attachments/{h}"),
            &format!(
                r#"{{"nqn":"nqn.2014-08.org.nvmexpress:uuid:a1c0b1e2-0000-4000-8000-00000000000{}"}}"#,
                &h[1..]
            ),
        );
        assert_eq!(st, 200, "{b}");
    }
    // A host whose agent never reported has no liveness, and cannot be told failed: fencing
    // it needs force.
    let (st, b) = call("GET", "/api/v1/hosts/h2", "");
    assert_eq!(st, 200, "{b}");
    assert!(!b.contains("liveness"), "{b}");
    let (ok, _, err) = cli(&url, token, &["host", "fence", "h2"]);
    assert!(!ok && err.contains("no agent reporting"), "{err}");

    let (st, b) = call(
        "PUT",
        "/api/v1/hosts/h1/heartbeat",
        r#"{"agent":"alcubierre-node test"}"#,
    );
    assert_eq!(st, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (v["alive"].as_bool(), v["timeout_ms"].as_u64()),
        (Some(true), Some(10_000))
    );
    let (ok, out, err) = cli(&url, token, &["host", "list"]);
    assert!(ok, "{err}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(row("h1").ends_with("alive"), "{out}");
    assert!(row("h2").ends_with('-'), "{out}");

    // Fencing a live host: refused, naming why; nothing detached.
    let (ok, _, err) = cli(&url, token, &["host", "fence", "h1"]);
    assert!(!ok);
    assert!(err.contains("is alive") && err.contains("409"), "{err}");
    let (_, b) = call("GET", "/api/v1/volumes/demo", "");
    assert!(b.contains("\"h1\""), "{b}");

    // Heartbeats stop: after the timeout the host is lost and is fenced without force.
    std::thread::sleep(std::time::Duration::from_millis(10_500));
    let (_, b) = call("GET", "/api/v1/hosts/h1", "");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["liveness"]["alive"], false, "{b}");
    let (ok, out, err) = cli(&url, token, &["--json", "host", "fence", "h1"]);
    assert!(ok, "{err}");
    let f: serde_json::Value = serde_json::from_str(&out).unwrap();
    let d = &f["detached"].as_array().unwrap()[0];
    assert_eq!(
        (d["was_attached"].as_bool(), d["fence"].as_str()),
        (Some(true), Some("done")),
        "{out}"
    );
    // A live host, forced.
    call(
        "PUT",
        "/api/v1/hosts/h2/heartbeat",
        r#"{"agent":"alcubierre-node test"}"#,
    );
    let (ok, out, err) = cli(&url, token, &["host", "fence", "h2", "--even-if-alive"]);
    assert!(ok, "{err}");
    assert!(out.contains("fenced host h2"), "{out}");
    let (_, b) = call("GET", "/api/v1/volumes/demo", "");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["hosts"], serde_json::json!([]), "{b}");
    // Fencing again finds nothing attached.
    let (ok, out, _) = cli(
        &url,
        token,
        &["--json", "host", "fence", "h2", "--even-if-alive"],
    );
    assert!(ok && out.contains("\"detached\": []"), "{out}");

    // Bad requests.
    let (st, b) = call("POST", "/api/v1/hosts/nobody/fence", "");
    assert_eq!(st, 404, "{b}");
    assert!(b.contains("no host named \\\"nobody\\\""), "{b}");
    let (st, b) = call(
        "PUT",
        "/api/v1/hosts/h1/heartbeat",
        r#"{"agent":"x","up":1}"#,
    );
    assert_eq!(st, 400, "{b}");
    assert!(b.contains("up"), "{b}");
    let (st, b) = call("POST", "/api/v1/hosts/h1/fence?force=maybe", "");
    assert_eq!(st, 400, "{b}");
    assert!(b.contains("force"), "{b}");
}

//! Shared helpers of the binary's tests: start `alcubierre` and read its JSON ready line; a
//! minimal HTTP/1.1 request.
#![allow(dead_code)]

pub mod certs;
pub mod cluster;
pub mod netns;
pub mod vm;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

/// A started process, killed (by its PID) when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `alcubierre --json <args>` and returns it with the JSON line it prints when ready.
pub fn spawn_ready<S: AsRef<OsStr>>(args: &[S]) -> (Proc, serde_json::Value) {
    spawn_ready_in(None, args)
}

/// [`spawn_ready`] inside network namespace `netns` (`ip netns exec` replaces itself with the
/// program, so the PID is alcubierre's).
pub fn spawn_ready_in<S: AsRef<OsStr>>(
    netns: Option<&str>,
    args: &[S],
) -> (Proc, serde_json::Value) {
    let bin = env!("CARGO_BIN_EXE_alcubierre");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, bin]);
            c
        }
        None => Command::new(bin),
    };
    let mut child = cmd
        .arg("--json")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v = serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
    (Proc(child), v)
}

/// Runs the operator command `alcubierre ARGS` against the API at `api` with `token`: whether
/// it succeeded, its stdout and its stderr.
pub fn cli(api: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_alcubierre"))
        .args(args)
        .env("ALCUBIERRE_API", api)
        .env("ALCUBIERRE_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One HTTP request with a bearer token; returns the status and the body.
pub fn http(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    (
        status,
        out.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    )
}

/// A binary of the workspace built beside `alcubierre` (scripts/check builds every binary
/// first; by hand: cargo build --workspace).
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_alcubierre"))
        .parent()
        .unwrap()
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        bin.display()
    );
    bin
}

/// An example program of the workspace (`cargo build --workspace --examples`; scripts/check
/// builds them first).
pub fn workspace_example(name: &str) -> std::path::PathBuf {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_alcubierre"))
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: build the examples first (cargo build --workspace --examples)",
        bin.display()
    );
    bin
}

//! NVMe reservations are the volume's, on every path and across a failover: three `serve`
//! processes on a real etcd; host A holds a Write Exclusive reservation taken through the
//! primary's path; host B, on a follower's path (its I/O forwarded to the primary), is fenced;
//! the primary is killed; on the surviving path the reservation still holds; B preempts A, and
//! then A is fenced.

mod common;

use common::cluster::*;

use std::time::{Duration, Instant};

use alcubierre_nvmf::capsule::Sqe;
use alcubierre_nvmf::initiator::{cmd, Completion, HostConfig, HostController, InitiatorError};
use alcubierre_nvmf::spec::io_op;
use alcubierre_nvmf::status::Status;
use alcubierre_store::testing::EtcdServer;
use alcubierre_store::Store;
use bytes::Bytes;

const A_KEY: u64 = 0xaa;
const B_KEY: u64 = 0xbb;
/// RTYPE Write Exclusive.
const WRITE_EXCLUSIVE: u32 = 1;

fn host(n: u8) -> HostConfig {
    HostConfig {
        hostnqn: format!("nqn.2014-08.org.example:host-{n}"),
        hostid: [n; 16],
        ..HostConfig::default()
    }
}

fn keys(a: u64, b: u64) -> Bytes {
    let mut d = a.to_le_bytes().to_vec();
    d.extend_from_slice(&b.to_le_bytes());
    Bytes::from(d)
}

async fn exec(
    c: &mut HostController,
    sqe: Sqe,
    data: Option<Bytes>,
    len: u32,
) -> Result<Completion, Status> {
    match c.io[0].execute(sqe, data, len).await.unwrap().ok() {
        Ok(r) => Ok(r),
        Err(InitiatorError::Status { status, .. }) => Err(status),
        Err(e) => panic!("{e}"),
    }
}

fn status(r: Result<impl std::fmt::Debug, InitiatorError>) -> Result<(), Status> {
    match r {
        Ok(_) => Ok(()),
        Err(InitiatorError::Status { status, .. }) => Err(status),
        Err(e) => panic!("{e}"),
    }
}

async fn register(c: &mut HostController, key: u64) -> Result<Completion, Status> {
    exec(c, cmd::new(io_op::RESV_REGISTER, 1), Some(keys(0, key)), 0).await
}

/// Acquire (`action` 0) or preempt (1) a Write Exclusive reservation.
async fn acquire(
    c: &mut HostController,
    action: u32,
    key: u64,
    preempt: u64,
) -> Result<Completion, Status> {
    let mut sqe = cmd::new(io_op::RESV_ACQUIRE, 1);
    sqe.set_cdw(10, action | (WRITE_EXCLUSIVE << 8));
    exec(c, sqe, Some(keys(key, preempt)), 0).await
}

/// Reservation Report (extended): (generation, type, [(host id byte, key, holds)]).
async fn report(c: &mut HostController) -> (u32, u8, Vec<(u8, u64, bool)>) {
    let mut sqe = cmd::new(io_op::RESV_REPORT, 1);
    sqe.set_cdw(10, 4096 / 4 - 1);
    sqe.set_cdw(11, 1);
    let d = exec(c, sqe, None, 4096).await.unwrap().data;
    let n = u16::from_le_bytes([d[5], d[6]]) as usize;
    let regs = (0..n)
        .map(|i| {
            let e = &d[64 + i * 64..128 + i * 64];
            let key = u64::from_le_bytes(e[8..16].try_into().unwrap());
            (e[16], key, e[2] & 1 == 1)
        })
        .collect();
    (u32::from_le_bytes(d[0..4].try_into().unwrap()), d[4], regs)
}

fn block(i: u8) -> Bytes {
    Bytes::from(vec![i; 4096])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_hold_on_every_path_and_survive_failover() {
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut procs, ready, apis, store, v) =
        three_nodes_and_a_volume(dir.path(), &etcd, "pr").await;
    let id = v["id"].as_str().unwrap().to_string();
    let nqn = alcubierre_nvmf::volume_nqn(alcubierre_types::VolumeId(id.parse().unwrap()));
    let primary = v["primary"].as_str().unwrap().to_string();
    let other = (1..=3)
        .map(|i| format!("node-{i}"))
        .find(|n| *n != primary)
        .unwrap();
    let connect = |name: &str, h: HostConfig| {
        let addr: std::net::SocketAddr = ready[node_index(name)]["listening"][0]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let nqn = nqn.clone();
        async move {
            eventually(10, "the volume exported", || async {
                HostController::connect(addr, &nqn, &h, 1).await.ok()
            })
            .await
        }
    };
    // A has a path to the primary and one to a follower; B only the follower's.
    let mut a = connect(&primary, host(0xa)).await;
    let mut a2 = connect(&other, host(0xa)).await;
    let mut b = connect(&other, host(0xb)).await;
    let start = Instant::now();
    while b.read(0, 0, 1, 4096).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the follower's path forwards"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    register(&mut a, A_KEY).await.unwrap();
    // B registers through the follower: the command runs on the primary.
    register(&mut b, B_KEY).await.unwrap();
    acquire(&mut a, 0, A_KEY, 0).await.unwrap();
    assert_eq!(
        status(b.write(0, 8, block(2), 4096).await),
        Err(Status::RESERVATION_CONFLICT),
        "B's forwarded write is checked against A's reservation"
    );
    b.read(0, 8, 1, 4096).await.unwrap();
    a2.write(0, 8, block(1), 4096).await.unwrap();
    let (generation, rtype, regs) = report(&mut b).await;
    assert_eq!(rtype, WRITE_EXCLUSIVE as u8);
    assert_eq!(generation, 2, "two registrations");
    assert_eq!(regs, vec![(0xa, A_KEY, true), (0xb, B_KEY, false)]);
    assert!(
        store
            .get(&format!("reservations/{id}"))
            .await
            .unwrap()
            .is_some(),
        "the primary saved the reservations in the store"
    );
    // A host registered elsewhere cannot take the reservation, on any path.
    assert_eq!(
        acquire(&mut b, 0, B_KEY, 0).await.map(|_| ()),
        Err(Status::RESERVATION_CONFLICT)
    );
    drop(a);

    let pidx = node_index(&primary);
    procs[pidx].0.kill().unwrap();
    procs[pidx].0.wait().unwrap();
    let killed = Instant::now();
    loop {
        match a2.write(0, 16, block(1), 4096).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    killed.elapsed() < Duration::from_secs(20),
                    "no failover: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    eprintln!(
        "failover: A's write went through {:?} after the kill",
        killed.elapsed()
    );
    // The new primary started from the store's record.
    assert_eq!(
        status(b.write(0, 16, block(2), 4096).await),
        Err(Status::RESERVATION_CONFLICT),
        "the reservation survived the failover"
    );
    let (generation, rtype, regs) = report(&mut b).await;
    assert_eq!((generation, rtype), (2, WRITE_EXCLUSIVE as u8));
    assert_eq!(regs, vec![(0xa, A_KEY, true), (0xb, B_KEY, false)]);

    // B preempts A: A is unregistered and fenced, B writes.
    acquire(&mut b, 1, B_KEY, A_KEY).await.unwrap();
    assert_eq!(
        status(a2.write(0, 24, block(1), 4096).await),
        Err(Status::RESERVATION_CONFLICT),
        "the preempted host is fenced"
    );
    b.write(0, 24, block(2), 4096).await.unwrap();
    let (generation, _, regs) = report(&mut a2).await;
    assert_eq!(generation, 3);
    assert_eq!(regs, vec![(0xb, B_KEY, true)]);
    assert_eq!(b.read(0, 8, 1, 4096).await.unwrap(), block(1));
    assert_eq!(b.read(0, 16, 1, 4096).await.unwrap(), block(1));

    // Deleting the volume deletes its reservations.
    let live = apis[(0..3).find(|i| *i != pidx).unwrap()].clone();
    let (code, body) = call(&live, "DELETE", &format!("/api/v1/volumes/{id}"), "").await;
    assert!(code < 300, "{code} {body}");
    assert!(store
        .get(&format!("reservations/{id}"))
        .await
        .unwrap()
        .is_none());
}

/// `[n; 16]` as a UUID.
fn uuid_of(n: u8) -> String {
    let h: String = std::iter::repeat_n(format!("{n:02x}"), 16).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A force detach fences a failed host: its paths end and the volume's primary removes its
/// registrations (saved in the store), so another host takes the reservation without it. A plain
/// detach leaves them. Host A gives its Host Identifier when it attaches; host B's is found
/// from its `uuid:` NQN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_detach_fences_the_host_off_its_reservations() {
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (_procs, ready, apis, store, v) =
        three_nodes_and_a_volume(dir.path(), &etcd, "fence").await;
    let id = v["id"].as_str().unwrap().to_string();
    let nqn = alcubierre_nvmf::volume_nqn(alcubierre_types::VolumeId(id.parse().unwrap()));
    let primary = v["primary"].as_str().unwrap().to_string();
    let other = (1..=3)
        .map(|i| format!("node-{i}"))
        .find(|n| *n != primary)
        .unwrap();
    let api = &apis[0];
    let a_host = host(0xa);
    let b_host = HostConfig {
        hostnqn: format!("nqn.2014-08.org.nvmexpress:uuid:{}", uuid_of(0xb)),
        ..host(0xb)
    };
    let attach = |name: &str, body: String| {
        let path = format!("/api/v1/volumes/{id}/attachments/{name}");
        async move { json_call(api, "PUT", &path, &body).await }
    };
    attach(
        "host-a",
        format!(
            r#"{{"nqn":"{}","nvme_hostid":"{}"}}"#,
            a_host.hostnqn,
            uuid_of(0xa).to_uppercase()
        ),
    )
    .await;
    attach("host-b", format!(r#"{{"nqn":"{}"}}"#, b_host.hostnqn)).await;
    let connect = |name: &str, h: HostConfig| {
        let addr: std::net::SocketAddr = ready[node_index(name)]["listening"][0]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let nqn = nqn.clone();
        async move {
            eventually(10, "the volume exported to the host", || async {
                let mut c = HostController::connect(addr, &nqn, &h, 1).await.ok()?;
                c.read(0, 0, 1, 4096).await.ok()?;
                Some(c)
            })
            .await
        }
    };
    let mut a = connect(&primary, a_host.clone()).await;
    let mut b = connect(&other, b_host.clone()).await;
    register(&mut a, A_KEY).await.unwrap();
    register(&mut b, B_KEY).await.unwrap();
    acquire(&mut a, 0, A_KEY, 0).await.unwrap();
    assert_eq!(
        status(b.write(0, 8, block(2), 4096).await),
        Err(Status::RESERVATION_CONFLICT)
    );

    // A plain detach ends A's paths but leaves its reservation.
    let d = json_call(
        api,
        "DELETE",
        &format!("/api/v1/volumes/{id}/attachments/host-a"),
        "",
    )
    .await;
    assert_eq!(d["was_attached"], true, "{d}");
    assert!(d.get("fence").is_none(), "{d}");
    let start = Instant::now();
    while a.read(0, 0, 1, 4096).await.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "A's path goes on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, rtype, regs) = report(&mut b).await;
    assert_eq!(rtype, WRITE_EXCLUSIVE as u8);
    assert_eq!(regs, vec![(0xa, A_KEY, true), (0xb, B_KEY, false)]);
    assert_eq!(
        acquire(&mut b, 0, B_KEY, 0).await.map(|_| ()),
        Err(Status::RESERVATION_CONFLICT)
    );

    // The force detach (A is no longer attached: it fences all the same) removes A's
    // registration and the reservation it held, confirmed by the primary.
    let d = json_call(
        api,
        "DELETE",
        &format!("/api/v1/volumes/{id}/attachments/host-a?force=true"),
        "",
    )
    .await;
    assert_eq!(d["was_attached"], false, "{d}");
    assert_eq!(d["fence"], "done", "{d}");
    assert!(store
        .get(&format!("fences/{id}/host-a"))
        .await
        .unwrap()
        .is_none());
    let (_, rtype, regs) = report(&mut b).await;
    assert_eq!(rtype, 0, "the reservation A held is released");
    assert_eq!(regs, vec![(0xb, B_KEY, false)]);
    acquire(&mut b, 0, B_KEY, 0).await.unwrap();
    b.write(0, 8, block(2), 4096).await.unwrap();

    // B, found by the UUID of its NQN, is fenced in turn.
    let d = json_call(
        api,
        "DELETE",
        &format!("/api/v1/volumes/{id}/attachments/host-b?force=true"),
        "",
    )
    .await;
    assert_eq!(
        (&d["was_attached"], &d["fence"]),
        (&true.into(), &"done".into()),
        "{d}"
    );
    // A fenced host comes back by attaching again.
    attach("host-a", "{}".into()).await;
    let mut a = connect(&other, a_host).await;
    let (generation, rtype, regs) = report(&mut a).await;
    assert_eq!((rtype, regs), (0, vec![]), "generation {generation}");

    // Bad requests name what is wrong.
    let (code, body) = call(
        api,
        "DELETE",
        &format!("/api/v1/volumes/{id}/attachments/nobody?force=true"),
        "",
    )
    .await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = call(
        api,
        "DELETE",
        &format!("/api/v1/volumes/{id}/attachments/host-a?force=maybe"),
        "",
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = call(
        api,
        "PUT",
        &format!("/api/v1/volumes/{id}/attachments/host-c"),
        r#"{"nqn":"nqn.2014-08.org.example:c","nvme_hostid":"not-a-uuid"}"#,
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("nvme_hostid"), "{body}");
}

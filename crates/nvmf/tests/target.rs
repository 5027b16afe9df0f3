//! End-to-end tests of the target over loopback TCP with the crate's initiator. Each test cites
//! the spec section whose behaviour it checks.

use std::sync::Arc;
use std::time::Duration;

use alcubierre_block::{MemBlockDevice, Reserved};
use alcubierre_nvmf::capsule::Sqe;
use alcubierre_nvmf::initiator::{
    cmd, Completion, HostConfig, HostController, HostQueue, InitiatorError,
};
use alcubierre_nvmf::pdu::{Digests, Pdu};
use alcubierre_nvmf::spec::{admin_op, cns, feat, fes, io_op, log_id, prop};
use alcubierre_nvmf::{
    AnaState, HostAcl, Listener, Portal, Status, Subsystem, Target, TargetConfig,
};
use alcubierre_types::{BlockSize, ByteSize, Lba, VolumeGeometry, VolumeId};
use bytes::Bytes;

struct Setup {
    listener: Listener,
    target: Arc<Target>,
    subsys: Arc<Subsystem>,
}

impl Setup {
    /// A host with the default config and one I/O queue.
    async fn connect(&self) -> HostController {
        HostController::connect(
            self.listener.local_addr(),
            &self.subsys.nqn,
            &HostConfig::default(),
            1,
        )
        .await
        .unwrap()
    }
}

async fn setup(acl: HostAcl) -> Setup {
    let g = VolumeGeometry::new(BlockSize::B4096, ByteSize::mib(64)).unwrap();
    let target = Arc::new(Target::new(TargetConfig {
        portals: vec![Portal {
            addr: "192.0.2.10".into(),
            port: 4420,
            port_id: 1,
        }],
        ..TargetConfig::default()
    }));
    let subsys = Arc::new(Subsystem::new(
        VolumeId::random(),
        Arc::new(Reserved::volatile(MemBlockDevice::new(g))),
        acl,
        1,
    ));
    target.add_subsystem(subsys.clone());
    let listener = Listener::bind(target.clone(), "127.0.0.1:0".parse().unwrap(), 1)
        .await
        .unwrap();
    Setup {
        listener,
        target,
        subsys,
    }
}

fn pattern(seed: u8, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>(),
    )
}

async fn ok(q: &mut HostQueue, sqe: Sqe, out: Option<Bytes>, in_len: u32) -> Completion {
    q.execute(sqe, out, in_len).await.unwrap().ok().unwrap()
}

async fn err(q: &mut HostQueue, sqe: Sqe, out: Option<Bytes>, in_len: u32) -> Status {
    status_of(q.execute(sqe, out, in_len).await.unwrap().ok())
}

fn status_of(r: Result<impl std::fmt::Debug, InitiatorError>) -> Status {
    match r {
        Err(InitiatorError::Status { status, .. }) => status,
        other => panic!("expected a status error, got {other:?}"),
    }
}

#[tokio::test]
async fn discovery_lists_the_subsystem_on_the_advertised_portal() {
    // Fabrics 1.1 section 5.3: discovery log entries carry the reachable address, not the
    // listener's view.
    let s = setup(HostAcl::Any).await;
    let e = HostController::discover(s.listener.local_addr(), &HostConfig::default())
        .await
        .unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].subnqn, s.subsys.nqn);
    assert_eq!(e[0].traddr, "192.0.2.10");
    assert_eq!(e[0].trsvcid, "4420");
    assert_eq!(
        s.target.controller_count(),
        0,
        "discovery controller gone after disconnect"
    );
}

#[tokio::test]
async fn discovery_log_changes_are_announced_to_persistent_discovery_controllers() {
    // Base 1.4 section 5.2 (figure 148): a Discovery Log Page Change notice (log page 70h) when
    // the log changes, once until the host reads the log; Identify OAES bit 31 says so.
    let s = setup(HostAcl::Any).await;
    let cfg = HostConfig::default();
    let mut d = HostController::connect_discovery(s.listener.local_addr(), &cfg)
        .await
        .unwrap();
    let id = ok(&mut d, cmd::identify(cns::CONTROLLER, 0), None, 4096).await;
    assert_ne!(
        u32::from_le_bytes(id.data[92..96].try_into().unwrap()) & (1 << 31),
        0
    );
    ok(
        &mut d,
        cmd::set_features(feat::ASYNC_EVENT, 1 << 31),
        None,
        0,
    )
    .await;
    let gen = |page: &Bytes| u64::from_le_bytes(page[0..8].try_into().unwrap());
    let before = ok(
        &mut d,
        cmd::get_log_page(log_id::DISCOVERY, 0, 1024, 0),
        None,
        1024,
    )
    .await;
    let aer_cid = d.submit(cmd::new(admin_op::ASYNC_EVENT, 0), None, 0);

    // Another node joins the volume's replica set: its portal is listed too.
    let other = Portal {
        addr: "192.0.2.11".into(),
        port: 4420,
        port_id: 33,
    };
    let mine = s.target.config.portals[0].clone();
    assert!(s.subsys.set_portals(vec![mine.clone(), other.clone()]));
    s.target.discovery_changed();
    let (cid, comp) = tokio::time::timeout(Duration::from_secs(5), d.next())
        .await
        .expect("a notice within 5 s")
        .unwrap();
    assert_eq!(cid, aer_cid);
    assert_eq!(
        comp.cqe.dw0, 0x0070_f002,
        "notice, discovery log change, log page 70h"
    );

    // Until the log is read the notice is masked: a second change raises none.
    let aer_cid = d.submit(cmd::new(admin_op::ASYNC_EVENT, 0), None, 0);
    assert!(
        !s.subsys.set_portals(vec![mine.clone(), other.clone()]),
        "no change"
    );
    s.target.discovery_changed();
    assert!(tokio::time::timeout(Duration::from_millis(300), d.next())
        .await
        .is_err());
    let len = 1024 * 3;
    let page = ok(
        &mut d,
        cmd::get_log_page(log_id::DISCOVERY, 0, len, 0),
        None,
        len,
    )
    .await;
    assert!(gen(&page.data) > gen(&before.data), "a new generation");
    assert_eq!(u64::from_le_bytes(page.data[8..16].try_into().unwrap()), 2);
    let traddr = |i: usize| {
        let e = &page.data[1024 * (i + 1)..1024 * (i + 2)];
        (
            String::from_utf8_lossy(&e[512..768]).trim_end().to_string(),
            u16::from_le_bytes([e[4], e[5]]),
        )
    };
    assert_eq!(traddr(0), ("192.0.2.10".into(), mine.port_id));
    assert_eq!(traddr(1), ("192.0.2.11".into(), 33));
    // Read: the next change is announced again.
    s.target.discovery_changed();
    let (cid, comp) = tokio::time::timeout(Duration::from_secs(5), d.next())
        .await
        .expect("a notice within 5 s")
        .unwrap();
    assert_eq!((cid, comp.cqe.dw0), (aer_cid, 0x0070_f002));
}

#[tokio::test]
async fn a_host_reusing_a_given_up_aer_id_for_its_shutdown_is_answered() {
    // SPDK's host completes its four Asynchronous Event Requests itself before it shuts the
    // controller down, then sends Property Get CC and Property Set CC.SHN under two of their
    // ids. Linux's nvmet and SPDK's target run them (neither keeps command ids); so must we,
    // or the host cannot shut down ("Failed to read the CC register").
    let s = setup(HostAcl::Any).await;
    let mut c = s.connect().await;
    let a = &mut c.admin;
    ok(a, cmd::set_features(feat::ASYNC_EVENT, 1 << 11), None, 0).await;
    let aers: Vec<u16> = (0..4)
        .map(|_| a.submit(cmd::new(admin_op::ASYNC_EVENT, 0), None, 0))
        .collect();
    a.flush().await.unwrap();
    // A fifth is over the limit: the four are held.
    assert_eq!(
        err(a, cmd::new(admin_op::ASYNC_EVENT, 0), None, 0).await,
        Status::AER_LIMIT
    );
    a.forget(aers[1]);
    let cc = ok(a, cmd::property_get(prop::CC, false), None, 0).await;
    assert_eq!(cc.cqe.cid, aers[1]);
    assert_eq!(cc.cqe.dw0 & 1, 1, "CC.EN");
    a.forget(aers[2]);
    let set = ok(
        a,
        cmd::property_set(prop::CC, cc.cqe.dw0 | (1 << 14)),
        None,
        0,
    )
    .await;
    assert_eq!(set.cqe.cid, aers[2]);
    let csts = ok(a, cmd::property_get(prop::CSTS, false), None, 0).await;
    assert_eq!((csts.cqe.dw0 >> 2) & 3, 2, "CSTS.SHST: shutdown complete");

    // The two AERs the host kept are still held: an event completes under one of them, never
    // under a reused id.
    s.subsys.set_ana(AnaState::NonOptimized);
    let (cid, comp) = tokio::time::timeout(Duration::from_secs(5), a.next())
        .await
        .expect("an event within 5 s")
        .unwrap();
    assert!(
        cid == aers[0] || cid == aers[3],
        "{cid} not one of the kept AERs"
    );
    assert_eq!(comp.cqe.status, Status::SUCCESS);
}

#[tokio::test]
async fn write_read_round_trip_in_capsule_and_r2t_with_digests() {
    // TCP 1.0 section 3.3: in-capsule data (4 KiB), R2T/H2CData (256 KiB over MAXH2CDATA-sized
    // PDUs), C2HData; sections 3.6.2.x digests.
    for digests in [
        Digests::default(),
        Digests {
            header: true,
            data: true,
        },
    ] {
        for disable_sqflow in [false, true] {
            let s = setup(HostAcl::Any).await;
            let cfg = HostConfig {
                digests,
                disable_sqflow,
                ..HostConfig::default()
            };
            let mut c = HostController::connect(s.listener.local_addr(), &s.subsys.nqn, &cfg, 2)
                .await
                .unwrap();
            assert_eq!(c.io.len(), 2);
            let (nsze, bs) = c.namespace().await.unwrap();
            assert_eq!((nsze, bs), (16384, 4096));
            let small = pattern(1, 4096);
            c.write(0, 10, small.clone(), bs).await.unwrap();
            assert_eq!(c.read(1, 10, 1, bs).await.unwrap(), small);
            let big = pattern(2, 1 << 20);
            c.write(1, 100, big.clone(), bs).await.unwrap();
            assert_eq!(c.read(0, 100, 256, bs).await.unwrap(), big);
            c.disconnect().await.unwrap();
        }
    }
}

#[tokio::test]
async fn deep_queue_of_mixed_commands_verifies() {
    // Many commands in flight on one queue, completions in any order (Base 1.4 section 4.1).
    let s = setup(HostAcl::Any).await;
    let mut c = s.connect().await;
    let q = &mut c.io[0];
    let mut expect = std::collections::HashMap::new();
    for i in 0..64u64 {
        let d = pattern(i as u8, 8192);
        q.submit(cmd::write(i * 2, 2), Some(d.clone()), 0);
        expect.insert(i * 2, d);
    }
    while q.outstanding() > 0 {
        q.next().await.unwrap().1.ok().unwrap();
    }
    let mut cids = std::collections::HashMap::new();
    for lba in expect.keys() {
        cids.insert(q.submit(cmd::read(*lba, 2), None, 8192), *lba);
    }
    while q.outstanding() > 0 {
        let (cid, comp) = q.next().await.unwrap();
        let lba = cids[&cid];
        assert_eq!(comp.ok().unwrap().data, expect[&lba]);
    }
}

#[tokio::test]
async fn io_errors_get_their_nvme_status() {
    // Base 1.4 section 6.9 / 4.6.1.2.2: LBA Out of Range; Invalid Namespace; Invalid Opcode;
    // MDTS exceeded is Invalid Field; SGL length mismatch is Data SGL Length Invalid.
    let s = setup(HostAcl::Any).await;
    let mut c = s.connect().await;
    let q = &mut c.io[0];
    let st = err(q, cmd::read(16384, 1), None, 4096).await;
    assert_eq!(st, Status::LBA_OUT_OF_RANGE);
    let st = err(q, cmd::read(u64::MAX, 2), None, 8192).await;
    assert_eq!(st, Status::LBA_OUT_OF_RANGE);
    let mut bad_ns = cmd::read(0, 1);
    bad_ns.set_nsid(2);
    assert_eq!(err(q, bad_ns, None, 4096).await, Status::INVALID_NS);
    assert_eq!(
        err(q, cmd::new(0x7e, 1), None, 0).await,
        Status::INVALID_OPCODE
    );
    assert_eq!(
        err(q, cmd::read(0, 2048), None, 8 << 20).await,
        Status::INVALID_FIELD
    );
    assert_eq!(
        err(q, cmd::read(0, 2), None, 4096).await,
        Status::SGL_LENGTH_INVALID
    );
    // The queue still works.
    ok(q, cmd::read(0, 1), None, 4096).await;
}

#[tokio::test]
async fn a_media_error_names_its_lba_in_the_error_log() {
    // Base 1.4 section 5.14.1.1 (figure 194): the Error Information entry of a failed command
    // carries its queue, command id, status, namespace and the first failing LBA.
    let g = VolumeGeometry::new(BlockSize::B512, ByteSize::mib(1)).unwrap();
    let dev = MemBlockDevice::new(g);
    dev.lose_data_from(Lba(24));
    let target = Arc::new(Target::new(TargetConfig::default()));
    let subsys = Arc::new(Subsystem::new(
        VolumeId::random(),
        Arc::new(Reserved::volatile(dev)),
        HostAcl::Any,
        1,
    ));
    target.add_subsystem(subsys.clone());
    let listener = Listener::bind(target, "127.0.0.1:0".parse().unwrap(), 1)
        .await
        .unwrap();
    let mut c = HostController::connect(
        listener.local_addr(),
        &subsys.nqn,
        &HostConfig::default(),
        1,
    )
    .await
    .unwrap();
    ok(&mut c.io[0], cmd::read(0, 8), None, 4096).await;
    let read = cmd::read(20, 16);
    let cid = c.io[0].execute(read, None, 8192).await.unwrap();
    assert_eq!(cid.cqe.status, Status::UNRECOVERED_READ);
    let failed_cid = cid.cqe.cid;
    let log = ok(
        &mut c.admin,
        cmd::get_log_page(log_id::ERROR, 0, 4096, 0),
        None,
        4096,
    )
    .await;
    let e = &log.data[..64];
    let u16_at = |i: usize| u16::from_le_bytes([e[i], e[i + 1]]);
    assert_eq!(
        u64::from_le_bytes(e[0..8].try_into().unwrap()),
        1,
        "error count"
    );
    assert_eq!(u16_at(8), 1, "submission queue");
    assert_eq!(u16_at(10), failed_cid);
    assert_eq!(Status::from_field(u16_at(12)), Status::UNRECOVERED_READ);
    assert_eq!(u64::from_le_bytes(e[16..24].try_into().unwrap()), 24, "LBA");
    assert_eq!(
        u32::from_le_bytes(e[24..28].try_into().unwrap()),
        1,
        "namespace"
    );
    assert!(log.data[64..].iter().all(|&b| b == 0), "one entry");
}

#[tokio::test]
async fn compare_write_zeroes_and_deallocate() {
    // Base 1.4 sections 6.2 (Compare), 6.16 (Write Zeroes), 6.7 (Dataset Management).
    let s = setup(HostAcl::Any).await;
    let mut c = s.connect().await;
    let d = pattern(5, 8192);
    c.write(0, 20, d.clone(), 4096).await.unwrap();
    let q = &mut c.io[0];
    ok(q, cmd::rw(io_op::COMPARE, 20, 2), Some(d.clone()), 0).await;
    let st = err(q, cmd::rw(io_op::COMPARE, 20, 2), Some(pattern(6, 8192)), 0).await;
    assert_eq!(st, Status::COMPARE_FAILURE);
    ok(q, cmd::rw(io_op::WRITE_ZEROES, 20, 1), None, 0).await;
    // Deallocate block 21 with one DSM range (NLB is 1-based in ranges, figure 364).
    let mut dsm = cmd::new(io_op::DSM, 1);
    dsm.set_cdw(10, 0);
    dsm.set_cdw(11, 0b100);
    let mut range = vec![0u8; 16];
    range[4..8].copy_from_slice(&1u32.to_le_bytes());
    range[8..16].copy_from_slice(&21u64.to_le_bytes());
    ok(q, dsm, Some(Bytes::from(range)), 0).await;
    let r = c.read(0, 20, 2, 4096).await.unwrap();
    assert!(r.iter().all(|b| *b == 0));
}

#[tokio::test]
async fn host_access_control() {
    // Fabrics 1.1 section 3.3, figure 21: Connect Invalid Host for a host not on the list.
    let s = setup(HostAcl::Only(
        vec!["nqn.2014-08.org.example:allowed".into()],
    ))
    .await;
    let r = HostController::connect(
        s.listener.local_addr(),
        &s.subsys.nqn,
        &HostConfig::default(),
        1,
    )
    .await;
    assert_eq!(status_of(r.map(|_| ())), Status::CONNECT_INVALID_HOST);
    let e = HostController::discover(s.listener.local_addr(), &HostConfig::default())
        .await
        .unwrap();
    assert!(
        e.is_empty(),
        "the discovery log hides subsystems the host may not use"
    );
    let ok = HostConfig {
        hostnqn: "nqn.2014-08.org.example:allowed".into(),
        ..HostConfig::default()
    };
    HostController::connect(s.listener.local_addr(), &s.subsys.nqn, &ok, 1)
        .await
        .unwrap();
    // An unknown subsystem: Connect Invalid Parameters pointing at SUBNQN (IATTR 1, IPO 256).
    match HostController::connect(
        s.listener.local_addr(),
        "nqn.2014-08.io.alcubierre:vol:none",
        &ok,
        1,
    )
    .await
    {
        Err(InitiatorError::Status { status, dw0 }) => {
            assert_eq!(status, Status::CONNECT_INVALID_PARAM);
            assert_eq!(dw0, 1 | (256 << 16));
        }
        other => panic!("unexpected {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn io_queue_connect_is_checked() {
    // Fabrics 1.1 section 3.3: I/O queue Connect needs a live controller of the same host and
    // subsystem and a queue id within the granted count.
    let s = setup(HostAcl::Any).await;
    let cfg = HostConfig::default();
    let c = HostController::connect(s.listener.local_addr(), &s.subsys.nqn, &cfg, 1)
        .await
        .unwrap();
    let try_connect = |qid: u16, cntlid: u16, hostnqn: String| {
        let addr = s.listener.local_addr();
        let nqn = s.subsys.nqn.clone();
        async move {
            let mut q = HostQueue::open(addr, Digests::default()).await.unwrap();
            q.execute(
                cmd::connect(qid, 127, 0, false),
                Some(cmd::connect_data([1; 16], cntlid, &nqn, &hostnqn)),
                0,
            )
            .await
            .unwrap()
        }
    };
    // qid 2 when one queue was granted.
    let r = try_connect(2, c.cntlid, cfg.hostnqn.clone()).await;
    assert_eq!(r.cqe.status, Status::CONNECT_INVALID_PARAM);
    assert_eq!(r.cqe.dw0 >> 16, 42);
    // qid 1 is already connected.
    let r = try_connect(1, c.cntlid, cfg.hostnqn.clone()).await;
    assert_eq!(r.cqe.status, Status::CONNECT_INVALID_PARAM);
    // Another host cannot join this controller.
    let r = try_connect(1, c.cntlid, "nqn.other".into()).await;
    assert_eq!(
        (r.cqe.status, r.cqe.dw0 >> 16),
        (Status::CONNECT_INVALID_PARAM, 512)
    );
    // An unknown controller.
    let r = try_connect(1, c.cntlid.wrapping_add(100), cfg.hostnqn.clone()).await;
    assert_eq!(
        (r.cqe.status, r.cqe.dw0 >> 16),
        (Status::CONNECT_INVALID_PARAM, 16)
    );
}

#[tokio::test]
async fn admin_commands_linux_asks_for() {
    // Base 1.4 sections 5.15 (Identify CNS 00h-03h), 5.14 (log pages), 5.21/5.9 (features).
    let s = setup(HostAcl::Any).await;
    let mut c = s.connect().await;
    let a = &mut c.admin;
    let id = &c.id_ctrl;
    assert_eq!(u16::from_le_bytes([id[78], id[79]]), c.cntlid);
    assert_eq!(id[111], 1, "I/O controller");
    assert!(id[768..].starts_with(s.subsys.nqn.as_bytes()));
    let list = ok(a, cmd::identify(cns::ACTIVE_NS_LIST, 0), None, 4096).await;
    assert_eq!(&list.data[0..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
    let desc = ok(a, cmd::identify(cns::NS_DESC_LIST, 1), None, 4096).await;
    assert_eq!(desc.data[0], 2, "NGUID descriptor first");
    assert_eq!(&desc.data[4..20], s.subsys.volume.0.as_bytes());
    let ana = ok(a, cmd::get_log_page(log_id::ANA, 0, 4096, 0), None, 4096).await;
    assert_eq!(ana.data[32], AnaState::Optimized as u8);
    for lid in [
        log_id::ERROR,
        log_id::SMART,
        log_id::FIRMWARE,
        log_id::CHANGED_NS,
        log_id::CMD_EFFECTS,
    ] {
        ok(a, cmd::get_log_page(lid, 0xffff_ffff, 512, 0), None, 512).await;
    }
    assert_eq!(
        err(a, cmd::get_log_page(0x42, 0, 512, 0), None, 512).await,
        Status::INVALID_LOG_PAGE
    );
    assert_eq!(
        err(a, cmd::identify(0x1f, 0), None, 4096).await,
        Status::INVALID_FIELD
    );
    assert_eq!(
        err(a, cmd::identify(cns::NAMESPACE, 9), None, 4096).await,
        Status::INVALID_NS
    );
    ok(a, cmd::set_features(feat::KATO, 7000), None, 0).await;
    let k = ok(a, cmd::get_features(feat::KATO, 0), None, 0).await;
    assert_eq!(k.cqe.dw0, 7000);
    ok(a, cmd::new(admin_op::KEEP_ALIVE, 0), None, 0).await;
    assert_eq!(
        err(a, cmd::set_features(feat::VOLATILE_WC, 1), None, 0).await,
        Status::INVALID_FIELD
    );
}

#[tokio::test]
async fn ana_change_raises_an_event_and_blocks_io() {
    // Base 1.4 section 8.20: ANA change notice through an AER; I/O in the Inaccessible state
    // fails with the path status so multipath hosts use another path.
    let s = setup(HostAcl::Any).await;
    let mut c = s.connect().await;
    ok(
        &mut c.admin,
        cmd::set_features(feat::ASYNC_EVENT, 1 << 11),
        None,
        0,
    )
    .await;
    let aer = c.admin.submit(cmd::new(admin_op::ASYNC_EVENT, 0), None, 0);
    s.subsys.set_ana(AnaState::Inaccessible);
    let (cid, comp) = tokio::time::timeout(Duration::from_secs(5), c.admin.next())
        .await
        .expect("AER completes")
        .unwrap();
    assert_eq!(cid, aer);
    assert_eq!(
        comp.cqe.dw0, 0x000c_0302,
        "notice, ANA change, log page 0Ch"
    );
    let st = err(&mut c.io[0], cmd::read(0, 1), None, 4096).await;
    assert_eq!(st, Status::ANA_INACCESSIBLE);
    s.subsys.set_ana(AnaState::Optimized);
    c.read(0, 0, 1, 4096).await.unwrap();
}

/// A target and a host connected to it with keep-alive timeout `kato`.
async fn connected_with_kato(kato: Duration) -> (Setup, HostController) {
    let s = setup(HostAcl::Any).await;
    let cfg = HostConfig {
        kato,
        ..HostConfig::default()
    };
    let c = HostController::connect(s.listener.local_addr(), &s.subsys.nqn, &cfg, 1)
        .await
        .unwrap();
    (s, c)
}

#[tokio::test]
async fn keep_alive_timeout_is_enforced() {
    // Base 1.4 section 7.12: without Keep Alive the controller fails after KATO and its queues
    // close.
    let (s, mut c) = connected_with_kato(Duration::from_millis(500)).await;
    let r = tokio::time::timeout(Duration::from_secs(5), c.io[0].read_pdu()).await;
    assert!(
        matches!(
            r,
            Ok(Err(InitiatorError::Closed)) | Ok(Err(InitiatorError::Io(_)))
        ),
        "{r:?}"
    );
    let r = tokio::time::timeout(Duration::from_secs(5), c.admin.read_pdu()).await;
    assert!(matches!(r, Ok(Err(_))), "{r:?}");
    assert_eq!(s.target.controller_count(), 0);
}

#[tokio::test]
async fn commands_keep_the_controller_alive() {
    // Traffic Based Keep Alive (CTRATT bit 6): I/O restarts the keep-alive timer, so a busy
    // host need not send Keep Alive; once it stops, KATO later the controller fails.
    let (s, mut c) = connected_with_kato(Duration::from_millis(500)).await;
    let ctratt = u32::from_le_bytes(c.id_ctrl[96..100].try_into().unwrap());
    assert_eq!(ctratt & (1 << 6), 1 << 6, "TBKAS advertised");
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        c.read(0, 0, 1, 4096).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        s.target.controller_count(),
        1,
        "alive after 3 x KATO of I/O"
    );
    let r = tokio::time::timeout(Duration::from_secs(5), c.admin.read_pdu()).await;
    assert!(matches!(r, Ok(Err(_))), "{r:?}");
}

#[tokio::test]
async fn malformed_pdus_terminate_only_their_connection() {
    // TCP 1.0 section 3.6.2.4 / 7.4.6: a bad header gets a C2HTermReq with FES and FEI, then
    // the connection closes; other connections keep working.
    let s = setup(HostAcl::Any).await;
    let mut good = s.connect().await;
    let mut bad = HostQueue::open(s.listener.local_addr(), Digests::default())
        .await
        .unwrap();
    bad.send_raw(&[0x04, 0, 99, 0, 72, 0, 0, 0]).await.unwrap();
    match bad.read_pdu().await.unwrap() {
        Pdu::C2HTermReq(t) => assert_eq!((t.fes, t.fei), (fes::INVALID_HEADER_FIELD, 2)),
        p => panic!("unexpected {p:?}"),
    }
    assert!(bad.read_pdu().await.is_err());
    // H2CData with no R2T outstanding.
    let mut bad = HostQueue::open(s.listener.local_addr(), Digests::default())
        .await
        .unwrap();
    let mut raw = bytes::BytesMut::new();
    alcubierre_nvmf::pdu::Encoder::default().data(&mut raw, true, 3, 3, 0, &[0; 512], true, false);
    bad.send_raw(&raw).await.unwrap();
    assert!(matches!(bad.read_pdu().await.unwrap(), Pdu::C2HTermReq(_)));
    good.write(0, 0, pattern(9, 4096), 4096).await.unwrap();
}

#[tokio::test]
async fn data_digest_error_fails_the_command_not_the_connection() {
    // TCP 1.0 section 7.4.6.3: Transient Transport Error, the connection stays up.
    let s = setup(HostAcl::Any).await;
    let d = Digests {
        header: false,
        data: true,
    };
    let cfg = HostConfig {
        digests: d,
        ..HostConfig::default()
    };
    let mut c = HostController::connect(s.listener.local_addr(), &s.subsys.nqn, &cfg, 1)
        .await
        .unwrap();
    let mut raw = bytes::BytesMut::new();
    let mut sqe: Sqe = cmd::write(0, 1);
    sqe.set_cid(500);
    sqe.set_sgl(0, 4096, alcubierre_nvmf::capsule::SGL_INCAPSULE);
    alcubierre_nvmf::pdu::Encoder { digests: d, pda: 0 }.capsule_cmd(&mut raw, &sqe, &[7; 4096]);
    let n = raw.len();
    raw[n - 1] ^= 0xff;
    let q = &mut c.io[0];
    q.send_raw(&raw).await.unwrap();
    match q.read_pdu().await.unwrap() {
        Pdu::CapsuleResp(cqe) => {
            assert_eq!((cqe.cid, cqe.status), (500, Status::TRANSIENT_TRANSPORT))
        }
        p => panic!("unexpected {p:?}"),
    }
    c.read(0, 0, 1, 4096).await.unwrap();
}

#[tokio::test]
async fn reservations_fence_other_hosts() {
    // Base 1.4 section 8.8: Register, Acquire (Write Exclusive), a write from another host is a
    // Reservation Conflict, Report lists both registrants, Release lifts it.
    let s = setup(HostAcl::Any).await;
    let a_cfg = HostConfig::default();
    let b_cfg = HostConfig {
        hostnqn: "nqn.2014-08.org.example:b".into(),
        hostid: [2; 16],
        ..HostConfig::default()
    };
    let addr = s.listener.local_addr();
    let mut a = HostController::connect(addr, &s.subsys.nqn, &a_cfg, 1)
        .await
        .unwrap();
    let mut b = HostController::connect(addr, &s.subsys.nqn, &b_cfg, 1)
        .await
        .unwrap();
    let keys = |c: u64, n: u64| {
        let mut d = c.to_le_bytes().to_vec();
        d.extend_from_slice(&n.to_le_bytes());
        Bytes::from(d)
    };
    ok(
        &mut a.io[0],
        cmd::new(io_op::RESV_REGISTER, 1),
        Some(keys(0, 0xaa)),
        0,
    )
    .await;
    ok(
        &mut b.io[0],
        cmd::new(io_op::RESV_REGISTER, 1),
        Some(keys(0, 0xbb)),
        0,
    )
    .await;
    let mut acq = cmd::new(io_op::RESV_ACQUIRE, 1);
    acq.set_cdw(10, 1 << 8); // Write Exclusive
    ok(&mut a.io[0], acq, Some(keys(0xaa, 0)), 0).await;
    let st = status_of(b.write(0, 0, pattern(1, 4096), 4096).await);
    assert_eq!(st, Status::RESERVATION_CONFLICT);
    b.read(0, 0, 1, 4096).await.unwrap();
    a.write(0, 0, pattern(1, 4096), 4096).await.unwrap();
    let mut rep = cmd::new(io_op::RESV_REPORT, 1);
    rep.set_cdw(10, 4096 / 4 - 1);
    rep.set_cdw(11, 1);
    let r = ok(&mut b.io[0], rep, None, 4096).await;
    assert_eq!(r.data[4], 1, "RTYPE Write Exclusive");
    assert_eq!(u16::from_le_bytes([r.data[5], r.data[6]]), 2);
    let mut rel = cmd::new(io_op::RESV_RELEASE, 1);
    rel.set_cdw(10, 1 << 8);
    ok(
        &mut a.io[0],
        rel,
        Some(Bytes::from(0xaau64.to_le_bytes().to_vec())),
        0,
    )
    .await;
    b.write(0, 0, pattern(1, 4096), 4096).await.unwrap();
}

#[tokio::test]
async fn namespace_change_event_and_changed_list_log() {
    // Base 1.4 section 5.2 and figure 210: a Namespace Attribute Changed notice (e.g. after a
    // resize) completes an AER with log page 04h, which then lists NSID 1; reading it without
    // RAE re-arms the event.
    let s = setup(HostAcl::Any).await;
    let mut c = s.connect().await;
    ok(
        &mut c.admin,
        cmd::set_features(feat::ASYNC_EVENT, 1 << 8),
        None,
        0,
    )
    .await;
    for round in 0..2 {
        let aer = c.admin.submit(cmd::new(admin_op::ASYNC_EVENT, 0), None, 0);
        s.subsys
            .notify(alcubierre_nvmf::subsystem::SubsystemEvent::NamespaceChanged);
        let (cid, comp) = tokio::time::timeout(Duration::from_secs(5), c.admin.next())
            .await
            .expect("AER completes")
            .unwrap();
        assert_eq!((cid, comp.cqe.dw0), (aer, 0x0004_0002), "round {round}");
        let log = ok(
            &mut c.admin,
            cmd::get_log_page(log_id::CHANGED_NS, 0, 4096, 0),
            None,
            4096,
        )
        .await;
        assert_eq!(&log.data[0..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
    }
    let log = ok(
        &mut c.admin,
        cmd::get_log_page(log_id::CHANGED_NS, 0, 4096, 0),
        None,
        4096,
    )
    .await;
    assert!(log.data.iter().all(|b| *b == 0), "cleared once read");
}

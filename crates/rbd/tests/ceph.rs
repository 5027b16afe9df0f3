//! The RBD backend on a real Ceph (a throwaway monitor and memstore OSD started by the test):
//! the backend conformance suite, the connectivity checks' reasons, and an outage.

use std::time::{Duration, Instant};

use alcubierre_backend::conformance::suite;
use alcubierre_backend::{Backend, BackendError};
use alcubierre_rbd::testing::CephCluster;
use alcubierre_rbd::{image_name, RbdBackend, RbdConfig};
use alcubierre_types::{ByteOffset, ByteSize, VolumeId};

fn reason(r: Result<RbdBackend, BackendError>) -> String {
    match r {
        Ok(_) => panic!("connected"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn rbd_backend_on_real_ceph() {
    let t = Instant::now();
    let ceph = CephCluster::start().unwrap();
    eprintln!("Ceph started in {:?}", t.elapsed());
    let b = RbdBackend::connect(&ceph.config()).unwrap();
    suite(&b);

    // What the images are called, seen by Ceph's own tool.
    let v = VolumeId::random();
    b.create(v, ByteSize::mib(8)).unwrap();
    b.write(v, ByteOffset(4096), &[0x5a; 8192]).unwrap();
    b.flush(v).unwrap();
    let info = ceph.rbd(&["info", &image_name(v)]).unwrap();
    assert!(info.contains("size 8 MiB"), "{info}");
    let out = std::env::temp_dir().join(format!("rbd-export-{v}"));
    ceph.rbd(&["export", &image_name(v), out.to_str().unwrap()])
        .unwrap();
    let exported = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    assert_eq!(exported.len(), 8 << 20);
    assert!(exported[..4096].iter().all(|&x| x == 0));
    assert!(exported[4096..12288].iter().all(|&x| x == 0x5a));

    // The pool's capacity comes from the managers' usage digest; this throwaway cluster runs
    // no ceph-mgr, so the answer is a transient error that says so (and the API's status
    // leaves the figures out). docs/cinder.md lists this as untested with a manager.
    let e = b.capacity().unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("ceph-mgr"), "{e}");

    // Connectivity reasons.
    let no_pool = RbdConfig {
        pool: "nope".into(),
        ..ceph.config()
    };
    assert!(reason(RbdBackend::connect(&no_pool)).contains("pool \"nope\" does not exist"));
    ceph.ceph(&["osd", "pool", "create", "plain", "8"]).unwrap();
    let not_rbd = RbdConfig {
        pool: "plain".into(),
        ..ceph.config()
    };
    assert!(reason(RbdBackend::connect(&not_rbd)).contains("not enabled for RBD"));
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let no_mon = RbdConfig {
        conf_file: None,
        mon_host: Some(format!("v2:127.0.0.1:{dead_port}")),
        op_timeout: Duration::from_secs(2),
        ..ceph.config()
    };
    let t = Instant::now();
    let why = reason(RbdBackend::connect(&no_mon));
    assert!(why.contains("no monitor answered"), "{why}");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());

    // An outage: with the OSD frozen, I/O fails as transient within the operation timeout,
    // and works again once it is back.
    let short = RbdBackend::connect(&RbdConfig {
        op_timeout: Duration::from_secs(3),
        ..ceph.config()
    })
    .unwrap();
    short.read(v, ByteOffset(0), &mut [0u8; 4096]).unwrap();
    ceph.freeze_osd().unwrap();
    let t = Instant::now();
    let e = short.read(v, ByteOffset(0), &mut [0u8; 4096]).unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    ceph.thaw_osd().unwrap();
    let t = Instant::now();
    loop {
        let mut buf = [0u8; 4096];
        match short.read(v, ByteOffset(4096), &mut buf) {
            Ok(()) => {
                assert!(buf.iter().all(|&x| x == 0x5a));
                break;
            }
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "Ceph did not come back: {e}"
                );
            }
        }
    }
    // An image open elsewhere (here by the second connection) cannot be deleted.
    let busy = b.delete(v).unwrap_err();
    assert!(busy.to_string().contains("open"), "{busy}");
    drop(short);
    b.delete(v).unwrap();
    assert!(matches!(b.size(v), Err(BackendError::NotFound { .. })));
}

/// Two connections stand for two nodes. A claim breaks the other's lock and Ceph blocklists
/// it: its writes to that image fail as fenced and do not land, while it reconnects and goes on
/// with its other images; a claim given up in order fences nobody.
#[test]
fn a_claim_fences_the_previous_holder_off_the_image() {
    let ceph = CephCluster::start().unwrap();
    let a = RbdBackend::connect(&ceph.config()).unwrap();
    let b = RbdBackend::connect(&ceph.config()).unwrap();
    let (v, w) = (VolumeId::random(), VolumeId::random());
    a.create(v, ByteSize::mib(4)).unwrap();
    a.create(w, ByteSize::mib(4)).unwrap();
    let read = |x: &RbdBackend, vol| {
        let mut buf = [0u8; 4096];
        x.read(vol, ByteOffset(0), &mut buf).unwrap();
        buf[0]
    };

    // a claims v and writes.
    a.claim(v).unwrap();
    assert!(a.holds_lock(v).unwrap());
    assert_eq!(a.lock_owners(v).unwrap().len(), 1);
    a.write(v, ByteOffset(0), &[1; 4096]).unwrap();
    a.flush(v).unwrap();
    a.write(w, ByteOffset(0), &[1; 4096]).unwrap();
    a.flush(w).unwrap();
    let a_first = a.client_name();

    // b claims v: a's lock is broken and a is blocklisted.
    let a_addr = a.lock_owners(v).unwrap().remove(0);
    b.claim(v).unwrap();
    assert!(b.holds_lock(v).unwrap());
    let b_addr = b.lock_owners(v).unwrap();
    assert_eq!(b_addr.len(), 1);
    assert_ne!(b_addr[0], a_addr);
    let blocklist = ceph.ceph(&["osd", "blocklist", "ls"]).unwrap();
    assert!(blocklist.contains(&a_addr), "{a_addr} not in {blocklist}");

    // a's next write to v fails as fenced, and lands nowhere.
    let e = a.write(v, ByteOffset(0), &[2; 4096]).unwrap_err();
    assert!(
        matches!(e, BackendError::Fenced { volume } if volume == v),
        "{e}"
    );
    assert!(!e.is_transient());
    assert_eq!(read(&b, v), 1);
    // It stays fenced off v (a new connection does not bring the claim back) ...
    assert_ne!(
        a.client_name(),
        a_first,
        "a connected again as a new client"
    );
    let e = a.write(v, ByteOffset(0), &[2; 4096]).unwrap_err();
    assert!(matches!(e, BackendError::Fenced { .. }), "{e}");
    assert!(matches!(a.flush(v), Err(BackendError::Fenced { .. })));
    // ... while it reads v and writes its other images on the new connection.
    assert_eq!(read(&a, v), 1);
    a.write(w, ByteOffset(0), &[3; 4096]).unwrap();
    a.flush(w).unwrap();
    assert_eq!(read(&b, w), 3);
    // b writes v.
    b.write(v, ByteOffset(0), &[4; 4096]).unwrap();
    b.flush(v).unwrap();

    // A claim given up in order (a handover): the next claim blocklists nobody.
    b.release_claim(v).unwrap();
    let b_client = b.client_name();
    a.claim(v).unwrap();
    assert!(a.holds_lock(v).unwrap());
    a.write(v, ByteOffset(0), &[5; 4096]).unwrap();
    a.flush(v).unwrap();
    b.write(w, ByteOffset(0), &[6; 4096]).unwrap();
    b.flush(w).unwrap();
    assert_eq!(b.client_name(), b_client, "b was not blocklisted");
    let blocklist = ceph.ceph(&["osd", "blocklist", "ls"]).unwrap();
    assert!(!blocklist.contains(&b_addr[0]), "{blocklist}");
    assert_eq!(read(&b, v), 5);

    // An image made without the lock feature (before claims existed) gets it when claimed.
    let old = VolumeId::random();
    ceph.rbd(&[
        "create",
        "--size",
        "4",
        "--image-feature",
        "layering",
        &image_name(old),
    ])
    .unwrap();
    a.claim(old).unwrap();
    let info = ceph.rbd(&["info", &image_name(old)]).unwrap();
    assert!(info.contains("exclusive-lock"), "{info}");
    a.write(old, ByteOffset(0), &[7; 4096]).unwrap();
    a.flush(old).unwrap();
}

/// A write still queued in the old holder's client when it is fenced never lands. The
/// cluster holds every operation (`ceph osd pause`) while `a` sends a write; meanwhile `a` is
/// blocklisted, as `b`'s claim does first when it breaks the lock (the claim itself cannot run
/// while reads are held: it reads the lock's owner). When operations flow again, `a`'s queued
/// write is refused and reported as fenced; `b` claims the image and finds what `a` wrote
/// before.
#[test]
fn a_write_queued_in_the_old_holder_at_the_break_does_not_land() {
    let ceph = CephCluster::start().unwrap();
    // The held write's time counts against librados's operation timeout: a long one, so it
    // is refused for the blocklist, not for the time it waited.
    let a = RbdBackend::connect(&RbdConfig {
        op_timeout: Duration::from_secs(300),
        ..ceph.config()
    })
    .unwrap();
    let b = RbdBackend::connect(&ceph.config()).unwrap();
    let v = VolumeId::random();
    a.create(v, ByteSize::mib(4)).unwrap();
    a.claim(v).unwrap();
    a.write(v, ByteOffset(0), &[1; 4096]).unwrap();
    a.flush(v).unwrap();
    let a_addr = a.lock_owners(v).unwrap().remove(0);
    let read = |x: &RbdBackend| {
        let mut buf = [0u8; 4096];
        x.read(v, ByteOffset(0), &mut buf).unwrap();
        buf
    };
    assert_eq!(read(&b), [1; 4096]);

    ceph.ceph(&["osd", "pause"]).unwrap();
    // a's client holds what it sends once it has the map with the pause.
    a.wait_for_latest_map().unwrap();
    std::thread::scope(|s| {
        let queued = s.spawn(|| a.write(v, ByteOffset(0), &[2; 4096]));
        ceph.ceph(&["osd", "blocklist", "add", &a_addr]).unwrap();
        // Still held: neither done nor refused while the cluster is paused.
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            !queued.is_finished(),
            "a's write finished while the cluster was paused"
        );
        ceph.ceph(&["osd", "unpause"]).unwrap();
        match queued.join().unwrap() {
            Err(BackendError::Fenced { volume }) => assert_eq!(volume, v),
            other => panic!("a's queued write: {other:?}, expected fenced"),
        }
    });
    b.claim(v).unwrap();
    assert!(b.holds_lock(v).unwrap());
    // The queued write is nowhere, and a stays fenced off the image on its new connection.
    assert_eq!(read(&b), [1; 4096]);
    assert!(matches!(a.flush(v), Err(BackendError::Fenced { .. })));
    let e = a.write(v, ByteOffset(0), &[3; 4096]).unwrap_err();
    assert!(matches!(e, BackendError::Fenced { .. }), "{e}");
    assert_eq!(read(&a), [1; 4096]);
    b.write(v, ByteOffset(0), &[4; 4096]).unwrap();
    b.flush(v).unwrap();
    assert_eq!(read(&a), [4; 4096]);
}

/// A request nobody waits for any more can hold an image's last reference when librbd
/// completes it. The image is then closed off librbd's thread: closing it there (which gives
/// the exclusive lock up through that same thread) deadlocked, and the image stayed open.
#[test]
fn an_image_whose_last_reference_is_a_finished_request_closes() {
    use alcubierre_rbd::ffi::Cluster;

    let ceph = CephCluster::start().unwrap();
    let cfg = ceph.config();
    let cluster = Cluster::connect(&cfg.user, cfg.conf_file.as_deref(), &[]).unwrap();
    let pool = cluster.pool(&cfg.pool).unwrap();
    pool.create("last-ref", 4 << 20, 1 | 4).unwrap();
    for i in 0..10u8 {
        let image = pool.open("last-ref").unwrap();
        let request = image.write(0, vec![i; 4096]);
        drop(image);
        drop(request);
    }
    // Closed once the writes completed: Ceph's own tool sees no client watching the image.
    let t = Instant::now();
    loop {
        let status = ceph.rbd(&["status", "last-ref"]).unwrap();
        if status.contains("none") {
            break;
        }
        if t.elapsed() > Duration::from_secs(30) {
            // A deadlocked librbd would hang these handles' shutdown too.
            std::mem::forget(pool);
            std::mem::forget(cluster);
            panic!("the image never closed: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    pool.remove("last-ref").unwrap();
}

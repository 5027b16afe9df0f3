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

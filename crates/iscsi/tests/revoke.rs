//! A host that leaves a volume's access list keeps no session to it: replacing an export with
//! an access list that no longer admits an initiator ends that initiator's sessions (over real
//! sockets, through the driver), and its next login is refused; admitted initiators' sessions
//! go on.

use std::sync::Arc;
use std::time::Duration;

use alcubierre_block::{MemBlockDevice, Reserved};
use alcubierre_iscsi::harness::{login, ping};
use alcubierre_iscsi::login::Access;
use alcubierre_iscsi::scsi::Lun;
use alcubierre_iscsi::{driver, Export, Target};
use alcubierre_types::{BlockSize, ByteSize, VolumeGeometry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NAME: &str = "iqn.2014-08.io.alcubierre:vol.revoke";
const A: &str = "iqn.2024-01.org.example:a";
const B: &str = "iqn.2024-01.org.example:b";

fn export(lun: &Arc<Lun>, initiators: &[&str]) -> Export {
    Export {
        lun: lun.clone(),
        access: Access {
            initiators: Some(initiators.iter().map(|s| s.to_string()).collect()),
            ..Access::default()
        },
        portals: Vec::new(),
    }
}

/// Reads one PDU's bytes (48-byte header and its data segment, padded); `None` at the end.
async fn read_pdu(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut bhs = [0u8; 48];
    if s.read_exact(&mut bhs).await.is_err() {
        return None;
    }
    let ahs = bhs[4] as usize * 4;
    let data = (u32::from_be_bytes([0, bhs[5], bhs[6], bhs[7]]) as usize).div_ceil(4) * 4;
    let mut rest = vec![0u8; ahs + data];
    s.read_exact(&mut rest).await.ok()?;
    let mut all = bhs.to_vec();
    all.extend(rest);
    Some(all)
}

/// Logs `initiator` in; the final login response's status class (0: success).
async fn log_in(addr: std::net::SocketAddr, initiator: &str) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&login(initiator, NAME)).await.unwrap();
    let mut class = 0;
    for _ in 0..2 {
        let Some(r) = read_pdu(&mut s).await else {
            break;
        };
        assert_eq!(r[0] & 0x3f, 0x23, "a login response");
        class = r[36];
        if class != 0 {
            break;
        }
    }
    (s, class)
}

/// Whether the session still answers a NOP-Out (false: the target closed it).
async fn answers(s: &mut TcpStream, n: u32) -> bool {
    if s.write_all(&ping(100 + n, 1 + n)).await.is_err() {
        return false;
    }
    let r = tokio::time::timeout(Duration::from_secs(5), read_pdu(s))
        .await
        .expect("an answer or the end within 5 s");
    r.is_some_and(|p| p[0] & 0x3f == 0x20)
}

#[tokio::test]
async fn a_revoked_initiators_sessions_end_and_others_go_on() {
    let g = VolumeGeometry::new(BlockSize::B512, ByteSize::mib(1)).unwrap();
    let lun = Arc::new(Lun::new(
        Arc::new(Reserved::volatile(MemBlockDevice::new(g))),
        [7; 16],
        1,
    ));
    let target = Target::new();
    target.export(NAME, export(&lun, &[A, B]));
    let (addr, _task) = driver::listen(target.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();

    let (mut a, class) = log_in(addr, A).await;
    assert_eq!(class, 0, "A logs in");
    let (mut b, class) = log_in(addr, B).await;
    assert_eq!(class, 0, "B logs in");
    assert!(answers(&mut a, 0).await && answers(&mut b, 0).await);
    assert_eq!(target.sessions(NAME), 2);

    // A leaves the access list (a detach): its session ends; B's goes on.
    target.export(NAME, export(&lun, &[B]));
    let mut end = [0u8; 48];
    let n = tokio::time::timeout(Duration::from_secs(5), a.read(&mut end))
        .await
        .expect("A's session closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "the target closed A's connection");
    assert!(answers(&mut b, 1).await, "B's session goes on");
    assert_eq!(target.sessions(NAME), 1);

    // A cannot log in again: the login is refused with an initiator error.
    let (_, class) = log_in(addr, A).await;
    assert_eq!(class, 2, "A's login is refused");

    // Changing something else (B still admitted) ends nothing.
    target.export(NAME, export(&lun, &[B, "iqn.2024-01.org.example:c"]));
    assert!(answers(&mut b, 2).await);
}

#[test]
fn every_nexus_of_an_initiator_is_found_by_its_name() {
    use alcubierre_iscsi::driver::{host_id, initiator_key};
    let (one, two) = (
        host_id(A, [0, 2, 61, 0, 0, 1]),
        host_id(A, [0, 2, 61, 0, 0, 2]),
    );
    assert_ne!(one, two, "each session is its own I_T nexus");
    assert_eq!(one[..8], initiator_key(A));
    assert_eq!(two[..8], initiator_key(A));
    assert_ne!(host_id(B, [0, 2, 61, 0, 0, 1])[..8], initiator_key(A));
}

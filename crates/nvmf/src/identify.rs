//! Identify data structures (Base 1.4 section 5.15.2) and log pages (section 5.14.1, Fabrics
//! 1.1 section 5.3). Each builder returns the whole structure; the caller clips it to the
//! host's transfer length and offset.

use std::collections::VecDeque;

use crate::controller::{Controller, ErrorEntry, Kind, ERROR_LOG_ENTRIES};
use crate::subsystem::{AnaState, Portal, Subsystem};
use crate::target::Target;

/// PCI vendor id reported (none assigned: the spec allows 0 for fabrics).
const VID: u16 = 0;
/// Namespace id of a volume's only namespace.
pub const NSID: u32 = 1;
/// Model number.
pub const MODEL: &str = "Alcubierre";

fn put_str(b: &mut [u8], s: &str) {
    // ASCII, space padded (Base 1.4 section 1.5).
    b.fill(b' ');
    let n = s.len().min(b.len());
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
}

fn put_nqn(b: &mut [u8], s: &str) {
    // UTF-8, null terminated.
    b.fill(0);
    let n = s.len().min(b.len() - 1);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
}

fn le16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
fn le32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn le64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// Version reported in VS and Identify Controller: 1.4.0.
pub const VERSION: u32 = 0x0001_0400;

/// Identify Controller (CNS 01h, figure 247).
pub fn controller(target: &Target, ctrl: &Controller) -> Vec<u8> {
    let cfg = &target.config;
    let mut b = vec![0u8; 4096];
    le16(&mut b, 0, VID);
    le16(&mut b, 2, VID);
    let (serial, subnqn) = match &ctrl.kind {
        Kind::Io(s) => (s.serial.clone(), s.nqn.clone()),
        Kind::Discovery => (
            "alcubierre-discovery".to_string(),
            crate::spec::DISCOVERY_NQN.to_string(),
        ),
    };
    put_str(&mut b[4..24], &serial);
    put_str(&mut b[24..64], MODEL);
    put_str(&mut b[64..72], &cfg.firmware);
    b[72] = 6; // RAB
    let io = matches!(ctrl.kind, Kind::Io(_));
    // CMIC: multiple ports, multiple controllers, ANA reporting.
    b[76] = if io { 0b1011 } else { 0 };
    b[77] = cfg.mdts;
    le16(&mut b, 78, ctrl.cntlid);
    le32(&mut b, 80, VERSION);
    // OAES: Namespace Attribute Notices (bit 8) and ANA Change Notices (bit 11); a discovery
    // controller: Discovery Log Page Change Notices (bit 31).
    le32(&mut b, 92, if io { (1 << 8) | (1 << 11) } else { 1 << 31 });
    // CTRATT: Traffic Based Keep Alive (bit 6): any command restarts the keep-alive timer.
    le32(&mut b, 96, 1 << 6);
    b[111] = if io { 1 } else { 2 }; // CNTRLTYPE: I/O or discovery controller
    if let Kind::Io(s) = &ctrl.kind {
        b[112..128].copy_from_slice(s.volume.0.as_bytes()); // FGUID
    }
    le16(&mut b, 256, 0); // OACS: no optional admin commands
    b[258] = 3; // ACL: 4 concurrent aborts
    b[259] = 3; // AERL: 4 outstanding AERs
    b[260] = 0b11; // FRMW: slot 1 read only, one slot
    b[261] = 0b0110; // LPA: command effects log, extended data for Get Log Page
    b[262] = 63; // ELPE: 64 error log entries
    le16(&mut b, 266, 0x0157); // WCTEMP 343 K
    le16(&mut b, 268, 0x0175); // CCTEMP 373 K
    le16(&mut b, 320, 10); // KAS: 1 s granularity (100 ms units)
    if io {
        b[342] = 10; // ANATT: 10 s
                     // ANACAP: optimized, non-optimized, inaccessible, persistent loss, change states;
                     // group id does not change while attached; non-zero group ids.
        b[343] = 0b1101_1111;
        le32(&mut b, 344, 256); // ANAGRPMAX
        le32(&mut b, 348, 256); // NANAGRPID
    }
    b[512] = 0x66; // SQES: 64 bytes
    b[513] = 0x44; // CQES: 16 bytes
    le16(&mut b, 514, cfg.max_queue_entries); // MAXCMD
    le32(&mut b, 516, if io { NSID } else { 0 }); // NN
                                                  // ONCS: Compare, Dataset Management, Write Zeroes, Reservations.
    le16(&mut b, 520, if io { 0b10_1101 } else { 0 });
    b[525] = 0; // VWC: none; acknowledged writes are durable
                // SGLS: SGLs supported (no alignment), Keyed SGL not, address as offset (bit 20).
    le32(&mut b, 536, 1 | (1 << 20));
    le32(&mut b, 540, if io { NSID } else { 0 }); // MNAN
    put_nqn(&mut b[768..1024], &subnqn);
    // Fabrics: IOCCSZ and IORCSZ in 16-byte units, ICDOFF 0, CTRATTR 0, MSDBD 1.
    le32(&mut b, 1792, (64 + cfg.in_capsule_data) / 16);
    le32(&mut b, 1796, 1);
    b[1803] = 1;
    // Power state 0: 25 W max (in 0.01 W units), entry/exit latency 0.
    le16(&mut b, 2048, 2500);
    b
}

/// Identify Namespace (CNS 00h, figure 245) for a live namespace.
pub fn namespace(s: &Subsystem) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    let g = s.device.geometry();
    let blocks = g.blocks().0;
    le64(&mut b, 0, blocks); // NSZE
    le64(&mut b, 8, blocks); // NCAP
    le64(&mut b, 16, blocks); // NUSE
                              // NSFEAT: thin provisioning (bit 0), the namespace's own atomicity fields (NAWUN,
                              // NAWUPF, NACWU; bit 1) and NOWS/NPxx (bit 4) valid.
    b[24] = 0b1_0011;
    b[25] = 0; // NLBAF: one format
    b[26] = 0; // FLBAS: format 0
    b[30] = 1; // NMIC: may be attached to several controllers
               // RESCAP: WE, EA, WE-RO, EA-RO, WE-AR, EA-AR, IEKEY.
    b[31] = 0b1111_1110;
    // DLFEAT: deallocated blocks read as zeroes; Write Zeroes may deallocate.
    b[33] = 0b1001;
    // 4096-byte physical blocks, written atomically (a cache block is journalled whole), on
    // volumes of 512-byte blocks too: Linux takes the physical block size as the smaller of
    // NPWG and the atomic write unit (NAWUPF), so both say 4096 bytes.
    let pg = (4096 / g.block_size().bytes()) as u16 - 1;
    le16(&mut b, 34, pg); // NAWUN
    le16(&mut b, 36, pg); // NAWUPF
    le16(&mut b, 64, pg); // NPWG
    le16(&mut b, 66, pg); // NPWA
    le16(&mut b, 68, pg); // NPDG
    le16(&mut b, 70, pg); // NPDA
    le16(&mut b, 72, pg); // NOWS
    le32(&mut b, 92, s.ana_group); // ANAGRPID
    b[104..120].copy_from_slice(s.volume.0.as_bytes()); // NGUID
    let lbads = g.block_size().bytes().trailing_zeros();
    // LBAF0: no metadata, LBADS, relative performance "best".
    le32(&mut b, 128, lbads << 16);
    b
}

/// Active Namespace ID list (CNS 02h): namespace ids greater than `after`.
pub fn active_ns_list(after: u32) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    if after < NSID {
        le32(&mut b, 0, NSID);
    }
    b
}

/// Namespace Identification Descriptor list (CNS 03h, figure 249): NGUID, UUID and CSI.
pub fn ns_descriptors(s: &Subsystem) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    let id = s.volume.0.as_bytes();
    b[0] = 2; // NIDT NGUID
    b[1] = 16;
    b[4..20].copy_from_slice(id);
    b[20] = 3; // NIDT UUID
    b[21] = 16;
    b[24..40].copy_from_slice(id);
    b[40] = 4; // NIDT CSI
    b[41] = 1;
    b[44] = 0; // NVM command set
    b
}

/// ANA log page (figure 215): one group (this node's) holding namespace 1.
pub fn ana_log(s: &Subsystem, groups_only: bool) -> Vec<u8> {
    let (state, chg) = s.ana();
    let mut b = vec![0u8; 16 + 32 + if groups_only { 0 } else { 4 }];
    le64(&mut b, 0, chg);
    le16(&mut b, 8, 1);
    le32(&mut b, 16, s.ana_group);
    le32(&mut b, 20, if groups_only { 0 } else { 1 });
    le64(&mut b, 24, chg);
    b[32] = state as u8;
    if !groups_only {
        le32(&mut b, 48, NSID);
    }
    b
}

/// Whether I/O is allowed in an ANA state.
pub fn ana_accessible(s: AnaState) -> bool {
    matches!(s, AnaState::Optimized | AnaState::NonOptimized)
}

/// SMART / Health Information log (figure 207): healthy, temperature 300 K.
pub fn smart_log(error_count: u64) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    le16(&mut b, 1, 300); // composite temperature
    b[3] = 100; // available spare
    b[4] = 10; // threshold
               // Media and data integrity errors (160..176) stay 0; error log entries at 176.
    b[176..184].copy_from_slice(&error_count.to_le_bytes());
    b
}

/// Error Information log (figure 194): 64 bytes per entry, newest first; an entry with error
/// count 0 is empty.
pub fn error_log(entries: &VecDeque<ErrorEntry>) -> Vec<u8> {
    let mut b = vec![0u8; 64 * ERROR_LOG_ENTRIES];
    for (e, d) in entries.iter().zip(b.chunks_exact_mut(64)) {
        d[0..8].copy_from_slice(&e.count.to_le_bytes());
        d[8..10].copy_from_slice(&e.sqid.to_le_bytes());
        d[10..12].copy_from_slice(&e.cid.to_le_bytes());
        d[12..14].copy_from_slice(&e.status.to_field().to_le_bytes());
        // Parameter Error Location: none named.
        d[14..16].copy_from_slice(&0xffffu16.to_le_bytes());
        if let Some((nsid, lba)) = e.at {
            d[16..24].copy_from_slice(&lba.to_le_bytes());
            d[24..28].copy_from_slice(&nsid.to_le_bytes());
        }
        d[29] = 3; // transport type: TCP
    }
    b
}

/// Firmware Slot Information log (figure 209).
pub fn firmware_log(fw: &str) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0] = 1; // active slot 1
    put_str(&mut b[8..16], fw);
    b
}

/// Changed Namespace List log (figure 210).
pub fn changed_ns_log(changed: bool) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    if changed {
        le32(&mut b, 0, NSID);
    }
    b
}

/// Commands Supported and Effects log (figure 211).
pub fn effects_log() -> Vec<u8> {
    use crate::spec::{admin_op, io_op};
    let mut b = vec![0u8; 4096];
    let csupp = 1u32;
    for op in [
        admin_op::GET_LOG_PAGE,
        admin_op::IDENTIFY,
        admin_op::ABORT,
        admin_op::SET_FEATURES,
        admin_op::GET_FEATURES,
        admin_op::ASYNC_EVENT,
        admin_op::KEEP_ALIVE,
    ] {
        le32(&mut b, op as usize * 4, csupp);
    }
    for op in [
        io_op::FLUSH,
        io_op::READ,
        io_op::COMPARE,
        io_op::RESV_REPORT,
    ] {
        le32(&mut b, 1024 + op as usize * 4, csupp);
    }
    // Commands that change the logical content (LBCC, bit 1).
    for op in [
        io_op::WRITE,
        io_op::WRITE_ZEROES,
        io_op::DSM,
        io_op::RESV_REGISTER,
        io_op::RESV_ACQUIRE,
        io_op::RESV_RELEASE,
    ] {
        le32(&mut b, 1024 + op as usize * 4, csupp | 2);
    }
    b
}

/// Discovery log page (Fabrics 1.1 figure 40-41): one entry per (subsystem, portal) the host
/// may access. `fallback` is used for subsystems without their own portal list and when the
/// node has no configured portals.
pub fn discovery_log(target: &Target, hostnqn: &str, fallback: &[Portal]) -> Vec<u8> {
    let mut entries: Vec<(String, Portal)> = Vec::new();
    let node_portals = if target.config.portals.is_empty() {
        fallback.to_vec()
    } else {
        target.config.portals.clone()
    };
    for s in target.subsystems() {
        if !s.allows(hostnqn) {
            continue;
        }
        let mut portals = s.portals();
        // A node without configured portals (a wildcard listener, nothing advertised) is not in
        // the subsystem's list: it adds the address the host reached it by.
        if portals.is_empty() || target.config.portals.is_empty() {
            portals.extend(node_portals.iter().cloned());
        }
        for p in portals {
            entries.push((s.nqn.clone(), p));
        }
    }
    let mut b = vec![0u8; 1024 * (1 + entries.len())];
    le64(&mut b, 0, target.discovery_generation());
    le64(&mut b, 8, entries.len() as u64);
    for (i, (nqn, p)) in entries.iter().enumerate() {
        let e = &mut b[1024 * (i + 1)..1024 * (i + 2)];
        e[0] = 3; // TRTYPE TCP
        e[1] = if p.addr.contains(':') { 2 } else { 1 }; // ADRFAM IPv6 / IPv4
        e[2] = 2; // SUBTYPE NVMe subsystem
                  // TREQ: secure channel requirement not specified, as Linux's nvmet reports a port
                  // without TLS. "Not required" (10b) makes libnvme 1.3 (Debian 12's nvme-cli) ask the
                  // kernel for TLS on `connect-all`, which fails every connect.
        e[3] = 0;
        le16(e, 4, p.port_id);
        le16(e, 6, 0xffff); // dynamic controller model
        le16(e, 8, 32); // ASQSZ
        put_str(&mut e[32..64], &p.port.to_string());
        put_str(&mut e[512..768], &p.addr);
        put_nqn(&mut e[256..512], nqn);
        // TRSVCID / TRADDR are space padded ASCII (figure 41).
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subsystem::HostAcl;
    use crate::target::TargetConfig;
    use alcubierre_block::MemBlockDevice;
    use alcubierre_types::{BlockSize, ByteSize, VolumeGeometry, VolumeId};
    use std::sync::Arc;

    fn subsys() -> Subsystem {
        let g = VolumeGeometry::new(BlockSize::B4096, ByteSize::mib(8)).unwrap();
        Subsystem::new(
            VolumeId::random(),
            Arc::new(MemBlockDevice::new(g)),
            HostAcl::Any,
            7,
        )
    }

    #[test]
    fn namespace_fields() {
        // Base 1.4 figure 245: NSZE, FLBAS/LBAF0 LBADS, NMIC, ANAGRPID, NGUID.
        let s = subsys();
        let b = namespace(&s);
        assert_eq!(u64::from_le_bytes(b[0..8].try_into().unwrap()), 2048);
        assert_eq!(
            (u32::from_le_bytes(b[128..132].try_into().unwrap()) >> 16) & 0xff,
            12
        );
        assert_eq!(b[30], 1);
        assert_eq!(u32::from_le_bytes(b[92..96].try_into().unwrap()), 7);
        assert_eq!(&b[104..120], s.volume.0.as_bytes());
        // 4096-byte blocks: one block is the physical block and the atomic write unit (0's
        // based), both valid (NSFEAT bits 1 and 4).
        assert_eq!(b[24] & 0b1_0010, 0b1_0010);
        let at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        assert_eq!((at(34), at(36), at(64), at(72)), (0, 0, 0, 0));
    }

    #[test]
    fn a_512_byte_namespace_reports_4096_byte_physical_blocks() {
        // What Linux reads (nvme_update_disk_info): physical block = min(NPWG, NAWUPF) + 1
        // blocks; the optimal I/O size from NOWS.
        let g = VolumeGeometry::new(BlockSize::B512, ByteSize::mib(8)).unwrap();
        let dev = Arc::new(MemBlockDevice::new(g));
        let s = Subsystem::new(VolumeId::random(), dev, HostAcl::Any, 1);
        let b = namespace(&s);
        let at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        assert_eq!((at(34), at(36), at(64), at(72)), (7, 7, 7, 7));
        assert_eq!(
            (u32::from_le_bytes(b[128..132].try_into().unwrap()) >> 16) & 0xff,
            9
        );
    }

    #[test]
    fn ana_log_layout() {
        // Base 1.4 figure 215/216: header, one group descriptor, its namespace list.
        let s = subsys();
        let b = ana_log(&s, false);
        assert_eq!(u16::from_le_bytes([b[8], b[9]]), 1);
        assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), 7);
        assert_eq!(b[32], AnaState::Optimized as u8);
        assert_eq!(u32::from_le_bytes(b[48..52].try_into().unwrap()), NSID);
        assert_eq!(ana_log(&s, true).len(), 48);
    }

    #[test]
    fn discovery_log_lists_allowed_subsystems_on_every_portal() {
        // Fabrics 1.1 figure 40/41.
        let t = Target::new(TargetConfig {
            portals: vec![
                Portal {
                    addr: "192.0.2.1".into(),
                    port: 4420,
                    port_id: 1,
                },
                Portal {
                    addr: "192.0.2.2".into(),
                    port: 4420,
                    port_id: 2,
                },
            ],
            ..TargetConfig::default()
        });
        let open = Arc::new(subsys());
        let closed = Arc::new(subsys());
        closed.set_acl(HostAcl::Only(vec!["nqn.host:a".into()]));
        t.add_subsystem(open.clone());
        t.add_subsystem(closed);
        let b = discovery_log(&t, "nqn.host:b", &[]);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 2);
        let e = &b[1024..2048];
        assert_eq!(e[0], 3);
        assert_eq!(&e[512..521], b"192.0.2.1");
        assert_eq!(&e[32..36], b"4420");
        assert!(e[256..].starts_with(open.nqn.as_bytes()));
        assert_eq!(&b[2048 + 512..2048 + 521], b"192.0.2.2");
        assert_eq!(
            u64::from_le_bytes(
                discovery_log(&t, "nqn.host:a", &[])[8..16]
                    .try_into()
                    .unwrap()
            ),
            4
        );
    }
}

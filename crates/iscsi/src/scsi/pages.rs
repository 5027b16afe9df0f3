//! The commands that report the LU: INQUIRY and its VPD pages, MODE SENSE, REPORT TARGET
//! PORT GROUPS.

use bytes::{BufMut, Bytes};

use super::{key, Lun, Outcome, Sense, MAX_CAW_BLOCKS, MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS};

impl Lun {
    /// REPORT TARGET PORT GROUPS (SPC-4 section 6.36): this node's group first, then the
    /// other nodes' as the cluster last told this node; each group has one target port whose
    /// relative id is the group's id.
    pub(super) fn report_groups(&self, cdb: &[u8]) -> Vec<u8> {
        let extended = cdb[1] >> 5 == 1;
        let mut desc = Vec::new();
        let peers = self.peers.read();
        for (group, state) in
            std::iter::once((self.group, self.alua_state())).chain(peers.iter().copied())
        {
            desc.push(state);
            desc.push(0x8b); // T_SUP, U_SUP, AN_SUP, AO_SUP
            desc.extend_from_slice(&group.to_be_bytes());
            desc.extend_from_slice(&[0, 0, 0, 1]); // status, vendor, one target port
            desc.extend_from_slice(&[0, 0]);
            desc.extend_from_slice(&group.to_be_bytes()); // relative target port id
        }
        let mut d = (desc.len() as u32).to_be_bytes().to_vec();
        if extended {
            // Extended header: format 1, implicit transition time 10 s.
            d.extend_from_slice(&[0x10, 10, 0, 0]);
        }
        d.extend_from_slice(&desc);
        d
    }

    pub(super) fn inquiry(&self, cdb: &[u8]) -> Result<Vec<u8>, Outcome> {
        let evpd = cdb[1] & 1 != 0;
        if !evpd {
            if cdb[2] != 0 {
                return Err(Outcome::check(Sense::INVALID_FIELD));
            }
            let mut d = vec![0u8; 96];
            d[2] = 0x06; // SPC-4
            d[3] = 0x12; // HiSup, response data format 2
            d[4] = 91;
            d[5] = 0x10; // TPGS 01b: implicit ALUA
            d[7] = 0x02; // CmdQue
            d[8..16].copy_from_slice(b"ALCUBIER");
            d[16..32].copy_from_slice(b"Alcubierre vol  ");
            d[32..36].copy_from_slice(b"0001");
            // Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
            for (i, v) in [0x00a0u16, 0x0960, 0x0460, 0x04c0].iter().enumerate() {
                d[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
            }
            return Ok(d);
        }
        let page = cdb[2];
        let mut body: Vec<u8> = Vec::new();
        match page {
            0x00 => body.extend_from_slice(&[0x00, 0x80, 0x83, 0x8f, 0xb0, 0xb1, 0xb2]),
            0x8f => body = Lun::third_party_copy_page(),
            0x80 => body.extend_from_slice(self.serial.as_bytes()),
            0x83 => {
                // NAA (binary, LU association).
                body.extend_from_slice(&[0x01, 0x03, 0x00, 16]);
                body.extend_from_slice(&self.naa);
                // T10 vendor id + serial (ASCII).
                let t10 = format!("ALCUBIER{}", self.serial);
                body.extend_from_slice(&[0x02, 0x01, 0x00, t10.len() as u8]);
                body.extend_from_slice(t10.as_bytes());
                // Relative target port and target port group (target port association, PIV
                // with protocol iSCSI): this node's.
                let g = self.group.to_be_bytes();
                body.extend_from_slice(&[0x51, 0x94, 0x00, 4, 0, 0, g[0], g[1]]);
                body.extend_from_slice(&[0x51, 0x95, 0x00, 4, 0, 0, g[0], g[1]]);
            }
            0xb0 => {
                // Block limits.
                let mut b = vec![0u8; 60];
                // (page byte n is b[n - 4])
                b[0] = 0x01; // WSNZ: WRITE SAME needs a non-zero length
                b[1] = MAX_CAW_BLOCKS; // maximum COMPARE AND WRITE length
                let max = self.max_transfer_blocks().min(0xffff_ffff) as u32;
                b[4..8].copy_from_slice(&max.to_be_bytes());
                b[8..12].copy_from_slice(&max.to_be_bytes()); // optimal transfer length
                b[16..20].copy_from_slice(&MAX_UNMAP_BLOCKS.to_be_bytes()); // max unmap LBA count
                b[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
                b[24..28].copy_from_slice(&1u32.to_be_bytes()); // optimal unmap granularity
                                                                // Maximum WRITE SAME length: no more than one transfer, so a host can check
                                                                // what it wrote with one read.
                let ws = u64::from(MAX_UNMAP_BLOCKS).min(self.max_transfer_blocks());
                b[32..40].copy_from_slice(&ws.to_be_bytes());
                body = b;
            }
            0xb1 => {
                let mut b = vec![0u8; 60];
                b[1] = 1; // non-rotating medium
                body = b;
            }
            0xb2 => {
                // Logical block provisioning: UNMAP, WRITE SAME (16) and (10) with UNMAP,
                // reads of unmapped blocks return zeroes; thin provisioned.
                body = vec![0, 0xe0 | 0x04, 0x02, 0];
            }
            _ => return Err(Outcome::check(Sense::INVALID_FIELD)),
        }
        let mut d = vec![0u8, page];
        d.put_u16(body.len() as u16);
        d.extend_from_slice(&body);
        Ok(d)
    }

    pub(super) fn mode_sense(&self, cdb: &[u8]) -> Result<Outcome, Outcome> {
        let six = cdb[0] == 0x1a;
        let dbd = cdb[1] & 0x08 != 0;
        let pc = cdb[2] >> 6;
        let page = cdb[2] & 0x3f;
        let subpage = cdb[3];
        if pc == 3 {
            // Saved values are not supported (SPC-4 6.11: SAVING PARAMETERS NOT SUPPORTED).
            return Err(Outcome::check(Sense::new(key::ILLEGAL_REQUEST, 0x39, 0x00)));
        }
        if subpage != 0 && subpage != 0xff {
            return Err(Outcome::check(Sense::INVALID_FIELD));
        }
        let changeable = pc == 1;
        let caching = |p: &mut Vec<u8>| {
            let mut c = vec![0u8; 20];
            c[0] = 0x08;
            c[1] = 18;
            // WCE = 0: no volatile cache; RCD = 0.
            if changeable {
                c[2..].fill(0);
            }
            p.extend_from_slice(&c);
        };
        let control = |p: &mut Vec<u8>| {
            let mut c = vec![0u8; 12];
            c[0] = 0x0a;
            c[1] = 10;
            if !changeable {
                c[2] = 0x02; // GLTSD
                c[8] = 0xff; // busy timeout: unlimited
                c[9] = 0xff;
            }
            p.extend_from_slice(&c);
        };
        let exceptions = |p: &mut Vec<u8>| {
            let mut c = vec![0u8; 12];
            c[0] = 0x1c;
            c[1] = 10;
            p.extend_from_slice(&c);
        };
        let mut pages = Vec::new();
        match page {
            0x08 => caching(&mut pages),
            0x0a => control(&mut pages),
            0x1c => exceptions(&mut pages),
            0x3f => {
                caching(&mut pages);
                control(&mut pages);
                exceptions(&mut pages);
            }
            _ => return Err(Outcome::check(Sense::INVALID_FIELD)),
        }
        let mut bd = Vec::new();
        if !dbd {
            let blocks = self.blocks().min(0xffff_ffff) as u32;
            bd.put_u32(blocks);
            bd.put_u32(self.block_size() as u32 & 0x00ff_ffff);
        }
        let dev_specific = 0x10; // DPOFUA
        let mut d = Vec::new();
        if six {
            let len = 3 + bd.len() + pages.len();
            d.extend_from_slice(&[len.min(255) as u8, 0, dev_specific, bd.len() as u8]);
            d.extend_from_slice(&bd);
            d.extend_from_slice(&pages);
            let n = u64::from(cdb[4]);
            return Ok(Outcome::good(
                Bytes::from(d).slice(..(n as usize).min(len + 1)),
            ));
        }
        let len = 6 + bd.len() + pages.len();
        d.put_u16(len as u16);
        d.extend_from_slice(&[0, dev_specific, 0, 0]);
        d.put_u16(bd.len() as u16);
        d.extend_from_slice(&bd);
        d.extend_from_slice(&pages);
        let n = u16::from_be_bytes([cdb[7], cdb[8]]) as usize;
        Ok(Outcome::good(Bytes::from(d).slice(..n.min(len + 2))))
    }
}

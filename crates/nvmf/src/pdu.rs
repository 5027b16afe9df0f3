//! NVMe/TCP PDU codec (TCP 1.0 section 3.6). Byte layout of every PDU:
//!
//! ```text
//! 0      1      2      3      4            8
//! +------+------+------+------+------------+----------------------+------+-----+------+------+
//! | type | flags| hlen | pdo  |    plen    | PDU specific header  | HDGST| pad | data | DDGST|
//! +------+------+------+------+------------+----------------------+------+-----+------+------+
//!  <------------------------- hlen ---------------------------->  <-4->        <-PDO..
//! ```
//!
//! `hlen` is fixed per type; `pdo` is where data starts (aligned to the peer's PDU data alignment);
//! `plen` is the whole PDU. Digests are CRC-32C, present once negotiated by ICReq/ICResp. The
//! decoder validates every field before it allocates and returns a [`PduError`] carrying the
//! termination status (FES) and the offending field's offset (FEI) for a C2HTermReq.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::capsule::{Cqe, Sqe, CQE_LEN, SQE_LEN};
use crate::spec::{fes, pdu_flag, pdu_type};

/// Length of the common header.
pub const CH_LEN: usize = 8;
/// Header length of ICReq and ICResp.
pub const IC_HLEN: usize = 128;
/// Header length of a command capsule.
pub const CMD_HLEN: usize = CH_LEN + SQE_LEN;
/// Header length of a response capsule.
pub const RESP_HLEN: usize = CH_LEN + CQE_LEN;
/// Header length of H2CData, C2HData, R2T and the termination requests.
pub const DATA_HLEN: usize = 24;
/// Most bytes of the offending header a termination request carries.
pub const TERM_MAX_DATA: usize = 152;

/// Which digests the connection negotiated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    /// Header digest on every PDU but ICReq/ICResp/TermReq.
    pub header: bool,
    /// Data digest on every PDU that carries data.
    pub data: bool,
}

/// Initialize Connection Request (TCP 1.0 section 3.6.2.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcReq {
    /// PDU format version (0).
    pub pfv: u16,
    /// Host PDU data alignment, 0-based dwords.
    pub hpda: u8,
    /// Bit 0 header digest, bit 1 data digest.
    pub dgst: u8,
    /// Maximum outstanding R2Ts per command, 0-based.
    pub maxr2t: u32,
}

/// Initialize Connection Response (TCP 1.0 section 3.6.2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcResp {
    /// PDU format version (0).
    pub pfv: u16,
    /// Controller PDU data alignment, 0-based dwords.
    pub cpda: u8,
    /// Bit 0 header digest, bit 1 data digest.
    pub dgst: u8,
    /// Most data bytes in one H2CData PDU.
    pub maxh2cdata: u32,
}

/// H2CTermReq / C2HTermReq (TCP 1.0 section 3.6.2.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermReq {
    /// Fatal error status.
    pub fes: u16,
    /// Fatal error information (a byte offset for invalid header fields).
    pub fei: u32,
    /// The start of the PDU that caused the error.
    pub data: Bytes,
}

/// H2CData / C2HData (TCP 1.0 sections 3.6.2.7 and 3.6.2.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPdu {
    /// Command capsule CID the data belongs to.
    pub cccid: u16,
    /// Transfer tag (H2CData: from the R2T; C2HData: 0).
    pub ttag: u16,
    /// Offset of this data within the command's transfer.
    pub datao: u32,
    /// The data.
    pub data: Bytes,
    /// Last PDU of the transfer.
    pub last: bool,
    /// C2HData only: the command succeeded and no response capsule follows.
    pub success: bool,
    /// False when the data digest did not match (the command must fail, the connection lives).
    pub ddgst_ok: bool,
}

/// Ready to Transfer (TCP 1.0 section 3.6.2.9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct R2t {
    /// Command capsule CID.
    pub cccid: u16,
    /// Transfer tag the H2CData PDUs must carry.
    pub ttag: u16,
    /// Offset of the requested data.
    pub r2to: u32,
    /// Length of the requested data.
    pub r2tl: u32,
}

/// One PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pdu {
    /// ICReq.
    IcReq(IcReq),
    /// ICResp.
    IcResp(IcResp),
    /// H2CTermReq.
    H2CTermReq(TermReq),
    /// C2HTermReq.
    C2HTermReq(TermReq),
    /// Command capsule with optional in-capsule data.
    CapsuleCmd {
        /// The command.
        sqe: Box<Sqe>,
        /// In-capsule data (may be empty).
        data: Bytes,
        /// False when the data digest did not match.
        ddgst_ok: bool,
    },
    /// Response capsule.
    CapsuleResp(Cqe),
    /// H2CData.
    H2CData(DataPdu),
    /// C2HData.
    C2HData(DataPdu),
    /// R2T.
    R2T(R2t),
}

/// A PDU that must terminate the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (FES {fes:#x}, FEI {fei})")]
pub struct PduError {
    /// Fatal error status for the termination request.
    pub fes: u16,
    /// Fatal error information.
    pub fei: u32,
    /// What was wrong, for the log.
    pub reason: &'static str,
    /// The offending header bytes (at most [`TERM_MAX_DATA`]).
    pub header: Bytes,
}

/// Decoder limits and negotiated state of one side of a connection.
#[derive(Clone, Debug)]
pub struct Decoder {
    /// Negotiated digests; none until the IC exchange.
    pub digests: Digests,
    /// Largest PDU accepted, in bytes (bounds the memory a peer can make us buffer).
    pub max_pdu: usize,
    /// Whether the IC exchange is done (only ICReq/ICResp are accepted before).
    pub connected: bool,
}

impl Decoder {
    /// A decoder before the IC exchange.
    pub fn new(max_pdu: usize) -> Self {
        Self {
            digests: Digests::default(),
            max_pdu,
            connected: false,
        }
    }

    /// Decodes the next whole PDU from `buf` and removes it; `Ok(None)` when more bytes are
    /// needed.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Pdu>, PduError> {
        if buf.len() < CH_LEN {
            return Ok(None);
        }
        let ty = buf[0];
        let flags = buf[1];
        let hlen = buf[2] as usize;
        let pdo = buf[3] as usize;
        let plen = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes")) as usize;
        let err = |fes: u16, fei: u32, reason: &'static str, buf: &BytesMut| PduError {
            fes,
            fei,
            reason,
            header: Bytes::copy_from_slice(&buf[..buf.len().min(TERM_MAX_DATA)]),
        };
        let (want_hlen, digestible, may_carry_data) = match ty {
            pdu_type::IC_REQ | pdu_type::IC_RESP => (IC_HLEN, false, false),
            pdu_type::H2C_TERM_REQ | pdu_type::C2H_TERM_REQ => (DATA_HLEN, false, true),
            pdu_type::CAPSULE_CMD => (CMD_HLEN, true, true),
            pdu_type::CAPSULE_RESP => (RESP_HLEN, true, false),
            pdu_type::H2C_DATA | pdu_type::C2H_DATA => (DATA_HLEN, true, true),
            pdu_type::R2T => (DATA_HLEN, true, false),
            _ => return Err(err(fes::INVALID_HEADER_FIELD, 0, "unknown PDU type", buf)),
        };
        let is_ic = matches!(ty, pdu_type::IC_REQ | pdu_type::IC_RESP);
        if self.connected == is_ic {
            return Err(err(
                fes::PDU_SEQUENCE_ERROR,
                0,
                if is_ic {
                    "second IC PDU"
                } else {
                    "PDU before the IC exchange"
                },
                buf,
            ));
        }
        if hlen != want_hlen {
            return Err(err(fes::INVALID_HEADER_FIELD, 2, "wrong HLEN", buf));
        }
        let hd = digestible && self.digests.header;
        if digestible && (flags & pdu_flag::HDGSTF != 0) != self.digests.header {
            return Err(err(
                fes::INVALID_HEADER_FIELD,
                1,
                "header digest flag differs from the negotiated setting",
                buf,
            ));
        }
        let hdr_total = hlen + if hd { 4 } else { 0 };
        if plen < hdr_total {
            return Err(err(fes::INVALID_HEADER_FIELD, 4, "PLEN below header", buf));
        }
        if plen > self.max_pdu {
            return Err(err(fes::DATA_LIMIT_EXCEEDED, 4, "PDU too long", buf));
        }
        let has_data = plen > hdr_total;
        if has_data && !may_carry_data {
            return Err(err(
                fes::INVALID_HEADER_FIELD,
                4,
                "PLEN too long for type",
                buf,
            ));
        }
        let is_term = matches!(ty, pdu_type::H2C_TERM_REQ | pdu_type::C2H_TERM_REQ);
        if is_term && plen > DATA_HLEN + TERM_MAX_DATA {
            return Err(err(fes::INVALID_HEADER_FIELD, 4, "TermReq too long", buf));
        }
        let dd = has_data && !is_term && self.digests.data;
        if has_data && !is_term {
            if (flags & pdu_flag::DDGSTF != 0) != self.digests.data {
                return Err(err(
                    fes::INVALID_HEADER_FIELD,
                    1,
                    "data digest flag differs from the negotiated setting",
                    buf,
                ));
            }
            if pdo < hdr_total || pdo + if dd { 4 } else { 0 } > plen {
                return Err(err(fes::INVALID_HEADER_FIELD, 3, "bad PDO", buf));
            }
        }
        if buf.len() < plen {
            buf.reserve(plen - buf.len());
            return Ok(None);
        }
        if hd {
            let want = crc32c::crc32c(&buf[..hlen]);
            let got = u32::from_le_bytes(buf[hlen..hlen + 4].try_into().expect("4 bytes"));
            if want != got {
                return Err(err(
                    fes::HEADER_DIGEST_ERROR,
                    0,
                    "header digest mismatch",
                    buf,
                ));
            }
        }
        let mut pdu = buf.split_to(plen);
        let header = pdu.split_to(hlen);
        let (data, ddgst_ok) = if !has_data {
            (Bytes::new(), true)
        } else if is_term {
            (pdu.freeze(), true)
        } else {
            pdu.advance(pdo - hlen);
            let dlen = plen - pdo - if dd { 4 } else { 0 };
            let data = pdu.split_to(dlen).freeze();
            let ok = !dd || {
                let got = u32::from_le_bytes(pdu[..4].try_into().expect("4 bytes"));
                crc32c::crc32c(&data) == got
            };
            (data, ok)
        };
        let h = &header[..];
        let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
        let last = flags & pdu_flag::LAST_PDU != 0;
        Ok(Some(match ty {
            pdu_type::IC_REQ => Pdu::IcReq(IcReq {
                pfv: u16_at(8),
                hpda: h[10],
                dgst: h[11],
                maxr2t: u32_at(12),
            }),
            pdu_type::IC_RESP => Pdu::IcResp(IcResp {
                pfv: u16_at(8),
                cpda: h[10],
                dgst: h[11],
                maxh2cdata: u32_at(12),
            }),
            pdu_type::H2C_TERM_REQ | pdu_type::C2H_TERM_REQ => {
                let t = TermReq {
                    fes: u16_at(8),
                    fei: u32_at(10),
                    data,
                };
                if ty == pdu_type::H2C_TERM_REQ {
                    Pdu::H2CTermReq(t)
                } else {
                    Pdu::C2HTermReq(t)
                }
            }
            pdu_type::CAPSULE_CMD => {
                let mut sqe = Box::new(Sqe::default());
                sqe.0.copy_from_slice(&h[CH_LEN..CMD_HLEN]);
                Pdu::CapsuleCmd {
                    sqe,
                    data,
                    ddgst_ok,
                }
            }
            pdu_type::CAPSULE_RESP => {
                let b: &[u8; CQE_LEN] = h[CH_LEN..RESP_HLEN].try_into().expect("16 bytes");
                Pdu::CapsuleResp(Cqe::from_bytes(b))
            }
            pdu_type::H2C_DATA | pdu_type::C2H_DATA => {
                let datal = u32_at(16) as usize;
                if datal != data.len() {
                    return Err(PduError {
                        fes: fes::INVALID_HEADER_FIELD,
                        fei: 16,
                        reason: "DATAL differs from the data in the PDU",
                        header: header.freeze(),
                    });
                }
                let d = DataPdu {
                    cccid: u16_at(8),
                    ttag: u16_at(10),
                    datao: u32_at(12),
                    data,
                    last,
                    success: flags & pdu_flag::SUCCESS != 0,
                    ddgst_ok,
                };
                if ty == pdu_type::H2C_DATA {
                    Pdu::H2CData(d)
                } else {
                    Pdu::C2HData(d)
                }
            }
            pdu_type::R2T => Pdu::R2T(R2t {
                cccid: u16_at(8),
                ttag: u16_at(10),
                r2to: u32_at(12),
                r2tl: u32_at(16),
            }),
            _ => unreachable!("type checked above"),
        }))
    }
}

/// Writes the common header and returns the position where the PDU starts.
fn put_ch(out: &mut BytesMut, ty: u8, flags: u8, hlen: usize, pdo: usize, plen: usize) -> usize {
    let start = out.len();
    out.put_u8(ty);
    out.put_u8(flags);
    out.put_u8(hlen as u8);
    out.put_u8(pdo as u8);
    out.put_u32_le(plen as u32);
    start
}

fn put_hdgst(out: &mut BytesMut, start: usize, on: bool) {
    if on {
        let c = crc32c::crc32c(&out[start..]);
        out.put_u32_le(c);
    }
}

/// Encodes PDUs with the connection's negotiated digests and the peer's data alignment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Encoder {
    /// Negotiated digests.
    pub digests: Digests,
    /// The receiver's PDU data alignment, 0-based dwords (HPDA for C2H, CPDA for H2C).
    pub pda: u8,
}

impl Encoder {
    fn data_layout(&self, hlen: usize, dlen: usize) -> (usize, usize, u8) {
        let hd = if self.digests.header { 4 } else { 0 };
        let align = (self.pda as usize + 1) * 4;
        let pdo = (hlen + hd).div_ceil(align) * align;
        let dd = if self.digests.data { 4 } else { 0 };
        let mut flags = 0;
        if self.digests.header {
            flags |= pdu_flag::HDGSTF;
        }
        if self.digests.data && dlen > 0 {
            flags |= pdu_flag::DDGSTF;
        }
        if dlen == 0 {
            (0, hlen + hd, flags)
        } else {
            (pdo, pdo + dlen + dd, flags)
        }
    }

    fn put_data(&self, out: &mut BytesMut, start: usize, pdo: usize, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let pad = start + pdo - out.len();
        out.put_bytes(0, pad);
        out.put_slice(data);
        if self.digests.data {
            out.put_u32_le(crc32c::crc32c(data));
        }
    }

    /// Appends a response capsule.
    pub fn capsule_resp(&self, out: &mut BytesMut, cqe: &Cqe) {
        let (_, plen, flags) = self.data_layout(RESP_HLEN, 0);
        let start = put_ch(out, pdu_type::CAPSULE_RESP, flags, RESP_HLEN, 0, plen);
        out.put_slice(&cqe.to_bytes());
        put_hdgst(out, start, self.digests.header);
    }

    /// Appends a command capsule with `data` in the capsule.
    pub fn capsule_cmd(&self, out: &mut BytesMut, sqe: &Sqe, data: &[u8]) {
        let (pdo, plen, flags) = self.data_layout(CMD_HLEN, data.len());
        let start = put_ch(out, pdu_type::CAPSULE_CMD, flags, CMD_HLEN, pdo, plen);
        out.put_slice(&sqe.0);
        put_hdgst(out, start, self.digests.header);
        self.put_data(out, start, pdo, data);
    }

    /// Appends a C2HData or H2CData PDU.
    #[allow(clippy::too_many_arguments)]
    pub fn data(
        &self,
        out: &mut BytesMut,
        h2c: bool,
        cccid: u16,
        ttag: u16,
        datao: u32,
        data: &[u8],
        last: bool,
        success: bool,
    ) {
        let (pdo, plen, mut flags) = self.data_layout(DATA_HLEN, data.len());
        if last {
            flags |= pdu_flag::LAST_PDU;
        }
        if success {
            flags |= pdu_flag::SUCCESS;
        }
        let ty = if h2c {
            pdu_type::H2C_DATA
        } else {
            pdu_type::C2H_DATA
        };
        let start = put_ch(out, ty, flags, DATA_HLEN, pdo, plen);
        out.put_u16_le(cccid);
        out.put_u16_le(ttag);
        out.put_u32_le(datao);
        out.put_u32_le(data.len() as u32);
        out.put_u32_le(0);
        put_hdgst(out, start, self.digests.header);
        self.put_data(out, start, pdo, data);
    }

    /// Appends an R2T.
    pub fn r2t(&self, out: &mut BytesMut, r: &R2t) {
        let (_, plen, flags) = self.data_layout(DATA_HLEN, 0);
        let start = put_ch(out, pdu_type::R2T, flags, DATA_HLEN, 0, plen);
        out.put_u16_le(r.cccid);
        out.put_u16_le(r.ttag);
        out.put_u32_le(r.r2to);
        out.put_u32_le(r.r2tl);
        out.put_u32_le(0);
        put_hdgst(out, start, self.digests.header);
    }

    /// Appends an ICReq (never digested).
    pub fn ic_req(out: &mut BytesMut, r: &IcReq) {
        put_ch(out, pdu_type::IC_REQ, 0, IC_HLEN, 0, IC_HLEN);
        out.put_u16_le(r.pfv);
        out.put_u8(r.hpda);
        out.put_u8(r.dgst);
        out.put_u32_le(r.maxr2t);
        out.put_bytes(0, IC_HLEN - 16);
    }

    /// Appends an ICResp (never digested).
    pub fn ic_resp(out: &mut BytesMut, r: &IcResp) {
        put_ch(out, pdu_type::IC_RESP, 0, IC_HLEN, 0, IC_HLEN);
        out.put_u16_le(r.pfv);
        out.put_u8(r.cpda);
        out.put_u8(r.dgst);
        out.put_u32_le(r.maxh2cdata);
        out.put_bytes(0, IC_HLEN - 16);
    }

    /// Appends a termination request (never digested).
    pub fn term_req(out: &mut BytesMut, c2h: bool, t: &TermReq) {
        let data = &t.data[..t.data.len().min(TERM_MAX_DATA)];
        let ty = if c2h {
            pdu_type::C2H_TERM_REQ
        } else {
            pdu_type::H2C_TERM_REQ
        };
        put_ch(out, ty, 0, DATA_HLEN, 0, DATA_HLEN + data.len());
        out.put_u16_le(t.fes);
        out.put_u32_le(t.fei);
        out.put_bytes(0, DATA_HLEN - 14);
        out.put_slice(data);
    }

    /// Appends any PDU (convenience for tests and the initiator).
    pub fn pdu(&self, out: &mut BytesMut, pdu: &Pdu) {
        match pdu {
            Pdu::IcReq(r) => Self::ic_req(out, r),
            Pdu::IcResp(r) => Self::ic_resp(out, r),
            Pdu::H2CTermReq(t) => Self::term_req(out, false, t),
            Pdu::C2HTermReq(t) => Self::term_req(out, true, t),
            Pdu::CapsuleCmd { sqe, data, .. } => self.capsule_cmd(out, sqe, data),
            Pdu::CapsuleResp(c) => self.capsule_resp(out, c),
            Pdu::H2CData(d) => self.data(
                out, true, d.cccid, d.ttag, d.datao, &d.data, d.last, d.success,
            ),
            Pdu::C2HData(d) => self.data(
                out, false, d.cccid, d.ttag, d.datao, &d.data, d.last, d.success,
            ),
            Pdu::R2T(r) => self.r2t(out, r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Status;

    fn connected(d: Digests) -> Decoder {
        Decoder {
            digests: d,
            max_pdu: 1 << 20,
            connected: true,
        }
    }

    fn round_trip(d: Digests, pda: u8, pdu: Pdu) {
        let enc = Encoder { digests: d, pda };
        let mut buf = BytesMut::new();
        enc.pdu(&mut buf, &pdu);
        let dec = if matches!(pdu, Pdu::IcReq(_) | Pdu::IcResp(_)) {
            Decoder::new(1 << 20)
        } else {
            connected(d)
        };
        // Byte by byte: the decoder must wait for the whole PDU.
        let all = buf.clone();
        let mut partial = BytesMut::new();
        for (i, b) in all.iter().enumerate() {
            partial.put_u8(*b);
            let r = dec.decode(&mut partial).unwrap();
            if i + 1 < all.len() {
                assert!(r.is_none(), "decoded early at byte {i}");
            } else {
                assert_eq!(r.unwrap(), pdu);
                assert!(partial.is_empty());
            }
        }
    }

    fn all_digests() -> [Digests; 4] {
        [
            Digests::default(),
            Digests {
                header: true,
                data: false,
            },
            Digests {
                header: false,
                data: true,
            },
            Digests {
                header: true,
                data: true,
            },
        ]
    }

    #[test]
    fn every_pdu_type_round_trips() {
        // TCP 1.0 section 3.6.2: the layout of each PDU type, with every digest combination and
        // a non-zero data alignment.
        round_trip(
            Digests::default(),
            0,
            Pdu::IcReq(IcReq {
                pfv: 0,
                hpda: 3,
                dgst: 3,
                maxr2t: 7,
            }),
        );
        round_trip(
            Digests::default(),
            0,
            Pdu::IcResp(IcResp {
                pfv: 0,
                cpda: 0,
                dgst: 1,
                maxh2cdata: 131072,
            }),
        );
        for d in all_digests() {
            for pda in [0u8, 7] {
                let mut sqe = Sqe::default();
                sqe.set_cid(5);
                round_trip(
                    d,
                    pda,
                    Pdu::CapsuleCmd {
                        sqe: Box::new(sqe.clone()),
                        data: Bytes::from(vec![9u8; 100]),
                        ddgst_ok: true,
                    },
                );
                round_trip(
                    d,
                    pda,
                    Pdu::CapsuleCmd {
                        sqe: Box::new(sqe),
                        data: Bytes::new(),
                        ddgst_ok: true,
                    },
                );
                round_trip(
                    d,
                    pda,
                    Pdu::CapsuleResp(Cqe {
                        dw0: 1,
                        dw1: 2,
                        sqhd: 3,
                        sqid: 4,
                        cid: 5,
                        status: Status::INVALID_FIELD,
                    }),
                );
                for h2c in [true, false] {
                    let dp = DataPdu {
                        cccid: 1,
                        ttag: if h2c { 2 } else { 0 },
                        datao: 4096,
                        data: Bytes::from(vec![7u8; 4096]),
                        last: true,
                        success: !h2c,
                        ddgst_ok: true,
                    };
                    round_trip(
                        d,
                        pda,
                        if h2c {
                            Pdu::H2CData(dp)
                        } else {
                            Pdu::C2HData(dp)
                        },
                    );
                }
                round_trip(
                    d,
                    pda,
                    Pdu::R2T(R2t {
                        cccid: 1,
                        ttag: 2,
                        r2to: 0,
                        r2tl: 65536,
                    }),
                );
                round_trip(
                    d,
                    pda,
                    Pdu::C2HTermReq(TermReq {
                        fes: 1,
                        fei: 2,
                        data: Bytes::from_static(b"abc"),
                    }),
                );
            }
        }
    }

    #[test]
    fn header_digest_mismatch_is_fatal() {
        // TCP 1.0 section 3.6.2.4: a header digest error terminates the connection (FES 3).
        let d = Digests {
            header: true,
            data: false,
        };
        let enc = Encoder { digests: d, pda: 0 };
        let mut buf = BytesMut::new();
        enc.capsule_resp(
            &mut buf,
            &Cqe {
                dw0: 0,
                dw1: 0,
                sqhd: 0,
                sqid: 0,
                cid: 1,
                status: Status::SUCCESS,
            },
        );
        buf[10] ^= 1;
        let e = connected(d).decode(&mut buf).unwrap_err();
        assert_eq!(e.fes, fes::HEADER_DIGEST_ERROR);
    }

    #[test]
    fn data_digest_mismatch_is_reported_not_fatal() {
        // TCP 1.0 section 7.4.6.3: a data digest error fails the command, not the connection.
        let d = Digests {
            header: false,
            data: true,
        };
        let enc = Encoder { digests: d, pda: 0 };
        let mut buf = BytesMut::new();
        enc.capsule_cmd(&mut buf, &Sqe::default(), &[1, 2, 3, 4]);
        let n = buf.len();
        buf[n - 6] ^= 0xff;
        match connected(d).decode(&mut buf).unwrap().unwrap() {
            Pdu::CapsuleCmd { ddgst_ok, .. } => assert!(!ddgst_ok),
            p => panic!("unexpected {p:?}"),
        }
    }

    #[test]
    fn malformed_headers_name_the_field() {
        let dec = connected(Digests::default());
        let cases: Vec<(Vec<u8>, u16, u32)> = vec![
            // Unknown type.
            (
                vec![0x42, 0, 24, 0, 24, 0, 0, 0],
                fes::INVALID_HEADER_FIELD,
                0,
            ),
            // Capsule with the wrong HLEN.
            (vec![4, 0, 24, 0, 24, 0, 0, 0], fes::INVALID_HEADER_FIELD, 2),
            // PLEN shorter than the header.
            (vec![4, 0, 72, 0, 8, 0, 0, 0], fes::INVALID_HEADER_FIELD, 4),
            // PLEN beyond the limit.
            (
                vec![4, 0, 72, 72, 0, 0, 0, 0x10],
                fes::DATA_LIMIT_EXCEEDED,
                4,
            ),
            // Header digest flag without negotiation.
            (vec![5, 1, 24, 0, 28, 0, 0, 0], fes::INVALID_HEADER_FIELD, 1),
            // ICReq after the exchange.
            (vec![0, 0, 128, 0, 128, 0, 0, 0], fes::PDU_SEQUENCE_ERROR, 0),
            // Data PDU with PDO inside the header.
            (
                vec![6, 0, 24, 8, 100, 0, 0, 0],
                fes::INVALID_HEADER_FIELD,
                3,
            ),
            // Response capsule carrying data.
            (vec![5, 0, 24, 0, 40, 0, 0, 0], fes::INVALID_HEADER_FIELD, 4),
        ];
        for (bytes, want_fes, want_fei) in cases {
            let mut b = BytesMut::from(&bytes[..]);
            let e = dec.decode(&mut b).unwrap_err();
            assert_eq!((e.fes, e.fei), (want_fes, want_fei), "{bytes:?}: {e}");
        }
        // Before the IC exchange only IC PDUs are accepted.
        let mut b = BytesMut::from(&[5u8, 0, 24, 0, 24, 0, 0, 0][..]);
        let e = Decoder::new(1 << 20).decode(&mut b).unwrap_err();
        assert_eq!(e.fes, fes::PDU_SEQUENCE_ERROR);
    }
}

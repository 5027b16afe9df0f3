//! The replication wire format, version 1: length-delimited frames between a primary and a
//! follower, one TCP connection per follower and volume; and forwarded host I/O, from a node
//! whose paths are not the primary's to the primary ([`Msg::ForwardOpen`], [`Msg::Request`],
//! [`Msg::Reply`]), on connections of their own.
//!
//! Frame: `u32 length` (of what follows, little endian), `u8 type`, then the type's fields, all
//! little endian. The first frame on a connection is [`Msg::Open`] from the primary; it carries
//! the protocol version, and a follower answers a version it does not speak with
//! [`Msg::Refused`]. Every field is checked before any allocation; a frame longer than
//! [`MAX_FRAME`] or with trailing bytes is an error, never a panic.

use alcubierre_block::{BlockError, HostId, Op, ResvCommand};
use alcubierre_types::{BlockCount, ByteOffset, ByteSize, Epoch, Lba, SeqNo, VolumeId};
use bytes::{BufMut, Bytes, BytesMut};

use crate::LogPos;

mod errors;

use errors::{cut, error_fields, error_from, MAX_ERROR_TEXT};

/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
/// The largest frame: a 1 MiB write plus headers.
pub const MAX_FRAME: usize = (1 << 20) + 256;

/// What a write carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Data at a byte offset of the volume (a whole number of 512-byte sectors).
    Write {
        /// Byte offset.
        offset: ByteOffset,
        /// The data.
        data: Bytes,
    },
    /// Zeroes over a range (write zeroes, unmap).
    Zero {
        /// Byte offset.
        offset: ByteOffset,
        /// Length in bytes.
        len: ByteSize,
    },
}

/// A host I/O forwarded to the primary (blocks of the volume's block size).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A block operation.
    Io(Op),
    /// A reservation command; the reply carries the state after it
    /// ([`alcubierre_block::Reservations::encode`]).
    Reserve {
        /// The controller the host sent it through.
        cntlid: u16,
        /// The command.
        cmd: ResvCommand,
    },
    /// Not for the primary: a logical-unit-wide unit attention (SAM-5 5.14) that happened on
    /// the sender's paths, for every I_T nexus of the volume's LU on the receiving node (any
    /// node holding a replica takes it). The reply comes once the nexuses have it.
    Attention {
        /// Additional sense code.
        asc: u8,
        /// Its qualifier.
        ascq: u8,
        /// The nexuses (host identities) it is for; empty: every nexus.
        hosts: Vec<HostId>,
    },
}

/// A message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Primary -> follower, first on a connection: "I am the primary of `volume` in `epoch`".
    Open {
        /// Protocol version.
        version: u16,
        /// The volume.
        volume: VolumeId,
        /// The primary's epoch.
        epoch: Epoch,
    },
    /// Follower -> primary: accepted; the newest write in its log.
    Opened {
        /// The follower's epoch (now the primary's).
        epoch: Epoch,
        /// Its newest write.
        last: LogPos,
    },
    /// Follower -> primary: refused: the follower knows a newer epoch, or speaks another version.
    Refused {
        /// The follower's epoch.
        epoch: Epoch,
        /// The follower's protocol version.
        version: u16,
    },
    /// Primary -> follower: forget the volume's writes; everything up to `base` is in the backend.
    Reset {
        /// The sender's epoch.
        epoch: Epoch,
        /// The destage point: the follower's log restarts after it.
        base: LogPos,
    },
    /// Primary -> follower: a write to append.
    Write {
        /// The sender's epoch.
        epoch: Epoch,
        /// The write's position (the epoch it was assigned in, and its sequence number).
        pos: LogPos,
        /// What it does.
        payload: Payload,
    },
    /// Follower -> primary: every write up to `seq` is durable here.
    Ack {
        /// The follower's epoch.
        epoch: Epoch,
        /// The highest durable sequence number.
        seq: SeqNo,
    },
    /// Primary -> follower: every write up to `seq` is in the backend; release it.
    Release {
        /// The sender's epoch.
        epoch: Epoch,
        /// The destaged sequence number.
        seq: SeqNo,
    },
    /// A node with a path to `volume`, first on a forwarding connection to the node it believes
    /// is the primary. Refused (with [`Msg::Refused`]) by a node that speaks another version;
    /// requests for a volume the node does not serve as primary fail with "unavailable".
    ForwardOpen {
        /// Protocol version.
        version: u16,
        /// The volume.
        volume: VolumeId,
    },
    /// A forwarded host I/O; `id` matches its reply.
    Request {
        /// Chosen by the sender, unique among its outstanding requests.
        id: u64,
        /// The host that sent it (the volume's reservations apply to it).
        host: HostId,
        /// The I/O.
        req: Request,
    },
    /// The result of request `id`: data for reads (empty otherwise), or why it failed.
    Reply {
        /// The request's id.
        id: u64,
        /// The outcome.
        result: Result<Bytes, BlockError>,
    },
}

/// Why bytes are not a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame is longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the maximum of {MAX_FRAME}")]
    TooLong(usize),
    /// Unknown message type.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A field does not fit the frame, or bytes are left over.
    #[error("message type {kind} has a bad length ({len} bytes)")]
    BadLength {
        /// The type.
        kind: u8,
        /// The frame's body length.
        len: usize,
    },
    /// A field's value is invalid.
    #[error("{0}")]
    Invalid(&'static str),
}

const OPEN: u8 = 1;
const OPENED: u8 = 2;
const REFUSED: u8 = 3;
const RESET: u8 = 4;
const WRITE: u8 = 5;
const ZERO: u8 = 6;
const ACK: u8 = 7;
const RELEASE: u8 = 8;
const FORWARD_OPEN: u8 = 9;
const FWD_READ: u8 = 10;
const FWD_WRITE: u8 = 11;
const FWD_ZEROES: u8 = 12;
const FWD_UNMAP: u8 = 13;
const FWD_FLUSH: u8 = 14;
const REPLY: u8 = 15;
const FWD_RESERVE: u8 = 16;
const FWD_ATTENTION: u8 = 17;

fn pos(b: &mut BytesMut, p: LogPos) {
    b.put_u64_le(p.epoch.0);
    b.put_u64_le(p.seq.0);
}

impl Msg {
    /// Appends the framed message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        self.encode_with(out, usize::MAX);
    }

    /// Appends the framed message to `out`, except for bulk data at its end of at least
    /// `min_split` bytes (a write's data, a read's reply), which is returned instead: the frame
    /// is `out`'s new bytes followed by it. Senders queue that data by reference rather than
    /// copying it.
    pub fn encode_split(&self, out: &mut BytesMut, min_split: usize) -> Option<Bytes> {
        self.encode_with(out, min_split)
    }

    fn encode_with(&self, out: &mut BytesMut, min_split: usize) -> Option<Bytes> {
        let start = out.len();
        let mut split = None;
        let mut data_at_end = |out: &mut BytesMut, data: &Bytes| {
            if data.len() >= min_split {
                split = Some(data.clone());
            } else {
                out.put_slice(data);
            }
        };
        out.put_u32_le(0);
        match self {
            Msg::Open {
                version,
                volume,
                epoch,
            } => {
                out.put_u8(OPEN);
                out.put_u16_le(*version);
                out.put_slice(volume.0.as_bytes());
                out.put_u64_le(epoch.0);
            }
            Msg::Opened { epoch, last } => {
                out.put_u8(OPENED);
                out.put_u64_le(epoch.0);
                pos(out, *last);
            }
            Msg::Refused { epoch, version } => {
                out.put_u8(REFUSED);
                out.put_u64_le(epoch.0);
                out.put_u16_le(*version);
            }
            Msg::Reset { epoch, base } => {
                out.put_u8(RESET);
                out.put_u64_le(epoch.0);
                pos(out, *base);
            }
            Msg::Write {
                epoch,
                pos: p,
                payload,
            } => match payload {
                Payload::Write { offset, data } => {
                    out.put_u8(WRITE);
                    out.put_u64_le(epoch.0);
                    pos(out, *p);
                    out.put_u64_le(offset.0);
                    data_at_end(out, data);
                }
                Payload::Zero { offset, len } => {
                    out.put_u8(ZERO);
                    out.put_u64_le(epoch.0);
                    pos(out, *p);
                    out.put_u64_le(offset.0);
                    out.put_u64_le(len.0);
                }
            },
            Msg::Ack { epoch, seq } => {
                out.put_u8(ACK);
                out.put_u64_le(epoch.0);
                out.put_u64_le(seq.0);
            }
            Msg::Release { epoch, seq } => {
                out.put_u8(RELEASE);
                out.put_u64_le(epoch.0);
                out.put_u64_le(seq.0);
            }
            Msg::ForwardOpen { version, volume } => {
                out.put_u8(FORWARD_OPEN);
                out.put_u16_le(*version);
                out.put_slice(volume.0.as_bytes());
            }
            Msg::Request { id, host, req } => {
                out.put_u8(match req {
                    Request::Io(Op::Read { .. }) => FWD_READ,
                    Request::Io(Op::WriteZeroes { .. }) => FWD_ZEROES,
                    Request::Io(Op::Unmap { .. }) => FWD_UNMAP,
                    Request::Io(Op::Write { .. }) => FWD_WRITE,
                    Request::Io(Op::Flush) => FWD_FLUSH,
                    Request::Reserve { .. } => FWD_RESERVE,
                    Request::Attention { .. } => FWD_ATTENTION,
                });
                out.put_u64_le(*id);
                out.put_slice(host);
                match req {
                    Request::Io(
                        Op::Read { lba, count }
                        | Op::WriteZeroes { lba, count }
                        | Op::Unmap { lba, count },
                    ) => {
                        out.put_u64_le(lba.0);
                        out.put_u64_le(count.0);
                    }
                    Request::Io(Op::Write { lba, data }) => {
                        out.put_u64_le(lba.0);
                        data_at_end(out, data);
                    }
                    Request::Io(Op::Flush) => {}
                    Request::Reserve { cntlid, cmd } => {
                        out.put_u16_le(*cntlid);
                        let (kind, action, flag, rtype, k1, k2) = match *cmd {
                            ResvCommand::Register {
                                action,
                                ignore_key,
                                current,
                                new,
                            } => (0, action, ignore_key as u8, 0, current, new),
                            ResvCommand::Acquire {
                                action,
                                current,
                                preempt,
                                rtype,
                            } => (1, action, 0, rtype, current, preempt),
                            ResvCommand::Release {
                                action,
                                current,
                                rtype,
                            } => (2, action, 0, rtype, current, 0),
                            ResvCommand::Report => (3, 0, 0, 0, 0, 0),
                        };
                        out.put_slice(&[kind, action, flag, rtype]);
                        out.put_u64_le(k1);
                        out.put_u64_le(k2);
                    }
                    Request::Attention { asc, ascq, hosts } => {
                        out.put_slice(&[*asc, *ascq]);
                        for h in hosts {
                            out.put_slice(h);
                        }
                    }
                }
            }
            Msg::Reply { id, result } => {
                out.put_u8(REPLY);
                out.put_u64_le(*id);
                match result {
                    Ok(data) => {
                        out.put_u8(0);
                        out.put_slice(&[0; 24]);
                        data_at_end(out, data);
                    }
                    Err(e) => {
                        let (code, n, text) = error_fields(e);
                        out.put_u8(code);
                        for x in n {
                            out.put_u64_le(x);
                        }
                        out.put_slice(cut(text).as_bytes());
                    }
                }
            }
        }
        let len = out.len() - start - 4 + split.as_ref().map_or(0, Bytes::len);
        out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        split
    }

    /// Decodes one frame from the front of `buf`: `Ok(None)` when more bytes are needed, else
    /// the message and the bytes it used.
    pub fn decode(buf: &[u8]) -> Result<Option<(Msg, usize)>, WireError> {
        let Some(len) = frame_len(buf)? else {
            return Ok(None);
        };
        let body = &buf[4..4 + len];
        let m = Self::parse(body, &|s, e| Bytes::copy_from_slice(&body[1 + s..1 + e]))?;
        Ok(Some((m, 4 + len)))
    }

    /// Decodes one frame from the front of `buf` and removes it; the message's data shares
    /// `buf`'s memory instead of being copied. `Ok(None)` when more bytes are needed.
    pub fn decode_shared(buf: &mut BytesMut) -> Result<Option<Msg>, WireError> {
        let Some(len) = frame_len(buf)? else {
            return Ok(None);
        };
        let frame = buf.split_to(4 + len).freeze();
        let m = Self::parse(&frame[4..], &|s, e| frame.slice(5 + s..5 + e))?;
        Ok(Some(m))
    }

    /// Parses a frame's body (type and fields); `slice(start, end)` gives the bytes of a data
    /// field, as offsets into the fields after the type.
    fn parse(body: &[u8], slice: &dyn Fn(usize, usize) -> Bytes) -> Result<Msg, WireError> {
        let len = body.len();
        let (&kind, f) = body
            .split_first()
            .ok_or(WireError::BadLength { kind: 0, len })?;
        let bad = WireError::BadLength { kind, len };
        let u64_at = |i: usize| u64::from_le_bytes(f[i..i + 8].try_into().expect("8 bytes"));
        let epoch_at = |i: usize| Epoch(u64_at(i));
        let pos_at = |i: usize| LogPos::new(u64_at(i), u64_at(i + 8));
        let volume_at = |i: usize| VolumeId::from_bytes(f[i..i + 16].try_into().expect("16 bytes"));
        let need = |n: usize| {
            if f.len() == n {
                Ok(())
            } else {
                Err(bad.clone())
            }
        };
        let m = match kind {
            OPEN => {
                need(26)?;
                Msg::Open {
                    version: u16::from_le_bytes([f[0], f[1]]),
                    volume: volume_at(2),
                    epoch: epoch_at(18),
                }
            }
            OPENED => {
                need(24)?;
                Msg::Opened {
                    epoch: epoch_at(0),
                    last: pos_at(8),
                }
            }
            REFUSED => {
                need(10)?;
                Msg::Refused {
                    epoch: epoch_at(0),
                    version: u16::from_le_bytes([f[8], f[9]]),
                }
            }
            RESET => {
                need(24)?;
                Msg::Reset {
                    epoch: epoch_at(0),
                    base: pos_at(8),
                }
            }
            WRITE => {
                if f.len() < 32 {
                    return Err(bad);
                }
                let data = &f[32..];
                if data.is_empty() || data.len() % 512 != 0 {
                    return Err(WireError::Invalid(
                        "write data must be a positive multiple of 512 bytes",
                    ));
                }
                let offset = u64_at(24);
                if offset % 512 != 0 {
                    return Err(WireError::Invalid("write offset must be sector aligned"));
                }
                Msg::Write {
                    epoch: epoch_at(0),
                    pos: pos_at(8),
                    payload: Payload::Write {
                        offset: ByteOffset(offset),
                        data: slice(32, f.len()),
                    },
                }
            }
            ZERO => {
                need(40)?;
                let (offset, len) = (u64_at(24), u64_at(32));
                if offset % 512 != 0 || len % 512 != 0 || len == 0 {
                    return Err(WireError::Invalid(
                        "zero ranges must be positive and sector aligned",
                    ));
                }
                Msg::Write {
                    epoch: epoch_at(0),
                    pos: pos_at(8),
                    payload: Payload::Zero {
                        offset: ByteOffset(offset),
                        len: ByteSize(len),
                    },
                }
            }
            ACK => {
                need(16)?;
                Msg::Ack {
                    epoch: epoch_at(0),
                    seq: SeqNo(u64_at(8)),
                }
            }
            RELEASE => {
                need(16)?;
                Msg::Release {
                    epoch: epoch_at(0),
                    seq: SeqNo(u64_at(8)),
                }
            }
            FORWARD_OPEN => {
                need(18)?;
                Msg::ForwardOpen {
                    version: u16::from_le_bytes([f[0], f[1]]),
                    volume: volume_at(2),
                }
            }
            FWD_READ | FWD_ZEROES | FWD_UNMAP | FWD_WRITE | FWD_FLUSH | FWD_RESERVE
            | FWD_ATTENTION => {
                // id, host, then the request's fields.
                if f.len() < 24 {
                    return Err(bad);
                }
                let (id, host) = (u64_at(0), f[8..24].try_into().expect("16 bytes"));
                let r = &f[24..];
                let at = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().expect("8 bytes"));
                let exact = |n: usize| {
                    if r.len() == n {
                        Ok(())
                    } else {
                        Err(bad.clone())
                    }
                };
                let req = match kind {
                    FWD_READ | FWD_ZEROES | FWD_UNMAP => {
                        exact(16)?;
                        let (lba, count) = (Lba(at(0)), BlockCount(at(8)));
                        Request::Io(match kind {
                            FWD_READ => Op::Read { lba, count },
                            FWD_ZEROES => Op::WriteZeroes { lba, count },
                            _ => Op::Unmap { lba, count },
                        })
                    }
                    FWD_WRITE => {
                        if r.len() <= 8 {
                            return Err(bad);
                        }
                        Request::Io(Op::Write {
                            lba: Lba(at(0)),
                            data: slice(32, f.len()),
                        })
                    }
                    FWD_FLUSH => {
                        exact(0)?;
                        Request::Io(Op::Flush)
                    }
                    FWD_ATTENTION => {
                        if r.len() < 2 || !(r.len() - 2).is_multiple_of(16) {
                            return Err(bad);
                        }
                        Request::Attention {
                            asc: r[0],
                            ascq: r[1],
                            hosts: r[2..]
                                .chunks_exact(16)
                                .map(|h| h.try_into().expect("16 bytes"))
                                .collect(),
                        }
                    }
                    _ => {
                        exact(22)?;
                        let cntlid = u16::from_le_bytes([r[0], r[1]]);
                        let (action, flag, rtype) = (r[3], r[4], r[5]);
                        let (k1, k2) = (at(6), at(14));
                        let cmd = match r[2] {
                            0 if flag <= 1 => ResvCommand::Register {
                                action,
                                ignore_key: flag == 1,
                                current: k1,
                                new: k2,
                            },
                            1 => ResvCommand::Acquire {
                                action,
                                current: k1,
                                preempt: k2,
                                rtype,
                            },
                            2 => ResvCommand::Release {
                                action,
                                current: k1,
                                rtype,
                            },
                            3 => ResvCommand::Report,
                            _ => return Err(WireError::Invalid("unknown reservation command")),
                        };
                        Request::Reserve { cntlid, cmd }
                    }
                };
                Msg::Request { id, host, req }
            }
            REPLY => {
                if f.len() < 33 {
                    return Err(bad);
                }
                let code = f[8];
                let rest = &f[33..];
                let result = if code == 0 {
                    Ok(slice(33, f.len()))
                } else {
                    if rest.len() > MAX_ERROR_TEXT {
                        return Err(WireError::Invalid("error text too long"));
                    }
                    Err(error_from(code, [u64_at(9), u64_at(17), u64_at(25)], rest)?)
                };
                Msg::Reply {
                    id: u64_at(0),
                    result,
                }
            }
            k => return Err(WireError::UnknownType(k)),
        };
        Ok(m)
    }
}

/// The body length of the frame at the front of `buf`, once all of it is there.
fn frame_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLong(len));
    }
    Ok((buf.len() >= 4 + len).then_some(len))
}

#[cfg(test)]
mod tests;

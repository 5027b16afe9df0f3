//! The login phase (RFC 7143 sections 6, 11.12-11.13, 12, 13): security negotiation (None or
//! CHAP, one-way or mutual) and operational negotiation of every key with the RFC's defaults
//! and result functions, for normal and discovery sessions. A pure state machine: it takes
//! Login Request PDUs and returns Login Response PDUs; the driver switches to the full feature
//! phase with the negotiated [`Params`] when [`Login::done`] says so.

use bytes::Bytes;
use md5::{Digest, Md5};

use crate::pdu::{op, Bhs, Pdu};

/// Login status classes and details (RFC 7143 section 11.13.5).
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// Initiator error: authentication failed.
    pub const AUTH_FAILED: u16 = 0x0201;
    /// Initiator error: not authorized for this target.
    pub const FORBIDDEN: u16 = 0x0202;
    /// Initiator error: no such target.
    pub const NOT_FOUND: u16 = 0x0203;
    /// Initiator error: a required key is missing.
    pub const MISSING_PARAMETER: u16 = 0x0207;
    /// Initiator error: the request is malformed.
    pub const INITIATOR_ERROR: u16 = 0x0200;
    /// Initiator error: unsupported version.
    pub const UNSUPPORTED_VERSION: u16 = 0x0205;
    /// Initiator error: an invalid request during login.
    pub const INVALID_DURING_LOGIN: u16 = 0x020b;
}

/// A CHAP user name and secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chap {
    /// The name.
    pub user: String,
    /// The secret (RFC 7143 section 12.1.3: 12 to 16 bytes).
    pub secret: String,
}

/// Who may log in to a target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// Initiator names allowed (`None`: any; an empty list: none).
    pub initiators: Option<Vec<String>>,
    /// CHAP credentials the initiator must prove (None: no authentication).
    pub chap: Option<Chap>,
    /// Credentials the target proves to the initiator when it asks (mutual CHAP).
    pub mutual: Option<Chap>,
    /// CHAP credentials of particular initiators (instead of `chap` for them), and the
    /// credentials the target proves to each when it asks (instead of `mutual`).
    pub per_initiator: Vec<(String, Chap, Option<Chap>)>,
}

/// What the login asks of the target registry.
pub trait Directory: Send + Sync {
    /// The access rules of target `name`, or `None` when there is no such target.
    fn access(&self, name: &str) -> Option<Access>;
    /// Discovery sessions' CHAP credentials, if discovery requires them.
    fn discovery_access(&self) -> Access {
        Access::default()
    }
    /// This node's target portal group tag (its portals' group; one per node).
    fn portal_group(&self) -> u16 {
        1
    }
}

/// Negotiated session and connection parameters (RFC 7143 section 13).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// CRC32C header digests.
    pub header_digest: bool,
    /// CRC32C data digests.
    pub data_digest: bool,
    /// The largest data segment the initiator accepts (Data-In, Text responses).
    pub initiator_max_recv: u32,
    /// The largest data segment the target accepts.
    pub target_max_recv: u32,
    /// MaxBurstLength.
    pub max_burst: u32,
    /// FirstBurstLength.
    pub first_burst: u32,
    /// InitialR2T.
    pub initial_r2t: bool,
    /// ImmediateData.
    pub immediate_data: bool,
    /// MaxOutstandingR2T.
    pub max_outstanding_r2t: u32,
    /// DefaultTime2Wait.
    pub time2wait: u16,
    /// DefaultTime2Retain.
    pub time2retain: u16,
}

/// What the target offers: the largest data segment it accepts.
pub const TARGET_MAX_RECV: u32 = 262_144;
const OUR_MAX_BURST: u32 = 1 << 20;
const OUR_FIRST_BURST: u32 = 262_144;
const OUR_MAX_R2T: u32 = 16;

impl Default for Params {
    /// The RFC's defaults, before negotiation.
    fn default() -> Self {
        Self {
            header_digest: false,
            data_digest: false,
            initiator_max_recv: 8192,
            target_max_recv: 8192,
            max_burst: 262_144,
            first_burst: 65_536,
            initial_r2t: true,
            immediate_data: true,
            max_outstanding_r2t: 1,
            time2wait: 2,
            time2retain: 20,
        }
    }
}

/// Splits a text data segment into `key=value` pairs (NUL-separated).
pub fn parse_keys(data: &[u8]) -> Vec<(String, String)> {
    data.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let s = String::from_utf8_lossy(s);
            match s.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (s.to_string(), String::new()),
            }
        })
        .collect()
}

/// Joins pairs into a text data segment.
pub fn encode_keys(keys: &[(String, String)]) -> Bytes {
    let mut out = Vec::new();
    for (k, v) in keys {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    Bytes::from(out)
}

fn yes(v: &str) -> Option<bool> {
    match v {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn yn(b: bool) -> String {
    if b { "Yes" } else { "No" }.to_string()
}

/// The session type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionType {
    /// I/O to a target.
    Normal,
    /// SendTargets only.
    Discovery,
}

#[derive(Debug, PartialEq, Eq)]
enum Auth {
    /// Not chosen yet.
    Start,
    /// CHAP chosen; waiting for CHAP_A.
    ChapAlgorithm,
    /// Challenge sent.
    ChapResponse { id: u8, challenge: Vec<u8> },
    /// Authenticated (or none needed).
    Done,
}

/// One connection's login.
pub struct Login {
    dir: std::sync::Arc<dyn Directory>,
    tsih: u16,
    /// The initiator's name once known.
    pub initiator: Option<String>,
    /// The target's name (normal sessions).
    pub target: Option<String>,
    /// Normal or discovery.
    pub session_type: SessionType,
    access: Access,
    auth: Auth,
    /// The negotiated parameters.
    pub params: Params,
    declared_max_recv: bool,
    first: bool,
    stat_sn: u32,
    done: bool,
    failed: bool,
    isid: [u8; 6],
}

impl Login {
    /// A login on a new connection; `tsih` is the session handle to give a new session.
    pub fn new(dir: std::sync::Arc<dyn Directory>, tsih: u16) -> Self {
        Self {
            dir,
            tsih,
            initiator: None,
            target: None,
            session_type: SessionType::Normal,
            access: Access::default(),
            auth: Auth::Start,
            params: Params::default(),
            declared_max_recv: false,
            first: true,
            stat_sn: 0,
            done: false,
            failed: false,
            isid: [0; 6],
        }
    }

    /// True once the final Login Response has been produced: the full feature phase starts.
    pub fn done(&self) -> bool {
        self.done
    }

    /// True once a Login Response with an error status has been produced: the connection
    /// closes after sending it.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The StatSN the next response carries (each Login Response takes one).
    pub fn stat_sn(&self) -> u32 {
        self.stat_sn
    }

    /// The initiator session id.
    pub fn isid(&self) -> [u8; 6] {
        self.isid
    }

    fn response(&mut self, req: &Bhs, flags: u8, status: u16, keys: Vec<(String, String)>) -> Pdu {
        let mut b = Bhs::new(op::LOGIN_RESP);
        b.set_flags(flags);
        b.0[2] = 0; // version max
        b.0[3] = 0; // version active
        b.0[8..14].copy_from_slice(&req.0[8..14]);
        let tsih = if flags & 0x80 != 0 && flags & 0x03 == 3 {
            self.tsih
        } else {
            req.u16_at(14)
        };
        b.put_u16(14, tsih);
        b.put_u32(16, req.itt());
        b.put_u32(24, self.stat_sn);
        self.stat_sn = self.stat_sn.wrapping_add(1);
        let cmd_sn = req.u32_at(24);
        b.put_u32(28, cmd_sn);
        b.put_u32(32, cmd_sn.wrapping_add(crate::QUEUE_DEPTH - 1));
        b.0[36] = (status >> 8) as u8;
        b.0[37] = status as u8;
        if status != status::SUCCESS {
            self.failed = true;
            b.set_flags(0);
        }
        Pdu::new(b, encode_keys(&keys))
    }

    fn fail(&mut self, req: &Bhs, status: u16) -> Pdu {
        self.response(req, 0, status, Vec::new())
    }

    /// Handles one Login Request; returns the Login Response.
    pub fn step(&mut self, req: &Pdu) -> Pdu {
        let b = &req.bhs;
        if b.opcode() != op::LOGIN_REQ {
            return self.fail(b, status::INVALID_DURING_LOGIN);
        }
        if b.0[3] > 0 {
            // Version-min above 0: RFC 7143 knows only version 0.
            return self.fail(b, status::UNSUPPORTED_VERSION);
        }
        if b.flags() & 0x40 != 0 {
            // Continued text (C bit): not supported; keys must fit one PDU.
            return self.fail(b, status::INITIATOR_ERROR);
        }
        let transit = b.flags() & 0x80 != 0;
        let csg = (b.flags() >> 2) & 3;
        let nsg = b.flags() & 3;
        if self.first {
            self.stat_sn = b.u32_at(28);
            self.isid.copy_from_slice(&b.0[8..14]);
        }
        let keys = parse_keys(&req.data);
        let mut out: Vec<(String, String)> = Vec::new();
        let get = |k: &str| keys.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
        if self.first {
            let Some(init) = get("InitiatorName") else {
                return self.fail(b, status::MISSING_PARAMETER);
            };
            self.initiator = Some(init.clone());
            self.session_type = match get("SessionType").as_deref() {
                None | Some("Normal") => SessionType::Normal,
                Some("Discovery") => SessionType::Discovery,
                Some(_) => return self.fail(b, status::INITIATOR_ERROR),
            };
            match self.session_type {
                SessionType::Normal => {
                    let Some(t) = get("TargetName") else {
                        return self.fail(b, status::MISSING_PARAMETER);
                    };
                    let Some(access) = self.dir.access(&t) else {
                        return self.fail(b, status::NOT_FOUND);
                    };
                    if access
                        .initiators
                        .as_ref()
                        .is_some_and(|l| !l.contains(&init))
                    {
                        return self.fail(b, status::FORBIDDEN);
                    }
                    self.access = access;
                    if let Some((_, c, m)) = self
                        .access
                        .per_initiator
                        .iter()
                        .find(|(i, _, _)| *i == init)
                    {
                        self.access.chap = Some(c.clone());
                        if m.is_some() {
                            self.access.mutual = m.clone();
                        }
                    }
                    self.target = Some(t);
                    out.push((
                        "TargetPortalGroupTag".into(),
                        self.dir.portal_group().to_string(),
                    ));
                }
                SessionType::Discovery => self.access = self.dir.discovery_access(),
            }
            if self.access.chap.is_none() {
                self.auth = Auth::Done;
            }
            self.first = false;
        }
        if csg == 0 {
            if let Err(s) = self.security(&keys, &mut out) {
                return self.fail(b, s);
            }
        } else if self.auth != Auth::Done {
            // Skipping the security stage when authentication is required.
            return self.fail(b, status::AUTH_FAILED);
        }
        self.operational(&keys, &mut out);
        if (csg == 1 || (csg == 0 && transit && nsg == 3)) && !self.declared_max_recv {
            out.push((
                "MaxRecvDataSegmentLength".into(),
                TARGET_MAX_RECV.to_string(),
            ));
            self.params.target_max_recv = TARGET_MAX_RECV;
            self.declared_max_recv = true;
        }
        let mut flags = csg << 2;
        if transit && self.auth == Auth::Done && (nsg == 1 || nsg == 3) && nsg > csg {
            flags |= 0x80 | nsg;
            if nsg == 3 {
                self.done = true;
            }
        }
        self.response(b, flags, status::SUCCESS, out)
    }

    fn security(
        &mut self,
        keys: &[(String, String)],
        out: &mut Vec<(String, String)>,
    ) -> Result<(), u16> {
        for (k, v) in keys {
            match k.as_str() {
                "AuthMethod" => {
                    let offered: Vec<&str> = v.split(',').collect();
                    let pick = if self.access.chap.is_some() {
                        offered.contains(&"CHAP").then_some("CHAP")
                    } else {
                        offered.contains(&"None").then_some("None")
                    };
                    match pick {
                        Some("CHAP") => {
                            self.auth = Auth::ChapAlgorithm;
                            out.push((k.clone(), "CHAP".into()));
                        }
                        Some(p) => out.push((k.clone(), p.into())),
                        None => return Err(status::AUTH_FAILED),
                    }
                }
                "CHAP_A" => {
                    if self.auth != Auth::ChapAlgorithm {
                        return Err(status::INITIATOR_ERROR);
                    }
                    if !v.split(',').any(|a| a == "5") {
                        return Err(status::AUTH_FAILED);
                    }
                    let id: u8 = rand::random();
                    let challenge: Vec<u8> = (0..16).map(|_| rand::random::<u8>()).collect();
                    out.push(("CHAP_A".into(), "5".into()));
                    out.push(("CHAP_I".into(), id.to_string()));
                    out.push(("CHAP_C".into(), format!("0x{}", hex(&challenge))));
                    self.auth = Auth::ChapResponse { id, challenge };
                }
                _ => {}
            }
        }
        if let Auth::ChapResponse { id, challenge } = &self.auth {
            let get = |k: &str| keys.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
            if let (Some(name), Some(resp)) = (get("CHAP_N"), get("CHAP_R")) {
                let chap = self.access.chap.clone().expect("CHAP chosen");
                let want = chap_response(*id, chap.secret.as_bytes(), challenge);
                if name != chap.user || unhex(resp).as_deref() != Some(&want[..]) {
                    return Err(status::AUTH_FAILED);
                }
                // Mutual CHAP: the initiator challenges the target.
                if let (Some(i), Some(c)) = (get("CHAP_I"), get("CHAP_C")) {
                    let Some(m) = self.access.mutual.clone() else {
                        return Err(status::AUTH_FAILED);
                    };
                    let (Ok(i), Some(c)) = (i.parse::<u8>(), unhex(c)) else {
                        return Err(status::INITIATOR_ERROR);
                    };
                    // RFC 7143 section 12.1.3: a challenge equal to ours is a reflection.
                    if c == *challenge {
                        return Err(status::AUTH_FAILED);
                    }
                    let r = chap_response(i, m.secret.as_bytes(), &c);
                    out.push(("CHAP_N".into(), m.user.clone()));
                    out.push(("CHAP_R".into(), format!("0x{}", hex(&r))));
                }
                self.auth = Auth::Done;
            }
        }
        Ok(())
    }

    fn operational(&mut self, keys: &[(String, String)], out: &mut Vec<(String, String)>) {
        let p = &mut self.params;
        for (k, v) in keys {
            let num = v.parse::<u64>().ok();
            let reply = match k.as_str() {
                // Declarative or security keys: nothing to answer here.
                "InitiatorName" | "InitiatorAlias" | "TargetName" | "SessionType"
                | "AuthMethod" | "CHAP_A" | "CHAP_N" | "CHAP_R" | "CHAP_I" | "CHAP_C" => continue,
                "HeaderDigest" | "DataDigest" => {
                    let pick = v
                        .split(',')
                        .find(|x| *x == "CRC32C" || *x == "None")
                        .unwrap_or("Reject");
                    let on = pick == "CRC32C";
                    if k == "HeaderDigest" {
                        p.header_digest = on;
                    } else {
                        p.data_digest = on;
                    }
                    Some(pick.to_string())
                }
                "MaxConnections" => Some("1".into()),
                "InitialR2T" => yes(v).map(|b| {
                    p.initial_r2t = b; // OR with our No
                    yn(b)
                }),
                "ImmediateData" => yes(v).map(|b| {
                    p.immediate_data = b; // AND with our Yes
                    yn(b)
                }),
                "DataPDUInOrder" | "DataSequenceInOrder" => yes(v).map(|_| yn(true)),
                "MaxRecvDataSegmentLength" => {
                    if let Some(n) = num {
                        p.initiator_max_recv = n.clamp(512, (1 << 24) - 1) as u32;
                    }
                    continue;
                }
                "MaxBurstLength" => num.map(|n| {
                    p.max_burst = (n.clamp(512, (1 << 24) - 1) as u32).min(OUR_MAX_BURST);
                    p.max_burst.to_string()
                }),
                "FirstBurstLength" => num.map(|n| {
                    p.first_burst = (n.clamp(512, (1 << 24) - 1) as u32).min(OUR_FIRST_BURST);
                    p.first_burst.to_string()
                }),
                "MaxOutstandingR2T" => num.map(|n| {
                    p.max_outstanding_r2t = (n.clamp(1, 65535) as u32).min(OUR_MAX_R2T);
                    p.max_outstanding_r2t.to_string()
                }),
                "DefaultTime2Wait" => num.map(|n| {
                    p.time2wait = n.clamp(2, 3600) as u16;
                    p.time2wait.to_string()
                }),
                "DefaultTime2Retain" => num.map(|_| {
                    p.time2retain = 0;
                    "0".into()
                }),
                "ErrorRecoveryLevel" => num.map(|_| "0".into()),
                "IFMarker" | "OFMarker" => Some("No".into()),
                "OFMarkInt" | "IFMarkInt" => Some("Irrelevant".into()),
                _ => Some("NotUnderstood".into()),
            };
            // A value we could not parse is answered Reject (RFC 7143 section 6.2).
            out.push((k.clone(), reply.unwrap_or_else(|| "Reject".into())));
        }
        if p.first_burst > p.max_burst {
            p.first_burst = p.max_burst;
        }
    }
}

/// The CHAP response: MD5 over the identifier, the secret and the challenge (RFC 1994).
pub fn chap_response(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decodes `0x...` hex (or `0b` base64 is not accepted).
fn unhex(s: &str) -> Option<Vec<u8>> {
    let h = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if h.len() % 2 != 0 {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(Access);
    impl Directory for Dir {
        fn access(&self, name: &str) -> Option<Access> {
            (name == "iqn.t").then(|| self.0.clone())
        }
    }

    fn req(flags: u8, keys: &[(&str, &str)]) -> Pdu {
        let mut b = Bhs::new(op::LOGIN_REQ | 0x40);
        b.set_flags(flags);
        b.put_u32(16, 7);
        let k: Vec<(String, String)> = keys
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Pdu::new(b, encode_keys(&k))
    }

    fn keys(p: &Pdu) -> Vec<(String, String)> {
        parse_keys(&p.data)
    }

    fn status_of(p: &Pdu) -> u16 {
        u16::from_be_bytes([p.bhs.0[36], p.bhs.0[37]])
    }

    #[test]
    fn none_auth_then_operational_then_full_feature() {
        let mut l = Login::new(std::sync::Arc::new(Dir(Access::default())), 5);
        let r = l.step(&req(
            0x81,
            &[
                ("InitiatorName", "iqn.i"),
                ("TargetName", "iqn.t"),
                ("AuthMethod", "None"),
            ],
        ));
        assert_eq!(status_of(&r), 0);
        assert_eq!(r.bhs.flags(), 0x81);
        assert!(keys(&r).contains(&("AuthMethod".into(), "None".into())));
        let r = l.step(&req(
            0x87,
            &[
                ("HeaderDigest", "CRC32C,None"),
                ("MaxBurstLength", "8388608"),
                ("Foo", "1"),
            ],
        ));
        assert_eq!(r.bhs.flags(), 0x87);
        assert!(l.done());
        assert!(l.params.header_digest);
        assert_eq!(l.params.max_burst, 1 << 20);
        assert!(keys(&r).contains(&("Foo".into(), "NotUnderstood".into())));
        assert_eq!(r.bhs.u16_at(14), 5, "the final response carries the TSIH");
    }

    #[test]
    fn unknown_targets_and_forbidden_initiators_are_refused() {
        let acl = Access {
            initiators: Some(vec!["iqn.ok".into()]),
            ..Access::default()
        };
        let mut l = Login::new(std::sync::Arc::new(Dir(acl.clone())), 1);
        let r = l.step(&req(
            0x81,
            &[("InitiatorName", "iqn.i"), ("TargetName", "iqn.nope")],
        ));
        assert_eq!(status_of(&r), status::NOT_FOUND);
        let mut l = Login::new(std::sync::Arc::new(Dir(acl)), 1);
        let r = l.step(&req(
            0x81,
            &[("InitiatorName", "iqn.i"), ("TargetName", "iqn.t")],
        ));
        assert_eq!(status_of(&r), status::FORBIDDEN);
        let mut l = Login::new(std::sync::Arc::new(Dir(Access::default())), 1);
        let r = l.step(&req(0x81, &[("TargetName", "iqn.t")]));
        assert_eq!(status_of(&r), status::MISSING_PARAMETER);
    }

    #[test]
    fn mutual_chap() {
        let acl = Access {
            chap: Some(Chap {
                user: "u".into(),
                secret: "secret-12345".into(),
            }),
            mutual: Some(Chap {
                user: "t".into(),
                secret: "target-secret".into(),
            }),
            ..Access::default()
        };
        let mut l = Login::new(std::sync::Arc::new(Dir(acl)), 1);
        let r = l.step(&req(
            0x01,
            &[
                ("InitiatorName", "iqn.i"),
                ("TargetName", "iqn.t"),
                ("AuthMethod", "CHAP,None"),
            ],
        ));
        assert!(keys(&r).contains(&("AuthMethod".into(), "CHAP".into())));
        let r = l.step(&req(0x01, &[("CHAP_A", "5")]));
        let k = keys(&r);
        let id: u8 = k
            .iter()
            .find(|x| x.0 == "CHAP_I")
            .unwrap()
            .1
            .parse()
            .unwrap();
        let c = unhex(&k.iter().find(|x| x.0 == "CHAP_C").unwrap().1).unwrap();
        let resp = format!("0x{}", hex(&chap_response(id, b"secret-12345", &c)));
        let my_c = [9u8; 16];
        let r = l.step(&req(
            0x81,
            &[
                ("CHAP_N", "u"),
                ("CHAP_R", &resp),
                ("CHAP_I", "3"),
                ("CHAP_C", &format!("0x{}", hex(&my_c))),
            ],
        ));
        assert_eq!(status_of(&r), 0);
        assert_eq!(r.bhs.flags() & 0x80, 0x80, "authenticated: it may move on");
        let k = keys(&r);
        let tr = unhex(&k.iter().find(|x| x.0 == "CHAP_R").unwrap().1).unwrap();
        assert_eq!(tr, chap_response(3, b"target-secret", &my_c));

        // A wrong response fails.
        let acl = Access {
            chap: Some(Chap {
                user: "u".into(),
                secret: "secret-12345".into(),
            }),
            ..Access::default()
        };
        let mut l = Login::new(std::sync::Arc::new(Dir(acl)), 1);
        l.step(&req(
            0x01,
            &[
                ("InitiatorName", "iqn.i"),
                ("TargetName", "iqn.t"),
                ("AuthMethod", "CHAP"),
            ],
        ));
        l.step(&req(0x01, &[("CHAP_A", "5")]));
        let r = l.step(&req(
            0x81,
            &[
                ("CHAP_N", "u"),
                ("CHAP_R", "0x00112233445566778899aabbccddeeff"),
            ],
        ));
        assert_eq!(status_of(&r), status::AUTH_FAILED);
        assert!(l.failed());
    }
}

//! The TCP driver: one tokio task per connection. It reads PDUs, runs the login state machine
//! and then the connection's, executes SCSI commands on the LUN concurrently and writes what
//! the state machines produce. Digests negotiated at login apply from the first PDU after the
//! final Login Response.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::conn::{Action, Conn};
use crate::login::{Login, SessionType};
use crate::pdu::{Framing, Pdu, PduError};
use crate::target::Target;

/// Serves iSCSI on `listener` until the task is dropped.
pub async fn serve(target: Arc<Target>, listener: TcpListener) {
    loop {
        let Ok((sock, peer)) = listener.accept().await else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        let t = target.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(t, sock, peer).await {
                tracing::debug!(%peer, "iSCSI connection ended: {e}");
            }
        });
    }
}

/// Binds `addr` and serves on it in a new task; the bound address.
pub async fn listen(
    target: Arc<Target>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let l = TcpListener::bind(addr).await?;
    let bound = l.local_addr()?;
    if target.local_portal().is_empty() {
        target.set_local_portal(bound.to_string());
    }
    Ok((bound, tokio::spawn(serve(target, l))))
}

/// Serves `target` on a socket already bound; returns its address and the accept task.
pub fn listen_std(
    target: Arc<Target>,
    l: std::net::TcpListener,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    l.set_nonblocking(true)?;
    let l = TcpListener::from_std(l)?;
    let bound = l.local_addr()?;
    if target.local_portal().is_empty() {
        target.set_local_portal(bound.to_string());
    }
    Ok((bound, tokio::spawn(serve(target, l))))
}

/// Releases the nexus's RESERVE(6) when the connection ends.
struct Nexus(Option<Arc<crate::scsi::Lun>>, [u8; 16]);

impl Drop for Nexus {
    fn drop(&mut self) {
        if let Some(l) = &self.0 {
            l.nexus_lost(&self.1);
        }
    }
}

/// The I_T nexus identity reservations use: the first 8 bytes name the initiator
/// ([`initiator_key`]), the last 8 its session's ISID, so that every registration of one host
/// can be found by its name (a force detach fences them all).
pub fn host_id(initiator: &str, isid: [u8; 6]) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&initiator_key(initiator));
    let isid: [u8; 16] = Md5::digest(isid).into();
    id[8..].copy_from_slice(&isid[..8]);
    id
}

/// The part of every I_T nexus identity of `initiator` that names it ([`host_id`]).
pub fn initiator_key(initiator: &str) -> [u8; 8] {
    let h: [u8; 16] = Md5::digest(initiator.as_bytes()).into();
    h[..8].try_into().expect("8 bytes")
}

/// Completes when `session` is revoked; never without one (a discovery session).
async fn revoked(session: Option<&crate::target::Session>) {
    match session {
        Some(s) => s.revoked().await,
        None => std::future::pending().await,
    }
}

async fn read_pdu(
    sock: &mut TcpStream,
    buf: &mut BytesMut,
    f: &Framing,
) -> Result<Option<Pdu>, std::io::Error> {
    loop {
        match f.decode(buf) {
            Ok(Some((pdu, n))) => {
                buf.advance(n);
                return Ok(Some(pdu));
            }
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
        if sock.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn connection(
    target: Arc<Target>,
    mut sock: TcpStream,
    peer: SocketAddr,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(1 << 16);
    let mut framing = Framing::default();
    // Login phase.
    let mut login = Login::new(target.clone(), target.next_tsih());
    let mut out = BytesMut::new();
    let last_cmd_sn;
    loop {
        let Some(pdu) = read_pdu(&mut sock, &mut buf, &framing).await? else {
            return Ok(());
        };
        let cmd_sn = pdu.bhs.u32_at(24);
        let resp = login.step(&pdu);
        out.clear();
        framing.encode(&resp, &mut out);
        sock.write_all(&out).await?;
        if login.failed() {
            tracing::info!(%peer, initiator = ?login.initiator, target = ?login.target, "iSCSI login refused");
            return Ok(());
        }
        if login.done() {
            last_cmd_sn = cmd_sn;
            break;
        }
    }
    let params = login.params.clone();
    framing = Framing {
        header_digest: params.header_digest,
        data_digest: params.data_digest,
        max_recv: params.target_max_recv as usize,
    };
    let initiator = login.initiator.clone().unwrap_or_default();
    let lun = login
        .target
        .as_deref()
        .and_then(|t| target.get(t))
        .map(|e| e.lun.clone());
    if login.session_type == SessionType::Normal && lun.is_none() {
        return Ok(());
    }
    // A normal session ends when its initiator leaves the target's access list.
    let session = match (&lun, &login.target) {
        (Some(_), Some(name)) => match target.join(name, &initiator) {
            Some(s) => Some(s),
            None => return Ok(()),
        },
        _ => None,
    };
    tracing::info!(%peer, %initiator, target = ?login.target, "iSCSI login");
    let host = host_id(&initiator, login.isid());
    // However the connection ends, its I_T nexus is gone (RESERVE(6) is released).
    if let Some(l) = &lun {
        l.nexus_joined(&host);
    }
    let _nexus = Nexus(lun.clone(), host);
    let mut conn = Conn::new(
        params,
        initiator.clone(),
        login.session_type,
        login.target.clone(),
        lun.clone(),
        target.clone(),
        login.stat_sn(),
        last_cmd_sn,
    );
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (mut rd, mut wr) = sock.into_split();
    let mut closing = false;
    loop {
        let actions = tokio::select! {
            r = rd.read_buf(&mut buf) => {
                if r? == 0 {
                    return Ok(());
                }
                let mut acts = Vec::new();
                loop {
                    match framing.decode(&buf) {
                        Ok(Some((pdu, n))) => {
                            buf.advance(n);
                            acts.extend(conn.handle(pdu));
                        }
                        Ok(None) => break,
                        Err(PduError::DataDigest(bhs)) => {
                            let n = framing.wire_len(&bhs);
                            buf.advance(n);
                            acts.extend(conn.data_digest_error(&bhs));
                        }
                        Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
                    }
                }
                acts
            }
            Some((itt, outcome)) = done_rx.recv() => conn.completed(itt, outcome),
            _ = revoked(session.as_ref()) => {
                let _ = wr.shutdown().await;
                return Ok(());
            }
        };
        out.clear();
        for a in actions {
            match a {
                Action::Send(p) => framing.encode(&p, &mut out),
                Action::Execute { itt, cdb, data } => {
                    let (lun, tx) = (lun.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        let o = match lun {
                            Some(l) => l.execute(&host, &cdb, data).await,
                            None => {
                                crate::scsi::Outcome::check(crate::scsi::Sense::LUN_NOT_SUPPORTED)
                            }
                        };
                        let _ = tx.send((itt, o));
                    });
                }
                Action::Close => closing = true,
                Action::ResetLun => {
                    // Before the TMF response that follows: every nexus of the LU, on every
                    // node, has the unit attention by the time the host hears "done".
                    if let Some(l) = &lun {
                        l.reset().await;
                    }
                }
            }
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
        }
        if closing {
            let _ = wr.shutdown().await;
            return Ok(());
        }
    }
}

//! What a volume's connection info means to this host: its portals over a protocol, its
//! desired-state entry, and whether a portal answers at all.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use alcubierre_api::v1;

use crate::plan::Portal;
use crate::state::Wanted;
use crate::{Error, Protocol, Result};

/// How long a TCP probe of a portal may take before the kernel is asked to connect.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A portal's failure, naming the portal once.
pub(crate) fn path_error(p: &Portal, e: &Error) -> String {
    match e {
        Error::Unreachable { .. } => e.to_string(),
        e => format!("{p}: {e}"),
    }
}

/// The portals of `conn` over `protocol`, the primary's first.
pub(crate) fn portals_of(conn: &v1::ConnectionInfo, protocol: Protocol) -> Vec<Portal> {
    match protocol {
        Protocol::NvmeTcp => conn
            .nvme
            .portals
            .iter()
            .map(|p| Portal::new(&p.address, p.port))
            .collect(),
        Protocol::Iscsi => conn
            .iscsi
            .iter()
            .flat_map(|i| &i.portals)
            .map(|p| Portal::new(&p.address, p.port))
            .collect(),
    }
}

/// The desired-state entry of `conn` over `protocol`.
pub(crate) fn wanted_of(conn: &v1::ConnectionInfo, protocol: Protocol) -> Result<Wanted> {
    let (target, lun) = match protocol {
        Protocol::NvmeTcp => (conn.nvme.subsystem_nqn.clone(), conn.nvme.namespace_id),
        Protocol::Iscsi => match &conn.iscsi {
            Some(i) => (i.target_iqn.clone(), i.lun),
            None => {
                return Err(Error::Invalid(format!(
                "volume {}: its nodes do not serve iSCSI (no [iscsi] listen); attach over nvme-tcp",
                conn.name
            )))
            }
        },
    };
    Ok(Wanted {
        volume: conn.volume.clone(),
        name: conn.name.clone(),
        protocol,
        target,
        uuid: conn.nvme.uuid.clone(),
        lun,
        chap_user: conn.iscsi.as_ref().and_then(|i| i.chap_user.clone()),
    })
}

/// Whether `p` accepts a TCP connection (so the kernel is not asked to connect to an address
/// that does not answer, which can block for minutes).
pub(crate) fn probe(p: &Portal) -> Result<()> {
    let unreachable = |reason: String| Error::Unreachable {
        portal: p.to_string(),
        reason,
    };
    let addrs: Vec<_> = (p.address.as_str(), p.port)
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("cannot resolve it: {e}")))?
        .collect();
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, PROBE_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(unreachable(
        last.map(|e| e.to_string())
            .unwrap_or_else(|| "no address".into()),
    ))
}

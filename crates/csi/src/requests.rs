//! The pure part of the Controller service: which capabilities it serves, the size a
//! capacity range gives, StorageClass and VolumeAttributesClass parameters, paging, and the
//! cluster's volumes and snapshots as CSI's.

use std::collections::HashMap;

use alcubierre_api::v1;
use tonic::Status;

use crate::names::snapshot_id;
use crate::proto::controller_service_capability::rpc::Type as Rpc;
use crate::proto::volume_capability::access_mode::Mode;
use crate::proto::volume_capability::AccessType;
use crate::proto::*;
use crate::status::invalid;

/// Sizes are rounded up to this.
pub(crate) const SIZE_UNIT: u64 = 1 << 20;
/// The size of a volume asked for without one.
pub(crate) const DEFAULT_SIZE: u64 = 1 << 30;

/// Why `caps` cannot be served, or `None` when every one can: block or mount access, one node
/// at a time, or several nodes for raw block (a file system on several hosts would corrupt).
pub fn unsupported(caps: &[VolumeCapability]) -> Option<String> {
    if caps.is_empty() {
        return Some("volume_capabilities: none given".into());
    }
    for c in caps {
        let mode = c
            .access_mode
            .as_ref()
            .and_then(|m| Mode::try_from(m.mode).ok())
            .unwrap_or(Mode::Unknown);
        let block = match &c.access_type {
            Some(AccessType::Block(_)) => true,
            Some(AccessType::Mount(m)) => {
                if !["", "ext4", "xfs"].contains(&m.fs_type.as_str()) {
                    return Some(format!("fs_type {:?}: use ext4 or xfs", m.fs_type));
                }
                false
            }
            None => return Some("access_type: neither block nor mount".into()),
        };
        match mode {
            Mode::Unknown => return Some("access_mode: none or unknown".into()),
            Mode::SingleNodeWriter
            | Mode::SingleNodeReaderOnly
            | Mode::SingleNodeSingleWriter
            | Mode::SingleNodeMultiWriter => {}
            Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter
                if block => {}
            m => {
                return Some(format!(
                    "access_mode {}: a file system on several nodes at once is not supported (use raw block)",
                    m.as_str_name()
                ))
            }
        }
    }
    None
}

/// The size to create for `range`: at least `required_bytes` (1 GiB when 0), rounded up to
/// 1 MiB, within `limit_bytes`.
pub fn size_for(range: Option<&CapacityRange>) -> Result<u64, Status> {
    let (req, lim) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if req < 0 || lim < 0 {
        return Err(invalid("capacity_range", "negative bytes"));
    }
    let (req, lim) = (req as u64, lim as u64);
    let want = if req == 0 {
        DEFAULT_SIZE.min(if lim == 0 { u64::MAX } else { lim })
    } else {
        req
    };
    let size = want.div_ceil(SIZE_UNIT) * SIZE_UNIT;
    if lim != 0 && size > lim {
        return Err(Status::out_of_range(format!(
            "capacity_range: {req} bytes rounded up to whole MiB is {size}, above the limit {lim}"
        )));
    }
    if size == 0 {
        return Err(Status::out_of_range(format!(
            "capacity_range: the limit {lim} is below 1 MiB, the smallest volume"
        )));
    }
    Ok(size)
}

pub(crate) fn fits(size: u64, range: Option<&CapacityRange>) -> bool {
    range.is_none_or(|r| {
        size >= r.required_bytes.max(0) as u64
            && (r.limit_bytes <= 0 || size <= r.limit_bytes as u64)
    })
}

pub(crate) fn csi_volume(v: &v1::Volume, context: HashMap<String, String>) -> Volume {
    Volume {
        capacity_bytes: v.size as i64,
        volume_id: v.id.clone(),
        volume_context: context,
        content_source: None,
        accessible_topology: vec![Topology {
            segments: HashMap::from([(crate::TOPOLOGY_KEY.to_string(), "cluster".to_string())]),
        }],
    }
}

pub(crate) fn csi_snapshot(s: &v1::Snapshot) -> Snapshot {
    Snapshot {
        size_bytes: s.size as i64,
        snapshot_id: snapshot_id(&s.volume, &s.name),
        source_volume_id: s.volume.clone(),
        creation_time: Some(prost_types::Timestamp {
            seconds: s.created as i64,
            nanos: 0,
        }),
        ready_to_use: s.state == v1::SnapshotState::Ready,
        group_snapshot_id: String::new(),
    }
}

/// A StorageClass's `parameters` as the driver reads them: the volume context handed to the
/// node (how to attach it: `protocol`, `nvme-tcp` by default) and the QoS policy (`qos`);
/// INVALID_ARGUMENT naming an unknown or bad parameter.
pub fn context(
    params: &HashMap<String, String>,
) -> Result<(HashMap<String, String>, Option<String>), Status> {
    let mut ctx = HashMap::new();
    let mut qos = None;
    for (k, v) in params {
        match k.as_str() {
            "protocol" => {
                if v != "nvme-tcp" && v != "iscsi" {
                    return Err(invalid(
                        "parameters.protocol",
                        format!("{v:?}: use nvme-tcp or iscsi"),
                    ));
                }
                ctx.insert("protocol".into(), v.clone());
            }
            "qos" => qos = Some(v.clone()),
            // Kubernetes' own (the provisioner's), passed through.
            k if k.starts_with("csi.storage.k8s.io/") => {}
            other => {
                return Err(invalid(
                    &format!("parameters.{other}"),
                    "unknown; the StorageClass takes protocol and qos",
                ))
            }
        }
    }
    ctx.entry("protocol".into())
        .or_insert_with(|| "nvme-tcp".into());
    Ok((ctx, qos))
}

/// The QoS policy a VolumeAttributesClass's parameters name (`qos`; empty clears it).
pub fn mutable_qos(params: &HashMap<String, String>) -> Result<Option<String>, Status> {
    let mut qos = None;
    for (k, v) in params {
        match k.as_str() {
            "qos" => qos = Some(v.clone()),
            other => {
                return Err(invalid(
                    &format!("mutable_parameters.{other}"),
                    "unknown; a VolumeAttributesClass takes qos",
                ))
            }
        }
    }
    Ok(qos)
}

/// Parses a paging token.
pub(crate) fn start_at(token: &str) -> Result<usize, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token.parse().map_err(|_| {
        Status::aborted(format!(
            "starting_token {token:?} is not one this driver gave; list again from the start"
        ))
    })
}

pub(crate) fn page<T>(all: Vec<T>, start: usize, max: i32) -> Result<(Vec<T>, String), Status> {
    if max < 0 {
        return Err(invalid("max_entries", "negative"));
    }
    if start > all.len() {
        return Err(Status::aborted(format!(
            "starting_token {start} is past the end ({} entries); list again from the start",
            all.len()
        )));
    }
    let n = if max == 0 { all.len() } else { max as usize };
    let end = (start + n).min(all.len());
    let next = if end < all.len() {
        end.to_string()
    } else {
        String::new()
    };
    Ok((all.into_iter().skip(start).take(n).collect(), next))
}

pub(crate) fn caps(types: &[Rpc]) -> Vec<ControllerServiceCapability> {
    types
        .iter()
        .map(|t| ControllerServiceCapability {
            r#type: Some(controller_service_capability::Type::Rpc(
                controller_service_capability::Rpc { r#type: *t as i32 },
            )),
        })
        .collect()
}

pub(crate) fn required(field: &str, v: &str) -> Result<(), Status> {
    if v.is_empty() {
        Err(invalid(field, "required"))
    } else {
        Ok(())
    }
}

/// Whether `cap` lets one node at a time have the volume (every mode but the MULTI_NODE ones).
pub(crate) fn single_node(cap: &VolumeCapability) -> bool {
    let mode = cap
        .access_mode
        .as_ref()
        .and_then(|m| Mode::try_from(m.mode).ok())
        .unwrap_or(Mode::Unknown);
    !matches!(
        mode,
        Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter
    )
}

/// FAILED_PRECONDITION for publishing single-node `volume` while node `other` has it, saying
/// how it comes free: unpublished there, or, when that node died, fenced (ControllerUnpublish
/// of a node whose agent stopped reporting fences it; Kubernetes calls it once the node is
/// marked out of service).
pub(crate) fn published_elsewhere(volume: &str, other: &str, host: Option<v1::HostView>) -> Status {
    let liveness = match host.and_then(|h| h.liveness) {
        Some(l) if l.alive => "its agent is reporting".to_string(),
        Some(l) => format!(
            "its agent stopped reporting (last at {} ms since the epoch)",
            l.last_seen_ms
        ),
        None => "no agent reports from it".to_string(),
    };
    Status::failed_precondition(format!(
        "volume {volume} is published to node {other} ({liveness}) and its access mode allows one \
         node: unpublish it there first; if that node died, mark it out of service \
         (taint node.kubernetes.io/out-of-service) so Kubernetes force-detaches it, or fence it \
         with `alcubierre host fence {other}`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn one_node_at_a_time_unless_a_multi_node_mode() {
        assert!(single_node(&cap(false, Mode::SingleNodeWriter)));
        assert!(single_node(&cap(true, Mode::SingleNodeMultiWriter)));
        assert!(!single_node(&cap(true, Mode::MultiNodeMultiWriter)));
        assert!(!single_node(&cap(true, Mode::MultiNodeReaderOnly)));
        let lost = v1::HostLiveness {
            host: "a".into(),
            agent: "alcubierre-csi".into(),
            last_seen_ms: 7,
            alive: false,
            timeout_ms: 10_000,
        };
        let host = v1::HostView {
            name: "a".into(),
            nqn: None,
            iqn: None,
            nvme_hostid: None,
            chap_user: None,
            target_chap_user: None,
            liveness: Some(lost),
        };
        let e = published_elsewhere("pv1", "a", Some(host));
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("stopped reporting"), "{}", e.message());
        assert!(
            e.message().contains("alcubierre host fence a"),
            "{}",
            e.message()
        );
        let e = published_elsewhere("pv1", "a", None);
        assert!(e.message().contains("no agent reports"), "{}", e.message());
    }

    fn cap(block: bool, mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_mode: Some(volume_capability::AccessMode { mode: mode as i32 }),
            access_type: Some(if block {
                AccessType::Block(volume_capability::BlockVolume {})
            } else {
                AccessType::Mount(volume_capability::MountVolume::default())
            }),
        }
    }

    #[test]
    fn capabilities_sizes_and_pages() {
        assert_eq!(unsupported(&[cap(false, Mode::SingleNodeWriter)]), None);
        assert_eq!(unsupported(&[cap(true, Mode::MultiNodeMultiWriter)]), None);
        assert!(unsupported(&[cap(false, Mode::MultiNodeMultiWriter)])
            .unwrap()
            .contains("raw block"));
        assert!(unsupported(&[]).is_some());
        let mut xfs = cap(false, Mode::SingleNodeWriter);
        xfs.access_type = Some(AccessType::Mount(volume_capability::MountVolume {
            fs_type: "btrfs".into(),
            ..Default::default()
        }));
        assert!(unsupported(&[xfs]).unwrap().contains("btrfs"));

        let r = |req, lim| CapacityRange {
            required_bytes: req,
            limit_bytes: lim,
        };
        assert_eq!(size_for(None).unwrap(), 1 << 30);
        assert_eq!(size_for(Some(&r(1, 0))).unwrap(), 1 << 20);
        assert_eq!(size_for(Some(&r(0, 10 << 20))).unwrap(), 10 << 20);
        assert_eq!(size_for(Some(&r(3 << 20, 3 << 20))).unwrap(), 3 << 20);
        assert_eq!(
            size_for(Some(&r(1, 100))).unwrap_err().code(),
            Code::OutOfRange
        );
        assert_eq!(
            size_for(Some(&r(-1, 0))).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert!(fits(2 << 30, Some(&r(1 << 30, 0))));
        assert!(!fits(2 << 30, Some(&r(1 << 30, 1 << 30))));

        let (p, next) = page(vec![1, 2, 3, 4, 5], 0, 2).unwrap();
        assert_eq!((p, next.as_str()), (vec![1, 2], "2"));
        let (p, next) = page(vec![1, 2, 3, 4, 5], start_at("4").unwrap(), 2).unwrap();
        assert_eq!((p, next.as_str()), (vec![5], ""));
        assert_eq!(start_at("x").unwrap_err().code(), Code::Aborted);
        assert_eq!(page(vec![1], 5, 0).unwrap_err().code(), Code::Aborted);
    }

    #[test]
    fn storage_class_parameters_are_checked() {
        let p = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        let (ctx, qos) =
            context(&p(&[("qos", "gold"), ("csi.storage.k8s.io/pvc/name", "x")])).unwrap();
        assert_eq!(
            (ctx["protocol"].as_str(), qos.as_deref()),
            ("nvme-tcp", Some("gold"))
        );
        assert_eq!(
            context(&p(&[("protocol", "iscsi")])).unwrap().0["protocol"],
            "iscsi"
        );
        let e = context(&p(&[("protocol", "fc")])).unwrap_err();
        assert!(e.message().starts_with("parameters.protocol"), "{e:?}");
        let e = context(&p(&[("replicas", "2")])).unwrap_err();
        assert!(e.message().starts_with("parameters.replicas"), "{e:?}");
    }
}

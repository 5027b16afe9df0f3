//! The rules an activation must pass (seed section 1.2/4 and SPEC section 5): at least 3 nodes
//! for the first activation; 1 or 2 cache devices per node, all healthy; every active node with
//! the same cache configuration (device count and size class); nodes available (heartbeat); the
//! licence's node limit and expiry. A refusal says which rule and which node.

use serde::{Deserialize, Serialize};

use crate::model::{Activation, CacheState, Node, Service};

/// Optional licence limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Licence {
    /// Most active nodes.
    pub max_nodes: Option<u32>,
    /// Most provisioned volume bytes.
    pub max_capacity: Option<u64>,
    /// Unix seconds after which nothing new may be activated or created.
    pub expires: Option<u64>,
}

/// Why an activation is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActivationError {
    /// Fewer than 3 nodes in the first activation.
    #[error("the first activation needs at least 3 nodes; {have} selected")]
    TooFewNodes {
        /// Nodes selected.
        have: usize,
    },
    /// A node has no cache device, or more than 2.
    #[error("node {node}: {count} cache devices; a node needs 1 or 2")]
    CacheCount {
        /// The node.
        node: String,
        /// Its device count.
        count: usize,
    },
    /// A cache device is not healthy.
    #[error("node {node}: cache device {device} is {state:?}, not healthy")]
    CacheUnhealthy {
        /// The node.
        node: String,
        /// The device.
        device: String,
        /// Its state.
        state: CacheState,
    },
    /// Cache configurations differ.
    #[error(
        "node {node}: cache configuration {found} differs from the cluster's {expected} \
         (every active node needs the same device count and size class)"
    )]
    CacheMismatch {
        /// The node.
        node: String,
        /// Its configuration.
        found: String,
        /// The cluster's.
        expected: String,
    },
    /// The node's heartbeat is not alive.
    #[error("node {node} is unavailable (no heartbeat)")]
    Unavailable {
        /// The node.
        node: String,
    },
    /// The node is not in a state that can be activated.
    #[error(
        "node {node} is {state}; only registered, failed or deactivated nodes can be activated"
    )]
    State {
        /// The node.
        node: String,
        /// Its state.
        state: &'static str,
    },
    /// The licence allows fewer nodes.
    #[error("the licence allows {max} active nodes; activating would make {would}")]
    LicenceNodes {
        /// The limit.
        max: u32,
        /// Active nodes after the activation.
        would: usize,
    },
    /// The licence expired.
    #[error("the licence expired at {expires} (unix time)")]
    LicenceExpired {
        /// When.
        expires: u64,
    },
}

/// Two device sizes are the same class when within 5% of each other.
fn same_class(a: u64, b: u64) -> bool {
    let (lo, hi) = (a.min(b) as f64, a.max(b) as f64);
    hi <= lo * 1.05
}

fn describe(n: &Node) -> String {
    let sizes: Vec<String> = n
        .cache
        .iter()
        .map(|c| format!("{:.2} TB", c.size as f64 / 1e12))
        .collect();
    format!("{} x [{}]", n.cache.len(), sizes.join(", "))
}

fn same_config(a: &Node, b: &Node) -> bool {
    let mut x: Vec<u64> = a.cache.iter().map(|c| c.size).collect();
    let mut y: Vec<u64> = b.cache.iter().map(|c| c.size).collect();
    x.sort_unstable();
    y.sort_unstable();
    x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| same_class(*p, *q))
}

/// Checks activating `candidates` (with their service states) in a cluster whose active nodes
/// are `active`, at unix time `now`.
pub fn check(
    candidates: &[(&Node, Service)],
    active: &[&Node],
    licence: &Licence,
    now: u64,
) -> Result<(), ActivationError> {
    if active.is_empty() && candidates.len() < 3 {
        return Err(ActivationError::TooFewNodes {
            have: candidates.len(),
        });
    }
    if let Some(exp) = licence.expires {
        if now >= exp {
            return Err(ActivationError::LicenceExpired { expires: exp });
        }
    }
    if let Some(max) = licence.max_nodes {
        let would = active.len() + candidates.len();
        if would > max as usize {
            return Err(ActivationError::LicenceNodes { max, would });
        }
    }
    let reference = active.first().copied().or(candidates.first().map(|c| c.0));
    for (n, service) in candidates {
        if !matches!(
            n.activation,
            Activation::Registered | Activation::Failed { .. } | Activation::Deactivated
        ) {
            return Err(ActivationError::State {
                node: n.name.clone(),
                state: n.activation.name(),
            });
        }
        if *service != Service::Available {
            return Err(ActivationError::Unavailable {
                node: n.name.clone(),
            });
        }
        if n.cache.is_empty() || n.cache.len() > 2 {
            return Err(ActivationError::CacheCount {
                node: n.name.clone(),
                count: n.cache.len(),
            });
        }
        if let Some(c) = n.cache.iter().find(|c| c.state != CacheState::Healthy) {
            return Err(ActivationError::CacheUnhealthy {
                node: n.name.clone(),
                device: c.path.clone(),
                state: c.state,
            });
        }
        if let Some(r) = reference {
            if !same_config(n, r) {
                return Err(ActivationError::CacheMismatch {
                    node: n.name.clone(),
                    found: describe(n),
                    expected: describe(r),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CacheDevice;

    fn node(name: &str, sizes: &[u64]) -> Node {
        Node {
            name: name.into(),
            management: "127.0.0.1:8080".into(),
            replica: "127.0.0.1:7000".into(),
            cache: sizes
                .iter()
                .enumerate()
                .map(|(i, s)| CacheDevice {
                    path: format!("/dev/nvme{i}n1"),
                    size: *s,
                    state: CacheState::Healthy,
                })
                .collect(),
            activation: Activation::Registered,
            draining: false,
            cpu_threads: None,
            nvme: None,
            portals: Vec::new(),
            iscsi_portals: Vec::new(),
        }
    }

    const T: u64 = 3_200_000_000_000;

    #[test]
    fn first_activation_needs_three_matching_nodes() {
        let (a, b, c) = (
            node("node-1", &[T]),
            node("node-2", &[T]),
            node("node-3", &[T - T / 100]),
        );
        let up = Service::Available;
        let l = Licence::default();
        assert_eq!(
            check(&[(&a, up), (&b, up)], &[], &l, 0),
            Err(ActivationError::TooFewNodes { have: 2 })
        );
        check(&[(&a, up), (&b, up), (&c, up)], &[], &l, 0).unwrap();
        // A later node joins one at a time, if it matches.
        let d = node("node-4", &[T]);
        check(&[(&d, up)], &[&a, &b, &c], &l, 0).unwrap();
        let e = node("node-5", &[T / 2]);
        let err = check(&[(&e, up)], &[&a, &b, &c], &l, 0).unwrap_err();
        assert!(matches!(err, ActivationError::CacheMismatch { ref node, .. } if node == "node-5"));
        assert!(err.to_string().contains("1 x [1.60 TB]"), "{err}");
        let f = node("node-6", &[T, T]);
        assert!(matches!(
            check(&[(&f, up)], &[&a], &l, 0),
            Err(ActivationError::CacheMismatch { .. })
        ));
    }

    #[test]
    fn device_count_health_service_and_state() {
        let up = Service::Available;
        let l = Licence::default();
        let ok = node("ok", &[T]);
        let three = node("three", &[T, T, T]);
        assert_eq!(
            check(&[(&three, up)], &[&ok], &l, 0),
            Err(ActivationError::CacheCount {
                node: "three".into(),
                count: 3
            })
        );
        let none = node("none", &[]);
        assert!(matches!(
            check(&[(&none, up)], &[&ok], &l, 0),
            Err(ActivationError::CacheCount { count: 0, .. })
        ));
        let mut sick = node("sick", &[T]);
        sick.cache[0].state = CacheState::Failed;
        assert!(matches!(
            check(&[(&sick, up)], &[&ok], &l, 0),
            Err(ActivationError::CacheUnhealthy { .. })
        ));
        let down = node("down", &[T]);
        assert_eq!(
            check(&[(&down, Service::Unavailable)], &[&ok], &l, 0),
            Err(ActivationError::Unavailable {
                node: "down".into()
            })
        );
        let mut active = node("active", &[T]);
        active.activation = Activation::Active;
        assert!(matches!(
            check(&[(&active, up)], &[&ok], &l, 0),
            Err(ActivationError::State {
                state: "active",
                ..
            })
        ));
    }

    #[test]
    fn licence_limits() {
        let up = Service::Available;
        let ns: Vec<Node> = (0..4).map(|i| node(&format!("n{i}"), &[T])).collect();
        let cands: Vec<(&Node, Service)> = ns.iter().map(|n| (n, up)).collect();
        let l = Licence {
            max_nodes: Some(3),
            ..Licence::default()
        };
        assert_eq!(
            check(&cands, &[], &l, 0),
            Err(ActivationError::LicenceNodes { max: 3, would: 4 })
        );
        check(&cands[..3], &[], &l, 0).unwrap();
        let l = Licence {
            expires: Some(100),
            ..Licence::default()
        };
        check(&cands[..3], &[], &l, 99).unwrap();
        assert_eq!(
            check(&cands[..3], &[], &l, 100),
            Err(ActivationError::LicenceExpired { expires: 100 })
        );
    }
}

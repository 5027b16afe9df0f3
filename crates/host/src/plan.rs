//! The pure decision of a reconcile round: the portals a volume's connection info lists (every
//! replica node's) against the paths the host has to it. A portal without a path is connected;
//! a path to a portal no longer listed (its node left the replica set) is dropped; a path that
//! is reconnecting is left to the kernel (or iscsid), which retries it. No I/O here.
//!
//! A round never takes a volume's I/O away: paths are dropped only while a live path to a
//! listed portal is kept (dropping the last NVMe controller would remove the namespace, and its
//! users would get I/O errors), and an empty portal list (a registry that lost its nodes, a
//! misconfigured portal) changes nothing.

use std::net::IpAddr;

/// An address and port a path goes to, compared by value (`::1` and `0:0::1` are one).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Portal {
    /// The address, normalised when it is an IP address.
    pub address: String,
    /// The TCP port.
    pub port: u16,
}

impl Portal {
    /// A portal at `address`:`port`.
    pub fn new(address: &str, port: u16) -> Self {
        let address = address.trim().trim_start_matches('[').trim_end_matches(']');
        let address = match address.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => address.to_ascii_lowercase(),
        };
        Self { address, port }
    }
}

impl std::fmt::Display for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.address.contains(':') {
            write!(f, "[{}]:{}", self.address, self.port)
        } else {
            write!(f, "{}:{}", self.address, self.port)
        }
    }
}

/// A path the host has: where it goes and how the host names it (`H`: a controller, a
/// session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path<H> {
    /// Where it goes.
    pub portal: Portal,
    /// The host's handle of it.
    pub handle: H,
    /// Whether it carries I/O now (`live`, `LOGGED_IN`).
    pub live: bool,
}

/// One change of a round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step<H> {
    /// Connect a path to this portal.
    Connect(Portal),
    /// Drop this path: its portal is not (or no longer) one of the volume's, or it duplicates
    /// another path to the same portal.
    Drop(Path<H>),
}

/// The steps that make the host's `present` paths the `wanted` portals: connects first, in the
/// order the portals are listed (the primary's first), then drops, only while a live path to a
/// wanted portal stays (of two paths to one portal, a live one is kept).
pub fn plan<H: Clone>(wanted: &[Portal], present: &[Path<H>]) -> Vec<Step<H>> {
    let mut steps = Vec::new();
    if wanted.is_empty() {
        return steps;
    }
    let mut connect: Vec<&Portal> = Vec::new();
    for p in wanted {
        if !present.iter().any(|x| &x.portal == p) && !connect.contains(&p) {
            connect.push(p);
            steps.push(Step::Connect(p.clone()));
        }
    }
    // Live paths first, so that of two paths to one portal the live one is kept.
    let mut order: Vec<&Path<H>> = present.iter().collect();
    order.sort_by_key(|x| !x.live);
    let mut kept: Vec<&Portal> = Vec::new();
    let mut kept_live = false;
    let mut drops = Vec::new();
    for x in order {
        if wanted.contains(&x.portal) && !kept.contains(&&x.portal) {
            kept.push(&x.portal);
            kept_live |= x.live;
        } else {
            drops.push(x);
        }
    }
    if kept_live {
        // In the order the host lists them.
        for x in present {
            if drops.iter().any(|d| std::ptr::eq(*d, x)) {
                steps.push(Step::Drop(x.clone()));
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(port: u16) -> Portal {
        Portal::new("10.0.2.2", port)
    }

    fn path(port: u16, h: &str) -> Path<String> {
        Path {
            portal: p(port),
            handle: h.to_string(),
            // A handle ending in `-` is a path that is not live.
            live: !h.ends_with('-'),
        }
    }

    #[test]
    fn portals_compare_by_value() {
        assert_eq!(Portal::new("[::1]", 1), Portal::new("0:0::1", 1));
        assert_eq!(Portal::new(" 10.0.2.2", 1), Portal::new("10.0.2.2", 1));
        assert_eq!(Portal::new("Node-A", 1), Portal::new("node-a", 1));
        assert_eq!(Portal::new("::1", 4420).to_string(), "[::1]:4420");
        assert_eq!(Portal::new("10.0.2.2", 4420).to_string(), "10.0.2.2:4420");
    }

    #[test]
    fn rounds() {
        // (wanted ports, present (port, handle), expected steps)
        type Case = (Vec<u16>, Vec<(u16, &'static str)>, Vec<Step<String>>);
        let cases: Vec<Case> = vec![
            // A first attach: every portal, primary first.
            (
                vec![3, 1, 2],
                vec![],
                vec![
                    Step::Connect(p(3)),
                    Step::Connect(p(1)),
                    Step::Connect(p(2)),
                ],
            ),
            // Nothing to do.
            (vec![1, 2, 3], vec![(2, "b"), (1, "a"), (3, "c")], vec![]),
            // A lost path (the kernel gave it up): connected again.
            (
                vec![1, 2, 3],
                vec![(1, "a"), (3, "c")],
                vec![Step::Connect(p(2))],
            ),
            // A replica moved from node 2 to node 4: connect 4, drop 2.
            (
                vec![1, 3, 4],
                vec![(1, "a"), (2, "b"), (3, "c")],
                vec![Step::Connect(p(4)), Step::Drop(path(2, "b"))],
            ),
            // Two paths to one portal: the second is dropped.
            (
                vec![1],
                vec![(1, "a"), (1, "a2")],
                vec![Step::Drop(path(1, "a2"))],
            ),
            // A portal listed twice is connected once.
            (vec![1, 1], vec![], vec![Step::Connect(p(1))]),
            // No portal listed: nothing changes (never every path dropped).
            (vec![], vec![(1, "a"), (2, "b")], vec![]),
            // The only live path goes to a portal no longer listed, the listed one's path is
            // reconnecting: nothing is dropped until a listed path is live.
            (
                vec![1, 4],
                vec![(1, "a-"), (2, "b")],
                vec![Step::Connect(p(4))],
            ),
            (
                vec![1, 4],
                vec![(1, "a"), (2, "b"), (4, "d-")],
                vec![Step::Drop(path(2, "b"))],
            ),
            // Of two paths to one portal the live one is kept, whatever the order.
            (
                vec![1],
                vec![(1, "a-"), (1, "a2")],
                vec![Step::Drop(path(1, "a-"))],
            ),
            // A path that is not live to a listed portal is left to the kernel.
            (vec![1, 2], vec![(1, "a"), (2, "b-")], vec![]),
        ];
        for (wanted, present, expected) in cases {
            let wanted: Vec<Portal> = wanted.into_iter().map(p).collect();
            let present: Vec<Path<String>> =
                present.into_iter().map(|(port, h)| path(port, h)).collect();
            assert_eq!(
                plan(&wanted, &present),
                expected,
                "wanted {wanted:?}, present {present:?}"
            );
        }
    }
}

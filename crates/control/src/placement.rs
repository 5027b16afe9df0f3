//! Replica placement: a volume's replicas go to distinct active, available nodes with healthy
//! cache, preferring the most free cache and then the fewest replicas already placed (load);
//! of those, the node that is primary of the fewest volumes comes first (the volume's primary),
//! so primaries spread over the nodes as replicas do. Ties break by name so placement is
//! deterministic.

/// What placement knows of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Node name.
    pub name: String,
    /// Whether it may take replicas (active, available, cache healthy).
    pub eligible: bool,
    /// Free cache bytes.
    pub free_cache: u64,
    /// Replicas it holds.
    pub replicas: u32,
    /// Volumes it is primary of.
    pub primaries: u32,
}

/// Why a volume cannot be placed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{want} replicas need {want} eligible nodes (active, available, cache healthy); {have} are"
)]
pub struct PlacementError {
    /// Replicas wanted.
    pub want: usize,
    /// Eligible nodes.
    pub have: usize,
}

/// Chooses `replicas` distinct nodes, excluding `exclude` (e.g. a failed replica's node).
pub fn place(
    nodes: &[Candidate],
    replicas: usize,
    exclude: &[&str],
) -> Result<Vec<String>, PlacementError> {
    let mut c: Vec<&Candidate> = nodes
        .iter()
        .filter(|n| n.eligible && !exclude.contains(&n.name.as_str()))
        .collect();
    if c.len() < replicas {
        return Err(PlacementError {
            want: replicas,
            have: c.len(),
        });
    }
    c.sort_by(|a, b| {
        b.free_cache
            .cmp(&a.free_cache)
            .then(a.replicas.cmp(&b.replicas))
            .then(a.name.cmp(&b.name))
    });
    let mut chosen: Vec<&Candidate> = c[..replicas].to_vec();
    // The first is the primary: the chosen node that serves the fewest volumes (a stable sort,
    // so ties keep the order above).
    if let Some(i) = (0..chosen.len()).min_by_key(|&i| (chosen[i].primaries, i)) {
        chosen[..=i].rotate_right(1);
    }
    Ok(chosen.iter().map(|n| n.name.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str, free: u64, replicas: u32) -> Candidate {
        Candidate {
            name: name.into(),
            eligible: true,
            free_cache: free,
            replicas,
            primaries: 0,
        }
    }

    /// Three equal nodes holding every volume: primaries go round, one each in turn.
    #[test]
    fn primaries_spread_over_the_nodes() {
        let mut nodes: Vec<Candidate> = (1..=3).map(|i| n(&format!("node-{i}"), 100, 0)).collect();
        let mut firsts = Vec::new();
        for _ in 0..6 {
            let placed = place(&nodes, 3, &[]).unwrap();
            for name in &placed {
                nodes.iter_mut().find(|x| &x.name == name).unwrap().replicas += 1;
            }
            nodes
                .iter_mut()
                .find(|x| x.name == placed[0])
                .unwrap()
                .primaries += 1;
            firsts.push(placed[0].clone());
        }
        assert_eq!(
            firsts,
            ["node-1", "node-2", "node-3", "node-1", "node-2", "node-3"]
        );
    }

    #[test]
    fn distinct_nodes_most_free_cache_then_least_load() {
        let nodes = [
            n("a", 10, 5),
            n("b", 30, 9),
            n("c", 20, 1),
            n("d", 20, 0),
            n("e", 5, 0),
        ];
        assert_eq!(place(&nodes, 3, &[]).unwrap(), ["b", "d", "c"]);
        assert_eq!(place(&nodes, 3, &["b"]).unwrap(), ["d", "c", "a"]);
    }

    #[test]
    fn balanced_when_placing_many_volumes() {
        // Equal nodes: placing volumes one after another spreads them evenly.
        let mut nodes: Vec<Candidate> = (0..4).map(|i| n(&format!("n{i}"), 100, 0)).collect();
        for _ in 0..8 {
            for name in place(&nodes, 3, &[]).unwrap() {
                nodes.iter_mut().find(|x| x.name == name).unwrap().replicas += 1;
            }
        }
        let counts: Vec<u32> = nodes.iter().map(|x| x.replicas).collect();
        assert_eq!(counts.iter().sum::<u32>(), 24);
        assert!(counts.iter().all(|c| *c == 6), "{counts:?}");
    }

    #[test]
    fn too_few_eligible_nodes() {
        let mut nodes = vec![n("a", 1, 0), n("b", 1, 0), n("c", 1, 0)];
        nodes[2].eligible = false;
        let e = place(&nodes, 3, &[]).unwrap_err();
        assert_eq!(e, PlacementError { want: 3, have: 2 });
        assert_eq!(
            e.to_string(),
            "3 replicas need 3 eligible nodes (active, available, cache healthy); 2 are"
        );
    }
}

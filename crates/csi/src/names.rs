//! CSI names and ids as the cluster's: a valid volume or snapshot name is kept, another becomes
//! `csi-` and a UUID (v5) derived from it, the same on every retry; a snapshot's id is
//! `<volume id>@<snapshot name>`.

/// Whether `n` is a valid name in the cluster (1-64 of `A-Z a-z 0-9 - _ .`, not `.` or `..`,
/// not starting with `.`).
pub fn valid(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with('.')
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The cluster's name for CSI name `csi`.
pub fn cluster_name(csi: &str) -> String {
    if valid(csi) {
        csi.to_string()
    } else {
        let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, csi.as_bytes());
        format!("csi-{id}")
    }
}

/// A snapshot's CSI id.
pub fn snapshot_id(volume: &str, snapshot: &str) -> String {
    format!("{volume}@{snapshot}")
}

/// A snapshot's volume id and name, from its CSI id.
pub fn parse_snapshot_id(id: &str) -> Option<(&str, &str)> {
    id.split_once('@')
        .filter(|(v, s)| !v.is_empty() && !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_or_derived_the_same_way() {
        assert_eq!(cluster_name("pvc-0a1b"), "pvc-0a1b");
        let long = "x".repeat(65);
        let a = cluster_name(&long);
        assert!(a.starts_with("csi-") && a.len() == 40, "{a}");
        assert_eq!(a, cluster_name(&long));
        assert_ne!(cluster_name("a b"), cluster_name("a c"));
        assert!(valid(&cluster_name("a/b")));
        assert_eq!(parse_snapshot_id("v1@s1"), Some(("v1", "s1")));
        assert_eq!(parse_snapshot_id(&snapshot_id("v", "s")), Some(("v", "s")));
        assert_eq!(parse_snapshot_id("v1"), None);
        assert_eq!(parse_snapshot_id("@s"), None);
    }
}

//! The host's kernel interfaces as files: `/sys`, `/proc`, `/dev` and `/etc`, under a root
//! that is `/` on a host and a temporary tree in tests.

use std::path::{Path, PathBuf};

/// Where the host's file system starts.
#[derive(Clone, Debug)]
pub struct Root(PathBuf);

impl Default for Root {
    fn default() -> Self {
        Self(PathBuf::from("/"))
    }
}

impl Root {
    /// A root at `dir` (tests).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self(dir.into())
    }

    /// `rel` (such as `sys/class/nvme`) under the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel.trim_start_matches('/'))
    }

    /// The trimmed contents of the attribute `rel`, or `None` when it cannot be read.
    pub fn attr(&self, rel: &str) -> Option<String> {
        read_attr(&self.path(rel))
    }

    /// The names in directory `rel`, sorted; empty when it does not exist.
    pub fn list(&self, rel: &str) -> Vec<String> {
        list_dir(&self.path(rel))
    }
}

/// The trimmed contents of `p`, or `None` when it cannot be read.
pub fn read_attr(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The names in directory `p`, sorted; empty when it does not exist.
pub fn list_dir(p: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(p)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether `name` is `prefix` followed by one or more digits.
pub fn numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Writes `s` to `rel` under `root`, making its directories (tests' fake trees).
#[cfg(test)]
pub fn write_file(root: &Path, rel: &str, s: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

//! Failure injection for tests. `ALCUBIERRE_FAILPOINTS` names a directory; a failpoint fires
//! while a file of its name exists there, so a test turns it on and off while the node runs.
//! Without the variable nothing fires.
//!
//! Failpoints of a node are named `<point>@<node>`, so the nodes of one test share the
//! directory: `converge-panic@<node>` (the node agent's volume task panics).

use std::path::PathBuf;
use std::sync::OnceLock;

/// Whether failpoint `name` is on.
pub fn on(name: &str) -> bool {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| std::env::var_os("ALCUBIERRE_FAILPOINTS").map(PathBuf::from))
        .as_ref()
        .is_some_and(|d| d.join(name).exists())
}

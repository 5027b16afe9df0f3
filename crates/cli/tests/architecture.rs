//! ARCHITECTURE.md's dependency rules, checked on the source: each crate depends only on the
//! Alcubierre crates its row allows, and inside a crate no two modules import each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Alcubierre crates each crate may depend on (ARCHITECTURE.md, "Dependency rules").
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        ("types", &[][..]),
        ("io", &[][..]),
        ("store", &[][..]),
        ("api", &[][..]),
        ("block", &["types"][..]),
        ("backend", &["io", "types"][..]),
        ("rbd", &["backend", "types"][..]),
        ("cache", &["block", "io", "backend", "types"][..]),
        ("replica", &["block", "cache", "types"][..]),
        ("nvmf", &["block", "types"][..]),
        ("iscsi", &["block", "types"][..]),
        ("control", &["api", "store", "backend", "rbd", "types"][..]),
        ("host", &["api"][..]),
        ("csi", &["api", "host"][..]),
        (
            "node",
            &[
                "types", "block", "io", "backend", "cache", "replica", "control", "nvmf", "iscsi",
                "store", "rbd",
            ][..],
        ),
    ])
}

/// The `alcubierre-*` packages a Cargo.toml's `[dependencies]` names, by directory name.
fn dependencies(manifest: &str) -> BTreeSet<String> {
    let packages = BTreeMap::from([("storage-node", "node")]);
    let mut out = BTreeSet::new();
    let mut on = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            on = line == "[dependencies]";
            continue;
        }
        if let Some(rest) = line.strip_prefix("alcubierre-") {
            if on {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                let dir = packages
                    .get(name.as_str())
                    .map_or(name.clone(), |d| d.to_string());
                out.insert(dir);
            }
        }
    }
    out
}

#[test]
fn crates_depend_only_down_the_data_flow() {
    for (krate, may) in allowed() {
        let manifest = std::fs::read_to_string(crates_dir().join(krate).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{krate}/Cargo.toml: {e}"));
        let deps = dependencies(&manifest);
        let extra: Vec<&String> = deps.iter().filter(|d| !may.contains(&d.as_str())).collect();
        assert!(
            extra.is_empty(),
            "{krate} depends on {extra:?}, which ARCHITECTURE.md's rules do not allow"
        );
    }
}

/// Each module of a crate's `src` (by path, `a::b`) and its source without comments or tests.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut name = rel.to_string_lossy().replace('/', "::");
            if let Some(n) = name.strip_suffix("::mod") {
                name = n.to_string();
            }
            if name == "lib" || name == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let code: String = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            out.insert(name, code);
        }
    }
    out
}

/// The modules of `mods` that `code` (module `me`) names as `crate::m`.
fn imports(me: &str, code: &str, mods: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let parts: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        // The longest module path it names.
        for n in (1..=parts.len().min(2)).rev() {
            let m = parts[..n].join("::");
            if mods.contains_key(&m) {
                if m != me && !me.starts_with(&format!("{m}::")) {
                    out.insert(m);
                }
                break;
            }
        }
    }
    out
}

#[test]
fn no_two_modules_of_a_crate_import_each_other() {
    let mut circles = Vec::new();
    for e in std::fs::read_dir(crates_dir()).unwrap() {
        let src = e.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let mods = modules(&src);
        let graph: BTreeMap<&String, BTreeSet<String>> = mods
            .iter()
            .map(|(m, code)| (m, imports(m, code, &mods)))
            .collect();
        for (a, to) in &graph {
            for b in to {
                if a.as_str() < b.as_str() && graph.get(b).is_some_and(|t| t.contains(*a)) {
                    circles.push(format!("{}: {a} <-> {b}", src.display()));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "modules importing each other: {circles:#?}"
    );
}

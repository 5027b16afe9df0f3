//! The Kubernetes manifests (`integrations/kubernetes`) parsed and cross-checked against the
//! driver and each other: every object's kind and API version; the driver's name wherever it
//! is named; StorageClass and VolumeAttributesClass parameters as the driver parses them; each
//! workload's service account, volumes, mounts, ConfigMap and Secret keys; the socket paths the
//! sidecars, the kubelet's registration and the driver agree on; the driver's flags as its binary
//! accepts them; every permission each sidecar needs, granted through the bindings; the images
//! pinned and the same in the kustomization. (No Kubernetes API server runs here: this is the
//! check the manifests get short of applying them.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../integrations/kubernetes")
}

/// Every document of `file` (relative to the manifests' directory).
fn load(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{file}: not YAML: {e}"))
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path}: not a string in {v:?}"))
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

fn seq<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    get(v, path).as_sequence().map_or(&[], Vec::as_slice)
}

/// The objects the kustomization applies, and the examples, by file.
fn all() -> Vec<(String, Value)> {
    let mut files: Vec<String> = seq(&load("kustomization.yaml")[0], "resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    for e in std::fs::read_dir(dir().join("examples")).unwrap() {
        files.push(format!(
            "examples/{}",
            e.unwrap().file_name().to_string_lossy()
        ));
    }
    files
        .into_iter()
        .flat_map(|f| load(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

const NAMESPACE: &str = "alcubierre-csi";

#[test]
fn every_object_has_a_known_kind_version_and_name() {
    let versions = BTreeMap::from([
        ("Namespace", "v1"),
        ("ConfigMap", "v1"),
        ("Secret", "v1"),
        ("ServiceAccount", "v1"),
        ("PersistentVolumeClaim", "v1"),
        ("Pod", "v1"),
        ("CSIDriver", "storage.k8s.io/v1"),
        ("StorageClass", "storage.k8s.io/v1"),
        ("VolumeAttributesClass", "storage.k8s.io/v1"),
        ("VolumeSnapshotClass", "snapshot.storage.k8s.io/v1"),
        ("VolumeSnapshot", "snapshot.storage.k8s.io/v1"),
        ("Deployment", "apps/v1"),
        ("DaemonSet", "apps/v1"),
        ("ClusterRole", "rbac.authorization.k8s.io/v1"),
        ("ClusterRoleBinding", "rbac.authorization.k8s.io/v1"),
        ("Role", "rbac.authorization.k8s.io/v1"),
        ("RoleBinding", "rbac.authorization.k8s.io/v1"),
    ]);
    let cluster_scoped = [
        "Namespace",
        "CSIDriver",
        "StorageClass",
        "VolumeAttributesClass",
        "VolumeSnapshotClass",
        "ClusterRole",
        "ClusterRoleBinding",
    ];
    let objects = all();
    assert!(objects.len() > 20, "{} objects", objects.len());
    for (file, o) in &objects {
        let kind = s(o, "kind");
        let want = versions
            .get(kind)
            .unwrap_or_else(|| panic!("{file}: unexpected kind {kind}"));
        assert_eq!(s(o, "apiVersion"), *want, "{file}: {kind}");
        assert!(!s(o, "metadata.name").is_empty(), "{file}: {kind} unnamed");
        // The driver's own objects live in its namespace; the examples in the user's.
        if !file.starts_with("examples/") && !cluster_scoped.contains(&kind) {
            assert_eq!(s(o, "metadata.namespace"), NAMESPACE, "{file}: {kind}");
        }
    }
    // Kinds and names are unique.
    let mut seen = BTreeSet::new();
    for (file, o) in &objects {
        let key = (
            s(o, "kind").to_string(),
            o["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            s(o, "metadata.name").to_string(),
        );
        assert!(seen.insert(key.clone()), "{file}: {key:?} twice");
    }
}

#[test]
fn the_driver_is_named_alike_everywhere_and_its_parameters_parse() {
    let name = alcubierre_csi::DRIVER_NAME;
    let mut classes = 0;
    for (file, o) in all() {
        match s(&o, "kind") {
            "CSIDriver" => {
                assert_eq!(s(&o, "metadata.name"), name, "{file}");
                // ControllerPublishVolume registers the node's host before staging.
                assert_eq!(o["spec"]["attachRequired"], Value::Bool(true), "{file}");
            }
            "StorageClass" => {
                classes += 1;
                assert_eq!(s(&o, "provisioner"), name, "{file}");
                let params: std::collections::HashMap<String, String> =
                    serde_yaml_ng::from_value(o["parameters"].clone()).unwrap();
                let (ctx, _) = alcubierre_csi::requests::context(&params)
                    .unwrap_or_else(|e| panic!("{file}: {}", e.message()));
                assert!(ctx.contains_key("protocol"), "{file}");
                if let Some(fs) = params.get("csi.storage.k8s.io/fstype") {
                    assert!(
                        ["ext4", "xfs"].contains(&fs.as_str()),
                        "{file}: fstype {fs}"
                    );
                }
            }
            "VolumeSnapshotClass" => assert_eq!(s(&o, "driver"), name, "{file}"),
            "VolumeAttributesClass" => {
                assert_eq!(s(&o, "driverName"), name, "{file}");
                let params: std::collections::HashMap<String, String> =
                    serde_yaml_ng::from_value(o["parameters"].clone()).unwrap();
                let qos = alcubierre_csi::requests::mutable_qos(&params)
                    .unwrap_or_else(|e| panic!("{file}: {}", e.message()));
                assert!(qos.is_some(), "{file}: no qos");
            }
            _ => {}
        }
    }
    assert!(
        classes >= 2,
        "the examples give a StorageClass per protocol"
    );
}

/// A workload's pod template with the file it came from.
fn pods() -> Vec<(String, Value)> {
    all()
        .into_iter()
        .filter(|(_, o)| ["Deployment", "DaemonSet"].contains(&s(o, "kind")))
        .map(|(f, o)| (format!("{f} {}", s(&o, "metadata.name")), o))
        .collect()
}

fn arg<'a>(c: &'a Value, flag: &str) -> Option<&'a str> {
    seq(c, "args")
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
}

#[test]
fn workloads_agree_on_accounts_volumes_sockets_and_references() {
    let objects = all();
    let exists = |kind: &str, name: &str| {
        objects
            .iter()
            .any(|(_, o)| s(o, "kind") == kind && s(o, "metadata.name") == name)
    };
    let config: BTreeMap<(String, String), Vec<String>> = objects
        .iter()
        .filter(|(_, o)| ["ConfigMap", "Secret"].contains(&s(o, "kind")))
        .map(|(_, o)| {
            let data = if s(o, "kind") == "Secret" {
                &o["stringData"]
            } else {
                &o["data"]
            };
            let keys = data
                .as_mapping()
                .map(|m| m.keys().map(|k| k.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            (
                (s(o, "kind").to_string(), s(o, "metadata.name").to_string()),
                keys,
            )
        })
        .collect();
    let pods = pods();
    assert_eq!(
        pods.len(),
        2,
        "a controller Deployment and a node DaemonSet"
    );
    for (what, w) in &pods {
        let spec = get(w, "spec.template.spec");
        let labels = get(w, "spec.template.metadata.labels");
        for (k, v) in get(w, "spec.selector.matchLabels").as_mapping().unwrap() {
            assert_eq!(&labels[k], v, "{what}: the selector matches the template");
        }
        assert!(
            exists("ServiceAccount", s(spec, "serviceAccountName")),
            "{what}: no service account"
        );
        let volumes: BTreeMap<&str, &Value> = seq(spec, "volumes")
            .iter()
            .map(|v| (s(v, "name"), v))
            .collect();
        let mut mounted = BTreeSet::new();
        let mut sockets = BTreeSet::new();
        for c in seq(spec, "containers") {
            let image = s(c, "image");
            let (repo, tag) = image.split_once(':').unwrap_or((image, ""));
            assert!(
                !tag.is_empty() && tag != "latest",
                "{what}: {image} not pinned"
            );
            assert!(
                !repo.split('/').next().unwrap().contains('.'),
                "{what}: {image}: the registry is the operator's (kustomization images)"
            );
            let mounts: BTreeMap<&str, &str> = seq(c, "volumeMounts")
                .iter()
                .map(|m| (s(m, "mountPath"), s(m, "name")))
                .collect();
            for name in mounts.values() {
                assert!(volumes.contains_key(name), "{what}: no volume {name}");
                mounted.insert(*name);
            }
            // Where each container finds the driver's socket, as a volume and a file name.
            let socket = arg(c, "--csi-address").or_else(|| {
                arg(c, "--endpoint").map(|e| e.strip_prefix("unix://").expect("a unix:// endpoint"))
            });
            if let Some(path) = socket {
                let (d, _) = path.rsplit_once('/').unwrap();
                let vol = mounts
                    .get(d)
                    .unwrap_or_else(|| panic!("{what}: {path} is in no mounted volume"));
                sockets.insert((vol.to_string(), path.to_string()));
            }
            for e in seq(c, "env") {
                for (kind, key) in [
                    ("ConfigMap", "valueFrom.configMapKeyRef"),
                    ("Secret", "valueFrom.secretKeyRef"),
                ] {
                    let r = get(e, key);
                    if r.is_mapping() {
                        let keys = config
                            .get(&(kind.to_string(), s(r, "name").to_string()))
                            .unwrap_or_else(|| panic!("{what}: no {kind} {}", s(r, "name")));
                        assert!(keys.iter().any(|k| k == s(r, "key")), "{what}: {e:?}");
                    }
                }
            }
            if let Some(port) = arg(c, "--http-endpoint") {
                // The liveness probe serves the driver container's healthz port.
                let port: u64 = port.trim_start_matches(':').parse().unwrap();
                let driver = &seq(spec, "containers")[0];
                assert_eq!(s(driver, "name"), "alcubierre-csi");
                let declared = seq(driver, "ports")
                    .iter()
                    .find(|p| p["name"] == "healthz")
                    .unwrap_or_else(|| panic!("{what}: no healthz port"));
                assert_eq!(declared["containerPort"].as_u64(), Some(port), "{what}");
            }
        }
        for name in volumes.keys() {
            assert!(
                mounted.contains(name),
                "{what}: volume {name} mounted nowhere"
            );
        }
        assert_eq!(
            sockets.len(),
            1,
            "{what}: every container names the same socket: {sockets:?}"
        );
    }
}

#[test]
fn the_node_plugin_reaches_the_hosts_devices_and_registers_with_the_kubelet() {
    let (what, ds) = pods()
        .into_iter()
        .find(|(_, o)| s(o, "kind") == "DaemonSet")
        .unwrap();
    let spec = get(&ds, "spec.template.spec");
    assert_eq!(
        spec["hostNetwork"],
        Value::Bool(true),
        "{what}: iscsid's abstract socket"
    );
    assert_eq!(
        spec["hostIPC"],
        Value::Bool(true),
        "{what}: device-mapper's udev cookies"
    );
    let host_path = |name: &str| {
        seq(spec, "volumes")
            .iter()
            .find(|v| v["name"] == name)
            .map(|v| s(v, "hostPath.path").to_string())
            .unwrap_or_else(|| panic!("{what}: no volume {name}"))
    };
    let containers = seq(spec, "containers");
    let driver = containers
        .iter()
        .find(|c| c["name"] == "alcubierre-csi")
        .unwrap();
    assert_eq!(driver["securityContext"]["privileged"], Value::Bool(true));
    assert_eq!(arg(driver, "--mode"), Some("node"));
    let mount = |path: &str| {
        seq(driver, "volumeMounts")
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("{what}: {path} not mounted"))
    };
    // Mounts made in the container reach the kubelet's pods.
    assert_eq!(
        s(mount("/var/lib/kubelet"), "mountPropagation"),
        "Bidirectional"
    );
    assert_eq!(
        host_path(s(mount("/var/lib/kubelet"), "name")),
        "/var/lib/kubelet"
    );
    // The agent's state survives a restarted plugin on the host's disk.
    let state = arg(driver, "--state-dir").unwrap();
    assert_eq!(host_path(s(mount(state), "name")), state);
    for p in [
        "/dev",
        "/sys",
        "/etc/nvme",
        "/etc/iscsi",
        "/etc/multipath",
        "/var/lib/iscsi",
    ] {
        assert_eq!(
            host_path(s(mount(p), "name")),
            p,
            "{what}: {p} is the host's"
        );
    }
    assert!(arg(driver, "--node-id").unwrap().contains("NODE_NAME"));
    let registrar = containers
        .iter()
        .find(|c| s(c, "image").starts_with("csi-node-driver-registrar:"))
        .unwrap();
    // The kubelet reaches the socket at the host path of the volume it is in.
    let sock = arg(driver, "--endpoint")
        .unwrap()
        .strip_prefix("unix://")
        .unwrap();
    let (d, file) = sock.rsplit_once('/').unwrap();
    let plugin_dir = host_path(s(mount(d), "name"));
    assert_eq!(
        plugin_dir,
        format!("/var/lib/kubelet/plugins/{}", alcubierre_csi::DRIVER_NAME)
    );
    assert_eq!(
        arg(registrar, "--kubelet-registration-path"),
        Some(format!("{plugin_dir}/{file}").as_str())
    );
    let reg_mount = seq(registrar, "volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == "/registration")
        .unwrap();
    assert_eq!(
        host_path(s(reg_mount, "name")),
        "/var/lib/kubelet/plugins_registry"
    );
}

#[test]
fn the_driver_accepts_every_flag_the_manifests_give_it() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_alcubierre-csi"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for (what, w) in pods() {
        let c = &seq(get(&w, "spec.template.spec"), "containers")[0];
        assert_eq!(
            s(c, "name"),
            "alcubierre-csi",
            "{what}: the driver comes first"
        );
        for a in seq(c, "args").iter().filter_map(Value::as_str) {
            let flag = a.split('=').next().unwrap();
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{what}: alcubierre-csi has no {flag}:\n{help}"
            );
        }
        let mode = arg(c, "--mode").unwrap();
        let want = if s(&w, "kind") == "Deployment" {
            "controller"
        } else {
            "node"
        };
        assert_eq!(mode, want, "{what}");
        // The API and token come from the environment the binary reads.
        let env: Vec<&str> = seq(c, "env").iter().map(|e| s(e, "name")).collect();
        for var in ["ALCUBIERRE_API", "ALCUBIERRE_TOKEN"] {
            assert!(env.contains(&var), "{what}: no {var}");
            assert!(help.contains(var), "alcubierre-csi does not read {var}");
        }
    }
}

/// `(apiGroup, resource, verb)` each sidecar needs, by image name, from kubernetes-csi's
/// sidecars' own RBAC and code at the pinned versions (leader election's leases in the
/// namespace for all of them). A hand-kept table: a new sidecar version's needs are added here
/// when it is pinned.
fn needs(image: &str) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut n: Vec<(&str, &str, &str)> = match image {
        "csi-provisioner" => vec![
            ("", "persistentvolumes", "create"),
            ("", "persistentvolumes", "delete"),
            ("", "persistentvolumes", "watch"),
            ("", "persistentvolumeclaims", "update"),
            ("", "persistentvolumeclaims", "watch"),
            ("storage.k8s.io", "storageclasses", "get"),
            ("", "events", "create"),
            ("storage.k8s.io", "csinodes", "get"),
            ("", "nodes", "get"),
            ("snapshot.storage.k8s.io", "volumesnapshots", "get"),
            ("snapshot.storage.k8s.io", "volumesnapshotcontents", "get"),
            ("storage.k8s.io", "volumeattachments", "list"),
            ("storage.k8s.io", "volumeattributesclasses", "get"),
        ],
        "csi-attacher" => vec![
            ("", "persistentvolumes", "patch"),
            ("storage.k8s.io", "volumeattachments", "watch"),
            ("storage.k8s.io", "volumeattachments", "patch"),
            ("storage.k8s.io", "volumeattachments/status", "patch"),
            ("storage.k8s.io", "csinodes", "get"),
        ],
        "csi-resizer" => vec![
            ("", "persistentvolumes", "patch"),
            ("", "persistentvolumeclaims", "watch"),
            ("", "persistentvolumeclaims/status", "patch"),
            ("", "pods", "list"),
            ("", "events", "create"),
            ("storage.k8s.io", "volumeattributesclasses", "get"),
        ],
        "csi-snapshotter" => vec![
            ("snapshot.storage.k8s.io", "volumesnapshotclasses", "get"),
            (
                "snapshot.storage.k8s.io",
                "volumesnapshotcontents",
                "update",
            ),
            (
                "snapshot.storage.k8s.io",
                "volumesnapshotcontents/status",
                "update",
            ),
            ("", "events", "create"),
            (
                "groupsnapshot.storage.k8s.io",
                "volumegroupsnapshotclasses",
                "watch",
            ),
            (
                "groupsnapshot.storage.k8s.io",
                "volumegroupsnapshotcontents",
                "watch",
            ),
            (
                "groupsnapshot.storage.k8s.io",
                "volumegroupsnapshotcontents",
                "update",
            ),
        ],
        _ => return vec![],
    };
    n.extend([
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "update"),
    ]);
    n
}

#[test]
fn every_sidecar_is_granted_what_it_needs() {
    let objects = all();
    let (_, deploy) = objects
        .iter()
        .find(|(_, o)| s(o, "kind") == "Deployment")
        .unwrap();
    let spec = get(deploy, "spec.template.spec");
    let account = s(spec, "serviceAccountName");
    // The rules bound to the controller's account.
    let mut granted = BTreeSet::new();
    for (_, b) in objects
        .iter()
        .filter(|(_, o)| ["ClusterRoleBinding", "RoleBinding"].contains(&s(o, "kind")))
    {
        if !seq(b, "subjects")
            .iter()
            .any(|x| s(x, "kind") == "ServiceAccount" && s(x, "name") == account)
        {
            continue;
        }
        let (kind, name) = (s(b, "roleRef.kind"), s(b, "roleRef.name"));
        let role = objects
            .iter()
            .find(|(_, o)| s(o, "kind") == kind && s(o, "metadata.name") == name)
            .map(|(_, o)| o)
            .unwrap_or_else(|| panic!("binding {}: no {kind} {name}", s(b, "metadata.name")));
        for r in seq(role, "rules") {
            for g in seq(r, "apiGroups") {
                for res in seq(r, "resources") {
                    for v in seq(r, "verbs") {
                        granted.insert((
                            g.as_str().unwrap().to_string(),
                            res.as_str().unwrap().to_string(),
                            v.as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
        }
    }
    let mut sidecars = 0;
    for c in seq(spec, "containers") {
        let image = s(c, "image").split(':').next().unwrap();
        let want = needs(image);
        if want.is_empty() {
            continue;
        }
        sidecars += 1;
        assert!(
            seq(c, "args").iter().any(|a| a == "--leader-election"),
            "{image}: two replicas need leader election"
        );
        for (g, r, v) in want {
            assert!(
                granted.contains(&(g.to_string(), r.to_string(), v.to_string())),
                "{image} needs {v} on {g}/{r}, not granted to {account}"
            );
        }
    }
    assert_eq!(
        sidecars, 4,
        "provisioner, attacher, resizer and snapshotter"
    );
}

#[test]
fn the_kustomization_pins_the_images_the_workloads_use() {
    let k = &load("kustomization.yaml")[0];
    for r in seq(k, "resources") {
        assert!(dir().join(r.as_str().unwrap()).exists(), "{r:?}");
    }
    let pinned: BTreeMap<&str, &str> = seq(k, "images")
        .iter()
        .map(|i| (s(i, "name"), s(i, "newTag")))
        .collect();
    let mut used = BTreeMap::new();
    for (what, w) in pods() {
        for c in seq(get(&w, "spec.template.spec"), "containers") {
            let (name, tag) = s(c, "image").split_once(':').unwrap();
            if let Some(old) = used.insert(name.to_string(), tag.to_string()) {
                assert_eq!(old, tag, "{what}: {name} at two versions");
            }
        }
    }
    let used: BTreeMap<&str, &str> = used.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        pinned, used,
        "kustomization.yaml's images and the workloads' differ"
    );
    // The driver's image is this version.
    assert_eq!(used["alcubierre-csi"], env!("CARGO_PKG_VERSION"));
}

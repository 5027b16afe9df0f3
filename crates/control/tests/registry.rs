//! Nodes in the metadata store, on the embedded store and on a real etcd: registration,
//! activation through the rules, and heartbeats that flip the service state when a node stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alcubierre_control::activation::{ActivationError, Licence};
use alcubierre_control::model::{
    Activation, ActivationEvent, CacheDevice, CacheState, Node, Service,
};
use alcubierre_control::registry::{
    activate, apply, finish_activation, nodes, register, service_states, Heartbeat, RegistryError,
};
use alcubierre_store::testing::EtcdServer;
use alcubierre_store::{MemStore, Store};

fn node(name: &str, size: u64) -> Node {
    Node {
        name: name.into(),
        management: "127.0.0.1:8080".into(),
        replica: "127.0.0.1:7000".into(),
        cache: vec![CacheDevice {
            path: "/dev/nvme0n1".into(),
            size,
            state: CacheState::Healthy,
        }],
        activation: Activation::Registered,
        draining: false,
        cpu_threads: None,
        nvme: None,
        portals: Vec::new(),
        iscsi_portals: Vec::new(),
    }
}

const T: u64 = 3_200_000_000_000;
const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_secs(2);

async fn scenario(store: Arc<dyn Store>) {
    let s = &*store;
    let mut beats = Vec::new();
    for i in 1..=4 {
        register(s, &node(&format!("node-{i}"), T)).await.unwrap();
        beats.push(
            Heartbeat::start(store.clone(), &format!("node-{i}"), INTERVAL, TIMEOUT)
                .await
                .unwrap(),
        );
    }
    let states = service_states(s).await.unwrap();
    assert!(
        states.values().all(|v| *v == Service::Available),
        "{states:?}"
    );

    // Two nodes are not enough for the first activation; the refusal says why.
    let two = ["node-1".to_string(), "node-2".to_string()];
    let e = activate(s, &two, &Licence::default(), 0).await.unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Activation(ActivationError::TooFewNodes { have: 2 })
        ),
        "{e}"
    );
    // Three are.
    let three: Vec<String> = (1..=3).map(|i| format!("node-{i}")).collect();
    activate(s, &three, &Licence::default(), 0).await.unwrap();
    for n in &three {
        let rec = nodes(s).await.unwrap()[n].0.clone();
        assert_eq!(rec.activation, Activation::Activating);
        assert_eq!(
            finish_activation(s, &rec).await.unwrap().activation,
            Activation::Active
        );
    }
    // Re-registering (a restart) keeps the activation state.
    let again = register(s, &node("node-1", T)).await.unwrap();
    assert_eq!(again.activation, Activation::Active);
    // The licence caps the cluster at 3 nodes.
    let e = activate(
        s,
        &["node-4".to_string()],
        &Licence {
            max_nodes: Some(3),
            ..Licence::default()
        },
        0,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Activation(ActivationError::LicenceNodes { .. })
        ),
        "{e}"
    );
    // An unknown node, and a transition the table refuses.
    assert!(matches!(
        activate(s, &["node-9".to_string()], &Licence::default(), 0).await,
        Err(RegistryError::UnknownNode(_))
    ));
    assert!(matches!(
        apply(s, "node-4", ActivationEvent::Deactivate).await,
        Err(RegistryError::Transition { .. })
    ));

    // node-2 stops heartbeating (as if killed): unavailable within the timeout (+ one interval
    // of slack and the store's lease granularity), the others stay available.
    let stopped = Instant::now();
    drop(beats.remove(1));
    loop {
        let st = service_states(s).await.unwrap();
        if st["node-2"] == Service::Unavailable {
            assert_eq!(st["node-1"], Service::Available);
            assert_eq!(st["node-3"], Service::Available);
            break;
        }
        assert!(
            stopped.elapsed() < TIMEOUT + Duration::from_secs(3),
            "node-2 still available"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_millis(1000),
        "expired too early: {took:?}"
    );
    // A registered node without heartbeats cannot be activated.
    register(s, &node("node-5", T)).await.unwrap();
    let e = activate(s, &["node-5".to_string()], &Licence::default(), 0)
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::Activation(ActivationError::Unavailable { ref node }) if node == "node-5"),
        "{e}"
    );
    // Deactivation goes through the table.
    assert_eq!(
        apply(s, "node-1", ActivationEvent::Deactivate)
            .await
            .unwrap()
            .activation,
        Activation::Deactivated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_the_embedded_store() {
    scenario(Arc::new(MemStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_etcd() {
    let e = EtcdServer::start().unwrap();
    scenario(Arc::new(e.connect().await)).await;
}

/// Multipath hosts tell a volume's paths apart by ANA group and controller id: a node whose
/// identity clashes with a registered node's is refused, naming both; re-registering itself is
/// fine.
#[tokio::test]
async fn a_node_with_another_nodes_ana_group_or_controller_ids_is_refused() {
    use alcubierre_control::model::NvmeIdentity;
    let store = MemStore::new();
    let id = |ana_group, cntlid_base| NvmeIdentity {
        ana_group,
        cntlid_base,
        cntlid_count: 1000,
    };
    let with = |name: &str, nvme| Node {
        nvme: Some(nvme),
        ..node(name, T)
    };
    register(&store, &with("node-1", id(1, 1000)))
        .await
        .unwrap();
    register(&store, &with("node-1", id(1, 1000)))
        .await
        .unwrap();
    let e = register(&store, &with("node-2", id(1, 2000)))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RegistryError::Clash { node, reason }
            if node == "node-2" && reason.contains("ana_group 1") && reason.contains("node-1")),
        "{e}"
    );
    let e = register(&store, &with("node-2", id(2, 1500)))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("overlap node node-1's 1000..2000"),
        "{e}"
    );
    register(&store, &with("node-2", id(2, 2000)))
        .await
        .unwrap();
    assert_eq!(nodes(&store).await.unwrap().len(), 2);
}

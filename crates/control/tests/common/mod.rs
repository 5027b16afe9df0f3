//! Shared test setup: registered nodes with heartbeats on a store.

use std::sync::Arc;
use std::time::Duration;

use alcubierre_control::model::{Activation, CacheDevice, CacheState, Node};
use alcubierre_control::registry::{register, Heartbeat};
use alcubierre_store::Store;

/// A node with one healthy 2 TB cache device.
pub fn node(name: &str) -> Node {
    Node {
        name: name.into(),
        management: String::new(),
        replica: String::new(),
        cache: vec![CacheDevice {
            path: "/dev/nvme0n1".into(),
            size: 2_000_000_000_000,
            state: CacheState::Healthy,
        }],
        activation: Activation::Registered,
    }
}

/// Registers `node-1..=node-n` and starts their heartbeats.
pub async fn register_nodes(store: &Arc<dyn Store>, n: usize) -> Vec<Heartbeat> {
    let mut beats = Vec::new();
    for i in 1..=n {
        let name = format!("node-{i}");
        register(&**store, &node(&name)).await.unwrap();
        beats.push(
            Heartbeat::start(
                store.clone(),
                &name,
                Duration::from_millis(500),
                Duration::from_secs(5),
            )
            .await
            .unwrap(),
        );
    }
    beats
}

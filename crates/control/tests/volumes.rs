//! Volumes, QoS policies and hosts on the store: placement on distinct active nodes, unique
//! names, validation naming the field, grow-only resize, licence capacity, delete.

mod common;

use std::sync::Arc;

use alcubierre_control::activation::Licence;
use alcubierre_control::registry::Heartbeat;
use alcubierre_control::volumes::{
    create, delete, find, list, put_host, put_qos, resize, CreateVolume, Host, QosPolicy,
    VolumeError,
};
use alcubierre_store::Store;

async fn cluster(n: usize) -> (Arc<dyn Store>, Vec<Heartbeat>) {
    common::active_cluster(n, std::time::Duration::from_secs(5)).await
}

fn req(name: &str, size: u64) -> CreateVolume {
    CreateVolume {
        name: name.into(),
        size,
        block_size: Some(4096),
        qos: None,
        hosts: vec![],
        source: None,
    }
}

fn field(e: VolumeError) -> &'static str {
    match e {
        VolumeError::Invalid { field, .. } => field,
        e => panic!("expected an invalid field, got {e}"),
    }
}

#[tokio::test]
async fn create_places_three_distinct_balanced_replicas() {
    let (store, _b) = cluster(4).await;
    let s = &*store;
    let l = Licence::default();
    for i in 0..8 {
        let v = create(s, &req(&format!("v{i}"), 1 << 30), format!("id-{i}"), &l)
            .await
            .unwrap();
        let mut r = v.replicas.clone();
        r.sort();
        r.dedup();
        assert_eq!(r.len(), 3, "distinct nodes: {:?}", v.replicas);
    }
    let mut per_node = std::collections::BTreeMap::new();
    for v in list(s).await.unwrap().values() {
        for r in &v.replicas {
            *per_node.entry(r.clone()).or_insert(0) += 1;
        }
    }
    assert!(per_node.values().all(|c| *c == 6), "balanced: {per_node:?}");
    // Primaries spread too (they took node-1 every time when ties broke by name).
    let mut primaries = std::collections::BTreeMap::new();
    for v in list(s).await.unwrap().values() {
        *primaries.entry(v.primary.clone()).or_insert(0) += 1;
    }
    assert_eq!(
        primaries.len(),
        4,
        "every node is primary of some: {primaries:?}"
    );
    assert!(primaries.values().all(|c| *c == 2), "{primaries:?}");
    assert!(matches!(
        create(s, &req("v0", 1 << 30), "id-x".into(), &l).await,
        Err(VolumeError::NameTaken(_))
    ));
    assert_eq!(find(s, "v3").await.unwrap().0.id, "id-3");
}

#[tokio::test]
async fn validation_names_the_field() {
    let (store, _b) = cluster(3).await;
    let s = &*store;
    let l = Licence::default();
    assert_eq!(
        field(create(s, &req("", 4096), "a".into(), &l).await.unwrap_err()),
        "name"
    );
    assert_eq!(
        field(
            create(s, &req("bad name", 4096), "a".into(), &l)
                .await
                .unwrap_err()
        ),
        "name"
    );
    assert_eq!(
        field(
            create(s, &req("v", 1000), "a".into(), &l)
                .await
                .unwrap_err()
        ),
        "size"
    );
    let mut r = req("v", 4096);
    r.block_size = Some(1024);
    assert_eq!(
        field(create(s, &r, "a".into(), &l).await.unwrap_err()),
        "block_size"
    );
    let mut r = req("v", 4096);
    r.qos = Some("gold".into());
    assert_eq!(
        field(create(s, &r, "a".into(), &l).await.unwrap_err()),
        "qos"
    );
    put_qos(
        s,
        "gold",
        &QosPolicy {
            write_iops: Some(5000),
            write_bps: Some(100 << 20),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    create(s, &r, "a".into(), &l).await.unwrap();
    let mut r = req("w", 4096);
    r.hosts = vec!["h1".into()];
    assert_eq!(
        field(create(s, &r, "b".into(), &l).await.unwrap_err()),
        "hosts"
    );
    let host = |nqn: Option<&str>, chap: Option<(&str, &str)>| Host {
        name: "h1".into(),
        nqn: nqn.map(str::to_string),
        iqn: None,
        nvme_hostid: None,
        chap: chap.map(|(u, p)| (u.to_string(), p.to_string())),
        target_chap: None,
    };
    assert_eq!(
        field(put_host(s, &host(None, None)).await.unwrap_err()),
        "nqn"
    );
    for bad in [
        "not-a-uuid",
        "0A0A0A0A-0A0A-0A0A-0A0A-0A0A0A0A0A0A",
        "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a",
    ] {
        let h = Host {
            nvme_hostid: Some(bad.into()),
            ..host(Some("nqn.2014-08.org.example:h1"), None)
        };
        assert_eq!(
            field(put_host(s, &h).await.unwrap_err()),
            "nvme_hostid",
            "{bad}"
        );
    }
    assert_eq!(
        field(put_host(s, &host(Some("host1"), None)).await.unwrap_err()),
        "nqn"
    );
    assert_eq!(
        field(
            put_host(
                s,
                &host(Some("nqn.2014-08.org.example:h1"), Some(("u", "short")))
            )
            .await
            .unwrap_err()
        ),
        "chap"
    );
    // Mutual CHAP needs the host's own credentials, and a different secret.
    let mut mutual = host(Some("nqn.2014-08.org.example:h1"), None);
    mutual.target_chap = Some(("tgt".into(), "target-secret".into()));
    assert_eq!(
        field(put_host(s, &mutual).await.unwrap_err()),
        "target_chap"
    );
    mutual.chap = Some(("u".into(), "target-secret".into()));
    assert_eq!(
        field(put_host(s, &mutual).await.unwrap_err()),
        "target_chap"
    );
    mutual.target_chap = Some(("tgt".into(), "short".into()));
    assert_eq!(
        field(put_host(s, &mutual).await.unwrap_err()),
        "target_chap"
    );
    put_host(
        s,
        &host(
            Some("nqn.2014-08.org.example:h1"),
            Some(("u", "twelve-chars")),
        ),
    )
    .await
    .unwrap();
    create(s, &r, "b".into(), &l).await.unwrap();
    assert_eq!(
        field(
            put_qos(
                s,
                "zero",
                &QosPolicy {
                    read_iops: Some(0),
                    ..Default::default()
                }
            )
            .await
            .unwrap_err()
        ),
        "read_iops"
    );
}

#[tokio::test]
async fn placement_needs_three_active_nodes() {
    let (store, _b) = cluster(2).await;
    let e = create(&*store, &req("v", 4096), "a".into(), &Licence::default())
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "3 replicas need 3 eligible nodes (active, available, cache healthy); 0 are"
    );
}

#[tokio::test]
async fn resize_grows_only_and_licence_caps_capacity() {
    let (store, _b) = cluster(3).await;
    let s = &*store;
    let l = Licence {
        max_capacity: Some(3 << 30),
        ..Licence::default()
    };
    create(s, &req("v", 1 << 30), "a".into(), &l).await.unwrap();
    assert_eq!(resize(s, "v", 2 << 30, &l).await.unwrap().size, 2 << 30);
    assert_eq!(
        field(resize(s, "v", 1 << 30, &l).await.unwrap_err()),
        "size"
    );
    assert!(matches!(
        resize(s, "v", 4 << 30, &l).await,
        Err(VolumeError::LicenceCapacity { .. })
    ));
    assert!(matches!(
        create(s, &req("w", 2 << 30), "b".into(), &l).await,
        Err(VolumeError::LicenceCapacity { .. })
    ));
    delete(s, "v").await.unwrap();
    assert!(matches!(find(s, "v").await, Err(VolumeError::NotFound(_))));
    create(s, &req("v", 3 << 30), "c".into(), &l).await.unwrap();
}

#[tokio::test]
async fn only_the_current_primary_saves_reservations_over_what_it_read() {
    use alcubierre_control::volumes::{reservations, save_reservations, SaveError};
    let (store, _b) = cluster(3).await;
    let s = &*store;
    let v = create(s, &req("pr", 1 << 30), "id-pr".into(), &Licence::default())
        .await
        .unwrap();
    let other = v.replicas.iter().find(|n| **n != v.primary).unwrap();
    assert_eq!(reservations(s, &v.id).await.unwrap(), (None, None));
    // Another node is not the primary: fenced.
    assert!(matches!(
        save_reservations(s, &v.id, other, None, vec![1]).await,
        Err(SaveError::Fenced(_))
    ));
    let r1 = save_reservations(s, &v.id, &v.primary, None, vec![1])
        .await
        .unwrap();
    assert_eq!(
        reservations(s, &v.id).await.unwrap(),
        (Some(vec![1]), Some(r1))
    );
    // A primary whose view is out of date (it read no record, or an older one) cannot
    // overwrite what was written since.
    assert!(matches!(
        save_reservations(s, &v.id, &v.primary, None, vec![2]).await,
        Err(SaveError::Fenced(_))
    ));
    let r2 = save_reservations(s, &v.id, &v.primary, Some(r1), vec![2])
        .await
        .unwrap();
    assert!(matches!(
        save_reservations(s, &v.id, &v.primary, Some(r1), vec![3]).await,
        Err(SaveError::Fenced(_))
    ));
    // A change to the volume record (here a resize) is ridden out.
    resize(s, "pr", 2 << 30, &Licence::default()).await.unwrap();
    save_reservations(s, &v.id, &v.primary, Some(r2), vec![4])
        .await
        .unwrap();
    assert_eq!(reservations(s, &v.id).await.unwrap().0, Some(vec![4]));
    delete(s, "pr").await.unwrap();
    assert_eq!(reservations(s, &v.id).await.unwrap(), (None, None));
}

#[test]
fn a_fence_names_the_hosts_identities() {
    use alcubierre_control::attachments::Fence;
    let h = Host {
        name: "h".into(),
        nqn: Some("nqn.2014-08.org.nvmexpress:uuid:0B0B0B0B-0B0B-0B0B-0B0B-0B0B0B0B0B0B".into()),
        iqn: Some("iqn.2024-01.org.example:h".into()),
        nvme_hostid: Some("0a0a0a0a-0a0a-0a0a-0a0a-0a0a0a0a0a0a".into()),
        chap: None,
        target_chap: None,
    };
    let f = Fence::of("vol", &h);
    assert_eq!(f.key(), "fences/vol/h");
    assert_eq!(f.host_ids(), vec![[0x0a; 16], [0x0b; 16]]);
    assert_eq!(f.iqn.as_deref(), Some("iqn.2024-01.org.example:h"));
    // The same identifier twice is named once; an NQN of another form names none.
    let f = Fence::of(
        "vol",
        &Host {
            nqn: Some(
                "nqn.2014-08.org.nvmexpress:uuid:0a0a0a0a-0a0a-0a0a-0a0a-0a0a0a0a0a0a".into(),
            ),
            ..h.clone()
        },
    );
    assert_eq!(f.host_ids(), vec![[0x0a; 16]]);
    let f = Fence::of(
        "vol",
        &Host {
            nqn: Some("nqn.2014-08.org.example:h".into()),
            nvme_hostid: None,
            ..h
        },
    );
    assert!(f.host_ids().is_empty());
}

//! One conformance suite, run against the embedded store and against a real etcd server that the
//! test starts (Debian's `etcd-server`) and stops by PID. Both must behave the same.

use std::sync::Arc;
use std::time::Duration;

use alcubierre_store::election::{campaign, leader, resign};
use alcubierre_store::testing::EtcdServer;
use alcubierre_store::{Compare, EtcdStore, MemStore, Store, StoreError, Txn, TxnOp, WatchEvent};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn next_event(w: &mut alcubierre_store::Watch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("a watch event within 10 s")
        .expect("watch open")
        .expect("no watch error")
}

async fn kv_and_revisions(s: &dyn Store) {
    let r1 = s.put("t/kv/a", b"1".to_vec(), None).await.unwrap();
    let r2 = s.put("t/kv/b", b"2".to_vec(), None).await.unwrap();
    assert!(r2 > r1, "revisions increase");
    let r3 = s.put("t/kv/a", b"3".to_vec(), None).await.unwrap();
    let a = s.get("t/kv/a").await.unwrap().unwrap();
    assert_eq!(
        (a.value.as_slice(), a.create_revision, a.mod_revision),
        (&b"3"[..], r1, r3)
    );
    s.put("t/kvx", b"outside".to_vec(), None).await.unwrap();
    let l = s.list("t/kv/").await.unwrap();
    assert_eq!(
        l.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["t/kv/a", "t/kv/b"]
    );
    assert!(s.delete("t/kv/a").await.unwrap());
    assert!(!s.delete("t/kv/a").await.unwrap());
    assert_eq!(s.get("t/kv/a").await.unwrap(), None);
    assert!(s.revision().await.unwrap() > r3);
}

async fn transactions(s: &dyn Store) {
    let create = |v: &str| Txn {
        when: vec![Compare::Missing("t/txn/k".into())],
        then: vec![TxnOp::Put {
            key: "t/txn/k".into(),
            value: v.as_bytes().to_vec(),
            lease: None,
        }],
        otherwise: vec![TxnOp::Put {
            key: "t/txn/lost".into(),
            value: v.as_bytes().to_vec(),
            lease: None,
        }],
    };
    let r = s.txn(create("first")).await.unwrap();
    assert!(r.succeeded);
    let r2 = s.txn(create("second")).await.unwrap();
    assert!(!r2.succeeded, "create-if-missing happens once");
    assert_eq!(s.get("t/txn/k").await.unwrap().unwrap().value, b"first");
    assert_eq!(s.get("t/txn/lost").await.unwrap().unwrap().value, b"second");
    // Compare-and-swap on the modification revision.
    let cur = s.get("t/txn/k").await.unwrap().unwrap();
    let cas = |rev| Txn {
        when: vec![Compare::ModRevision("t/txn/k".into(), rev)],
        then: vec![TxnOp::Put {
            key: "t/txn/k".into(),
            value: b"swapped".to_vec(),
            lease: None,
        }],
        otherwise: vec![],
    };
    assert!(!s.txn(cas(cur.mod_revision - 1)).await.unwrap().succeeded);
    assert!(s.txn(cas(cur.mod_revision)).await.unwrap().succeeded);
    assert!(
        !s.txn(cas(cur.mod_revision)).await.unwrap().succeeded,
        "stale revision"
    );
    // Value comparison and a delete in one transaction.
    let r = s
        .txn(Txn {
            when: vec![Compare::Value("t/txn/k".into(), b"swapped".to_vec())],
            then: vec![TxnOp::Delete {
                key: "t/txn/k".into(),
            }],
            otherwise: vec![],
        })
        .await
        .unwrap();
    assert!(r.succeeded);
    assert_eq!(s.get("t/txn/k").await.unwrap(), None);
}

async fn watches(s: &dyn Store) {
    let start = s.revision().await.unwrap() + 1;
    let mut w = s.watch("t/w/", None).await.unwrap();
    s.put("t/w/1", b"a".to_vec(), None).await.unwrap();
    s.put("t/other", b"x".to_vec(), None).await.unwrap();
    s.put("t/w/2", b"b".to_vec(), None).await.unwrap();
    s.delete("t/w/1").await.unwrap();
    let evs = [
        next_event(&mut w).await,
        next_event(&mut w).await,
        next_event(&mut w).await,
    ];
    assert!(matches!(&evs[0], WatchEvent::Put(kv) if kv.key == "t/w/1" && kv.value == b"a"));
    assert!(matches!(&evs[1], WatchEvent::Put(kv) if kv.key == "t/w/2"));
    assert!(matches!(&evs[2], WatchEvent::Delete { key, .. } if key == "t/w/1"));
    // From a past revision: the same history again.
    let mut past = s.watch("t/w/", Some(start)).await.unwrap();
    let replay = [
        next_event(&mut past).await,
        next_event(&mut past).await,
        next_event(&mut past).await,
    ];
    assert_eq!(replay, evs);
}

async fn leases(s: &dyn Store) {
    let l = s.grant(Duration::from_secs(1)).await.unwrap();
    let mut w = s.watch("t/lease/", None).await.unwrap();
    s.put("t/lease/k", b"v".to_vec(), Some(l)).await.unwrap();
    assert_eq!(s.get("t/lease/k").await.unwrap().unwrap().lease, Some(l));
    assert!(matches!(next_event(&mut w).await, WatchEvent::Put(_)));
    // Not kept alive: the key goes away by itself, with a delete event.
    assert!(
        matches!(next_event(&mut w).await, WatchEvent::Delete { key, .. } if key == "t/lease/k")
    );
    assert_eq!(s.get("t/lease/k").await.unwrap(), None);
    assert_eq!(s.keep_alive(l).await, Err(StoreError::LeaseNotFound(l)));
    assert!(matches!(
        s.put("t/lease/k", b"v".to_vec(), Some(l)).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    // Kept alive past its TTL, then revoked: deleted at once.
    let l = s.grant(Duration::from_secs(2)).await.unwrap();
    s.put("t/lease/kept", b"v".to_vec(), Some(l)).await.unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.keep_alive(l).await.unwrap();
    }
    assert!(
        s.get("t/lease/kept").await.unwrap().is_some(),
        "kept alive for 3 s on a 2 s lease"
    );
    s.revoke(l).await.unwrap();
    assert_eq!(s.get("t/lease/kept").await.unwrap(), None);
}

async fn elections(s: Arc<dyn Store>) {
    let la = s.grant(Duration::from_secs(10)).await.unwrap();
    let lb = s.grant(Duration::from_secs(1)).await.unwrap();
    let a = campaign(&*s, "t-el", "node-a", la).await.unwrap();
    assert_eq!(
        leader(&*s, "t-el").await.unwrap().as_deref(),
        Some("node-a")
    );
    let s2 = s.clone();
    let b = tokio::spawn(async move { campaign(&*s2, "t-el", "node-b", lb).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !b.is_finished(),
        "a second candidate waits while the leader holds"
    );
    // b's lease must outlive the wait: keep it alive while a still leads.
    s.keep_alive(lb).await.unwrap();
    assert!(resign(&*s, &a).await.unwrap());
    let bl = tokio::time::timeout(Duration::from_secs(10), b)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        bl.revision > a.revision,
        "a newer leader has a higher revision"
    );
    assert_eq!(
        leader(&*s, "t-el").await.unwrap().as_deref(),
        Some("node-b")
    );
    assert!(
        !resign(&*s, &a).await.unwrap(),
        "a stale leader cannot resign the new one"
    );
    // The leader's lease expires (no keep-alive): a third candidate takes over.
    let lc = s.grant(Duration::from_secs(30)).await.unwrap();
    let c = tokio::time::timeout(Duration::from_secs(15), campaign(&*s, "t-el", "node-c", lc))
        .await
        .expect("elected after the old leader's lease expired")
        .unwrap();
    assert!(c.revision > bl.revision);
}

async fn suite(s: Arc<dyn Store>) {
    kv_and_revisions(&*s).await;
    transactions(&*s).await;
    watches(&*s).await;
    leases(&*s).await;
    elections(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    suite(Arc::new(MemStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    let e = EtcdServer::start().unwrap();
    let s = e.connect().await;
    suite(Arc::new(s)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_unreachable_is_a_clear_error() {
    let port = free_port();
    let r = EtcdStore::connect(
        &[format!("http://127.0.0.1:{port}")],
        Duration::from_millis(500),
    )
    .await;
    let err = match r {
        Ok(s) => s.get("k").await.unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

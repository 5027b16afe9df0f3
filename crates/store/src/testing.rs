//! A throwaway single-member etcd on loopback for tests (Debian's `etcd-server`): started on free
//! ports with a temporary data directory, stopped by PID when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{EtcdStore, Store};

/// A running etcd.
pub struct EtcdServer {
    child: Child,
    /// Client URL.
    pub endpoint: String,
    dir: std::path::PathBuf,
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl EtcdServer {
    /// Starts etcd; fails with a clear message when it is not installed.
    pub fn start() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "alcubierre-etcd-{}-{}",
            std::process::id(),
            free_port()?
        ));
        std::fs::create_dir_all(&dir)?;
        let (c, p) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{c}");
        let peer = format!("http://127.0.0.1:{p}");
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(&dir)
            .args([
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("starting etcd (Debian's etcd-server: run scripts/setup as root): {e}"),
                )
            })?;
        Ok(Self {
            child,
            endpoint,
            dir,
        })
    }

    /// Connects, waiting up to 20 s for the server to answer.
    pub async fn connect(&self) -> EtcdStore {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) =
                EtcdStore::connect(std::slice::from_ref(&self.endpoint), Duration::from_secs(2))
                    .await
            {
                if s.revision().await.is_ok() {
                    return s;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd did not come up in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A store whose operations fail on demand, in front of another: for tests of what callers do
/// when the store errs. `fail_next(n)` makes the next `n` operations of any kind fail with
/// [`crate::StoreError::Unavailable`].
pub struct FaultyStore {
    inner: std::sync::Arc<dyn Store>,
    failures: std::sync::atomic::AtomicU64,
}

impl FaultyStore {
    /// In front of `inner`, failing nothing yet.
    pub fn new(inner: std::sync::Arc<dyn Store>) -> Self {
        Self {
            inner,
            failures: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The next `n` operations fail.
    pub fn fail_next(&self, n: u64) {
        self.failures.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Operations still to fail.
    pub fn failures_left(&self) -> u64 {
        self.failures.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), crate::StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        match self
            .failures
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
        {
            Ok(_) => Err(crate::StoreError::Unavailable("injected failure".into())),
            Err(_) => Ok(()),
        }
    }
}

macro_rules! faulty {
    ($self:ident, $call:expr) => {{
        let r = $self.check();
        Box::pin(async move {
            r?;
            $call.await
        })
    }};
}

impl Store for FaultyStore {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<crate::KeyValue>, crate::StoreError>> {
        faulty!(self, self.inner.get(key))
    }
    fn list<'a>(
        &'a self,
        prefix: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Vec<crate::KeyValue>, crate::StoreError>> {
        faulty!(self, self.inner.list(prefix))
    }
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        lease: Option<crate::LeaseId>,
    ) -> futures::future::BoxFuture<'a, Result<crate::Revision, crate::StoreError>> {
        faulty!(self, self.inner.put(key, value, lease))
    }
    fn delete<'a>(
        &'a self,
        key: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<bool, crate::StoreError>> {
        faulty!(self, self.inner.delete(key))
    }
    fn txn(
        &self,
        txn: crate::Txn,
    ) -> futures::future::BoxFuture<'_, Result<crate::TxnResponse, crate::StoreError>> {
        faulty!(self, self.inner.txn(txn))
    }
    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        start: Option<crate::Revision>,
    ) -> futures::future::BoxFuture<'a, Result<crate::Watch, crate::StoreError>> {
        faulty!(self, self.inner.watch(prefix, start))
    }
    fn grant(
        &self,
        ttl: Duration,
    ) -> futures::future::BoxFuture<'_, Result<crate::LeaseId, crate::StoreError>> {
        faulty!(self, self.inner.grant(ttl))
    }
    fn keep_alive(
        &self,
        lease: crate::LeaseId,
    ) -> futures::future::BoxFuture<'_, Result<(), crate::StoreError>> {
        faulty!(self, self.inner.keep_alive(lease))
    }
    fn revoke(
        &self,
        lease: crate::LeaseId,
    ) -> futures::future::BoxFuture<'_, Result<(), crate::StoreError>> {
        faulty!(self, self.inner.revoke(lease))
    }
    fn revision(
        &self,
    ) -> futures::future::BoxFuture<'_, Result<crate::Revision, crate::StoreError>> {
        faulty!(self, self.inner.revision())
    }
}

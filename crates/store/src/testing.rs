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

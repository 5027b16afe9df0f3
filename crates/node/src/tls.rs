//! TLS for the REST API (rustls, ring). The server takes a PEM certificate chain and key
//! (`cluster.api_tls_cert`, `cluster.api_tls_key`); handshakes run in their own tasks with a
//! timeout, so a slow or silent client cannot hold up others. The CLI's client verifies the
//! server against `--ca-cert` (or Debian's system bundle).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Debian's CA bundle, the client's default trust.
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server configuration from PEM files; errors name the file.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cluster.api_tls_cert: reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cluster.api_tls_cert: {} is not PEM", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "cluster.api_tls_cert: {} holds no certificate",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "cluster.api_tls_key: no PEM private key in {}",
            key.display()
        )
    })?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("cluster.api_tls_key: does not match the certificate")?;
    Ok(Arc::new(cfg))
}

/// A listener that yields TLS streams whose handshakes completed.
pub struct TlsListener {
    rx: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsListener {
    /// Wraps a bound listener.
    pub fn new(l: TcpListener, cfg: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = l.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match l.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("API accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { rx, local, task })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The client configuration trusting the CAs in `ca` (PEM).
pub fn client_config(ca: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("--ca-cert: reading {}", ca.display()))?
    {
        let c = c.with_context(|| format!("--ca-cert: {} is not PEM", ca.display()))?;
        // A bundle may hold certificates rustls cannot use; skip those.
        let _ = roots.add(c);
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "--ca-cert: no usable CA certificate in {}",
        ca.display()
    );
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A blocking TLS connection to `host:port`, verifying the certificate names `host`.
pub fn connect(
    hostport: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> anyhow::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
    let host = match hostport.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => hostport,
    };
    let name = ServerName::try_from(host.to_string())
        .with_context(|| format!("--api: {host:?} is not a host name or address"))?;
    let conn = rustls::ClientConnection::new(cfg, name)?;
    let tcp = std::net::TcpStream::connect(hostport)
        .with_context(|| format!("connecting to the API at https://{hostport}"))?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

#[cfg(test)]
mod tests {
    use super::*;

    mod certs {
        // Shared with the integration tests.
        include!("../../cli/tests/common/certs.rs");
    }
    use certs::make_certs;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_trusting_the_ca_talks_to_the_listener() {
        let d = tempfile::tempdir().unwrap();
        make_certs(d.path());
        let cfg = server_config(&d.path().join("api.crt"), &d.path().join("api.key")).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut tl = TlsListener::new(l, cfg).unwrap();
        let addr = axum::serve::Listener::local_addr(&tl).unwrap();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, _) = axum::serve::Listener::accept(&mut tl).await;
            let mut b = [0u8; 5];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
            s.shutdown().await.unwrap();
        });
        let ca = d.path().join("ca.crt");
        let echoed = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = connect(&addr.to_string(), client_config(&ca).unwrap()).unwrap();
            s.write_all(b"hello").unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).unwrap();
            out
        })
        .await
        .unwrap();
        assert_eq!(echoed, b"hello");
        server.await.unwrap();
        // Missing key or wrong files name the setting.
        let e = server_config(&d.path().join("api.crt"), &d.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("cluster.api_tls_key"), "{e:#}");
        let e = server_config(&d.path().join("ca.key"), &d.path().join("api.key")).unwrap_err();
        assert!(format!("{e:#}").contains("cluster.api_tls_cert"), "{e:#}");
    }
}

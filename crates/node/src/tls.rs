//! TLS for the REST API (rustls, ring). The server takes a PEM certificate chain and key
//! (`cluster.api_tls_cert`, `cluster.api_tls_key`); handshakes run in their own tasks with a
//! timeout, so a slow or silent client cannot hold up others. Clients (`alcubierre_api::client`)
//! verify the server against `--ca-cert` (or Debian's system bundle).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

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

#[cfg(test)]
mod tests {
    use super::*;

    mod certs {
        // Shared with the integration tests.
        include!("../../cli/tests/common/certs.rs");
    }
    use certs::make_certs;

    /// The API's client over TLS, trusting the test CA, reads a large answer the server sends
    /// in chunks; one that trusts another CA is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_api_client_reads_a_chunked_answer_over_tls() {
        let d = tempfile::tempdir().unwrap();
        make_certs(d.path());
        let cfg = server_config(&d.path().join("api.crt"), &d.path().join("api.key")).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tl = TlsListener::new(l, cfg).unwrap();
        let addr = axum::serve::Listener::local_addr(&tl).unwrap();
        // 2,000 volumes, streamed: the body goes out chunked (no Content-Length).
        let app = axum::Router::new().route(
            "/api/v1/volumes",
            axum::routing::get(|| async {
                let items: Vec<Result<String, std::io::Error>> = (0..2000)
                    .map(|i| {
                        let sep = if i == 0 { "[" } else { "," };
                        Ok(format!(
                            "{sep}{{\"id\":\"{i}\",\"name\":\"v{i}\",\"size\":4096,\
                             \"block_size\":512,\"replicas\":[],\"primary\":\"n1\",\
                             \"in_sync\":[],\"qos\":null,\"hosts\":[],\"any_host\":true,\
                             \"epoch\":1}}"
                        ))
                    })
                    .chain(std::iter::once(Ok("]".to_string())))
                    .collect();
                axum::body::Body::from_stream(futures::stream::iter(items))
            }),
        );
        let server = tokio::spawn(async move { axum::serve(tl, app).await });
        let url = format!("https://{addr}");
        let ca = d.path().join("ca.crt");
        let got = tokio::task::spawn_blocking({
            let url = url.clone();
            move || {
                alcubierre_api::client::Client::new(&url, "t", Some(&ca))
                    .unwrap()
                    .volumes()
            }
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(got.len(), 2000);
        assert_eq!(got[1999].name, "v1999");
        // Trusting another CA (the server's own certificate is no CA): refused, with no answer.
        let other = d.path().join("api.crt");
        let e = tokio::task::spawn_blocking(move || {
            alcubierre_api::client::Client::new(&url, "t", Some(&other))
                .unwrap()
                .volumes()
        })
        .await
        .unwrap()
        .unwrap_err();
        assert_eq!(e.status, None, "{e}");
        server.abort();
        // Missing key or wrong files name the setting.
        let e = server_config(&d.path().join("api.crt"), &d.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("cluster.api_tls_key"), "{e:#}");
        let e = server_config(&d.path().join("ca.key"), &d.path().join("api.key")).unwrap_err();
        assert!(format!("{e:#}").contains("cluster.api_tls_cert"), "{e:#}");
    }
}

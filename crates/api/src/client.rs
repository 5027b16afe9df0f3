//! A blocking client of `/api/v1` (feature `client`): HTTP/1.1 with chunked bodies and TLS
//! (rustls) through `ureq`, typed with the contract's own types. The CLI and the host agent
//! use it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::v1;

/// The largest answer read (a list of every volume of a large cluster fits many times).
const MAX_ANSWER: u64 = 1 << 30;

/// The CA bundle an `https://` API is verified with when the caller names none.
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why a call failed: the API's answer (its status, message and the field at fault), or no
/// answer at all (`status` is `None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientError {
    /// The HTTP status, when the API answered.
    pub status: Option<u16>,
    /// The API's message, or why there was no answer.
    pub message: String,
    /// The request field at fault, when the API names one.
    pub field: Option<String>,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "{} (HTTP {s})", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    fn local(message: impl Into<String>) -> Self {
        Self {
            status: None,
            message: message.into(),
            field: None,
        }
    }

    /// Whether the API said the object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }
}

/// A result of a call.
pub type Result<T> = std::result::Result<T, ClientError>;

/// A connection to one API endpoint.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Client {
    /// A client of the API at `base` (`http://host:port` or `https://...`) with bearer
    /// `token`; an `https://` API is verified against the CAs in `ca` (PEM; default
    /// [`SYSTEM_CA`]).
    pub fn new(base: &str, token: &str, ca: Option<&Path>) -> Result<Self> {
        Self::with_timeout(base, token, ca, Duration::from_secs(60))
    }

    /// [`Client::new`] whose calls give up after `timeout` (a liveness report must not wait
    /// a minute on an endpoint that does not answer).
    pub fn with_timeout(
        base: &str,
        token: &str,
        ca: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(ClientError::local(format!(
                "--api {base:?}: use an http:// or https:// URL"
            )));
        }
        // Straight to the API: no proxy from the environment (the token would go through it).
        let mut config = ureq::Agent::config_builder()
            .proxy(None)
            .http_status_as_error(false)
            .timeout_global(Some(timeout));
        if base.starts_with("https://") {
            let path = ca.unwrap_or(Path::new(SYSTEM_CA));
            let pem = std::fs::read(path).map_err(|e| {
                ClientError::local(format!("--ca-cert: reading {}: {e}", path.display()))
            })?;
            let roots: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if roots.is_empty() {
                return Err(ClientError::local(format!(
                    "--ca-cert: no CA certificate in {}",
                    path.display()
                )));
            }
            let tls = ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
                .build();
            config = config.tls_config(tls);
        }
        Ok(Self {
            agent: config.build().into(),
            base,
            token: token.to_string(),
        })
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One call: `method` on `path` (from `/api/v1/...`) with a JSON `body`; the answer's JSON
    /// as `T`, or the API's error.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let json = body
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| ClientError::local(format!("the request body: {e}")))?;
        let sent = match (method, json) {
            ("GET", _) => self.agent.get(&url).header("authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("authorization", &auth)
                .call(),
            (m, json) => {
                let r = match m {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    m => return Err(ClientError::local(format!("unknown method {m}"))),
                };
                r.header("authorization", &auth)
                    .header("content-type", "application/json")
                    .send(json.unwrap_or_default())
            }
        };
        let mut resp = sent.map_err(|e| {
            ClientError::local(format!("cannot reach the API at {}: {e}", self.base))
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| ClientError::local(format!("reading the API's answer ({status}): {e}")))?;
        if !(200..300).contains(&status) {
            return Err(match serde_json::from_str::<v1::Error>(&text) {
                Ok(e) => ClientError {
                    status: Some(status),
                    message: e.error,
                    field: e.field,
                },
                Err(_) => ClientError {
                    status: Some(status),
                    message: text,
                    field: None,
                },
            });
        }
        // An answer without a body (204) reads as JSON null.
        let text = if text.is_empty() { "null" } else { &text };
        serde_json::from_str(text).map_err(|e| ClientError {
            status: Some(status),
            message: format!("the API's answer does not parse: {e}"),
            field: None,
        })
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call("GET", path, None::<&()>)
    }

    /// `GET /api/v1/volumes`.
    pub fn volumes(&self) -> Result<Vec<v1::Volume>> {
        self.get("/api/v1/volumes")
    }

    /// `GET /api/v1/volumes/{id}` (id or name).
    pub fn volume(&self, id: &str) -> Result<v1::Volume> {
        self.get(&format!("/api/v1/volumes/{}", seg(id)))
    }

    /// `POST /api/v1/volumes`.
    pub fn create_volume(&self, r: &v1::CreateVolume) -> Result<v1::Volume> {
        self.call("POST", "/api/v1/volumes", Some(r))
    }

    /// `DELETE /api/v1/volumes/{id}`.
    pub fn delete_volume(&self, id: &str) -> Result<v1::Volume> {
        self.call(
            "DELETE",
            &format!("/api/v1/volumes/{}", seg(id)),
            None::<&()>,
        )
    }

    /// `POST /api/v1/volumes/{id}/resize`.
    pub fn resize_volume(&self, id: &str, size: u64) -> Result<v1::Volume> {
        self.call(
            "POST",
            &format!("/api/v1/volumes/{}/resize", seg(id)),
            Some(&v1::Resize { size }),
        )
    }

    /// `GET /api/v1/volumes/{id}/connection`.
    pub fn connection(&self, id: &str) -> Result<v1::ConnectionInfo> {
        self.get(&format!("/api/v1/volumes/{}/connection", seg(id)))
    }

    /// `PUT /api/v1/volumes/{id}/attachments/{host}`.
    pub fn attach(&self, id: &str, host: &str, r: &v1::AttachRequest) -> Result<v1::Attachment> {
        self.call(
            "PUT",
            &format!("/api/v1/volumes/{}/attachments/{}", seg(id), seg(host)),
            Some(r),
        )
    }

    /// `DELETE /api/v1/volumes/{id}/attachments/{host}`.
    /// With `force`, the host's persistent reservations are removed too (fencing it); the
    /// answer says whether the volume's primary confirmed it.
    pub fn detach(&self, id: &str, host: &str, force: bool) -> Result<v1::Detached> {
        let query = if force { "?force=true" } else { "" };
        self.call(
            "DELETE",
            &format!(
                "/api/v1/volumes/{}/attachments/{}{query}",
                seg(id),
                seg(host)
            ),
            None::<&()>,
        )
    }

    /// `GET /api/v1/volumes/{id}/attachments`.
    pub fn volume_attachments(&self, id: &str) -> Result<Vec<v1::AttachmentRef>> {
        self.get(&format!("/api/v1/volumes/{}/attachments", seg(id)))
    }

    /// `GET /api/v1/hosts/{name}/attachments`.
    pub fn host_attachments(&self, host: &str) -> Result<Vec<v1::AttachmentRef>> {
        self.get(&format!("/api/v1/hosts/{}/attachments", seg(host)))
    }

    /// `PUT /api/v1/volumes/{id}/qos` (`None` clears it).
    pub fn set_volume_qos(&self, id: &str, qos: Option<&str>) -> Result<v1::Volume> {
        self.call(
            "PUT",
            &format!("/api/v1/volumes/{}/qos", seg(id)),
            Some(&v1::VolumeQos {
                qos: qos.map(str::to_string),
            }),
        )
    }

    /// `GET /api/v1/volumes/{id}/snapshots`.
    pub fn snapshots(&self, id: &str) -> Result<Vec<v1::Snapshot>> {
        self.get(&format!("/api/v1/volumes/{}/snapshots", seg(id)))
    }

    /// `GET /api/v1/volumes/{id}/snapshots/{snapshot}`.
    pub fn snapshot(&self, id: &str, name: &str) -> Result<v1::Snapshot> {
        self.get(&format!(
            "/api/v1/volumes/{}/snapshots/{}",
            seg(id),
            seg(name)
        ))
    }

    /// `POST /api/v1/volumes/{id}/snapshots`.
    pub fn create_snapshot(&self, id: &str, name: &str) -> Result<v1::Snapshot> {
        self.call(
            "POST",
            &format!("/api/v1/volumes/{}/snapshots", seg(id)),
            Some(&v1::SnapshotRequest {
                name: name.to_string(),
            }),
        )
    }

    /// `DELETE /api/v1/volumes/{id}/snapshots/{snapshot}`: what it was.
    pub fn delete_snapshot(&self, id: &str, name: &str) -> Result<v1::Snapshot> {
        self.call(
            "DELETE",
            &format!("/api/v1/volumes/{}/snapshots/{}", seg(id), seg(name)),
            None::<&()>,
        )
    }

    /// `GET /api/v1/hosts/{name}`.
    pub fn host(&self, name: &str) -> Result<v1::HostView> {
        self.get(&format!("/api/v1/hosts/{}", seg(name)))
    }

    /// `PUT /api/v1/hosts/{name}/heartbeat`.
    pub fn heartbeat(&self, host: &str, r: &v1::Heartbeat) -> Result<v1::HostLiveness> {
        self.call(
            "PUT",
            &format!("/api/v1/hosts/{}/heartbeat", seg(host)),
            Some(r),
        )
    }

    /// `POST /api/v1/hosts/{name}/fence`: every attachment of the host force-detached; `force`
    /// even while its agent reports.
    pub fn fence_host(&self, host: &str, force: bool) -> Result<v1::Fenced> {
        let query = if force { "?force=true" } else { "" };
        self.call(
            "POST",
            &format!("/api/v1/hosts/{}/fence{query}", seg(host)),
            None::<&()>,
        )
    }

    /// `GET /api/v1/nodes`.
    pub fn nodes(&self) -> Result<Vec<v1::Node>> {
        self.get("/api/v1/nodes")
    }

    /// `GET /api/v1/status`.
    pub fn status(&self) -> Result<v1::Status> {
        self.get("/api/v1/status")
    }

    /// `GET /api/v1/replication`.
    pub fn replication(&self) -> Result<Vec<v1::Progress>> {
        self.get("/api/v1/replication")
    }

    /// `GET /api/v1/cluster/config`.
    pub fn config(&self) -> Result<v1::ClusterConfig> {
        self.get("/api/v1/cluster/config")
    }
}

/// A path segment with the characters a URL path does not take percent-encoded (names are
/// `A-Z a-z 0-9 - _ .`, so this only matters for a wrong one, which the API then refuses).
fn seg(s: &str) -> String {
    // `.` and `..` would be taken for path steps.
    if s == "." || s == ".." {
        return s.replace('.', "%2E");
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped_and_urls_checked() {
        assert_eq!(seg("vol-1_a.b"), "vol-1_a.b");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
        assert_eq!(
            (seg("."), seg("..")),
            ("%2E".to_string(), "%2E%2E".to_string())
        );
        let e = Client::new("ftp://x", "t", None).err().unwrap();
        assert!(e.message.contains("http://"), "{e}");
        let e = Client::new("https://x", "t", Some(Path::new("/nonexistent")))
            .err()
            .unwrap();
        assert!(e.message.contains("--ca-cert"), "{e}");
    }
}

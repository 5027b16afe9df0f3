//! The REST API, `/api/v1` (axum). Every request but `GET /metrics` needs
//! `Authorization: Bearer <token>`. Errors are JSON `{"error": "...", "field": "..."}` with the
//! status that fits: 400 (bad field), 401, 404, 409 (conflict, name taken), 503 (store).
//! Bodies are the API contract's types (`alcubierre_api::v1`), converted from and to the
//! store's records (`convert`). The routes are listed in [`ROUTES`]; the contract's OpenAPI
//! document (served at `/api/v1/openapi.json`, checked in at `docs/api/openapi.json`) declares
//! the same set and a test keeps the two equal.

use std::sync::Arc;

use alcubierre_store::Store;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::activation::{ActivationError, Licence};
use crate::cluster::{self, ClusterConfig, StoredConfigError};
use crate::model::{ActivationEvent, Node, Service};
use crate::plan::{plan, PlanInput};
use crate::registry::{self, RegistryError};
use crate::volumes::{self, CreateVolume, Host, QosPolicy, VolumeError};

mod attachments;
mod convert;
mod hosts;
mod snapshots;

use alcubierre_api::v1 as api;

/// Every route: method and path (axum syntax). The OpenAPI document lists the same.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/cluster/config"),
    ("PUT", "/api/v1/cluster/config"),
    ("PATCH", "/api/v1/cluster/config"),
    ("GET", "/api/v1/nodes"),
    ("POST", "/api/v1/nodes/activate"),
    ("POST", "/api/v1/nodes/{name}/deactivate"),
    ("POST", "/api/v1/nodes/{name}/drain"),
    ("POST", "/api/v1/nodes/{name}/undrain"),
    ("GET", "/api/v1/status"),
    ("GET", "/api/v1/volumes"),
    ("POST", "/api/v1/volumes"),
    ("GET", "/api/v1/volumes/{id}"),
    ("DELETE", "/api/v1/volumes/{id}"),
    ("POST", "/api/v1/volumes/{id}/resize"),
    ("PUT", "/api/v1/volumes/{id}/hosts"),
    ("PUT", "/api/v1/volumes/{id}/qos"),
    ("GET", "/api/v1/volumes/{id}/connection"),
    ("GET", "/api/v1/volumes/{id}/attachments"),
    ("PUT", "/api/v1/volumes/{id}/attachments/{host}"),
    ("DELETE", "/api/v1/volumes/{id}/attachments/{host}"),
    ("GET", "/api/v1/volumes/{id}/snapshots"),
    ("POST", "/api/v1/volumes/{id}/snapshots"),
    ("GET", "/api/v1/volumes/{id}/snapshots/{snapshot}"),
    ("DELETE", "/api/v1/volumes/{id}/snapshots/{snapshot}"),
    ("GET", "/api/v1/replication"),
    ("GET", "/api/v1/qos"),
    ("PUT", "/api/v1/qos/{name}"),
    ("DELETE", "/api/v1/qos/{name}"),
    ("GET", "/api/v1/hosts"),
    ("PUT", "/api/v1/hosts/{name}"),
    ("DELETE", "/api/v1/hosts/{name}"),
    ("GET", "/api/v1/hosts/{name}/attachments"),
    ("GET", "/api/v1/hosts/{name}"),
    ("PUT", "/api/v1/hosts/{name}/heartbeat"),
    ("POST", "/api/v1/hosts/{name}/fence"),
    ("GET", "/api/v1/plan"),
    ("GET", "/api/v1/plan/check"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/"),
];

/// Adds a node's own metrics (its volumes' I/O, its cache) to `/metrics`'s registry.
pub type NodeMetrics = Arc<dyn Fn(&mut crate::metrics::Registry) + Send + Sync>;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The metadata store.
    pub store: Arc<dyn Store>,
    /// The bearer token clients must send.
    pub token: Arc<String>,
    /// Licence limits.
    pub licence: Licence,
    /// Unix time source (tests fix it).
    pub now: fn() -> u64,
    /// The serving node's own metrics, appended to the cluster's.
    pub node_metrics: Option<NodeMetrics>,
    /// The capacity backend, for deleting snapshots and cloning volumes from them (`None`: this
    /// server cannot, and says so).
    pub backend: Option<Arc<dyn alcubierre_backend::Backend>>,
}

/// An API error.
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(f) = self.field {
            body["field"] = json!(f);
        }
        (self.status, Json(body)).into_response()
    }
}

fn err(status: StatusCode, message: impl Into<String>, field: Option<&str>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
        field: field.map(str::to_string),
    }
}

impl From<VolumeError> for ApiError {
    fn from(e: VolumeError) -> Self {
        let m = e.to_string();
        match e {
            VolumeError::Invalid { field, .. } => err(StatusCode::BAD_REQUEST, m, Some(field)),
            VolumeError::Unknown(field) => err(StatusCode::BAD_REQUEST, m, Some(&field)),
            VolumeError::LicenceCapacity { .. } => err(StatusCode::BAD_REQUEST, m, Some("size")),
            VolumeError::NameTaken(_) => err(StatusCode::CONFLICT, m, Some("name")),
            VolumeError::Taken { field, .. } => err(StatusCode::CONFLICT, m, Some(field)),
            VolumeError::NotFound(_) => err(StatusCode::NOT_FOUND, m, None),
            VolumeError::Placement(_) | VolumeError::Conflict => err(StatusCode::CONFLICT, m, None),
            VolumeError::Store(_) | VolumeError::Registry(_) | VolumeError::Corrupt(_) => {
                err(StatusCode::SERVICE_UNAVAILABLE, m, None)
            }
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let m = e.to_string();
        match e {
            RegistryError::UnknownNode(_) => err(StatusCode::NOT_FOUND, m, Some("nodes")),
            RegistryError::Activation(ActivationError::TooFewNodes { .. }) => {
                err(StatusCode::CONFLICT, m, Some("nodes"))
            }
            RegistryError::Activation(_)
            | RegistryError::Transition { .. }
            | RegistryError::Conflict
            | RegistryError::Clash { .. }
            | RegistryError::NotActive { .. } => err(StatusCode::CONFLICT, m, None),
            RegistryError::Store(_) | RegistryError::Corrupt { .. } => {
                err(StatusCode::SERVICE_UNAVAILABLE, m, None)
            }
        }
    }
}

impl From<alcubierre_store::StoreError> for ApiError {
    fn from(e: alcubierre_store::StoreError) -> Self {
        err(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None)
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The field a deserialisation message names (`missing field `name``, `unknown field `x``).
fn field_of(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("field `")?;
    Some(rest.split_once('`')?.0.to_string())
}

/// A body that could not be read, told as the field and the rule it breaks rather than in the
/// JSON library's words: `size: must be a whole number (at least 0), not a string`. Returns the
/// message and the field, when one is named.
fn body_error(message: &str) -> (String, Option<String>) {
    const NOT_JSON: &str = "Failed to parse the request body as JSON: ";
    const QUERY: &str = "Failed to deserialize query string: ";
    if let Some(rest) = message.strip_prefix(QUERY) {
        return match rest.split_once(": ") {
            Some((f, what)) if !f.contains(' ') => (format!("{f}: {}", rule(what)), Some(f.into())),
            _ => (format!("the query: {}", rule(rest)), field_of(rest)),
        };
    }
    const WRONG: &str = "Failed to deserialize the JSON body into the target type: ";
    if let Some(rest) = message.strip_prefix(NOT_JSON) {
        return (format!("the body is not JSON: {rest}"), None);
    }
    let Some(rest) = message.strip_prefix(WRONG) else {
        return (message.to_string(), field_of(message));
    };
    // "[path: ]what at line L column C"
    let what = rest.rsplit_once(" at line ").map_or(rest, |(w, _)| w);
    let (path, what) = match what.split_once(": ") {
        Some((p, w)) if !p.contains(' ') => (Some(p.to_string()), w),
        _ => (None, what),
    };
    let named = |f: &str| match &path {
        Some(p) if p != "." => format!("{p}.{f}"),
        _ => f.to_string(),
    };
    if let Some(f) = field_of(what).filter(|_| what.starts_with("missing field")) {
        let f = named(&f);
        return (format!("{f}: required"), Some(f));
    }
    if let Some(f) = field_of(what).filter(|_| what.starts_with("unknown field")) {
        // The path already ends at the unknown field.
        let f = match &path {
            Some(p) if *p == f || p.ends_with(&format!(".{f}")) => p.clone(),
            _ => named(&f),
        };
        return (format!("{f}: unknown field"), Some(f));
    }
    let Some(path) = path else {
        return (format!("the body: {}", rule(what)), None);
    };
    (format!("{path}: {}", rule(what)), Some(path))
}

/// The rule a serde type error states, in words: "invalid type: string \"x\", expected u64"
/// -> "must be a whole number (at least 0), not a string".
fn rule(what: &str) -> String {
    let want = |expected: &str| match expected {
        e if e.starts_with('u') && e[1..].parse::<u8>().is_ok() => {
            "a whole number (at least 0)".to_string()
        }
        e if e.starts_with('i') && e[1..].parse::<u8>().is_ok() => "a whole number".to_string(),
        e if e.starts_with('f') && e[1..].parse::<u8>().is_ok() => "a number".to_string(),
        "a boolean" => "true or false".to_string(),
        e if e.starts_with("a sequence") => "a list".to_string(),
        e if e.starts_with("struct") || e.starts_with("a map") => "an object".to_string(),
        e => e.to_string(),
    };
    let got = |g: &str| {
        // "integer `-1`", "floating point `1.5`", "string \"x\"", "boolean `true`", "map"...
        let value = g
            .split_once('`')
            .and_then(|(_, v)| v.split_once('`'))
            .map(|(v, _)| v);
        match g.split_whitespace().next().unwrap_or(g) {
            "integer" | "floating" => format!("not {}", value.unwrap_or(g)),
            "string" => "not a string".to_string(),
            "boolean" => "not true or false".to_string(),
            "sequence" => "not a list".to_string(),
            "map" => "not an object".to_string(),
            "null" | "unit" => "not null".to_string(),
            _ => format!("not {g}"),
        }
    };
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(r) = what.strip_prefix(prefix) {
            if let Some((g, e)) = r.rsplit_once(", expected ") {
                return format!("must be {}, {}", want(e), got(g));
            }
        }
    }
    if let Some(r) = what.strip_prefix("unknown variant ") {
        if let Some((g, e)) = r.split_once(", expected ") {
            return format!("{g} is not one of {e}");
        }
    }
    what.to_string()
}

/// The error for a body that could not be read (`raw`, the extractor's words), with `status`; a
/// field this release does not know is a bad request (400), not a body that fails to parse: it
/// is refused, naming it, rather than stored to do nothing.
fn rejected(raw: &str, status: StatusCode) -> ApiError {
    let (m, f) = body_error(raw);
    let status = if m.ends_with(": unknown field") {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    err(status, m, f.as_deref())
}

/// A JSON request body whose rejections are API errors (JSON, with the field when known).
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(r) => Err(rejected(&r.body_text(), r.status())),
        }
    }
}

/// Query parameters whose rejections are API errors.
struct Params<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for Params<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Params(v)),
            Err(r) => {
                let (m, f) = body_error(&r.body_text());
                Err(err(r.status(), m, f.as_deref()))
            }
        }
    }
}

fn authorize(s: &ApiState, h: &HeaderMap) -> Result<(), ApiError> {
    let ok = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == s.token.as_str());
    if ok {
        Ok(())
    } else {
        Err(err(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <token>)",
            None,
        ))
    }
}

async fn list_nodes(State(s): State<ApiState>, h: HeaderMap) -> ApiResult<Vec<api::Node>> {
    authorize(&s, &h)?;
    let services = registry::service_states(&*s.store).await?;
    let nodes = registry::nodes(&*s.store).await?;
    let service = |n: &str| services.get(n).copied().unwrap_or(Service::Unavailable);
    Ok(Json(
        nodes
            .into_values()
            .map(|(node, _)| convert::node(&node, service(&node.name)))
            .collect(),
    ))
}

/// Node record `n` as the API shows it, with its service state.
async fn node_view(s: &ApiState, n: Node) -> ApiResult<api::Node> {
    let services = registry::service_states(&*s.store).await?;
    let service = services
        .get(&n.name)
        .copied()
        .unwrap_or(Service::Unavailable);
    Ok(Json(convert::node(&n, service)))
}

async fn activate(
    State(s): State<ApiState>,
    h: HeaderMap,
    Body(r): Body<api::Activate>,
) -> ApiResult<api::Activating> {
    authorize(&s, &h)?;
    if r.nodes.is_empty() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "nodes: list at least one node",
            Some("nodes"),
        ));
    }
    registry::activate(&*s.store, &r.nodes, &s.licence, (s.now)()).await?;
    Ok(Json(api::Activating {
        activating: r.nodes,
    }))
}

async fn deactivate(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<api::Node> {
    authorize(&s, &h)?;
    let n = registry::apply(&*s.store, &name, ActivationEvent::Deactivate).await?;
    node_view(&s, n).await
}

async fn drain(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<api::Node> {
    authorize(&s, &h)?;
    let n = registry::set_draining(&*s.store, &name, true).await?;
    node_view(&s, n).await
}

async fn undrain(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<api::Node> {
    authorize(&s, &h)?;
    let n = registry::set_draining(&*s.store, &name, false).await?;
    node_view(&s, n).await
}

async fn status(State(s): State<ApiState>, h: HeaderMap) -> ApiResult<api::Status> {
    authorize(&s, &h)?;
    let nodes = registry::nodes(&*s.store).await?;
    let services = registry::service_states(&*s.store).await?;
    let (vols, unreadable) = volumes::scan(&*s.store).await?;
    let failures: Vec<volumes::ReplicaFailure> = volumes::failures(&*s.store)
        .await?
        .into_iter()
        .filter(|f| vols.get(&f.volume).is_some_and(|v| v.has_replica(&f.node)))
        .collect();
    let failing = |v: &volumes::Volume, primary: bool| {
        failures
            .iter()
            .any(|f| f.volume == v.id && (f.node == v.primary) == primary)
    };
    let backend = backend_capacity(&s).await;
    let up = |n: &str| {
        nodes
            .get(n)
            .is_some_and(|(r, _)| r.activation == crate::model::Activation::Active)
            && services.get(n) == Some(&Service::Available)
    };
    Ok(Json(api::Status {
        leader: crate::leader::current(&*s.store).await?,
        nodes: nodes.len() as u64,
        active: nodes
            .values()
            .filter(|(n, _)| n.activation == crate::model::Activation::Active)
            .count() as u64,
        available: services
            .values()
            .filter(|s| **s == Service::Available)
            .count() as u64,
        draining: nodes
            .values()
            .filter(|(n, _)| n.draining)
            .map(|(n, _)| n.name.clone())
            .collect(),
        volumes: vols.len() as u64,
        degraded: vols
            .values()
            .filter(|v| v.in_sync.len() < v.replicas.len() || failing(v, false))
            .map(|v| v.name.clone())
            .collect(),
        unavailable: vols
            .values()
            .filter(|v| !up(&v.primary) || failing(v, true))
            .map(|v| v.name.clone())
            .collect(),
        capacity_bytes: nodes
            .values()
            .filter(|(n, _)| n.activation == crate::model::Activation::Active)
            .map(|(n, _)| n.cache_bytes())
            .sum(),
        provisioned_bytes: vols.values().map(|v| v.size).sum(),
        backend_capacity_bytes: backend.map(|c| c.total.0),
        backend_free_bytes: backend.map(|c| c.free.0),
        unreadable: unreadable.iter().map(Into::into).collect(),
        failures: failures.iter().map(Into::into).collect(),
    }))
}

/// The backend's capacity, if this server has a backend that can tell (a failure is logged and
/// leaves the figures out: the rest of the status still answers).
async fn backend_capacity(s: &ApiState) -> Option<alcubierre_backend::Capacity> {
    let b = s.backend.clone()?;
    let answer = tokio::task::spawn_blocking(move || b.capacity())
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    answer
        .inspect_err(|e| tracing::warn!(error = %e, "the backend's capacity is unknown"))
        .ok()
        .flatten()
}

async fn console() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("console.html"))
}

async fn list_volumes(State(s): State<ApiState>, h: HeaderMap) -> ApiResult<Vec<api::Volume>> {
    authorize(&s, &h)?;
    Ok(Json(
        volumes::list(&*s.store)
            .await?
            .into_values()
            .map(Into::into)
            .collect(),
    ))
}

async fn create_volume(
    State(s): State<ApiState>,
    h: HeaderMap,
    Body(r): Body<CreateVolume>,
) -> Result<(StatusCode, Json<api::Volume>), ApiError> {
    authorize(&s, &h)?;
    let v = match &r.source {
        Some(source) => snapshots::create_from_snapshot(&s, &r, source).await?,
        None => snapshots::create_plain(&s, &r, new_id()?).await?,
    };
    Ok((StatusCode::CREATED, Json(v.into())))
}

/// A fresh volume id (UUID v4 text) from the OS's random source; when that fails, an error
/// (never a fixed id).
fn new_id() -> Result<String, ApiError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| {
        tracing::error!("the OS random source failed: {e}");
        err(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot make a volume id: the OS random source failed: {e}"),
            None,
        )
    })?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

async fn get_volume(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<api::Volume> {
    authorize(&s, &h)?;
    Ok(Json(volumes::find(&*s.store, &id).await?.0.into()))
}

/// Replication progress of volumes whose replicas are catching up.
async fn replication(State(s): State<ApiState>, h: HeaderMap) -> ApiResult<Vec<api::Progress>> {
    authorize(&s, &h)?;
    // A record can outlive its volume when the volume is deleted with its primary down.
    let live = volumes::list(&*s.store).await?;
    let mut out = volumes::progress(&*s.store).await?;
    out.retain(|p| live.contains_key(&p.volume));
    Ok(Json(out.iter().map(Into::into).collect()))
}

async fn delete_volume(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<api::Volume> {
    authorize(&s, &h)?;
    Ok(Json(volumes::delete(&*s.store, &id).await?.into()))
}

async fn resize_volume(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
    Body(r): Body<api::Resize>,
) -> ApiResult<api::Volume> {
    authorize(&s, &h)?;
    Ok(Json(
        volumes::resize(&*s.store, &id, r.size, &s.licence)
            .await?
            .into(),
    ))
}

async fn set_volume_hosts(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
    Body(r): Body<api::VolumeHosts>,
) -> ApiResult<api::Volume> {
    authorize(&s, &h)?;
    Ok(Json(
        volumes::set_hosts(&*s.store, &id, &r.hosts).await?.into(),
    ))
}

async fn set_volume_qos(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
    Body(r): Body<api::VolumeQos>,
) -> ApiResult<api::Volume> {
    authorize(&s, &h)?;
    Ok(Json(
        volumes::set_qos(&*s.store, &id, r.qos.as_deref())
            .await?
            .into(),
    ))
}

async fn list_prefix<T: serde::de::DeserializeOwned>(
    s: &ApiState,
    prefix: &str,
) -> Result<Vec<T>, ApiError> {
    let mut out = Vec::new();
    for kv in s.store.list(prefix).await? {
        out.push(serde_json::from_slice(&kv.value).map_err(|_| {
            err(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("record {} is corrupt", kv.key),
                None,
            )
        })?);
    }
    Ok(out)
}

async fn list_qos(State(s): State<ApiState>, h: HeaderMap) -> ApiResult<api::QosPolicies> {
    authorize(&s, &h)?;
    let mut out = api::QosPolicies::new();
    for kv in s.store.list("qos/").await? {
        let q: QosPolicy = serde_json::from_slice(&kv.value).map_err(|_| {
            err(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("record {} is corrupt", kv.key),
                None,
            )
        })?;
        out.insert(kv.key["qos/".len()..].to_string(), (&q).into());
    }
    Ok(Json(out))
}

async fn put_qos(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(name): Path<String>,
    Body(q): Body<api::QosPolicy>,
) -> ApiResult<api::QosPolicy> {
    authorize(&s, &h)?;
    volumes::put_qos(&*s.store, &name, &(&q).into()).await?;
    Ok(Json(q))
}

async fn delete_qos(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&s, &h)?;
    let found = volumes::delete_qos(&*s.store, &name).await?;
    deleted(found, || format!("no QoS policy named {name:?}"))
}

/// 204 for a delete that found its object, else 404 with `missing`'s message.
fn deleted(found: bool, missing: impl FnOnce() -> String) -> Result<StatusCode, ApiError> {
    if found {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(err(StatusCode::NOT_FOUND, missing(), None))
    }
}

async fn delete_host(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&s, &h)?;
    let found = volumes::delete_host(&*s.store, &name).await?;
    deleted(found, || format!("no host named {name:?}"))
}

/// The OpenAPI document of this API (no token needed).
async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        DOC.get_or_init(alcubierre_api::openapi_json),
    )
}

async fn list_hosts(State(s): State<ApiState>, h: HeaderMap) -> ApiResult<Vec<api::HostView>> {
    authorize(&s, &h)?;
    let list: Vec<Host> = list_prefix(&s, "hosts/").await?;
    let seen = hosts::liveness_all(&s).await?;
    // CHAP secrets are write-only.
    Ok(Json(
        list.iter()
            .map(|h| {
                let mut v = api::HostView::from(h);
                v.liveness = seen.get(&h.name).cloned();
                v
            })
            .collect(),
    ))
}

async fn put_host(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(name): Path<String>,
    Body(host): Body<api::Host>,
) -> ApiResult<api::HostView> {
    authorize(&s, &h)?;
    if !host.name.is_empty() && host.name != name {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!("name: {:?} differs from the path's {name:?}", host.name),
            Some("name"),
        ));
    }
    let mut host = Host::from(host);
    host.name = name;
    volumes::put_host(&*s.store, &host).await?;
    Ok(Json((&host).into()))
}

impl From<StoredConfigError> for ApiError {
    fn from(e: StoredConfigError) -> Self {
        let m = e.to_string();
        match e {
            StoredConfigError::Invalid(c) => err(StatusCode::BAD_REQUEST, m, Some(&c.field)),
            StoredConfigError::Store(_) | StoredConfigError::Corrupt(_) => {
                err(StatusCode::SERVICE_UNAVAILABLE, m, None)
            }
        }
    }
}

async fn get_config(State(s): State<ApiState>, h: HeaderMap) -> ApiResult<api::ClusterConfig> {
    authorize(&s, &h)?;
    Ok(Json((&cluster::load(&*s.store).await?).into()))
}

async fn put_config(
    State(s): State<ApiState>,
    h: HeaderMap,
    Body(c): Body<api::ClusterConfig>,
) -> ApiResult<api::ClusterConfig> {
    authorize(&s, &h)?;
    let c = ClusterConfig::from(c);
    cluster::save(&*s.store, &c).await?;
    Ok(Json((&c).into()))
}

/// Changes the fields a partial document names and keeps the others (a JSON merge patch, RFC
/// 7386: `null` resets a field to its default); the result is checked and saved as by PUT.
async fn patch_config(
    State(s): State<ApiState>,
    h: HeaderMap,
    Body(patch): Body<serde_json::Value>,
) -> ApiResult<api::ClusterConfig> {
    authorize(&s, &h)?;
    if !patch.is_object() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object naming the fields to change",
            None,
        ));
    }
    let current = api::ClusterConfig::from(&cluster::load(&*s.store).await?);
    let mut doc = serde_json::to_value(current).expect("serialises");
    merge_patch(&mut doc, &patch);
    let c: api::ClusterConfig = serde_path_to_error::deserialize(doc).map_err(|e| {
        let m = format!("Failed to deserialize the JSON body into the target type: {e}");
        rejected(&m, StatusCode::UNPROCESSABLE_ENTITY)
    })?;
    let c = ClusterConfig::from(c);
    cluster::save(&*s.store, &c).await?;
    Ok(Json((&c).into()))
}

/// Applies JSON merge patch `patch` to `doc` (RFC 7386).
fn merge_patch(doc: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(p) = patch else {
        *doc = patch.clone();
        return;
    };
    if !doc.is_object() {
        *doc = serde_json::Value::Object(Default::default());
    }
    let d = doc.as_object_mut().expect("an object");
    for (k, v) in p {
        if v.is_null() {
            d.remove(k);
        } else {
            merge_patch(d.entry(k.clone()).or_insert(serde_json::Value::Null), v);
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanQuery {
    nodes: u32,
    usable_tb: f64,
    #[serde(default = "one")]
    cache_disks: u32,
    #[serde(default = "three")]
    ceph_replicas: u32,
}

fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}

async fn get_plan(
    State(s): State<ApiState>,
    h: HeaderMap,
    Params(q): Params<PlanQuery>,
) -> ApiResult<crate::plan::Plan> {
    authorize(&s, &h)?;
    let p = plan(&PlanInput {
        nodes: q.nodes,
        usable_tb: q.usable_tb,
        ceph_replicas: q.ceph_replicas,
        cache_disks_per_node: q.cache_disks,
        osds: None,
        cpu_ghz: None,
        cores_per_socket: None,
        sockets: None,
        cache_disk_tb: None,
    })
    .map_err(|e| {
        let crate::plan::PlanError::Invalid { field, .. } = &e;
        err(StatusCode::BAD_REQUEST, e.to_string(), Some(field))
    })?;
    Ok(Json(p))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckQuery {
    usable_tb: f64,
    #[serde(default = "three")]
    ceph_replicas: u32,
    osds: Option<u32>,
}

async fn check_plan(
    State(s): State<ApiState>,
    h: HeaderMap,
    Params(q): Params<CheckQuery>,
) -> ApiResult<crate::plan::Check> {
    authorize(&s, &h)?;
    let nodes = registry::nodes(&*s.store).await?;
    let config = cluster::load(&*s.store).await?;
    let active: Vec<&Node> = nodes
        .values()
        .map(|(n, _)| n)
        .filter(|n| n.activation == crate::model::Activation::Active)
        .collect();
    let live: Vec<crate::plan::LiveNode> = active
        .iter()
        .map(|n| crate::plan::LiveNode {
            name: &n.name,
            cache_bytes: n.cache.iter().map(|c| c.size).collect(),
            cpu_threads: n.cpu_threads,
        })
        .collect();
    let rate = config.destage_rate(active.len() as u32);
    let c = crate::plan::check(&live, rate, q.usable_tb, q.ceph_replicas, q.osds).map_err(|e| {
        let crate::plan::PlanError::Invalid { field, .. } = &e;
        err(StatusCode::BAD_REQUEST, e.to_string(), Some(field))
    })?;
    Ok(Json(c))
}

async fn metrics(State(s): State<ApiState>) -> Result<String, ApiError> {
    let nodes = registry::nodes(&*s.store).await?;
    let services = registry::service_states(&*s.store).await?;
    let vols = volumes::list(&*s.store).await?;
    let mut r = crate::metrics::Registry::new();
    let f = r.gauge(
        "alcubierre_node_available",
        "1 when the node's heartbeat is alive.",
    );
    for (name, (node, _)) in &nodes {
        let up = services.get(name) == Some(&Service::Available);
        f.sample(
            &[("node", name), ("activation", node.activation.name())],
            up as u8,
        );
    }
    let f = r.gauge(
        "alcubierre_node_cache_bytes",
        "Cache device capacity of the node.",
    );
    for (name, (node, _)) in &nodes {
        f.sample(&[("node", name)], node.cache_bytes());
    }
    r.gauge("alcubierre_volumes", "Volumes in the cluster.")
        .sample(&[], vols.len());
    let f = r.gauge(
        "alcubierre_volume_size_bytes",
        "Provisioned size of each volume.",
    );
    for v in vols.values() {
        f.sample(&[("volume", &v.id), ("name", &v.name)], v.size);
    }
    let f = r.gauge(
        "alcubierre_volume_in_sync_replicas",
        "Replicas holding every acknowledged write.",
    );
    for v in vols.values() {
        f.sample(
            &[
                ("volume", &v.id),
                ("name", &v.name),
                ("primary", &v.primary),
            ],
            v.in_sync.len(),
        );
    }
    if let Some(f) = &s.node_metrics {
        f(&mut r);
    }
    Ok(r.render())
}

async fn not_found() -> ApiError {
    err(
        StatusCode::NOT_FOUND,
        "no such endpoint (the API's routes: GET /api/v1/openapi.json)",
        None,
    )
}

async fn method_not_allowed() -> ApiError {
    err(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint (the API's routes: GET /api/v1/openapi.json)",
        None,
    )
}

/// The router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/api/v1/cluster/config",
            get(get_config).put(put_config).patch(patch_config),
        )
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/activate", post(activate))
        .route("/api/v1/nodes/{name}/deactivate", post(deactivate))
        .route("/api/v1/nodes/{name}/drain", post(drain))
        .route("/api/v1/nodes/{name}/undrain", post(undrain))
        .route("/api/v1/status", get(status))
        .route("/", get(console))
        .route("/api/v1/volumes", get(list_volumes).post(create_volume))
        .route(
            "/api/v1/volumes/{id}",
            get(get_volume).delete(delete_volume),
        )
        .route("/api/v1/volumes/{id}/resize", post(resize_volume))
        .route("/api/v1/volumes/{id}/hosts", put(set_volume_hosts))
        .route("/api/v1/volumes/{id}/qos", put(set_volume_qos))
        .route(
            "/api/v1/volumes/{id}/connection",
            get(attachments::get_connection),
        )
        .route(
            "/api/v1/volumes/{id}/attachments",
            get(attachments::list_for_volume),
        )
        .route(
            "/api/v1/volumes/{id}/attachments/{host}",
            put(attachments::attach).delete(attachments::detach),
        )
        .route(
            "/api/v1/volumes/{id}/snapshots",
            get(snapshots::list_snapshots).post(snapshots::create_snapshot),
        )
        .route(
            "/api/v1/volumes/{id}/snapshots/{snapshot}",
            get(snapshots::get_snapshot).delete(snapshots::delete_snapshot),
        )
        .route("/api/v1/replication", get(replication))
        .route("/api/v1/qos", get(list_qos))
        .route("/api/v1/qos/{name}", put(put_qos).delete(delete_qos))
        .route("/api/v1/hosts", get(list_hosts))
        .route(
            "/api/v1/hosts/{name}",
            get(hosts::get).put(put_host).delete(delete_host),
        )
        .route("/api/v1/hosts/{name}/heartbeat", put(hosts::heartbeat))
        .route("/api/v1/hosts/{name}/fence", post(hosts::fence))
        .route(
            "/api/v1/hosts/{name}/attachments",
            get(attachments::list_for_host),
        )
        .route("/api/v1/plan", get(get_plan))
        .route("/api/v1/plan/check", get(check_plan))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::body_error;

    #[test]
    fn body_errors_name_the_field_and_the_rule() {
        let wrong = "Failed to deserialize the JSON body into the target type: ";
        let cases = [
            (
                format!("{wrong}size: invalid type: string \"big\", expected u64 at line 1 column 15"),
                "size: must be a whole number (at least 0), not a string",
                Some("size"),
            ),
            (
                format!("{wrong}size: invalid value: integer `-1`, expected u64 at line 1 column 9"),
                "size: must be a whole number (at least 0), not -1",
                Some("size"),
            ),
            (
                format!("{wrong}missing field `name` at line 1 column 13"),
                "name: required",
                Some("name"),
            ),
            (
                format!("{wrong}source: missing field `snapshot` at line 1 column 30"),
                "source.snapshot: required",
                Some("source.snapshot"),
            ),
            (
                format!("{wrong}hosts: invalid type: string \"h1\", expected a sequence at line 1 column 20"),
                "hosts: must be a list, not a string",
                Some("hosts"),
            ),
            (
                format!("{wrong}invalid type: sequence, expected struct CreateVolume at line 1 column 1"),
                "the body: must be an object, not a list",
                None,
            ),
            (
                "Failed to parse the request body as JSON: EOF while parsing an object at line 1 column 9".to_string(),
                "the body is not JSON: EOF while parsing an object at line 1 column 9",
                None,
            ),
            (
                "Failed to deserialize query string: nodes: invalid digit found in string".to_string(),
                "nodes: invalid digit found in string",
                Some("nodes"),
            ),
        ];
        for (raw, want, field) in cases {
            let (m, f) = body_error(&raw);
            assert_eq!(m, want, "{raw}");
            assert_eq!(f.as_deref(), field, "{raw}");
        }
    }
}

//! Host liveness and fencing: host HA. A host's agent (`alcubierre-node`'s daemon) reports
//! each round (`PUT /api/v1/hosts/{name}/heartbeat`, to the API on the storage nodes'
//! addresses); a host whose reports stopped for [`HOST_TIMEOUT_MS`] is shown not alive, and
//! `POST /api/v1/hosts/{name}/fence` force-detaches it from every volume (its access removed,
//! its persistent reservations preempted), so its instances can be attached on another host.
//! Fencing a host that still reports, or one with no agent reporting (it cannot be told
//! failed), is refused unless forced: it would cut off running instances.
//!
//! A report is one small record per host, `host-liveness/<name>`, with the receiving node's
//! wall clock.

use std::collections::BTreeMap;

use alcubierre_api::v1 as api;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::attachments::detach_and_fence;
use super::{authorize, err, ApiError, ApiResult, ApiState, Body, Params};
use crate::volumes;

/// How long after its last report a host counts as not alive (five of the agent's default
/// two-second rounds).
pub const HOST_TIMEOUT_MS: u64 = 10_000;

const PREFIX: &str = "host-liveness/";

/// The stored report.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Seen {
    agent: String,
    at_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn view(host: &str, s: &Seen, now: u64) -> api::HostLiveness {
    api::HostLiveness {
        host: host.to_string(),
        agent: s.agent.clone(),
        last_seen_ms: s.at_ms,
        alive: now.saturating_sub(s.at_ms) < HOST_TIMEOUT_MS,
        timeout_ms: HOST_TIMEOUT_MS,
    }
}

/// Every host's liveness, by name.
pub(super) async fn liveness_all(
    s: &ApiState,
) -> Result<BTreeMap<String, api::HostLiveness>, ApiError> {
    let now = now_ms();
    let mut out = BTreeMap::new();
    for kv in s.store.list(PREFIX).await? {
        let name = kv.key.trim_start_matches(PREFIX).to_string();
        // A record this node cannot read shows as no report (never as alive).
        if let Ok(seen) = serde_json::from_slice::<Seen>(&kv.value) {
            out.insert(name.clone(), view(&name, &seen, now));
        }
    }
    Ok(out)
}

async fn liveness(s: &ApiState, host: &str) -> Result<Option<api::HostLiveness>, ApiError> {
    let Some(kv) = s.store.get(&format!("{PREFIX}{host}")).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<Seen>(&kv.value)
        .ok()
        .map(|seen| view(host, &seen, now_ms())))
}

/// `GET /api/v1/hosts/{name}`.
pub(super) async fn get(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<api::HostView> {
    authorize(&s, &h)?;
    let host = volumes::host(&*s.store, &name).await?.ok_or_else(|| {
        err(
            StatusCode::NOT_FOUND,
            format!("no host named {name:?}"),
            None,
        )
    })?;
    let mut v = api::HostView::from(&host);
    v.liveness = liveness(&s, &name).await?;
    Ok(Json(v))
}

/// `PUT /api/v1/hosts/{name}/heartbeat`.
pub(super) async fn heartbeat(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(name): Path<String>,
    Body(r): Body<api::Heartbeat>,
) -> ApiResult<api::HostLiveness> {
    authorize(&s, &h)?;
    if name.is_empty() || name.len() > 253 || name.contains('/') {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!("name: {name:?} is not a host name"),
            Some("name"),
        ));
    }
    if r.agent.len() > 200 {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "agent: longer than 200 characters",
            Some("agent"),
        ));
    }
    let seen = Seen {
        agent: r.agent,
        at_ms: now_ms(),
    };
    let value = serde_json::to_vec(&seen).expect("serialises");
    s.store.put(&format!("{PREFIX}{name}"), value, None).await?;
    Ok(Json(view(&name, &seen, seen.at_ms)))
}

/// The query of a fence.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FenceQuery {
    #[serde(default)]
    force: bool,
}

/// `POST /api/v1/hosts/{name}/fence[?force=true]`.
pub(super) async fn fence(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(name): Path<String>,
    Params(q): Params<FenceQuery>,
) -> ApiResult<api::Fenced> {
    authorize(&s, &h)?;
    let record = volumes::host(&*s.store, &name).await?.ok_or_else(|| {
        err(
            StatusCode::NOT_FOUND,
            format!("no host named {name:?} to fence"),
            Some("host"),
        )
    })?;
    let live = liveness(&s, &name).await?;
    if !q.force {
        match &live {
            Some(l) if l.alive => {
                return Err(err(
                    StatusCode::CONFLICT,
                    format!(
                        "host {name:?} is alive: its agent ({}) reported {} ms ago; fencing it \
                         would cut off what runs there. Fence a host that failed, or pass force=true",
                        l.agent,
                        now_ms().saturating_sub(l.last_seen_ms)
                    ),
                    Some("host"),
                ))
            }
            Some(_) => {}
            None => {
                return Err(err(
                    StatusCode::CONFLICT,
                    format!(
                        "host {name:?} has no agent reporting its liveness, so it cannot be told \
                         failed; once you know it is down (powered off, cut off), pass force=true"
                    ),
                    Some("host"),
                ))
            }
        }
    }
    // Every volume at once: each waits for its primary's confirmation.
    let mut tasks = tokio::task::JoinSet::new();
    for v in volumes::list(&*s.store).await?.into_values() {
        if v.hosts.contains(&name) {
            let (s, name, record) = (s.clone(), name.clone(), record.clone());
            tasks.spawn(async move {
                let r = detach_and_fence(&s, &v.id, &name, Some(&record)).await;
                (v.name, r)
            });
        }
    }
    let mut detached = Vec::new();
    let mut failed = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((_, Ok(d))) => detached.push(d),
            Ok((v, Err(e))) => failed.push(format!("{v}: {}", e.message)),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        return Err(err(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "fencing host {name:?} failed on {} volume(s) ({}); {} done; fence it again",
                failed.len(),
                failed.join("; "),
                detached.len()
            ),
            None,
        ));
    }
    detached.sort_by(|a, b| a.volume.cmp(&b.volume));
    tracing::warn!(host = %name, volumes = detached.len(), "fenced the host");
    Ok(Json(api::Fenced {
        host: name,
        liveness: live,
        detached,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_alive_until_its_reports_stop_for_the_timeout() {
        let seen = Seen {
            agent: "alcubierre-node 0.1.0".into(),
            at_ms: 1_000_000,
        };
        assert!(view("h", &seen, 1_000_000).alive);
        assert!(view("h", &seen, 1_000_000 + HOST_TIMEOUT_MS - 1).alive);
        assert!(!view("h", &seen, 1_000_000 + HOST_TIMEOUT_MS).alive);
        // A clock behind the report's (another node's) counts as just seen.
        let v = view("h", &seen, 999_000);
        assert!(v.alive);
        assert_eq!((v.host.as_str(), v.last_seen_ms), ("h", 1_000_000));
    }
}

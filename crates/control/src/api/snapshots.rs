//! Snapshot routes, and volume creation from a snapshot (see [`crate::snapshots`]).
//!
//! A snapshot request returns at once (202) with the record in state `creating`; the volume's
//! primary destages the volume and snapshots its image, then marks it `ready` (clients poll
//! `GET .../snapshots/{snapshot}`). Deleting a snapshot and cloning from one are done here, on
//! the backend of the node serving the API.

use std::sync::Arc;

use alcubierre_backend::{Backend, BackendError};
use alcubierre_types::{ByteSize, VolumeId};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::{authorize, err, new_id, ApiError, ApiResult, ApiState, Body};
use crate::snapshots::{self, SnapshotState};
use alcubierre_api::v1 as api;

use crate::volumes::{self, CreateVolume, VolumeError};

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        if let BackendError::InvalidSize { .. } = e {
            return err(
                StatusCode::BAD_REQUEST,
                format!("size: backend: {e}"),
                Some("size"),
            );
        }
        let status = match e {
            BackendError::NotFound { .. } => StatusCode::NOT_FOUND,
            BackendError::Exists { .. } => StatusCode::CONFLICT,
            BackendError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        err(status, format!("backend: {e}"), None)
    }
}

fn backend(s: &ApiState) -> Result<Arc<dyn Backend>, ApiError> {
    s.backend.clone().ok_or_else(|| {
        err(
            StatusCode::SERVICE_UNAVAILABLE,
            "this API server has no access to the backend; use a storage node's API",
            None,
        )
    })
}

fn volume_id(id: &str) -> Result<VolumeId, ApiError> {
    id.parse().map(VolumeId).map_err(|_| {
        err(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("volume record {id} has no valid UUID"),
            None,
        )
    })
}

/// Runs a blocking backend call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            err(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("backend call failed: {e}"),
                None,
            )
        })?
        .map_err(ApiError::from)
}

pub(super) async fn create_snapshot(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
    Body(r): Body<api::SnapshotRequest>,
) -> Result<(StatusCode, Json<api::Snapshot>), ApiError> {
    authorize(&s, &h)?;
    let snap = snapshots::request(&*s.store, &id, &r.name, (s.now)()).await?;
    Ok((StatusCode::ACCEPTED, Json((&snap).into())))
}

pub(super) async fn list_snapshots(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Vec<api::Snapshot>> {
    authorize(&s, &h)?;
    Ok(Json(
        snapshots::list(&*s.store, &id)
            .await?
            .iter()
            .map(Into::into)
            .collect(),
    ))
}

pub(super) async fn get_snapshot(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<api::Snapshot> {
    authorize(&s, &h)?;
    Ok(Json(
        (&snapshots::get(&*s.store, &id, &name).await?.1).into(),
    ))
}

pub(super) async fn delete_snapshot(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<api::Snapshot> {
    authorize(&s, &h)?;
    let (v, snap, rev) = snapshots::get(&*s.store, &id, &name).await?;
    if snap.state == SnapshotState::Creating {
        return Err(err(
            StatusCode::CONFLICT,
            format!("snapshot {name:?} is still being taken; delete it once it is ready"),
            None,
        ));
    }
    let b = backend(&s)?;
    let vid = volume_id(&v.id)?;
    let sname = snap.name.clone();
    match blocking(move || b.delete_snapshot(vid, &sname)).await {
        // A failed snapshot may never have reached the backend.
        Err(e) if e.status == StatusCode::NOT_FOUND => {}
        r => r?,
    }
    snapshots::remove(&*s.store, &snap, rev).await?;
    Ok(Json((&snap).into()))
}

/// Creates a volume that is not a clone. Where this API server reaches the backend, the
/// volume's image is made first, so a size the backend cannot hold is refused here (400 naming
/// `size`) instead of leaving every node to fail on it; if writing the record fails, the image
/// is deleted again.
pub(super) async fn create_plain(
    s: &ApiState,
    r: &CreateVolume,
    id: String,
) -> Result<volumes::Volume, ApiError> {
    let Some(b) = s.backend.clone() else {
        return Ok(volumes::create(&*s.store, r, id, &s.licence).await?);
    };
    volumes::check(&*s.store, r, &s.licence).await?;
    let vid = volume_id(&id)?;
    let (b2, size) = (b.clone(), r.size);
    blocking(move || b2.create(vid, ByteSize(size))).await?;
    write_or_undo(s, r, id, b, vid).await
}

/// Writes the record of a volume whose image `image` was just made (the request passed
/// [`volumes::check`]); if that fails, the image is deleted again.
async fn write_or_undo(
    s: &ApiState,
    r: &CreateVolume,
    id: String,
    b: Arc<dyn Backend>,
    image: VolumeId,
) -> Result<volumes::Volume, ApiError> {
    match volumes::place_and_write(&*s.store, r, id).await {
        Ok(v) => Ok(v),
        Err(e) => {
            if let Err(d) = blocking(move || b.delete(image)).await {
                tracing::error!(volume = %image, "deleting the image of a volume not created failed: {}", d.message);
            }
            Err(e.into())
        }
    }
}

/// Creates a volume cloned from `source`: the image is cloned first (a new, independent
/// image), then the volume is written; if writing fails the image is deleted again.
pub(super) async fn create_from_snapshot(
    s: &ApiState,
    r: &CreateVolume,
    source: &api::VolumeSource,
) -> Result<volumes::Volume, ApiError> {
    let field = |reason: String| VolumeError::Invalid {
        field: "source",
        reason,
    };
    let (sv, snap, _) = snapshots::get(&*s.store, &source.volume, &source.snapshot)
        .await
        .map_err(|e| match e {
            VolumeError::NotFound(what) => field(format!("{what} not found")),
            e => e,
        })?;
    // A clone has its snapshot's block size unless the request names one.
    let r = &CreateVolume {
        block_size: Some(r.block_size.unwrap_or(snap.block_size)),
        ..r.clone()
    };
    volumes::check(&*s.store, r, &s.licence).await?;
    if snap.state != SnapshotState::Ready {
        return Err(field(format!("snapshot {:?} is not ready", snap.name)).into());
    }
    if r.block_size() != snap.block_size {
        return Err(VolumeError::Invalid {
            field: "block_size",
            reason: format!("the snapshot's block size is {}", snap.block_size),
        }
        .into());
    }
    if r.size < snap.size {
        return Err(VolumeError::Invalid {
            field: "size",
            reason: format!(
                "the snapshot holds {} bytes; a clone is at least that",
                snap.size
            ),
        }
        .into());
    }
    if s.store
        .get(&format!("volume-names/{}", r.name))
        .await?
        .is_some()
    {
        return Err(VolumeError::NameTaken(r.name.clone()).into());
    }
    let b = backend(s)?;
    let id = new_id()?;
    let (src, target) = (volume_id(&sv.id)?, volume_id(&id)?);
    let (name, size) = (snap.name.clone(), r.size);
    let b2 = b.clone();
    blocking(move || {
        b2.clone_snapshot(src, &name, target)?;
        if size > b2.size(target)?.0 {
            b2.resize(target, ByteSize(size))?;
        }
        Ok(())
    })
    .await?;
    let mut req = r.clone();
    req.source = Some(api::VolumeSource {
        volume: sv.id.clone(),
        snapshot: snap.name.clone(),
    });
    write_or_undo(s, &req, id, b, target).await
}

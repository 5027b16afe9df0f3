//! Ceph RBD as a capacity backend: each volume is an RBD image `alcubierre-<volume uuid>` in one
//! pool, which the cache destages into ([`RbdBackend`], on the [`Backend`] contract).
//!
//! * I/O is asynchronous (`rbd_aio_*` completions as futures, [`ffi::Image`]); `write_many`
//!   issues a destage batch's extents at once and waits for all of them.
//! * Every librados call is bounded ([`RbdConfig::op_timeout`]): when Ceph is unreachable,
//!   operations fail with [`BackendError::Unavailable`] after that time, never hang, and the
//!   cache keeps the data and retries.
//! * Snapshots are RBD snapshots; a clone from a snapshot is an RBD clone, flattened at once so
//!   that it no longer depends on its source (which may then be deleted).
//! * [`RbdBackend::connect`] checks the monitors, the user, the pool and the pool's `rbd`
//!   application, and names the first that fails.

pub mod ffi;
pub mod testing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alcubierre_backend::{check_io, check_size, Backend, BackendError, Capacity};
use alcubierre_types::{ByteOffset, ByteSize, VolumeId};
use parking_lot::Mutex;

use ffi::{CephError, Cluster, Image, Pool};

/// RBD layering (clones).
const FEATURE_LAYERING: u64 = 1;
/// RBD's exclusive lock, which claims rest on (see [`RbdBackend`]'s `claim`).
const FEATURE_EXCLUSIVE_LOCK: u64 = 4;
/// The features of the images made here.
const FEATURES: u64 = FEATURE_LAYERING | FEATURE_EXCLUSIVE_LOCK;

/// How to reach the Ceph cluster and where the images live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RbdConfig {
    /// A ceph.conf to read (monitors, keyring, ...); `None` reads none.
    pub conf_file: Option<String>,
    /// Monitor addresses (`mon_host`), overriding the file's.
    pub mon_host: Option<String>,
    /// The pool holding the images.
    pub pool: String,
    /// The Ceph user, without `client.`.
    pub user: String,
    /// A keyring file, overriding the file's; `None` with cephx off.
    pub keyring: Option<String>,
    /// The longest a monitor or OSD operation may take before it fails.
    pub op_timeout: Duration,
}

impl Default for RbdConfig {
    fn default() -> Self {
        Self {
            conf_file: None,
            mon_host: None,
            pool: "rbd".into(),
            user: "admin".into(),
            keyring: None,
            op_timeout: Duration::from_secs(10),
        }
    }
}

/// Images of one pool.
///
/// **Claims** (docs/design/replication.md, "Backend fencing"): a volume's primary claims its
/// image by taking RBD's exclusive lock explicitly; a lock another client holds is broken
/// first, and Ceph then blocklists that client, so its writes (in flight ones too) are refused.
/// A blocklisted connection is useless for every image: on `EBLOCKLISTED` the backend connects
/// again (a new client), and the claims the old connection held are lost for good: writes to
/// those volumes fail with [`BackendError::Fenced`] until a new claim.
pub struct RbdBackend {
    conn: Mutex<Conn>,
    /// How to connect again after being blocklisted.
    cfg: RbdConfig,
    name: String,
    claims: Mutex<HashMap<VolumeId, Claim>>,
    /// librados's operation timeout: no write stays in flight longer.
    op_timeout: Duration,
}

/// One connection to the cluster and the images opened on it.
struct Conn {
    pool: Arc<Pool>,
    /// The connection's name (`client.<global id>`).
    client: String,
    open: HashMap<VolumeId, Arc<Image>>,
}

/// This node's claim on a volume's image.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Claim {
    /// Held through the connection named so.
    Held(String),
    /// Broken by another client (this one was blocklisted, or lost the lock): writes are fenced.
    Lost,
}

/// `EBLOCKLISTED` (Linux's `ESHUTDOWN`): the OSDs refuse this client.
const EBLOCKLISTED: i32 = 108;
/// `EROFS`: librbd's answer to a write without the exclusive lock when another client keeps it.
const EROFS: i32 = 30;
/// `EBUSY`.
const EBUSY: i32 = 16;

/// ENOENT, EEXIST, ETIMEDOUT and the other errnos that mean "try later".
fn to_backend(e: CephError, volume: Option<VolumeId>) -> BackendError {
    match e.errno {
        2 => BackendError::NotFound {
            what: volume.map_or(e.what.clone(), |v| v.to_string()),
        },
        17 => BackendError::Exists {
            what: volume.map_or(e.what.clone(), |v| v.to_string()),
        },
        // ETIMEDOUT, ESHUTDOWN, ECONNREFUSED, ENOTCONN, EAGAIN, EBLOCKLISTED (108).
        110 | 108 | 111 | 107 | 11 => BackendError::Unavailable(e.to_string()),
        n => BackendError::Io {
            what: e.what,
            source: std::io::Error::from_raw_os_error(n),
        },
    }
}

/// The image name of a volume.
pub fn image_name(volume: VolumeId) -> String {
    format!("alcubierre-{volume}")
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

/// Which part of an [`RbdConfig`] a failed connection points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Culprit {
    /// The monitors (none answered, or the libraries are missing).
    Monitors,
    /// The user or its keyring (refused).
    User,
    /// The pool (missing, or not enabled for RBD).
    Pool,
}

impl RbdBackend {
    /// Connects to the cluster and opens the pool; the error says which step failed (no
    /// monitor answered, the user was refused, no such pool, the pool is not for RBD).
    pub fn connect(cfg: &RbdConfig) -> Result<Self, BackendError> {
        Self::connect_checked(cfg).map_err(|(_, e)| e)
    }

    /// [`RbdBackend::connect`], also saying which setting is at fault.
    pub fn connect_checked(cfg: &RbdConfig) -> Result<Self, (Culprit, BackendError)> {
        let secs = cfg.op_timeout.as_secs().max(1).to_string();
        let mut opts = vec![
            // librados's own log goes nowhere; its errors come back in ours.
            ("log_to_stderr", "false".to_string()),
            ("err_to_stderr", "false".to_string()),
            ("client_mount_timeout", secs.clone()),
            ("rados_mon_op_timeout", secs.clone()),
            ("rados_osd_op_timeout", secs),
            // No librbd cache: destage writes whole rounds and flushes after each, so a
            // write-back cache would only add a copy and a lock (uncapped destage went from
            // 384 to 546 MB/s without it, docs/PERFORMANCE.md), and a completed write is then
            // already on the OSDs.
            ("rbd_cache", "false".to_string()),
            // A claim breaks an old holder's lock; only a blocklisted holder can no longer
            // write (whatever a ceph.conf says).
            ("rbd_blocklist_on_break_lock", "true".to_string()),
        ];
        if let Some(m) = &cfg.mon_host {
            opts.push(("mon_host", m.clone()));
        }
        if let Some(k) = &cfg.keyring {
            opts.push(("keyring", k.clone()));
        }
        let unavailable =
            |e: CephError, hint: &str| BackendError::Unavailable(format!("Ceph: {e}{hint}"));
        let cluster =
            Cluster::connect(&cfg.user, cfg.conf_file.as_deref(), &opts).map_err(|e| {
                match e.errno {
                    // librados answers a refused user with EACCES / EPERM and no monitor with
                    // ETIMEDOUT.
                    1 | 13 => {
                        let hint = format!(" (is client.{} allowed? check the keyring)", cfg.user);
                        (Culprit::User, unavailable(e, &hint))
                    }
                    110 => {
                        let hint = " (no monitor answered: check mon_host and the network)";
                        (Culprit::Monitors, unavailable(e, hint))
                    }
                    _ => (Culprit::Monitors, unavailable(e, "")),
                }
            })?;
        let pool = cluster.pool(&cfg.pool).map_err(|e| match e.errno {
            2 => (
                Culprit::Pool,
                BackendError::Unavailable(format!(
                    "Ceph: pool {:?} does not exist (create it with `ceph osd pool create {0}`)",
                    cfg.pool
                )),
            ),
            _ => (Culprit::Pool, unavailable(e, "")),
        })?;
        let apps = pool
            .applications()
            .map_err(|e| (Culprit::Pool, unavailable(e, "")))?;
        if !apps.iter().any(|a| a == "rbd") {
            let why = format!(
                "Ceph: pool {:?} is not enabled for RBD (enabled: {apps:?}; run `rbd pool init {0}`)",
                cfg.pool
            );
            return Err((Culprit::Pool, BackendError::Unavailable(why)));
        }
        Ok(Self {
            conn: Mutex::new(Conn {
                client: pool.cluster().client_name(),
                pool,
                open: HashMap::new(),
            }),
            cfg: cfg.clone(),
            name: cfg.pool.clone(),
            claims: Mutex::new(HashMap::new()),
            op_timeout: Duration::from_secs(cfg.op_timeout.as_secs().max(1)),
        })
    }

    fn pool(&self) -> Arc<Pool> {
        self.conn.lock().pool.clone()
    }

    fn image(&self, volume: VolumeId) -> Result<Arc<Image>, BackendError> {
        let pool = {
            let c = self.conn.lock();
            if let Some(i) = c.open.get(&volume) {
                return Ok(i.clone());
            }
            c.pool.clone()
        };
        let i = pool
            .open(&image_name(volume))
            .map_err(|e| self.fail(e, volume, &pool.cluster().client_name()))?;
        let mut c = self.conn.lock();
        if !Arc::ptr_eq(&c.pool, &pool) {
            // Connected again meanwhile: this handle belongs to the old connection.
            return Err(BackendError::Unavailable(format!(
                "the connection to Ceph was renewed while opening {}",
                image_name(volume)
            )));
        }
        Ok(c.open.entry(volume).or_insert(i).clone())
    }

    /// The backend error for `e`, met on `volume` through connection `client`. A blocklisted
    /// connection is replaced, and a claim made through it is lost: [`BackendError::Fenced`].
    /// So is a claimed image whose lock another client took (`EROFS`).
    fn fail(&self, e: CephError, volume: VolumeId, client: &str) -> BackendError {
        match e.errno {
            EBLOCKLISTED => {
                self.reconnect(client);
                if self.claims.lock().get(&volume) == Some(&Claim::Lost) {
                    return BackendError::Fenced { volume };
                }
                BackendError::Unavailable(format!(
                    "{e} (this node's Ceph client was blocklisted; it connected again)"
                ))
            }
            EROFS => {
                let mut claims = self.claims.lock();
                match claims.get_mut(&volume) {
                    Some(c) => {
                        *c = Claim::Lost;
                        BackendError::Fenced { volume }
                    }
                    None => to_backend(e, Some(volume)),
                }
            }
            _ => to_backend(e, Some(volume)),
        }
    }

    /// Replaces connection `client` (blocklisted) with a new one, unless that was done
    /// already; its claims are lost.
    fn reconnect(&self, client: &str) {
        let mut c = self.conn.lock();
        if c.client != client {
            return;
        }
        {
            let mut claims = self.claims.lock();
            for (volume, claim) in claims.iter_mut() {
                if *claim == Claim::Held(client.to_string()) {
                    tracing::error!(%volume, %client,
                        "this node's claim on the RBD image was broken: it is fenced off the image");
                    *claim = Claim::Lost;
                }
            }
        }
        match Self::connect_checked(&self.cfg) {
            Ok(fresh) => {
                let fresh = fresh.conn.into_inner();
                tracing::warn!(old = %client, new = %fresh.client,
                    "the Ceph client was blocklisted; connected again as a new client");
                *c = fresh;
            }
            // The next failure tries again.
            Err((_, e)) => tracing::warn!(%client, "connecting to Ceph again failed: {e}"),
        }
    }

    /// Refuses writes to a volume whose claim was lost.
    fn check_fence(&self, volume: VolumeId) -> Result<(), BackendError> {
        match self.claims.lock().get(&volume) {
            Some(Claim::Lost) => Err(BackendError::Fenced { volume }),
            _ => Ok(()),
        }
    }

    /// The clients holding `volume`'s image lock (their addresses), for tests and status.
    pub fn lock_owners(&self, volume: VolumeId) -> Result<Vec<String>, BackendError> {
        let image = self.image(volume)?;
        image
            .lock_owners()
            .map_err(|e| self.fail(e, volume, &image.client_name()))
    }

    /// Waits until this backend's connection has the cluster's latest OSD map, so that what it
    /// sends next obeys the map's flags (e.g. `ceph osd pause`); for tests and tools.
    pub fn wait_for_latest_map(&self) -> Result<(), BackendError> {
        let pool = self.conn.lock().pool.clone();
        pool.cluster()
            .wait_for_latest_osdmap()
            .map_err(|e| BackendError::Unavailable(format!("Ceph: {e}")))
    }

    /// Whether this backend's connection holds `volume`'s image lock.
    pub fn holds_lock(&self, volume: VolumeId) -> Result<bool, BackendError> {
        let image = self.image(volume)?;
        image
            .is_lock_owner()
            .map_err(|e| self.fail(e, volume, &image.client_name()))
    }

    /// This backend's current connection (`client.<global id>`, new on every connection).
    pub fn client_name(&self) -> String {
        self.conn.lock().client.clone()
    }

    fn check_range(
        &self,
        volume: VolumeId,
        image: &Image,
        offset: u64,
        len: u64,
    ) -> Result<(), BackendError> {
        let size = image.size().map_err(|e| to_backend(e, Some(volume)))?;
        check_io(volume, size, offset, len)
    }
}

impl Backend for RbdBackend {
    fn create(&self, volume: VolumeId, size: ByteSize) -> Result<(), BackendError> {
        check_size(volume, size)?;
        let pool = self.pool();
        pool.create(&image_name(volume), size.0, FEATURES)
            .map_err(|e| self.fail(e, volume, &pool.cluster().client_name()))
    }

    fn resize(&self, volume: VolumeId, size: ByteSize) -> Result<(), BackendError> {
        check_size(volume, size)?;
        let image = self.image(volume)?;
        let err = |e| self.fail(e, volume, &image.client_name());
        let now = image.size().map_err(err)?;
        if size.0 < now {
            return Err(BackendError::InvalidSize {
                volume,
                size: size.0,
                reason: "images only grow",
            });
        }
        image.resize(size.0).map_err(err)
    }

    fn delete(&self, volume: VolumeId) -> Result<(), BackendError> {
        let image = self.image(volume)?;
        let err = |e| self.fail(e, volume, &image.client_name());
        for snap in image.snapshots().map_err(err)? {
            if image.snap_is_protected(&snap).map_err(err)? {
                image.snap_unprotect(&snap).map_err(err)?;
            }
            image.snap_remove(&snap).map_err(err)?;
        }
        self.claims.lock().remove(&volume);
        self.conn.lock().open.remove(&volume);
        drop(image); // closes it (and gives its lock up): an open image cannot be removed
        self.pool()
            .remove(&image_name(volume))
            .map_err(|e| match e.errno {
                16 => BackendError::Unavailable(format!(
                    "image {} is open elsewhere (another node still uses it); try again later",
                    image_name(volume)
                )),
                _ => to_backend(e, Some(volume)),
            })
    }

    fn size(&self, volume: VolumeId) -> Result<ByteSize, BackendError> {
        let image = self.image(volume)?;
        Ok(ByteSize(
            image
                .size()
                .map_err(|e| self.fail(e, volume, &image.client_name()))?,
        ))
    }

    fn read(
        &self,
        volume: VolumeId,
        offset: ByteOffset,
        buf: &mut [u8],
    ) -> Result<(), BackendError> {
        let image = self.image(volume)?;
        self.check_range(volume, &image, offset.0, buf.len() as u64)?;
        let (n, data) = block_on(image.read(offset.0, buf.len()))
            .map_err(|e| self.fail(e, volume, &image.client_name()))?;
        let data = data.unwrap_or_default();
        if n as usize != buf.len() || data.len() != buf.len() {
            return Err(BackendError::Io {
                what: format!("reading {} bytes of {}", buf.len(), image.name()),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("librbd returned {n} bytes"),
                ),
            });
        }
        buf.copy_from_slice(&data);
        Ok(())
    }

    fn write(&self, volume: VolumeId, offset: ByteOffset, data: &[u8]) -> Result<(), BackendError> {
        self.write_many(volume, &[(offset, data)])
    }

    fn write_many(
        &self,
        volume: VolumeId,
        extents: &[(ByteOffset, &[u8])],
    ) -> Result<(), BackendError> {
        self.check_fence(volume)?;
        let image = self.image(volume)?;
        let err = |e| self.fail(e, volume, &image.client_name());
        let size = image.size().map_err(err)?;
        for (offset, data) in extents {
            check_io(volume, size, offset.0, data.len() as u64)?;
        }
        let all: Vec<_> = extents
            .iter()
            .map(|(offset, data)| image.write(offset.0, data.to_vec()))
            .collect();
        // Every error is looked at: a fenced write among others that failed otherwise still
        // says the volume is fenced.
        let mut first = None;
        for r in block_on(futures::future::join_all(all)) {
            if let Err(e) = r.map_err(err) {
                if first.is_none() || matches!(e, BackendError::Fenced { .. }) {
                    first = Some(e);
                }
            }
        }
        if let Some(e) = first {
            return Err(e);
        }
        Ok(())
    }

    fn discard(
        &self,
        volume: VolumeId,
        offset: ByteOffset,
        len: ByteSize,
    ) -> Result<(), BackendError> {
        self.check_fence(volume)?;
        let image = self.image(volume)?;
        self.check_range(volume, &image, offset.0, len.0)?;
        block_on(image.write_zeroes(offset.0, len.0 as usize))
            .map(|_| ())
            .map_err(|e| self.fail(e, volume, &image.client_name()))
    }

    fn flush(&self, volume: VolumeId) -> Result<(), BackendError> {
        self.check_fence(volume)?;
        let image = self.image(volume)?;
        block_on(image.flush())
            .map(|_| ())
            .map_err(|e| self.fail(e, volume, &image.client_name()))
    }

    fn snapshot(&self, volume: VolumeId, name: &str) -> Result<(), BackendError> {
        let image = self.image(volume)?;
        image.snap_create(name).map_err(|e| match e.errno {
            17 => BackendError::Exists {
                what: format!("{volume}@{name}"),
            },
            _ => self.fail(e, volume, &image.client_name()),
        })
    }

    fn clone_snapshot(
        &self,
        source: VolumeId,
        name: &str,
        target: VolumeId,
    ) -> Result<(), BackendError> {
        let image = self.image(source)?;
        let not_found = |e: CephError| match e.errno {
            2 => BackendError::NotFound {
                what: format!("{source}@{name}"),
            },
            _ => to_backend(e, Some(source)),
        };
        // A clone needs a protected snapshot; another clone from it that finishes meanwhile
        // unprotects it again (EINVAL here), so protect and clone again then.
        for attempt in 0.. {
            // EBUSY: another clone is protecting it right now.
            match image.snap_protect(name) {
                Err(e) if e.errno == 16 => {}
                r => r.map_err(not_found)?,
            }
            match self
                .pool()
                .clone_image(&image_name(source), name, &image_name(target), FEATURES)
            {
                Err(e) if e.errno == 22 && attempt < 3 => continue,
                r => r.map_err(|e| to_backend(e, Some(target)))?,
            }
            break;
        }
        let clone = self.image(target)?;
        clone.flatten().map_err(|e| to_backend(e, Some(target)))?;
        // Flattened: the snapshot has no child from this clone and can be unprotected again,
        // unless another clone from it is still flattening (EBUSY): that one unprotects it.
        match image.snap_unprotect(name) {
            Err(e) if e.errno == 16 => Ok(()),
            r => r.map_err(|e| to_backend(e, Some(source))),
        }
    }

    fn list_snapshots(&self, volume: VolumeId) -> Result<Vec<String>, BackendError> {
        let mut names = self
            .image(volume)?
            .snapshots()
            .map_err(|e| to_backend(e, Some(volume)))?;
        names.sort();
        Ok(names)
    }

    fn delete_snapshot(&self, volume: VolumeId, name: &str) -> Result<(), BackendError> {
        let image = self.image(volume)?;
        let err = |e: CephError| match e.errno {
            2 => BackendError::NotFound {
                what: format!("{volume}@{name}"),
            },
            16 => BackendError::Unavailable(format!(
                "snapshot {volume}@{name} is being cloned; try again later"
            )),
            _ => to_backend(e, Some(volume)),
        };
        if image.snap_is_protected(name).map_err(err)? {
            image.snap_unprotect(name).map_err(err)?;
        }
        image.snap_remove(name).map_err(err)
    }

    fn write_timeout(&self) -> Duration {
        // An op that timed out may have been queued at an OSD a little longer.
        self.op_timeout + Duration::from_secs(1)
    }

    fn claim(&self, volume: VolumeId) -> Result<(), BackendError> {
        let image = self.image(volume)?;
        let me = image.client_name();
        let err = |e: CephError| match e.errno {
            EBLOCKLISTED => self.fail(e, volume, &me),
            // Another client keeps taking the lock: try later.
            EROFS | EBUSY => BackendError::Unavailable(format!(
                "{e} (another client keeps taking the image's lock)"
            )),
            _ => to_backend(e, Some(volume)),
        };
        // Images made before claims existed get the lock feature now, and are opened again
        // (an open handle does not take the lock up).
        let image = if image.features().map_err(err)? & FEATURE_EXCLUSIVE_LOCK == 0 {
            image
                .update_features(FEATURE_EXCLUSIVE_LOCK, true)
                .map_err(err)?;
            self.conn.lock().open.remove(&volume);
            drop(image);
            self.image(volume)?
        } else {
            image
        };
        // Break whoever else holds the lock (Ceph blocklists it), then take it. Another
        // client may take it between the two: then break that one too.
        for attempt in 0.. {
            if image.is_lock_owner().map_err(err)? {
                // Taken by this connection already (a write takes it on its own): keep it.
                image.lock_acquire().map_err(err)?;
                break;
            }
            for owner in image.lock_owners().map_err(err)? {
                tracing::warn!(%volume, %owner, "breaking another client's lock on the RBD image (it is blocklisted)");
                match image.lock_break(&owner) {
                    // ENOENT: it went meanwhile.
                    Err(e) if e.errno == 2 => {}
                    r => r.map_err(err)?,
                }
            }
            match image.lock_acquire() {
                Err(e) if (e.errno == EROFS || e.errno == EBUSY) && attempt < 3 => continue,
                r => r.map_err(err)?,
            }
            break;
        }
        self.claims.lock().insert(volume, Claim::Held(me));
        Ok(())
    }

    fn release_claim(&self, volume: VolumeId) -> Result<(), BackendError> {
        let claim = self.claims.lock().remove(&volume);
        let Some(Claim::Held(client)) = claim else {
            return Ok(());
        };
        let image = self.image(volume)?;
        if image.client_name() != client {
            return Ok(()); // that connection is gone, and its lock with it
        }
        match image.lock_release() {
            // Not held (any more): nothing to give up.
            Err(e) if e.errno == 22 || e.errno == 2 => Ok(()),
            r => r.map_err(|e| self.fail(e, volume, &client)),
        }
    }

    fn capacity(&self) -> Result<Option<Capacity>, BackendError> {
        let pool = self.pool();
        let out = pool
            .cluster()
            .mon_command(r#"{"prefix": "df", "format": "json"}"#)
            .map_err(|e| BackendError::Unavailable(format!("the pool's free space: {e}")))?;
        pool_space(&out, &self.name).map(Some)
    }

    fn describe(&self) -> String {
        format!("Ceph RBD images alcubierre-<volume> in pool {}", self.name)
    }
}

/// Pool `name`'s capacity from the monitors' `df` (JSON): what it stores plus what it can
/// still take (`max_avail`, which counts its replication and the cluster's full ratio). The
/// figures come from the managers' digest: a cluster without a running ceph-mgr has none.
fn pool_space(df: &[u8], name: &str) -> Result<Capacity, BackendError> {
    let bad = |why: String| BackendError::Unavailable(format!("the monitors' df answer: {why}"));
    let doc: serde_json::Value =
        serde_json::from_slice(df).map_err(|e| bad(format!("not JSON: {e}")))?;
    let pool = doc["pools"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .ok_or_else(|| {
            bad(format!(
                "no usage of pool {name} (the managers report it: is a ceph-mgr running?)"
            ))
        })?;
    let field = |f: &str| {
        pool["stats"][f]
            .as_u64()
            .ok_or_else(|| bad(format!("pool {name} has no stats.{f}")))
    };
    let (stored, free) = (field("stored")?, field("max_avail")?);
    Ok(Capacity {
        total: ByteSize(stored.saturating_add(free)),
        free: ByteSize(free),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pools_space_comes_from_the_monitors_df() {
        let df = br#"{"stats": {"total_bytes": 9},
            "pools": [{"name": "other", "stats": {"stored": 1, "max_avail": 2}},
                      {"name": "rbd", "stats": {"stored": 1000, "max_avail": 5000}}]}"#;
        let c = pool_space(df, "rbd").unwrap();
        assert_eq!((c.total, c.free), (ByteSize(6000), ByteSize(5000)));
        let e = pool_space(df, "gone").unwrap_err().to_string();
        assert!(e.contains("no usage of pool gone"), "{e}");
        let e = pool_space(b"{}", "rbd").unwrap_err().to_string();
        assert!(e.contains("ceph-mgr"), "{e}");
        let e = pool_space(br#"{"pools": [{"name": "rbd", "stats": {}}]}"#, "rbd")
            .unwrap_err()
            .to_string();
        assert!(e.contains("stats.stored"), "{e}");
    }
}

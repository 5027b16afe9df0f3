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

use alcubierre_backend::{check_io, check_size, Backend, BackendError};
use alcubierre_types::{ByteOffset, ByteSize, VolumeId};
use parking_lot::Mutex;

use ffi::{CephError, Cluster, Image, Pool};

/// RBD layering (clones), the only image feature used.
const FEATURE_LAYERING: u64 = 1;

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
pub struct RbdBackend {
    pool: Arc<Pool>,
    name: String,
    open: Mutex<HashMap<VolumeId, Arc<Image>>>,
    /// librados's operation timeout: no write stays in flight longer.
    op_timeout: Duration,
}

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
            pool,
            name: cfg.pool.clone(),
            open: Mutex::new(HashMap::new()),
            op_timeout: Duration::from_secs(cfg.op_timeout.as_secs().max(1)),
        })
    }

    fn image(&self, volume: VolumeId) -> Result<Arc<Image>, BackendError> {
        if let Some(i) = self.open.lock().get(&volume) {
            return Ok(i.clone());
        }
        let i = self
            .pool
            .open(&image_name(volume))
            .map_err(|e| to_backend(e, Some(volume)))?;
        Ok(self.open.lock().entry(volume).or_insert(i).clone())
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
        self.pool
            .create(&image_name(volume), size.0, FEATURE_LAYERING)
            .map_err(|e| to_backend(e, Some(volume)))
    }

    fn resize(&self, volume: VolumeId, size: ByteSize) -> Result<(), BackendError> {
        check_size(volume, size)?;
        let image = self.image(volume)?;
        let now = image.size().map_err(|e| to_backend(e, Some(volume)))?;
        if size.0 < now {
            return Err(BackendError::InvalidSize {
                volume,
                size: size.0,
                reason: "images only grow",
            });
        }
        image
            .resize(size.0)
            .map_err(|e| to_backend(e, Some(volume)))
    }

    fn delete(&self, volume: VolumeId) -> Result<(), BackendError> {
        let image = self.image(volume)?;
        let err = |e| to_backend(e, Some(volume));
        for snap in image.snapshots().map_err(err)? {
            if image.snap_is_protected(&snap).map_err(err)? {
                image.snap_unprotect(&snap).map_err(err)?;
            }
            image.snap_remove(&snap).map_err(err)?;
        }
        self.open.lock().remove(&volume);
        drop(image); // closes it: an open image cannot be removed
        self.pool
            .remove(&image_name(volume))
            .map_err(|e| match e.errno {
                16 => BackendError::Unavailable(format!(
                    "image {} is open elsewhere (another node still uses it); try again later",
                    image_name(volume)
                )),
                _ => err(e),
            })
    }

    fn size(&self, volume: VolumeId) -> Result<ByteSize, BackendError> {
        let image = self.image(volume)?;
        Ok(ByteSize(
            image.size().map_err(|e| to_backend(e, Some(volume)))?,
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
        let (n, data) =
            block_on(image.read(offset.0, buf.len())).map_err(|e| to_backend(e, Some(volume)))?;
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
        let image = self.image(volume)?;
        let size = image.size().map_err(|e| to_backend(e, Some(volume)))?;
        for (offset, data) in extents {
            check_io(volume, size, offset.0, data.len() as u64)?;
        }
        let all: Vec<_> = extents
            .iter()
            .map(|(offset, data)| image.write(offset.0, data.to_vec()))
            .collect();
        for r in block_on(futures::future::join_all(all)) {
            r.map_err(|e| to_backend(e, Some(volume)))?;
        }
        Ok(())
    }

    fn discard(
        &self,
        volume: VolumeId,
        offset: ByteOffset,
        len: ByteSize,
    ) -> Result<(), BackendError> {
        let image = self.image(volume)?;
        self.check_range(volume, &image, offset.0, len.0)?;
        block_on(image.write_zeroes(offset.0, len.0 as usize))
            .map(|_| ())
            .map_err(|e| to_backend(e, Some(volume)))
    }

    fn flush(&self, volume: VolumeId) -> Result<(), BackendError> {
        let image = self.image(volume)?;
        block_on(image.flush())
            .map(|_| ())
            .map_err(|e| to_backend(e, Some(volume)))
    }

    fn snapshot(&self, volume: VolumeId, name: &str) -> Result<(), BackendError> {
        let image = self.image(volume)?;
        image.snap_create(name).map_err(|e| match e.errno {
            17 => BackendError::Exists {
                what: format!("{volume}@{name}"),
            },
            _ => to_backend(e, Some(volume)),
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
            match self.pool.clone_image(
                &image_name(source),
                name,
                &image_name(target),
                FEATURE_LAYERING,
            ) {
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

    fn describe(&self) -> String {
        format!("Ceph RBD images alcubierre-<volume> in pool {}", self.name)
    }
}

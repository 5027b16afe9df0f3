//! librados and librbd, loaded at run time (`librados.so.2`, `librbd.so.1`, Ceph 16.2's C API),
//! behind safe types: [`Cluster`], [`Pool`], [`Image`]. Every `unsafe` block of the crate is in
//! this module, each with its `SAFETY:` argument.
//!
//! Loading at run time keeps Ceph out of the build: a node that does not use the RBD backend
//! needs neither the libraries nor their headers, and one that does gets a clear error naming
//! the missing library.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::channel::oneshot;

/// A negative errno from librados or librbd, with what was being done.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what}: {}", std::io::Error::from_raw_os_error(*.errno))]
pub struct CephError {
    /// What failed.
    pub what: String,
    /// The (positive) errno.
    pub errno: i32,
}

fn check(r: c_int, what: impl FnOnce() -> String) -> Result<(), CephError> {
    if r < 0 {
        Err(CephError {
            what: what(),
            errno: -r,
        })
    } else {
        Ok(())
    }
}

type RadosT = *mut c_void;
type IoCtxT = *mut c_void;
type ImageT = *mut c_void;
type CompletionT = *mut c_void;
type Callback = extern "C" fn(CompletionT, *mut c_void);

/// `RBD_LOCK_MODE_EXCLUSIVE`.
const LOCK_MODE_EXCLUSIVE: c_int = 0;

#[repr(C)]
struct SnapInfo {
    id: u64,
    size: u64,
    name: *const c_char,
}

/// The entry points used, resolved once.
struct Api {
    rados_create: unsafe extern "C" fn(*mut RadosT, *const c_char) -> c_int,
    rados_conf_read_file: unsafe extern "C" fn(RadosT, *const c_char) -> c_int,
    rados_conf_set: unsafe extern "C" fn(RadosT, *const c_char, *const c_char) -> c_int,
    rados_connect: unsafe extern "C" fn(RadosT) -> c_int,
    rados_shutdown: unsafe extern "C" fn(RadosT),
    rados_ioctx_create: unsafe extern "C" fn(RadosT, *const c_char, *mut IoCtxT) -> c_int,
    rados_ioctx_destroy: unsafe extern "C" fn(IoCtxT),
    rados_application_list: unsafe extern "C" fn(IoCtxT, *mut c_char, *mut usize) -> c_int,
    rados_mon_command: unsafe extern "C" fn(
        RadosT,
        *const *const c_char,
        usize,
        *const c_char,
        usize,
        *mut *mut c_char,
        *mut usize,
        *mut *mut c_char,
        *mut usize,
    ) -> c_int,
    rados_buffer_free: unsafe extern "C" fn(*mut c_char),
    rbd_create2: unsafe extern "C" fn(IoCtxT, *const c_char, u64, u64, *mut c_int) -> c_int,
    rbd_remove: unsafe extern "C" fn(IoCtxT, *const c_char) -> c_int,
    rbd_clone2: unsafe extern "C" fn(
        IoCtxT,
        *const c_char,
        *const c_char,
        IoCtxT,
        *const c_char,
        u64,
        *mut c_int,
        u64,
        c_int,
    ) -> c_int,
    rbd_open: unsafe extern "C" fn(IoCtxT, *const c_char, *mut ImageT, *const c_char) -> c_int,
    rbd_close: unsafe extern "C" fn(ImageT) -> c_int,
    rbd_resize: unsafe extern "C" fn(ImageT, u64) -> c_int,
    rbd_get_size: unsafe extern "C" fn(ImageT, *mut u64) -> c_int,
    rbd_flatten: unsafe extern "C" fn(ImageT) -> c_int,
    rbd_snap_create: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    rbd_snap_remove: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    rbd_snap_protect: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    rbd_snap_unprotect: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    rbd_snap_is_protected: unsafe extern "C" fn(ImageT, *const c_char, *mut c_int) -> c_int,
    rbd_snap_list: unsafe extern "C" fn(ImageT, *mut SnapInfo, *mut c_int) -> c_int,
    rbd_snap_list_end: unsafe extern "C" fn(*mut SnapInfo),
    rbd_aio_create_completion:
        unsafe extern "C" fn(*mut c_void, Callback, *mut CompletionT) -> c_int,
    rbd_aio_get_return_value: unsafe extern "C" fn(CompletionT) -> isize,
    rbd_aio_release: unsafe extern "C" fn(CompletionT),
    rbd_aio_write: unsafe extern "C" fn(ImageT, u64, usize, *const c_char, CompletionT) -> c_int,
    rbd_aio_read: unsafe extern "C" fn(ImageT, u64, usize, *mut c_char, CompletionT) -> c_int,
    rbd_aio_write_zeroes:
        unsafe extern "C" fn(ImageT, u64, usize, CompletionT, c_int, c_int) -> c_int,
    rbd_aio_flush: unsafe extern "C" fn(ImageT, CompletionT) -> c_int,
    rados_get_instance_id: unsafe extern "C" fn(RadosT) -> u64,
    rados_wait_for_latest_osdmap: unsafe extern "C" fn(RadosT) -> c_int,
    rbd_get_features: unsafe extern "C" fn(ImageT, *mut u64) -> c_int,
    rbd_update_features: unsafe extern "C" fn(ImageT, u64, u8) -> c_int,
    rbd_is_exclusive_lock_owner: unsafe extern "C" fn(ImageT, *mut c_int) -> c_int,
    rbd_lock_acquire: unsafe extern "C" fn(ImageT, c_int) -> c_int,
    rbd_lock_release: unsafe extern "C" fn(ImageT) -> c_int,
    rbd_lock_get_owners:
        unsafe extern "C" fn(ImageT, *mut c_int, *mut *mut c_char, *mut usize) -> c_int,
    rbd_lock_get_owners_cleanup: unsafe extern "C" fn(*mut *mut c_char, usize),
    rbd_lock_break: unsafe extern "C" fn(ImageT, c_int, *const c_char) -> c_int,
    // Keeps the libraries mapped for as long as the pointers above are used (for ever).
    _libs: (libloading::Library, libloading::Library),
}

/// The libraries' entry points, loaded on first use; the error names what is missing.
fn api() -> Result<&'static Api, CephError> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(|e| CephError {
        what: e.clone(),
        errno: 2, // ENOENT: a library is missing
    })
}

fn load() -> Result<Api, String> {
    let open = |name: &str, pkg: &str| {
        // SAFETY: loading a shared library runs its initialisers; librados and librbd are
        // Ceph's client libraries, whose initialisers only set up their own state.
        unsafe { libloading::Library::new(name) }
            .map_err(|e| format!("the RBD backend needs {name} (Debian package {pkg}): {e}"))
    };
    let rados = open("librados.so.2", "librados2")?;
    let rbd = open("librbd.so.1", "librbd1")?;
    macro_rules! sym {
        ($lib:expr, $name:ident) => {{
            // SAFETY: the symbol is looked up by its C name, and the field's type is the
            // function's signature in Ceph 16.2's librados.h / librbd.h.
            let s = unsafe { $lib.get(concat!(stringify!($name), "\0").as_bytes()) }
                .map_err(|e| format!("{} lacks {}: {e}", stringify!($lib), stringify!($name)))?;
            *s
        }};
    }
    Ok(Api {
        rados_create: sym!(rados, rados_create),
        rados_conf_read_file: sym!(rados, rados_conf_read_file),
        rados_conf_set: sym!(rados, rados_conf_set),
        rados_connect: sym!(rados, rados_connect),
        rados_shutdown: sym!(rados, rados_shutdown),
        rados_ioctx_create: sym!(rados, rados_ioctx_create),
        rados_ioctx_destroy: sym!(rados, rados_ioctx_destroy),
        rados_application_list: sym!(rados, rados_application_list),
        rados_mon_command: sym!(rados, rados_mon_command),
        rados_buffer_free: sym!(rados, rados_buffer_free),
        rbd_create2: sym!(rbd, rbd_create2),
        rbd_remove: sym!(rbd, rbd_remove),
        rbd_clone2: sym!(rbd, rbd_clone2),
        rbd_open: sym!(rbd, rbd_open),
        rbd_close: sym!(rbd, rbd_close),
        rbd_resize: sym!(rbd, rbd_resize),
        rbd_get_size: sym!(rbd, rbd_get_size),
        rbd_flatten: sym!(rbd, rbd_flatten),
        rbd_snap_create: sym!(rbd, rbd_snap_create),
        rbd_snap_remove: sym!(rbd, rbd_snap_remove),
        rbd_snap_protect: sym!(rbd, rbd_snap_protect),
        rbd_snap_unprotect: sym!(rbd, rbd_snap_unprotect),
        rbd_snap_is_protected: sym!(rbd, rbd_snap_is_protected),
        rbd_snap_list: sym!(rbd, rbd_snap_list),
        rbd_snap_list_end: sym!(rbd, rbd_snap_list_end),
        rbd_aio_create_completion: sym!(rbd, rbd_aio_create_completion),
        rbd_aio_get_return_value: sym!(rbd, rbd_aio_get_return_value),
        rbd_aio_release: sym!(rbd, rbd_aio_release),
        rbd_aio_write: sym!(rbd, rbd_aio_write),
        rbd_aio_read: sym!(rbd, rbd_aio_read),
        rbd_aio_write_zeroes: sym!(rbd, rbd_aio_write_zeroes),
        rbd_aio_flush: sym!(rbd, rbd_aio_flush),
        rados_get_instance_id: sym!(rados, rados_get_instance_id),
        rados_wait_for_latest_osdmap: sym!(rados, rados_wait_for_latest_osdmap),
        rbd_get_features: sym!(rbd, rbd_get_features),
        rbd_update_features: sym!(rbd, rbd_update_features),
        rbd_is_exclusive_lock_owner: sym!(rbd, rbd_is_exclusive_lock_owner),
        rbd_lock_acquire: sym!(rbd, rbd_lock_acquire),
        rbd_lock_release: sym!(rbd, rbd_lock_release),
        rbd_lock_get_owners: sym!(rbd, rbd_lock_get_owners),
        rbd_lock_get_owners_cleanup: sym!(rbd, rbd_lock_get_owners_cleanup),
        rbd_lock_break: sym!(rbd, rbd_lock_break),
        _libs: (rados, rbd),
    })
}

fn cstr(s: &str, what: &str) -> Result<CString, CephError> {
    CString::new(s).map_err(|_| CephError {
        what: format!("{what} {s:?} contains a NUL byte"),
        errno: 22,
    })
}

/// A connection to a Ceph cluster (`rados_t`).
pub struct Cluster {
    api: &'static Api,
    handle: RadosT,
}

// SAFETY: a connected rados_t is thread-safe (librados serialises internally); it is only
// shut down in Drop, when no other reference exists.
unsafe impl Send for Cluster {}
// SAFETY: as above; every method takes &self and librados allows concurrent calls.
unsafe impl Sync for Cluster {}

impl Cluster {
    /// Connects as `user` (without `client.`), reading `conf_file` if given, then applying
    /// `options` (e.g. `mon_host`, `keyring`, timeouts) before connecting.
    pub fn connect(
        user: &str,
        conf_file: Option<&str>,
        options: &[(&str, String)],
    ) -> Result<Arc<Self>, CephError> {
        let api = api()?;
        let id = cstr(user, "user")?;
        let mut handle: RadosT = std::ptr::null_mut();
        // SAFETY: `handle` is a valid out-pointer and `id` a NUL-terminated string.
        check(
            unsafe { (api.rados_create)(&mut handle, id.as_ptr()) },
            || format!("creating a cluster handle for client.{user}"),
        )?;
        // From here `Drop` shuts the handle down, connected or not.
        let c = Self { api, handle };
        if let Some(path) = conf_file {
            let p = cstr(path, "ceph.conf path")?;
            // SAFETY: the handle is live and not yet connected; `p` is NUL-terminated.
            check(
                unsafe { (api.rados_conf_read_file)(c.handle, p.as_ptr()) },
                || format!("reading {path}"),
            )?;
        }
        for (k, v) in options {
            let (ck, cv) = (cstr(k, "option")?, cstr(v, "option value")?);
            // SAFETY: as above; both strings are NUL-terminated.
            check(
                unsafe { (api.rados_conf_set)(c.handle, ck.as_ptr(), cv.as_ptr()) },
                || format!("setting {k} = {v}"),
            )?;
        }
        // SAFETY: the handle is live and configured.
        check(unsafe { (api.rados_connect)(c.handle) }, || {
            "connecting to the monitors".to_string()
        })?;
        Ok(Arc::new(c))
    }

    /// This client's name (`client.<global id>`): unique to this connection, so a new
    /// connection has a new name.
    pub fn client_name(&self) -> String {
        // SAFETY: the handle is connected (only `connect` makes a Cluster).
        format!("client.{}", unsafe {
            (self.api.rados_get_instance_id)(self.handle)
        })
    }

    /// Runs monitor command `cmd` (JSON, for example `{"prefix": "df", "format": "json"}`);
    /// its output. A refusal carries the monitor's status text.
    pub fn mon_command(&self, cmd: &str) -> Result<Vec<u8>, CephError> {
        let c = cstr(cmd, "monitor command")?;
        let cmds = [c.as_ptr()];
        let (mut out, mut out_len) = (std::ptr::null_mut::<c_char>(), 0usize);
        let (mut status, mut status_len) = (std::ptr::null_mut::<c_char>(), 0usize);
        // SAFETY: the handle is connected; `cmds` holds one NUL-terminated string that outlives
        // the call; the input buffer is empty; the four out-pointers are valid and librados
        // sets them to buffers it allocates (or leaves them null).
        let r = unsafe {
            (self.api.rados_mon_command)(
                self.handle,
                cmds.as_ptr(),
                1,
                std::ptr::null(),
                0,
                &mut out,
                &mut out_len,
                &mut status,
                &mut status_len,
            )
        };
        let take = |p: *mut c_char, len: usize| -> Vec<u8> {
            if p.is_null() {
                return Vec::new();
            }
            // SAFETY: librados allocated `len` bytes at `p`; they are copied before the buffer
            // is freed with librados's own free, once.
            let v = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }.to_vec();
            // SAFETY: as above: `p` came from librados and is freed once.
            unsafe { (self.api.rados_buffer_free)(p) };
            v
        };
        let out = take(out, out_len);
        let status = take(status, status_len);
        check(r, || {
            format!(
                "monitor command {cmd}: {}",
                String::from_utf8_lossy(&status).trim()
            )
        })?;
        Ok(out)
    }

    /// Waits until this client has the cluster's latest OSD map (its flags, its blocklist).
    pub fn wait_for_latest_osdmap(&self) -> Result<(), CephError> {
        // SAFETY: the handle is connected (only `connect` makes a Cluster).
        check(
            unsafe { (self.api.rados_wait_for_latest_osdmap)(self.handle) },
            || "waiting for the latest OSD map".to_string(),
        )
    }

    /// Opens pool `name`.
    pub fn pool(self: &Arc<Self>, name: &str) -> Result<Arc<Pool>, CephError> {
        let n = cstr(name, "pool")?;
        let mut io: IoCtxT = std::ptr::null_mut();
        // SAFETY: the cluster is connected; `io` is a valid out-pointer.
        check(
            unsafe { (self.api.rados_ioctx_create)(self.handle, n.as_ptr(), &mut io) },
            || format!("opening pool {name}"),
        )?;
        Ok(Arc::new(Pool {
            api: self.api,
            io,
            cluster: self.clone(),
        }))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: the handle came from rados_create and nothing else refers to it (pools hold
        // an Arc to the cluster, so they are gone).
        unsafe { (self.api.rados_shutdown)(self.handle) }
    }
}

/// A pool (`rados_ioctx_t`).
pub struct Pool {
    api: &'static Api,
    io: IoCtxT,
    cluster: Arc<Cluster>,
}

// SAFETY: an io context may be used from several threads at once (librados documents ioctx
// operations as thread-safe except changing its snapshot context, which is never done here).
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: the io context came from rados_ioctx_create; images hold an Arc to the pool.
        unsafe { (self.api.rados_ioctx_destroy)(self.io) }
    }
}

impl Pool {
    /// The connection the pool was opened on.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The applications enabled on the pool (`rbd` must be one).
    pub fn applications(&self) -> Result<Vec<String>, CephError> {
        let mut len: usize = 256;
        loop {
            let mut buf = vec![0u8; len];
            let mut l = len;
            // SAFETY: `buf` has `l` writable bytes; librados writes NUL-separated names and
            // sets `l` to the length it needs.
            let r = unsafe {
                (self.api.rados_application_list)(self.io, buf.as_mut_ptr().cast(), &mut l)
            };
            if r == -34 && l > len {
                len = l; // ERANGE: grow to what it asked for
                continue;
            }
            check(r, || "listing the pool's applications".to_string())?;
            buf.truncate(l);
            return Ok(buf
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect());
        }
    }

    /// Creates image `name` of `size` bytes with `features` (format 2).
    pub fn create(&self, name: &str, size: u64, features: u64) -> Result<(), CephError> {
        let n = cstr(name, "image")?;
        let mut order: c_int = 0; // the default object size
                                  // SAFETY: the pool is open; `n` is NUL-terminated; `order` a valid in/out pointer.
        check(
            unsafe { (self.api.rbd_create2)(self.io, n.as_ptr(), size, features, &mut order) },
            || format!("creating image {name}"),
        )
    }

    /// Removes image `name` (it must have no snapshots).
    pub fn remove(&self, name: &str) -> Result<(), CephError> {
        let n = cstr(name, "image")?;
        // SAFETY: the pool is open; `n` is NUL-terminated.
        check(
            unsafe { (self.api.rbd_remove)(self.io, n.as_ptr()) },
            || format!("removing image {name}"),
        )
    }

    /// Clones snapshot `snap` of image `parent` (protected) as image `child`, in this pool.
    pub fn clone_image(
        &self,
        parent: &str,
        snap: &str,
        child: &str,
        features: u64,
    ) -> Result<(), CephError> {
        let (p, s, c) = (
            cstr(parent, "image")?,
            cstr(snap, "snapshot")?,
            cstr(child, "image")?,
        );
        let mut order: c_int = 0;
        // SAFETY: the pool is open; the strings are NUL-terminated; stripe unit and count 0
        // take the parent's.
        check(
            unsafe {
                (self.api.rbd_clone2)(
                    self.io,
                    p.as_ptr(),
                    s.as_ptr(),
                    self.io,
                    c.as_ptr(),
                    features,
                    &mut order,
                    0,
                    0,
                )
            },
            || format!("cloning {parent}@{snap} as {child}"),
        )
    }

    /// Opens image `name` for I/O.
    pub fn open(self: &Arc<Self>, name: &str) -> Result<Arc<Image>, CephError> {
        let n = cstr(name, "image")?;
        let mut image: ImageT = std::ptr::null_mut();
        // SAFETY: the pool is open; `image` is a valid out-pointer; a null snapshot name opens
        // the head.
        check(
            unsafe { (self.api.rbd_open)(self.io, n.as_ptr(), &mut image, std::ptr::null()) },
            || format!("opening image {name}"),
        )?;
        Ok(Arc::new(Image {
            api: self.api,
            image,
            name: name.to_string(),
            pool: self.clone(),
        }))
    }
}

/// An open image (`rbd_image_t`).
pub struct Image {
    api: &'static Api,
    image: ImageT,
    name: String,
    pool: Arc<Pool>,
}

// SAFETY: librbd image handles are thread-safe for I/O and metadata calls; the handle is closed
// only in Drop, after every in-flight request finished (each holds an Arc to the image).
unsafe impl Send for Image {}
// SAFETY: as above.
unsafe impl Sync for Image {}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: the handle came from rbd_open and no request is in flight (see above).
        unsafe { (self.api.rbd_close)(self.image) };
    }
}

/// The state an asynchronous request keeps until librbd completes it: the image and the
/// buffer it reads into or writes from stay alive even if the waiting future is dropped.
struct Pending {
    image: Arc<Image>,
    buf: Buf,
    done: oneshot::Sender<(isize, Buf)>,
}

enum Buf {
    None,
    Out(Vec<u8>),
    In(Vec<u8>),
}

extern "C" fn complete(c: CompletionT, arg: *mut c_void) {
    // SAFETY: `arg` is the Box<Pending> leaked by `Image::submit` for this completion, and
    // librbd calls this exactly once.
    let p = unsafe { Box::from_raw(arg.cast::<Pending>()) };
    let api = p.image.api;
    // SAFETY: `c` is the completion this callback is for; it is released once, here, after
    // its return value was read (as QEMU's rbd driver does).
    let r = unsafe {
        let r = (api.rbd_aio_get_return_value)(c);
        (api.rbd_aio_release)(c);
        r
    };
    let Pending { buf, done, image } = *p;
    // This runs on a librbd thread, which must not close the image (rbd_close waits for work
    // queued to this very thread, e.g. giving the exclusive lock up: a deadlock). The waiter
    // normally still holds the image; if this was the last reference, it is closed elsewhere.
    if let Some(last) = Arc::into_inner(image) {
        std::thread::spawn(move || drop(last));
    }
    let _ = done.send((r, buf));
}

/// The outcome of an asynchronous request: librbd's return value and the buffer.
pub struct Request {
    rx: oneshot::Receiver<(isize, Buf)>,
    what: String,
}

impl Future for Request {
    type Output = Result<(isize, Option<Vec<u8>>), CephError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok((r, _))) if r < 0 => Poll::Ready(Err(CephError {
                what: std::mem::take(&mut self.what),
                errno: i32::try_from(-r).unwrap_or(i32::MAX),
            })),
            Poll::Ready(Ok((r, buf))) => {
                let data = match buf {
                    Buf::In(v) => Some(v),
                    _ => None,
                };
                Poll::Ready(Ok((r, data)))
            }
            Poll::Ready(Err(_)) => Poll::Ready(Err(CephError {
                what: "librbd dropped a request".into(),
                errno: 5,
            })),
        }
    }
}

enum Kind {
    Read,
    Write,
    Zero(usize),
    Flush,
}

impl Image {
    /// The image's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The size in bytes.
    pub fn size(&self) -> Result<u64, CephError> {
        let mut s = 0u64;
        // SAFETY: the image is open; `s` is a valid out-pointer.
        check(
            unsafe { (self.api.rbd_get_size)(self.image, &mut s) },
            || format!("reading the size of {}", self.name),
        )?;
        Ok(s)
    }

    /// The client this handle was opened by (see [`Cluster::client_name`]).
    pub fn client_name(&self) -> String {
        self.pool.cluster.client_name()
    }

    /// The image's feature bits (`RBD_FEATURE_*`).
    pub fn features(&self) -> Result<u64, CephError> {
        let mut f = 0u64;
        // SAFETY: the image is open; `f` is a valid out-pointer.
        check(
            unsafe { (self.api.rbd_get_features)(self.image, &mut f) },
            || format!("reading the features of {}", self.name),
        )?;
        Ok(f)
    }

    /// Turns `features` on (or off).
    pub fn update_features(&self, features: u64, enabled: bool) -> Result<(), CephError> {
        // SAFETY: the image is open.
        check(
            unsafe { (self.api.rbd_update_features)(self.image, features, u8::from(enabled)) },
            || format!("changing the features of {}", self.name),
        )
    }

    /// Whether this handle holds the image's exclusive lock.
    pub fn is_lock_owner(&self) -> Result<bool, CephError> {
        let mut owner: c_int = 0;
        // SAFETY: the image is open; `owner` is a valid out-pointer.
        check(
            unsafe { (self.api.rbd_is_exclusive_lock_owner)(self.image, &mut owner) },
            || format!("asking who holds the lock of {}", self.name),
        )?;
        Ok(owner != 0)
    }

    /// Takes the image's exclusive lock and keeps it: from then on this handle no longer hands
    /// it over when another client asks (librbd's explicit lock mode). Fails (`EROFS`,
    /// `EBUSY`) while another client holds it.
    pub fn lock_acquire(&self) -> Result<(), CephError> {
        // SAFETY: the image is open; mode 0 is RBD_LOCK_MODE_EXCLUSIVE.
        check(
            unsafe { (self.api.rbd_lock_acquire)(self.image, LOCK_MODE_EXCLUSIVE) },
            || format!("taking the exclusive lock of {}", self.name),
        )
    }

    /// Gives the exclusive lock up (after the writes in flight completed).
    pub fn lock_release(&self) -> Result<(), CephError> {
        // SAFETY: the image is open.
        check(unsafe { (self.api.rbd_lock_release)(self.image) }, || {
            format!("releasing the exclusive lock of {}", self.name)
        })
    }

    /// The clients holding the image's lock (by address, `ip:port/nonce`), none when free.
    pub fn lock_owners(&self) -> Result<Vec<String>, CephError> {
        let mut max: usize = 4;
        loop {
            let mut owners: Vec<*mut c_char> = vec![std::ptr::null_mut(); max];
            let mut n = max;
            let mut mode: c_int = 0;
            // SAFETY: `owners` has room for `n` pointers; librbd fills up to `n` of them with
            // strings it allocates (freed by the cleanup call below), or returns ERANGE and the
            // count it needs.
            let r = unsafe {
                (self.api.rbd_lock_get_owners)(self.image, &mut mode, owners.as_mut_ptr(), &mut n)
            };
            match r {
                -2 => return Ok(Vec::new()), // ENOENT: nobody holds it
                -34 => {
                    max = n.max(max * 2);
                    continue;
                }
                _ => {}
            }
            check(r, || format!("listing the lock owners of {}", self.name))?;
            let names = owners[..n.min(max)]
                .iter()
                .filter(|p| !p.is_null())
                .map(|p| {
                    // SAFETY: librbd set the first `n` pointers to NUL-terminated strings it
                    // owns until the cleanup call.
                    unsafe { CStr::from_ptr(*p) }.to_string_lossy().into_owned()
                })
                .collect();
            // SAFETY: frees what rbd_lock_get_owners allocated, `n` entries.
            unsafe { (self.api.rbd_lock_get_owners_cleanup)(owners.as_mut_ptr(), n.min(max)) };
            return Ok(names);
        }
    }

    /// Breaks `owner`'s exclusive lock. With `rbd_blocklist_on_break_lock` (Ceph's default)
    /// the monitors first blocklist that client, so the OSDs refuse its writes from then on,
    /// those in flight included.
    pub fn lock_break(&self, owner: &str) -> Result<(), CephError> {
        let o = cstr(owner, "lock owner")?;
        // SAFETY: the image is open; `o` is NUL-terminated; mode 0 is exclusive.
        check(
            unsafe { (self.api.rbd_lock_break)(self.image, LOCK_MODE_EXCLUSIVE, o.as_ptr()) },
            || format!("breaking {owner}'s lock of {}", self.name),
        )
    }

    /// Resizes to `size` bytes.
    pub fn resize(&self, size: u64) -> Result<(), CephError> {
        // SAFETY: the image is open.
        check(unsafe { (self.api.rbd_resize)(self.image, size) }, || {
            format!("resizing {} to {size} bytes", self.name)
        })
    }

    /// Copies the parent's data into this clone, so it no longer depends on the parent.
    pub fn flatten(&self) -> Result<(), CephError> {
        // SAFETY: the image is open.
        check(unsafe { (self.api.rbd_flatten)(self.image) }, || {
            format!("flattening {}", self.name)
        })
    }

    fn snap_call(
        &self,
        f: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
        snap: &str,
        what: &str,
    ) -> Result<(), CephError> {
        let s = cstr(snap, "snapshot")?;
        // SAFETY: the image is open; `s` is NUL-terminated; `f` is one of the snapshot calls
        // taking (image, name).
        check(unsafe { f(self.image, s.as_ptr()) }, || {
            format!("{what} snapshot {}@{snap}", self.name)
        })
    }

    /// Creates snapshot `snap`.
    pub fn snap_create(&self, snap: &str) -> Result<(), CephError> {
        self.snap_call(self.api.rbd_snap_create, snap, "creating")
    }

    /// Removes snapshot `snap` (it must be unprotected).
    pub fn snap_remove(&self, snap: &str) -> Result<(), CephError> {
        self.snap_call(self.api.rbd_snap_remove, snap, "removing")
    }

    /// Protects snapshot `snap` (needed to clone it).
    pub fn snap_protect(&self, snap: &str) -> Result<(), CephError> {
        self.snap_call(self.api.rbd_snap_protect, snap, "protecting")
    }

    /// Unprotects snapshot `snap`.
    pub fn snap_unprotect(&self, snap: &str) -> Result<(), CephError> {
        self.snap_call(self.api.rbd_snap_unprotect, snap, "unprotecting")
    }

    /// Whether snapshot `snap` is protected.
    pub fn snap_is_protected(&self, snap: &str) -> Result<bool, CephError> {
        let s = cstr(snap, "snapshot")?;
        let mut p: c_int = 0;
        // SAFETY: the image is open; `s` is NUL-terminated; `p` a valid out-pointer.
        check(
            unsafe { (self.api.rbd_snap_is_protected)(self.image, s.as_ptr(), &mut p) },
            || format!("reading the protection of {}@{snap}", self.name),
        )?;
        Ok(p != 0)
    }

    /// The snapshots' names.
    pub fn snapshots(&self) -> Result<Vec<String>, CephError> {
        let mut max: c_int = 16;
        loop {
            let mut v: Vec<SnapInfo> = (0..max)
                .map(|_| SnapInfo {
                    id: 0,
                    size: 0,
                    name: std::ptr::null(),
                })
                .collect();
            let mut n = max;
            // SAFETY: `v` has room for `n` entries; librbd fills up to `n` (and returns ERANGE
            // with the count it needs when there are more).
            let r = unsafe { (self.api.rbd_snap_list)(self.image, v.as_mut_ptr(), &mut n) };
            if r == -34 {
                max = n.max(max * 2);
                continue;
            }
            check(r, || format!("listing the snapshots of {}", self.name))?;
            let names = v[..r as usize]
                .iter()
                .map(|s| {
                    // SAFETY: librbd set `name` of the first `r` entries to NUL-terminated
                    // strings it owns until rbd_snap_list_end.
                    unsafe { CStr::from_ptr(s.name) }
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            // SAFETY: frees what rbd_snap_list allocated in `v`.
            unsafe { (self.api.rbd_snap_list_end)(v.as_mut_ptr()) };
            return Ok(names);
        }
    }

    fn submit(self: &Arc<Self>, kind: Kind, off: u64, buf: Buf, what: String) -> Request {
        let (tx, rx) = oneshot::channel();
        let (ptr, len) = match &buf {
            Buf::Out(v) | Buf::In(v) => (v.as_ptr(), v.len()),
            Buf::None => (std::ptr::null(), 0),
        };
        let pending = Box::into_raw(Box::new(Pending {
            image: self.clone(),
            buf,
            done: tx,
        }));
        let fail = |r: c_int, what: String| {
            // SAFETY: the request was not queued, so the callback will not run: take the box
            // back.
            drop(unsafe { Box::from_raw(pending) });
            let (tx, rx) = oneshot::channel();
            let _ = tx.send((r as isize, Buf::None));
            Request { rx, what }
        };
        let mut c: CompletionT = std::ptr::null_mut();
        // SAFETY: `c` is a valid out-pointer; `pending` is handed to the callback.
        let r = unsafe { (self.api.rbd_aio_create_completion)(pending.cast(), complete, &mut c) };
        if r < 0 {
            return fail(r, what);
        }
        // SAFETY: the image is open; the buffer (`ptr`, `len`) lives in `pending`, which is
        // freed only by the callback, after librbd finished with it; `c` is fresh.
        let r = unsafe {
            match kind {
                Kind::Write => (self.api.rbd_aio_write)(self.image, off, len, ptr.cast(), c),
                Kind::Read => (self.api.rbd_aio_read)(self.image, off, len, ptr as *mut c_char, c),
                Kind::Zero(n) => (self.api.rbd_aio_write_zeroes)(self.image, off, n, c, 0, 0),
                Kind::Flush => (self.api.rbd_aio_flush)(self.image, c),
            }
        };
        if r < 0 {
            // SAFETY: not queued: the completion is ours to release.
            unsafe { (self.api.rbd_aio_release)(c) };
            return fail(r, what);
        }
        Request { rx, what }
    }

    /// Writes `data` at `off`. (A successful write completes with 0, not the byte count.)
    pub fn write(self: &Arc<Self>, off: u64, data: Vec<u8>) -> Request {
        let what = format!("writing {} bytes at {off} of {}", data.len(), self.name);
        self.submit(Kind::Write, off, Buf::Out(data), what)
    }

    /// Reads `len` bytes at `off`.
    pub fn read(self: &Arc<Self>, off: u64, len: usize) -> Request {
        let what = format!("reading {len} bytes at {off} of {}", self.name);
        self.submit(Kind::Read, off, Buf::In(vec![0u8; len]), what)
    }

    /// Makes `len` bytes at `off` read as zeroes (deallocating whole objects where it can).
    pub fn write_zeroes(self: &Arc<Self>, off: u64, len: usize) -> Request {
        let what = format!("zeroing {len} bytes at {off} of {}", self.name);
        self.submit(Kind::Zero(len), off, Buf::None, what)
    }

    /// Makes completed writes durable.
    pub fn flush(self: &Arc<Self>) -> Request {
        let what = format!("flushing {}", self.name);
        self.submit(Kind::Flush, 0, Buf::None, what)
    }
}

//! A backend of sparse files: `<dir>/<volume uuid>.img`, snapshots `<uuid>@<name>.snap`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use alcubierre_types::{ByteOffset, ByteSize, VolumeId};
use parking_lot::RwLock;

use crate::{check_io, check_size, Backend, BackendError, Capacity};

/// One sparse file per volume in a directory. Writes go through the page cache; `flush` is
/// `fdatasync` of the volume's file. Discard punches holes.
pub struct FileBackend {
    dir: PathBuf,
    /// Open images and their sizes (kept here so I/O does not `fstat` each time).
    open: RwLock<HashMap<VolumeId, (Arc<File>, u64)>>,
}

/// An error setting an image's length: a size the file system cannot hold is an invalid size.
fn size_err(volume: VolumeId, size: ByteSize, path: &Path, e: std::io::Error) -> BackendError {
    if e.kind() == std::io::ErrorKind::FileTooLarge {
        BackendError::InvalidSize {
            volume,
            size: size.0,
            reason: "larger than the backend's file system allows for a file",
        }
    } else {
        io_err(path, e)
    }
}

fn io_err(what: &Path, source: std::io::Error) -> BackendError {
    BackendError::Io {
        what: what.display().to_string(),
        source,
    }
}

impl FileBackend {
    /// A backend in `dir`, which is created if missing.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, BackendError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        Ok(Self {
            dir,
            open: RwLock::new(HashMap::new()),
        })
    }

    /// The path of a volume's image file.
    pub fn image_path(&self, volume: VolumeId) -> PathBuf {
        self.dir.join(format!("{volume}.img"))
    }

    fn snapshot_path(&self, volume: VolumeId, name: &str) -> PathBuf {
        self.dir.join(format!("{volume}@{name}.snap"))
    }

    fn file(&self, volume: VolumeId) -> Result<Arc<File>, BackendError> {
        Ok(self.image(volume)?.0)
    }

    /// The open image and its size.
    fn image(&self, volume: VolumeId) -> Result<(Arc<File>, u64), BackendError> {
        if let Some((f, len)) = self.open.read().get(&volume) {
            return Ok((f.clone(), *len));
        }
        let path = self.image_path(volume);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => BackendError::NotFound {
                    what: volume.to_string(),
                },
                _ => io_err(&path, e),
            })?;
        let file = Arc::new(file);
        let len = self.len_of(volume, &file)?;
        self.open.write().insert(volume, (file.clone(), len));
        Ok((file, len))
    }

    fn len_of(&self, volume: VolumeId, file: &File) -> Result<u64, BackendError> {
        Ok(file
            .metadata()
            .map_err(|e| io_err(&self.image_path(volume), e))?
            .len())
    }
}

/// Copies `from` to `to` so that `to` either does not exist or is a whole, durable copy: the
/// copy is written under a temporary name, synced, renamed, and the directory synced.
fn copy_durably(from: &Path, to: &Path) -> Result<(), BackendError> {
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let copied = std::fs::copy(from, &tmp)
        .and_then(|_| File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, to));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(to, e));
    }
    if let Some(dir) = to.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(dir, e))?;
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), BackendError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(BackendError::NotFound {
            what: format!("snapshot name {name:?} (use 1-128 of [A-Za-z0-9._-])"),
        })
    }
}

impl Backend for FileBackend {
    fn create(&self, volume: VolumeId, size: ByteSize) -> Result<(), BackendError> {
        check_size(volume, size)?;
        let path = self.image_path(volume);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => BackendError::Exists {
                    what: volume.to_string(),
                },
                _ => io_err(&path, e),
            })?;
        if let Err(e) = file.set_len(size.0).and_then(|()| file.sync_all()) {
            // No half-made image stays behind to look like a volume's.
            let _ = std::fs::remove_file(&path);
            return Err(size_err(volume, size, &path, e));
        }
        self.open.write().insert(volume, (Arc::new(file), size.0));
        Ok(())
    }

    fn resize(&self, volume: VolumeId, size: ByteSize) -> Result<(), BackendError> {
        check_size(volume, size)?;
        let file = self.file(volume)?;
        if size.0 < self.len_of(volume, &file)? {
            return Err(BackendError::InvalidSize {
                volume,
                size: size.0,
                reason: "images only grow",
            });
        }
        file.set_len(size.0)
            .and_then(|()| file.sync_all())
            .map_err(|e| size_err(volume, size, &self.image_path(volume), e))?;
        self.open.write().insert(volume, (file, size.0));
        Ok(())
    }

    fn delete(&self, volume: VolumeId) -> Result<(), BackendError> {
        self.open.write().remove(&volume);
        let path = self.image_path(volume);
        std::fs::remove_file(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BackendError::NotFound {
                what: volume.to_string(),
            },
            _ => io_err(&path, e),
        })?;
        let prefix = format!("{volume}@");
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    fn size(&self, volume: VolumeId) -> Result<ByteSize, BackendError> {
        Ok(ByteSize(self.image(volume)?.1))
    }

    fn read(
        &self,
        volume: VolumeId,
        offset: ByteOffset,
        buf: &mut [u8],
    ) -> Result<(), BackendError> {
        let (file, size) = self.image(volume)?;
        check_io(volume, size, offset.0, buf.len() as u64)?;
        file.read_exact_at(buf, offset.0)
            .map_err(|e| io_err(&self.image_path(volume), e))
    }

    fn write(&self, volume: VolumeId, offset: ByteOffset, data: &[u8]) -> Result<(), BackendError> {
        let (file, size) = self.image(volume)?;
        check_io(volume, size, offset.0, data.len() as u64)?;
        file.write_all_at(data, offset.0)
            .map_err(|e| io_err(&self.image_path(volume), e))
    }

    fn discard(
        &self,
        volume: VolumeId,
        offset: ByteOffset,
        len: ByteSize,
    ) -> Result<(), BackendError> {
        let (file, size) = self.image(volume)?;
        check_io(volume, size, offset.0, len.0)?;
        alcubierre_io::punch_hole(&file, offset.0, len.0)
            .map_err(|e| io_err(&self.image_path(volume), e))
    }

    fn flush(&self, volume: VolumeId) -> Result<(), BackendError> {
        self.file(volume)?
            .sync_data()
            .map_err(|e| io_err(&self.image_path(volume), e))
    }

    fn snapshot(&self, volume: VolumeId, name: &str) -> Result<(), BackendError> {
        check_name(name)?;
        let file = self.file(volume)?;
        let target = self.snapshot_path(volume, name);
        if target.exists() {
            return Err(BackendError::Exists {
                what: format!("{volume}@{name}"),
            });
        }
        file.sync_data()
            .map_err(|e| io_err(&self.image_path(volume), e))?;
        copy_durably(&self.image_path(volume), &target)
    }

    fn list_snapshots(&self, volume: VolumeId) -> Result<Vec<String>, BackendError> {
        self.image(volume)?;
        let prefix = format!("{volume}@");
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                Some(n.strip_prefix(&prefix)?.strip_suffix(".snap")?.to_string())
            })
            .collect();
        names.sort();
        Ok(names)
    }

    fn delete_snapshot(&self, volume: VolumeId, name: &str) -> Result<(), BackendError> {
        check_name(name)?;
        let path = self.snapshot_path(volume, name);
        std::fs::remove_file(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BackendError::NotFound {
                what: format!("{volume}@{name}"),
            },
            _ => io_err(&path, e),
        })
    }

    fn clone_snapshot(
        &self,
        source: VolumeId,
        name: &str,
        target: VolumeId,
    ) -> Result<(), BackendError> {
        check_name(name)?;
        let snap = self.snapshot_path(source, name);
        if !snap.exists() {
            return Err(BackendError::NotFound {
                what: format!("{source}@{name}"),
            });
        }
        let dest = self.image_path(target);
        if dest.exists() {
            return Err(BackendError::Exists {
                what: target.to_string(),
            });
        }
        copy_durably(&snap, &dest)
    }

    fn capacity(&self) -> Result<Option<Capacity>, BackendError> {
        let (total, free) = alcubierre_io::fs_space(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        Ok(Some(Capacity {
            total: ByteSize(total),
            free: ByteSize(free),
        }))
    }

    fn describe(&self) -> String {
        format!("files in {}", self.dir.display())
    }
}

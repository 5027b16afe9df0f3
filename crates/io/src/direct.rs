//! A block device or regular file opened with `O_DIRECT`.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::Medium;

/// A cache device reached with `O_DIRECT` (no page cache) and made durable with `fdatasync`.
///
/// For a regular file, the caller should have written every byte once (see
/// [`DirectFile::create_file`]) so that later writes overwrite allocated blocks and `fdatasync`
/// does not have to commit file-system metadata.
pub struct DirectFile {
    file: File,
    path: PathBuf,
    len: u64,
}

impl DirectFile {
    /// Opens an existing block device or file for direct I/O.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .map_err(|e| annotate(e, path))?;
        let len = file.seek(SeekFrom::End(0))?;
        Ok(Self {
            file,
            path: path.to_owned(),
            len,
        })
    }

    /// Creates (or replaces) a regular file of `len` bytes, writes zeroes over all of it so its
    /// blocks are allocated, syncs it, and opens it for direct I/O.
    pub fn create_file(path: &Path, len: u64) -> std::io::Result<Self> {
        {
            let file = File::create(path)?;
            file.set_len(len)?;
        }
        let me = Self::open(path)?;
        let chunk = crate::AlignedBuf::zeroed(1 << 20);
        let mut off = 0;
        while off < len {
            let n = (len - off).min(chunk.len() as u64) as usize;
            me.write_at(&chunk[..n], off)?;
            off += n as u64;
        }
        me.sync()?;
        Ok(me)
    }
}

fn annotate(e: std::io::Error, path: &Path) -> std::io::Error {
    let hint = if e.raw_os_error() == Some(libc::EINVAL) {
        " (does the file system support O_DIRECT? tmpfs does not)"
    } else {
        ""
    };
    std::io::Error::new(e.kind(), format!("{}: {e}{hint}", path.display()))
}

impl Medium for DirectFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    fn write_durable(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        crate::dsync::pwrite_dsync(&self.file, buf, offset)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        Some(self.file.as_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AlignedBuf;

    #[test]
    fn create_write_read() {
        // Under target/ rather than /tmp: /tmp may be tmpfs, which refuses O_DIRECT.
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/tmp"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("direct-{}.img", std::process::id()));
        let f = DirectFile::create_file(&path, 1 << 20).unwrap();
        assert_eq!(f.len(), 1 << 20);
        let mut w = AlignedBuf::zeroed(8192);
        w.fill(0xab);
        f.write_at(&w, 4096).unwrap();
        f.sync().unwrap();
        let mut r = AlignedBuf::zeroed(8192);
        f.read_at(&mut r, 4096).unwrap();
        assert_eq!(&r[..], &w[..]);
        w.fill(0xcd);
        f.write_durable(&w, 12288).unwrap();
        f.read_at(&mut r, 12288).unwrap();
        assert_eq!(&r[..], &w[..]);
        // Unaligned direct I/O is refused by the kernel, not silently bounced.
        let mut small = AlignedBuf::zeroed(100);
        assert!(f.read_at(&mut small, 0).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}

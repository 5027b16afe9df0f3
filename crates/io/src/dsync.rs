//! A write that is durable when it returns: `pwritev2(RWF_DSYNC)`. With `O_DIRECT` on a device
//! that supports FUA this is a single FUA write; otherwise the kernel follows it with a flush.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;

/// Writes all of `buf` at `offset` with per-write data integrity (`RWF_DSYNC`).
pub fn pwrite_dsync(file: &File, mut buf: &[u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        let iov = libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let off = libc::off_t::try_from(offset).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: `iov` points at `buf`, which is borrowed and valid for `buf.len()` bytes for the
        // whole call; the kernel only reads it. The descriptor is open while `file` is borrowed.
        let n = unsafe { libc::pwritev2(file.as_raw_fd(), &iov, 1, off, libc::RWF_DSYNC) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n as usize..];
        offset += n as u64;
    }
    Ok(())
}

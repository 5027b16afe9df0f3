//! A file system's size and free space.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The size of the file system holding `path` and the bytes an unprivileged writer may still
/// use there (`statvfs`: blocks times fragment size, and available blocks).
pub fn fs_space(path: &Path) -> std::io::Result<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero statvfs is a valid value of the plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path that outlives the call, and `st` is a valid,
    // writable statvfs the call fills.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    Ok((
        (st.f_blocks as u64).saturating_mul(unit),
        (st.f_bavail as u64).saturating_mul(unit),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_has_a_size_and_free_space_within_it() {
        let dir = tempfile::tempdir().unwrap();
        let (total, free) = fs_space(dir.path()).unwrap();
        assert!(total > 0 && free <= total, "{total} {free}");
        assert!(fs_space(Path::new("/nonexistent/dir")).is_err());
    }
}

//! Deallocating a byte range of a regular file.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;

/// Deallocates `[offset, offset + len)` of `file` so it reads as zeroes, keeping the file size
/// (`fallocate(PUNCH_HOLE | KEEP_SIZE)`). Partial file-system blocks at the edges are zeroed by
/// the kernel.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let off = libc::off_t::try_from(offset).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let n = libc::off_t::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: fallocate only reads its scalar arguments; the descriptor is valid and open for
    // writing for the duration of the call because `file` is borrowed.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            n,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn punched_range_reads_zero() {
        let dir =
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/tmp"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("punch-{}.img", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.write_all_at(&vec![5u8; 65536], 0).unwrap();
        punch_hole(&f, 4096, 8192 + 100).unwrap();
        let mut r = vec![0u8; 65536];
        f.read_exact_at(&mut r, 0).unwrap();
        assert!(r[..4096].iter().all(|&b| b == 5));
        assert!(r[4096..12388].iter().all(|&b| b == 0));
        assert!(r[12388..].iter().all(|&b| b == 5));
        assert_eq!(f.metadata().unwrap().len(), 65536);
        std::fs::remove_file(&path).unwrap();
    }
}

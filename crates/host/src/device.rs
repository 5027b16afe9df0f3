//! Whether a block device is in use (mounted, open by a process, held by another device such as
//! an LVM volume or a partition's), and its stable name under `/dev/disk/by-id`.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::sysfs::Root;

/// Who uses block device `name` (`nvme1n1`, `dm-3`): mount points, processes, holders; empty
/// when nobody does. Its partitions count as it.
pub fn users(root: &Root, name: &str) -> Vec<String> {
    let mut by = Vec::new();
    // The device and its partitions, as major:minor.
    let mut devs = Vec::new();
    if let Some(d) = root.attr(&format!("sys/block/{name}/dev")) {
        devs.push((name.to_string(), d));
    }
    for part in root.list(&format!("sys/block/{name}")) {
        if part == "holders" {
            for h in root.list(&format!("sys/block/{name}/holders")) {
                by.push(format!("held by {h}"));
            }
        } else if part.starts_with(name) {
            if let Some(d) = root.attr(&format!("sys/block/{name}/{part}/dev")) {
                devs.push((part, d));
            }
        }
    }
    for part in devs.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>() {
        if part != name {
            for h in root.list(&format!("sys/block/{name}/{part}/holders")) {
                by.push(format!("{part} held by {h}"));
            }
        }
    }
    // Mounts: mountinfo's third field is the mounted device's major:minor.
    if let Ok(info) = std::fs::read_to_string(root.path("proc/self/mountinfo")) {
        for line in info.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() > 4 {
                if let Some((part, _)) = devs.iter().find(|(_, d)| d == f[2]) {
                    by.push(format!("{part} mounted on {}", f[4]));
                }
            }
        }
    }
    // Open files: every process's descriptors whose device number is one of them.
    let nums: Vec<u64> = devs.iter().filter_map(|(_, d)| dev_number(d)).collect();
    // Not this process: it may have inherited a descriptor of the device from its caller,
    // which the caller then holds too.
    let me = std::process::id().to_string();
    for pid in root.list("proc") {
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let fds = root.path(&format!("proc/{pid}/fd"));
        let Ok(entries) = std::fs::read_dir(&fds) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = std::fs::metadata(e.path()) else {
                continue;
            };
            if m.file_type().is_block_device() && nums.contains(&m.rdev()) {
                let comm = root
                    .attr(&format!("proc/{pid}/comm"))
                    .unwrap_or_else(|| "?".into());
                by.push(format!("open by process {pid} ({comm})"));
                break;
            }
        }
    }
    by.dedup();
    if by.is_empty() && exclusively_held(root, name) {
        by.push("held by the kernel: mounted (perhaps in another mount namespace: a container, a CSI pod), swap, or under another device".into());
    }
    by
}

/// Whether opening `/dev/<name>` exclusively (`O_EXCL`) is refused as busy: the kernel holds the
/// device for a mount in any namespace, swap, or a device on top.
fn exclusively_held(root: &Root, name: &str) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    /// Linux's O_EXCL: on a block device, an exclusive open.
    const O_EXCL: i32 = 0o200;
    /// EBUSY.
    const BUSY: i32 = 16;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_EXCL)
        .open(root.path(&format!("dev/{name}")))
        .is_err_and(|e| e.raw_os_error() == Some(BUSY))
}

/// `major:minor` as the kernel's `dev_t` (glibc's encoding).
fn dev_number(s: &str) -> Option<u64> {
    let (ma, mi) = s.trim().split_once(':')?;
    let (ma, mi): (u64, u64) = (ma.parse().ok()?, mi.parse().ok()?);
    Some(((ma & 0xfffff000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffffff00) << 12) | (mi & 0xff))
}

/// The `/dev/disk/by-id` link (udev's) that points at block device `name`, preferring one that
/// starts with `prefer` (`nvme-uuid.`, `dm-uuid-mpath-`).
pub fn by_id(root: &Root, name: &str, prefer: &str) -> Option<String> {
    let dir = root.path("dev/disk/by-id");
    let mut found = Vec::new();
    for link in root.list("dev/disk/by-id") {
        let p = dir.join(&link);
        if let Ok(target) = std::fs::read_link(&p) {
            if target.file_name().is_some_and(|f| f == name) {
                found.push(link);
            }
        }
    }
    found.sort_by_key(|l| !l.starts_with(prefer));
    found
        .into_iter()
        .next()
        .map(|l| format!("/dev/disk/by-id/{l}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_encode_as_glibc_does() {
        assert_eq!(dev_number("259:0"), Some((259 << 8) as u64));
        assert_eq!(dev_number("8:17"), Some((8 << 8) | 17));
        assert_eq!(dev_number("x"), None);
    }

    #[test]
    fn holders_and_mounts_make_a_device_in_use() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let w = |rel: &str, s: &str| crate::sysfs::write_file(r, rel, s);
        w("sys/block/nvme1n1/dev", "259:3\n");
        w("sys/block/nvme1n1/nvme1n1p1/dev", "259:4\n");
        std::fs::create_dir_all(r.join("sys/block/nvme1n1/holders")).unwrap();
        w("sys/block/nvme2n1/dev", "259:5\n");
        w("sys/block/nvme2n1/holders/dm-1", "");
        w(
            "proc/self/mountinfo",
            "22 1 259:4 / /mnt/data rw - ext4 /dev/nvme1n1p1 rw\n",
        );
        let root = Root::at(r);
        assert_eq!(
            users(&root, "nvme1n1"),
            vec!["nvme1n1p1 mounted on /mnt/data"]
        );
        assert_eq!(users(&root, "nvme2n1"), vec!["held by dm-1"]);
        assert!(users(&root, "nvme3n1").is_empty());
    }

    #[test]
    fn by_id_prefers_the_named_kind_of_link() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("dev/disk/by-id");
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("../../nvme1n1", dir.join("nvme-eui.0a0b")).unwrap();
        std::os::unix::fs::symlink("../../nvme1n1", dir.join("nvme-uuid.0a0b")).unwrap();
        std::os::unix::fs::symlink("../../nvme2n1", dir.join("nvme-uuid.0c0d")).unwrap();
        let root = Root::at(d.path());
        assert_eq!(
            by_id(&root, "nvme1n1", "nvme-uuid.").as_deref(),
            Some("/dev/disk/by-id/nvme-uuid.0a0b")
        );
        assert_eq!(by_id(&root, "nvme3n1", "nvme-uuid."), None);
    }
}

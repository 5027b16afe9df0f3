//! What the node service does to the host's file systems: mount tables, mounts and bind
//! mounts, file system creation and growth, usage; each through the host's own tools (`mount`,
//! `umount`, `blkid`, `mkfs.*`, `resize2fs`, `xfs_growfs`, `stat`), with their messages in the
//! errors.

use tonic::Status;

/// Runs `program args`; its standard output, or INTERNAL with what it said.
pub async fn run(program: &str, args: &[&str]) -> Result<String, Status> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .await
        .map_err(|e| {
            Status::internal(format!(
                "running {program}: {e} (is it installed on the node?)"
            ))
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(Status::internal(format!(
        "{program} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// The mount table line fields of `path`'s mount, when it is a mount point: (device
/// major:minor, mount source).
pub fn mount_of(mountinfo: &str, path: &str) -> Option<(String, String)> {
    let path = path.trim_end_matches('/');
    mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.get(4) == Some(&path))
            .then(|| (f[2].to_string(), f.get(sep + 2).unwrap_or(&"").to_string()))
    })
}

/// Whether `path` is a mount point in this mount namespace.
pub fn mounted(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| mount_of(&m, path).is_some())
}

/// Unmounts `path` when something is mounted there.
pub async fn unmount(path: &str) -> Result<(), Status> {
    if !mounted(path) {
        return Ok(());
    }
    run("umount", &[path]).await.map_err(|e| {
        Status::internal(format!(
            "{}; stop what uses {path} (lsof {path})",
            e.message()
        ))
    })?;
    Ok(())
}

/// The file system on `device` (`blkid`), `None` when it is blank. A device with a partition
/// table and no file system is not blank: FAILED_PRECONDITION rather than a mkfs over it.
pub async fn fs_type(device: &str) -> Result<Option<String>, Status> {
    let out = tokio::process::Command::new("blkid")
        .args(["-p", "-o", "export", "-s", "TYPE", "-s", "PTTYPE", device])
        .output()
        .await
        .map_err(|e| Status::internal(format!("running blkid: {e} (is util-linux installed?)")))?;
    match out.status.code() {
        Some(0) => probed(device, &String::from_utf8_lossy(&out.stdout)),
        // 2: nothing found (a blank device).
        Some(2) => Ok(None),
        _ => Err(Status::internal(format!(
            "blkid {device}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// What `blkid -o export -s TYPE -s PTTYPE` found on `device`.
fn probed(device: &str, export: &str) -> Result<Option<String>, Status> {
    let value = |key: &str| {
        export
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    match (value("TYPE"), value("PTTYPE")) {
        (Some(t), _) => Ok(Some(t.to_string())),
        (None, Some(pt)) => Err(Status::failed_precondition(format!(
            "{device} holds a {pt} partition table and no file system: not formatting it; \
             use a blank volume, or wipe it (wipefs -a) if its data is not wanted"
        ))),
        (None, None) => Ok(None),
    }
}

/// Makes file system `fs` (ext4 or xfs) on blank `device`.
pub async fn mkfs(fs: &str, device: &str) -> Result<(), Status> {
    match fs {
        // No discard: a new volume reads zeros already, and discarding all of it is slow.
        "ext4" => run("mkfs.ext4", &["-q", "-F", "-E", "nodiscard", device]).await?,
        "xfs" => run("mkfs.xfs", &["-q", "-K", device]).await?,
        other => {
            return Err(Status::invalid_argument(format!(
                "fs_type {other:?}: use ext4 or xfs"
            )))
        }
    };
    Ok(())
}

/// Grows the file system `fs` on `device`, mounted at `path`, to the device's size.
pub async fn grow(fs: &str, device: &str, path: &str) -> Result<(), Status> {
    match fs {
        "ext4" | "ext3" | "ext2" => run("resize2fs", &[device]).await?,
        "xfs" => run("xfs_growfs", &[path]).await?,
        other => {
            return Err(Status::failed_precondition(format!(
                "the volume's file system is {other}, which this driver does not grow"
            )))
        }
    };
    Ok(())
}

/// A file system's usage: bytes (total, available, used) and inodes (total, free, used), from
/// `stat -f -c '%S %b %a %f %c %d'`'s output.
pub fn parse_statfs(out: &str) -> Option<([i64; 3], [i64; 3])> {
    let n: Vec<i64> = out
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [bsize, blocks, avail, free, files, ffree] = n[..] else {
        return None;
    };
    Some((
        [bsize * blocks, bsize * avail, bsize * (blocks - free)],
        [files, ffree, files - ffree],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_table_is_not_a_blank_device() {
        assert_eq!(
            probed("/dev/x", "TYPE=xfs\n").unwrap().as_deref(),
            Some("xfs")
        );
        assert_eq!(probed("/dev/x", "").unwrap(), None);
        let e = probed("/dev/x", "PTTYPE=gpt\n").unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message().contains("gpt partition table"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn mount_points_and_usage_are_read() {
        let info = "25 1 259:4 / /var/lib/kubelet/staging/pv1 rw,relatime - ext4 /dev/nvme1n1 rw\n\
                    26 1 0:22 / /proc rw - proc proc rw\n";
        assert_eq!(
            mount_of(info, "/var/lib/kubelet/staging/pv1/"),
            Some(("259:4".into(), "/dev/nvme1n1".into()))
        );
        assert_eq!(mount_of(info, "/var/lib/kubelet/staging"), None);
        assert_eq!(
            parse_statfs("4096 1000 800 900 65536 65000\n"),
            Some(([4_096_000, 3_276_800, 409_600], [65536, 65000, 536]))
        );
        assert_eq!(parse_statfs("4096 x"), None);
    }
}

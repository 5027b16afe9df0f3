//! The desired state: the volumes this host wants attached, kept in `state.json` under the
//! state directory (`/var/lib/alcubierre-node`), so the daemon attaches them again after a
//! reboot or a restart. Written atomically (a temporary file, fsync, rename, fsync of the
//! directory); `attach`, `detach` and the daemon's rounds hold the directory's lock file while
//! they change the host, so they never race.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Protocol, Result};

/// The state file's format version.
pub const VERSION: u32 = 1;

/// One volume the host wants attached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wanted {
    /// The volume's id.
    pub volume: String,
    /// Its name when it was attached.
    pub name: String,
    /// How it is reached.
    pub protocol: Protocol,
    /// The NVMe subsystem NQN or the iSCSI target IQN (so a detach needs no cluster).
    pub target: String,
    /// The NVMe namespace's UUID (the volume's device is found by it).
    pub uuid: String,
    /// The NVMe namespace id or the iSCSI LUN.
    pub lun: u32,
    /// The host's iSCSI CHAP user when it attached (the daemon logs in with it again).
    #[serde(default)]
    pub chap_user: Option<String>,
}

/// The state file's contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Desired {
    /// [`VERSION`].
    pub version: u32,
    /// The volumes, in the order they were attached.
    pub attachments: Vec<Wanted>,
}

impl Default for Desired {
    fn default() -> Self {
        Self {
            version: VERSION,
            attachments: Vec::new(),
        }
    }
}

impl Desired {
    /// The entry of volume `id`.
    pub fn get(&self, id: &str) -> Option<&Wanted> {
        self.attachments.iter().find(|w| w.volume == id)
    }

    /// Adds or replaces the entry of `w.volume`.
    pub fn put(&mut self, w: Wanted) {
        match self.attachments.iter_mut().find(|x| x.volume == w.volume) {
            Some(x) => *x = w,
            None => self.attachments.push(w),
        }
    }

    /// Removes the entry of volume `id`; whether there was one.
    pub fn remove(&mut self, id: &str) -> bool {
        let n = self.attachments.len();
        self.attachments.retain(|w| w.volume != id);
        n != self.attachments.len()
    }
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

/// The held lock; released when dropped.
pub struct Lock(#[allow(dead_code)] File);

impl StateDir {
    /// The state directory at `dir` (created when missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Takes the directory's lock, waiting for another holder.
    pub fn lock(&self) -> Result<Lock> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io("creating the state directory", &self.dir, e))?;
        let p = self.dir.join("lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io("opening the lock file", &p, e))?;
        f.lock().map_err(|e| Error::io("locking", &p, e))?;
        Ok(Lock(f))
    }

    /// The desired state; empty when the file does not exist. A file that does not parse is an
    /// error naming it (never read as empty: that would detach everything).
    pub fn load(&self) -> Result<Desired> {
        let p = self.file();
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Desired::default()),
            Err(e) => return Err(Error::io("reading the desired state", p, e)),
        };
        let d: Desired = serde_json::from_str(&text).map_err(|e| {
            Error::Invalid(format!(
                "{}: {e}; fix or move the file (it lists the volumes this host keeps attached)",
                p.display()
            ))
        })?;
        if d.version != VERSION {
            return Err(Error::Invalid(format!(
                "{}: version {} (this agent reads version {VERSION})",
                p.display(),
                d.version
            )));
        }
        Ok(d)
    }

    /// Saves `d` atomically.
    pub fn save(&self, d: &Desired) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io("creating the state directory", &self.dir, e))?;
        let p = self.file();
        let tmp = self.dir.join("state.json.tmp");
        let json = serde_json::to_vec_pretty(d)
            .map_err(|e| Error::Invalid(format!("the desired state: {e}")))?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &p)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| Error::io("saving the desired state", &p, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_survives_a_save_and_a_bad_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path().join("state"));
        assert_eq!(s.load().unwrap(), Desired::default());
        let _l = s.lock().unwrap();
        let mut want = Desired::default();
        want.put(Wanted {
            volume: "a".into(),
            name: "va".into(),
            protocol: Protocol::NvmeTcp,
            target: "t".into(),
            uuid: "u".into(),
            lun: 1,
            chap_user: None,
        });
        want.put(Wanted {
            volume: "b".into(),
            name: "vb".into(),
            protocol: Protocol::Iscsi,
            target: "t".into(),
            uuid: "u".into(),
            lun: 1,
            chap_user: None,
        });
        want.put(Wanted {
            volume: "a".into(),
            name: "va2".into(),
            protocol: Protocol::Iscsi,
            target: "t".into(),
            uuid: "u".into(),
            lun: 1,
            chap_user: None,
        });
        s.save(&want).unwrap();
        let got = s.load().unwrap();
        assert_eq!(got, want);
        assert_eq!(got.attachments.len(), 2);
        assert_eq!(got.get("a").unwrap().name, "va2");
        let mut got = got;
        assert!(got.remove("a"));
        assert!(!got.remove("a"));
        std::fs::write(d.path().join("state/state.json"), "{not json").unwrap();
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("state.json"), "{e}");
        std::fs::write(
            d.path().join("state/state.json"),
            r#"{"version":9,"attachments":[]}"#,
        )
        .unwrap();
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("version 9"), "{e}");
    }
}

//! A throwaway single-host Ceph for tests, from Debian's packages (`ceph-mon`, `ceph-osd`,
//! `ceph-common`): one monitor and one memstore OSD on 127.0.0.1, cephx off, pool size 1, in a
//! temporary directory; the daemons are this process's children, stopped by PID when dropped.
//! No manager is started (RBD does not need one), which keeps it to ~2-5 s and ~100 MiB.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::RbdConfig;

/// A running Ceph.
pub struct CephCluster {
    daemons: Vec<Child>,
    dir: PathBuf,
    /// Its ceph.conf.
    pub conf: PathBuf,
    /// The pool made for RBD.
    pub pool: String,
}

impl Drop for CephCluster {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn run(cmd: &mut Command, what: &str) -> std::io::Result<String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{what}: {e} (Debian's ceph-mon, ceph-osd and ceph-common: run scripts/setup as root)"),
        )
    })?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn daemon(conf: &Path, dir: &Path, bin: &str, id: &str) -> std::io::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("{bin}.{id}.out")))?;
    Command::new(bin)
        .arg("-c")
        .arg(conf)
        .args(["-f", "-i", id])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("starting {bin}: {e}")))
}

impl CephCluster {
    /// Starts a monitor and an OSD and creates pool `rbd` for RBD.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(false)
    }

    /// [`CephCluster::start`] with cephx: every daemon and client needs a key. The keys of
    /// `mon.`, `client.admin` and `osd.0` are in one keyring that ceph.conf names, so a client
    /// using this ceph.conf as `client.admin` gets in.
    pub fn start_cephx() -> std::io::Result<Self> {
        Self::start_with(true)
    }

    /// Starts a cluster, trying again from scratch when a start fails: the monitor's port is
    /// picked free but may be taken before the monitor binds it, and on a loaded machine a
    /// monitor sometimes misses the first command's timeout. The error names every attempt.
    fn start_with(cephx: bool) -> std::io::Result<Self> {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(cephx) {
                Ok(c) => return Ok(c),
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(std::io::Error::other(format!(
            "Ceph did not start in 3 attempts: {}",
            failures.join(" / ")
        )))
    }

    fn try_start(cephx: bool) -> std::io::Result<Self> {
        let port = free_port()?;
        let dir = scratch_root().join(format!("alcubierre-ceph-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["mon/a", "osd/0", "run", "log"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let fsid = uuid::Uuid::new_v4().to_string();
        let d = dir.display();
        let (auth, keyring_line) = if cephx {
            ("cephx", format!("keyring = {d}/keyring\n"))
        } else {
            ("none", String::new())
        };
        let conf = dir.join("ceph.conf");
        std::fs::write(
            &conf,
            format!(
                "[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{port}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
auth cluster required = {auth}
auth service required = {auth}
auth client required = {auth}
{keyring_line}auth allow insecure global id reclaim = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = 2147483648
memstore page set = true
mon paxos propose interval = 0.1
run dir = {d}/run
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
mon data = {d}/mon/$id
osd data = {d}/osd/$id
"
            ),
        )?;
        let monmap = dir.join("monmap");
        run(
            Command::new("monmaptool")
                .args(["--create", "--addv", "a"])
                .arg(format!("[v2:127.0.0.1:{port}]"))
                .args(["--fsid", &fsid])
                .arg(&monmap),
            "monmaptool",
        )?;
        let keyring = dir.join("keyring");
        let mut mkfs = Command::new("ceph-mon");
        mkfs.arg("-c")
            .arg(&conf)
            .args(["--mkfs", "-i", "a", "--monmap"])
            .arg(&monmap);
        if cephx {
            for (i, (name, caps)) in [
                ("mon.", &["mon", "allow *"][..]),
                (
                    "client.admin",
                    &["mon", "allow *", "osd", "allow *", "mgr", "allow *"],
                ),
                ("osd.0", &["mon", "allow profile osd", "osd", "allow *"]),
            ]
            .into_iter()
            .enumerate()
            {
                let mut tool = Command::new("ceph-authtool");
                tool.arg(&keyring);
                if i == 0 {
                    tool.arg("--create-keyring");
                }
                tool.args(["--gen-key", "-n", name]);
                for cap in caps.chunks(2) {
                    tool.args(["--cap", cap[0], cap[1]]);
                }
                run(&mut tool, "ceph-authtool")?;
            }
            // The monitor's store starts with every key of the keyring.
            mkfs.arg("--keyring").arg(&keyring);
        }
        run(&mut mkfs, "ceph-mon --mkfs")?;
        let mut me = Self {
            daemons: vec![daemon(&conf, &dir, "ceph-mon", "a")?],
            conf: conf.clone(),
            dir: dir.clone(),
            pool: "rbd".into(),
        };
        let osd_uuid = uuid::Uuid::new_v4().to_string();
        me.ceph(&["osd", "new", &osd_uuid])
            .map_err(|e| std::io::Error::other(format!("{e}; {}", me.mon_tail())))?;
        run(
            Command::new("ceph-osd").arg("-c").arg(&conf).args([
                "-i",
                "0",
                "--mkfs",
                "--osd-uuid",
                &osd_uuid,
            ]),
            "ceph-osd --mkfs",
        )?;
        me.daemons.push(daemon(&conf, &dir, "ceph-osd", "0")?);
        me.ceph(&["osd", "pool", "create", "rbd", "8"])?;
        me.ceph(&["osd", "pool", "application", "enable", "rbd", "rbd"])?;
        // Wait until the pool serves I/O (`ceph pg stat` would need a manager).
        let start = Instant::now();
        loop {
            let listed = run(
                Command::new("timeout")
                    .args(["5", "rbd", "-c"])
                    .arg(&conf)
                    .args(["-p", "rbd", "ls"]),
                "rbd ls",
            );
            match listed {
                Ok(_) => break,
                Err(e) if start.elapsed() > Duration::from_secs(60) => {
                    return Err(std::io::Error::other(format!(
                        "Ceph's pool did not come up: {e}"
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        Ok(me)
    }

    /// Runs the `ceph` command line on this cluster; its output.
    pub fn ceph(&self, args: &[&str]) -> std::io::Result<String> {
        run(
            Command::new("ceph")
                .arg("-c")
                .arg(&self.conf)
                .args(["--connect-timeout", "20"])
                .args(args),
            &format!("ceph {}", args.join(" ")),
        )
    }

    /// Runs the `rbd` command line on this cluster's pool; its output.
    pub fn rbd(&self, args: &[&str]) -> std::io::Result<String> {
        run(
            Command::new("rbd")
                .arg("-c")
                .arg(&self.conf)
                .args(["-p", &self.pool])
                .args(args),
            &format!("rbd {}", args.join(" ")),
        )
    }

    /// A backend configuration for this cluster.
    pub fn config(&self) -> RbdConfig {
        RbdConfig {
            conf_file: Some(self.conf.display().to_string()),
            pool: self.pool.clone(),
            ..RbdConfig::default()
        }
    }

    /// Freezes the OSD (SIGSTOP): I/O then waits, and fails after the operation timeout. (A
    /// memstore OSD cannot be restarted: its data lives in its memory.)
    pub fn freeze_osd(&self) -> std::io::Result<()> {
        self.signal_osd("-STOP")?;
        // The signal is delivered asynchronously: wait until every thread of the OSD has
        // stopped, so that no request is served after this returns.
        let tasks = format!("/proc/{}/task", self.daemons[1].id());
        let t0 = std::time::Instant::now();
        loop {
            let mut running = 0;
            for t in std::fs::read_dir(&tasks)? {
                let stat = std::fs::read_to_string(t?.path().join("stat")).unwrap_or_default();
                // The state follows the command's closing parenthesis.
                let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
                if !matches!(state, Some('T') | Some('t') | None) {
                    running += 1;
                }
            }
            if running == 0 {
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(std::io::Error::other(format!(
                    "{running} OSD threads still run 10 s after SIGSTOP"
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Lets the OSD run again after [`CephCluster::freeze_osd`].
    pub fn thaw_osd(&self) -> std::io::Result<()> {
        self.signal_osd("-CONT")
    }

    /// The keyring with the cluster's keys (used when started with cephx).
    pub fn keyring(&self) -> PathBuf {
        self.dir.join("keyring")
    }

    /// The OSD's process id (for its CPU time).
    pub fn osd_pid(&self) -> u32 {
        self.daemons[1].id()
    }

    /// Why the monitor is not answering, from its own output and log (a full disk, a taken
    /// port): the last lines, for the error a failed start returns.
    fn mon_tail(&mut self) -> String {
        let state = match self.daemons[0].try_wait() {
            Ok(Some(status)) => format!("ceph-mon exited ({status})"),
            _ => "ceph-mon is running".to_string(),
        };
        let mut lines = Vec::new();
        for f in ["ceph-mon.a.out", "log/mon.a.log"] {
            let text = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            lines.extend(
                all[all.len().saturating_sub(5)..]
                    .iter()
                    .map(|l| l.to_string()),
            );
        }
        format!("{state}; its last words: {}", lines.join(" | "))
    }

    fn signal_osd(&self, sig: &str) -> std::io::Result<()> {
        let pid = self.daemons[1].id().to_string();
        run(Command::new("kill").args([sig, &pid]), "kill").map(|_| ())
    }
}

/// Where the throwaway cluster keeps its files: memory (`/dev/shm`) where the machine has it.
/// A monitor shuts itself down when its disk's free space, in whole percent, is at or below
/// `mon data avail crit`; on a nearly full build disk (under 1% free) even a setting of 0 does,
/// and the test would fail for a reason that has nothing to do with the code under test.
fn scratch_root() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

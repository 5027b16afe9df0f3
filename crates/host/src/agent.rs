//! The agent: attach, detach, status. Each call takes the
//! state directory's lock, so a command and the daemon never change the host at once.
//!
//! Attach: the API's attachment (the host's NQN, Host Identifier and IQN join the volume's
//! access list), then a path to every portal of the connection info ([`crate::plan`]), retried
//! while the nodes apply the access list; the volume's device (the NVMe namespace head, or the
//! dm-multipath map); the desired state saved. When no path comes up, or the device does not
//! appear, what was made is undone (paths, and the attachment when this call made it).
//!
//! Detach: refuses while the device is in use unless forced; removes the volume from the
//! desired state, drops every path (and the map, the disks, the iSCSI node records), then the
//! API's attachment.
//!
//! The daemon's rounds and liveness reports are [`crate::daemon`]'s.

use std::time::{Duration, Instant};

use alcubierre_api::v1;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::connection::{path_error, portals_of, probe, wanted_of};
use crate::endpoints::Api;
use crate::identity::Identity;
use crate::iscsi::{self, Chap, Iscsi};
use crate::nvme::{self, HostId, Nvme, Settings};
use crate::plan::{plan, Path, Portal, Step};
use crate::state::{StateDir, Wanted};
use crate::sysfs::Root;
pub use crate::view::{Attached, PathView, RoundReport};
use crate::{device, Error, Protocol, Result};

/// How long attach keeps connecting paths that do not come up (the nodes apply a new access
/// list within a heartbeat or two).
const CONNECT_WINDOW: Duration = Duration::from_secs(15);
/// How long attach waits for the device once a path is up.
const DEVICE_WAIT: Duration = Duration::from_secs(20);
/// How long an API call may take.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a liveness report may take per endpoint.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);

/// The agent of this host.
pub struct Agent {
    /// Its configuration.
    pub cfg: Config,
    /// Who the host is.
    pub id: Identity,
    pub(crate) api: Api,
    /// The liveness reports' client: short timeouts, so a dead endpoint delays no report.
    pub(crate) beat: Api,
    root: Root,
    nvme: Nvme,
    iscsi: Iscsi,
    pub(crate) state: StateDir,
    /// What the liveness reports name as the agent.
    pub(crate) reporter: String,
    /// Whether attaching needs the host's attachment made already (by the CSI controller).
    published_only: bool,
}

impl Agent {
    /// The agent with `cfg`, the host's files under `root`.
    pub fn new(cfg: Config, root: Root) -> Result<Self> {
        let id = Identity::read(&root, cfg.host.as_deref());
        if id.name.is_empty() {
            return Err(Error::Invalid(
                "host: no host name (no hostname file); set host in the configuration".into(),
            ));
        }
        Ok(Self {
            api: Api::new(&cfg, API_TIMEOUT)?,
            beat: Api::new(&cfg, HEARTBEAT_TIMEOUT)?,
            nvme: Nvme::new(root.clone()),
            iscsi: Iscsi::new(root.clone()),
            state: StateDir::new(&cfg.state_dir),
            reporter: format!("alcubierre-node {}", env!("CARGO_PKG_VERSION")),
            published_only: false,
            root,
            id,
            cfg,
        })
    }

    /// The agent whose liveness reports name `reporter` as the agent (the CSI node plugin's
    /// name theirs).
    pub fn reported_as(mut self, reporter: String) -> Self {
        self.reporter = reporter;
        self
    }

    /// The agent that attaches only volumes the host is attached to already (the CSI node
    /// plugin: ControllerPublishVolume makes the attachment, and a node must never make one
    /// itself, which could undo a fence or give a single-node volume a second node).
    pub fn published_only(mut self) -> Self {
        self.published_only = true;
        self
    }

    /// The API.
    pub fn api(&self) -> &Api {
        &self.api
    }

    fn host_id(&self) -> Result<HostId> {
        match (&self.id.nqn, &self.id.hostid) {
            (Some(nqn), Some(hostid)) => Ok(HostId {
                nqn: nqn.clone(),
                hostid: hostid.clone(),
            }),
            (None, _) => Err(Error::Host(
                "no NVMe host NQN: /etc/nvme/hostnqn is missing or empty (nvme gen-hostnqn > /etc/nvme/hostnqn)"
                    .into(),
            )),
            (_, None) => Err(Error::Host(
                "no NVMe Host Identifier: /etc/nvme/hostid is missing (uuidgen > /etc/nvme/hostid)".into(),
            )),
        }
    }

    /// Checks that the host can attach over `protocol`.
    fn ready_for(&self, protocol: Protocol) -> Result<()> {
        match protocol {
            Protocol::NvmeTcp => {
                self.host_id()?;
                if !self.nvme.fabrics_present() {
                    return Err(Error::Host(
                        "the NVMe/TCP initiator is not loaded (no /dev/nvme-fabrics): modprobe nvme-tcp".into(),
                    ));
                }
                if self.nvme.native_multipath() == Some(false) {
                    return Err(Error::Host(
                        "native NVMe multipath is off (nvme_core.multipath=N): boot with nvme_core.multipath=Y, or attach over iSCSI".into(),
                    ));
                }
            }
            Protocol::Iscsi => {
                if self.id.iqn.is_none() {
                    return Err(Error::Host(
                        "no iSCSI initiator name: /etc/iscsi/initiatorname.iscsi is missing (install open-iscsi)".into(),
                    ));
                }
                if !self.root.path("sys/module/iscsi_tcp").exists() {
                    return Err(Error::Host(
                        "the iSCSI initiator is not loaded (no iscsi_tcp module): modprobe iscsi_tcp".into(),
                    ));
                }
                if !self.root.path("sys/module/dm_multipath").exists() {
                    return Err(Error::Host(
                        "dm-multipath is not loaded: modprobe dm-multipath".into(),
                    ));
                }
                if !iscsi::multipathd_running() {
                    return Err(Error::Host(
                        "multipathd is not running: systemctl enable --now multipathd".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Attaches `volume` (id or name) over `protocol`; idempotent.
    pub fn attach(&self, volume: &str, protocol: Protocol) -> Result<Attached> {
        let _lock = self.state.lock()?;
        self.ready_for(protocol)?;
        let host = self.id.name.clone();
        let v = self.api.call(|c| c.volume(volume))?;
        let desired = self.state.load()?;
        let known = desired.get(&v.id).cloned();
        if let Some(k) = known.as_ref().filter(|k| k.protocol != protocol) {
            return Err(Error::Invalid(format!(
                "volume {} is attached over {}; detach it first to attach it over {protocol}",
                k.name, k.protocol
            )));
        }
        let was = v.hosts.contains(&host);
        if self.published_only && !was {
            return Err(Error::Invalid(format!(
                "volume {} is not published to this node ({host}): ControllerPublishVolume \
                 attaches it first (a fenced node's attachment is gone until it is published again)",
                v.name
            )));
        }
        let conn = self.api.call(|c| c.connection(&v.id))?;
        let before = wanted_of(&conn, protocol)?;
        let had_paths = self.has_paths(&before);
        if !was && !v.any_host && had_paths {
            // Paths from before the host lost its access (a fence): writes queued on them must
            // never reach the volume, which another host may use now.
            return Err(Error::Invalid(format!(
                "this host still has paths to volume {} from before it lost access (fenced?); \
                 their queued writes must not reach it: run `alcubierre-node detach {} --force` first",
                v.name, v.name
            )));
        }
        let req = v1::AttachRequest {
            nqn: self.id.nqn.clone(),
            iqn: self.id.iqn.clone(),
            nvme_hostid: self.id.hostid.clone(),
        };
        let att = self.api.call(|c| c.attach(&v.id, &host, &req))?;
        let conn = &att.connection;
        let wanted = wanted_of(conn, protocol)?;
        match self.bring_up(conn, &wanted) {
            Ok(a) => {
                let mut d = self.state.load()?;
                d.put(wanted);
                self.state.save(&d)?;
                Ok(a)
            }
            Err(e) => {
                // Nothing half-attached: this call's paths, and its attachment, go. A volume
                // that was attached before keeps what it had.
                if known.is_none() && !had_paths {
                    if let Err(u) = self.tear_down(&wanted, true) {
                        warn!(volume = %conn.volume, "undoing a failed attach: {u}");
                    }
                }
                if !was {
                    if let Err(u) = self.api.call(|c| c.detach(&conn.volume, &host, false)) {
                        warn!(volume = %conn.volume, "undoing a failed attach's attachment: {u}");
                    }
                }
                Err(e)
            }
        }
    }

    /// Connects every portal (for up to [`CONNECT_WINDOW`]: the nodes apply the access list
    /// meanwhile) and waits for the device.
    fn bring_up(&self, conn: &v1::ConnectionInfo, w: &Wanted) -> Result<Attached> {
        let t0 = Instant::now();
        loop {
            let errors = self.step_paths(conn, w).errors;
            let wanted = portals_of(conn, w.protocol);
            let missing = self.missing(conn, w, &wanted);
            if missing == 0 {
                break;
            }
            let some = missing < wanted.len();
            if t0.elapsed() > CONNECT_WINDOW {
                if some {
                    // Multipath with the paths that came up; the daemon retries the others.
                    warn!(volume = %conn.volume, "attached with {} of {} paths: {}",
                        wanted.len() - missing, wanted.len(),
                        errors.join("; "));
                    break;
                }
                return Err(Error::NoPath {
                    volume: conn.name.clone(),
                    reasons: if errors.is_empty() {
                        "no portal".into()
                    } else {
                        errors.join("; ")
                    },
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let t0 = Instant::now();
        loop {
            if w.protocol == Protocol::Iscsi {
                self.iscsi_add_to_map(conn);
            }
            if let Some(a) = self.attached(w) {
                let settling = Duration::from_secs(5);
                // Every path in the map, and udev's stable link, unless they take too long.
                let more_paths =
                    a.protocol == Protocol::Iscsi && a.paths.len() > self.iscsi_map_paths(&a.block);
                let no_link = !a.device.starts_with("/dev/disk/by-id/")
                    && self.root.path("run/udev/control").exists();
                if (more_paths || no_link) && t0.elapsed() < settling {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                return Ok(a);
            }
            if t0.elapsed() > DEVICE_WAIT {
                return Err(Error::Timeout {
                    what: format!(
                        "volume {}'s device ({})",
                        conn.name,
                        match w.protocol {
                            Protocol::NvmeTcp => "the NVMe namespace",
                            Protocol::Iscsi => "the dm-multipath map: is multipathd running with the agent's section?",
                        }
                    ),
                    secs: DEVICE_WAIT.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether the host has any path to `w`'s target.
    fn has_paths(&self, w: &Wanted) -> bool {
        match w.protocol {
            Protocol::NvmeTcp => !self.nvme.controllers_of(&w.target).is_empty(),
            Protocol::Iscsi => !self.iscsi.sessions_of(&w.target).is_empty(),
        }
    }

    /// How many of `wanted` have no path.
    fn missing(&self, conn: &v1::ConnectionInfo, w: &Wanted, wanted: &[Portal]) -> usize {
        let present: Vec<Portal> = match w.protocol {
            Protocol::NvmeTcp => self
                .nvme_paths(&conn.nvme.subsystem_nqn)
                .into_iter()
                .map(|p| p.portal)
                .collect(),
            Protocol::Iscsi => self
                .iscsi_paths(&w.target)
                .into_iter()
                .map(|p| p.portal)
                .collect(),
        };
        wanted.iter().filter(|p| !present.contains(p)).count()
    }

    fn nvme_paths(&self, nqn: &str) -> Vec<Path<String>> {
        self.nvme
            .controllers_of(nqn)
            .into_iter()
            .filter_map(|c| {
                c.portal.map(|portal| Path {
                    portal,
                    live: c.state == "live",
                    handle: c.name,
                })
            })
            .collect()
    }

    fn iscsi_paths(&self, iqn: &str) -> Vec<Path<iscsi::Session>> {
        self.iscsi
            .sessions_of(iqn)
            .into_iter()
            .filter_map(|s| {
                s.portal.clone().map(|portal| Path {
                    portal,
                    live: s.state == "LOGGED_IN",
                    handle: s,
                })
            })
            .collect()
    }

    /// One pass of the plan for volume `conn`: connects missing portals, drops others.
    pub(crate) fn step_paths(&self, conn: &v1::ConnectionInfo, w: &Wanted) -> RoundReport {
        let mut r = RoundReport::default();
        let wanted = portals_of(conn, w.protocol);
        let name = &conn.name;
        match w.protocol {
            Protocol::NvmeTcp => {
                let nqn = &conn.nvme.subsystem_nqn;
                for step in plan(&wanted, &self.nvme_paths(nqn)) {
                    match step {
                        Step::Connect(p) => match self.nvme_connect(nqn, &p) {
                            Ok(c) => {
                                info!(volume = %name, "connected {p} ({c})");
                                r.connected.push(format!("{name}: {p}"));
                            }
                            Err(e) => r.errors.push(path_error(&p, &e)),
                        },
                        Step::Drop(path) => match self.nvme.disconnect(&path.handle) {
                            Ok(()) => {
                                info!(volume = %name, "dropped {} ({})", path.portal, path.handle);
                                r.dropped.push(format!("{name}: {}", path.portal));
                            }
                            Err(e) => r.errors.push(format!("{}: {e}", path.portal)),
                        },
                    }
                }
            }
            Protocol::Iscsi => {
                let Some(ic) = &conn.iscsi else {
                    r.errors
                        .push(format!("{name}: its nodes do not serve iSCSI"));
                    return r;
                };
                let chap = match self.chap(ic.chap_user.as_ref().or(w.chap_user.as_ref())) {
                    Ok(c) => c,
                    Err(e) => {
                        r.errors.push(e.to_string());
                        return r;
                    }
                };
                for step in plan(&wanted, &self.iscsi_paths(&ic.target_iqn)) {
                    match step {
                        Step::Connect(p) => {
                            match probe(&p)
                                .and_then(|()| iscsi::login(&ic.target_iqn, &p, chap.as_ref()))
                            {
                                Ok(()) => {
                                    info!(volume = %name, "logged in to {p}");
                                    r.connected.push(format!("{name}: {p}"));
                                }
                                Err(e) => {
                                    // A failed login leaves no record behind.
                                    let _ = iscsi::logout(&ic.target_iqn, &p);
                                    r.errors.push(path_error(&p, &e));
                                }
                            }
                        }
                        Step::Drop(path) => match self.drop_session(&path.handle, ic.lun) {
                            Ok(()) => {
                                info!(volume = %name, "logged out of {}", path.portal);
                                r.dropped.push(format!("{name}: {}", path.portal));
                            }
                            Err(e) => r.errors.push(format!("{}: {e}", path.portal)),
                        },
                    }
                }
                self.iscsi_add_to_map(conn);
            }
        }
        r
    }

    fn nvme_connect(&self, nqn: &str, p: &Portal) -> Result<String> {
        probe(p)?;
        let host = self.host_id()?;
        let line = nvme::connect_options(&host, nqn, p, Settings::recommended());
        let c = self.nvme.connect(&line)?;
        if let Err(e) = self.nvme.set_iopolicy(&c, nvme::IOPOLICY) {
            warn!("{e}");
        }
        Ok(c)
    }

    fn chap(&self, user: Option<&String>) -> Result<Option<Chap>> {
        let Some(user) = user else {
            return Ok(None);
        };
        let Some(f) = &self.cfg.chap_secret_file else {
            return Err(Error::Invalid(format!(
                "chap_secret_file: the cluster has CHAP user {user:?} for this host; put its secret in a file and name it in the configuration"
            )));
        };
        let secret = std::fs::read_to_string(f)
            .map_err(|e| Error::io("chap_secret_file: reading the CHAP secret", f, e))?
            .trim()
            .to_string();
        Ok(Some(Chap {
            user: user.clone(),
            secret,
        }))
    }

    /// Hands each iSCSI disk of the volume without a map to multipathd.
    fn iscsi_add_to_map(&self, conn: &v1::ConnectionInfo) {
        let Some(ic) = &conn.iscsi else { return };
        if let Ok(true) = self.iscsi.write_multipath_section() {
            if let Err(e) = iscsi::run("multipathd", &["reconfigure"]) {
                warn!("{e}");
            }
        }
        for s in self.iscsi.sessions_of(&ic.target_iqn) {
            let Some(sd) = self.iscsi.disk(s.sid, ic.lun) else {
                continue;
            };
            if self.iscsi.map_of(&sd).is_none() {
                // find_multipaths may want the WWID known first.
                let dev = format!("/dev/{sd}");
                let _ = iscsi::run("multipath", &["-a", &dev]);
                // udev may be adding it at the same moment; the next round looks again.
                if let Err(e) = iscsi::run("multipathd", &["add", "path", &sd]) {
                    debug!(volume = %conn.name, "{e}");
                }
            }
        }
    }

    fn iscsi_map_paths(&self, dm: &str) -> usize {
        self.iscsi.map_disks(dm).len()
    }

    /// Removes session `s`'s disk from its map and the kernel, and logs out.
    fn drop_session(&self, s: &iscsi::Session, lun: u32) -> Result<()> {
        if let Some(sd) = self.iscsi.disk(s.sid, lun) {
            let _ = iscsi::run("multipathd", &["del", "path", &sd]);
            self.iscsi.delete_disk(&sd)?;
        }
        match &s.portal {
            Some(p) => iscsi::logout(&s.target, p),
            None => Ok(()),
        }
    }

    /// The attached volume `w` as the host sees it, once its device exists.
    pub fn attached(&self, w: &Wanted) -> Option<Attached> {
        let (block, prefer, paths) = match w.protocol {
            Protocol::NvmeTcp => {
                let block = self.nvme.namespace_by_uuid(&w.uuid)?;
                let paths = self
                    .nvme
                    .controllers_of(&w.target)
                    .into_iter()
                    .map(|c| PathView {
                        portal: c.portal.map(|p| p.to_string()).unwrap_or_default(),
                        state: match self.nvme.ana_state(&c.name) {
                            Some(ana) => format!("{} {ana}", c.state),
                            None => c.state.clone(),
                        },
                        handle: c.name,
                    })
                    .collect();
                (block, "nvme-uuid.", paths)
            }
            Protocol::Iscsi => {
                let sessions = self.iscsi.sessions_of(&w.target);
                let block = sessions
                    .iter()
                    .filter_map(|s| self.iscsi.disk(s.sid, w.lun))
                    .find_map(|sd| self.iscsi.map_of(&sd))
                    .map(|(dm, _)| dm)?;
                let paths = sessions
                    .into_iter()
                    .map(|s| PathView {
                        portal: s.portal.map(|p| p.to_string()).unwrap_or_default(),
                        handle: format!("session{}", s.sid),
                        state: s.state,
                    })
                    .collect();
                (block, "dm-uuid-mpath-", paths)
            }
        };
        let device = device::by_id(&self.root, &block, prefer).unwrap_or_else(|| {
            match w.protocol {
                Protocol::Iscsi => self
                    .root
                    .attr(&format!("sys/block/{block}/dm/name"))
                    .map(|n| format!("/dev/mapper/{n}")),
                Protocol::NvmeTcp => None,
            }
            .unwrap_or_else(|| format!("/dev/{block}"))
        });
        Some(Attached {
            volume: w.volume.clone(),
            name: w.name.clone(),
            protocol: w.protocol,
            device,
            block,
            paths,
        })
    }

    /// Detaches `volume` (id or name): refuses while its device is in use unless `force`;
    /// idempotent.
    pub fn detach(&self, volume: &str, force: bool) -> Result<bool> {
        let _lock = self.state.lock()?;
        let w = match self.detach_known(volume, force)? {
            Some(w) => w,
            None => {
                // Not in this host's state: paths made by hand go, and the cluster's
                // attachment. Both protocols are checked before either is torn down.
                let v = self.api.call(|c| c.volume(volume))?;
                let conn = self.api.call(|c| c.connection(&v.id))?;
                let mut ws = vec![wanted_of(&conn, Protocol::NvmeTcp)?];
                ws.extend(wanted_of(&conn, Protocol::Iscsi).ok());
                for w in &ws {
                    self.check_unused(w, force)?;
                }
                let mut any = false;
                for w in &ws {
                    any |= self.has_paths(w);
                    self.tear_down(w, force)?;
                }
                let r = self.api.call(|c| c.detach(&v.id, &self.id.name, false))?;
                return Ok(any || r.was_attached);
            }
        };
        match self.api.call(|c| c.detach(&w.volume, &self.id.name, false)) {
            Ok(_) => Ok(true),
            Err(e) if matches!(&e, Error::Api(a) if a.is_not_found()) => Ok(true),
            Err(e) => Err(Error::Invalid(format!(
                "volume {} is detached from this host, but the cluster still lists the host on it: {e}; run detach again to remove it there",
                w.name
            ))),
        }
    }

    /// Detaches `volume` on this host only (its paths and its desired-state entry), leaving
    /// the cluster's attachment (the CSI node plugin's unstage: unpublishing is the
    /// controller's); whether it was attached here.
    pub fn detach_local(&self, volume: &str, force: bool) -> Result<bool> {
        let _lock = self.state.lock()?;
        Ok(self.detach_known(volume, force)?.is_some())
    }

    /// With the lock held: detaches `volume` here when the desired state has it; its entry.
    fn detach_known(&self, volume: &str, force: bool) -> Result<Option<Wanted>> {
        let mut d = self.state.load()?;
        let Some(w) = d
            .attachments
            .iter()
            .find(|w| w.volume == volume || w.name == volume)
            .cloned()
        else {
            return Ok(None);
        };
        self.check_unused(&w, force)?;
        // Out of the desired state first, so no round connects it again meanwhile (the lock
        // keeps rounds out anyway); back in when the paths could not all go.
        d.remove(&w.volume);
        self.state.save(&d)?;
        if let Err(e) = self.tear_down(&w, force) {
            d.put(w.clone());
            self.state.save(&d)?;
            return Err(e);
        }
        Ok(Some(w))
    }

    fn check_unused(&self, w: &Wanted, force: bool) -> Result<()> {
        if force {
            return Ok(());
        }
        let block = match self.attached(w) {
            Some(a) => Some((a.block, a.device)),
            // No map or namespace: its disks may still be in use.
            None => match w.protocol {
                Protocol::Iscsi => self
                    .iscsi
                    .sessions_of(&w.target)
                    .iter()
                    .filter_map(|s| self.iscsi.disk(s.sid, w.lun))
                    .map(|sd| (sd.clone(), format!("/dev/{sd}")))
                    .find(|(sd, _)| !device::users(&self.root, sd).is_empty()),
                Protocol::NvmeTcp => None,
            },
        };
        if let Some((block, dev)) = block {
            // udev probes a device for a moment after it changes (an unmount, a new map):
            // that is not a user.
            let mut by = device::users(&self.root, &block);
            for _ in 0..20 {
                if by.is_empty() || !by.iter().all(|b| b.contains("udev")) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(150));
                by = device::users(&self.root, &block);
            }
            if !by.is_empty() {
                return Err(Error::InUse {
                    device: dev,
                    by: by.join(", "),
                });
            }
        }
        Ok(())
    }

    /// Drops every path of `w` (over iSCSI its maps and disks too). Without `force` a map that
    /// cannot be flushed (it was opened meanwhile) stops it, with queueing unchanged; with
    /// `force` queueing is turned off first, so what is queued fails instead of waiting.
    pub(crate) fn tear_down(&self, w: &Wanted, force: bool) -> Result<()> {
        match w.protocol {
            Protocol::NvmeTcp => {
                for c in self.nvme.controllers_of(&w.target) {
                    self.nvme.disconnect(&c.name)?;
                }
            }
            Protocol::Iscsi => {
                let sessions = self.iscsi.sessions_of(&w.target);
                let mut maps: Vec<String> = sessions
                    .iter()
                    .filter_map(|s| self.iscsi.disk(s.sid, w.lun))
                    .filter_map(|sd| self.iscsi.map_of(&sd))
                    .map(|(_, name)| name)
                    .collect();
                maps.sort();
                maps.dedup();
                for m in &maps {
                    if force {
                        let _ = iscsi::run("multipathd", &["disablequeueing", "map", m]);
                    }
                    let mut last = Ok(String::new());
                    for _ in 0..10 {
                        last = iscsi::run("multipath", &["-f", m]);
                        if last.is_ok() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    if let Err(e) = last {
                        if force {
                            let _ = iscsi::run("multipathd", &["restorequeueing", "map", m]);
                        }
                        return Err(e);
                    }
                }
                for s in sessions {
                    self.drop_session(&s, w.lun)?;
                }
                // Records of portals whose sessions went some other way.
                iscsi::delete_records(&w.target)?;
            }
        }
        Ok(())
    }

    /// The desired volumes and how each stands.
    pub fn status(&self) -> Result<Vec<(Wanted, Option<Attached>)>> {
        let d = self.state.load()?;
        Ok(d.attachments
            .into_iter()
            .map(|w| {
                let a = self.attached(&w);
                (w, a)
            })
            .collect())
    }
}

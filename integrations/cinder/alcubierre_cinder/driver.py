"""Cinder volume driver for an Alcubierre cluster.

Volumes are made, grown, snapshotted, cloned and deleted through the cluster's REST API; hosts
attach through its attachment resource, which adds the connector's NQN (NVMe/TCP) or IQN
(iSCSI) to the volume's access list and answers how to reach it on every replica node. QoS
specs of a ``back-end`` (or ``both``) consumer become one QoS policy per volume, enforced by the
cluster's targets and recomputed when the volume grows or changes type.

Configure it in a ``cinder.conf`` back-end section (see docs/cinder.md)::

    [alcubierre]
    volume_driver = alcubierre_cinder.driver.AlcubierreDriver
    volume_backend_name = alcubierre
    alcubierre_api_url = https://10.0.0.10:8443
    alcubierre_api_token = ...
    alcubierre_ca_file = /etc/cinder/alcubierre-ca.pem
    alcubierre_protocol = nvme-tcp
"""

import hashlib
import hmac

from oslo_config import cfg
from oslo_log import log as logging

from cinder.common import constants
from cinder import exception
from cinder.i18n import _
from cinder import interface
from cinder.volume import configuration
from cinder.volume import driver
from cinder.volume import volume_types

from alcubierre_cinder import client as api
from alcubierre_cinder import connection
from alcubierre_cinder import qos

LOG = logging.getLogger(__name__)

GiB = 1024 ** 3

alcubierre_opts = [
    cfg.URIOpt(
        "alcubierre_api_url",
        schemes=["http", "https"],
        help="The cluster's REST API, for example https://10.0.0.10:8443 (any node serves it).",
    ),
    cfg.StrOpt(
        "alcubierre_api_token",
        secret=True,
        help="The API's bearer token (api_token in the [cluster] section of the nodes' "
        "configuration).",
    ),
    cfg.StrOpt(
        "alcubierre_ca_file",
        help="CA certificate file that signed the API's TLS certificate (default: the "
        "system's trust store).",
    ),
    cfg.IntOpt(
        "alcubierre_api_timeout",
        default=30,
        min=1,
        help="Seconds to wait for one API call.",
    ),
    cfg.StrOpt(
        "alcubierre_protocol",
        default="nvme-tcp",
        choices=["nvme-tcp", "iscsi"],
        help="How hosts reach volumes: NVMe/TCP (native NVMe multipath) or iSCSI "
        "(dm-multipath with ALUA).",
    ),
    cfg.IntOpt(
        "alcubierre_paths",
        min=1,
        max=8,
        help="Paths handed to each host (default: the cluster's multipath setting for the "
        "protocol).",
    ),
    cfg.BoolOpt(
        "alcubierre_iscsi_chap",
        default=False,
        help="iSCSI hosts log in with CHAP: each host gets a user and a secret derived from "
        "alcubierre_chap_key and its name, recorded on the cluster's host.",
    ),
    cfg.StrOpt(
        "alcubierre_chap_key",
        secret=True,
        help="The key CHAP secrets are derived from (required with alcubierre_iscsi_chap).",
    ),
    cfg.IntOpt(
        "alcubierre_snapshot_timeout",
        default=600,
        min=1,
        help="Seconds to wait for a snapshot to be ready (its volume is destaged first).",
    ),
]

CONF = cfg.CONF
CONF.register_opts(alcubierre_opts, group=configuration.SHARED_CONF_GROUP)


def _policy_name(volume):
    return f"cinder-{volume.id}"


@interface.volumedriver
class AlcubierreDriver(driver.VolumeDriver):
    """Alcubierre block storage over NVMe/TCP or iSCSI.

    Version history:
        1.0.0 - volumes, snapshots, clones, extend, attachments, back-end QoS, multiattach
    """

    VERSION = "1.0.0"
    CI_WIKI_NAME = "Alcubierre_CI"
    VENDOR = "Alcubierre"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(alcubierre_opts)
        self.client = None
        self._stats = {}

    @staticmethod
    def get_driver_options():
        return alcubierre_opts

    # ---- setup ----

    def do_setup(self, context):
        c = self.configuration
        try:
            self.client = api.Client(
                c.alcubierre_api_url,
                c.alcubierre_api_token,
                ca_file=c.alcubierre_ca_file,
                timeout=c.alcubierre_api_timeout,
            )
        except ValueError as e:
            raise exception.InvalidConfigurationValue(
                option=str(e).split()[0], value=None
            ) from e
        if c.alcubierre_iscsi_chap and not c.alcubierre_chap_key:
            raise exception.InvalidConfigurationValue(
                option="alcubierre_chap_key", value="(empty with alcubierre_iscsi_chap)"
            )

    def check_for_setup_error(self):
        status = self._call("reach the cluster", self.client.status)
        if status["active"] < 3:
            raise exception.VolumeBackendAPIException(
                data=_(
                    "the Alcubierre cluster at %(url)s has %(n)d active nodes; activate "
                    "at least 3 (alcubierre node activate) before creating volumes"
                )
                % {"url": self.client.url, "n": status["active"]}
            )

    def _call(self, what, fn, *args, **kwargs):
        """``fn(...)``; an API refusal becomes Cinder's exception with the API's reason."""
        try:
            return fn(*args, **kwargs)
        except api.ApiError as e:
            raise _backend_error(what, e) from e

    # ---- names ----

    @staticmethod
    def _volume_name(volume):
        # volume_name_template gives "volume-<id>" (43 characters); the API takes 64.
        name = volume.name
        if len(name) > 64:
            name = f"cinder-{volume.id}"
        return name

    @staticmethod
    def _snapshot_name(snapshot):
        name = snapshot.name
        if len(name) > 64 or name.startswith("."):
            name = f"snapshot-{snapshot.id}"
        return name

    # ---- QoS ----

    def _type_qos(self, type_id):
        if not type_id:
            return {}
        specs = volume_types.get_volume_type_qos_specs(type_id)["qos_specs"]
        return qos.enforced_specs(specs)

    def _qos_policy(self, volume, size_gb=None, type_id=None):
        """Saves the volume's policy (for its type's back-end specs at its size); its name, or
        ``None`` when the type has none."""
        specs = self._type_qos(type_id if type_id is not None else volume.volume_type_id)
        try:
            p = qos.policy(specs, size_gb if size_gb is not None else volume.size)
        except qos.InvalidSpecs as e:
            raise exception.InvalidQoSSpecs(reason=str(e)) from e
        if p is None:
            return None
        name = _policy_name(volume)
        self._call(f"save QoS policy {name}", self.client.put_qos, name, p)
        return name

    def _drop_policy(self, volume):
        try:
            self.client.delete_qos(_policy_name(volume))
        except api.ApiError as e:
            # In use or unreachable: a leftover policy limits nothing and is retried on delete.
            LOG.warning("Alcubierre: QoS policy %(p)s stays: %(e)s",
                        {"p": _policy_name(volume), "e": e})

    # ---- volumes ----

    def _create(self, volume, source=None):
        name = self._volume_name(volume)
        size = volume.size * GiB
        policy = self._qos_policy(volume)
        try:
            self.client.create_volume(name, size, qos=policy, source=source)
        except api.Conflict as e:
            # A retry after a lost answer finds its volume; another one is the API's refusal.
            if not _same_volume(self.client.volume(name), size, source):
                raise _backend_error(f"create volume {name}", e) from e
        except api.ApiError as e:
            self._drop_policy(volume)
            raise _backend_error(f"create volume {name}", e) from e
        return None

    def create_volume(self, volume):
        return self._create(volume)

    def delete_volume(self, volume):
        name = self._volume_name(volume)
        self._call(f"delete volume {name}", self.client.delete_volume, name)
        self._drop_policy(volume)

    def extend_volume(self, volume, new_size):
        name = self._volume_name(volume)
        self._call(f"grow volume {name}", self.client.resize, name, new_size * GiB)
        policy = self._qos_policy(volume, size_gb=new_size)
        if policy:
            self._call(f"set QoS of {name}", self.client.set_volume_qos, name, policy)

    def create_snapshot(self, snapshot):
        volume = self._volume_name(snapshot.volume)
        name = self._snapshot_name(snapshot)
        self._call(
            f"snapshot volume {volume}",
            self.client.create_snapshot,
            volume,
            name,
            timeout=self.configuration.alcubierre_snapshot_timeout,
        )

    def delete_snapshot(self, snapshot):
        volume = self._volume_name(snapshot.volume)
        name = self._snapshot_name(snapshot)
        # A missing snapshot is a success (the client says whether it existed).
        self._call(f"delete snapshot {volume}/{name}", self.client.delete_snapshot, volume, name)

    def create_volume_from_snapshot(self, volume, snapshot):
        if volume.size < snapshot.volume_size:
            raise exception.InvalidInput(
                reason=_("the new volume (%(n)d GiB) is smaller than the snapshot (%(s)d GiB)")
                % {"n": volume.size, "s": snapshot.volume_size}
            )
        return self._create(
            volume,
            source={
                "volume": self._volume_name(snapshot.volume),
                "snapshot": self._snapshot_name(snapshot),
            },
        )

    def create_cloned_volume(self, volume, src_vref):
        """A snapshot of the source, a volume from it, then the snapshot goes (a clone does
        not depend on its snapshot)."""
        if volume.size < src_vref.size:
            raise exception.InvalidInput(
                reason=_("the clone (%(n)d GiB) is smaller than its source (%(s)d GiB)")
                % {"n": volume.size, "s": src_vref.size}
            )
        src = self._volume_name(src_vref)
        temp = f"clone-{volume.id}"
        self._call(
            f"snapshot volume {src} for a clone",
            self.client.create_snapshot,
            src,
            temp,
            timeout=self.configuration.alcubierre_snapshot_timeout,
        )
        try:
            return self._create(volume, source={"volume": src, "snapshot": temp})
        finally:
            try:
                self.client.delete_snapshot(src, temp)
            except api.ApiError as e:
                LOG.warning("Alcubierre: clone snapshot %(s)s of %(v)s stays: %(e)s",
                            {"s": temp, "v": src, "e": e})

    def retype(self, context, volume, new_type, diff, host):
        """QoS changes online; everything else the type may say is the same here."""
        name = self._volume_name(volume)
        policy = self._qos_policy(volume, type_id=new_type["id"] if new_type else "")
        self._call(f"set QoS of {name}", self.client.set_volume_qos, name, policy)
        if policy is None:
            self._drop_policy(volume)
        return True, None

    # ---- exports and connections ----

    def create_export(self, context, volume, connector):
        # Access is granted per host by initialize_connection (the attachment resource).
        return None

    def ensure_export(self, context, volume):
        if self.client.volume(self._volume_name(volume)) is None:
            LOG.warning("Alcubierre: volume %s is not in the cluster", volume.id)
        return None

    def remove_export(self, context, volume):
        return None

    def _protocol(self):
        return self.configuration.alcubierre_protocol

    def _chap(self, host):
        if not self.configuration.alcubierre_iscsi_chap:
            return None
        key = self.configuration.alcubierre_chap_key.encode()
        digest = hmac.new(key, host.encode(), hashlib.sha256).hexdigest()
        user = f"cinder-{hashlib.sha256(host.encode()).hexdigest()[:16]}"
        return user, digest[:16]

    def initialize_connection(self, volume, connector):
        name = self._volume_name(volume)
        host = connector.get("host")
        if not host:
            raise exception.InvalidConnectorException(missing="host")
        paths = self.configuration.alcubierre_paths
        if self._protocol() == "nvme-tcp":
            nqn = connector.get("nqn")
            if not nqn:
                raise exception.InvalidConnectorException(
                    missing="nqn (the host's NVMe host NQN: install nvme-cli and make "
                    "/etc/nvme/hostnqn)"
                )
            att = self._call(
                f"attach {host} to {name}",
                self.client.attach,
                name,
                host,
                nqn=nqn,
                nvme_hostid=connector.get("nvme_hostid"),
            )
            return {
                "driver_volume_type": connection.NVMEOF,
                "data": connection.nvmeof_properties(att["connection"], paths),
            }
        iqn = connector.get("initiator")
        if not iqn:
            raise exception.InvalidConnectorException(
                missing="initiator (the host's iSCSI IQN: install open-iscsi)"
            )
        chap = self._chap(host)
        if chap:
            self._call(
                f"record CHAP of host {host}",
                self.client.put_host,
                host,
                {"iqn": iqn, "nqn": connector.get("nqn"), "chap": list(chap)},
            )
        att = self._call(
            f"attach {host} to {name}", self.client.attach, name, host, iqn=iqn,
            nqn=connector.get("nqn"),
        )
        try:
            data = connection.iscsi_properties(att["connection"], volume.id, paths, chap)
        except ValueError as e:
            raise exception.VolumeBackendAPIException(data=str(e)) from e
        return {"driver_volume_type": connection.ISCSI, "data": data}

    @staticmethod
    def _shared(volume, host):
        """Whether ``host`` keeps another attachment of ``volume`` (multiattach). The one being
        detached is still in the volume's list while its connection is terminated."""
        live = [
            a
            for a in volume.volume_attachment or []
            if a.attached_host == host and a.attach_status == "attached"
        ]
        return len(live) > 1

    def terminate_connection(self, volume, connector, **kwargs):
        name = self._volume_name(volume)
        if connector is None:
            # Cinder's force detach: every host loses access, and its reservations.
            for a in self._call(f"list attachments of {name}", self.client.attachments, name):
                self._call(
                    f"force-detach {a['host']} from {name}",
                    self.client.detach,
                    name,
                    a["host"],
                    force=True,
                )
            return
        host = connector.get("host")
        if not host:
            raise exception.InvalidConnectorException(missing="host")
        if volume.multiattach and self._shared(volume, host):
            LOG.info("Alcubierre: %(h)s keeps %(v)s: another attachment uses it",
                     {"h": host, "v": name})
            return True  # shared: Cinder leaves the export alone too
        self._call(f"detach {host} from {name}", self.client.detach, name, host)
        return False

    # ---- stats ----

    def get_volume_stats(self, refresh=False):
        if refresh or not self._stats:
            self._update_volume_stats()
        return self._stats

    def _update_volume_stats(self):
        status = self._call("read the cluster's status", self.client.status)
        backend = self.configuration.safe_get("volume_backend_name") or "alcubierre"
        total = status.get("backend_capacity_bytes")
        free = status.get("backend_free_bytes")
        gb = lambda b: round(b / GiB, 2)  # noqa: E731
        pool = {
            "pool_name": backend,
            "total_capacity_gb": gb(total) if total is not None else "unknown",
            "free_capacity_gb": gb(free) if free is not None else "unknown",
            "provisioned_capacity_gb": gb(status["provisioned_bytes"]),
            "allocated_capacity_gb": gb(status["provisioned_bytes"]),
            "thin_provisioning_support": True,
            "thick_provisioning_support": False,
            "max_over_subscription_ratio": self.configuration.safe_get(
                "max_over_subscription_ratio"
            ),
            "reserved_percentage": self.configuration.safe_get("reserved_percentage") or 0,
            "QoS_support": True,
            "multiattach": True,
            "online_extend_support": True,
            "consistencygroup_support": False,
            "total_volumes": status["volumes"],
        }
        self._stats = {
            "volume_backend_name": backend,
            "vendor_name": self.VENDOR,
            "driver_version": self.VERSION,
            "storage_protocol": (
                constants.NVMEOF_TCP if self._protocol() == "nvme-tcp" else constants.ISCSI
            ),
            "pools": [pool],
        }


def _backend_error(what, e):
    """Cinder's exception for the API's refusal ``e`` of ``what``, logged."""
    LOG.error("Alcubierre: cannot %(what)s: %(err)s", {"what": what, "err": e})
    return exception.VolumeBackendAPIException(
        data=_("cannot %(what)s: %(err)s") % {"what": what, "err": e}
    )


def _same_volume(found, size, source):
    """Whether the cluster's volume ``found`` is the one a create of ``size`` bytes from
    ``source`` (or from nothing) makes."""
    if found is None or found["size"] != size:
        return False
    made_from = found.get("source") or {}
    return made_from.get("snapshot") == (source or {}).get("snapshot")

"""The driver on Cinder's own test base class, against a live cluster's REST API.

testing/cinder/run.sh starts `alcubierre demo` and sets ALCUBIERRE_API_URL and
ALCUBIERRE_API_TOKEN; without them these tests fail (they never pass without a cluster).
Cinder's objects live in the sqlite database Cinder's TestCase makes; volume types and QoS specs
are made through Cinder's own volume_types and qos_specs modules.
"""

import os
import uuid

from os_brick.initiator.connectors import iscsi as brick_iscsi
from os_brick.initiator.connectors import nvmeof as brick_nvmeof

from cinder import context
from cinder import exception
from cinder import objects
from cinder.objects import fields
from cinder.volume import configuration
from cinder.volume import qos_specs
from cinder.volume import volume_types

from alcubierre_cinder import client as api
from alcubierre_cinder import driver
from tests import base

GiB = 1024 ** 3
GROUP = "alcubierre-test"


def _env(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set: run these tests through testing/cinder/run.sh, which starts "
            "a cluster"
        )
    return value


class DriverTestCase(base.TestCase):
    """A driver configured for the live cluster, and helpers to make Cinder's objects."""

    protocol = "nvme-tcp"

    def setUp(self):
        super().setUp()
        self.ctxt = context.get_admin_context()
        url, token = _env("ALCUBIERRE_API_URL"), _env("ALCUBIERRE_API_TOKEN")
        # The options exist in the group once the driver appended them.
        self.config = configuration.Configuration(
            driver.alcubierre_opts, config_group=GROUP
        )
        self.driver = driver.AlcubierreDriver(configuration=self.config)
        for name, value in (
            ("alcubierre_api_url", url),
            ("alcubierre_api_token", token),
            ("alcubierre_protocol", self.protocol),
            ("volume_backend_name", "alcubierre"),
        ):
            self.override_config(name, value, group=GROUP)
        self.driver.do_setup(self.ctxt)
        self.driver.check_for_setup_error()
        self.api = api.Client(url, token)
        self.made = []

    def tearDown(self):
        for name in self.made:
            try:
                snaps = self.api.call("GET", f"/api/v1/volumes/{name}/snapshots") or []
            except api.NotFound:
                continue
            for s in snaps:
                self.api.delete_snapshot(name, s["name"])
            self.api.delete_volume(name)
        super().tearDown()

    def volume(self, size=1, type_id=None, multiattach=False):
        """A Cinder volume record (not yet made on the cluster)."""
        v = objects.Volume(
            context=self.ctxt,
            size=size,
            status="creating",
            host="cinder@alcubierre#alcubierre",
            user_id=str(uuid.uuid4()),
            project_id=str(uuid.uuid4()),
            volume_type_id=type_id or volume_types.get_default_volume_type()["id"],
            multiattach=multiattach,
        )
        v.create()
        self.made.append(v.name)
        return v

    def made_volume(self, size=1, type_id=None, multiattach=False):
        v = self.volume(size, type_id, multiattach)
        self.assertIsNone(self.driver.create_volume(v))
        return v

    def snapshot(self, volume):
        s = objects.Snapshot(
            context=self.ctxt,
            volume_id=volume.id,
            volume_size=volume.size,
            status="creating",
            user_id=volume.user_id,
            project_id=volume.project_id,
            volume_type_id=volume.volume_type_id,
        )
        s.create()
        return s

    def connector(self, host="compute-1", **extra):
        c = {
            "host": host,
            "initiator": f"iqn.1993-08.org.debian:01:{host}",
            "nqn": f"nqn.2014-08.org.nvmexpress:uuid:{uuid.uuid5(uuid.NAMESPACE_DNS, host)}",
            "nvme_hostid": str(uuid.uuid5(uuid.NAMESPACE_URL, host)),
            "multipath": True,
        }
        c.update(extra)
        return c

    def assert_attach_needs(self, key):
        """Attaching with a connector that lacks ``key`` is Cinder's error naming it."""
        v = self.made_volume()
        c = self.connector()
        del c[key]
        with self.assertRaises(exception.InvalidConnectorException) as e:
            self.driver.initialize_connection(v, c)
        self.assertIn(key, str(e.exception))

    def qos_type(self, name, specs, consumer="back-end"):
        """A volume type with QoS specs ``specs``: its id."""
        t = volume_types.create(self.ctxt, name, {"volume_backend_name": "alcubierre"})
        q = qos_specs.create(self.ctxt, f"{name}-qos", dict(specs, consumer=consumer))
        qos_specs.associate_qos_with_type(self.ctxt, q["id"], t["id"])
        return t["id"]


class VolumeLifecycleTest(DriverTestCase):
    def test_create_is_idempotent_and_delete_of_a_missing_volume_succeeds(self):
        v = self.made_volume(size=2)
        on_cluster = self.api.volume(v.name)
        self.assertEqual(on_cluster["size"], 2 * GiB)
        # A retry (the first answer lost) finds the same volume and succeeds.
        self.assertIsNone(self.driver.create_volume(v))
        self.driver.delete_volume(v)
        self.assertIsNone(self.api.volume(v.name))
        self.driver.delete_volume(v)

    def test_a_name_taken_with_another_size_is_the_apis_error(self):
        v = self.made_volume(size=1)
        v.size = 3
        with self.assertRaises(exception.VolumeBackendAPIException) as e:
            self.driver.create_volume(v)
        self.assertIn("409", str(e.exception))
        self.assertIn(v.name, str(e.exception))

    def test_online_extend_grows_the_volume(self):
        v = self.made_volume(size=1)
        self.driver.extend_volume(v, 3)
        self.assertEqual(self.api.volume(v.name)["size"], 3 * GiB)
        # Shrinking is the API's refusal, with its reason.
        with self.assertRaises(exception.VolumeBackendAPIException) as e:
            self.driver.extend_volume(v, 2)
        self.assertIn("size", str(e.exception))

    def test_snapshot_volume_from_it_larger_and_delete(self):
        v = self.made_volume(size=1)
        s = self.snapshot(v)
        self.driver.create_snapshot(s)
        snap = self.api.snapshot(v.name, s.name)
        self.assertEqual(snap["state"], "ready")
        clone = self.volume(size=2)
        self.driver.create_volume_from_snapshot(clone, s)
        made = self.api.volume(clone.name)
        self.assertEqual(made["size"], 2 * GiB)
        self.assertEqual(made["source"]["snapshot"], s.name)
        self.driver.delete_snapshot(s)
        self.assertIsNone(self.api.snapshot(v.name, s.name))
        # Deleting it again (a retry) succeeds; the clone does not depend on it.
        self.driver.delete_snapshot(s)
        self.assertIsNotNone(self.api.volume(clone.name))

    def test_a_volume_from_a_snapshot_cannot_be_smaller(self):
        v = self.made_volume(size=2)
        s = self.snapshot(v)
        self.driver.create_snapshot(s)
        with self.assertRaises(exception.InvalidInput):
            self.driver.create_volume_from_snapshot(self.volume(size=1), s)

    def test_cloned_volume_leaves_no_snapshot_behind(self):
        src = self.made_volume(size=1)
        clone = self.volume(size=1)
        self.driver.create_cloned_volume(clone, src)
        made = self.api.volume(clone.name)
        self.assertEqual(made["source"]["volume"], self.api.volume(src.name)["id"])
        self.assertEqual(
            self.api.call("GET", f"/api/v1/volumes/{src.name}/snapshots"), []
        )

    def test_exports_need_no_work_and_ensure_export_tolerates_a_missing_volume(self):
        v = self.made_volume()
        self.assertIsNone(self.driver.create_export(self.ctxt, v, self.connector()))
        self.assertIsNone(self.driver.ensure_export(self.ctxt, v))
        self.assertIsNone(self.driver.remove_export(self.ctxt, v))
        self.assertIsNone(self.driver.ensure_export(self.ctxt, self.volume()))


class StatsTest(DriverTestCase):
    def test_stats_are_the_clusters_numbers(self):
        v = self.made_volume(size=5)
        stats = self.driver.get_volume_stats(refresh=True)
        status = self.api.status()
        self.assertEqual(stats["volume_backend_name"], "alcubierre")
        self.assertEqual(stats["storage_protocol"], "NVMe-TCP")
        self.assertEqual(stats["vendor_name"], "Alcubierre")
        pool = stats["pools"][0]
        self.assertEqual(
            pool["provisioned_capacity_gb"], round(status["provisioned_bytes"] / GiB, 2)
        )
        self.assertGreaterEqual(pool["provisioned_capacity_gb"], v.size)
        self.assertEqual(pool["total_volumes"], status["volumes"])
        # The capacity tier's real size and free space.
        self.assertIsInstance(pool["total_capacity_gb"], float)
        self.assertGreater(pool["total_capacity_gb"], 0)
        self.assertLessEqual(pool["free_capacity_gb"], pool["total_capacity_gb"])
        for key in ("thin_provisioning_support", "QoS_support", "multiattach",
                    "online_extend_support"):
            self.assertIs(pool[key], True, key)


class NvmeConnectionTest(DriverTestCase):
    def test_attach_admits_the_host_and_os_brick_reads_every_path(self):
        v = self.made_volume()
        self.override_config("alcubierre_paths", 3, group=GROUP)
        info = self.driver.initialize_connection(v, self.connector())
        self.assertEqual(info["driver_volume_type"], "nvmeof")
        on_cluster = self.api.volume(v.name)
        self.assertEqual(on_cluster["hosts"], ["compute-1"])
        t = brick_nvmeof.NVMeOFConnProps(dict(info["data"])).targets[0]
        conn = self.api.connection(v.name)["nvme"]
        self.assertEqual(t.nqn, conn["subsystem_nqn"])
        self.assertEqual(t.uuid, on_cluster["id"])
        self.assertEqual(
            sorted((p.address, p.port) for p in t.portals),
            sorted((p["address"], str(p["port"])) for p in conn["portals"]),
        )
        self.assertEqual(len(t.portals), 3)
        # The cluster's default (one NVMe/TCP path per host): the primary's portal.
        self.override_config("alcubierre_paths", None, group=GROUP)
        info = self.driver.initialize_connection(v, self.connector())
        self.assertEqual(len(info["data"]["portals"]), conn["multipath"])
        self.assertEqual(info["data"]["portals"][0][0], conn["portals"][0]["address"])

    def test_a_connector_without_an_nqn_is_a_clear_error(self):
        self.assert_attach_needs("nqn")

    def test_detach_and_multiattach(self):
        v = self.made_volume(multiattach=True)
        self.driver.initialize_connection(v, self.connector("compute-1"))
        self.driver.initialize_connection(v, self.connector("compute-2"))
        self.assertEqual(sorted(self.api.volume(v.name)["hosts"]), ["compute-1", "compute-2"])
        # compute-1 has two attachments (two instances); detaching one keeps its access. The
        # attachment being detached is still in the volume's list, as Cinder calls the driver.
        first = self.attachment(v, "compute-1")
        self.attachment(v, "compute-1")
        v.refresh()
        self.assertEqual(len(v.volume_attachment), 2)
        self.assertTrue(self.driver.terminate_connection(v, self.connector("compute-1")))
        self.assertIn("compute-1", self.api.volume(v.name)["hosts"])
        # Its last one goes: so does its access.
        v.volume_attachment = objects.VolumeAttachmentList(objects=[first])
        self.assertFalse(self.driver.terminate_connection(v, self.connector("compute-1")))
        self.assertEqual(self.api.volume(v.name)["hosts"], ["compute-2"])
        # Detaching again changes nothing.
        self.driver.terminate_connection(v, self.connector("compute-1"))
        # Cinder's force detach (no connector) revokes every host.
        self.driver.terminate_connection(v, None)
        self.assertEqual(self.api.volume(v.name)["hosts"], [])
        self.assertEqual(self.api.attachments(v.name), [])

    def attachment(self, volume, host):
        a = objects.VolumeAttachment(
            context=self.ctxt,
            volume_id=volume.id,
            attached_host=host,
            attach_status=fields.VolumeAttachStatus.ATTACHED,
        )
        a.create()
        return a


class IscsiConnectionTest(DriverTestCase):
    protocol = "iscsi"

    def test_os_brick_logs_in_to_every_node_with_chap(self):
        self.override_config("alcubierre_iscsi_chap", True, group=GROUP)
        self.override_config("alcubierre_chap_key", "a key for the test", group=GROUP)
        v = self.made_volume()
        info = self.driver.initialize_connection(v, self.connector())
        self.assertEqual(info["driver_volume_type"], "iscsi")
        data = info["data"]
        conn = self.api.connection(v.name)["iscsi"]
        brick = brick_iscsi.ISCSIConnector(root_helper=None)
        targets = brick._get_ips_iqns_luns(dict(data), discover=False)
        want = [
            (f"{p['address']}:{p['port']}", conn["target_iqn"], conn["lun"])
            for p in conn["portals"]
        ][: conn["multipath"]]
        self.assertEqual(targets, want)
        self.assertEqual((data["target_portal"], data["target_iqn"]), want[0][:2])
        # CHAP: the cluster's host logs in with the user handed to os-brick.
        self.assertEqual(data["auth_method"], "CHAP")
        hosts = {h["name"]: h for h in self.api.call("GET", "/api/v1/hosts")}
        self.assertEqual(hosts["compute-1"]["chap_user"], data["auth_username"])
        self.assertEqual(hosts["compute-1"]["iqn"], self.connector()["initiator"])
        att = self.api.attach(v.name, "compute-1", iqn=self.connector()["initiator"])
        self.assertEqual(att["connection"]["iscsi"]["chap_user"], data["auth_username"])
        self.assertEqual(len(data["auth_password"]), 16)
        # The same host gets the same secret again (a reconnect after a reboot logs in).
        again = self.driver.initialize_connection(v, self.connector())["data"]
        self.assertEqual(again["auth_password"], data["auth_password"])
        self.assertEqual(self.driver.get_volume_stats(True)["storage_protocol"], "iSCSI")

    def test_a_connector_without_an_iqn_is_a_clear_error(self):
        self.assert_attach_needs("initiator")


class QosTest(DriverTestCase):
    def policy(self, v):
        return self.api.qos_policies().get(f"cinder-{v.id}")

    def test_the_seeds_example_is_enforced_by_a_policy_of_the_volume(self):
        t = self.qos_type("gold", {"write_iops_sec": "5000", "alcubierre:write_MiB_sec": "100"})
        v = self.made_volume(type_id=t)
        self.assertEqual(self.api.volume(v.name)["qos"], f"cinder-{v.id}")
        p = self.policy(v)
        self.assertEqual((p["write_iops"], p["write_bps"]), (5000, 100 * 1024 * 1024))
        self.driver.delete_volume(v)
        self.assertIsNone(self.policy(v))

    def test_per_gb_limits_follow_extend_and_retype_changes_them_online(self):
        t = self.qos_type(
            "per-gb",
            {"total_iops_sec_per_gb": "100", "total_iops_sec_per_gb_min": "150",
             "total_bytes_sec": "1000000", "total_bytes_sec_max": "4000000",
             "total_bytes_sec_max_length": "3"},
        )
        v = self.made_volume(size=1, type_id=t)
        p = self.policy(v)
        self.assertEqual(p["total_iops"], 150)
        self.assertEqual((p["total_bps"], p["total_bps_max"], p["burst_seconds"]),
                         (1000000, 4000000, 3))
        self.driver.extend_volume(v, 4)
        self.assertEqual(self.policy(v)["total_iops"], 400)
        # A type without QoS: the volume's policy goes, online.
        plain = volume_types.create(self.ctxt, "plain", {})
        changed, _ = self.driver.retype(self.ctxt, v, plain, {}, None)
        self.assertTrue(changed)
        self.assertIsNone(self.api.volume(v.name)["qos"])
        self.assertIsNone(self.policy(v))
        changed, _ = self.driver.retype(self.ctxt, v, volume_types.get_volume_type(
            self.ctxt, t), {}, None)
        self.assertEqual(self.api.volume(v.name)["qos"], f"cinder-{v.id}")

    def test_front_end_specs_are_the_hypervisors(self):
        t = self.qos_type("fe", {"read_iops_sec": "100"}, consumer="front-end")
        v = self.made_volume(type_id=t)
        self.assertIsNone(self.api.volume(v.name)["qos"])
        self.assertIsNone(self.policy(v))

    def test_specs_the_target_cannot_enforce_are_refused_naming_the_key(self):
        t = self.qos_type("bad", {"write_iops_sec_max": "100"})
        with self.assertRaises(exception.InvalidQoSSpecs) as e:
            self.driver.create_volume(self.volume(type_id=t))
        self.assertIn("write_iops_sec_max", str(e.exception))

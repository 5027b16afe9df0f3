"""Contract: the driver's connection properties, read by os-brick's own parsers.

The API's answer here is the shape ``GET /api/v1/volumes/{id}/connection`` returns (the live
tests in test_driver.py feed a real one through the same parsers).
"""

import unittest
import uuid

from os_brick.initiator.connectors import iscsi as brick_iscsi
from os_brick.initiator.connectors import nvmeof as brick_nvmeof

from alcubierre_cinder import connection

VOLUME = "0b4f3c2e-8d1a-4f6b-9c3e-2a7d5e1f0c9b"


def api_connection(nodes=3, iscsi=True, nvme_paths=1, iscsi_paths=4):
    conn = {
        "volume": VOLUME,
        "name": "volume-x",
        "size": 1 << 30,
        "block_size": 512,
        "nvme": {
            "subsystem_nqn": f"nqn.2024-01.io.alcubierre:vol:{VOLUME}",
            "namespace_id": 1,
            "nguid": "0b4f3c2e8d1a4f6b9c3e2a7d5e1f0c9b",
            "uuid": VOLUME,
            "portals": [
                {"node": f"node-{i}", "address": f"10.0.0.{i + 1}", "port": 4420 + i,
                 "transport": "tcp", "ana_group": i + 1,
                 "state": "optimized" if i == 0 else "non_optimized"}
                for i in range(nodes)
            ],
            "multipath": nvme_paths,
        },
        "iscsi": None,
    }
    if iscsi:
        conn["iscsi"] = {
            "target_iqn": f"iqn.2024-01.io.alcubierre:vol.{VOLUME}",
            "lun": 0,
            "portals": [
                {"node": f"node-{i}", "address": f"10.0.0.{i + 1}", "port": 3260,
                 "portal_group_tag": i + 1,
                 "state": "optimized" if i == 0 else "non_optimized"}
                for i in range(nodes)
            ],
            "multipath": iscsi_paths,
        }
    return conn


def brick_targets(props):
    """What os-brick's iSCSI connector logs in to for ``props``: (portal, iqn, lun) each."""
    c = brick_iscsi.ISCSIConnector(root_helper=None)
    return c._get_ips_iqns_luns(dict(props), discover=False)


class IscsiContractTest(unittest.TestCase):
    def test_multipath_lists_every_node_and_single_path_the_primary(self):
        props = connection.iscsi_properties(api_connection(), VOLUME)
        iqn = f"iqn.2024-01.io.alcubierre:vol.{VOLUME}"
        self.assertEqual(
            brick_targets(props),
            [(f"10.0.0.{i}:3260", iqn, 0) for i in (1, 2, 3)],
        )
        # A connector without multipath reads the single-path fields: the primary's portal.
        single = {k: v for k, v in props.items() if not k.endswith("s")}
        c = brick_iscsi.ISCSIConnector(root_helper=None)
        self.assertEqual(c._get_all_targets(single), [("10.0.0.1:3260", iqn, 0)])

    def test_paths_follow_the_cluster_default_unless_overridden(self):
        conn = api_connection(iscsi_paths=2)
        self.assertEqual(len(brick_targets(connection.iscsi_properties(conn, VOLUME))), 2)
        self.assertEqual(
            len(brick_targets(connection.iscsi_properties(conn, VOLUME, paths=3))), 3
        )

    def test_chap_is_handed_over_as_os_brick_reads_it(self):
        props = connection.iscsi_properties(api_connection(), VOLUME, chap=("u", "s" * 12))
        self.assertEqual(
            (props["auth_method"], props["auth_username"], props["auth_password"]),
            ("CHAP", "u", "s" * 12),
        )

    def test_nodes_without_iscsi_give_a_clear_error(self):
        with self.assertRaises(ValueError) as e:
            connection.iscsi_properties(api_connection(iscsi=False), VOLUME)
        self.assertIn("iSCSI", str(e.exception))


class NvmeofContractTest(unittest.TestCase):
    def test_os_brick_reads_the_target_and_every_portal(self):
        props = connection.nvmeof_properties(api_connection(nvme_paths=3))
        parsed = brick_nvmeof.NVMeOFConnProps(dict(props))
        self.assertFalse(parsed.is_replicated)
        self.assertEqual(len(parsed.targets), 1)
        t = parsed.targets[0]
        self.assertEqual(t.nqn, f"nqn.2024-01.io.alcubierre:vol:{VOLUME}")
        self.assertEqual(t.uuid, VOLUME)
        # os-brick keeps an NGUID in UUID form.
        self.assertEqual(t.nguid, str(uuid.UUID("0b4f3c2e8d1a4f6b9c3e2a7d5e1f0c9b")))
        self.assertEqual(str(t.ns_id), "1")
        self.assertEqual(
            [(p.address, p.port, p.transport) for p in t.portals],
            [("10.0.0.1", "4420", "tcp"), ("10.0.0.2", "4421", "tcp"),
             ("10.0.0.3", "4422", "tcp")],
        )
        self.assertTrue(parsed.discard)

    def test_the_cluster_default_of_one_path_gives_the_primary(self):
        props = connection.nvmeof_properties(api_connection())
        t = brick_nvmeof.NVMeOFConnProps(dict(props)).targets[0]
        self.assertEqual([p.address for p in t.portals], ["10.0.0.1"])
        props = connection.nvmeof_properties(api_connection(), paths=2)
        t = brick_nvmeof.NVMeOFConnProps(dict(props)).targets[0]
        self.assertEqual([p.address for p in t.portals], ["10.0.0.1", "10.0.0.2"])


if __name__ == "__main__":
    unittest.main()

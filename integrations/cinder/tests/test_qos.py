"""Cinder QoS specs to the cluster's policy: every key family, the per-GB rules, bad specs."""

import unittest

from alcubierre_cinder import qos


class PolicyTest(unittest.TestCase):
    def test_the_seeds_example_with_the_scoped_mib_key(self):
        p = qos.policy({"write_iops_sec": "5000", "alcubierre:write_MiB_sec": "100"}, 10)
        self.assertEqual(p, {"write_iops": 5000, "write_bps": 100 * 1024 * 1024})

    def test_every_absolute_key_and_its_burst(self):
        specs = {}
        for op in ("total", "read", "write"):
            specs[f"{op}_iops_sec"] = 100
            specs[f"{op}_iops_sec_max"] = 400
            specs[f"{op}_bytes_sec"] = 1 << 20
            specs[f"{op}_bytes_sec_max"] = 4 << 20
        specs["total_iops_sec_max_length"] = 5
        p = qos.policy(specs, 1)
        for op in ("total", "read", "write"):
            self.assertEqual(p[f"{op}_iops"], 100)
            self.assertEqual(p[f"{op}_iops_max"], 400)
            self.assertEqual(p[f"{op}_bps"], 1 << 20)
            self.assertEqual(p[f"{op}_bps_max"], 4 << 20)
        self.assertEqual(p["burst_seconds"], 5)

    def test_per_gb_keys_scale_with_the_size_and_keep_their_floor(self):
        specs = {
            "read_iops_sec_per_gb": "20",
            "read_iops_sec_per_gb_min": "500",
            "write_bytes_sec_per_gb": "1048576",
        }
        self.assertEqual(
            qos.policy(specs, 10), {"read_iops": 500, "write_bps": 10 * 1048576}
        )
        self.assertEqual(
            qos.policy(specs, 100), {"read_iops": 2000, "write_bps": 100 * 1048576}
        )

    def test_a_burst_below_the_per_gb_rate_is_no_burst(self):
        specs = {"total_iops_sec_per_gb": 50, "total_iops_sec_max": 1000}
        # No length given: the cluster's default (a second).
        self.assertEqual(qos.policy(specs, 10), {"total_iops": 500, "total_iops_max": 1000})
        self.assertEqual(qos.policy(specs, 100), {"total_iops": 5000})

    def test_zero_means_no_limit_and_other_back_ends_keys_are_left(self):
        self.assertIsNone(qos.policy({"read_iops_sec": "0", "other:thing": "1"}, 1))
        self.assertIsNone(qos.policy({"size_iops_sec": "4096"}, 1))
        self.assertIsNone(qos.policy({}, 1))

    def test_bad_specs_name_the_key(self):
        for specs, word in (
            ({"write_iops": "5"}, "write_iops"),
            ({"read_iops_sec": "many"}, "read_iops_sec"),
            ({"read_iops_sec": "-1"}, "read_iops_sec"),
            ({"write_iops_sec_max": "5"}, "write_iops_sec_max"),
            ({"read_iops_sec_per_gb_min": "5"}, "read_iops_sec_per_gb_min"),
            ({"read_iops_sec": 1, "read_iops_sec_per_gb": 1}, "read_iops_sec_per_gb"),
            ({"write_bytes_sec": 1, "alcubierre:write_MiB_sec": 1}, "write_MiB_sec"),
            ({"alcubierre:write_GiB_sec": 1}, "alcubierre:write_GiB_sec"),
        ):
            with self.assertRaises(qos.InvalidSpecs) as e:
                qos.policy(specs, 1)
            self.assertIn(word, str(e.exception), specs)

    def test_only_back_end_and_both_consumers_are_enforced(self):
        specs = {"read_iops_sec": "1"}
        self.assertEqual(
            qos.enforced_specs({"consumer": "back-end", "specs": specs}), specs
        )
        self.assertEqual(qos.enforced_specs({"consumer": "both", "specs": specs}), specs)
        self.assertEqual(qos.enforced_specs({"consumer": "front-end", "specs": specs}), {})
        self.assertEqual(qos.enforced_specs(None), {})


if __name__ == "__main__":
    unittest.main()

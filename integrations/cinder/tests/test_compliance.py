"""Cinder's own driver interface compliance tests, run on this driver.

Cinder's compliance module checks every driver its ``@interface.volumedriver`` decorator
registered when the module was imported; this driver is imported first, so the list holds it.
"""

from alcubierre_cinder import driver  # noqa: F401 (registers the driver)
from cinder.interface import volume_driver
from cinder.tests.compliance import test_volume_drivers
from tests import base

FQN = "alcubierre_cinder.driver.AlcubierreDriver"


class TestVolumeDrivers(base.PytestCompat, test_volume_drivers.TestVolumeDrivers):
    """Cinder's compliance tests, as Cinder wrote them."""


class RegistrationTest(base.TestCase):
    def test_the_compliance_tests_see_this_driver(self):
        names = [d.class_fqn for d in test_volume_drivers.VOLUME_DRIVERS]
        self.assertIn(FQN, names)

    def test_every_core_and_snapshot_method_is_the_drivers_own(self):
        # VolumeDriverCore's methods the driver must implement, not inherit as stubs.
        for name in ("do_setup", "check_for_setup_error", "get_volume_stats",
                     "create_volume", "delete_volume", "initialize_connection",
                     "terminate_connection", "extend_volume", "create_snapshot",
                     "delete_snapshot", "create_volume_from_snapshot", "retype",
                     "create_cloned_volume", "create_export", "ensure_export",
                     "remove_export"):
            self.assertIn(name, vars(driver.AlcubierreDriver), name)
            self.assertTrue(hasattr(volume_driver.VolumeDriverCore, name)
                            or name in ("create_cloned_volume", "create_export",
                                        "ensure_export", "remove_export"), name)

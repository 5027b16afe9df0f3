"""The driver reaches an API served over TLS: with the CA file it trusts the node's
certificate; without it, or with a wrong token, setup fails with the reason.

testing/cinder/run.sh starts one node (on its own etcd) whose API serves TLS with a certificate
from a private CA, and sets ALCUBIERRE_TLS_API_URL, ALCUBIERRE_TLS_API_TOKEN and
ALCUBIERRE_TLS_CA.
"""

from cinder import context
from cinder import exception
from cinder.volume import configuration

from alcubierre_cinder import driver
from tests import base
from tests.test_driver import _env

GROUP = "alcubierre-tls"


class TlsTest(base.TestCase):
    def make(self, **options):
        conf = configuration.Configuration(driver.alcubierre_opts, config_group=GROUP)
        d = driver.AlcubierreDriver(configuration=conf)
        values = {
            "alcubierre_api_url": _env("ALCUBIERRE_TLS_API_URL"),
            "alcubierre_api_token": _env("ALCUBIERRE_TLS_API_TOKEN"),
            "alcubierre_ca_file": _env("ALCUBIERRE_TLS_CA"),
        }
        values.update(options)
        for name, value in values.items():
            self.override_config(name, value, group=GROUP)
        d.do_setup(context.get_admin_context())
        return d

    def test_with_the_ca_file_the_driver_speaks_to_the_cluster(self):
        d = self.make()
        self.assertTrue(d.client.url.startswith("https://127.0.0.1:"), d.client.url)
        self.assertEqual(d.client.status()["nodes"], 1)
        # One node, not activated: the setup check says what to do.
        with self.assertRaises(exception.VolumeBackendAPIException) as e:
            d.check_for_setup_error()
        self.assertIn("0 active nodes", str(e.exception))
        self.assertIn("activate", str(e.exception))

    def test_without_the_ca_file_the_certificate_is_refused(self):
        d = self.make(alcubierre_ca_file=None)
        with self.assertRaises(exception.VolumeBackendAPIException) as e:
            d.check_for_setup_error()
        self.assertIn("certificate verify failed", str(e.exception))

    def test_a_wrong_token_is_the_apis_refusal(self):
        d = self.make(alcubierre_api_token="not-the-token")
        with self.assertRaises(exception.VolumeBackendAPIException) as e:
            d.check_for_setup_error()
        self.assertIn("401", str(e.exception))

"""Cinder's half of the VM attach test (crates/cli/tests/vm_cinder.rs): the driver, as
cinder-volume runs it, making volumes and connections for the guest's os-brick.

Usage (in the Cinder virtualenv, with integrations/cinder on PYTHONPATH):
    vm_host.py API TOKEN PROTOCOL create NAME GIB
    vm_host.py API TOKEN PROTOCOL connect NAME CONNECTOR_JSON OUT_JSON
    vm_host.py API TOKEN PROTOCOL extend NAME GIB
    vm_host.py API TOKEN PROTOCOL disconnect NAME CONNECTOR_JSON
    vm_host.py API TOKEN PROTOCOL delete NAME

A volume NAME stands for one Cinder volume whose id is derived from NAME, so separate calls
mean the same volume. Volumes have no type (no QoS) and are not multiattach.
"""

import json
import sys
import uuid

import cinder.tests.unit  # noqa: F401 (Cinder's objects, registered first)
from cinder import context
from cinder.tests.unit import fake_volume
from oslo_config import cfg

from alcubierre_cinder import driver

GROUP = "alcubierre-vm"


def make_driver(api, token, protocol):
    from cinder.volume import configuration

    conf = configuration.Configuration(driver.alcubierre_opts, config_group=GROUP)
    d = driver.AlcubierreDriver(configuration=conf)
    for name, value in (
        ("alcubierre_api_url", api),
        ("alcubierre_api_token", token),
        ("alcubierre_protocol", protocol),
        ("alcubierre_paths", 3),
        ("volume_backend_name", "alcubierre"),
    ):
        cfg.CONF.set_override(name, value, group=GROUP)
    d.do_setup(context.get_admin_context())
    d.check_for_setup_error()
    return d


def volume(name, gib=1):
    return fake_volume.fake_volume_obj(
        context.get_admin_context(),
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"alcubierre-vm-test/{name}")),
        size=gib,
        volume_type_id=None,
        multiattach=False,
    )


def main(argv):
    api, token, protocol, cmd, name, *rest = argv
    cfg.CONF([], project="cinder", default_config_files=[])
    d = make_driver(api, token, protocol)
    if cmd == "create":
        d.create_volume(volume(name, int(rest[0])))
    elif cmd == "connect":
        with open(rest[0]) as f:
            connector = json.load(f)
        info = d.initialize_connection(volume(name), connector)
        with open(rest[1], "w") as f:
            json.dump(info, f)
    elif cmd == "extend":
        d.extend_volume(volume(name), int(rest[0]))
    elif cmd == "disconnect":
        with open(rest[0]) as f:
            connector = json.load(f)
        d.terminate_connection(volume(name), connector)
    elif cmd == "delete":
        d.delete_volume(volume(name))
    else:
        raise SystemExit(f"vm_host.py: unknown command {cmd}")
    print(f"vm_host: {cmd} {name}: done")


if __name__ == "__main__":
    main(sys.argv[1:])

"""The API's connection info as os-brick's connectors read it.

iSCSI (``driver_volume_type`` ``iscsi``): ``target_portals``, ``target_iqns`` and
``target_luns`` with one entry per path (os-brick's multipath logs in to each), and the
single-path ``target_portal``/``target_iqn``/``target_lun`` (the volume's primary first) for a
connector without multipath; ``auth_method``/``auth_username``/``auth_password`` when the host
logs in with CHAP.

NVMe-oF (``nvmeof``): ``target_nqn``, ``vol_uuid`` (the namespace UUID), ``ns_id``,
``volume_nguid`` and ``portals`` as ``[address, port, 'tcp']`` for every path (native NVMe
multipath connects them all; the subsystem NQN is the same on every node).

How many paths: the cluster's multipath default for the protocol (from the connection info),
unless the back end's section sets its own.
"""

ISCSI = "iscsi"
NVMEOF = "nvmeof"


def _paths(portals, default, override):
    n = override if override else default
    n = max(1, int(n or 1))
    return portals[:n]


def iscsi_properties(conn, volume_id, paths=None, chap=None):
    """os-brick's iSCSI properties from the API's ``ConnectionInfo`` ``conn``.

    ``chap``: ``(user, secret)`` the host logs in with, or ``None``.
    """
    iscsi = conn.get("iscsi")
    if not iscsi:
        raise ValueError(
            "the volume's nodes do not serve iSCSI (set [iscsi] on the nodes, or use the "
            "nvme-tcp protocol)"
        )
    portals = _paths(iscsi["portals"], iscsi.get("multipath"), paths)
    if not portals:
        raise ValueError("the volume has no iSCSI portal (are its nodes up?)")
    addrs = [_portal(p["address"], p["port"]) for p in portals]
    iqn, lun = iscsi["target_iqn"], iscsi["lun"]
    props = {
        "target_discovered": False,
        "target_portal": addrs[0],
        "target_iqn": iqn,
        "target_lun": lun,
        "target_portals": addrs,
        "target_iqns": [iqn] * len(addrs),
        "target_luns": [lun] * len(addrs),
        "volume_id": volume_id,
        "discard": True,
    }
    if chap:
        props.update(
            {"auth_method": "CHAP", "auth_username": chap[0], "auth_password": chap[1]}
        )
    return props


def nvmeof_properties(conn, paths=None):
    """os-brick's NVMe-oF properties from the API's ``ConnectionInfo`` ``conn``."""
    nvme = conn["nvme"]
    portals = _paths(
        [p for p in nvme["portals"] if p.get("transport", "tcp") == "tcp"],
        nvme.get("multipath"),
        paths,
    )
    if not portals:
        raise ValueError("the volume has no NVMe/TCP portal (are its nodes up?)")
    return {
        "target_nqn": nvme["subsystem_nqn"],
        "vol_uuid": nvme["uuid"],
        "ns_id": nvme["namespace_id"],
        "volume_nguid": nvme["nguid"],
        "portals": [[p["address"], p["port"], "tcp"] for p in portals],
        "discard": True,
    }


def _portal(address, port):
    # An IPv6 address is bracketed, as iscsiadm takes it.
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return f"{address}:{port}"

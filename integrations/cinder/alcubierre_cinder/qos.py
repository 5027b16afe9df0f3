"""Cinder QoS specs as an Alcubierre QoS policy.

Cinder's keys (``total_``, ``read_``, ``write_`` x ``iops_sec`` and ``bytes_sec``), their burst
keys (``..._max``, with libvirt's ``..._max_length`` for how long a burst lasts), and the
capacity-based ``..._per_gb`` keys with their ``..._per_gb_min`` floors, applied to the volume's
size. The seed's ``write_MiB_sec`` is not a Cinder key; it is accepted scoped, as
``alcubierre:write_MiB_sec`` (and ``read_``/``total_``), in MiB per second.

Specs whose consumer is ``back-end`` or ``both`` are enforced by the cluster's target; a
``front-end`` spec is the hypervisor's (Cinder hands it to Nova in the connection info) and
gives no policy here.
"""

OPS = ("total", "read", "write")
# Cinder's unit names -> the API's.
UNITS = {"iops_sec": "iops", "bytes_sec": "bps"}
SCOPE = "alcubierre:"
# libvirt's keys that tune the guest, not the target: accepted and left to the front end.
FRONT_END_ONLY = {"size_iops_sec"}


class InvalidSpecs(ValueError):
    """A spec the cluster cannot enforce (the message names the key)."""


def _number(key, value):
    try:
        n = float(value)
    except (TypeError, ValueError):
        raise InvalidSpecs(f"QoS spec {key}={value!r}: not a number") from None
    if n < 0:
        raise InvalidSpecs(f"QoS spec {key}={value!r}: must not be negative")
    return n


def _parse(specs):
    """The specs as {(op, unit, kind): number}; kind is '', 'max', 'max_length', 'per_gb',
    'per_gb_min' or 'MiB'."""
    out = {}
    for key, value in specs.items():
        if key in FRONT_END_ONLY:
            continue
        if key.startswith(SCOPE):
            rest = key[len(SCOPE):]
            for op in OPS:
                if rest == f"{op}_MiB_sec":
                    out[(op, "bps", "MiB")] = _number(key, value)
                    break
            else:
                if rest == "burst_seconds":
                    out[(None, None, "burst_seconds")] = _number(key, value)
                else:
                    raise InvalidSpecs(
                        f"QoS spec {key}: unknown (alcubierre: takes total_, read_ or "
                        "write_MiB_sec and burst_seconds)"
                    )
            continue
        if ":" in key:
            continue  # another back end's scoped key
        for op in OPS:
            for unit, api_unit in UNITS.items():
                base = f"{op}_{unit}"
                for suffix, kind in (
                    ("", ""),
                    ("_max", "max"),
                    ("_max_length", "max_length"),
                    ("_per_gb", "per_gb"),
                    ("_per_gb_min", "per_gb_min"),
                ):
                    if key == base + suffix:
                        out[(op, api_unit, kind)] = _number(key, value)
                        break
                else:
                    continue
                break
            else:
                continue
            break
        else:
            raise InvalidSpecs(
                f"QoS spec {key}: not a key this back end enforces (total_, read_ or write_ "
                "x iops_sec or bytes_sec, with _max, _max_length, _per_gb or _per_gb_min; "
                "alcubierre:write_MiB_sec)"
            )
    return out


def policy(specs, size_gb):
    """The API's QoS policy for ``specs`` on a volume of ``size_gb`` GiB (``None``: no limit).

    Raises :class:`InvalidSpecs` for a spec that cannot be enforced as written.
    """
    parsed = _parse(specs or {})
    p = {}
    lengths = []
    for op in OPS:
        for unit in ("iops", "bps"):
            field = f"{op}_{unit}"
            given = {k[2]: v for k, v in parsed.items() if k[0] == op and k[1] == unit}
            absolute = [k for k in ("", "MiB") if k in given]
            if len(absolute) > 1:
                raise InvalidSpecs(
                    f"QoS specs set {op}_bytes_sec and alcubierre:{op}_MiB_sec: keep one"
                )
            if absolute and "per_gb" in given:
                raise InvalidSpecs(
                    f"QoS specs set {op}_{_cinder(unit)} and {op}_{_cinder(unit)}_per_gb: "
                    "keep one"
                )
            if "per_gb_min" in given and "per_gb" not in given:
                raise InvalidSpecs(
                    f"QoS spec {op}_{_cinder(unit)}_per_gb_min needs "
                    f"{op}_{_cinder(unit)}_per_gb"
                )
            rate = None
            if "" in given:
                rate = given[""]
            elif "MiB" in given:
                rate = given["MiB"] * 1024 * 1024
            elif "per_gb" in given:
                rate = given["per_gb"] * size_gb
                if "per_gb_min" in given:
                    rate = max(rate, given["per_gb_min"])
            if rate is not None:
                if int(rate) < 1:
                    # A zero limit would stop I/O; Cinder's "0" means no limit.
                    rate = None
                else:
                    p[field] = int(rate)
            if "max" in given and given["max"] >= 1:
                if rate is None:
                    raise InvalidSpecs(
                        f"QoS spec {op}_{_cinder(unit)}_max needs a limit to burst above "
                        f"({op}_{_cinder(unit)} or its _per_gb)"
                    )
                # A burst below the (possibly per-GB) rate is no burst.
                if int(given["max"]) > p[field]:
                    p[field + "_max"] = int(given["max"])
            if "max_length" in given:
                lengths.append(given["max_length"])
    burst = parsed.get((None, None, "burst_seconds"))
    if burst is None and lengths:
        burst = max(lengths)
    if burst is not None and any(k.endswith("_max") for k in p):
        p["burst_seconds"] = min(3600, max(1, int(round(burst))))
    return p or None


def _cinder(unit):
    return {"iops": "iops_sec", "bps": "bytes_sec"}[unit]


def enforced_specs(qos_specs):
    """The specs the back end enforces from a volume type's QoS (``{'consumer': ..., 'specs':
    {...}}`` or ``None``): the specs of a ``back-end`` or ``both`` consumer, else nothing."""
    if not qos_specs:
        return {}
    consumer = qos_specs.get("consumer", "back-end")
    if consumer not in ("back-end", "both"):
        return {}
    return dict(qos_specs.get("specs") or {})

"""Schemathesis checks for the Alcubierre API: every 4xx answer carries a message."""
import schemathesis


@schemathesis.check
def error_has_message(ctx, response, case):
    if 400 <= response.status_code < 500:
        text = response.text.strip()
        assert text, f"{response.status_code} without a message"
        if response.headers.get("content-type", [""])[0].startswith("application/json"):
            body = response.json()
            assert isinstance(body, dict) and body.get("error"), f"JSON {response.status_code} without 'error': {text}"


def _loopback_only(body):
    """Keeps the backend connectivity test on loopback (the network rule): a generated Ceph
    monitor address becomes a closed loopback port, a file backend a scratch directory."""
    if isinstance(body, dict) and isinstance(body.get("backend"), dict):
        b = body["backend"]
        if "monitors" in b:
            b["monitors"] = ["127.0.0.1:9"]
        if "path" in b:
            b["path"] = "/tmp"


@schemathesis.hook
def before_call(ctx, case, kwargs):
    _loopback_only(case.body)
    for key in ("json", "body"):
        if key in kwargs:
            _loopback_only(kwargs[key])
    data = kwargs.get("data")
    if isinstance(data, (bytes, str)) and b"backend" in (data if isinstance(data, bytes) else data.encode()):
        import json

        try:
            parsed = json.loads(data)
        except ValueError:
            return
        _loopback_only(parsed)
        kwargs["data"] = json.dumps(parsed).encode()

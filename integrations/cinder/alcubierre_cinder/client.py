"""A small client of Alcubierre's REST API (``/api/v1``), as the driver needs it.

Every call sends the bearer token; TLS verifies the server against the configured CA file (or
the system's store when none is given). A refused call raises :class:`ApiError` carrying the
API's own reason (its ``error`` text and the ``field`` at fault), so an operator reads in
Cinder's log what the cluster said.
"""

import time
import urllib.parse

import requests


class ApiError(Exception):
    """The API refused a call (or could not be reached)."""

    def __init__(self, method, path, status, message, field=None):
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        self.field = field
        where = f" (field {field})" if field else ""
        super().__init__(f"{method} {path}: {status}: {message}{where}")


class NotFound(ApiError):
    """404: no such volume, snapshot, host or attachment."""


class Conflict(ApiError):
    """409: the request conflicts with the cluster's state (a name in use, a policy in use)."""


def _quote(part):
    return urllib.parse.quote(str(part), safe="")


class Client:
    """The API at ``url`` (``http://host:port`` or ``https://...``)."""

    def __init__(self, url, token, ca_file=None, timeout=30):
        if not url:
            raise ValueError("alcubierre_api_url is not set")
        if not token:
            raise ValueError("alcubierre_api_token is not set")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        # Passed with every request: requests lets REQUESTS_CA_BUNDLE in the environment
        # override a session's own setting.
        self.verify = ca_file if ca_file else True

    def call(self, method, path, body=None, params=None):
        """One call; the decoded JSON answer (``None`` for an empty one)."""
        try:
            r = self.session.request(
                method,
                self.url + path,
                json=body,
                params=params,
                timeout=self.timeout,
                verify=self.verify,
            )
        except requests.RequestException as e:
            raise ApiError(method, path, 0, f"cannot reach {self.url}: {e}") from e
        if r.status_code >= 400:
            try:
                doc = r.json()
                message, field = doc.get("error", r.text), doc.get("field")
            except ValueError:
                message, field = r.text.strip() or r.reason, None
            cls = {404: NotFound, 409: Conflict}.get(r.status_code, ApiError)
            raise cls(method, path, r.status_code, message, field)
        if not r.content:
            return None
        return r.json()

    def _found(self, path):
        """GET ``path``; ``None`` when there is no such object."""
        try:
            return self.call("GET", path)
        except NotFound:
            return None

    def _delete(self, path):
        """DELETE ``path``; whether it existed (deleting twice succeeds)."""
        try:
            self.call("DELETE", path)
            return True
        except NotFound:
            return False

    # ---- cluster ----

    def status(self):
        return self.call("GET", "/api/v1/status")

    def config(self):
        return self.call("GET", "/api/v1/cluster/config")

    # ---- volumes ----

    def volume(self, name):
        """The volume named (or with id) ``name``, or ``None``."""
        return self._found(f"/api/v1/volumes/{_quote(name)}")

    def volumes(self):
        return self.call("GET", "/api/v1/volumes")

    def create_volume(self, name, size, qos=None, source=None):
        body = {"name": name, "size": size}
        if qos:
            body["qos"] = qos
        if source:
            body["source"] = source
        return self.call("POST", "/api/v1/volumes", body)

    def delete_volume(self, name):
        """Deletes the volume; whether it existed."""
        return self._delete(f"/api/v1/volumes/{_quote(name)}")

    def resize(self, name, size):
        return self.call("POST", f"/api/v1/volumes/{_quote(name)}/resize", {"size": size})

    def set_volume_qos(self, name, policy):
        return self.call("PUT", f"/api/v1/volumes/{_quote(name)}/qos", {"qos": policy})

    # ---- snapshots ----

    def snapshot(self, volume, name):
        return self._found(f"/api/v1/volumes/{_quote(volume)}/snapshots/{_quote(name)}")

    def create_snapshot(self, volume, name, timeout=600, poll=0.5):
        """Requests a snapshot and waits until it is ready; its record."""
        try:
            self.call(
                "POST", f"/api/v1/volumes/{_quote(volume)}/snapshots", {"name": name}
            )
        except Conflict:
            pass  # requested before (a retry): wait for that one
        deadline = time.monotonic() + timeout
        while True:
            s = self.snapshot(volume, name)
            if s is None:
                raise ApiError(
                    "GET", f"snapshot {volume}/{name}", 404, "the snapshot disappeared"
                )
            if s["state"] == "ready":
                return s
            if s["state"] == "failed":
                raise ApiError(
                    "POST",
                    f"snapshot {volume}/{name}",
                    500,
                    f"the snapshot failed: {s.get('error') or 'no reason given'}",
                )
            if time.monotonic() > deadline:
                raise ApiError(
                    "POST",
                    f"snapshot {volume}/{name}",
                    504,
                    f"the snapshot is still {s['state']} after {timeout} s",
                )
            time.sleep(poll)

    def delete_snapshot(self, volume, name):
        """Deletes the snapshot; whether it existed."""
        return self._delete(f"/api/v1/volumes/{_quote(volume)}/snapshots/{_quote(name)}")

    # ---- QoS policies ----

    def qos_policies(self):
        return self.call("GET", "/api/v1/qos")

    def put_qos(self, name, policy):
        return self.call("PUT", f"/api/v1/qos/{_quote(name)}", policy)

    def delete_qos(self, name):
        return self._delete(f"/api/v1/qos/{_quote(name)}")

    # ---- hosts and attachments ----

    def put_host(self, name, host):
        return self.call("PUT", f"/api/v1/hosts/{_quote(name)}", host)

    def attach(self, volume, host, nqn=None, iqn=None, nvme_hostid=None):
        body = {k: v for k, v in (("nqn", nqn), ("iqn", iqn), ("nvme_hostid", nvme_hostid)) if v}
        return self.call(
            "PUT", f"/api/v1/volumes/{_quote(volume)}/attachments/{_quote(host)}", body
        )

    def detach(self, volume, host, force=False):
        params = {"force": "true"} if force else None
        return self.call(
            "DELETE",
            f"/api/v1/volumes/{_quote(volume)}/attachments/{_quote(host)}",
            params=params,
        )

    def attachments(self, volume):
        return self.call("GET", f"/api/v1/volumes/{_quote(volume)}/attachments")

    def connection(self, volume):
        return self.call("GET", f"/api/v1/volumes/{_quote(volume)}/connection")

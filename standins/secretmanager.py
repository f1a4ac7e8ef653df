"""Secret Manager v1 stand-in: ``AccessSecretVersion`` over REST.

``GET /v1/projects/P/secrets/S/versions/V:access`` (and the regional form
``/v1/projects/P/locations/L/secrets/S/versions/V:access``) answers what
``google.cloud.secretmanager`` (``transport="rest"``) expects::

    {"name": "projects/<project number>/secrets/S/versions/3",
     "payload": {"data": "<base64>", "dataCrc32c": "<CRC32C as a decimal string>"}}

``dataCrc32c`` is an int64 in the proto, hence a JSON string. Like the real service,
the answer names the project by *number* whatever the request used, and ``latest`` is
"the most recently created version": when that one is disabled or destroyed the access
fails with ``400 FAILED_PRECONDITION`` (it does not fall back to an older version).

Secrets are kept per secret id, whatever project the request names (one project per
stand-in). Admin API under ``/_admin/`` (JSON); the same operations are methods of
:class:`SecretManagerState`. See ``docs/standins.md``.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import google_crc32c
from flask import Flask, Response

from standins._common import (
    JSON,
    Clock,
    FaultInjection,
    FaultRule,
    FaultsAndLog,
    SegmentConverter,
    StandinError,
    add_fault_admin_routes,
    admin_json,
    google_error,
    install_google_http_errors,
    install_request_hooks,
    json_response,
    rfc3339,
    utcnow,
)

logger = logging.getLogger("standins.secretmanager")

VersionState = Literal["ENABLED", "DISABLED", "DESTROYED"]


@dataclass
class _Version:
    number: int
    data: bytes
    create_time: datetime
    state: VersionState = "ENABLED"


class SecretManagerState(FaultInjection):
    """Secrets and their versions, faults and the access log; every method is thread-safe."""

    def __init__(self, *, project_number: str = "123456789012", clock: Clock = utcnow) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self.project_number = project_number
        self.log = FaultsAndLog(self._lock, clock)
        self._secrets: dict[str, list[_Version]] = {}
        self._corrupt_next = 0

    # ----------------------------------------------------------------- seeding

    def add_version(self, secret: str, value: str | bytes) -> int:
        """Add an ENABLED version holding ``value``; returns its number (1, 2, ...)."""
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if len(data) > 64 * 1024:
            raise ValueError("Secret Manager payloads are at most 64 KiB")
        with self._lock:
            versions = self._secrets.setdefault(secret, [])
            number = len(versions) + 1
            versions.append(_Version(number, data, self._clock()))
            return number

    def set_version_state(self, secret: str, version: int, state: VersionState) -> None:
        if state not in ("ENABLED", "DISABLED", "DESTROYED"):
            raise ValueError(f"unknown state {state!r}")
        with self._lock:
            found = self._find(secret, str(version), "admin")
            if found.state == "DESTROYED" and state != "DESTROYED":
                raise ValueError("a destroyed version cannot come back")
            found.state = state
            if state == "DESTROYED":
                found.data = b""

    def seed(self, secrets: Mapping[str, str]) -> None:
        """Add one version per ``{"secret-name": "value"}`` entry."""
        for name, value in secrets.items():
            if not isinstance(value, str):
                raise TypeError(f"secret {name!r}: the seed value must be a string")
            self.add_version(name, value)

    def seed_file(self, path: str | Path) -> None:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(payload, dict):
            raise TypeError('a secrets seed file is a JSON object {"secret-name": "value"}')
        self.seed(payload)

    # ----------------------------------------------------------------- faults / log

    def corrupt_next_checksum(self, count: int = 1) -> None:
        """The next ``count`` accesses answer a ``dataCrc32c`` that does not match the data."""
        with self._lock:
            self._corrupt_next += count

    def access_count(self, secret: str | None = None) -> int:
        """How many access requests (of ``secret``) were received."""
        pattern = f"/secrets/{secret}/versions/[^/]+:access$" if secret else r":access$"
        return len(self.log.requests("GET", pattern))

    def reset(self) -> None:
        with self._lock:
            self._secrets.clear()
            self._corrupt_next = 0
            self.log.reset()

    def secrets(self) -> JSON:
        """Names, versions and states -- never the values."""
        with self._lock:
            return {
                name: [
                    {"version": v.number, "state": v.state, "createTime": rfc3339(v.create_time)}
                    for v in versions
                ]
                for name, versions in self._secrets.items()
            }

    # ----------------------------------------------------------------- the API

    def _find(self, secret: str, version: str, project: str) -> _Version:
        versions = self._secrets.get(secret)
        secret_name = f"projects/{self.project_number}/secrets/{secret}"
        if not versions:
            raise StandinError(404, f"Secret [{secret_name}] not found or has no versions.")
        if version == "latest":
            return versions[-1]
        try:
            number = int(version)
        except ValueError as exc:
            raise StandinError(
                400, f"Invalid secret version id [{version}] for project [{project}]."
            ) from exc
        if not 1 <= number <= len(versions):
            raise StandinError(404, f"Secret Version [{secret_name}/versions/{version}] not found.")
        return versions[number - 1]

    def access(self, project: str, secret: str, version: str, location: str | None = None) -> JSON:
        """AccessSecretVersionResponse JSON for ``projects/P/secrets/S/versions/V``."""
        with self._lock:
            found = self._find(secret, version, project)
            prefix = f"projects/{self.project_number}"
            if location:
                prefix += f"/locations/{location}"
            name = f"{prefix}/secrets/{secret}/versions/{found.number}"
            if found.state != "ENABLED":
                raise StandinError(
                    400,
                    f"Secret Version [{name}] is in {found.state} state.",
                    "FAILED_PRECONDITION",
                )
            checksum = int(google_crc32c.value(found.data))
            if self._corrupt_next > 0:
                self._corrupt_next -= 1
                checksum ^= 0x5A5A5A5A
            return {
                "name": name,
                "payload": {
                    "data": base64.b64encode(found.data).decode("ascii"),
                    "dataCrc32c": str(checksum),
                },
            }


def _fault_response(rule: FaultRule) -> Response:
    message = rule.body or {
        429: "Quota exceeded for quota metric 'Access requests' and limit 'Access requests "
        "per minute' of service 'secretmanager.googleapis.com'.",
        503: "The service is currently unavailable.",
    }.get(rule.status, "Injected fault.")
    return google_error(rule.status, message, retry_after=rule.retry_after)


def create_app(state: SecretManagerState | None = None) -> Flask:
    """The Secret Manager stand-in as a Flask app (``app.extensions["standin"]``)."""
    st = state or SecretManagerState()
    app = Flask("standins.secretmanager")
    app.url_map.converters["segment"] = SegmentConverter
    app.extensions["standin"] = st
    install_request_hooks(app, st.log, _fault_response, logger)
    install_google_http_errors(app)

    @app.get("/v1/projects/<segment:p>/secrets/<segment:s>/versions/<segment:v>:access")
    def access(p: str, s: str, v: str) -> Response:
        return json_response(st.access(p, s, v))

    @app.get(
        "/v1/projects/<segment:p>/locations/<segment:loc>/secrets/<segment:s>"
        "/versions/<segment:v>:access"
    )
    def access_regional(p: str, loc: str, s: str, v: str) -> Response:
        return json_response(st.access(p, s, v, location=loc))

    @app.post("/_admin/secrets")
    def admin_add() -> Response:
        body = admin_json()
        try:
            secret = str(body["secret"])
            if "value_b64" in body:
                value: str | bytes = base64.b64decode(str(body["value_b64"]), validate=True)
            else:
                value = str(body["value"])
            number = st.add_version(secret, value)
        except (KeyError, ValueError) as exc:
            raise StandinError(400, f"bad secret: {exc}") from exc
        return json_response({"secret": secret, "version": number}, 201)

    @app.get("/_admin/secrets")
    def admin_list() -> Response:
        return json_response({"secrets": st.secrets()})

    @app.post("/_admin/version-state")
    def admin_version_state() -> Response:
        body = admin_json()
        try:
            st.set_version_state(str(body["secret"]), int(body["version"]), body["state"])
        except (KeyError, ValueError) as exc:
            raise StandinError(400, f"bad request: {exc}") from exc
        return json_response({})

    @app.post("/_admin/seed")
    def admin_seed() -> Response:
        try:
            st.seed(admin_json())
        except TypeError as exc:
            raise StandinError(400, str(exc)) from exc
        return json_response({"secrets": st.secrets()})

    @app.post("/_admin/corrupt-checksum")
    def admin_corrupt() -> Response:
        st.corrupt_next_checksum(int(admin_json().get("count", 1)))
        return json_response({})

    add_fault_admin_routes(app, st)

    @app.post("/_admin/reset")
    def admin_reset() -> Response:
        st.reset()
        return json_response({})

    return app

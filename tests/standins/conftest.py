"""Fixtures for the stand-in tests: servers on free ports and the golden-fixture checker.

Regenerate the golden fixtures with ``STANDINS_REGEN_GOLDEN=1 pytest tests/standins``.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from standins import RunningServer, serve
from standins import cloudrun as cloudrun_standin
from standins import secretmanager as secretmanager_standin
from standins import slack as slack_standin
from standins import storage as storage_standin

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
REGEN = os.environ.get("STANDINS_REGEN_GOLDEN") == "1"


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and JSON types, not values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


class Golden:
    """Compares a stand-in answer with a saved fixture by shape (keys and JSON types)."""

    def path(self, name: str) -> Path:
        return GOLDEN_DIR / name

    def load_text(self, name: str) -> str:
        return self.path(name).read_text(encoding="utf-8")

    def check(self, name: str, payload: Any) -> None:
        path = self.path(name)
        if REGEN:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        saved = json.loads(path.read_text(encoding="utf-8"))
        assert shape(payload) == shape(saved), f"{name}: the stand-in's answer changed shape"


@pytest.fixture
def golden() -> Golden:
    return Golden()


class Web:
    """A tiny HTTP client for admin calls and raw wire checks."""

    def request(
        self, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        """(status, headers, text); HTTP errors are answers, not exceptions."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers.items()), resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers.items()), err.read().decode()

    def json(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        status, _, text = self.request(method, url, body)
        return status, json.loads(text) if text else None


@pytest.fixture
def web() -> Web:
    return Web()


@pytest.fixture
def cloudrun_state() -> cloudrun_standin.CloudRunState:
    return cloudrun_standin.CloudRunState(seed=7)


@pytest.fixture
def cloudrun_server(cloudrun_state: cloudrun_standin.CloudRunState) -> Iterator[RunningServer]:
    with serve(cloudrun_standin.create_app(cloudrun_state)) as server:
        yield server


@pytest.fixture
def slack_state() -> slack_standin.SlackState:
    return slack_standin.SlackState()


@pytest.fixture
def slack_server(slack_state: slack_standin.SlackState) -> Iterator[RunningServer]:
    with serve(slack_standin.create_app(slack_state)) as server:
        yield server


@pytest.fixture
def secrets_state() -> secretmanager_standin.SecretManagerState:
    return secretmanager_standin.SecretManagerState()


@pytest.fixture
def secrets_server(
    secrets_state: secretmanager_standin.SecretManagerState,
) -> Iterator[RunningServer]:
    with serve(secretmanager_standin.create_app(secrets_state)) as server:
        yield server


@pytest.fixture
def storage_state() -> Iterator[storage_standin.StorageState]:
    state = storage_standin.StorageState()
    yield state
    state.close()


@pytest.fixture
def storage_server(storage_state: storage_standin.StorageState) -> Iterator[RunningServer]:
    with serve(storage_standin.create_app(storage_state)) as server:
        yield server

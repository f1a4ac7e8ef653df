"""Secrets by reference, resolved through the official Secret Manager client (REST)
against the local stand-in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.errors import SecretError, TransientError
from shared.log import REDACTOR
from shared.secrets import Secrets, is_reference
from shared.settings import Settings
from standins import RunningServer, serve
from standins.secretmanager import SecretManagerState, create_app

PROJECT = "sight-local"


@pytest.fixture
def state() -> SecretManagerState:
    return SecretManagerState()


@pytest.fixture
def server(state: SecretManagerState) -> Iterator[RunningServer]:
    with serve(create_app(state)) as running:
        yield running


@pytest.fixture
def secrets(server: RunningServer) -> Secrets:
    return Secrets(Settings(secret_manager_endpoint=server.url))


def ref(name: str, version: str = "latest") -> str:
    return f"projects/{PROJECT}/secrets/{name}/versions/{version}"


def test_plain_value_is_the_secret_itself_and_is_registered_for_redaction(
    secrets: Secrets,
) -> None:
    assert secrets.resolve("local-only-value-1") == "local-only-value-1"
    assert "local-only-value-1" not in REDACTOR.redact("x local-only-value-1 y")


def test_reference_is_resolved_through_secret_manager_and_cached(
    secrets: Secrets, state: SecretManagerState
) -> None:
    state.add_version("slack-webhook", "https://hooks.example/services/T/B/first")
    state.add_version("slack-webhook", "https://hooks.example/services/T/B/second")
    assert is_reference(ref("slack-webhook"))
    assert secrets.resolve(ref("slack-webhook")) == "https://hooks.example/services/T/B/second"
    assert secrets.resolve(ref("slack-webhook", "1")) == "https://hooks.example/services/T/B/first"
    secrets.resolve(ref("slack-webhook"))
    assert state.access_count("slack-webhook") == 2  # latest once, version 1 once


def test_checksum_mismatch_is_refused(secrets: Secrets, state: SecretManagerState) -> None:
    state.add_version("db-password", "pw-value-123")
    state.corrupt_next_checksum()
    with pytest.raises(SecretError, match="checksum mismatch"):
        secrets.resolve(ref("db-password"))


def test_missing_secret_is_a_secret_error_without_the_value(secrets: Secrets) -> None:
    with pytest.raises(SecretError, match="cannot access secret"):
        secrets.resolve(ref("does-not-exist"))


def test_secret_manager_outage_is_transient(server: RunningServer) -> None:
    dead = Secrets(Settings(secret_manager_endpoint="http://127.0.0.1:1"))
    with pytest.raises(TransientError):
        dead.resolve(ref("anything"))

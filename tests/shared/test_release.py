"""A release's identity and trace id are the same wherever they are computed."""

from __future__ import annotations

import pytest

from shared.release import is_release_id, release_id, release_trace_id

COMMIT = "4f1c2a9e7b3d5c8a0e6f1b2d3c4a5e6f7a8b9c0d"


def test_release_id_is_service_and_short_commit() -> None:
    assert release_id("sight-api", COMMIT) == "sight-api@4f1c2a9e7b3d"
    assert release_id("sight-api", COMMIT.upper()) == "sight-api@4f1c2a9e7b3d"


def test_release_trace_id_is_deterministic_w3c_hex_and_differs_per_release() -> None:
    one = release_trace_id("sight-api@4f1c2a9e7b3d")
    assert one == release_trace_id("sight-api@4f1c2a9e7b3d")
    assert len(one) == 32 and int(one, 16) != 0 and one == one.lower()
    assert one != release_trace_id("sight-api@4f1c2a9e7b3e")


@pytest.mark.parametrize(
    ("value", "ok"),
    [("sight-api@4f1c2a9e7b3d", True), ("sight-api@4F1C2A9E7B3D", False), ("x@123", False)],
)
def test_is_release_id_accepts_only_the_canonical_form(value: str, ok: bool) -> None:
    assert is_release_id(value) is ok

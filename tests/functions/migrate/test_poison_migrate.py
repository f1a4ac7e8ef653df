"""migrate and poison text: NUL or a lone surrogate in a build's id.

Nothing can be migrated for, recorded about or published for a build whose id PostgreSQL
cannot store or UTF-8 cannot encode: the message is answered 2xx on its first delivery
and kept in ``ops.rejected_events`` with the reason (docs/architecture.md), and no
migration runs.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.functions.migrate.test_migrate import make_env
from tests.helpers import envelope, push, rejected_events
from tests.shared.migrate.helpers import golden_build

__all__ = ["make_env"]


@pytest.mark.parametrize("bad", ["\x00", "\ud800"], ids=["nul", "lone-surrogate"])
def test_a_build_whose_id_has_poison_text_is_kept_and_migrates_nothing(
    make_env: Any, bad: str
) -> None:
    env = make_env()
    before = env.revision()
    data, attributes = golden_build()
    build = json.loads(data)
    build["id"] = attributes["buildId"] = build["id"] + bad
    data = json.dumps(build).encode()  # ensure_ascii: a lone surrogate travels as \ud800
    body = envelope(data, attributes)
    assert push(env.client, "cloud-builds", body).status_code == 200
    [kept] = rejected_events(env.deps.engine, "migrate", body["message"]["messageId"])
    assert "'id'" in kept.reason
    assert bytes(kept.payload) == data
    assert env.revision() == before, "no migration ran"
    assert env.events() == []

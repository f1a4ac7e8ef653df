"""Fixtures for notify: the Slack sink, and a notify app configured per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest
import yaml
from pydantic import SecretStr

from shared.runtime import Deps, set_process_deps
from shared.settings import NotifyConfig, Settings
from standins import RunningServer, serve
from standins import slack as slack_standin
from tests.helpers import ROOT

SOURCE = ROOT / "functions" / "notify" / "main.py"
WEBHOOK_PATH = "/services/T0TEST/B0TEST/notifytestsecret"


@pytest.fixture
def sink() -> Iterator[tuple[slack_standin.SlackState, RunningServer]]:
    state = slack_standin.SlackState()
    with serve(slack_standin.create_app(state)) as running:
        yield state, running


NotifyFactory = Callable[..., tuple[Any, Deps]]


@pytest.fixture
def make_notify(
    settings: Settings, sink: Any, deps: Deps, tmp_path: Path
) -> Iterator[NotifyFactory]:
    """``make_notify(config={...}, group_wait_s=..., ...)`` -> (test client, deps).

    Each call gets its own Redis prefix, so grouping state never leaks between tests.
    """
    _, running = sink
    made: list[Deps] = []

    def factory(
        config: dict[str, Any] | None = None,
        *,
        webhook: str | None = WEBHOOK_PATH,
        redis_client: Any = None,
        settings_update: dict[str, Any] | None = None,
        own_engine: bool = False,
        **notify: Any,
    ) -> tuple[Any, Deps]:
        path = tmp_path / f"notify-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(config or {}))
        notify.setdefault("redis_prefix", f"sightops:test:{uuid.uuid4().hex[:10]}:")
        configured = settings.model_copy(
            update={
                "slack_webhook_url": SecretStr(running.url + webhook) if webhook else None,
                "notify": NotifyConfig(config_file=str(path), **notify),
                **(settings_update or {}),
            }
        )
        d = Deps(
            configured,
            metrics=deps.metrics,
            engine=None if own_engine else deps.engine,
            redis_client=redis_client,
        )
        if own_engine:
            made.append(d)
        set_process_deps(d)
        app = functions_framework.create_app(
            target="notify", source=str(SOURCE), signature_type="cloudevent"
        )
        return app.test_client(), d

    yield factory
    set_process_deps(deps)
    for own in made:  # engines a test asked for (bigger pools): give the connections back
        if "engine" in own.__dict__:
            own.__dict__.pop("engine").dispose()

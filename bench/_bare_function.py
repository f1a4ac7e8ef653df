"""Baselines for bench/runtime_overhead.py: no sight-ops runtime."""

from __future__ import annotations

import base64
import json
from typing import Any

import functions_framework
from sqlalchemy import text

from shared.runtime import process_deps


@functions_framework.cloud_event
def bare(cloud_event: Any) -> None:
    json.loads(base64.b64decode(cloud_event.data["message"]["data"]))


@functions_framework.cloud_event
def bare_effect(cloud_event: Any) -> None:
    event = json.loads(base64.b64decode(cloud_event.data["message"]["data"]))
    with process_deps().engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ops.actions (kind, status, detail) VALUES ('bench', 'done',"
                " CAST(:d AS jsonb))"
            ),
            {"d": json.dumps({"key": event["key"]})},
        )

"""Text PostgreSQL accepts: what the runtime stores of any message, and any row a
handler writes from event values."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def storable(value: str) -> str:
    """Text PostgreSQL accepts: NUL (refused by text and jsonb, SQLSTATE 22021/22P05, not
    transient) and lone surrogates (not UTF-8) are escaped, so a poison message is still
    kept rather than retried until it is dead-lettered."""
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def storable_text(value: str | None) -> str | None:
    """A text column's value made :func:`storable`; empty stays NULL."""
    return storable(value) if value else None


def _storable_value(value: Any) -> Any:
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, Mapping):
        return {storable(str(k)): _storable_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_storable_value(v) for v in value]
    return value


def storable_json(value: Any) -> str:
    """JSON for a ``jsonb`` column, every string made :func:`storable` first."""
    return json.dumps(_storable_value(value), default=lambda v: storable(str(v)))

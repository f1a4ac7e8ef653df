"""Just enough of two filter languages to run terraform/'s filters against real messages
and real log lines in the wiring tests: Pub/Sub subscription filters (attributes) and
Cloud Logging queries (the clauses our log-based metrics use). Anything else raises, so
a filter outside this subset fails its test instead of matching by accident."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from shared.log import LABELS_KEY

_HAS_PREFIX = re.compile(r'^hasPrefix\(attributes\.(\w+), "([^"]*)"\)$')
_NOT_EQUAL = re.compile(r'^attributes\.(\w+) != "([^"]*)"$')
_EQUAL = re.compile(r'^attributes\.(\w+) = "([^"]*)"$')
_NOT_HAS = re.compile(r"^NOT attributes:(\w+)$")


def pubsub_filter_matches(expression: str | None, attributes: Mapping[str, str]) -> bool:
    """Whether Pub/Sub delivers a message with these attributes (no filter: always)."""
    if not expression:
        return True
    if m := _HAS_PREFIX.match(expression):
        return attributes.get(m.group(1), "").startswith(m.group(2))
    if m := _NOT_EQUAL.match(expression):
        # Pub/Sub: `!=` also matches a message without the attribute.
        return attributes.get(m.group(1)) != m.group(2)
    if m := _EQUAL.match(expression):
        return attributes.get(m.group(1)) == m.group(2)
    if m := _NOT_HAS.match(expression):
        return m.group(1) not in attributes
    raise AssertionError(f"filter outside the tested subset: {expression}")


def log_entry(line: str, *, service_name: str) -> dict[str, Any]:
    """The LogEntry Cloud Run's logging agent makes of one JSON line a function printed:
    ``logging.googleapis.com/labels`` becomes the entry's ``labels``, the rest its
    ``jsonPayload``; the resource is the function's Cloud Run revision."""
    payload = json.loads(line)
    labels = payload.pop(LABELS_KEY, {})
    return {
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": service_name}},
        "labels": labels,
        "jsonPayload": payload,
        "severity": payload.get("severity"),
    }


_CLAUSE = re.compile(
    r"^(?P<field>[a-zA-Z_.]+)(?P<op>=~|=)"
    r'(?:"(?P<value>[^"]*)"|\((?P<any>"[^"]*"(?: OR "[^"]*")*)\))$'
)


def _field(entry: Mapping[str, Any], path: str) -> Any:
    value: Any = entry
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def log_filter_matches(expression: str, entry: Mapping[str, Any]) -> bool:
    """Whether a Logging query of ``field="v"``, ``field=("a" OR "b")`` and
    ``field=~"regex"`` clauses joined by AND matches the entry."""
    for clause in expression.split(" AND "):
        m = _CLAUSE.match(clause.strip())
        if m is None:
            raise AssertionError(f"log filter clause outside the tested subset: {clause!r}")
        actual = _field(entry, m.group("field"))
        if actual is None:
            return False
        if m.group("op") == "=~":
            if not re.search(m.group("value"), str(actual)):
                return False
        elif m.group("any") is not None:
            if str(actual) not in re.findall(r'"([^"]*)"', m.group("any")):
                return False
        elif str(actual) != m.group("value"):
            return False
    return True

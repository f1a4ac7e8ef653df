"""A release's timeline: its ledger rows, traffic moves, canary steps and spans merged
into one list, oldest first, each with a one-line summary (pure; docs/console.md).

Summaries are built from the ledger's ``detail`` (the audit record, docs/schema.md): a
missing or oddly typed key costs the line its detail, never the page.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.console._queries import ActionRow, DecisionRow, ReleaseStory
from shared.trace import SpanRecord


@dataclass(frozen=True)
class Entry:
    """One line of the timeline."""

    at: datetime
    source: str  # "action", "span", "canary"
    kind: str
    status: str
    summary: str
    actor: str | None = None
    evidence: str | None = None  # pretty JSON, shown folded
    facts: tuple[tuple[str, str], ...] = ()
    decision: DecisionRow | None = None
    tone: str = "info"  # info / good / bad / warn: the badge's colour
    anchor: str = ""


_GOOD = {"succeeded", "promoted", "good", "sent", "passed", "started", "stepped", "step"}
_BAD = {"failed", "bad", "rolled_back", "rollback"}
_WARN = {"frozen", "held", "hold", "escalated", "stopped", "stop", "skipped"}


def tone(status: str) -> str:
    if status in _BAD:
        return "bad"
    if status in _WARN:
        return "warn"
    return "good" if status in _GOOD else "info"


def _s(value: object) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def summarize(action: ActionRow) -> str:
    """One line saying what the row is about."""
    d = action.detail
    kind = action.kind
    if kind in {"rollback", "freeze", "escalation"}:
        moved = f"{_s(d.get('from')) or '?'} → {_s(d.get('to')) or '?'}"
        dry = " (dry run)" if str(d.get("dry_run")).lower() == "true" else ""
        return f"{moved}{dry}: {_s(d.get('reason')) or action.status}"
    if kind == "release":
        revision = _s(d.get("revision")) or "(no revision)"
        reason = _s(d.get("reason"))
        return f"{revision} {action.status}" + (f": {reason}" if reason else "")
    if kind == "migration":
        pg = d.get("postgres") if isinstance(d.get("postgres"), Mapping) else {}
        assert isinstance(pg, Mapping)
        moved = f"postgres {_s(pg.get('from')) or 'base'} → {_s(pg.get('to')) or '?'}"
        breaking = ", breaking" if action.breaking or d.get("breaking") is True else ""
        error = _s(d.get("error")) or _s(d.get("reason"))
        return f"{moved}{breaking}" + (f": {error}" if error else "")
    if kind == "health":
        return f"{_s(d.get('revision')) or '?'} marked {action.status}: {_s(d.get('reason')) or ''}"
    if kind == "notification":
        what = _s(d.get("type")) or _s(d.get("notice_type")) or "message"
        return f"Slack: {what} to route {_s(d.get('route')) or '?'}"
    if kind == "canary":
        before, after = _s(d.get("percent_before")), _s(d.get("percent_after"))
        split = f"{before} % → {after} %" if before is not None and after is not None else ""
        return f"{split}: {_s(d.get('reason')) or action.status}".lstrip(": ")
    if kind == "incident":
        return f"incident {_s(d.get('incident_id')) or '?'} {action.status}"
    return _s(d.get("reason")) or action.status


def _facts(action: ActionRow) -> tuple[tuple[str, str], ...]:
    facts = [("trigger", action.trigger_event_id)] if action.trigger_event_id else []
    for key in ("event_id", "trigger", "build_id", "commit_sha", "previous_revision", "region"):
        value = _s(action.detail.get(key))
        if value:
            facts.append((key, value))
    return tuple((k, v) for k, v in facts if v)


def _verdict(evidence: object) -> tuple[tuple[str, str], ...]:
    if isinstance(evidence, Mapping) and evidence.get("verdict") is not None:
        return (("evidence verdict", str(evidence["verdict"])),)
    return ()


def timeline(
    story: ReleaseStory, spans: Sequence[SpanRecord] = (), *, max_spans: int = 200
) -> list[Entry]:
    """Actions, canary steps and spans by time; ties keep that order."""
    entries: list[Entry] = []
    for action in story.actions:
        decision = story.decisions.get(str(action.detail.get("event_id") or ""))
        evidence = action.detail.get("evidence")
        entries.append(
            Entry(
                at=action.started_at,
                source="action",
                kind=action.kind,
                status=action.status,
                summary=summarize(action),
                actor=action.actor,
                evidence=_pretty(action.detail) if action.detail else None,
                facts=_facts(action) + _verdict(evidence),
                decision=decision,
                tone=tone(action.status),
                anchor=f"action-{action.id}",
            )
        )
    if story.canary is not None:
        for index, step in enumerate(story.canary.history):
            entries.append(_step_entry(index, step))
    for span in list(spans)[:max_spans]:
        entries.append(
            Entry(
                at=span.start,
                source="span",
                kind="span",
                status=str(span.attributes.get("outcome") or span.status).lower(),
                summary=f"{span.name} ({span.duration_ms:.0f} ms, {span.service or '?'})",
                tone="bad" if span.status == "ERROR" else "info",
                anchor=f"span-{span.span_id}",
            )
        )
    order = {"action": 0, "canary": 1, "span": 2}
    entries.sort(key=lambda e: (e.at, order.get(e.source, 3)))
    return entries


def _step_entry(index: int, step: Mapping[str, Any]) -> Entry:
    at = _time(step.get("decided_at")) or _time(step.get("started_at"))
    action = _s(step.get("action")) or "?"
    percent = _s(step.get("percent")) or "?"
    evidence = step.get("evidence")
    return Entry(
        at=at or datetime.min.replace(tzinfo=UTC),
        source="canary",
        kind="canary step",
        status=action,
        summary=f"at {percent} %: {action}, {_s(step.get('reason')) or ''}",
        evidence=_pretty(evidence) if evidence else None,
        tone=tone(action),
        anchor=f"step-{index}",
    )


def _time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class CanaryStepView:
    """A canary step for the canary table: its traffic, its decision, its tests."""

    percent: str
    action: str
    reason: str
    started_at: datetime | None
    decided_at: datetime | None
    verdict: str | None
    tests: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def _test_text(test: Mapping[str, Any]) -> str:
    def n(key: str) -> str:
        return _s(test.get(key)) or "?"

    return (
        f"{n('outcome')}: canary {n('canary_events')}/{n('canary_requests')}"
        f" vs stable {n('stable_events')}/{n('stable_requests')}"
    )


def canary_steps(history: Sequence[Mapping[str, Any]]) -> list[CanaryStepView]:
    views = []
    for step in history:
        evidence = step.get("evidence") if isinstance(step.get("evidence"), Mapping) else None
        tests: list[tuple[str, str]] = []
        if evidence is not None:
            for name in ("errors", "latency"):
                test = evidence.get(name)
                if isinstance(test, Mapping):
                    tests.append((name, _test_text(test)))
        views.append(
            CanaryStepView(
                percent=_s(step.get("percent")) or "?",
                action=_s(step.get("action")) or "?",
                reason=_s(step.get("reason")) or "",
                started_at=_time(step.get("started_at")),
                decided_at=_time(step.get("decided_at")),
                verdict=_s(evidence.get("verdict")) if evidence is not None else None,
                tests=tuple(tests),
            )
        )
    return views

"""One scenario's run on a stack: its service, its releases, what it waits for, and the
facts gathered afterwards from the timeline, the ledger, Cloud Run and Slack."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from shared.release import release_trace_id
from sightops.simulate._harness import Harness, Release, ScenarioTimeout, new_commit
from sightops.stack import TimelineEntry


class Action(BaseModel):
    """One ``ops.actions`` row of the scenario's service (docs/schema.md)."""

    kind: str
    status: str
    at: datetime
    release_id: str | None = None
    trace_id: str | None = None
    breaking: bool | None = None
    trigger_event_id: str | None = None


class Facts(BaseModel):
    """What happened to one service during one scenario: what its checks judge."""

    service: str
    release_id: str | None = None
    last_good: str | None = None
    new_revision: str | None = None
    revisions: list[str] = Field(default_factory=list)
    traffic_before: dict[str, int] = Field(default_factory=dict)
    traffic_after: dict[str, int] = Field(default_factory=dict)
    traffic_moves: int = 0
    #: distinct events by type (an event id published twice counts once)
    events: dict[str, int] = Field(default_factory=dict)
    #: messages on topics by type, duplicates included
    messages: dict[str, int] = Field(default_factory=dict)
    event_order: list[str] = Field(default_factory=list)
    #: function deliveries by "<consumer>:<outcome>"
    outcomes: dict[str, int] = Field(default_factory=dict)
    actions: list[Action] = Field(default_factory=list)
    slack: list[str] = Field(default_factory=list)
    deploy_exit_codes: list[int] = Field(default_factory=list)
    phases_ms: dict[str, float] = Field(default_factory=dict)
    #: seconds from the build's SUCCESS message to each step seen (docs/simulate.md,
    #: "Milestones"; bench/release.py turns them into phases)
    milestones: dict[str, float] = Field(default_factory=dict)
    #: shared.release.release_trace_id of the release: what every trace id should be
    release_trace_id: str | None = None
    #: the release's trace ids by kind of record (events, actions, logs); "-": none
    trace_ids: dict[str, list[str]] = Field(default_factory=dict)
    #: the service's newest ``ops.canaries`` row: status, percent, reason (docs/canary.md)
    canary: dict[str, Any] | None = None
    #: the ledger's health of each revision of the service (``ops.revisions``)
    health: dict[str, str] = Field(default_factory=dict)

    def count(self, kind: str, status: str | None = None) -> int:
        return sum(1 for a in self.actions if a.kind == kind and status in (None, a.status))


class Row(BaseModel):
    """One line of the printed timeline, relative to the scenario's first message."""

    t_s: float
    source: str
    text: str


class Run:
    """A scenario's handle on the stack; every helper waits on the recorded timeline."""

    def __init__(
        self,
        harness: Harness,
        scenario: str,
        *,
        timeout_s: float = 60.0,
        service: str | None = None,
    ) -> None:
        self.h = harness
        self.scenario = scenario
        self.service = service or f"{scenario[:20].rstrip('-')}-{uuid.uuid4().hex[:6]}"
        self.timeout_s = timeout_s
        self.mark = harness.recorder.mark()
        self.started = datetime.now(UTC)
        self.releases: list[Release] = []
        self.baseline: Release | None = None
        self.last_good: str | None = None
        self.traffic_before: dict[str, int] = {}
        self.message_ids: set[str] = set()
        self.notes: list[str] = []
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # ---- what scenarios do -------------------------------------------------------
    def seed(self) -> str:
        """The service as it is before the scenario: one revision, known good, serving."""
        baseline = Release(self.service, new_commit(), str(uuid.uuid4()))
        self.baseline = baseline
        self.last_good = self.h.create_service(baseline)
        self.wait_actions("health", "good")
        self.traffic_before = self.h.traffic(self.service)
        self._watch()
        self.mark = self.h.recorder.mark()  # the scenario's timeline starts with its release
        return self.last_good

    def release(self, migration: tuple[str, str, str | None] | None = None) -> Release:
        """A CI build of a new commit reaches SUCCESS, its migration (slug, upgrade
        body, allowed lint rule) in the tree: the pipeline starts."""
        release = Release(self.service, new_commit(), str(uuid.uuid4()))
        if migration is not None:
            slug, upgrade, allow = migration
            self.migration = self.h.add_migration(slug, upgrade, allow=allow)
        self.releases.append(release)
        self.h.publish_build(release)
        return release

    @property
    def current(self) -> Release:
        return self.releases[-1]

    def wait_event(
        self, event_type: str, *, count: int = 1, timeout_s: float | None = None
    ) -> list[TimelineEntry]:
        return self.h.recorder.wait_for(
            lambda e: e.source == "topic" and self.concerns(e) and e.event_type == event_type,
            f"{count} x {event_type} of {self.service}",
            since=self.mark,
            timeout_s=timeout_s or self.timeout_s,
            count=count,
        )

    def wait_any(self, *event_types: str) -> TimelineEntry:
        found = self.h.recorder.wait_for(
            lambda e: e.source == "topic" and self.concerns(e) and e.event_type in event_types,
            f"one of {', '.join(event_types)} of {self.service}",
            since=self.mark,
            timeout_s=self.timeout_s,
        )
        return found[0]

    def wait_outcomes(self, consumer: str, count: int, event_type: str | None = None) -> None:
        """``count`` deliveries to ``consumer`` answered (any outcome but retry)."""

        def done(e: TimelineEntry) -> bool:
            if e.source == "topic":
                self.concerns(e)  # learn its message id: its deliveries are ours
                return False
            labels = e.fields.get("logging.googleapis.com/labels") or {}
            return (
                e.source == "function"
                and labels.get("consumer") == consumer
                and labels.get("outcome") not in (None, "retry")
                and (event_type is None or labels.get("event_type") == event_type)
                and self._ours(e)
            )

        self.h.recorder.wait_for(
            done,
            f"{count} deliveries to {consumer}",
            since=self.mark,
            timeout_s=self.timeout_s,
            count=count,
        )

    def wait_slack(self, needle: str, *, count: int = 1, timeout_s: float | None = None) -> None:
        self.h.recorder.wait_for(
            lambda e: e.source == "slack" and needle in e.text,
            f"a Slack message with {needle!r}",
            since=self.mark,
            timeout_s=timeout_s or self.timeout_s,
            count=count,
        )

    def wait_traffic(self, expected: dict[str, int]) -> None:
        self.h.recorder.wait_for(
            lambda e: e.source == "traffic" and e.fields.get("traffic") == expected,
            f"traffic of {self.service} to become {expected}",
            since=self.mark,
            timeout_s=self.timeout_s,
        )

    def wait_actions(self, kind: str, status: str, count: int = 1) -> None:
        """Ledger rows are written by the consumers, after the events: poll for them."""
        import time

        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if sum(1 for a in self.actions() if (a.kind, a.status) == (kind, status)) >= count:
                return
            time.sleep(0.1)
        raise ScenarioTimeout(f"waited for {count} {kind}/{status} rows of {self.service}")

    def wait_deploy(self) -> None:
        """The deploy trigger's run of the release has exited."""
        self.h.recorder.wait_for(
            lambda e: (
                e.source == "deploy"
                and e.fields.get("service") == self.service
                and "returncode" in e.fields
            ),
            f"the deploy of {self.service} to exit",
            since=self.mark,
            timeout_s=self.timeout_s,
        )

    def promoted_revision(self) -> str:
        [entry] = self.wait_event("sight.ops.release.promoted")[:1]
        return str(entry.json_data()["revision"])

    def smoke_service(self, revision: str) -> int:
        """`sightops smoke <service URL> --publish`, as a scheduled check or an operator
        runs it after the release; returns its exit code."""
        url = str(self.h.service(self.service).get("uri") or "")
        done = self.h.cli(
            "smoke",
            url,
            "--service",
            self.service,
            "--revision",
            revision,
            "--commit-sha",
            self.current.commit_sha,
            "--build-id",
            self.current.build_id,
            "--publish",
        )
        self.notes.append(f"sightops smoke {url} exited {done.returncode}")
        return done.returncode

    def tick_until(self, *event_types: str, every_s: float = 1.0) -> TimelineEntry:
        """Publish a canary tick for the service every ``every_s`` (Cloud Scheduler's job,
        sped up) until one of ``event_types`` of the service is published."""
        import time

        deadline = time.monotonic() + self.timeout_s
        while True:
            self.h.publish_tick(self.service)
            try:
                return self.h.recorder.wait_for(
                    lambda e: (
                        e.source == "topic" and self.concerns(e) and e.event_type in event_types
                    ),
                    f"one of {', '.join(event_types)} of {self.service}",
                    since=self.mark,
                    timeout_s=min(every_s, max(0.0, deadline - time.monotonic())),
                )[0]
            except ScenarioTimeout:
                if time.monotonic() >= deadline:
                    raise ScenarioTimeout(
                        f"ticked {self.service} for {self.timeout_s:.0f}s: no "
                        f"{' or '.join(event_types)}"
                    ) from None

    def settle(self, seconds: float) -> None:
        """Give stragglers (redeliveries, a deploy that must not start) time to show."""
        self._stop.wait(seconds)

    # ---- what is ours ------------------------------------------------------------
    def concerns(self, entry: TimelineEntry) -> bool:
        """A message about this scenario's service (its builds, events, incidents)."""
        attrs = entry.attributes
        if attrs.get("service") == self.service:
            ours = True
        elif "buildId" in attrs:
            ours = any(r.build_id == attrs["buildId"] for r in self.releases)
        else:
            body = entry.json_data()
            incident = body.get("incident") if isinstance(body, dict) else None
            labels = ((incident or {}).get("resource") or {}).get("labels") or {}
            ours = labels.get("service_name") == self.service
        if ours and entry.fields.get("message_id"):
            self.message_ids.add(str(entry.fields["message_id"]))
        return ours

    def _ours(self, entry: TimelineEntry) -> bool:
        if entry.source == "function":
            return str(entry.fields.get("message_id")) in self.message_ids
        if entry.source == "topic":
            return self.concerns(entry)
        if entry.source == "deploy":
            return entry.fields.get("service") == self.service
        return entry.source in ("traffic", "slack", "action", "note")

    # ---- watching Cloud Run and Slack --------------------------------------------
    def _watch(self) -> None:
        def watch() -> None:
            seen_traffic = self.traffic_before
            seen_slack = {json.dumps(m, sort_keys=True) for m in self.h.slack_messages()}
            while not self._stop.wait(0.1):
                try:
                    traffic = self.h.traffic(self.service)
                    if traffic != seen_traffic:
                        seen_traffic = traffic
                        self.h.recorder(
                            TimelineEntry(
                                datetime.now(UTC),
                                "traffic",
                                "traffic " + ", ".join(f"{r} {p}%" for r, p in traffic.items()),
                                fields={"traffic": traffic},
                            )
                        )
                    for message in self.h.slack_messages():
                        key = json.dumps(message, sort_keys=True)
                        if key in seen_slack:
                            continue
                        seen_slack.add(key)
                        text = _slack_text(message)
                        if self.service in text:
                            self.h.recorder(
                                TimelineEntry(
                                    datetime.fromisoformat(message["received_at"]),
                                    "slack",
                                    "slack " + text,
                                    fields={"message": message},
                                )
                            )
                except Exception as exc:  # the stack is going away: stop watching
                    if not self._stop.is_set():
                        self.notes.append(f"watcher stopped: {type(exc).__name__}: {exc}")
                    return

        self._watcher = threading.Thread(target=watch, name=f"watch-{self.service}", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)

    # ---- facts -------------------------------------------------------------------
    def actions(self) -> list[Action]:
        rows = self.h.rows(
            "SELECT kind, status, started_at, release_id, trace_id, breaking,"
            " trigger_event_id FROM ops.actions WHERE service = :s ORDER BY started_at, id",
            s=self.service,
        )
        return [
            Action(
                kind=r["kind"],
                status=r["status"],
                at=r["started_at"],
                release_id=r["release_id"],
                trace_id=r["trace_id"],
                breaking=r["breaking"],
                trigger_event_id=r["trigger_event_id"],
            )
            for r in rows
        ]

    def entries(self) -> list[TimelineEntry]:
        """This scenario's entries, in time order (function lines once their message
        is known to be ours)."""
        mine = self.h.recorder.entries(self.mark)
        for e in mine:
            if e.source == "topic":
                self.concerns(e)
        return sorted((e for e in mine if self._ours(e)), key=lambda e: e.at)

    def _milestones(self, entries: list[TimelineEntry], t0: datetime) -> dict[str, float]:
        """When each step of the release (and of its rollback) happened: publish times of
        its events, the deploy trigger's start, Slack's receipt, the rollback's delivery
        (its log line's time less its duration), its decision (``ops.rollback_decisions``)
        and Cloud Run's ``updateTime`` of the traffic move back."""

        def event(kind: str, nth: int = 0) -> datetime | None:
            found = [e.at for e in entries if e.source == "topic" and e.event_type == kind]
            return found[nth] if len(found) > nth else None

        at: dict[str, datetime | None] = {
            "build": _first(entries, lambda e: "buildId" in e.attributes),
            "migrated": event("sight.ops.migration.succeeded"),
            "deploy_started": _first(entries, lambda e: e.source == "deploy"),
            "deployed": event("sight.ops.release.deployed"),
            "tag_smoked": event("sight.ops.smoke.passed"),
            "service_smoked": event("sight.ops.smoke.passed", 1),
            "promoted": event("sight.ops.release.promoted"),
            "slack_promoted": _first(
                entries, lambda e: e.source == "slack" and "promoted" in e.text
            ),
            "smoke_failed": event("sight.ops.smoke.failed"),
            "rolled_back": event("sight.ops.rollback.succeeded"),
            "slack_rolled_back": _first(
                entries, lambda e: e.source == "slack" and "Rollback succeeded" in e.text
            ),
        }
        failed = [e for e in entries if e.event_type == "sight.ops.smoke.failed"]
        received = [
            e
            for e in entries
            if e.source == "function"
            and (e.fields.get("logging.googleapis.com/labels") or {}).get("consumer") == "rollback"
            and failed
            and e.fields.get("event_id") == failed[0].attributes.get("id")
        ]
        if received:
            took = timedelta(milliseconds=float(received[0].fields.get("duration_ms") or 0))
            at["rollback_received"] = received[0].at - took
        decisions = self.h.rows(
            "SELECT created_at FROM ops.rollback_decisions WHERE service = :s"
            " ORDER BY created_at LIMIT 1",
            s=self.service,
        )
        if decisions:
            at["decided"] = decisions[0]["created_at"]
            updated = self.h.service(self.service).get("updateTime")
            if updated and self.h.traffic(self.service) == {self.last_good: 100}:
                at["restored"] = datetime.fromisoformat(str(updated).replace("Z", "+00:00"))
        origin = at["build"] or t0
        return {k: round((v - origin).total_seconds(), 4) for k, v in at.items() if v}

    def facts(self) -> tuple[Facts, list[Row]]:
        entries = self.entries()
        actions = self.actions()
        topics = [e for e in entries if e.source == "topic"]
        distinct: dict[str, set[str]] = {}
        order: list[str] = []
        for e in topics:
            kind = e.event_type or _kind(e)
            key = e.attributes.get("id") or e.attributes.get("buildId") or e.text
            if key not in distinct.setdefault(kind, set()):
                order.append(kind)
            distinct[kind].add(key)
        outcomes = Counter(
            f"{labels.get('consumer')}:{labels.get('outcome')}"
            for e in entries
            if e.source == "function"
            for labels in [e.fields.get("logging.googleapis.com/labels") or {}]
        )
        promoted = [e for e in topics if e.event_type == "sight.ops.release.promoted"]
        phases = {}
        new_revision = None
        for e in promoted[:1]:
            body = e.json_data() or {}
            phases = {str(k): float(v) for k, v in (body.get("phases") or {}).items()}
            new_revision = body.get("revision")
        deployed = [e for e in topics if e.event_type == "sight.ops.release.deployed"]
        if new_revision is None and deployed:
            new_revision = (deployed[0].json_data() or {}).get("revision")
        t0 = entries[0].at if entries else self.started
        rows = [Row(t_s=(e.at - t0).total_seconds(), source=e.source, text=e.text) for e in entries]
        rows += [
            Row(
                t_s=(a.at - t0).total_seconds(),
                source="action",
                text=f"ops.actions {a.kind} {a.status}",
            )
            for a in actions
        ]
        rows.sort(key=lambda r: r.t_s)
        facts_release = self.current.release_id if self.releases else None
        facts = Facts(
            service=self.service,
            release_id=facts_release,
            last_good=self.last_good,
            new_revision=new_revision,
            revisions=self.h.revisions(self.service) if self.last_good else [],
            traffic_before=self.traffic_before,
            traffic_after=self.h.traffic(self.service) if self.last_good else {},
            traffic_moves=sum(1 for e in entries if e.source == "traffic"),
            events={k: len(v) for k, v in distinct.items()},
            messages=dict(Counter(e.event_type or _kind(e) for e in topics)),
            event_order=order,
            outcomes=dict(outcomes),
            actions=actions,
            slack=[e.text for e in entries if e.source == "slack"],
            deploy_exit_codes=[
                int(e.fields["returncode"])
                for e in entries
                if e.source == "deploy" and "returncode" in e.fields
            ],
            phases_ms=phases,
            milestones=self._milestones(entries, t0),
            release_trace_id=release_trace_id(facts_release) if facts_release else None,
            trace_ids=_trace_ids(facts_release, entries, actions, self.h.stack.state_dir / "log"),
            canary=self._canary(),
            health={
                r["revision"]: r["health"]
                for r in self.h.rows(
                    "SELECT revision, health FROM ops.revisions WHERE service = :s",
                    s=self.service,
                )
            },
        )
        return facts, rows

    def _canary(self) -> dict[str, Any] | None:
        rows = self.h.rows(
            "SELECT status, percent, reason, revision, stable_revision FROM ops.canaries"
            " WHERE service = :s ORDER BY started_at DESC LIMIT 1",
            s=self.service,
        )
        return rows[0] if rows else None


def _first(
    entries: Iterable[TimelineEntry], test: Callable[[TimelineEntry], bool]
) -> datetime | None:
    return next((e.at for e in entries if test(e)), None)


def _kind(entry: TimelineEntry) -> str:
    if "buildId" in entry.attributes:
        return f"build.{entry.attributes.get('status', '?')}"
    body = entry.json_data()
    if isinstance(body, dict) and "incident" in body:
        return f"incident.{body['incident'].get('state', '?')}"
    return entry.topic or "?"


def _slack_text(message: dict[str, Any]) -> str:
    body = message.get("body")
    if isinstance(body, dict):
        text = str(body.get("text") or "")
        if text:
            return text
    return json.dumps(body)[:300]


def _trace_ids(
    release: str | None, entries: Iterable[TimelineEntry], actions: Iterable[Action], logs: Path
) -> dict[str, list[str]]:
    """The trace ids of the release's records (docs/release.md): its events (W3C
    ``traceparent`` attribute), its ``ops.actions`` rows (``trace_id``) and every log line
    of the functions labelled with it (``logging.googleapis.com/trace``); ``-`` stands for
    a record of the release that carries none."""
    found: dict[str, set[str]] = {"events": set(), "actions": set(), "logs": set()}
    if release is None:
        return {k: [] for k in found}
    for e in entries:
        if e.source == "topic" and e.attributes.get("release_id") == release:
            parts = e.attributes.get("traceparent", "").split("-")
            found["events"].add(parts[1] if len(parts) == 4 else f"-{e.event_type}")
    found["actions"] = {a.trace_id or "-" for a in actions if a.release_id == release}
    for path in sorted(logs.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if release not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            labels = entry.get("logging.googleapis.com/labels") if isinstance(entry, dict) else None
            if isinstance(labels, dict) and labels.get("release_id") == release:
                trace = str(entry.get("logging.googleapis.com/trace") or "-")
                found["logs"].add(trace.rsplit("/", 1)[-1])
    return {k: sorted(v) for k, v in found.items()}


Expect = Callable[[Facts], list[tuple[str, bool, str]]]

"""Dead letters you can act on: list, show and replay the messages kept in
``ops.rejected_events`` and those waiting on the dead-letter hold subscriptions
(docs/runbooks/rejected-and-dead-lettered-messages.md).

A replay republishes the original bytes and attributes to the original topic, records one
``ops.actions`` row (kind ``dlq_replay``), then marks the source: a rejected row gets a
replay record in its ``attributes`` under the reserved key :data:`ORIGIN_KEY`, a dead letter
is acknowledged on its hold subscription. Reading a hold subscription never loses a message:
what is pulled is leased, and every lease not acknowledged after a replay is released
(ack deadline 0) so the message is delivered again.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sqlalchemy import text
from sqlalchemy.engine import Connection

from shared.db import transaction

if TYPE_CHECKING:
    from shared.runtime import Deps
    from shared.settings import Settings

#: Reserved key in ``ops.rejected_events.attributes``: an object (real Pub/Sub attribute
#: values are always strings) with the topic and subscription the message came from and
#: the replays made of it. Never republished.
ORIGIN_KEY = "_sightops"
#: Attributes Pub/Sub adds when it forwards a message to a dead-letter topic
#: (CloudPubSubDeadLetterSourceSubscription, ...DeliveryCount, ...TopicPublishTime, ...).
DEAD_LETTER_ATTRIBUTE_PREFIX = "CloudPubSubDeadLetterSource"
ACTION_KIND = "dlq_replay"
#: What ``shared.runtime._rejected`` appends to the reason when the payload was cut.
_CAPPED_MARKER = "[payload capped:"

Source = Literal["rejected", "dead-letter"]
TopicFrom = Literal["stored", "derived", "hold subscription", "given", "unknown"]
TopicGuess = Callable[[bytes, Mapping[str, str]], str | None]


class DlqError(Exception):
    """One clear line for the operator (unknown id, already replayed, unreachable topic)."""


def with_origin(
    attributes: Mapping[str, str], topic: str | None, subscription: str | None
) -> dict[str, Any]:
    """The attributes to keep with a rejected message: the message's own, plus where it came
    from under :data:`ORIGIN_KEY` when the topic is known, so it can be replayed there."""
    kept: dict[str, Any] = dict(attributes)
    if topic and ORIGIN_KEY not in kept:
        kept[ORIGIN_KEY] = {"topic": topic, "subscription": subscription}
    return kept


@dataclass(frozen=True)
class Hold:
    """A dead-letter hold subscription: where ``consumer``'s dead letters from ``topic`` wait."""

    consumer: str
    topic: str
    subscription: str  # short name, as terraform/pubsub.tf names it

    @property
    def short_id(self) -> str:
        return self.subscription.removesuffix("--dead-letter")


@dataclass(frozen=True)
class DeadLetter:
    """One message you can act on, from either source, with its original bytes and attributes."""

    id: str  # "42" (a rejected row) or "<function>--<topic>/<message id>" (a dead letter)
    source: Source
    consumer: str
    topic: str | None
    topic_from: TopicFrom
    received_at: datetime | None
    event_id: str | None
    event_type: str | None
    reason: str
    payload: bytes
    attributes: dict[str, str]
    dead_letter_attributes: dict[str, str] = field(default_factory=dict)
    replays: tuple[dict[str, Any], ...] = ()

    @property
    def replayed(self) -> bool:
        return bool(self.replays)

    @property
    def capped(self) -> bool:
        """Only the head of the payload was kept: replaying it would publish a cut message."""
        return self.source == "rejected" and _CAPPED_MARKER in self.reason

    @property
    def status(self) -> str:
        if self.source == "dead-letter":
            return "waiting"
        return "replayed" if self.replayed else "kept"

    def summary(self) -> dict[str, Any]:
        """JSON-able, without the payload (``show`` has it)."""
        return {
            "id": self.id,
            "source": self.source,
            "consumer": self.consumer,
            "topic": self.topic,
            "topic_from": self.topic_from,
            "received_at": self.received_at.isoformat() if self.received_at else None,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "reason": self.reason,
            "status": self.status,
            "payload_bytes": len(self.payload),
            "attributes": self.attributes,
            "dead_letter_attributes": self.dead_letter_attributes,
            "replays": list(self.replays),
        }


def payload_text(payload: bytes) -> tuple[str, str]:
    """``(format, text)``: pretty JSON, else UTF-8 text, else base64 (bytes are not text)."""
    try:
        decoded = payload.decode("utf-8")
    except UnicodeDecodeError:
        return "base64", base64.b64encode(payload).decode()
    try:
        return "json", json.dumps(json.loads(decoded), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return "text", decoded


# --------------------------------------------------------------------------- rejected rows


_REJECTED_COLUMNS = (
    "SELECT id, consumer, event_id, event_type, reason, payload, attributes, received_at"
    " FROM ops.rejected_events"
)


def rejected_letters(
    conn: Connection,
    *,
    consumer: str | None = None,
    since: datetime | None = None,
    limit: int = 200,
    topics_of: Mapping[str, Sequence[str]],
    guess: TopicGuess | None = None,
) -> list[DeadLetter]:
    """The newest rejected messages first."""
    where: list[str] = []
    params: dict[str, Any] = {"n": limit}
    if consumer:
        where.append("consumer = :c")
        params["c"] = consumer
    if since:
        where.append("received_at >= :s")
        params["s"] = since
    sql = _REJECTED_COLUMNS + (f" WHERE {' AND '.join(where)}" if where else "")
    rows = conn.execute(text(sql + " ORDER BY received_at DESC, id DESC LIMIT :n"), params)
    return [_rejected_letter(row, topics_of, guess) for row in rows]


def rejected_letter(
    conn: Connection,
    row_id: str,
    *,
    topics_of: Mapping[str, Sequence[str]],
    guess: TopicGuess | None = None,
    for_update: bool = False,
) -> DeadLetter:
    if not row_id.isdigit():
        raise DlqError(f"no message {row_id!r}: ids are numbers (rejected) or FUNCTION--TOPIC/N")
    sql = _REJECTED_COLUMNS + " WHERE id = :id" + (" FOR UPDATE" if for_update else "")
    row = conn.execute(text(sql), {"id": int(row_id)}).one_or_none()
    if row is None:
        raise DlqError(f"no rejected message with id {row_id}")
    return _rejected_letter(row, topics_of, guess)


def _rejected_letter(
    row: Any, topics_of: Mapping[str, Sequence[str]], guess: TopicGuess | None
) -> DeadLetter:
    stored: dict[str, Any] = dict(row.attributes or {})
    origin = stored.pop(ORIGIN_KEY, None) if isinstance(stored.get(ORIGIN_KEY), dict) else None
    attributes = {str(k): str(v) for k, v in stored.items()}
    payload = bytes(row.payload) if row.payload is not None else b""
    topic: str | None = (origin or {}).get("topic")
    topic_from: TopicFrom = "stored" if topic else "unknown"
    if not topic and origin is None and not _is_delivery(payload):
        # kept before the topic was stored: derive it
        topic = derive_topic(row.consumer, payload, attributes, topics_of, guess)
        topic_from = "derived" if topic else "unknown"
    return DeadLetter(
        id=str(row.id),
        source="rejected",
        consumer=row.consumer,
        topic=topic,
        topic_from=topic_from,
        received_at=row.received_at,
        event_id=row.event_id,
        event_type=row.event_type,
        reason=row.reason,
        payload=payload,
        attributes=attributes,
        replays=tuple((origin or {}).get("replays") or ()),
    )


def _is_delivery(payload: bytes) -> bool:
    """A whole push delivery, kept because its envelope could not be read: replaying it
    would publish the envelope, not the message (the runbook says what to do instead)."""
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    return isinstance(body, dict) and "message" in body and "subscription" in body


def derive_topic(
    consumer: str,
    payload: bytes,
    attributes: Mapping[str, str],
    topics_of: Mapping[str, Sequence[str]],
    guess: TopicGuess | None,
) -> str | None:
    """The consumer's only topic, or the guessed one when the consumer reads it."""
    topics = tuple(topics_of.get(consumer, ()))
    if len(topics) == 1:
        return topics[0]
    guessed = guess(payload, attributes) if guess else None
    return guessed if guessed in topics else None


# --------------------------------------------------------------------------- hold subscriptions


class Subscriber(Protocol):
    """The parts of ``pubsub_v1.SubscriberClient`` the holds use."""

    def pull(self, request: Any = ..., **kwargs: Any) -> Any: ...
    def acknowledge(self, request: Any = ..., **kwargs: Any) -> Any: ...
    def modify_ack_deadline(self, request: Any = ..., **kwargs: Any) -> Any: ...


def subscriber_for(settings: Settings) -> Subscriber:
    """A subscriber client for the emulator or production (same rule as the publisher)."""
    if settings.pubsub_emulator_host and settings.environment != "production":
        os.environ["PUBSUB_EMULATOR_HOST"] = settings.pubsub_emulator_host
    from google.cloud import pubsub_v1

    client: Subscriber = pubsub_v1.SubscriberClient()
    return client


@dataclass
class _Lease:
    path: str
    ack_id: str


class DeadLetterHolds:
    """The dead letters waiting on hold subscriptions, read without losing any.

    Use as a context manager: everything :meth:`read` pulls is leased until :meth:`ack`
    (after a replay) or the end of the block, which releases the rest (ack deadline 0) so
    Pub/Sub delivers them again.
    """

    def __init__(
        self,
        settings: Settings,
        holds: Iterable[Hold],
        subscriber: Subscriber | None = None,
        *,
        timeout_s: float = 10.0,
        max_messages: int = 1000,
    ) -> None:
        self._project = settings.gcp_project
        # The emulator answers an empty pull at once only when asked to; production's
        # return_immediately may answer empty although messages wait, so it long-polls.
        self._immediate = bool(settings.pubsub_emulator_host) and (
            settings.environment != "production"
        )
        self._holds = tuple(holds)
        self._subscriber = subscriber or subscriber_for(settings)
        self._timeout_s = timeout_s
        self._max = max_messages
        self._leases: dict[str, _Lease] = {}

    def __enter__(self) -> DeadLetterHolds:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def path(self, hold: Hold) -> str:
        return f"projects/{self._project}/subscriptions/{hold.subscription}"

    def read(self, consumer: str | None = None) -> list[DeadLetter]:
        """Every dead letter waiting (of ``consumer``), leased; holds that do not exist are
        skipped (a function deployed without them has no dead letters to show)."""
        from google.api_core.exceptions import NotFound

        letters: list[DeadLetter] = []
        for hold in self._holds:
            if consumer and hold.consumer != consumer:
                continue
            try:
                letters += self._read(hold)
            except NotFound:
                continue
        return letters

    def _read(self, hold: Hold) -> list[DeadLetter]:
        from google.api_core.exceptions import DeadlineExceeded

        path = self.path(hold)
        letters: list[DeadLetter] = []
        while len(letters) < self._max:
            try:
                with warnings.catch_warnings():  # deprecated, but the emulator needs it
                    warnings.filterwarnings("ignore", "The return_immediately", DeprecationWarning)
                    response = self._subscriber.pull(
                        request={
                            "subscription": path,
                            "max_messages": min(100, self._max - len(letters)),
                            "return_immediately": self._immediate,
                        },
                        timeout=self._timeout_s,
                        retry=None,
                    )
            except DeadlineExceeded:  # a long poll that found nothing
                break
            if not response.received_messages:
                break
            for received in response.received_messages:
                letter = _held_letter(hold, received.message)
                self._leases[letter.id] = _Lease(path, received.ack_id)
                letters.append(letter)
        return letters

    def find(self, letter_ids: Iterable[str], wait_s: float = 5.0) -> dict[str, DeadLetter]:
        """Those of ``letter_ids`` that are waiting, leased. A message just given back by
        another read can take a moment to be delivered again: keep pulling a little."""
        wanted = set(letter_ids)
        found: dict[str, DeadLetter] = {}
        deadline = time.monotonic() + wait_s
        while True:
            found.update({letter.id: letter for letter in self.read() if letter.id in wanted})
            if wanted <= found.keys() or time.monotonic() >= deadline:
                return found
            time.sleep(0.2)

    def ack(self, letter_id: str) -> None:
        """The dead letter was replayed: remove it from its hold subscription."""
        lease = self._leases.pop(letter_id)
        self._subscriber.acknowledge(
            request={"subscription": lease.path, "ack_ids": [lease.ack_id]},
            timeout=self._timeout_s,
        )

    def release(self) -> None:
        """Give back every lease not acknowledged: Pub/Sub delivers those messages again."""
        by_path: dict[str, list[str]] = {}
        for lease in self._leases.values():
            by_path.setdefault(lease.path, []).append(lease.ack_id)
        self._leases.clear()
        for path, ack_ids in by_path.items():
            self._subscriber.modify_ack_deadline(
                request={"subscription": path, "ack_ids": ack_ids, "ack_deadline_seconds": 0},
                timeout=self._timeout_s,
            )


def _held_letter(hold: Hold, message: Any) -> DeadLetter:
    every = {str(k): str(v) for k, v in message.attributes.items()}
    added = {k: v for k, v in every.items() if k.startswith(DEAD_LETTER_ATTRIBUTE_PREFIX)}
    original = {k: v for k, v in every.items() if k not in added}
    attempts = added.get(f"{DEAD_LETTER_ATTRIBUTE_PREFIX}DeliveryCount", "?")
    published = message.publish_time
    return DeadLetter(
        id=f"{hold.short_id}/{message.message_id}",
        source="dead-letter",
        consumer=hold.consumer,
        topic=hold.topic,
        topic_from="hold subscription",
        received_at=datetime.fromtimestamp(published.timestamp(), UTC) if published else None,
        event_id=original.get("id") or None,
        event_type=original.get("type") or None,
        reason=f"dead-lettered after {attempts} delivery attempts (see the consumer's retry logs)",
        payload=bytes(message.data),
        attributes=original,
        dead_letter_attributes=added,
    )


def is_dead_letter_id(letter_id: str) -> bool:
    return "/" in letter_id


# --------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class Replay:
    """What one replay did."""

    letter: DeadLetter
    topic: str
    message_id: str
    action_id: int


def check(letter: DeadLetter, *, topic: str | None, force: bool) -> str:
    """The topic ``letter`` would be replayed to, or why it cannot be (a :class:`DlqError`)."""
    if letter.capped:
        raise DlqError(
            f"{letter.id}: only the head of its payload was kept; a replay would publish a"
            " cut message (republish the producer's original instead)"
        )
    if letter.replayed and not force:
        last = letter.replays[-1]
        raise DlqError(
            f"{letter.id} was already replayed at {last.get('at')} by {last.get('actor')};"
            " pass --force to replay it again"
        )
    target = topic or letter.topic
    if not target:
        raise DlqError(f"{letter.id}: its original topic is not known; pass --topic")
    return target


def replay_rejected(
    deps: Deps,
    row_id: str,
    *,
    actor: str,
    topics_of: Mapping[str, Sequence[str]],
    guess: TopicGuess | None = None,
    topic: str | None = None,
    force: bool = False,
) -> Replay:
    """Republish a rejected row (locked while it is replayed, so two operators cannot both
    replay it), record the action and mark the row replayed, in one transaction."""
    with transaction(deps.engine) as conn:
        letter = rejected_letter(conn, row_id, topics_of=topics_of, guess=guess, for_update=True)
        target = check(letter, topic=topic, force=force)
        message_id = _publish(deps, target, letter)
        action_id = _record(conn, deps, letter, target, message_id, actor)
        stored = dict(conn.execute(text(_ATTRIBUTES_OF), {"id": int(row_id)}).scalar_one())
        origin = dict(stored.get(ORIGIN_KEY) or {})
        origin["replays"] = [
            *(origin.get("replays") or []),
            {
                "at": deps.clock().isoformat(),
                "actor": actor,
                "topic": target,
                "message_id": message_id,
                "action_id": action_id,
            },
        ]
        stored[ORIGIN_KEY] = origin
        conn.execute(
            text("UPDATE ops.rejected_events SET attributes = CAST(:a AS jsonb) WHERE id = :id"),
            {"a": json.dumps(stored), "id": int(row_id)},
        )
    return Replay(letter, target, message_id, action_id)


_ATTRIBUTES_OF = "SELECT attributes FROM ops.rejected_events WHERE id = :id"


def replay_dead_letter(
    deps: Deps, holds: DeadLetterHolds, letter: DeadLetter, *, actor: str, topic: str | None = None
) -> Replay:
    """Republish a leased dead letter, record the action, and only then acknowledge it: if
    anything fails before, it stays on its hold subscription."""
    target = check(letter, topic=topic, force=False)
    with transaction(deps.engine) as conn:
        conn.execute(text("SELECT 1"))  # the record must be possible before we publish
        message_id = _publish(deps, target, letter)
        action_id = _record(conn, deps, letter, target, message_id, actor)
    holds.ack(letter.id)
    return Replay(letter, target, message_id, action_id)


def _publish(deps: Deps, topic: str, letter: DeadLetter) -> str:
    from google.api_core.exceptions import GoogleAPICallError

    from shared.errors import TransientError

    try:
        return deps.publisher.publish(topic, letter.payload, letter.attributes)
    except (GoogleAPICallError, TransientError) as exc:
        raise DlqError(
            f"{letter.id}: publish to {topic} failed ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc


def _record(
    conn: Connection, deps: Deps, letter: DeadLetter, topic: str, message_id: str, actor: str
) -> int:
    from shared.runtime import write_action

    detail = {
        "id": letter.id,
        "source": letter.source,
        "consumer": letter.consumer,
        "topic": topic,
        "message_id": message_id,
        "reason": letter.reason,
        "replay_number": len(letter.replays) + 1,
    }
    row = write_action(
        conn,
        kind=ACTION_KIND,
        status="succeeded",
        now=deps.clock(),
        trigger_event_id=letter.event_id,
        actor=actor,
        detail=detail,
    )
    assert row is not None  # no dedupe key: always inserted
    return row


def _first_line(exc: BaseException) -> str:
    from shared.log import redact

    lines = str(exc).strip().splitlines()
    return redact(lines[0] if lines else "")[:200]


# --------------------------------------------------------------------------- --since

_DURATION = re.compile(r"^(?P<n>\d+)(?P<unit>[smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str, now: datetime) -> datetime:
    """``30m``, ``6h``, ``2d`` ago, or an ISO date/time (UTC unless it says otherwise)."""
    match = _DURATION.match(value.strip())
    if match:
        return now - timedelta(**{_UNITS[match["unit"]]: int(match["n"])})
    try:
        stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DlqError(
            f"--since {value!r}: give a duration (30m, 6h, 2d) or an ISO date/time"
        ) from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)

"""A small Pub/Sub-faithful delivery driver for the reliability proofs.

Each message is pushed into a function through its functions-framework test client, in
the raw push form Pub/Sub uses (``/projects/P/topics/T``, ``deliveryAttempt`` set). A 2xx
answer acknowledges it; anything else means Pub/Sub redelivers it later with backoff:
here, at a later *tick* of the stream, at most ``max_attempts`` times (5, like every
subscription's dead-letter policy). After the last failed attempt the message counts as
dead-lettered, and the runtime must have logged why for each attempt.

HTTP entry points (kpi, alert_intake) go through the same loop: their caller (the
dashboard, Cloud Monitoring) retries a non-2xx answer the same way.

Outcomes come from the runtime's one log line per delivery (labels ``outcome``), found
by the message's id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.log import LABELS_KEY

#: Like the subscriptions' dead-letter policy (terraform/pubsub.tf).
MAX_ATTEMPTS = 5


class RuntimeLog(logging.Handler):
    """Every runtime delivery line and every WARNING+ record while a proof runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def deliveries(self, message_id: str) -> list[dict[str, Any]]:
        """The runtime's delivery lines for one Pub/Sub message id, oldest first."""
        out = []
        for record in self.records:
            if record.name != "sightops.runtime":
                continue
            if record.__dict__.get("message_id") != message_id:
                continue
            labels = record.__dict__.get(LABELS_KEY) or {}
            out.append(
                {
                    "outcome": labels.get("outcome"),
                    "reason": record.__dict__.get("reason"),
                    "level": record.levelname,
                }
            )
        return out


@dataclass
class Message:
    """One message of a stream and what became of it."""

    key: str  # the test's name for it (a build id, a service, a project id, ...)
    send: Callable[[int], Any]  # attempt number -> response (status_code)
    message_id: str | None = None  # Pub/Sub message id, for the runtime log lines
    arrives: int = 0  # tick of its first delivery
    attempts: int = 0
    statuses: list[int] = field(default_factory=list)
    outcome: str = "pending"  # acked / dead-lettered
    runtime: list[dict[str, Any]] = field(default_factory=list)

    @property
    def acked(self) -> bool:
        return self.outcome == "acked"

    @property
    def final_runtime_outcome(self) -> str | None:
        return self.runtime[-1]["outcome"] if self.runtime else None


@dataclass
class Stream:
    """Deliver ``messages`` one per tick; fault on at ``fault_at``, off at ``restore_at``.

    Failed deliveries come back at the next tick (Pub/Sub's backoff, compressed), before
    that tick's new message, until acknowledged or out of attempts.
    """

    messages: list[Message]
    fault_on: Callable[[], None]
    fault_off: Callable[[], None]
    fault_at: int
    restore_at: int
    max_attempts: int = MAX_ATTEMPTS
    backoff_s: float = 0.05
    log: RuntimeLog | None = None

    def run(self) -> list[Message]:
        for i, message in enumerate(self.messages):
            message.arrives = i
        pending: list[Message] = []
        tick = 0
        faulted = False
        try:
            while tick < len(self.messages) or pending:
                if tick == self.fault_at:
                    self.fault_on()
                    faulted = True
                if tick == self.restore_at and faulted:
                    self.fault_off()
                    faulted = False
                due = list(pending)
                if tick < len(self.messages):
                    due.append(self.messages[tick])
                pending = []
                for message in due:
                    message.attempts += 1
                    status = message.send(message.attempts).status_code
                    message.statuses.append(status)
                    if 200 <= status < 300:
                        message.outcome = "acked"
                    elif message.attempts >= self.max_attempts:
                        message.outcome = "dead-lettered"
                    else:
                        pending.append(message)
                tick += 1
                if pending:
                    time.sleep(self.backoff_s)
        finally:
            if faulted:
                self.fault_off()
        if self.log is not None:
            for message in self.messages:
                if message.message_id:
                    message.runtime = self.log.deliveries(message.message_id)
        return self.messages

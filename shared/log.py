"""Structured JSON logging for Cloud Logging, with secrets redacted at the last step.

Every line goes through :class:`Redactor` in the formatter, so no code path can log a
secret by accident: values resolved from Secret Manager are registered as they are
resolved, and URL passwords / Slack webhook paths are masked by pattern.

Every line written during a delivery carries that delivery's trace (Cloud Logging's
``trace``, ``spanId`` and ``trace_sampled`` fields) and its ``release_id`` label, read from
the context the runtime sets (``shared.trace.current``): a handler's own log calls need
not pass them (docs/release.md).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

LABELS_KEY = "logging.googleapis.com/labels"
TRACE_KEY = "logging.googleapis.com/trace"
SPAN_KEY = "logging.googleapis.com/spanId"
SAMPLED_KEY = "logging.googleapis.com/trace_sampled"
RELEASE_LABEL = "release_id"
MASK = "[REDACTED]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://user:[REDACTED]@host
    (re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+(?=@)"), rf"\g<pre>{MASK}"),
    # Slack incoming-webhook paths carry the credential itself.
    (re.compile(r"(?P<pre>/services/)[A-Za-z0-9]+/[A-Za-z0-9]+/[A-Za-z0-9]+"), rf"\g<pre>{MASK}"),
    (
        re.compile(
            r"(?i)(?P<pre>(password|passwd|secret|token)[\"']?\s*[=:]\s*[\"']?)[^\s\"',&}]+"
        ),
        rf"\g<pre>{MASK}",
    ),
    (
        re.compile(
            r"(?i)(?P<pre>authorization[\"']?\s*[=:]\s*[\"']?(basic|bearer)\s+)[A-Za-z0-9+/=._\-]+"
        ),
        rf"\g<pre>{MASK}",
    ),
)


def mrkdwn_escape(value: str) -> str:
    """Slack's escaping of untrusted text in mrkdwn and ``text``: ``&``, ``<``, ``>``."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Redactor:
    """Masks known secret values and secret-shaped substrings in text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    def add(self, *values: str | None) -> None:
        """Register values that must never appear in output (short ones are ignored).

        Each value is registered with its JSON-escaped forms too: a secret holding ``"``,
        ``\\`` or a control character appears escaped in an encoded log line or in a JSON
        string quoted inside a message, and must be masked there as well. Likewise its
        Slack mrkdwn-escaped form (``&amp;``, ``&lt;``, ``&gt;``): notify escapes event
        text before it masks secrets (docs/notify.md).
        """
        with self._lock:
            known = set(self._secrets)
            for value in values:
                if value and len(value) >= 4:
                    known.add(value)
                    known.add(json.dumps(value, ensure_ascii=False)[1:-1])
                    known.add(json.dumps(value)[1:-1])
                    known.add(mrkdwn_escape(value))
            # Longest first so a secret containing another is masked whole.
            self._secrets = tuple(sorted(known, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        return text


#: Process-wide redactor: logging is process-wide too, so this is the one global.
REDACTOR = Redactor()

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line with Cloud Logging's special fields."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, record.levelname),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        add_trace(entry)
        # Redact each value before encoding (a secret is matched as written, whatever JSON
        # escaping would make of it), and the encoded line once more as the last step.
        line = json.dumps(self._redact_value(entry), ensure_ascii=False)
        return self._redactor.redact(line)

    def _redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._redactor.redact(value)
        if isinstance(value, bool | int | float) or value is None:
            return value
        if isinstance(value, Mapping):
            return {self._redactor.redact(str(k)): self._redact_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact_value(v) for v in value]
        return self._redactor.redact(str(value))  # what json.dumps(default=str) would write


class JsonLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the stream given, else to the process's real stdout (or stderr), never
    to a replaced ``sys.stdout`` (a CLI's captured output, a test's closed capture), and
    never lets logging's own error report print a record's raw arguments."""

    def __init__(self, stream: Any = None, *, to_stderr: bool = False) -> None:
        super().__init__(stream)
        self._fixed_stream = stream
        self._to_stderr = to_stderr

    def emit(self, record: logging.LogRecord) -> None:
        real = sys.__stderr__ if self._to_stderr else sys.__stdout__
        self.stream = self._fixed_stream or real or sys.stdout
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        # logging.Handler.handleError prints the message and its arguments unformatted
        # (unredacted) to stderr; report the failure without them.
        exc = sys.exc_info()[1]
        if logging.raiseExceptions and sys.stderr:
            sys.stderr.write(
                f"sightops logging error: {type(exc).__name__} while writing a "
                f"{record.levelname} record from {record.name}\n"
            )


def configure_logging(level: str = "INFO", stream: Any = None, *, to_stderr: bool = False) -> None:
    """Install the JSON formatter on the root logger once (idempotent). Functions log to
    stdout; a CLI logs to stderr so its own output stays clean."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler.formatter, JsonFormatter):
            root.setLevel(level.upper())
            return
    handler = JsonLineHandler(stream, to_stderr=to_stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())


def add_trace(entry: dict[str, Any]) -> None:
    """The current delivery's trace fields and ``release_id`` label, where the line does
    not set its own (the formatter; the runtime's outcome lines, whose ``extra`` says it)."""
    from shared.trace import current

    trace = current()
    if trace is None:
        return
    for key, value in trace.log_fields().items():
        entry.setdefault(key, value)
    if trace.release_id:
        found = entry.get(LABELS_KEY)
        line_labels = dict(found) if isinstance(found, Mapping) else {}
        line_labels.setdefault(RELEASE_LABEL, trace.release_id)
        entry[LABELS_KEY] = line_labels


def labels(**values: object) -> dict[str, Any]:
    """``extra=`` for a log call: Cloud Logging labels must be strings."""
    return {LABELS_KEY: {k: str(v) for k, v in values.items() if v is not None}}


def redact(text: str) -> str:
    return REDACTOR.redact(text)


def redact_mapping(values: Mapping[str, Any], keys: Iterable[str] = ()) -> dict[str, Any]:
    """Copy of a mapping with the named keys masked and every string value redacted."""
    masked = set(keys)
    return {
        k: MASK if k in masked else (REDACTOR.redact(v) if isinstance(v, str) else v)
        for k, v in values.items()
    }

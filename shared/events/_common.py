"""Plumbing shared by every event parser: JSON decoding and human error reasons.

Everything that turns bytes into a model goes through here so that every
``InvalidEventError`` reads the same way (``<what>: <which field>: <what was wrong>``)
and never carries more than a short, truncated piece of the payload into logs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, ValidationError

from shared.errors import InvalidEventError

#: Longest piece of a payload or value quoted back in an error reason.
MAX_QUOTE = 80
#: Longest reason we ever build; keeps log lines and dead-letter notes bounded.
MAX_REASON = 400

ModelT = TypeVar("ModelT", bound=BaseModel)


class EventModel(BaseModel):
    """Base for every wire model: lenient on input, immutable once parsed.

    ``extra="ignore"`` because Google and our own producers add fields over time and a
    new field must never turn into an undeliverable message.
    """

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        coerce_numbers_to_str=True,
    )


def _to_utc(value: datetime) -> datetime:
    """Naive times are taken as UTC (Google only ever sends UTC); aware ones converted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is past year 9999 in UTC
        raise ValueError("time is out of range once converted to UTC") from None


#: Google's times: always aware UTC after validation (a naive input is taken as UTC).
UtcDatetime = Annotated[datetime, AfterValidator(_to_utc)]
#: Our own times: a naive input is rejected (it is a producer bug), then converted to UTC.
AwareUtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


#: NUL (PostgreSQL refuses it in ``text`` and ``jsonb``: SQLSTATE 22021/22P05) and lone
#: surrogates (JSON can carry ``"\\ud800"``; no UTF-8 encoder accepts it). A surrogate *pair*
#: in JSON decodes to one character, so any surrogate left in a ``str`` is a lone one.
_POISON = re.compile(r"[\x00\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why ``value`` can never be stored or sent as text (NUL, a lone surrogate); None if
    it can."""
    found = _POISON.search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "contains NUL (U+0000)"
    return f"contains a lone surrogate (U+{ord(char):04X})"


def _identifier(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(f"{problem}; not allowed in a name or label")
    return value


def clean_text(value: str) -> str:
    """Free text made storable and sendable: NUL and lone surrogates become U+FFFD."""
    return _POISON.sub("\ufffd", value)


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    return value


#: A name or label sight-ops decides on or stores as a key (a service, a revision, a label
#: key or value): NUL or a lone surrogate makes the message invalid, since nothing can be
#: decided on a name that cannot be stored or sent (docs/architecture.md).
Identifier = Annotated[str, AfterValidator(_identifier)]
#: Labels decided on: every key and value an :data:`Identifier`.
IdentifierLabels = dict[Identifier, Identifier]
#: Text only shown to humans (summaries, documentation): cleaned with :func:`clean_text`
#: rather than refused, so an odd character never costs the alert.
FreeText = Annotated[str, AfterValidator(clean_text)]
#: Labels only shown to humans: keys and values cleaned with :func:`clean_text`.
FreeLabels = dict[FreeText, FreeText]
#: Free-form JSON objects only shown or stored (an alert's condition, metadata): every
#: string in them cleaned with :func:`clean_text`.
FreeJson = Annotated[dict[str, Any], AfterValidator(_clean_json)]


def format_time(value: datetime) -> str:
    """RFC3339 with ``Z``, microseconds only when non-zero (matches pydantic's JSON)."""
    utc = _to_utc(value)
    spec = "microseconds" if utc.microsecond else "seconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def quote(value: object, limit: int = MAX_QUOTE) -> str:
    """``repr`` of a value, cut to ``limit`` characters so payloads never flood logs."""
    text = repr(bytes(value[: limit + 1]) if isinstance(value, bytes | bytearray) else value)
    if len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def _reason(what: str, detail: str) -> str:
    reason = f"{what}: {detail}"
    if len(reason) > MAX_REASON:
        return reason[: MAX_REASON - 1] + "…"
    return reason


def invalid(what: str, detail: str) -> InvalidEventError:
    """Build (not raise) an ``InvalidEventError`` with a bounded reason."""
    return InvalidEventError(_reason(what, detail))


def load_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Decode message data that must be a JSON object."""
    if not data or not data.strip():
        raise invalid(what, "data is empty; expected a JSON object")
    try:
        decoded = json.loads(data)
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError and UnicodeDecodeError are both ValueErrors.
        cause = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise invalid(
            what, f"data is not valid JSON ({cause}); data starts with {quote(data, 40)}"
        ) from None
    if not isinstance(decoded, dict):
        raise invalid(what, f"data must be a JSON object, got {json_type(decoded)}")
    if _deeper_than(decoded, MAX_DEPTH):
        raise invalid(what, f"data is nested deeper than {MAX_DEPTH} levels")
    return decoded


#: No payload we read nests this deep; deeper ones would only exhaust the recursion of the
#: validators that walk them (a RecursionError is no reason a reader can act on).
MAX_DEPTH = 64


def _deeper_than(value: Any, limit: int) -> bool:
    """True if ``value`` nests containers more than ``limit`` deep (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error reasons."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def format_loc(loc: tuple[int | str, ...], prefix: str = "") -> str:
    """``('results', 'images', 0, 'digest')`` -> ``results.images[0].digest``."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(message)"


def _message(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    # pydantic prefixes our own ValueErrors; the field name already says where.
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """The first problem of a pydantic error, naming the field, plus where the others are.

    ``field 'createTime': Input should be a valid datetime (got 'yesterday')``
    """
    errors = exc.errors(include_url=False)
    if not errors:  # pragma: no cover - pydantic always reports at least one
        return "failed validation"
    first = errors[0]
    detail = f"field {format_loc(tuple(first['loc']), prefix)!r}: {_message(first)}"
    if first["type"] != "missing" and not isinstance(first.get("input"), dict | list):
        detail += f" (got {quote(first.get('input'), 60)})"
    others = [format_loc(tuple(e["loc"]), prefix) for e in errors[1:]]
    if others:
        shown = ", ".join(repr(loc) for loc in others[:3])
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        detail += f"; also {shown}{more}"
    return detail


def validate(model: type[ModelT], obj: Mapping[str, Any], what: str, prefix: str = "") -> ModelT:
    """Validate a decoded object, turning schema errors into ``InvalidEventError``."""
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise invalid(what, describe_validation_error(exc, prefix)) from None


def drop_empty(value: Any) -> Any:
    """Treat ``""`` and ``null`` like an absent field (proto3 and Monitoring 1.1 do both)."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None and v != ""}
    return value

"""Hypothesis strategies for the fuzz proof: deliveries grown from the golden fixtures.

Every strategy starts from a real payload (tests/fixtures/golden: Cloud Build messages,
Cloud Monitoring incidents 1.2/1.1/test, our ops events, and their ``invalid/`` cousins)
and breaks it at one or more levels:

- the JSON tree: fields dropped, added, given another type; huge strings (>= 100 KB);
  NUL and lone surrogates (written as the JSON escapes ``\\u0000`` and ``\\ud800``);
  int64 values as strings; nesting 1,000 levels and deeper (some that Python's ``json``
  parses, some it cannot);
- the bytes: not UTF-8, truncated, empty, huge, not JSON at all;
- the Pub/Sub attributes: dropped, added, odd values, not strings at all;
- the push envelope: bad base64 in ``message.data``, missing or odd ``messageId``,
  ``publishTime``, ``deliveryAttempt``, ``attributes``; not an object at all;
- the HTTP request: wrong Content-Type, odd CloudEvent ``ce-*`` headers, empty body.

A :class:`Delivery` says what was sent and what the runtime should have seen, so the
test can check the answer, the log and ``ops.rejected_events`` against it.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from tests.helpers import GOLDEN, PROJECT

HUGE = 100_000  # characters: "huge strings (>= 100 KB)"
DEEP = "\u0001DEEP\u0001"  # placeholder replaced by deep nesting after serialisation


# ---------------------------------------------------------------------------- seeds


@dataclass(frozen=True)
class Seed:
    """One golden message: its data (a JSON tree, or raw text) and attributes."""

    name: str
    data: Any
    attributes: dict[str, str]
    raw: str | None = None  # data_text of the invalid fixtures (not JSON)


def _load(path: str) -> list[Seed]:
    seeds = []
    for file in sorted(GOLDEN.glob(path)):
        body = json.loads(file.read_text())
        name = str(file.relative_to(GOLDEN))
        if "data" in body or "data_text" in body:
            seeds.append(
                Seed(
                    name, body.get("data"), dict(body.get("attributes", {})), body.get("data_text")
                )
            )
        else:  # a Cloud Monitoring webhook body; on Pub/Sub it has alert_intake's attributes
            incident = body.get("incident", {})
            attributes = {
                "incident_id": str(incident.get("incident_id", "")),
                "version": str(body.get("version", "")),
                "source": "alert_intake",
            }
            if incident.get("state"):
                attributes["state"] = str(incident["state"]).lower()
            seeds.append(Seed(name, body, attributes))
    return seeds


BUILDS = _load("cloudbuild/*.json") + _load("cloudbuild/invalid/*.json")
INCIDENTS = _load("monitoring/*.json") + _load("monitoring/invalid/*.json")
OPS = _load("ops/*.json") + _load("ops/invalid/*.json")
SMOKE = [s for s in OPS if "smoke" in s.name]
KPI = [s for s in OPS if "kpi" in s.name]
INCIDENT_BODIES = [s for s in INCIDENTS if "invalid" not in s.name]

#: consumer -> the golden messages it is subscribed to (docs/events.md)
CONSUMER_SEEDS: dict[str, list[Seed]] = {
    "migrate": BUILDS,
    "rollback": SMOKE + INCIDENTS + [s for s in OPS if s not in SMOKE],
    "notify": BUILDS + INCIDENTS + OPS,
    "kpi_refresh": KPI + [s for s in OPS if "invalid" in s.name] + BUILDS[:2],
}
CONSUMER_TOPIC = {
    "migrate": "cloud-builds",
    "rollback": "smoke-tests",
    "notify": "ops-events",
    "kpi_refresh": "kpi-refresh",
}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def freshen(seed: Seed) -> tuple[Any, dict[str, str]]:
    """A deep copy of the seed with fresh ids and times, so it is neither a duplicate of
    an earlier example nor stale: the handlers behind the parsers run too."""
    data, attributes = copy.deepcopy(seed.data), dict(seed.attributes)
    if "buildId" in attributes:
        build_id = str(uuid.uuid4())
        attributes["buildId"] = build_id
        if isinstance(data, dict) and "id" in data:
            data["id"] = build_id
    if "type" in attributes:
        if "id" in attributes:
            attributes["id"] = str(uuid.uuid4())
        if "time" in attributes:
            attributes["time"] = _now()
        if isinstance(data, dict):
            for key, value in data.items():
                if key.endswith("_at") and isinstance(value, str):
                    data[key] = _now()
    if isinstance(data, dict) and isinstance(data.get("incident"), dict):
        incident = data["incident"]
        if incident.get("incident_id") and incident.get("incident_id") != "12345":
            incident["incident_id"] = f"0.{uuid.uuid4().hex[:12]}"
            if "incident_id" in attributes:
                attributes["incident_id"] = incident["incident_id"]
        if isinstance(incident.get("started_at"), int):
            incident["started_at"] = int(datetime.now(UTC).timestamp())
    return data, attributes


# ---------------------------------------------------------------------------- values

INT64 = [
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551616",
    "1e400",
    "0x7fffffffffffffff",
    "١٢٣",
]
ODD_TIMES = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59.999999Z",
    "2025-13-45T99:99:99Z",
    "2025-06-02T11:20:15",
    "not a time",
    "",
    "1748861342",
]
weird_text = st.text(st.characters(exclude_categories=()), max_size=40)
special_strings = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\ud800",
        "x\udfffy",
        "\ud83d\ude00",
        "\u202e\u0301",
        "null",
        "true",
        "{}",
        "[]",
        "<script>alert(1)</script>",
        "' OR 1=1 --",
        "%s%n%x",
        "${jndi:ldap://x}",
        "*bold* <!channel> <@U123> `code`",
        "../../etc/passwd",
        "\r\n\t",
        *INT64,
        *ODD_TIMES,
    ]
)
huge_strings = st.sampled_from([HUGE, HUGE + 1, 3 * HUGE]).flatmap(
    lambda n: st.sampled_from(["x" * n, "\x00" * n, "\ud800" * (n // 8), "é" * n])
)
numbers = st.sampled_from(
    [0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**400, 0.5, 1e308]
) | st.floats(allow_nan=True, allow_infinity=True)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    st.integers(),
    weird_text,
    special_strings,
)
deep_marker = st.just(DEEP)
leaf = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(weird_text, scalars, max_size=3),
)
value = st.one_of(
    leaf,
    scalars.map(lambda v: v),
    huge_strings,
    deep_marker,
)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(tree, dict):
        for key, child in tree.items():
            out.extend(_paths(child, (*prefix, key)))
    elif isinstance(tree, list):
        for i, child in enumerate(tree):
            out.extend(_paths(child, (*prefix, i)))
    return out


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        tree = tree[step]
    return tree


def _set(tree: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    parent = _get(tree, path[:-1])
    parent[path[-1]] = new
    return tree


@st.composite
def mutated_tree(draw: st.DrawFn, tree: Any, notes: list[str]) -> Any:
    """``tree`` with one to four mutations at drawn places."""
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(tree)
        path = draw(st.sampled_from(paths))
        target = _get(tree, path)
        ops = ["replace", "add", "int64"]
        if path:
            ops += ["drop", "drop"]
        if isinstance(target, str):
            ops += ["poison", "int64"]
        if isinstance(target, dict | list):
            ops += ["wrap"]
        op = draw(st.sampled_from(ops))
        where = "/".join(str(p) for p in path) or "<root>"
        if op == "drop":
            parent = _get(tree, path[:-1])
            del parent[path[-1]]
            notes.append(f"drop {where}")
        elif op == "replace":
            new = draw(value)
            tree = _set(tree, path, new)
            notes.append(f"set {where}={_short(new)}")
        elif op == "add":
            container = target if isinstance(target, dict | list) else _get(tree, path[:-1])
            new = draw(value)
            if not isinstance(container, dict | list):  # a scalar root: nothing to add to
                tree = new
                notes.append(f"set <root>={_short(new)}")
            elif isinstance(container, dict):
                key = draw(
                    st.one_of(
                        weird_text, special_strings, st.sampled_from(list(container) or ["k"])
                    )
                )
                container[key] = new
                notes.append(f"add {where}[{_short(key)}]={_short(new)}")
            else:
                container.append(new)
                notes.append(f"append {where} {_short(new)}")
        elif op == "int64":
            new = draw(st.sampled_from([*INT64, 2**63 - 1, -(2**63)]))
            tree = _set(tree, path, new)
            notes.append(f"int64 {where}={new!r}")
        elif op == "poison":
            poison = draw(st.sampled_from(["\x00", "\ud800", "\udfff", "\x00\ud800", "\u0000x"]))
            at = draw(st.integers(0, len(target)))
            tree = _set(tree, path, target[:at] + poison + target[at:])
            notes.append(f"poison {where} with {poison!r}")
        else:  # wrap: the container moved one level down, or turned into the other kind
            new = draw(st.sampled_from([[target], {"value": target}, list(target)]))
            tree = _set(tree, path, new)
            notes.append(f"wrap {where}")
    return tree


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} chars)"


def deep(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    if kind == "dict":
        return '{"a":' * depth + "1" + "}" * depth
    return '{"a":[' * (depth // 2) + "null" + "]}" * (depth // 2)


@st.composite
def serialised(draw: st.DrawFn, tree: Any, notes: list[str]) -> bytes:
    """The tree as bytes: usually ASCII JSON (escapes for NUL and surrogates), sometimes
    raw UTF-8 with surrogates passed through (not UTF-8), with deep nesting spliced in."""
    mode = draw(st.sampled_from(["ascii", "ascii", "ascii", "utf8", "surrogatepass"]))
    try:
        if mode == "ascii":
            text = json.dumps(tree, ensure_ascii=True)
            body = text.encode()
        else:
            text = json.dumps(tree, ensure_ascii=False)
            body = text.encode("utf-8", "surrogatepass" if mode == "surrogatepass" else "strict")
    except UnicodeEncodeError:
        body = json.dumps(tree, ensure_ascii=False).encode("utf-8", "surrogatepass")
        mode = "surrogatepass"
    except ValueError:  # out of range float with allow_nan False never; keep ascii
        body = json.dumps(tree).encode()
    if mode != "ascii":
        notes.append(f"encoded {mode}")
    marker = json.dumps(DEEP).encode()
    while marker in body:
        depth = draw(st.sampled_from([999, 1000, 1001, 5000, 100_000]))
        kind = draw(st.sampled_from(["list", "dict", "mixed"]))
        body = body.replace(marker, deep(depth, kind).encode(), 1)
        notes.append(f"deep {kind} nesting {depth}")
    return body


@st.composite
def raw_bytes(draw: st.DrawFn, base: bytes, notes: list[str]) -> bytes:
    """Byte-level damage to an already serialised body."""
    op = draw(
        st.sampled_from(
            ["latin1", "truncate", "garbage", "empty", "bom", "trailing", "huge", "deep", "binary"]
        )
    )
    notes.append(f"bytes {op}")
    if op == "latin1":
        at = draw(st.integers(0, len(base)))
        return (
            base[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]))
            + base[at:]
        )
    if op == "truncate":
        return base[: draw(st.integers(0, max(0, len(base) - 1)))]
    if op == "garbage":
        return draw(
            st.sampled_from(
                [b"not json", b"<html>502</html>", b"null", b"[]", b"123", b'"s"', b"{", b"NaN"]
            )
        )
    if op == "empty":
        return b""
    if op == "bom":
        return b"\xef\xbb\xbf" + base
    if op == "trailing":
        return base + draw(st.sampled_from([b" x", b"\x00", b"}", b"\n{}"]))
    if op == "huge":
        return b'{"pad": "' + b"x" * draw(st.sampled_from([HUGE, 1_100_000])) + b'"}'
    if op == "deep":
        depth = draw(st.sampled_from([999, 1000, 1001, 5000, 100_000]))
        return deep(depth, draw(st.sampled_from(["list", "dict", "mixed"]))).encode()
    return draw(st.binary(min_size=1, max_size=64))


# ---------------------------------------------------------------------------- messages


@dataclass
class Message:
    """A Pub/Sub message as published: data bytes and attributes (may be non-strings:
    the push envelope is JSON, whatever Pub/Sub itself would allow)."""

    data: bytes
    attributes: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@st.composite
def messages(draw: st.DrawFn, seeds: list[Seed]) -> Message:
    seed = draw(st.sampled_from(seeds))
    notes = [f"seed {seed.name}"]
    tree, attributes = freshen(seed)
    if seed.raw is not None:
        data = seed.raw.encode()
    elif draw(st.integers(0, 9)) == 0:
        data = json.dumps(tree).encode()  # the (fresh) golden as is
        notes.append("unchanged")
    else:
        tree = draw(mutated_tree(tree, notes))
        data = draw(serialised(tree, notes))
    if draw(st.integers(0, 5)) == 0:
        data = draw(raw_bytes(data, notes))
    if draw(st.integers(0, 2)) == 0:
        attributes = draw(mutated_attributes(attributes, notes))
    return Message(data, attributes, notes)


attribute_values = st.one_of(
    special_strings,
    weird_text,
    st.sampled_from(ODD_TIMES + INT64),
    st.just("x" * 2000),
    st.just("y" * HUGE),
)
odd_attribute_values = st.one_of(
    st.none(), st.booleans(), numbers, st.lists(st.integers(), max_size=2), st.just({"a": 1})
)


@st.composite
def mutated_attributes(
    draw: st.DrawFn, attributes: dict[str, Any], notes: list[str]
) -> dict[str, Any]:
    attributes = dict(attributes)
    known = [
        "type",
        "id",
        "time",
        "source",
        "buildId",
        "status",
        "incident_id",
        "version",
        "state",
        "schema_version",
        "service",
    ]
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "set", "set", "odd", "add", "clear"]))
        key = (
            draw(st.sampled_from(sorted(attributes) or known))
            if op == "drop"
            else draw(st.one_of(st.sampled_from(known), weird_text))
        )
        if op == "drop" and attributes:
            attributes.pop(key, None)
            notes.append(f"attr drop {key}")
        elif op == "set" or op == "add":
            attributes[key] = draw(attribute_values)
            notes.append(f"attr {key}={_short(attributes[key])}")
        elif op == "odd":
            attributes[key] = draw(odd_attribute_values)
            notes.append(f"attr {key}={_short(attributes[key])} (not a string)")
        elif op == "clear":
            attributes = {}
            notes.append("attr none")
    return attributes


# ---------------------------------------------------------------------------- requests


@dataclass
class Delivery:
    """One HTTP request to a function, and what the runtime should have seen of it."""

    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    notes: list[str]
    #: The envelope is well formed: the runtime must see exactly ``data``/``attributes``.
    envelope_ok: bool = False
    data: bytes | None = None
    attributes: dict[str, str] | None = None
    message_id: str | None = None
    #: the body carries a message (an envelope with a messageId): it must reach the
    #: runtime and be handled or kept, never refused with 4xx by the framework
    carries_message: bool = False

    def describe(self) -> str:
        body = (
            self.body
            if len(self.body) <= 300
            else self.body[:300] + b"...(%d bytes)" % len(self.body)
        )
        headers = {k: (v if len(v) < 120 else v[:100] + "...") for k, v in self.headers.items()}
        return f"{self.method} {self.path[:200]} headers={headers} body={body!r} notes={self.notes}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@st.composite
def envelopes(draw: st.DrawFn, message: Message) -> tuple[Any, bool, str | None, bool]:
    """(envelope JSON tree, envelope_ok, message id, carries_message)."""
    message_id = str(draw(st.integers(10**15, 10**16 - 1)))
    env: dict[str, Any] = {
        "message": {
            "data": _b64(message.data),
            "attributes": message.attributes,
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": _now(),
            "publish_time": _now(),
        },
        "subscription": f"projects/{PROJECT}/subscriptions/fuzz",
    }
    ok = True  # the runtime str()s attribute values that are not strings
    if draw(st.integers(0, 3)) != 0:
        return env, ok, message_id, True
    notes = message.notes
    op = draw(
        st.sampled_from(
            [
                "bad_base64",
                "data_type",
                "no_data",
                "message_id",
                "no_message",
                "message_type",
                "attributes_type",
                "publish_time",
                "delivery_attempt",
                "extra",
                "no_subscription",
                "root_type",
            ]
        )
    )
    msg = env["message"]
    carries = True
    if op == "bad_base64":
        msg["data"] = draw(
            st.sampled_from(
                [
                    "!!!not base64!!!",
                    "abc",
                    "YWJj\n",
                    " YWJj",
                    "YW=Jj",
                    base64.urlsafe_b64encode(b"\xfb\xff\xfe" + message.data).decode(),
                    "\u00e9t\u00e9",
                    "\x00",
                    "\ud800",
                    _b64(message.data)[:-1],
                ]
            )
        )
        notes.append(f"envelope data={msg['data'][:20]!r}")
        ok = False
    elif op == "data_type":
        msg["data"] = draw(st.sampled_from([123, None, True, {"a": 1}, ["YWJj"], 1.5]))
        notes.append(f"envelope data={msg['data']!r}")
        ok = msg["data"] is None or msg["data"] == 0
        if ok:
            message.data = b""
    elif op == "no_data":
        del msg["data"]
        notes.append("envelope without data")
        message.data = b""
    elif op == "message_id":
        new = draw(
            st.sampled_from(
                [None, "", 0, 12345, 2**70, ["1"], {"id": 1}, "\x00", "\ud800", "x" * HUGE, True]
            )
        )
        msg["messageId"] = new
        del msg["message_id"]
        notes.append(f"messageId={_short(new)}")
        ok = isinstance(new, str | int) and not isinstance(new, bool) and bool(new)
        message_id = str(new) if ok else None
        carries = ok
    elif op == "no_message":
        del env["message"]
        env["msg"] = msg
        notes.append("envelope without message")
        ok, carries, message_id = False, False, None
    elif op == "message_type":
        env["message"] = draw(st.sampled_from([[msg], "message", None, 1]))
        notes.append(f"message is {type(env['message']).__name__}")
        ok, carries, message_id = False, False, None
    elif op == "attributes_type":
        msg["attributes"] = draw(st.sampled_from([["a"], "a=b", 1, None, True]))
        notes.append(f"attributes={msg['attributes']!r}")
        ok = msg["attributes"] is None
        if ok:
            message.attributes = {}
    elif op == "publish_time":
        msg["publishTime"] = msg["publish_time"] = draw(
            st.one_of(st.sampled_from(ODD_TIMES), numbers, st.none())
        )
        notes.append(f"publishTime={_short(msg['publishTime'])}")
    elif op == "delivery_attempt":
        env["deliveryAttempt"] = draw(
            st.sampled_from(
                ["\u00b2", "\u0663", "-1", -1, 10**30, "x", None, 1.5, "99999999999999999999"]
            )
        )
        notes.append(f"deliveryAttempt={env['deliveryAttempt']!r}")
    elif op == "extra":
        env[draw(weird_text)] = draw(leaf)
        msg[draw(st.sampled_from(["orderingKey", "extra", "data2", ""]))] = draw(leaf)
        notes.append("extra fields")
    elif op == "no_subscription":
        del env["subscription"]
        notes.append("no subscription")
        carries = False  # Pub/Sub always names it: not a real push
    else:
        env = draw(st.sampled_from([[env], "envelope", 1, None]))
        notes.append(f"envelope is {type(env).__name__}")
        ok, carries, message_id = False, False, None
    return env, ok, message_id, carries


JSON_TYPES = ["application/json", "application/json; charset=utf-8"]
ODD_TYPES = [
    "text/plain",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/cloudevents+json",
    "application/json; charset=latin-1",
    "",
]


@st.composite
def pubsub_deliveries(draw: st.DrawFn, consumer: str, form: str) -> Delivery:
    """A delivery to a Pub/Sub consumer, as a raw push (``push``) or as an Eventarc
    binary-mode CloudEvent (``cloudevent``)."""
    message = draw(messages(CONSUMER_SEEDS[consumer]))
    env, ok, message_id, carries = draw(envelopes(message))
    notes = message.notes
    topic = CONSUMER_TOPIC[consumer]
    body = json.dumps(env).encode()
    if draw(st.integers(0, 7)) == 0:
        body = draw(raw_bytes(body, notes))
        ok, carries, message_id = False, False, None
    content_type = JSON_TYPES[0]
    if draw(st.integers(0, 7)) == 0:
        content_type = draw(st.sampled_from(JSON_TYPES + ODD_TYPES))
        notes.append(f"Content-Type {content_type!r}")
        # Pub/Sub and Eventarc always send JSON: another type is not a real delivery
        carries = carries and content_type in JSON_TYPES
    headers: dict[str, str] = {}
    if content_type:
        headers["Content-Type"] = content_type
    if form == "push":
        path = f"/projects/{PROJECT}/topics/{topic}"
        if draw(st.integers(0, 9)) == 0:
            path = draw(
                st.sampled_from(
                    ["/", "/projects/x/topics/", "/projects//topics/%00", "/topics/" + topic]
                )
            )
            notes.append(f"path {path!r}")
    else:
        path = "/"
        publish = (
            env["message"].get("publishTime")
            if isinstance(env, dict) and isinstance(env.get("message"), dict)
            else None
        )
        headers.update(
            {
                "ce-id": message_id or "fuzz-" + uuid.uuid4().hex[:8],
                "ce-specversion": "1.0",
                "ce-source": f"//pubsub.googleapis.com/projects/{PROJECT}/topics/{topic}",
                "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
                "ce-time": publish if isinstance(publish, str) else _now(),
            }
        )
        if draw(st.integers(0, 3)) == 0:
            headers = draw(mutated_ce_headers(headers, notes))
            carries = False  # not what Eventarc sends: may be refused as not a CloudEvent
    return Delivery(
        "POST",
        path,
        body,
        headers,
        notes,
        envelope_ok=ok,
        data=message.data if ok else None,
        attributes={str(k): str(v) for k, v in message.attributes.items()} if ok else None,
        message_id=message_id,
        carries_message=carries,
    )


_HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
)


@st.composite
def mutated_ce_headers(
    draw: st.DrawFn, headers: dict[str, str], notes: list[str]
) -> dict[str, str]:
    headers = dict(headers)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(
            st.sampled_from(
                [
                    "ce-id",
                    "ce-specversion",
                    "ce-source",
                    "ce-type",
                    "ce-time",
                    "ce-traceparent",
                    "traceparent",
                    "X-Cloud-Trace-Context",
                    "ce-subject",
                ]
            )
        )
        op = draw(st.sampled_from(["drop", "set", "set"]))
        if op == "drop":
            headers.pop(key, None)
            notes.append(f"header drop {key}")
        else:
            headers[key] = draw(
                st.one_of(
                    _HEADER_TEXT,
                    st.sampled_from(
                        [
                            "0.3",
                            "2.0",
                            "",
                            "//pubsub.googleapis.com/",
                            "projects/p/topics/t/x",
                            "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
                            "a" * 32 + "/1;o=1",
                            *ODD_TIMES[:5],
                            "x" * 5000,
                        ]
                    ),
                )
            )
            notes.append(f"header {key}={_short(headers[key])}")
    return headers


# ---------------------------------------------------------------------------- HTTP entry points


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@st.composite
def intake_requests(draw: st.DrawFn, good_auth: str) -> Delivery:
    seed = draw(st.sampled_from(INCIDENT_BODIES + [s for s in INCIDENTS if "invalid" in s.name]))
    notes = [f"seed {seed.name}"]
    tree, _ = freshen(seed)
    if seed.raw is not None:
        body = seed.raw.encode()
    elif draw(st.integers(0, 9)) == 0:
        body = json.dumps(tree).encode()
        notes.append("unchanged")
    else:
        body = draw(serialised(draw(mutated_tree(tree, notes)), notes))
    if draw(st.integers(0, 5)) == 0:
        body = draw(raw_bytes(body, notes))
    auth = good_auth
    if draw(st.integers(0, 4)) == 0:
        auth = draw(
            st.sampled_from(
                [
                    "",
                    "Basic",
                    "Basic ",
                    "Basic !!!",
                    "Bearer x",
                    basic("monitoring", "wrong"),
                    basic("", ""),
                    "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(),
                    "basic " + good_auth.split(" ", 1)[1],
                    good_auth + "=",
                    "Basic " + "A" * 10_000,
                ]
            )
        )
        notes.append(f"auth {auth[:30]!r}")
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    if draw(st.integers(0, 5)) == 0:
        ct = draw(st.sampled_from(ODD_TYPES))
        if ct:
            headers["Content-Type"] = ct
        else:
            del headers["Content-Type"]
        notes.append(f"Content-Type {ct!r}")
    method = (
        "POST"
        if draw(st.integers(0, 9))
        else draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    )
    return Delivery(method, "/", body, headers, notes)


_PATH_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)


@st.composite
def kpi_requests(draw: st.DrawFn, known: list[str]) -> Delivery:
    from urllib.parse import quote

    notes: list[str] = []
    project = draw(
        st.one_of(
            st.sampled_from(known),
            st.uuids().map(str),
            st.uuids().map(lambda u: str(u).upper()),
            st.uuids().map(lambda u: u.hex),
            st.uuids().map(lambda u: "{" + str(u) + "}"),
            special_strings.filter(lambda s: not any("\ud800" <= c <= "\udfff" for c in s)),
            _PATH_TEXT,
            st.sampled_from(
                ["..", ".", "%00", "%ud800", "%ff", "%2F", "a/b", "x" * 5000, "y" * HUGE, *INT64]
            ),
        )
    )
    quoted = draw(st.booleans())
    segment = quote(project, safe="") if quoted else project.replace("?", "%3F").replace("#", "%23")
    path = draw(
        st.sampled_from(
            [
                "/v1/projects/{}/kpis",
                "/v1/projects/{}/kpis/",
                "/v1/projects/{}",
                "/v1/projects/{}/kpis/extra",
                "/v2/projects/{}/kpis",
                "//v1/projects/{}/kpis",
                "/v1/projects/{}/KPIS",
                "/",
                "/v1/projects//kpis",
            ]
        )
    ).format(segment)
    query = draw(
        st.one_of(
            st.just(""),
            st.sampled_from(
                [
                    "refresh=1",
                    "refresh=true",
                    "fresh=%00",
                    "a=%ff%fe",
                    "x=" + "q" * 10_000,
                    "&&&==",
                    "refresh",
                ]
            ),
            st.dictionaries(_PATH_TEXT, _PATH_TEXT, max_size=3).map(
                lambda d: "&".join(f"{quote(k)}={quote(v)}" for k, v in d.items())
            ),
        )
    )
    if query:
        path += "?" + query
    method = (
        "GET"
        if draw(st.integers(0, 7))
        else draw(st.sampled_from(["POST", "PUT", "DELETE", "HEAD", "OPTIONS"]))
    )
    headers: dict[str, str] = {}
    if draw(st.integers(0, 4)) == 0:
        headers[
            draw(
                st.sampled_from(
                    [
                        "If-None-Match",
                        "Accept",
                        "Cache-Control",
                        "X-Cloud-Trace-Context",
                        "Authorization",
                    ]
                )
            )
        ] = draw(_HEADER_TEXT)
    body = b""
    if method != "GET" and draw(st.booleans()):
        body = draw(st.sampled_from([b"{}", b"not json", b"\xff\xfe", b"[" * 5000]))
    notes.append(f"project {_short(project)}")
    return Delivery(method, path, body, headers, notes)


@st.composite
def flush_requests(draw: st.DrawFn) -> Delivery:
    method = draw(st.sampled_from(["POST", "POST", "GET", "PUT", "DELETE"]))
    body = draw(
        st.one_of(
            st.just(b""),
            st.sampled_from(
                [b"{}", b"not json", b"\xff\xfe\x00", b"[" * 100_000, b"x" * 1_100_000]
            ),
            st.binary(max_size=64),
        )
    )
    headers: dict[str, str] = {}
    ct = draw(st.sampled_from(JSON_TYPES + ODD_TYPES))
    if ct:
        headers["Content-Type"] = ct
    path = draw(st.sampled_from(["/", "/flush", "/?limit=-1", "/?limit=99999999999999999999"]))
    return Delivery(method, path, body, headers, [f"Content-Type {ct!r}"])


EntryFactory = Callable[..., Any]

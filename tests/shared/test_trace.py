"""shared.trace: ids, the release a message belongs to, what logs and published messages
carry, and the exporters (local JSON lines; Cloud Trace through its REST wire format).
docs/release.md."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request

from shared.events import parse_build_message
from shared.log import LABELS_KEY, SAMPLED_KEY, SPAN_KEY, TRACE_KEY, JsonLineHandler
from shared.release import release_id, release_trace_id
from shared.settings import Settings, TraceConfig
from shared.trace import (
    Tracing,
    current,
    exporter_for,
    outgoing_attributes,
    parse_traceparent,
    read_spans,
    release_of,
)
from standins import serve
from tests.helpers import GOLDEN, ROOT

RELEASE = "sight-api@3f2a9c1e8b7d"
OTHER_RELEASE = "sight-web@0123456789ab"
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FUNCTIONS = sorted(p.parent.name for p in (ROOT / "functions").glob("*/main.py"))


def traced(tmp_path: Path, **trace: Any) -> Tracing:
    trace.setdefault("exporter", "local")
    trace.setdefault("local_file", tmp_path / "spans.jsonl")
    return Tracing(Settings(environment="test", trace=TraceConfig(**trace)))


# ---- ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 has 4 parts
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # 31 digits
        "00-" + "a" * 600,
    ],
)
def test_an_invalid_traceparent_is_ignored(value: str | None) -> None:
    assert parse_traceparent(value) is None


def test_a_valid_traceparent_gives_trace_span_and_sampling() -> None:
    parsed = parse_traceparent(PARENT.upper())
    assert parsed is not None
    assert (parsed.trace_id, parsed.span_id, parsed.sampled) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        True,
    )


def golden_build(**changes: Any) -> Any:
    message = json.loads((GOLDEN / "cloudbuild" / "success_triggered.json").read_text())
    data = {**message["data"], **changes}
    return parse_build_message(json.dumps(data).encode(), message["attributes"])


def test_a_build_belongs_to_the_release_of_its_service_and_commit() -> None:
    build = golden_build()
    assert release_of(build, {}) == release_id("sight-api", build.commit_sha)


def test_a_build_without_commit_substitution_takes_the_commit_from_its_source() -> None:
    build = golden_build(substitutions={"_SERVICE": "sight-api"})
    assert build.commit_sha is None
    assert release_of(build, {}) == "sight-api@3f2a9c1e8b7d"


def test_a_build_that_names_no_service_belongs_to_no_release() -> None:
    assert release_of(golden_build(substitutions={"COMMIT_SHA": "3f2a" * 10}), {}) is None


def test_the_release_id_attribute_wins_only_when_it_is_well_formed() -> None:
    build = golden_build()
    assert release_of(build, {"release_id": OTHER_RELEASE}) == OTHER_RELEASE
    assert release_of(build, {"release_id": "<!here>"}) == release_of(build, {})


def test_the_exporter_defaults_to_cloud_trace_in_production_and_nothing_in_tests() -> None:
    assert exporter_for(Settings(environment="production")) == "gcp"
    assert exporter_for(Settings(environment="test")) == "none"
    assert exporter_for(Settings(environment="local")) == "local"
    assert exporter_for(Settings(environment="production", trace={"exporter": "none"})) == "none"


# ---- what a span gives logs and published messages -----------------------------------------


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = JsonLineHandler(stream)
    from shared.log import JsonFormatter

    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("sightops.test.trace")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield stream
    log.removeHandler(handler)


def test_every_log_line_written_in_a_span_carries_its_trace_and_release(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    log = logging.getLogger("sightops.test.trace")
    tracing = traced(tmp_path)
    with tracing.span("notify x", release=RELEASE) as span:
        log.info("inside", extra={LABELS_KEY: {"consumer": "notify"}})
    log.info("outside")
    inside, outside = json_lines(log_stream)
    assert inside[TRACE_KEY] == f"projects/sight-local/traces/{release_trace_id(RELEASE)}"
    assert inside[SPAN_KEY] == span.span_id
    assert inside[SAMPLED_KEY] is True
    assert inside[LABELS_KEY] == {"consumer": "notify", "release_id": RELEASE}
    assert TRACE_KEY not in outside
    assert LABELS_KEY not in outside


def test_a_message_of_the_same_release_continues_the_span_another_release_does_not(
    tmp_path: Path,
) -> None:
    tracing = traced(tmp_path)
    assert outgoing_attributes({"type": "x"}) == {"type": "x"}  # no span: nothing added
    with tracing.span("rollback x", traceparent=PARENT, release=RELEASE) as span:
        plain = outgoing_attributes({"type": "x"})
        same = outgoing_attributes({"type": "x", "release_id": RELEASE})
        other = outgoing_attributes({"type": "x", "release_id": OTHER_RELEASE})
        chosen = outgoing_attributes({"traceparent": PARENT})
    assert plain == {"type": "x", "release_id": RELEASE, "traceparent": span.traceparent}
    assert same["traceparent"] == span.traceparent
    assert "traceparent" not in other  # its consumer joins that release's own trace
    assert other["release_id"] == OTHER_RELEASE
    assert chosen["traceparent"] == PARENT
    assert current() is None


def test_an_unsampled_trace_is_still_propagated_but_not_written(tmp_path: Path) -> None:
    tracing = traced(tmp_path, sample_ratio=0.0)
    with tracing.span("migrate build.SUCCESS", release=RELEASE) as span:
        attributes = outgoing_attributes({})
    assert span.trace_id == release_trace_id(RELEASE)
    assert attributes["traceparent"].endswith("-00")
    assert span.log_fields()[SAMPLED_KEY] is False
    assert read_spans(tmp_path / "spans.jsonl") == []


# ---- the local exporter ------------------------------------------------------------------

WRITER = """
import sys
from pathlib import Path
from shared.settings import Settings, TraceConfig
from shared.trace import Tracing

path, worker, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
trace = TraceConfig(exporter="local", local_file=path)
tracing = Tracing(Settings(environment="test", trace=trace))
for n in range(count):
    with tracing.span(f"writer {worker}", release="sight-api@0123456789ab",
                      attributes={"n": n, "padding": "x" * 2000}):
        pass
tracing.shutdown()
"""


def test_several_processes_append_to_one_span_file_without_mixing_lines(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "spans.jsonl"
    count, workers = 150, 4
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), str(count)], cwd=ROOT)
        for w in range(workers)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * workers
    lines = path.read_text().splitlines()
    assert len(lines) == workers * count
    spans = read_spans(path, release_trace_id("sight-api@0123456789ab"))
    assert len(spans) == workers * count
    for w in range(workers):
        mine = [s.attributes["n"] for s in spans if s.name == f"writer {w}"]
        assert sorted(mine) == list(range(count))


def test_reading_skips_a_line_still_being_written(tmp_path: Path) -> None:
    tracing = traced(tmp_path)
    with tracing.span("kpi GET", release=RELEASE):
        pass
    path = tmp_path / "spans.jsonl"
    with path.open("a") as file:
        file.write('{"trace_id": "' + release_trace_id(RELEASE) + '", "name": "half')
    [span] = read_spans(path, release_trace_id(RELEASE))
    assert span.name == "kpi GET"
    assert read_spans(tmp_path / "missing.jsonl") == []


# ---- Cloud Trace ---------------------------------------------------------------------------


class CloudTraceSink:
    """Cloud Trace API v2 ``projects.traces.batchWrite`` over REST: what the official
    client sends, kept for the test."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.app = Flask("cloudtrace")
        self.app.add_url_rule(
            "/v2/projects/<project>/traces:batchWrite", "batch_write", self._write, methods=["POST"]
        )
        self.received = threading.Event()

    def _write(self, project: str) -> Any:
        self.requests.append((project, request.get_json(force=True)))
        self.received.set()
        return {}


def test_the_gcp_exporter_sends_the_release_trace_to_cloud_trace(tmp_path: Path) -> None:
    sink = CloudTraceSink()
    with serve(sink.app) as running:
        tracing = Tracing(
            Settings(
                environment="production",
                gcp_project="sight-prod",
                trace=TraceConfig(endpoint=running.url),
            )
        )
        assert tracing.exporter == "gcp"
        with tracing.span("rollback sight.ops.smoke.failed", release=RELEASE) as span:
            pass  # the span is flushed when it ends (the function may be throttled after)
        assert sink.received.wait(10)
        tracing.shutdown()
    [(project, body)] = sink.requests
    [sent] = body["spans"]
    assert project == "sight-prod"
    assert sent["name"] == (
        f"projects/sight-prod/traces/{release_trace_id(RELEASE)}/spans/{span.span_id}"
    )
    assert sent["displayName"]["value"] == "rollback sight.ops.smoke.failed"
    labels = sent["attributes"]["attributeMap"]
    assert labels["release_id"]["stringValue"]["value"] == RELEASE


def test_cloud_trace_without_credentials_is_one_error_line_and_spans_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    tracing = Tracing(Settings(environment="production"))
    [record] = [r for r in caplog.records if r.name == "sightops.trace"]
    assert record.levelno == logging.ERROR
    assert "trace exporter gcp unavailable" in record.getMessage()
    with tracing.span("notify x", release=RELEASE) as span:
        pass
    assert span.trace_id == release_trace_id(RELEASE)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_import_main_of_a_function_does_not_import_opentelemetry(function: str) -> None:
    """OpenTelemetry loads with the first delivery (Deps.tracing), never at cold start."""
    probe = (
        "import sys, main\n"
        "print(','.join(m for m in sys.modules if m.split('.')[0] == 'opentelemetry'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT / "functions" / function,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == ""

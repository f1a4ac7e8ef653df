"""Cold start per entry point, against a bare functions-framework function in the same venv.

Two columns, each the median of RUNS fresh processes, ratio against the bare function
measured in the same run and the same virtualenv (the package's own, built from its
pinned requirements.txt alone, as deployed):

1. cold ``import main``: what the module costs before functions-framework can serve;
2. process start -> first request answered: ``functions-framework --target T`` spawned,
   the first request sent as soon as the port accepts, timed until its answer. The
   first request is a real one through the whole path (runtime, parse, PostgreSQL
   receipt, the handler's decision, the log line), chosen to need no cloud API:

   | target | first request |
   |---|---|
   | migrate | a SUCCESS build of a trigger migrate does not select (skipped, recorded) |
   | rollback | a ``migration.succeeded`` event (not a rollback trigger: skipped) |
   | notify | a QUEUED build (not reported; due alert groups flushed from Redis) |
   | kpi_refresh | a refresh of a project that does not exist |
   | kpi | ``GET /v1/projects/<unknown id>/kpis`` (404 after Redis and PostgreSQL) |
   | alert_intake | a webhook POST with wrong credentials (401) |
   | notify_flush | ``POST /`` (nothing due) |

   The bare functions answer a CloudEvent or an HTTP GET and do nothing else.

Needs the local services (``make bench`` starts them) and a migrated database
(``DATABASE_URL``). Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from package_size import cold_import_ms, make_venv  # noqa: E402

from sightops.package import build_all  # noqa: E402

#: make dev's local database (a well-known local password, not a secret)
LOCAL_DATABASE_URL = (
    "postgresql+asyncpg://sight:sight-local@127.0.0.1:54329/sight"  # pragma: allowlist secret
)
RUNS = int(os.environ.get("COLD_START_RUNS", "7"))
BARE = """import functions_framework


@functions_framework.cloud_event
def bare_event(cloud_event):
    return None


@functions_framework.http
def bare_http(request):
    return "ok"
"""
#: The least any Pub/Sub entry point of ours must do before it answers, with none of our
#: code: validate the payload with a pydantic model (every event is typed) and write the
#: delivery's receipt to PostgreSQL (exactly-once) with the bare driver, no SQLAlchemy and
#: no settings. Its ratio is the floor the 1.5x target is measured against.
FLOOR = """import base64
import os
from urllib.parse import urlsplit

import functions_framework
import pg8000.dbapi
from pydantic import BaseModel


class Payload(BaseModel):
    service: str | None = None


_conn = None


@functions_framework.cloud_event
def floor_event(cloud_event):
    global _conn
    message = cloud_event.data["message"]
    Payload.model_validate_json(base64.b64decode(message["data"]))
    if _conn is None:
        url = urlsplit(os.environ["DATABASE_URL"])
        _conn = pg8000.dbapi.connect(
            user=url.username, password=url.password, host=url.hostname,
            port=url.port, database=url.path.lstrip("/"),
        )
    cursor = _conn.cursor()
    cursor.execute(
        "INSERT INTO ops.event_receipts (consumer, event_id, event_type, outcome)"
        " VALUES ('bench-floor', %s, 'floor', 'handled') ON CONFLICT DO NOTHING",
        (message["messageId"],),
    )
    _conn.commit()
"""
GOLDEN = ROOT / "tests" / "fixtures" / "golden"
Request = Callable[[int], urllib.request.Request]


def _push(topic: str, data: bytes, attributes: dict[str, str]) -> Request:
    def build(port: int) -> urllib.request.Request:
        body = {
            "message": {
                "data": base64.b64encode(data).decode(),
                "attributes": attributes,
                "messageId": str(uuid.uuid4().int)[:16],
                "publishTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            },
            "subscription": "projects/sight-local/subscriptions/bench",
        }
        return urllib.request.Request(
            f"http://127.0.0.1:{port}/projects/sight-local/topics/{topic}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )

    return build


def _build(status: str) -> Request:
    build = json.loads((GOLDEN / "cloudbuild" / "success_triggered.json").read_text())
    build.update(id=str(uuid.uuid4()), status=status, buildTriggerId=str(uuid.uuid4()))
    return _push(
        "cloud-builds", json.dumps(build).encode(), {"buildId": build["id"], "status": status}
    )


def _ops_event(kind: str, topic: str) -> Request:
    golden = json.loads((GOLDEN / "ops" / f"{kind}.json").read_text())
    attributes = dict(golden["attributes"])
    attributes.update(id=str(uuid.uuid4()), time=datetime.now(UTC).isoformat())
    return _push(topic, json.dumps(golden["data"]).encode(), attributes)


def _http(method: str, path: str, body: bytes | None = None, **headers: str) -> Request:
    def build(port: int) -> urllib.request.Request:
        return urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", data=body, headers=headers, method=method
        )

    return build


FIRST_REQUEST: dict[str, tuple[str, Request]] = {
    "migrate": ("migrate", _build("SUCCESS")),
    "rollback": ("rollback", _ops_event("migration_succeeded", "ops-events")),
    "notify": ("notify", _build("QUEUED")),
    "kpi_refresh": (
        "kpi",
        _push("kpi-refresh", json.dumps({"project_id": str(uuid.uuid4())}).encode(), {}),
    ),
    "kpi": ("kpi", _http("GET", f"/v1/projects/{uuid.uuid4()}/kpis")),
    "alert_intake": (
        "alert_intake",
        _http(
            "POST",
            "/",
            b"{}",
            **{"Content-Type": "application/json", "Authorization": "Basic d3Jvbmc6d3Jvbmc="},
        ),
    ),
    "notify_flush": ("notify", _http("POST", "/")),
}
BARE_REQUEST: dict[str, Request] = {
    "bare_event": _push("bare", b"{}", {}),
    "bare_http": _http("GET", "/"),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def first_answer_ms(
    python: Path, cwd: Path, target: str, request: Request, env: dict[str, str]
) -> float:
    """Spawn functions-framework, send the first request once the port accepts, return the
    time from spawn to the answer (any status: a 4xx is an answer)."""
    port = _free_port()
    fff = python.parent / "functions-framework"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(fff), "--target", target, "--source", "main.py", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = started + 60
        while True:
            try:
                with urllib.request.urlopen(request(port), timeout=30) as answer:
                    answer.read()
                break
            except urllib.error.HTTPError as answer:
                answer.read()
                break
            except (ConnectionError, urllib.error.URLError):
                if time.perf_counter() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{target}: no answer (exit {proc.poll()})") from None
                time.sleep(0.005)
        return (time.perf_counter() - started) * 1000
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def median_of(fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(RUNS))


def main() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "ENVIRONMENT": "local",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": os.environ.get("DATABASE_URL", LOCAL_DATABASE_URL),
        "PUBSUB_EMULATOR_HOST": os.environ.get("PUBSUB_EMULATOR_HOST", "127.0.0.1:8681"),
        "INTAKE__USERNAME": "bench",
        "INTAKE__PASSWORD": "bench-password",  # pragma: allowlist secret
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        packages = {p.source: p for p in build_all(work / "dist")}
        venvs: dict[str, Path] = {}
        bare_dir = work / "bare"
        bare_dir.mkdir()
        (bare_dir / "main.py").write_text(BARE)
        floor_dir = work / "floor"
        floor_dir.mkdir()
        (floor_dir / "main.py").write_text(FLOOR)
        only = set(filter(None, os.environ.get("COLD_START_TARGETS", "").split(",")))
        for target, (source, request) in FIRST_REQUEST.items():
            if only and target not in only:
                continue
            package = packages[source]
            key = hashlib.sha256("\n".join(package.requirements).encode()).hexdigest()[:12]
            if key not in venvs:
                venvs[key] = make_venv(work / f"venv-{key}", package.directory / "requirements.txt")
            python = venvs[key]
            # bytecode written and page cache warm, as a deployed image has them
            for where in (package.directory, bare_dir):
                subprocess.run([str(python), "-c", "import main"], cwd=where, check=True, env=env)
            bare_target = (
                "bare_http" if target in ("kpi", "alert_intake", "notify_flush") else "bare_event"
            )
            imp = cold_import_ms(python, package.directory, "main")
            imp_bare = cold_import_ms(python, bare_dir, "main")
            first = median_of(
                lambda: first_answer_ms(python, package.directory, target, request, env)
            )
            first_bare = median_of(
                lambda: first_answer_ms(
                    python, bare_dir, bare_target, BARE_REQUEST[bare_target], env
                )
            )
            rows.append((target, imp, imp_bare, first, first_bare))
            if target == "rollback":  # the floor, in the same venv as a Pub/Sub entry point
                subprocess.run([str(python), "-c", "import main"], cwd=floor_dir, check=True)
                floor_request = FIRST_REQUEST["rollback"][1]
                rows.append(
                    (
                        "floor (pydantic + pg8000 receipt, none of our code)",
                        cold_import_ms(python, floor_dir, "main"),
                        cold_import_ms(python, bare_dir, "main"),
                        median_of(
                            lambda: first_answer_ms(
                                python, floor_dir, "floor_event", floor_request, env
                            )
                        ),
                        median_of(
                            lambda: first_answer_ms(
                                python, bare_dir, "bare_event", BARE_REQUEST["bare_event"], env
                            )
                        ),
                    )
                )
            print(
                f"{target}: import {imp:.0f}/{imp_bare:.0f} ms, first answer "
                f"{first:.0f}/{first_bare:.0f} ms",
                file=sys.stderr,
            )
    print(
        "| entry point | cold `import main` | bare | ratio | start -> first answer | bare | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for target, imp, imp_bare, first, first_bare in rows:
        print(
            f"| {target} | {imp:.0f} ms | {imp_bare:.0f} ms | {imp / imp_bare:.2f}x | "
            f"{first:.0f} ms | {first_bare:.0f} ms | {first / first_bare:.2f}x |"
        )


if __name__ == "__main__":
    main()

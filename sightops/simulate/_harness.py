"""What a scenario does to the stack, through the stack's own front doors: Pub/Sub
messages on its topics, the stand-ins' admin APIs, the CLI as an operator runs it, and
reads of its database (docs/simulate.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sightops.stack import (
    DEV_CI_TRIGGER_ID,
    LOCAL_IMAGE_REPO,
    REGION,
    ROOT,
    Stack,
    TimelineEntry,
)

GOLDEN_BUILD = ROOT / "tests" / "fixtures" / "golden" / "cloudbuild" / "success_triggered.json"
GOLDEN_INCIDENT = (
    ROOT / "tests" / "fixtures" / "golden" / "monitoring" / "incident_auto_rollback.json"
)


class ScenarioTimeout(Exception):
    """What a scenario waited for did not happen in time (the verdict says which)."""


class Recorder:
    """The stack's timeline sink: keeps every entry, wakes up whoever waits for one."""

    def __init__(self, follow: Callable[[TimelineEntry], None] | None = None) -> None:
        self._entries: list[TimelineEntry] = []
        self._cond = threading.Condition()
        self._follow = follow
        self._hooks: list[Callable[[TimelineEntry], None]] = []

    def __call__(self, entry: TimelineEntry) -> None:
        with self._cond:
            self._entries.append(entry)
            hooks = list(self._hooks)
            self._cond.notify_all()
        for hook in hooks:
            hook(entry)
        if self._follow is not None:
            self._follow(entry)

    def add_hook(self, hook: Callable[[TimelineEntry], None]) -> None:
        """Called with every later entry (a scenario reacting to what it sees)."""
        with self._cond:
            self._hooks.append(hook)

    def clear_hooks(self) -> None:
        with self._cond:
            self._hooks.clear()

    def entries(self, since: int = 0) -> list[TimelineEntry]:
        with self._cond:
            return list(self._entries[since:])

    def mark(self) -> int:
        with self._cond:
            return len(self._entries)

    def wait_for(
        self,
        predicate: Callable[[TimelineEntry], bool],
        what: str,
        *,
        since: int = 0,
        timeout_s: float = 60.0,
        count: int = 1,
    ) -> list[TimelineEntry]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                found = [e for e in self._entries[since:] if predicate(e)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ScenarioTimeout(f"waited {timeout_s:.0f}s for {what}")
                self._cond.wait(min(left, 0.5))


@dataclass(frozen=True)
class Release:
    """One commit of one service on its way through the pipeline."""

    service: str
    commit_sha: str
    build_id: str
    image_repo: str = LOCAL_IMAGE_REPO

    @property
    def image(self) -> str:
        return f"{self.image_repo}/{self.service}:{self.commit_sha}"

    @property
    def release_id(self) -> str:
        from shared.release import release_id

        return release_id(self.service, self.commit_sha)


def new_commit() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]


@dataclass
class Harness:
    """One stack, seen from outside: what scenarios use to act and to look."""

    stack: Stack
    recorder: Recorder
    _http: Any = field(default=None, init=False)
    _publisher: Any = field(default=None, init=False)
    _engine: Any = field(default=None, init=False)
    _chain: list[str] = field(default_factory=list, init=False)

    @property
    def env(self) -> Mapping[str, str]:
        return self.stack.env

    @property
    def project(self) -> str:
        return self.stack.project

    @property
    def http(self) -> Any:
        if self._http is None:
            import httpx

            self._http = httpx.Client(timeout=10.0)
        return self._http

    @property
    def publisher(self) -> Any:
        if self._publisher is None:
            os.environ["PUBSUB_EMULATOR_HOST"] = self.env["PUBSUB_EMULATOR_HOST"]
            from google.cloud.pubsub_v1 import PublisherClient

            self._publisher = PublisherClient()
        return self._publisher

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from sqlalchemy import create_engine

            from shared.settings import sync_database_url

            self._engine = create_engine(sync_database_url(self.env["DATABASE_URL"]))
        return self._engine

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._engine is not None:
            self._engine.dispose()

    # ---- Pub/Sub ------------------------------------------------------------------
    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        future = self.publisher.publish(
            f"projects/{self.project}/topics/{topic}", data, **dict(attributes)
        )
        return str(future.result(timeout=10))

    def republish(self, entry: TimelineEntry) -> str:
        """The same message again (a Pub/Sub redelivery, or a publisher's retry)."""
        assert entry.topic is not None
        return self.publish(entry.topic, entry.data, entry.attributes)

    def publish_build(self, release: Release, status: str = "SUCCESS") -> None:
        """What Cloud Build publishes on cloud-builds when the CI build of ``release``
        reaches ``status``."""
        message = json.loads(GOLDEN_BUILD.read_text())
        build = message["data"]
        now = datetime.now(UTC)
        build.update(
            id=release.build_id,
            name=f"projects/412893106524/locations/{REGION}/builds/{release.build_id}",
            status=status,
            buildTriggerId=DEV_CI_TRIGGER_ID,
            createTime=_rfc3339(now - timedelta(minutes=4)),
            startTime=_rfc3339(now - timedelta(minutes=4)),
            finishTime=_rfc3339(now),
        )
        build["substitutions"].update(
            COMMIT_SHA=release.commit_sha,
            REVISION_ID=release.commit_sha,
            SHORT_SHA=release.commit_sha[:7],
            _SERVICE=release.service,
            _AR_REPO=release.image_repo,
        )
        build["source"]["gitSource"]["revision"] = release.commit_sha
        build["sourceProvenance"]["resolvedGitSource"]["revision"] = release.commit_sha
        build["images"] = [release.image]
        build["results"]["images"] = [{"name": release.image, "digest": "sha256:" + "0" * 64}]
        self.publish(
            "cloud-builds",
            json.dumps(build).encode(),
            {"buildId": release.build_id, "status": status},
        )

    def publish_smoke_passed(self, release: Release, revision: str, url: str) -> None:
        """The previous release's own smoke run on the service URL: what made its
        revision known-good in production (docs/rollback.md, "Health evidence")."""
        from shared.events import EventType, OpsEvent, SmokeCheck, SmokeResult

        now = datetime.now(UTC)
        result = SmokeResult(
            service=release.service,
            region=REGION,
            revision=revision,
            url=url,
            build_id=release.build_id,
            commit_sha=release.commit_sha,
            checks=[SmokeCheck(name="GET /health", ok=True, status_code=200)],
            started_at=now,
            finished_at=now,
        )
        data, attributes = OpsEvent.new(EventType.SMOKE_PASSED, result, "smoke-runner").to_pubsub()
        self.publish("smoke-tests", data, attributes)

    def publish_incident(
        self,
        service: str,
        revision: str | None,
        *,
        policy: str,
        incident_id: str | None = None,
        started: datetime | None = None,
    ) -> str:
        """An auto-rollback incident as Cloud Monitoring's Pub/Sub channel sends it."""
        body = json.loads(GOLDEN_INCIDENT.read_text())
        incident = body["incident"]
        incident_id = incident_id or f"0.{uuid.uuid4().hex[:12]}"
        incident.update(
            incident_id=incident_id,
            started_at=int((started or datetime.now(UTC)).timestamp()),
            policy_name=policy,
            scoping_project_id=self.project,
        )
        labels = incident["resource"]["labels"]
        labels.update(service_name=service, location=REGION, configuration_name=service)
        if revision is None:
            labels.pop("revision_name", None)
        else:
            labels["revision_name"] = revision
        incident.setdefault("policy_user_labels", {})["service"] = service
        incident["policy_user_labels"]["auto_rollback"] = "true"
        self.publish("monitoring-alerts", json.dumps(body).encode(), {})
        return incident_id

    # ---- the Cloud Run stand-in ----------------------------------------------------
    def _admin(self, standin: str, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(
            method, f"{self.stack.ports.url(standin)}/_admin{path}", json=body
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def create_service(self, release: Release) -> str:
        """The service as it is before the scenario: ``release`` serving 100 %.
        Returns its revision (the last good one)."""
        created = self._admin(
            "cloudrun",
            "POST",
            "/services",
            {
                "project": self.project,
                "location": REGION,
                "service": release.service,
                "image": release.image,
            },
        )
        revision = _revision_of(self.service(release.service), created)
        self.publish_smoke_passed(release, revision, str(self.service(release.service)["uri"]))
        return revision

    def service(self, service: str) -> dict[str, Any]:
        """The service as the Cloud Run Admin API v2 returns it."""
        response = self.http.get(
            f"{self.env['CLOUD_RUN_ENDPOINT']}/v2/projects/{self.project}"
            f"/locations/{REGION}/services/{service}"
        )
        response.raise_for_status()
        return dict(response.json())

    def traffic(self, service: str) -> dict[str, int]:
        """Who serves what share of ``service`` now (revision -> percent)."""
        svc = self.service(service)
        out: dict[str, int] = {}
        for status in svc.get("trafficStatuses", []):
            name = status.get("revision") or svc.get("latestReadyRevision", "").rsplit("/", 1)[-1]
            if status.get("percent"):
                out[name] = out.get(name, 0) + int(status["percent"])
        return out

    def revisions(self, service: str) -> list[str]:
        response = self.http.get(
            f"{self.env['CLOUD_RUN_ENDPOINT']}/v2/projects/{self.project}"
            f"/locations/{REGION}/services/{service}/revisions"
        )
        response.raise_for_status()
        return sorted(r["name"].rsplit("/", 1)[-1] for r in response.json().get("revisions", []))

    def set_traffic(self, service: str, split: Mapping[str, int]) -> None:
        """A human's traffic change, as ``gcloud run services update-traffic`` makes it:
        UpdateService with ``updateMask=traffic`` on the Cloud Run Admin API v2, then
        the operation polled until done."""
        response = self.http.patch(
            f"{self.env['CLOUD_RUN_ENDPOINT']}/v2/projects/{self.project}"
            f"/locations/{REGION}/services/{service}",
            params={"updateMask": "traffic"},
            json={
                "traffic": [
                    {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": r, "percent": p}
                    for r, p in split.items()
                ]
            },
        )
        response.raise_for_status()
        operation = response.json()
        deadline = time.monotonic() + 10.0
        while not operation.get("done"):  # gcloud waits for the operation too
            if time.monotonic() > deadline:
                raise ScenarioTimeout(f"the traffic update of {service} did not finish")
            time.sleep(0.1)
            polled = self.http.get(f"{self.env['CLOUD_RUN_ENDPOINT']}/v2/{operation['name']}")
            polled.raise_for_status()
            operation = polled.json()
        if operation.get("error"):
            raise RuntimeError(f"the traffic update of {service} failed: {operation['error']}")

    def publish_tick(self, service: str) -> None:
        """``sight.ops.canary.tick`` for ``service``: what Cloud Scheduler publishes every
        minute, here as our own event (the canary's tests cover Scheduler's id-less form)."""
        from shared.events import CanaryTick, EventType, OpsEvent

        tick = OpsEvent.new(EventType.CANARY_TICK, CanaryTick(service=service), "simulate")
        self.publish("ops-events", *tick.to_pubsub())

    # ---- the Sight API stand-in ----------------------------------------------------
    def break_image(self, image: str, **how: Any) -> None:
        """Make ``image`` bad in the Sight API stand-in: every revision of it answers
        ``failing_checks`` with a 5xx, an ``error_rate``, ``latency_ms`` (docs/standins.md)."""
        self._admin("sightapi", "POST", "/images", {"image": image, **how})

    # ---- the Slack stand-in --------------------------------------------------------
    def slack_messages(self) -> list[dict[str, Any]]:
        return list(self._admin("slack", "GET", "/messages")["messages"])

    # ---- the CLI, as an operator or a scheduler runs it ----------------------------
    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sightops.cli", *args],
            env=dict(self.env),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    # ---- the database ----------------------------------------------------------------
    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), params)]

    def execute(self, sql: str) -> None:
        from sqlalchemy import text

        with self.engine.begin() as conn:
            conn.execute(text(sql))

    # ---- the release's migrations ------------------------------------------------------
    @property
    def migrations_dir(self) -> Path:
        return Path(self.env["SIGHTOPS_SIM_MIGRATIONS"])

    def add_migration(self, slug: str, upgrade: str, *, allow: str | None = None) -> Path:
        """A revision file chained onto the current head, as the release's commit would
        bring it; migrate finds it in its version locations (docs/migrate.md)."""
        head = self._chain[-1] if self._chain else _project_head()
        revision = f"sim{uuid.uuid4().hex[:10]}"
        allow_line = f'# sightops: allow={allow} reason="simulated release"\n' if allow else ""
        body = (
            f'"""Simulated release migration: {slug}.\n\nRevision ID: {revision}\n'
            f'Revises: {head}\n"""\n\nfrom alembic import op\n\n'
            f'revision = "{revision}"\ndown_revision = "{head}"\n'
            "branch_labels = None\ndepends_on = None\n\n"
            f"{allow_line}\n\ndef upgrade() -> None:\n"
            "    op.execute(\"SET lock_timeout = '5s'\")\n"
            + "".join(f"    {line}\n" for line in upgrade.strip().splitlines())
            + "\n\ndef downgrade() -> None:\n    pass\n"
        )
        self.migrations_dir.mkdir(parents=True, exist_ok=True)
        path = self.migrations_dir / f"{revision}_{slug}.py"
        path.write_text(body)
        self._chain.append(revision)
        return path

    def drop_migration(self, path: Path) -> None:
        """A migration that failed (nothing of it applied) leaves with its release."""
        path.unlink(missing_ok=True)
        revision = path.name.split("_", 1)[0]
        self._chain = [r for r in self._chain if r != revision]


def _project_head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_current_head()
    assert head is not None
    return head


def _revision_of(service: Mapping[str, Any], created: Any) -> str:
    latest = str(service.get("latestReadyRevision") or "")
    if latest:
        return latest.rsplit("/", 1)[-1]
    return str(created.get("latestReadyRevision", "")).rsplit("/", 1)[-1]


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")

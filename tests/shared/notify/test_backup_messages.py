"""Slack messages of the backup drill (docs/backups.md, docs/notify.md): a verified backup
is one quiet line of facts, a failed one says why and lists what differed, escaped; a
backup request is the function's input and never posted."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from shared.events import BackupRequested, BackupVerdict, EventType, OpsEvent
from shared.notify import parse_config, render_ops, to_notice
from shared.notify._route import Router
from shared.settings import NotifyConfig

CONFIG = parse_config({"runbook_base_url": "https://runbooks.example/"})
NOW = datetime(2026, 12, 5, 2, 30, tzinfo=UTC)


def verdict(kind: EventType, **fields: object) -> OpsEvent[BackupVerdict]:
    payload = BackupVerdict(
        store="postgres",
        phase="drill",
        backup_id="postgres-20261205T021500Z-abcdef",
        manifest="postgres/daily/2026-12-05/postgres-20261205T021500Z-abcdef/manifest.json",
        taken_at=NOW,
        checked_at=NOW,
        target="postgresql://10.0.0.5:5432/sightops_restore_x",
        counts={"public.personas": 1_000_000, "public.projects": 100},
        bytes=123 * 1024 * 1024,
        duration_s=95.0,
        **fields,  # type: ignore[arg-type]
    )
    return OpsEvent.new(kind, payload, source="sightops-backup", clock=lambda: NOW)


def test_a_verified_backup_says_what_was_restored_and_how_long_it_took() -> None:
    message = render_ops(verdict(EventType.BACKUP_VERIFIED), CONFIG).to_dict()
    assert message["text"] == ":floppy_disk: PostgreSQL backup verified"
    facts = json.dumps(message["blocks"])
    assert "1,000,100" in facts and "sightops_restore_x" in facts
    assert "Runbook" not in facts


def test_a_failed_drill_lists_the_differences_escaped_and_links_the_runbook() -> None:
    event = verdict(
        EventType.BACKUP_FAILED,
        reason="postgres backup x: 2 differences",
        findings=["public.personas: <!channel> checksum in the object differs & more"],
    )
    message = render_ops(event, CONFIG).to_dict()
    assert message["text"] == ":rotating_light: PostgreSQL restore drill FAILED"
    text = json.dumps(message["blocks"])
    assert "&lt;!channel&gt; checksum in the object differs &amp; more" in text
    assert "<!channel>" not in text
    assert "https://runbooks.example/backup-stale.md" in text


def test_verdicts_are_posted_and_requests_never() -> None:
    router = Router(CONFIG, NotifyConfig())
    for kind in (EventType.BACKUP_VERIFIED, EventType.BACKUP_FAILED):
        notice = to_notice(verdict(kind), "k")
        assert notice is not None and router.skip_reason(notice) is None
    request = OpsEvent.new(EventType.BACKUP_REQUESTED, BackupRequested(), source="cloud-scheduler")
    assert to_notice(request, "k") is None

"""What the maintain function accepts on its topic (shared/maintain/_handler.py): Cloud
Scheduler's fixed message, read leniently, and our own ops event, read strictly."""

from __future__ import annotations

import json

import pytest

from shared.errors import InvalidEventError
from shared.maintain import MaintainRequested, dedupe_key, parse
from shared.runtime import PubsubMessage
from tests.helpers import GOLDEN

SCHEDULER = {"type": "sight.ops.maintain.requested", "source": "cloud-scheduler"}


@pytest.mark.parametrize(
    ("data", "dry_run"), [(b"{}", False), (b"", False), (b'{"dry_run": true}', True)]
)
def test_the_scheduler_message_has_no_id_or_time_and_is_read_from_its_data(
    data: bytes, dry_run: bool
) -> None:
    assert parse(data, SCHEDULER) == MaintainRequested(dry_run=dry_run)


def test_our_own_request_event_is_parsed_strictly() -> None:
    message = json.loads((GOLDEN / "ops" / "maintain_requested.json").read_text())
    data = json.dumps(message["data"]).encode()
    assert parse(data, message["attributes"]).dry_run is True
    with pytest.raises(InvalidEventError):
        parse(b'{"dry_run": "maybe"}', message["attributes"])


@pytest.mark.parametrize(
    ("data", "attributes"),
    [
        (b"{}", {"type": "sight.ops.kpi.refresh_requested"}),
        (b'{"dryrun": true}', SCHEDULER),  # a misspelt dry_run must not run for real
        (b"[]", SCHEDULER),
        (b"not json", SCHEDULER),
    ],
)
def test_anything_else_is_refused(data: bytes, attributes: dict[str, str]) -> None:
    with pytest.raises(InvalidEventError):
        parse(data, attributes)


def test_deliveries_are_deduplicated_on_the_pubsub_message_id() -> None:
    """Every scheduled run sends the same data and attributes: only the id differs."""
    message = PubsubMessage(
        data=b"{}", attributes=SCHEDULER, message_id="1234567890", publish_time=None
    )
    assert dedupe_key(MaintainRequested(), message) == "maintain:1234567890"

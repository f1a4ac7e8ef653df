"""`sightops dlq list|show|replay`: the messages a function could not handle, from
``ops.rejected_events`` and the dead-letter hold subscriptions, and their replay to the
original topic (docs/runbooks/rejected-and-dead-lettered-messages.md; logic in shared/dlq.py).

What cannot be done as asked (an unknown id, a message already replayed, no topic known)
is a :class:`shared.dlq.DlqError`: the root group prints it as one line, exit 2; a store
that is down is one line naming it and the fix, exit 3 (sightops/_errors.py; docs/cli.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sightops.commands._common import manual_actor as _actor
from sightops.commands._common import open_deps as _deps

if TYPE_CHECKING:
    from shared.dlq import DeadLetter, Hold, Replay
    from shared.runtime import Deps

dlq_app = typer.Typer(
    help="Rejected and dead-lettered messages: list, show, replay "
    "(docs/runbooks/rejected-and-dead-lettered-messages.md).",
    no_args_is_help=True,
)
console = Console()


class SourceChoice(StrEnum):
    rejected = "rejected"
    dead_letter = "dead-letter"


def register(app: typer.Typer) -> None:
    """Add this area's commands and groups to the root app."""
    app.add_typer(dlq_app, name="dlq")


def _holds() -> list[Hold]:
    """Every dead-letter hold subscription of the topology (names as terraform/pubsub.tf)."""
    from shared.dlq import Hold
    from sightops.topology import FUNCTIONS, dead_letter_hold

    return [Hold(fn.name, t, dead_letter_hold(fn.name, t)) for fn in FUNCTIONS for t in fn.topics]


def _topics_of() -> dict[str, tuple[str, ...]]:
    from sightops.topology import consumed_topics

    return consumed_topics()


def _guess(data: bytes, attributes: Mapping[str, str]) -> str | None:
    """The topic a message belongs on, by what it is (`sightops events publish`'s rules)."""
    from sightops.cli import topic_for

    try:
        return topic_for(data, dict(attributes))
    except typer.BadParameter:
        return None


def _collect(
    deps: Deps,
    *,
    consumer: str | None,
    since: datetime | None,
    source: SourceChoice | None,
    limit: int,
) -> list[DeadLetter]:
    from shared.db import transaction
    from shared.dlq import DeadLetterHolds, rejected_letters

    letters: list[DeadLetter] = []
    if source in (None, SourceChoice.rejected):
        with transaction(deps.engine) as conn:
            letters += rejected_letters(
                conn,
                consumer=consumer,
                since=since,
                limit=limit,
                topics_of=_topics_of(),
                guess=_guess,
            )
    if source in (None, SourceChoice.dead_letter):
        with DeadLetterHolds(deps.settings, _holds(), max_messages=limit) as holds:
            letters += [
                letter
                for letter in holds.read(consumer)
                if since is None or (letter.received_at and letter.received_at >= since)
            ]
    oldest = datetime.min.replace(tzinfo=UTC)
    letters.sort(key=lambda letter: letter.received_at or oldest, reverse=True)
    return letters[:limit]


def _since(value: str | None) -> datetime | None:
    from shared.dlq import parse_since

    return parse_since(value, datetime.now(UTC)) if value else None


@dlq_app.command("list")
def list_messages(
    consumer: Annotated[str | None, typer.Option(help="only this function, e.g. notify")] = None,
    since: Annotated[
        str | None, typer.Option(help="received since: 30m, 6h, 2d or an ISO date/time")
    ] = None,
    source: Annotated[
        SourceChoice | None, typer.Option(help="only rejected rows or only dead letters")
    ] = None,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """Messages a function could not handle, newest first.

    Reading the dead-letter hold subscriptions does not remove anything: what is pulled is
    given back at once.
    """
    from shared.log import redact

    with _deps() as deps:
        letters = _collect(deps, consumer=consumer, since=_since(since), source=source, limit=limit)
    if as_json:
        typer.echo(json.dumps([_redacted(letter.summary()) for letter in letters], indent=2))
        return
    table = Table("id", "source", "consumer", "topic", "received", "event", "reason", "status")
    for letter in letters:
        table.add_row(
            escape(letter.id),
            letter.source,
            escape(letter.consumer),
            escape(letter.topic or "?")
            + ("*" if letter.topic_from in ("derived", "unknown") else ""),
            letter.received_at.strftime("%Y-%m-%d %H:%M:%S") if letter.received_at else "",
            escape(letter.event_type or letter.event_id or ""),
            escape(redact(letter.reason)[:80]),
            letter.status,
        )
    console.print(table)
    note = (
        " (topic*: derived or unknown, see show)"
        if any(letter.topic_from in ("derived", "unknown") for letter in letters)
        else ""
    )
    console.print(f"{len(letters)} message(s){note}; `sightops dlq show ID` for one.")


def _redacted(value: Any) -> Any:
    """Every string in a JSON-able value through the log redactor (secrets never printed)."""
    from shared.log import redact

    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


def _find(deps: Deps, letter_id: str) -> DeadLetter:
    """One message by id, from the database or (leased, then given back) its hold."""
    from shared.db import transaction
    from shared.dlq import DeadLetterHolds, DlqError, is_dead_letter_id, rejected_letter

    if not is_dead_letter_id(letter_id):
        with transaction(deps.engine) as conn:
            return rejected_letter(conn, letter_id, topics_of=_topics_of(), guess=_guess)
    holds = _hold_of(letter_id)
    with DeadLetterHolds(deps.settings, holds) as leased:
        found = leased.find([letter_id])
    if letter_id in found:
        return found[letter_id]
    raise DlqError(f"no dead letter {letter_id} is waiting on {holds[0].subscription}")


def _hold_of(letter_id: str) -> list[Hold]:
    from shared.dlq import DlqError

    prefix = letter_id.split("/", 1)[0]
    holds = [hold for hold in _holds() if hold.short_id == prefix]
    if not holds:
        known = ", ".join(hold.short_id for hold in _holds())
        raise DlqError(f"no dead-letter hold subscription for {prefix!r}; known: {known}")
    return holds


@dlq_app.command("show")
def show(
    letter_id: Annotated[str, typer.Argument(metavar="ID", help="from `sightops dlq list`")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """One message: reason, attributes, payload (JSON or text when it is, else base64)."""
    from shared.dlq import payload_text

    with _deps() as deps:
        letter = _find(deps, letter_id)
    form, body = payload_text(letter.payload)
    report = _redacted({**letter.summary(), "payload_format": form, "payload": body})
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    lines = [
        f"id:         {report['id']} ({report['source']}, {report['status']})",
        f"consumer:   {report['consumer']}",
        f"topic:      {report['topic'] or 'unknown (replay with --topic)'}"
        f" ({report['topic_from']})",
        f"received:   {report['received_at'] or ''}",
        f"event:      {report['event_type'] or ''} {report['event_id'] or ''}",
        f"reason:     {report['reason']}",
        "attributes:",
        *(f"  {k} = {v}" for k, v in report["attributes"].items()),
    ]
    if report["dead_letter_attributes"]:
        lines += ["added by Pub/Sub when dead-lettering (not replayed):"]
        lines += [f"  {k} = {v}" for k, v in report["dead_letter_attributes"].items()]
    lines += [
        f"replayed:   {r['at']} by {r['actor']} as {r['message_id']}" for r in report["replays"]
    ]
    lines += [f"payload ({form}, {report['payload_bytes']} bytes):", report["payload"]]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@dlq_app.command("replay")
def replay(
    letter_ids: Annotated[
        list[str] | None, typer.Argument(metavar="ID...", help="from `sightops dlq list`")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="every message of --consumer not yet replayed")
    ] = False,
    consumer: Annotated[str | None, typer.Option(help="with --all: this function")] = None,
    since: Annotated[
        str | None, typer.Option(help="with --all: received since (30m, 6h, 2d, ISO time)")
    ] = None,
    source: Annotated[
        SourceChoice | None, typer.Option(help="with --all: only this source")
    ] = None,
    topic: Annotated[
        str | None, typer.Option(help="publish here instead (when the original is not known)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be done")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    force: Annotated[bool, typer.Option("--force", help="replay a rejected message again")] = False,
    actor: Annotated[
        str | None, typer.Option(help="who replays (recorded as manual:WHO; default: your login)")
    ] = None,
) -> None:
    """Republish messages, byte for byte with their attributes, to their original topic.

    Each replay is recorded in ops.actions (kind dlq_replay); a rejected row is marked
    replayed, a dead letter is acknowledged on its hold subscription only once republished.
    Handlers are idempotent: a message that had been handled after all is a duplicate.
    """
    from shared.dlq import DlqError, check, is_dead_letter_id

    if bool(letter_ids) == all_:
        raise typer.BadParameter("give message IDs, or --all with --consumer")
    if all_ and not consumer:
        raise typer.BadParameter("--all replays one consumer at a time: add --consumer")
    who = _actor(actor)
    with _deps() as deps:
        if all_:
            candidates = _collect(
                deps, consumer=consumer, since=_since(since), source=source, limit=1000
            )
        else:
            candidates = [_find(deps, letter_id) for letter_id in letter_ids or []]
        plan: list[tuple[DeadLetter, str]] = []
        for letter in candidates:
            try:
                plan.append((letter, check(letter, topic=topic, force=force)))
            except DlqError as exc:
                if not all_:
                    raise
                if not letter.replayed:  # already replayed ones are simply not "pending"
                    console.print(f"skipped: {exc}", markup=False, highlight=False)
        if not plan:
            console.print("nothing to replay")
            return
        table = Table("id", "source", "consumer", "to topic", "bytes", "event", title="replay")
        for letter, target in plan:
            table.add_row(
                escape(letter.id),
                letter.source,
                escape(letter.consumer),
                escape(target),
                str(len(letter.payload)),
                escape(letter.event_type or letter.event_id or ""),
            )
        console.print(table)
        if dry_run:
            console.print("dry run: nothing published, nothing recorded")
            return
        if not yes:
            typer.confirm(f"Replay {len(plan)} message(s) as {who}?", abort=True)
        rejected = [letter for letter, _ in plan if not is_dead_letter_id(letter.id)]
        dead = [letter for letter, _ in plan if is_dead_letter_id(letter.id)]
        for letter in rejected:
            _done(_replay_rejected(deps, letter, who, topic, force))
        if dead:
            for done in _replay_dead_letters(deps, dead, who, topic):
                _done(done)


def _replay_rejected(
    deps: Deps, letter: DeadLetter, actor: str, topic: str | None, force: bool
) -> Replay:
    from shared.dlq import replay_rejected

    return replay_rejected(
        deps,
        letter.id,
        actor=actor,
        topics_of=_topics_of(),
        guess=_guess,
        topic=topic,
        force=force,
    )


def _replay_dead_letters(
    deps: Deps, letters: list[DeadLetter], actor: str, topic: str | None
) -> Iterator[Replay]:
    """Lease the holds again (the confirmation may have outlasted the first lease), then
    replay and acknowledge one by one."""
    from shared.dlq import DeadLetterHolds, DlqError, replay_dead_letter

    holds = [hold for letter in letters for hold in _hold_of(letter.id)]
    with DeadLetterHolds(deps.settings, dict.fromkeys(holds)) as leased:
        waiting = leased.find(letter.id for letter in letters)
        for letter in letters:
            if letter.id not in waiting:
                raise DlqError(f"{letter.id} is no longer waiting (replayed by someone else?)")
            yield replay_dead_letter(deps, leased, waiting[letter.id], actor=actor, topic=topic)


def _done(done: Replay) -> None:
    console.print(
        f"replayed {done.letter.id} ({done.letter.source}, {done.letter.consumer}) to"
        f" {done.topic} as message {done.message_id}; recorded as action {done.action_id}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )

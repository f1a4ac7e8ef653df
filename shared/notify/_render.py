"""Block Kit messages (slack_sdk models) for every notice, always within Slack's limits.

Slack refuses a whole message over a limit (50 blocks, 3000 characters a section text,
2000 a section field, 10 fields a section, 150 a header, 75 a button label), so every
piece of event text goes through ``truncate`` on the way in: a message is cut, never
refused. Untrusted text (everything from an event: incident summary and documentation,
build fields, our events' reasons and errors) is mrkdwn-escaped (``&``, ``<``, ``>``)
wherever mrkdwn is read (sections, fields, context, the fallback ``text``), so it cannot
turn into a link or a mention; headers are plain text and get look-alike angle brackets.
Our own links are ``<url|label>`` with the label escaped and the URL checked (http or
https, no ``<``, ``>``, ``|``, whitespace). Every registered secret (``shared.log``'s
redactor: resolved secrets, webhook URLs) is masked in every string of the payload, after
escaping (the redactor knows the escaped forms) and before any cut. Every message about
a release (a build, a migration, a smoke test, a rollback, the release itself) names its
``release_id`` in its context line (docs/release.md), a link to the release's console page
when the console's base URL is given (``link_release``, docs/console.md). Rendering is
pure: no clock, no I/O (golden-tested). docs/notify.md.

The render stage: it may import the stages before it (route, dedup, group), never the
one after (deliver).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from shared.events import (
    BudgetNotification,
    Build,
    BuildStatus,
    CanaryResult,
    EventType,
    IncidentNotification,
    MigrationResult,
    OpsEvent,
    OpsPayload,
    ReleaseResult,
    RollbackResult,
    SmokeResult,
)
from shared.log import REDACTOR, mrkdwn_escape
from shared.notify._config import NotifyFileConfig, Templates, render_template
from shared.notify._model import (
    AlertEntry,
    AlertGroupView,
    Notice,
    alert_entry,
    truncate,
)

HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
FIELDS_MAX = 10
MAX_BLOCKS = 50
BUTTON_TEXT_MAX = 75
URL_MAX = 3000
CONTEXT_ELEMENTS_MAX = 10
#: The plain-text fallback shows in notifications and screen readers: keep it short.
TEXT_MAX = 3000

_STATUS_ICON = {
    BuildStatus.SUCCESS: ":white_check_mark:",
    BuildStatus.FAILURE: ":x:",
    BuildStatus.INTERNAL_ERROR: ":boom:",
    BuildStatus.TIMEOUT: ":hourglass:",
    BuildStatus.CANCELLED: ":no_entry_sign:",
    BuildStatus.EXPIRED: ":hourglass:",
}
_SEVERITY_ICON = {
    "critical": ":red_circle:",
    "error": ":red_circle:",
    "warning": ":large_orange_circle:",
    "info": ":large_blue_circle:",
}


#: mrkdwn control characters, as Slack asks (``&``, ``<``, ``>``); the redactor knows
#: the escaped form of every secret, so masking after escaping still masks.
escape = mrkdwn_escape


def plain(value: str) -> str:
    """Untrusted text for a ``plain_text`` object (headers): Slack does not parse it, but
    angle brackets become look-alikes so nothing there ever reads as ``<!here>``."""
    return value.replace("<", "\u2039").replace(">", "\u203a")  # single angle quotes


_URL_FORBIDDEN = re.compile(r"[<>|\s\x00-\x1f\x7f]")


def safe_url(url: str | None) -> str | None:
    """``url`` if it can be a link target: http(s), within Slack's length, and nothing
    that would end or split ``<url|label>``; otherwise None (shown without a link)."""
    if not url or len(url) > URL_MAX or not url.lower().startswith(("https://", "http://")):
        return None
    return None if _URL_FORBIDDEN.search(url) else url


def _link(url: str | None, label: str) -> str:
    """Our own link ``<url|label>`` (label escaped, URL checked), else the label alone."""
    label = escape(REDACTOR.redact(label)).replace("|", "¦")
    target = safe_url(url)
    return f"<{target}|{label}>" if target else label


def _titles(template: str, values: dict[str, object]) -> tuple[str, str]:
    """A configured title as (plain text for the header, mrkdwn for the fallback text).
    The template is ours (trusted); the values are escaped for where they go."""
    header = render_template(
        template,
        {k: None if v is None else plain(REDACTOR.redact(str(v))) for k, v in values.items()},
    )
    mrkdwn = render_template(
        template, {k: None if v is None else escape(str(v)) for k, v in values.items()}
    )
    return header, mrkdwn


def _redacted(value: Any) -> Any:
    """Every string of a payload through the redactor (the last step, like the log's)."""
    if isinstance(value, str):
        return REDACTOR.redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def _time(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else None


def _seconds(total: float) -> str:
    seconds = int(total)
    if seconds < 60:
        return f"{total:.1f}s" if total < 10 else f"{seconds}s"
    return f"{seconds // 60}m {seconds % 60:02d}s"


@dataclass
class SlackMessage:
    """A rendered message: plain-text fallback plus Block Kit blocks."""

    text: str
    blocks: list[Block] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        blocks = list(self.blocks)
        if len(blocks) > MAX_BLOCKS:
            omitted = len(blocks) - (MAX_BLOCKS - 1)
            blocks = [*blocks[: MAX_BLOCKS - 1], _context(f"… {omitted} more blocks omitted")]
        payload = {"text": truncate(self.text, TEXT_MAX), "blocks": [b.to_dict() for b in blocks]}
        return dict(_redacted(payload))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


# ---- block helpers (every one truncates) ------------------------------------------


def _header(title: str) -> HeaderBlock:
    return HeaderBlock(text=PlainTextObject(text=truncate(title, HEADER_MAX), emoji=True))


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=truncate(text, SECTION_MAX)))


def _fields(facts: Iterable[tuple[str, str | None]]) -> SectionBlock | None:
    items = [
        MarkdownTextObject(text=truncate(f"*{label}*\n{escape(value)}", FIELD_MAX))
        for label, value in facts
        if value
    ]
    return SectionBlock(fields=items[:FIELDS_MAX]) if items else None


def _release(event: object) -> str:
    """The context element naming the release a message is about ("" when none)."""
    from shared.trace import release_of

    found = release_of(event, {})
    return f"release `{escape(found)}`" if found else ""


def release_page_url(console: str | None, release_id: str) -> str | None:
    """``<console>/releases/<release_id>`` (docs/console.md), or None without a console."""
    from urllib.parse import quote

    if not console:
        return None
    return safe_url(f"{console.rstrip('/')}/releases/{quote(release_id, safe='@')}")


def link_release(message: SlackMessage, event: object, console: str | None) -> SlackMessage:
    """Every message about a release links to the release's console page: the context
    element naming the release (``_release``) becomes ``release <url|id>`` (the URL
    checked, the label escaped: ``_link``); a message naming none gets that element."""
    from shared.trace import release_of

    found = release_of(event, {})
    url = release_page_url(console, found) if found else None
    if not found or url is None:
        return message
    named, linked = f"release `{escape(found)}`", f"release {_link(url, found)}"
    for block in message.blocks:
        if isinstance(block, ContextBlock):
            for element in block.elements:
                if isinstance(element, MarkdownTextObject) and element.text == named:
                    element.text = linked
                    return message
    message.blocks.append(_context(linked))
    return message


def _context(*texts: str) -> ContextBlock:
    return ContextBlock(
        elements=[
            MarkdownTextObject(text=truncate(t, SECTION_MAX))
            for t in texts[:CONTEXT_ELEMENTS_MAX]
            if t
        ]
    )


def _buttons(links: Iterable[tuple[str, str | None]]) -> ActionsBlock | None:
    elements = [
        ButtonElement(text=truncate(label, BUTTON_TEXT_MAX), url=target)
        for label, url in links
        if (target := safe_url(url))
    ]
    return ActionsBlock(elements=elements[:5]) if elements else None


def _lines_sections(title: str, lines: Sequence[str], max_blocks: int) -> list[SectionBlock]:
    """Bulleted lines split over as few sections as fit, within ``max_blocks``; what does
    not fit is counted ("… and N more"), never silently dropped."""
    sections: list[SectionBlock] = []
    current = f"*{title}*"
    for index, raw in enumerate(lines):
        line = truncate(raw, SECTION_MAX - 100)
        if len(current) + 1 + len(line) > SECTION_MAX - 40:
            if len(sections) + 1 >= max_blocks:
                current += f"\n… and {len(lines) - index} more"
                break
            sections.append(_section(current))
            current = ""
        current = f"{current}\n{line}" if current else line
    sections.append(_section(current))
    return sections


def _assemble(text: str, *blocks: Block | None, tail: Sequence[Block] = ()) -> SlackMessage:
    present = [b for b in blocks if b is not None]
    return SlackMessage(text=text, blocks=[*present, *tail])


# ---- builds ------------------------------------------------------------------------


def render_build(
    build: Build, templates: Templates | None = None, console: str | None = None
) -> SlackMessage:
    """A terminal build: status, trigger, commit, branch, duration, log link; its release's
    console page when ``console`` (the base URL) is given."""
    templates = templates or Templates()
    icon = _STATUS_ICON.get(build.status, ":grey_question:")
    name = build.trigger_name or build.service or "manual build"
    header, title = _titles(
        templates.build_title,
        {
            "name": name,
            "status": build.status.value,
            "trigger": build.trigger_name,
            "service": build.service,
            "branch": build.branch,
            "short_sha": build.short_sha,
            "build_id": build.id,
            "repo": build.repo,
        },
    )
    duration = _seconds(build.duration.total_seconds()) if build.duration else None
    facts = [
        ("Status", build.status.value),
        ("Trigger", build.trigger_name or build.build_trigger_id),
        ("Service", build.service),
        ("Commit", build.short_sha or build.commit_sha),
        ("Branch", build.branch),
        ("Duration", duration),
    ]
    detail = build.status_detail or (build.failure_info.detail if build.failure_info else None)
    detail_block = None
    if detail and build.status is not BuildStatus.SUCCESS:
        detail_block = _section(escape(detail))
    text = f"{icon} {title}"
    if build.short_sha:
        text += f" ({escape(build.short_sha)})"
    if safe_url(build.log_url):
        text += f" {_link(build.log_url, 'build log')}"
    message = _assemble(
        text,
        _header(header),
        _fields(facts),
        detail_block,
        _buttons([("Build log", build.log_url)]),
        _context(_release(build), f"build `{escape(build.id)}`"),
    )
    return link_release(message, build, console)


# ---- our own events ----------------------------------------------------------------


def _outcome(event: OpsEvent[OpsPayload]) -> str:
    return event.type.value.rsplit(".", 1)[1]


def render_smoke(event: OpsEvent[OpsPayload], templates: Templates) -> SlackMessage:
    """Smoke failed: which checks failed and how, with a link to what was probed."""
    smoke = event.data_as(SmokeResult)
    failed = smoke.failed_checks
    header, title = _titles(
        templates.smoke_title,
        {
            "service": smoke.service,
            "revision": smoke.revision,
            "region": smoke.region,
            "failed": len(failed),
            "total": len(smoke.checks),
        },
    )
    facts = [
        ("Service", smoke.service),
        ("Revision", smoke.revision),
        ("Region", smoke.region),
        ("Failed checks", f"{len(failed)} of {len(smoke.checks)}"),
        ("Commit", smoke.commit_sha[:7] if smoke.commit_sha else None),
        ("Build", smoke.build_id),
    ]
    lines = []
    for check in failed:
        how = [f"HTTP {check.status_code}" if check.status_code else None]
        how.append(f"{check.latency_ms:.0f} ms" if check.latency_ms is not None else None)
        said = ", ".join(h for h in how if h)
        error = f": {escape(check.error)}" if check.error else ""
        lines.append(f"• `{escape(check.name)}` {said}{error}")
    sections = _lines_sections("Failing checks", lines or ["(none listed)"], 40)
    icon = ":rotating_light:" if event.type is EventType.SMOKE_FAILED else ":white_check_mark:"
    text = f"{icon} {title}: {len(failed)} of {len(smoke.checks)} checks failed"
    return _assemble(
        text,
        _header(header),
        _fields(facts),
        *sections,
        _buttons([("Open service", smoke.url)]),
        _context(
            _release(event), f"event `{escape(event.id)}`", f"source `{escape(event.source)}`"
        ),
    )


def _revisions(before: object, after: object) -> str | None:
    if before is None and after is None:
        return None
    return f"{before if before is not None else '(empty)'} → {after if after is not None else '?'}"


def render_migration(event: OpsEvent[OpsPayload], templates: Templates) -> SlackMessage:
    """Migration outcome: what changed, lint findings, and how to undo it."""
    result = event.data_as(MigrationResult)
    outcome = _outcome(event)
    service = result.service or event.service or "unknown service"
    header, title = _titles(
        templates.migration_title,
        {
            "outcome": outcome,
            "service": service,
            "build_id": result.build_id,
            "short_sha": result.commit_sha[:7] if result.commit_sha else None,
        },
    )
    facts = [
        ("Service", service),
        ("Postgres", _revisions(result.postgres.from_, result.postgres.to)),
        ("Graph schema", _revisions(result.graph.from_, result.graph.to)),
        ("Breaking", "yes: older revisions cannot run on this schema" if result.breaking else None),
        ("Commit", result.commit_sha[:7] if result.commit_sha else None),
        ("Build", result.build_id),
        ("Duration", _seconds(result.duration_ms / 1000) if result.duration_ms else None),
    ]
    blocks: list[Block | None] = [_header(header), _fields(facts)]
    if result.error:
        blocks.append(_section(f"*Error*\n{escape(result.error)}"))
    if result.reason:
        blocks.append(_section(f"*Why skipped*\n{escape(result.reason)}"))
    if result.lint_findings:
        lines = [
            f"• *{f.severity}* `{escape(f.rule)}` in `{escape(f.migration)}`"
            f"{' (allowed)' if f.allowed else ''}: {escape(f.message)}"
            for f in result.lint_findings
        ]
        blocks.extend(_lines_sections("Lint findings", lines, 20))
    if event.type is EventType.MIGRATION_SUCCEEDED and (
        result.postgres.changed or result.graph.changed
    ):
        undo = (
            "*To undo*: migrations go forward in production. Write a new migration that "
            "reverts this one; only if it is known to be safe, "
            f"`alembic downgrade {escape(result.postgres.from_ or 'base')}`."
        )
        if result.breaking:
            undo += " Automatic rollback is frozen for this service until a new good release."
        blocks.append(_section(undo))
    elif event.type is EventType.MIGRATION_FAILED:
        blocks.append(
            _section(
                "*What now*: the release is blocked (nothing is deployed). Fix the migration "
                "and push again; the schema stays at "
                f"`{escape(result.postgres.to or result.postgres.from_ or 'base')}`."
            )
        )
    icon = {"succeeded": ":white_check_mark:", "failed": ":x:"}.get(outcome, ":fast_forward:")
    text = f"{icon} {title}"
    if result.error:
        text += f": {escape(result.error)}"
    elif result.reason:
        text += f": {escape(result.reason)}"
    blocks.append(
        _context(_release(event), f"event `{escape(event.id)}`", f"source `{escape(event.source)}`")
    )
    return _assemble(text, *blocks)


_ROLLBACK_ICON = {
    "succeeded": ":rewind:",
    "skipped": ":fast_forward:",
    "failed": ":rotating_light:",
    "frozen": ":ice_cube:",
}


#: Runbooks (docs/runbooks/) for our own outcomes that need a human.
ROLLBACK_RUNBOOKS = {
    "succeeded": "rollback-succeeded.md",
    "failed": "rollback-failed.md",
    "frozen": "rollback-frozen.md",
}


def render_rollback(
    event: OpsEvent[OpsPayload],
    templates: Templates,
    mention: str | None = None,
    runbook_base_url: str | None = None,
) -> SlackMessage:
    """Rollback outcome: what moved, why, how to undo; failed/frozen escalate."""
    result = event.data_as(RollbackResult)
    outcome = _outcome(event)
    header, title = _titles(
        templates.rollback_title,
        {
            "outcome": outcome,
            "service": result.service,
            "from_revision": result.from_revision,
            "to_revision": result.to_revision,
        },
    )
    if result.dry_run:
        header, title = f"{header} (dry run)", f"{title} (dry run)"
    facts = [
        ("Service", result.service),
        ("From revision", result.from_revision),
        ("To revision", result.to_revision),
        ("Started by", "an operator (manual)" if result.manual else "automation"),
        ("Trigger", result.trigger_event_id),
    ]
    escalation = event.type in {EventType.ROLLBACK_FAILED, EventType.ROLLBACK_FROZEN}
    blocks: list[Block | None] = [_header(header)]
    if escalation:
        who = f"{mention} " if mention else ""
        blocks.append(
            _section(f":rotating_light: *Escalation*: {who}a human must decide what happens next.")
        )
    blocks.append(_fields(facts))
    blocks.append(_section(f"*Why*\n{escape(result.reason)}"))
    service = escape(result.service)
    if event.type is EventType.ROLLBACK_SUCCEEDED and result.from_revision and not result.dry_run:
        blocks.append(
            _section(
                "*To undo*: traffic is pinned to the rolled-back-to revision. Send it back with "
                f"`gcloud run services update-traffic {service} "
                f"--to-revisions {escape(result.from_revision)}=100`, or release a fix "
                "(the deploy promotes it explicitly)."
            )
        )
    elif event.type is EventType.ROLLBACK_FAILED:
        target = escape(result.to_revision or "<known-good revision>")
        blocks.append(
            _section(
                "*What now*: traffic may not have moved. Check with "
                f"`gcloud run services describe {service}`, then move it by hand: "
                f"`gcloud run services update-traffic {service} --to-revisions {target}=100`."
            )
        )
    elif event.type is EventType.ROLLBACK_FROZEN:
        blocks.append(
            _section(
                "*What now*: traffic was *not* moved, so there is nothing to undo. Roll forward "
                "with a fix, or roll back by hand once the schema is known to be compatible "
                f"with `{escape(result.to_revision or 'the older revision')}`."
            )
        )
    else:
        blocks.append(_section("*Nothing to undo*: no traffic was moved."))
    runbook = ROLLBACK_RUNBOOKS.get(outcome)
    if runbook and runbook_base_url:
        blocks.append(_buttons([("Runbook", runbook_base_url + runbook)]))
    blocks.append(
        _context(_release(event), f"event `{escape(event.id)}`", f"source `{escape(event.source)}`")
    )
    icon = _ROLLBACK_ICON.get(outcome, ":grey_question:")
    text = f"{icon} {title}: {escape(result.reason)}"
    if escalation and mention:
        text = f"{mention} {text}"
    return _assemble(text, *blocks)


def render_release_report(event: OpsEvent[OpsPayload]) -> SlackMessage:
    """The weekly release metrics (docs/metrics.md): the overall numbers against the
    seed's targets, one line per service, alert noise per policy (the month so far).
    Service and policy names come from the ledger: escaped."""
    from shared.events import ServiceReleaseMetrics, WeeklyReleaseReport

    digest = event.data_as(WeeklyReleaseReport)
    report, overall = digest.report, digest.report.overall
    scope = report.service or "all services"

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value * 100:.1f} %"

    def span(seconds: float | None) -> str:
        if seconds is None or not 0 <= seconds < 1e12:  # also nan and inf
            return "n/a"
        if seconds < 3600:
            return _seconds(seconds)
        hours, minutes = int(seconds // 3600), int(seconds % 3600) // 60
        return f"{hours // 24}d {hours % 24}h" if hours >= 48 else f"{hours}h {minutes:02d}m"

    def judged(shown: str, name: str) -> str:
        ok = next((t.ok for t in overall.targets if t.name == name), None)
        return shown + {True: " :white_check_mark:", False: " :x:", None: ""}[ok]

    def line(m: ServiceReleaseMetrics) -> str:
        return (
            f"• *{escape(m.service or scope)}*: {m.promoted} promoted"
            f" ({m.deployment_frequency.per_week:g}/week,"
            f" {m.deployment_frequency.bucket or 'no deploys'}), {m.failed} failed,"
            f" {m.rollbacks} rolled back · lead time {span(m.lead_time.median_s)}"
            f" · change failure {pct(m.change_failure_rate.value)}"
            f" · restore {span(m.time_to_restore.median_s)}"
        )

    facts = [
        ("Window", f"{_time(report.since)} → {_time(report.until)} ({report.days:g} days)"),
        ("Scope", scope),
        (
            "Deployment success (≥ 99 %)",
            judged(pct(overall.deployment_success_rate.value), "deployment_success_rate"),
        ),
        ("Rollback rate (< 1 %)", judged(pct(overall.rollback_rate.value), "rollback_rate")),
        ("MTTR (< 15 min)", judged(span(overall.mttr_s), "mttr_s")),
        ("Change failure rate", pct(overall.change_failure_rate.value)),
        ("Lead time (median)", span(overall.lead_time.median_s)),
        ("Incident open → closed (median)", span(overall.incident_duration.median_s)),
    ]
    lines = [line(m) for m in report.services] or ["(no release facts in the window)"]
    missed = sum(1 for t in overall.targets if t.ok is False)
    verdict = f"{missed} target(s) missed" if missed else "no target missed"
    noise_blocks: Sequence[Block] = ()
    noise = report.alert_noise
    if noise is not None:
        noisy = {p.policy for p in noise.flagged}
        if noisy:
            verdict += f", {len(noisy)} alert policy(ies) over the noise target"
        shown = sorted(
            (p for p in noise.policies if p.likely_false_positives),
            key=lambda p: (not p.over_target, -p.likely_false_positives, p.month, p.policy),
        )
        noise_lines = [
            f"• {':x:' if p.over_target else ':white_check_mark:'} *{escape(p.policy)}*"
            f" {p.month}{'' if p.month_complete else ' (so far)'}:"
            f" {p.likely_false_positives} likely false of {p.incidents} incident(s)"
            for p in shown
        ] or [f"(no likely false positive since {noise.counted_from:%Y-%m-%d})"]
        noise_blocks = _lines_sections(
            f"Alert noise (at most {noise.max_per_month} a month per policy; likely false:"
            f" closed by itself within {span(noise.close_within_s)}, nothing done)",
            noise_lines,
            10,
        )
    return _assemble(
        f":bar_chart: Release metrics {digest.week} ({escape(scope)}): {overall.promoted}"
        f" promoted, {verdict}",
        _header(plain(f"Release metrics {digest.week}: {scope}")),
        _fields(facts),
        *_lines_sections("Per service", lines, 30),
        *noise_blocks,
        _context(f"event `{escape(event.id)}`", f"source `{escape(event.source)}`"),
    )


_RELEASE_ICON = {
    "deployed": ":package:",
    "promoted": ":large_green_circle:",
    "failed": ":red_circle:",
}


def _phases(phases: dict[str, float]) -> str | None:
    """``deploy 38.2s · smoke_tag 8.1s · … · total 1m 15s`` in the order they ran."""
    if not phases:
        return None
    parts = [f"{escape(name)} {_seconds(ms / 1000)}" for name, ms in phases.items()]
    return " · ".join([*parts, f"total {_seconds(sum(phases.values()) / 1000)}"])


def render_release(event: OpsEvent[OpsPayload]) -> SlackMessage:
    """A release's outcome (``sightops deploy``, docs/deploy.md): ``promoted`` (green: the
    revision serves 100 %), ``failed`` (red: why, and that nothing was promoted),
    ``deployed`` (quiet: not notified by default; serves no traffic yet)."""
    release = event.data_as(ReleaseResult)
    outcome = _outcome(event)
    revision = release.revision or "(no revision)"
    said = {
        "promoted": f"{revision} serves 100 %",
        "deployed": f"{revision} serves no traffic yet (tagged)",
        "failed": release.reason or "the deploy stopped",
    }.get(outcome, outcome)
    header = plain(REDACTOR.redact(f"Release {release.release_id} {outcome}"))
    text = (
        f"{_RELEASE_ICON.get(outcome, ':grey_question:')} Release "
        f"{escape(release.release_id)} {outcome}: {escape(said)}"
    )
    facts = [
        ("Service", release.service),
        ("Revision", release.revision),
        ("Previous revision", release.previous_revision),
        ("Region", release.region),
        ("Commit", release.commit_sha[:7]),
        ("Build", release.build_id),
        ("Image", release.image),
        ("Took", _seconds((release.finished_at - release.started_at).total_seconds())),
    ]
    blocks: list[Block | None] = [_header(header), _fields(facts)]
    if event.type is EventType.RELEASE_FAILED:
        blocks.append(_section(f"*Why*\n{escape(said)}"))
        kept = release.previous_revision or "the revision serving before"
        blocks.append(_section(f"*Nothing was promoted*: traffic stays on `{escape(kept)}`."))
    phases = _phases(release.phases)
    if phases:
        blocks.append(_section(f"*Phases*\n{phases}"))
    blocks.append(_buttons([("Open service", release.url)]))
    blocks.append(
        _context(
            f"release `{escape(release.release_id)}`",
            f"event `{escape(event.id)}`",
            f"source `{escape(event.source)}`",
        )
    )
    return _assemble(text, *blocks)


# ---- the canary (docs/canary.md) -----------------------------------------------------

_CANARY_ICON = {
    "started": ":bird:",
    "stepped": ":arrow_up_small:",
    "promoted": ":large_green_circle:",
    "rolled_back": ":rewind:",
    "held": ":double_vertical_bar:",
    "stopped": ":octagonal_sign:",
}


def _number(value: object, spec: str) -> str:
    """A number from the evidence JSON formatted by ``spec``; anything else is ``?`` (the
    evidence is read off the wire: a missing or odd value must not cost the message)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "?"
    return format(value, spec)


def _rate(value: object) -> str:
    """A rate as a percentage; ``n/a`` when the revision had no requests."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a"
    return f"{value * 100:.2f} %"


def _test_line(name: str, test: Mapping[str, Any]) -> str:
    """One sequential test of a step: counts and rates of both revisions, and where its
    log-likelihood ratios stand against the boundaries (docs/canary.md)."""
    what = "5xx" if name == "errors" else f">= {_number(test.get('threshold_ms'), 'g')} ms"
    outcome = escape(str(test.get("outcome", "?")).replace("_", " "))
    canary = (
        f"{_number(test.get('canary_events'), 'd')}/{_number(test.get('canary_requests'), 'd')}"
    )
    stable = (
        f"{_number(test.get('stable_events'), 'd')}/{_number(test.get('stable_requests'), 'd')}"
    )
    ratio = test.get("ratio")
    times = f" · {_number(ratio, '.2f')}x stable" if ratio is not None else ""
    return (
        f"    {escape(name)} ({what}) *{outcome}*: canary {canary} "
        f"({_rate(test.get('canary_rate'))}) vs stable {stable} "
        f"({_rate(test.get('stable_rate'))}){times}"
        f" · log LR worse {_number(test.get('log_lr_worse'), '.2f')}"
        f" (rollback at {_number(test.get('rollback_at'), '.2f')}),"
        f" not worse {_number(test.get('log_lr_not_worse'), '.2f')}"
        f" (pass at {_number(test.get('promote_at'), '.2f')})"
    )


def _step_line(
    percent: int,
    action: str,
    reason: str,
    evidence: Mapping[str, Any] | None,
    started: datetime | None = None,
    decided: datetime | None = None,
) -> str:
    """One step of a canary as a compact block: its traffic, when, what was decided and
    why, and each test's evidence."""
    when = ""
    if started and decided:
        when = f" ({started:%H:%M} to {decided:%H:%M} UTC)"
    head = f"• *{percent} %*{when}: *{escape(action)}*, {escape(reason)}"
    if not evidence:
        return head
    intervals = evidence.get("intervals")
    verdict = escape(str(evidence.get("verdict", "?")).replace("_", " "))
    lines = [f"{head}\n    verdict *{verdict}* after {_number(intervals, 'd')} interval(s)"]
    for name in ("errors", "latency"):
        test = evidence.get(name)
        if isinstance(test, Mapping):
            lines.append(_test_line(name, test))
    return "\n".join(lines)


def _canary_steps(result: CanaryResult) -> list[str]:
    """Every step's evidence, oldest first; the decision's own evidence too when the
    history does not end with it (a ``held`` at the time limit, say)."""
    lines = [
        _step_line(
            s.percent,
            s.action,
            s.reason,
            s.evidence,
            s.started_at.astimezone(UTC),
            s.decided_at.astimezone(UTC),
        )
        for s in result.steps
    ]
    last = result.steps[-1].evidence if result.steps else None
    if result.evidence and result.evidence != last:
        lines.append(
            _step_line(result.percent_before, result.action, result.reason, result.evidence)
        )
    return lines


def _canary_next(event: OpsEvent[OpsPayload], result: CanaryResult) -> str:
    """What the decision did to the traffic, and what a human may do about it."""
    revision, service = escape(result.revision), escape(result.service)
    stable = escape(result.stable_revision or "the stable revision")
    watch = f"`sightops canary status {service}`"
    if event.type is EventType.CANARY_STARTED:
        return (
            f"*Started*: {result.percent_after} % of the traffic goes to `{revision}`, the "
            f"rest to `{stable}`; every step is analysed against it. Watch it: {watch}."
        )
    if event.type is EventType.CANARY_STEPPED:
        return f"*Stepped*: `{revision}` now serves {result.percent_after} %. Watch it: {watch}."
    if event.type is EventType.CANARY_PROMOTED:
        return f"*Promoted*: `{revision}` serves 100 %; the release is promoted."
    if event.type is EventType.CANARY_ROLLED_BACK:
        return (
            f"*Rolled back*: `{stable}` serves 100 % again and `{revision}` is marked bad. "
            "Release a fix."
        )
    if event.type is EventType.CANARY_HELD and result.action == "frozen":
        return (
            "*Frozen*: a breaking migration was applied since the canary started, so the "
            f"traffic was *not* moved: `{revision}` keeps {result.percent_after} %. Roll "
            f"forward with a fix, or decide by hand ({watch})."
        )
    if event.type is EventType.CANARY_HELD:
        return (
            f"*Held*: no verdict within the step's time limit; `{revision}` keeps "
            f"{result.percent_after} %. A human decides ({watch})."
        )
    return (
        "*Stopped*: the traffic was changed outside the canary (by a person or by "
        "rollback); the canary respects it, moved nothing and does no more for this release."
    )


def render_canary(
    event: OpsEvent[OpsPayload], templates: Templates, mention: str | None = None
) -> SlackMessage:
    """One decision of the canary (docs/canary.md): the traffic before and after, why,
    every step's evidence as a compact block; ``held`` escalates. Each message names its
    release and the release's trace."""
    from shared.release import release_trace_id

    result = event.data_as(CanaryResult)
    outcome = _outcome(event)
    header, title = _titles(
        templates.canary_title,
        {
            "outcome": outcome.replace("_", " "),
            "service": result.service,
            "revision": result.revision,
            "stable_revision": result.stable_revision,
            "percent": result.percent_after,
            "release_id": result.release_id,
        },
    )
    if result.dry_run:
        header, title = f"{header} (dry run)", f"{title} (dry run)"
    took = (result.decided_at - result.started_at).total_seconds()
    facts = [
        ("Service", result.service),
        ("Canary revision", result.revision),
        ("Stable revision", result.stable_revision),
        ("Traffic to the canary", f"{result.percent_before} % → {result.percent_after} %"),
        ("Region", result.region),
        ("Decided by", f"{result.actor} (manual)" if result.manual else result.actor),
        ("Canary running for", _seconds(took) if took >= 0 else None),
    ]
    escalation = event.type is EventType.CANARY_HELD
    blocks: list[Block | None] = [_header(header)]
    if escalation:
        who = f"{mention} " if mention else ""
        blocks.append(
            _section(f":rotating_light: *Escalation*: {who}a human must decide what happens next.")
        )
    blocks.append(_fields(facts))
    blocks.append(_section(f"*Why*\n{escape(result.reason)}"))
    steps = _canary_steps(result)
    if steps:
        blocks.extend(_lines_sections("Evidence, step by step", steps, 8))
    blocks.append(_section(_canary_next(event, result)))
    blocks.append(
        _context(
            f"release `{escape(result.release_id)}`",
            f"trace `{release_trace_id(result.release_id)}`",
            f"event `{escape(event.id)}`",
            f"source `{escape(event.source)}`",
        )
    )
    icon = _CANARY_ICON.get(outcome, ":grey_question:")
    text = f"{icon} {title}: {escape(result.reason)}"
    if escalation and mention:
        text = f"{mention} {text}"
    return _assemble(text, *blocks)


# ---- alerts ------------------------------------------------------------------------


def _epoch(value: float | None) -> str | None:
    return _time(datetime.fromtimestamp(value, UTC)) if value else None


def _alert_line(entry: AlertEntry) -> str:
    parts = [_link(entry.url, entry.incident_id)]
    if entry.resource:
        parts.append(escape(truncate(entry.resource, 120)))
    if entry.observed and entry.state == "firing":
        value = f"observed {escape(truncate(entry.observed, 60))}"
        if entry.threshold:
            value += f" (threshold {escape(truncate(entry.threshold, 40))})"
        parts.append(value)
    if entry.state == "resolved" and entry.ended_at:
        parts.append(f"resolved {_epoch(entry.ended_at)}")
    return "• " + " — ".join(parts)


def render_alert_group(view: AlertGroupView, config: NotifyFileConfig) -> SlackMessage:
    """One message for a group: a single alert in detail, many as a list; "resolved"
    when every alert of the group has closed."""
    alerts = view.firing or view.resolved
    first = alerts[0]
    status = "TEST" if view.test else ("RESOLVED" if view.all_resolved else "FIRING")
    count = "" if view.test or view.all_resolved else f":{len(view.firing)}"
    policy = view.labels.get("policy_name") or first.policy
    service = view.labels.get("service") or first.service
    severity = view.labels.get("severity") or first.severity
    header, title = _titles(
        config.templates.alert_title,
        {
            "status": status,
            "count": count,
            "firing": len(view.firing),
            "resolved": len(view.resolved),
            "policy": policy,
            "service": service,
            "severity": severity,
        },
    )
    if view.test:
        icon = ":test_tube:"
    elif view.all_resolved:
        icon = ":large_green_circle:"
    else:
        icon = _SEVERITY_ICON.get(severity, ":red_circle:")
    single = len(view.firing) + len(view.resolved) == 1
    facts: list[tuple[str, str | None]] = [
        ("Policy", policy),
        ("Service", service),
        ("Severity", severity),
        ("Condition", first.condition),
    ]
    if single:
        facts += [
            ("Observed", first.observed),
            ("Threshold", first.threshold),
            ("Resource", first.resource),
            ("Started", _epoch(first.started_at)),
            ("Ended", _epoch(first.ended_at)),
        ]
    else:
        facts += [("Firing", str(len(view.firing))), ("Resolved", str(len(view.resolved)))]
    blocks: list[Block | None] = [_header(header), _fields(facts)]
    if single and first.summary:
        blocks.append(_section(escape(first.summary)))
    if not single:
        budget = MAX_BLOCKS - 8
        firing_budget = budget if not view.resolved else max(1, budget * 2 // 3)
        if view.firing:
            lines = [_alert_line(a) for a in view.firing]
            blocks.extend(_lines_sections(f"Firing ({len(lines)})", lines, firing_budget))
        if view.resolved:
            lines = [_alert_line(a) for a in view.resolved]
            blocks.extend(
                _lines_sections(f"Resolved ({len(lines)})", lines, max(1, budget - firing_budget))
            )
    if first.doc_subject or first.doc_content:
        doc = "\n".join(escape(p) for p in (first.doc_subject, first.doc_content) if p)
        blocks.append(_section(f"*Documentation*\n{doc}"))
    runbook = first.runbook
    blocks.append(_buttons([("Incident", first.url if single else None), ("Runbook", runbook)]))
    context = [f"{len(view.firing)} firing, {len(view.resolved)} resolved · {view.reason}"]
    if single:
        context.append(f"incident `{escape(first.incident_id)}`")
    blocks.append(_context(*context))
    text = f"{icon} {title}"
    if single and first.summary:
        text += f": {escape(first.summary)}"
    if single and safe_url(first.url):
        text += f" {_link(first.url, 'incident')}"
    return _assemble(text, *blocks)


def render_incident(notification: IncidentNotification, config: NotifyFileConfig) -> SlackMessage:
    """One incident on its own (test notifications; the no-Redis fallback)."""
    entry = alert_entry(notification, config)
    view = AlertGroupView(
        labels={},
        firing=(entry,) if entry.state == "firing" else (),
        resolved=(entry,) if entry.state == "resolved" else (),
        reason="test notification" if notification.is_test else "single alert",
        test=notification.is_test,
    )
    return render_alert_group(view, config)


# ---- routine database care ---------------------------------------------------------

#: The runbook every maintenance message links to (docs/runbooks/).
MAINTENANCE_RUNBOOK = "maintenance.md"


def _bytes(size: int | None) -> str:
    value = float(size or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover (the loop returns)


def render_maintenance(
    event: OpsEvent[OpsPayload], runbook_base_url: str | None = None
) -> SlackMessage:
    """A maintenance run that did something or found something wrong (docs/maintain.md):
    what was rebuilt (size before and after), what needs a human and why, the Neo4j
    indexes that are not ONLINE. Index names, reasons and Neo4j's failure messages come
    from the databases: escaped."""
    from shared.events import IndexCare, MaintenanceResult

    run = event.data_as(MaintenanceResult)

    def name(care: IndexCare) -> str:
        return f"`{escape(f'{care.schema_name}.{care.index}')}` ({escape(care.method)})"

    def bloat(care: IndexCare) -> str:
        return f"bloat {care.bloat_ratio * 100:.0f} %" if care.bloat_ratio is not None else ""

    rebuilt = [i for i in run.indexes if i.action == "reindexed"]
    would = [i for i in run.indexes if i.action == "would_reindex"]
    attention = [i for i in run.indexes if i.action in {"failed", "attention"}]
    deferred = [i for i in run.indexes if i.action == "deferred"]
    graph_wrong = [g for g in run.graph if g.problem]
    wrong = len(attention) + len(graph_wrong) + len(run.problems)

    said = []
    if rebuilt:
        said.append(f"rebuilt {len(rebuilt)} index{'es' if len(rebuilt) > 1 else ''}")
    if would:
        said.append(f"would rebuild {len(would)} (dry run)")
    if wrong:
        said.append(f"{wrong} need{'s' if wrong == 1 else ''} attention")
    summary = ", ".join(said) or "nothing to report"
    icon = ":warning:" if wrong else ":broom:"
    header = plain(f"Database maintenance: {summary}")
    facts = [
        ("Tables analyzed", str(run.tables_analyzed)),
        ("Indexes checked", str(run.indexes_checked)),
        ("Neo4j indexes checked", str(run.graph_checked) if run.graph_checked else None),
        (
            "Waited for the migration lock",
            f"{run.lock_wait_ms:.0f} ms"
            if run.lock_wait_ms < 1000
            else _seconds(run.lock_wait_ms / 1000),
        ),
        ("Took", _seconds((run.finished_at - run.started_at).total_seconds())),
        ("Mode", "dry run: nothing rebuilt" if run.dry_run else None),
    ]
    blocks: list[Block | None] = [_header(header), _fields(facts)]
    if rebuilt:
        lines = [
            f"• {name(i)}: {_bytes(i.size_bytes)} → {_bytes(i.size_after_bytes)}, {bloat(i)}"
            + (f", {_seconds(i.duration_ms / 1000)}" if i.duration_ms is not None else "")
            for i in rebuilt
        ]
        blocks.extend(_lines_sections("Rebuilt (REINDEX CONCURRENTLY)", lines, 10))
    if would:
        lines = [
            f"• {name(i)}: {_bytes(i.size_bytes)}, a fresh build about "
            f"{_bytes(i.expected_bytes)}, {bloat(i)}"
            for i in would
        ]
        blocks.extend(_lines_sections("Would rebuild (dry run)", lines, 10))
    if attention or graph_wrong or run.problems:
        lines = [f"• {name(i)}: {escape(i.reason)}" for i in attention]
        lines += [
            f"• Neo4j {escape(g.kind)} `{escape(g.name)}` ({escape(g.type)}): "
            f"{escape(g.problem or '')}"
            for g in graph_wrong
        ]
        lines += [f"• {escape(problem)}" for problem in run.problems]
        blocks.extend(_lines_sections("Needs attention", lines, 20))
    if deferred:
        lines = [f"• {name(i)}: {_bytes(i.size_bytes)}, {bloat(i)}" for i in deferred]
        blocks.extend(_lines_sections("Left for the next run", lines, 5))
    if runbook_base_url:
        blocks.append(_buttons([("Runbook", runbook_base_url + MAINTENANCE_RUNBOOK)]))
    blocks.append(
        _context(
            f"run `{escape(run.run_id)}`",
            f"event `{escape(event.id)}`",
            f"source `{escape(event.source)}`",
        )
    )
    return _assemble(f"{icon} Database maintenance: {escape(summary)}", *blocks)


#: The runbook a failed backup links to (docs/runbooks/).
BACKUP_RUNBOOK = "backup-stale.md"


def render_backup(event: OpsEvent[OpsPayload], runbook_base_url: str | None = None) -> SlackMessage:
    """A backup's drill (docs/backups.md): ``verified`` (restored into scratch targets and
    identical to its manifest: how much, how long) or ``failed`` (what differed, or why the
    export or the drill stopped). Findings name tables, labels and objects from the
    databases and the bucket: escaped."""
    from shared.events import BackupVerdict

    verdict = event.data_as(BackupVerdict)
    store = {"postgres": "PostgreSQL", "neo4j": "Neo4j"}[verdict.store]
    ok = event.type is EventType.BACKUP_VERIFIED
    what = "backup" if verdict.phase == "backup" else "restore drill"
    summary = f"{store} backup verified" if ok else f"{store} {what} FAILED"
    header = plain(REDACTOR.redact(f"{summary}: {verdict.backup_id or 'no backup'}"))
    total = sum(verdict.counts.values())
    facts = [
        ("Backup", verdict.backup_id),
        ("Taken", verdict.taken_at.strftime("%Y-%m-%d %H:%M UTC") if verdict.taken_at else None),
        ("Restored into", verdict.target),
        ("Rows / items", f"{total:,}" if verdict.counts else None),
        ("Read", _bytes(verdict.bytes) if verdict.bytes else None),
        ("Took", _seconds(verdict.duration_s) if verdict.duration_s else None),
        ("Manifest", verdict.manifest),
    ]
    blocks: list[Block | None] = [_header(header), _fields(facts)]
    if not ok:
        if verdict.reason:
            blocks.append(_section(f"*Why*\n{escape(truncate(verdict.reason, 1500))}"))
        lines = [f"• {escape(finding)}" for finding in verdict.findings]
        blocks.extend(_lines_sections("Differences", lines, 10))
        if runbook_base_url:
            blocks.append(_buttons([("Runbook", runbook_base_url + BACKUP_RUNBOOK)]))
    blocks.append(_context(f"event `{escape(event.id)}`", f"source `{escape(event.source)}`"))
    icon = ":floppy_disk:" if ok else ":rotating_light:"
    return _assemble(f"{icon} {escape(summary)}", *blocks)


def render_ops(
    event: OpsEvent[OpsPayload],
    config: NotifyFileConfig,
    console: str | None = None,
    *,
    actions: bool = False,
) -> SlackMessage:
    """One of our events; a message about a release links to its page on ``console``;
    ``actions`` adds the buttons that act on it (Slack interactivity configured:
    ``shared.notify._buttons``, docs/console.md "Acting from Slack")."""
    message = link_release(_render_family(event, config), event, console)
    if actions:
        from shared.notify._buttons import actions_block, intents_for

        block = actions_block(intents_for(event))
        if block is not None:
            message.blocks.append(block)
    return message


def _render_family(event: OpsEvent[OpsPayload], config: NotifyFileConfig) -> SlackMessage:
    family = event.type.value.split(".")[2]
    if family == "smoke":
        return render_smoke(event, config.templates)
    if family == "migration":
        return render_migration(event, config.templates)
    if family == "rollback":
        return render_rollback(
            event, config.templates, config.escalation.mention, config.runbook_base_url
        )
    if family == "release":
        return render_release(event)
    if family == "report":
        return render_release_report(event)
    if family == "canary":
        return render_canary(event, config.templates, config.escalation.mention)
    if family == "maintain":
        return render_maintenance(event, config.runbook_base_url)
    if family == "backup":
        return render_backup(event, config.runbook_base_url)
    raise ValueError(f"notify does not render {event.type.value}")


# ---- budgets ------------------------------------------------------------------------

#: The runbook every budget message links to (docs/runbooks/).
BUDGET_RUNBOOK = "budget.md"


def _money(amount: float, currency: str) -> str:
    return f"{amount:,.2f} {currency}"


def render_budget(
    notification: BudgetNotification, runbook_base_url: str | None = None
) -> SlackMessage:
    """A budget threshold crossed, by actual or forecast spend; posted once per threshold
    and period (docs/notify.md, "Budget notifications"). The budget's name comes from
    Cloud Billing: escaped like any event text."""
    basis, threshold = notification.crossing or ("actual", 0.0)
    currency = notification.currency_code
    spent = _money(notification.cost_amount, currency)
    budget = _money(notification.budget_amount, currency)
    if notification.budget_amount_type != "SPECIFIED_AMOUNT":
        budget += f" ({notification.budget_amount_type})"
    share = f"{threshold * 100:g} %"
    name = notification.budget_display_name
    if basis == "actual":
        verb, said = "exceeded", f"spend passed {share} of the budget: {spent} of {budget}"
        icon = ":money_with_wings:" if threshold >= 1 else ":warning:"
    else:
        verb = "forecast"
        said = f"spend is forecast to pass {share} of the budget ({spent} of {budget} so far)"
        icon = ":crystal_ball:"
    facts = [
        ("Budget", name),
        ("Threshold", f"{share} of {'actual' if basis == 'actual' else 'forecast'} spend"),
        ("Spent so far", spent),
        ("Budget amount", budget),
        ("Period from", _time(notification.cost_interval_start)),
    ]
    runbook = runbook_base_url + BUDGET_RUNBOOK if runbook_base_url else None
    return _assemble(
        f"{icon} Budget {escape(name)}: {escape(said)}",
        _header(plain(f"Budget {share} {verb}: {name}")),
        _fields(facts),
        _section(
            "*What now*: find what spends it (Cloud Billing reports, grouped by service and"
            " SKU) and follow the runbook. Nothing is stopped automatically; each threshold"
            " is posted once per budget period."
        ),
        _buttons([("Runbook", runbook)]),
        _context(f"budget `{escape(notification.budget_id)}`"),
    )


def render(
    notice: Notice, config: NotifyFileConfig, console: str | None = None, *, actions: bool = False
) -> SlackMessage:
    """The message for one notice sent on its own (everything but grouped alerts);
    ``console`` is the console's base URL (``CONSOLE__BASE_URL``) release pages are under,
    ``actions`` whether our messages get their buttons."""
    event = notice.event
    if isinstance(event, Build):
        return render_build(event, config.templates, console)
    if isinstance(event, IncidentNotification):
        return render_incident(event, config)
    if isinstance(event, BudgetNotification):
        return render_budget(event, config.runbook_base_url)
    return render_ops(event, config, console, actions=actions)

"""Block Kit messages built with slack_sdk's models, always within Slack's limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from shared.events import Build, BuildStatus

HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
MAX_BLOCKS = 50

_STATUS_ICON = {
    BuildStatus.SUCCESS: ":white_check_mark:",
    BuildStatus.FAILURE: ":x:",
    BuildStatus.INTERNAL_ERROR: ":boom:",
    BuildStatus.TIMEOUT: ":hourglass:",
    BuildStatus.CANCELLED: ":no_entry_sign:",
    BuildStatus.EXPIRED: ":hourglass:",
}


def truncate(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


@dataclass
class SlackMessage:
    text: str
    blocks: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": [b.to_dict() for b in self.blocks[:MAX_BLOCKS]]}


def _duration(build: Build) -> str | None:
    if build.duration is None:
        return None
    seconds = int(build.duration.total_seconds())
    return f"{seconds // 60}m {seconds % 60:02d}s"


def render_build(build: Build) -> SlackMessage:
    """A terminal build: status, trigger, commit, branch, duration, log link."""
    icon = _STATUS_ICON.get(build.status, ":grey_question:")
    name = build.trigger_name or build.service or "manual build"
    title = truncate(f"{name}: {build.status.value}", HEADER_MAX)
    facts = [
        ("Status", build.status.value),
        ("Trigger", build.trigger_name),
        ("Service", build.service),
        ("Commit", build.short_sha or build.commit_sha),
        ("Branch", build.branch),
        ("Duration", _duration(build)),
    ]
    fields = [
        MarkdownTextObject(text=truncate(f"*{label}*\n{value}", FIELD_MAX))
        for label, value in facts
        if value
    ]
    blocks: list[Any] = [HeaderBlock(text=PlainTextObject(text=title, emoji=True))]
    blocks.append(SectionBlock(fields=fields[:10]))
    detail = build.status_detail or (build.failure_info.detail if build.failure_info else None)
    if detail and build.status is not BuildStatus.SUCCESS:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=truncate(detail, SECTION_MAX))))
    if build.log_url:
        blocks.append(ActionsBlock(elements=[ButtonElement(text="Build log", url=build.log_url)]))
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=f"build `{build.id}`")]))
    text = f"{icon} {name}: {build.status.value}"
    if build.short_sha:
        text += f" ({build.short_sha})"
    if build.log_url:
        text += f" {build.log_url}"
    return SlackMessage(text=text, blocks=blocks)

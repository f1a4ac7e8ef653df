"""The first stage: filter (is this worth a message?) and route (to which webhooks, grouped
how?). docs/notify.md, "The pipeline".

Routes are ordered; a route matches on kinds, type globs, severities and services; the
first match wins unless it says ``continue``; nothing matched -> the default route. A
resolved route names its webhook *reference*; turning that into a Slack client is the
deliver stage's job, so this module imports no later stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from shared.events import Build, EventType, MaintenanceResult, OpsEvent, ReleaseResult
from shared.notify._config import Grouping, Match, NotifyFileConfig
from shared.notify._model import Notice
from shared.settings import NotifyConfig


@dataclass(frozen=True)
class GroupSettings:
    """A route's grouping, every value resolved (the file's, else Settings')."""

    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float


@dataclass(frozen=True)
class ResolvedRoute:
    name: str
    match: Match
    webhook: str  # a reference (default | log | env:NAME | a secret), resolved by deliver
    grouping: GroupSettings
    continue_: bool = False


def _group_settings(grouping: Grouping) -> GroupSettings:
    assert grouping.group_by is not None
    assert grouping.group_wait is not None
    assert grouping.group_interval is not None
    assert grouping.repeat_interval is not None
    return GroupSettings(
        grouping.group_by, grouping.group_wait, grouping.group_interval, grouping.repeat_interval
    )


def matches(match: Match, notice: Notice) -> bool:
    """An empty criterion matches anything; all given criteria must match."""
    if match.kinds and notice.kind not in match.kinds:
        return False
    if match.types and not any(fnmatchcase(notice.type, p) for p in match.types):
        return False
    if match.severities and notice.severity not in match.severities:
        return False
    return not (match.services and (notice.service or "") not in match.services)


class Router:
    """The configured filters and routes (one per notifier)."""

    def __init__(self, config: NotifyFileConfig, settings: NotifyConfig) -> None:
        self.config = config
        base = config.grouping.merged(
            Grouping(
                group_by=("policy_name", "service"),
                group_wait=settings.group_wait_s,
                group_interval=settings.group_interval_s,
                repeat_interval=settings.repeat_interval_s,
            )
        )
        self.routes = [
            ResolvedRoute(
                r.name, r.match, r.webhook, _group_settings(r.grouping.merged(base)), r.continue_
            )
            for r in config.routes
        ]
        self.default = ResolvedRoute(
            "default", Match(), config.default_webhook, _group_settings(base)
        )

    @property
    def every_route(self) -> list[ResolvedRoute]:
        """The configured routes and the default one."""
        return [*self.routes, self.default]

    def skip_reason(self, notice: Notice) -> str | None:
        """Why a notice is not worth a message (None: it is)."""
        filters = self.config.filters
        event = notice.event
        if isinstance(event, Build):
            if event.status not in filters.builds.statuses:
                return f"build status {event.status.value} is filtered out"
            selector = filters.builds.triggers
            if not selector.is_empty and not selector.selects(event):
                return f"build {event.id} is not from a selected trigger"
            return None
        if isinstance(event, OpsEvent):
            if not any(fnmatchcase(notice.type, p) for p in filters.ops_types):
                return f"{notice.type} is not notified"
            if event.type is EventType.MIGRATION_SKIPPED and not filters.migration_skipped:
                return "migration skips are recorded, not posted (filters.migration_skipped)"
            if event.type is EventType.ROLLBACK_SKIPPED and not filters.rollback_skipped:
                return "rollback skips are recorded, not posted (filters.rollback_skipped)"
            if event.type is EventType.CANARY_STEPPED and not filters.canary_stepped:
                return "canary steps are recorded, not posted (filters.canary_stepped)"
            if isinstance(event.data, ReleaseResult) and event.data.via == "canary":
                return "the canary's own message tells how this release ended"
            if isinstance(event.data, MaintenanceResult) and not event.data.worth_posting:
                return "a maintenance run that did nothing and found nothing wrong is recorded"
            return None
        if notice.type == "alert.test" and not filters.alert_test_notifications:
            return "test notifications are filtered out"
        return None

    def route(self, notice: Notice) -> list[ResolvedRoute]:
        """Matching routes in order; the default route when none matches."""
        chosen: list[ResolvedRoute] = []
        for route in self.routes:
            if matches(route.match, notice):
                chosen.append(route)
                if not route.continue_:
                    break
        return chosen or [self.default]

    def named(self, name: str) -> ResolvedRoute:
        """The route a group was created under (a route since removed: the default)."""
        for route in self.routes:
            if route.name == name:
                return route
        return self.default

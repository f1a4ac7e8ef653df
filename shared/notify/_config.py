"""notify's YAML configuration: routes, filters, grouping, templates, runbooks.

Validated with pydantic when the function starts (and by ``sightops notify check-config``)
so a typo fails a deploy, not a 3 a.m. alert. Every error names the file and the field.
Webhook URLs are credentials: the file only ever holds *references* to them (``default``,
``env:NAME`` or a Secret Manager reference), never a URL.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.errors import ConfigError
from shared.events import BuildSelector, BuildStatus
from shared.events._common import format_loc
from shared.runtime import Deps, process_deps
from shared.secrets import is_reference

Kind = Literal[
    "build",
    "smoke",
    "migration",
    "rollback",
    "release",
    "canary",
    "alert",
    "budget",
    "maintain",
    "backup",
]
KINDS: tuple[str, ...] = (
    "build",
    "smoke",
    "migration",
    "rollback",
    "release",
    "canary",
    "alert",
    "budget",
    "maintain",
    "backup",
)
#: Labels an alert group can be keyed by.
GROUP_LABELS = frozenset(
    {"policy_name", "service", "severity", "condition_name", "resource_type", "project"}
)
_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<u>ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """``30s``, ``5m``, ``4h``, ``250ms`` or a number of seconds -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match["n"]) * _UNIT_S[match["u"] or "s"]
    raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 4h)")


class _Strict(BaseModel):
    """Configuration models refuse unknown keys: a typo must fail at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_webhook_reference(value: str) -> str:
    """``default``, ``log``, ``env:NAME`` or ``projects/P/secrets/S/versions/V``."""
    value = value.strip()
    if value in {"default", "log"}:
        return value
    if value.startswith("env:") and re.fullmatch(r"env:[A-Za-z_][A-Za-z0-9_]*", value):
        return value
    if is_reference(value):
        return value
    if "://" in value:
        raise ValueError(
            "webhook URLs are credentials and must not be written in the config file; "
            "use env:NAME or a Secret Manager reference projects/P/secrets/S/versions/V"
        )
    raise ValueError(
        f"{value[:40]!r} is not a webhook reference (default, log, env:NAME, or "
        "projects/P/secrets/S/versions/V)"
    )


class Grouping(_Strict):
    """Alertmanager's grouping knobs; None means "the default"."""

    group_by: tuple[str, ...] | None = None
    group_wait: float | None = None
    group_interval: float | None = None
    repeat_interval: float | None = None

    @field_validator("group_wait", "group_interval", "repeat_interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @field_validator("group_by")
    @classmethod
    def _labels(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        unknown = sorted(set(value) - GROUP_LABELS)
        if unknown:
            raise ValueError(f"unknown group_by label(s) {unknown}; known: {sorted(GROUP_LABELS)}")
        return value

    def merged(self, other: Grouping) -> Grouping:
        """``self`` with unset values taken from ``other``."""
        return Grouping(
            group_by=self.group_by if self.group_by is not None else other.group_by,
            group_wait=self.group_wait if self.group_wait is not None else other.group_wait,
            group_interval=(
                self.group_interval if self.group_interval is not None else other.group_interval
            ),
            repeat_interval=(
                self.repeat_interval if self.repeat_interval is not None else other.repeat_interval
            ),
        )


class Match(_Strict):
    """What a route takes; an empty list matches anything. ``types`` are glob patterns
    over the event type (``build.FAILURE``, ``sight.ops.rollback.*``, ``alert.open``)."""

    kinds: tuple[Kind, ...] = ()
    types: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    services: tuple[str, ...] = ()

    @field_validator("severities")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.strip().lower() for v in value)


class Route(_Strict):
    """One route: which notices, which webhook, how alerts are grouped."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    match: Match = Match()
    webhook: str = "default"
    grouping: Grouping = Grouping()
    #: Alertmanager's ``continue``: keep matching later routes after this one.
    continue_: bool = Field(default=False, alias="continue")

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, value: str) -> str:
        return check_webhook_reference(value)


class BuildFilter(_Strict):
    """Which builds are worth a message: statuses, and optionally which triggers."""

    statuses: frozenset[BuildStatus] = frozenset(
        {
            BuildStatus.SUCCESS,
            BuildStatus.FAILURE,
            BuildStatus.INTERNAL_ERROR,
            BuildStatus.TIMEOUT,
            BuildStatus.CANCELLED,
            BuildStatus.EXPIRED,
        }
    )
    #: Empty: every build; otherwise only builds this selector selects.
    triggers: BuildSelector = BuildSelector()

    @field_validator("statuses")
    @classmethod
    def _terminal(cls, value: frozenset[BuildStatus]) -> frozenset[BuildStatus]:
        bad = sorted(s.value for s in value if not s.is_terminal)
        if bad:
            raise ValueError(f"only terminal statuses can be notified, not {bad}")
        return value


class Filters(_Strict):
    builds: BuildFilter = BuildFilter()
    #: Our own event types that are notified (glob patterns).
    ops_types: tuple[str, ...] = (
        "sight.ops.smoke.failed",
        "sight.ops.migration.*",
        "sight.ops.rollback.*",
        "sight.ops.release.promoted",  # deployed is quiet: the promotion follows
        "sight.ops.release.failed",
        "sight.ops.report.weekly",
        "sight.ops.canary.*",  # its decisions (requested and tick are never posted)
        "sight.ops.maintain.completed",  # only when something was done or is wrong
        "sight.ops.backup.verified",  # a backup restored and identical (docs/backups.md)
        "sight.ops.backup.failed",
    )
    #: Show Cloud Monitoring's "Send test notification".
    alert_test_notifications: bool = True
    #: Post ``sight.ops.migration.skipped`` (a build migrate did not select, e.g. a
    #: manual build). Off by default, whatever ``ops_types`` says: such skips are
    #: recorded (``ops.actions``, the runtime's receipt), not worth a human's attention.
    migration_skipped: bool = False
    #: Post ``sight.ops.rollback.skipped`` too (a revision serving no traffic, a late
    #: incident notification, a storm's later incidents). Off by default for the same
    #: reason: the decision is recorded, and during an alert storm one skip per incident
    #: would bury the one message that matters.
    rollback_skipped: bool = False
    #: Post ``sight.ops.canary.stepped`` too (each traffic step of a healthy canary). Off
    #: by default: the outcome (promoted, rolled back, held, stopped) carries every step's
    #: evidence, so a canary is one message at its start and one at its end.
    canary_stepped: bool = False


# Variables each template may use (documented in docs/notify.md).
TEMPLATE_FIELDS: Mapping[str, frozenset[str]] = {
    "build_title": frozenset(
        {"name", "status", "trigger", "service", "branch", "short_sha", "build_id", "repo"}
    ),
    "smoke_title": frozenset({"service", "revision", "region", "failed", "total"}),
    "migration_title": frozenset({"outcome", "service", "build_id", "short_sha"}),
    "rollback_title": frozenset({"outcome", "service", "from_revision", "to_revision"}),
    "canary_title": frozenset(
        {"outcome", "service", "revision", "stable_revision", "percent", "release_id"}
    ),
    "alert_title": frozenset(
        {"status", "count", "firing", "resolved", "policy", "service", "severity"}
    ),
}


class Templates(_Strict):
    """Title formats (Python ``str.format`` with plain names only: no attribute or index
    access, no code). The plain-text fallback starts with the same title."""

    build_title: str = "{name}: {status}"
    smoke_title: str = "Smoke tests failed: {service} {revision}"
    migration_title: str = "Migration {outcome}: {service}"
    rollback_title: str = "Rollback {outcome}: {service}"
    canary_title: str = "Canary {outcome}: {service}"
    alert_title: str = "[{status}{count}] {policy}"

    @model_validator(mode="after")
    def _check(self) -> Templates:
        for name, allowed in TEMPLATE_FIELDS.items():
            check_template(getattr(self, name), allowed, name)
        return self


class RunbookRule(_Strict):
    """A policy whose name matches ``policy`` (a regular expression, case-insensitive)
    links to ``runbook`` (a file under docs/runbooks/)."""

    policy: str
    runbook: str = Field(pattern=r"^[a-z0-9\-]+\.md$")

    @field_validator("policy")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


class Escalation(_Strict):
    """Rollback failed/frozen and canary held are escalations; ``mention`` (e.g.
    ``<!here>``) is added."""

    mention: str | None = None


class NotifyFileConfig(_Strict):
    """The whole file (``config/notify.yaml``)."""

    version: Literal[1] = 1
    routes: tuple[Route, ...] = ()
    #: Where unmatched notices go.
    default_webhook: str = "default"
    grouping: Grouping = Grouping()
    filters: Filters = Filters()
    templates: Templates = Field(default_factory=Templates)
    runbook_base_url: str = "https://github.com/sight-platform/sight-ops/blob/main/docs/runbooks/"
    runbooks: tuple[RunbookRule, ...] = ()
    escalation: Escalation = Escalation()

    @field_validator("default_webhook")
    @classmethod
    def _webhook(cls, value: str) -> str:
        return check_webhook_reference(value)

    @model_validator(mode="after")
    def _unique_routes(self) -> NotifyFileConfig:
        names = [r.name for r in self.routes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"route names must be unique: {dupes}")
        return self


class _PlainNames(string.Formatter):
    """``str.format`` restricted to plain names; missing values render empty."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if not field_name.isidentifier():
            raise ConfigError(f"template field {{{field_name}}}: only plain names are allowed")
        return kwargs.get(field_name, ""), field_name


_FORMATTER = _PlainNames()


def check_template(template: str, allowed: frozenset[str], what: str) -> None:
    """Raise ValueError for a template that uses unknown or non-plain fields."""
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    for _literal, field, _spec, _conv in parsed:
        if field is None:
            continue
        if field == "" or not field.isidentifier():
            raise ValueError(f"{what}: field {{{field}}} must be a plain name")
        if field not in allowed:
            raise ValueError(f"{what}: unknown field {{{field}}}; allowed: {sorted(allowed)}")
    render_template(template, {name: "x" for name in allowed})


def render_template(template: str, values: Mapping[str, object]) -> str:
    """Format a validated template; values are turned into strings first."""
    clean = {k: "" if v is None else str(v) for k, v in values.items()}
    try:
        return _FORMATTER.vformat(template, (), clean)
    except (ValueError, IndexError, KeyError) as exc:
        raise ConfigError(f"template {template[:60]!r}: {exc}") from None


def check_environment(config: NotifyFileConfig, environ: Mapping[str, str]) -> NotifyFileConfig:
    """``env:NAME`` webhook references must name a set variable (checked at cold start,
    so a missing one fails the deploy rather than the first message of that route)."""
    references = [config.default_webhook, *(r.webhook for r in config.routes)]
    missing = sorted({r[4:] for r in references if r.startswith("env:") and not environ.get(r[4:])})
    if missing:
        raise ConfigError(f"webhook environment variable(s) not set: {', '.join(missing)}")
    return config


def load_config(path: str | Path | None) -> NotifyFileConfig:
    """Read and validate the file; None means the built-in defaults. ``ConfigError``
    names the file and the first wrong field."""
    if path is None or str(path) == "":
        return NotifyFileConfig()
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read notify config ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}: not valid YAML{at}") from None
    return parse_config(raw if raw is not None else {}, where)


def parse_config(raw: Any, where: str = "notify config") -> NotifyFileConfig:
    """Validate an already-decoded mapping."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: the top level must be a mapping")
    try:
        return NotifyFileConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    """Every problem with its field path; input values are never echoed (they may be
    the very webhook URL someone pasted by mistake)."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"field {format_loc(tuple(error['loc']))!r}: {message}")
    return "; ".join(problems[:5]) + (
        f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    )


def _read_config(deps: Deps) -> NotifyFileConfig:
    return check_environment(load_config(deps.settings.notify.config_file), os.environ)


def config_for(deps: Deps) -> NotifyFileConfig:
    """The config file of ``deps``, read and validated (``env:`` webhook variables
    included) once, on first use (``Deps.service``): the only place notify loads it."""
    return deps.service(_read_config)


def prepare(deps: Deps | None = None) -> NotifyFileConfig:
    """Read and validate the config now, at import of ``functions/notify/main.py``.

    A broken config file (or an ``env:`` webhook variable that is unset) then fails the
    cold start, not the first alert. Only the file is read here: the notifier (Redis,
    Slack clients) is built by the first delivery, from this same validated config
    (docs/architecture.md, "Cold start")."""
    return config_for(deps or process_deps())

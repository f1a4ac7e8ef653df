"""Cloud Build notifications from the ``cloud-builds`` topic.

Message data is the Build resource in proto3 JSON (camelCase, enums as strings, int64 as
strings, RFC3339 times with up to nanosecond precision). Proto3 JSON omits fields that
hold their default value, so every field except the build id may be missing: a
``STATUS_UNKNOWN`` build has no ``status`` key at all, a manual build has no
``buildTriggerId`` and no ``substitutions``. The Pub/Sub attributes carry ``buildId`` and
``status`` so routing works without decoding.

Which values may travel from a build into the deploy (``cloudbuild-deploy.yaml`` checks the
same patterns again, docs/deploy.md): ``COMMIT_SHA_RE``, ``SERVICE_NAME_RE``,
``BUILD_ID_RE``. The build id is checked at parse (Cloud Build generates it); the
substitutions are not, since a caller chooses them and notify must still report such a
build: migrate checks them on the builds it selects (docs/migrate.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from shared.events._common import (
    EventModel,
    UtcDatetime,
    invalid,
    load_json_object,
    quote,
    validate,
)

_WHAT = "cloud-builds message"

# Matched with ``fullmatch`` (Python's ``$`` would accept a trailing newline). Keep them
# equal to the patterns of cloudbuild-deploy.yaml's first step (tests/infra checks it).
#: A full git commit: 40 lowercase hex digits (what GitHub triggers set as ``COMMIT_SHA``).
COMMIT_SHA_RE = re.compile(r"[0-9a-f]{40}")
#: A Cloud Run service name (RFC 1035 label, at most 63 characters).
SERVICE_NAME_RE = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
#: A Cloud Build id: Google generates UUIDs but documents an opaque id, so letters, digits
#: and hyphens; nothing a shell, a URL or Slack would read as syntax.
BUILD_ID_RE = re.compile(r"[0-9A-Za-z][-0-9A-Za-z]{0,127}")


def _full_match(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if pattern.fullmatch(value) is None:
            raise ValueError(f"must be {what}")
        return value

    return check


CommitSha = Annotated[
    str, AfterValidator(_full_match(COMMIT_SHA_RE, "a full commit: 40 lowercase hex digits"))
]
ServiceName = Annotated[
    str, AfterValidator(_full_match(SERVICE_NAME_RE, "a Cloud Run service name"))
]
BuildId = Annotated[
    str,
    AfterValidator(_full_match(BUILD_ID_RE, "a Cloud Build id (letters, digits, hyphens)")),
]


def is_commit_sha(value: str | None) -> bool:
    """True for a full lowercase commit (``COMMIT_SHA_RE``)."""
    return value is not None and COMMIT_SHA_RE.fullmatch(value) is not None


def is_service_name(value: str | None) -> bool:
    """True for a Cloud Run service name (``SERVICE_NAME_RE``)."""
    return value is not None and SERVICE_NAME_RE.fullmatch(value) is not None


class BuildStatus(StrEnum):
    """``google.devtools.cloudbuild.v1.Build.Status``."""

    STATUS_UNKNOWN = "STATUS_UNKNOWN"
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    WORKING = "WORKING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"

    @property
    def is_terminal(self) -> bool:
        """A build publishes exactly one terminal status, after which nothing changes."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        BuildStatus.SUCCESS,
        BuildStatus.FAILURE,
        BuildStatus.INTERNAL_ERROR,
        BuildStatus.TIMEOUT,
        BuildStatus.CANCELLED,
        BuildStatus.EXPIRED,
    }
)

# proto3 JSON parsers must accept enum numbers too; Google emits names, but be safe.
_STATUS_NUMBERS = {
    0: BuildStatus.STATUS_UNKNOWN,
    10: BuildStatus.PENDING,
    1: BuildStatus.QUEUED,
    2: BuildStatus.WORKING,
    3: BuildStatus.SUCCESS,
    4: BuildStatus.FAILURE,
    5: BuildStatus.INTERNAL_ERROR,
    6: BuildStatus.TIMEOUT,
    7: BuildStatus.CANCELLED,
    9: BuildStatus.EXPIRED,
}


def _coerce_status(value: Any) -> Any:
    """Map names and numbers to ``BuildStatus``; a status from the future is UNKNOWN.

    Failing on a new status would dead-letter every message of every build once Google
    adds one; ``STATUS_UNKNOWN`` is non-terminal, so nothing acts on it by mistake.
    """
    if value is None:
        return BuildStatus.STATUS_UNKNOWN
    if isinstance(value, str):
        try:
            return BuildStatus(value.strip().upper())
        except ValueError:
            return BuildStatus.STATUS_UNKNOWN
    if isinstance(value, int) and not isinstance(value, bool):
        return _STATUS_NUMBERS.get(value, BuildStatus.STATUS_UNKNOWN)
    return value  # let validation report the wrong type


class _CamelModel(EventModel):
    """proto3 JSON names are lowerCamelCase; Python attributes stay snake_case."""

    model_config = ConfigDict(alias_generator=to_camel)


class BuiltImage(_CamelModel):
    """One pushed image (``results.images[]``); the digest pins what was built."""

    name: str | None = None
    digest: str | None = None


class BuildResults(_CamelModel):
    """``results``: only the pushed images matter to sight-ops."""

    images: list[BuiltImage] = Field(default_factory=list)

    @field_validator("images", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


class FailureInfo(_CamelModel):
    """``failureInfo``: why a FAILURE build failed.

    ``type`` stays a string (``USER_BUILD_STEP``, ``PUSH_FAILED``, ``FETCH_SOURCE_FAILED``,
    ...) so a new failure type never makes the build unparseable.
    """

    type: str | None = None
    detail: str | None = None


class Build(_CamelModel):
    """The Build resource as published on ``cloud-builds``; every field but ``id`` optional."""

    id: BuildId
    name: str | None = None
    project_id: str | None = None
    status: BuildStatus = BuildStatus.STATUS_UNKNOWN
    status_detail: str | None = None
    create_time: UtcDatetime | None = None
    start_time: UtcDatetime | None = None
    finish_time: UtcDatetime | None = None
    build_trigger_id: str | None = None
    substitutions: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list)
    results: BuildResults | None = None
    log_url: str | None = None
    failure_info: FailureInfo | None = None
    # Tolerated, not interpreted: their shape depends on the source type.
    source: dict[str, Any] | None = None
    source_provenance: dict[str, Any] | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        return _coerce_status(value)

    @field_validator("substitutions", "tags", "images", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return {} if info.field_name == "substitutions" else []
        return value

    @property
    def is_terminal(self) -> bool:
        """True once the build has finished, whatever the outcome."""
        return self.status.is_terminal

    @property
    def duration(self) -> timedelta | None:
        """Execution time (``finishTime - startTime``); None until both are known."""
        if self.start_time is None or self.finish_time is None:
            return None
        return self.finish_time - self.start_time

    def _substitution(self, *keys: str) -> str | None:
        for key in keys:
            value = self.substitutions.get(key)
            if value:
                return value
        return None

    @property
    def trigger_name(self) -> str | None:
        """``TRIGGER_NAME``; present on triggered builds only."""
        return self._substitution("TRIGGER_NAME")

    @property
    def commit_sha(self) -> str | None:
        """``COMMIT_SHA`` (``REVISION_ID`` on older triggers); None for manual builds."""
        return self._substitution("COMMIT_SHA", "REVISION_ID")

    @property
    def short_sha(self) -> str | None:
        """``SHORT_SHA``, or the first 7 characters of the commit."""
        short = self._substitution("SHORT_SHA")
        if short is not None:
            return short
        commit = self.commit_sha
        return commit[:7] if commit else None

    @property
    def branch(self) -> str | None:
        """``BRANCH_NAME``; None for tag and manual builds."""
        return self._substitution("BRANCH_NAME")

    @property
    def repo(self) -> str | None:
        """``REPO_NAME`` (``REPO_FULL_NAME`` when only that is set)."""
        return self._substitution("REPO_NAME", "REPO_FULL_NAME")

    @property
    def service(self) -> str | None:
        """The ``_SERVICE`` user substitution: which Sight service this build ships."""
        return self._substitution("_SERVICE")


def parse_build_message(data: bytes, attributes: Mapping[str, str]) -> Build:
    """Parse one ``cloud-builds`` message; raise ``InvalidEventError`` if it never can be.

    The ``status`` attribute fills in a status missing from data (proto3 drops
    ``STATUS_UNKNOWN``), and ``buildId`` fills in a missing id; an id that disagrees with
    ``buildId`` means the message is corrupt, so it is rejected rather than guessed at.
    """
    obj = load_json_object(data, _WHAT)
    attr_id = attributes.get("buildId") or None
    data_id = obj.get("id")
    if attr_id is not None:
        if data_id in (None, ""):
            obj["id"] = attr_id
        elif data_id != attr_id:
            raise invalid(
                _WHAT,
                f"field 'id' {quote(data_id, 60)} disagrees with attribute "
                f"'buildId' {quote(attr_id, 60)}",
            )
    attr_status = attributes.get("status") or None
    if attr_status is not None and obj.get("status") in (None, ""):
        obj["status"] = attr_status
    return validate(Build, obj, _WHAT)


class BuildSelector(BaseModel):
    """Which builds a function acts on (migrate) or reports (notify): configuration.

    A build is selected when it matches any listed trigger id, trigger name, tag or
    ``_SERVICE``. An empty selector selects nothing, so a missing configuration can never
    turn into "migrate on every build". Unlike event models, unknown keys are rejected:
    a typo in configuration must fail at start-up, not silently select nothing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    trigger_ids: frozenset[str] = frozenset()
    trigger_names: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()

    @property
    def is_empty(self) -> bool:
        """True when nothing is configured (and so nothing is selected)."""
        return not (self.trigger_ids or self.trigger_names or self.tags or self.services)

    def selects(self, build: Build) -> bool:
        """True if the build matches at least one configured criterion."""
        if build.build_trigger_id is not None and build.build_trigger_id in self.trigger_ids:
            return True
        trigger_name = build.trigger_name
        if trigger_name is not None and trigger_name in self.trigger_names:
            return True
        if not self.tags.isdisjoint(build.tags):
            return True
        service = build.service
        return service is not None and service in self.services


TriggerId = Annotated[str, Field(min_length=1)]


class MigrateSelector(BaseModel):
    """Which SUCCESS builds migrate acts on: those run by one of ``trigger_ids``.

    Unlike ``BuildSelector`` (notify's report filter), nothing the caller of a build chooses
    can select it: ``gcloud builds submit`` sets any substitution (``_SERVICE``,
    ``COMMIT_SHA``, ``TRIGGER_NAME``) and any tag, but ``buildTriggerId`` is set by Cloud
    Build only, for builds a trigger ran. A manual build has none, so it is never selected.
    ``services`` can only narrow the selection (the ``_SERVICE`` of a triggered build);
    services without trigger ids is a configuration error, and so are ``trigger_names`` and
    ``tags``: both fail at start-up instead of silently selecting nothing. Empty selects
    nothing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    trigger_ids: frozenset[TriggerId] = frozenset()
    services: frozenset[ServiceName] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _caller_controlled_keys(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            named = sorted(k for k in ("trigger_names", "tags") if k in value)
            if named:
                raise ValueError(
                    f"{' and '.join(named)} cannot select builds for migrate (the caller of "
                    "a manual build chooses them): list trigger_ids, optionally services"
                )
        return value

    @model_validator(mode="after")
    def _services_only_narrow(self) -> MigrateSelector:
        if self.services and not self.trigger_ids:
            raise ValueError(
                "services only narrows trigger_ids (a manual build can name any service): "
                "list the CI triggers' ids in trigger_ids"
            )
        return self

    @property
    def is_empty(self) -> bool:
        """True when no trigger is configured (and so nothing is selected)."""
        return not self.trigger_ids

    def why_not(self, build: Build) -> str | None:
        """Why ``build`` is not selected (None: it is). Never quotes caller-chosen text."""
        trigger_id = build.build_trigger_id
        if trigger_id is None:
            return "not selected: no trigger ran it (a manual build)"
        if trigger_id not in self.trigger_ids:
            return f"not selected: trigger {quote(trigger_id, 60)} is not one of migrate's"
        if self.services and build.service not in self.services:
            return "not selected: its _SERVICE is not one of migrate's services"
        return None

    def selects(self, build: Build) -> bool:
        """True if a configured trigger ran the build (and its service is listed, if any)."""
        return self.why_not(build) is None

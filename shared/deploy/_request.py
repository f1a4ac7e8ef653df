"""What ``sightops deploy`` is asked to deploy, checked before anything is touched.

The values come from a Pub/Sub message through Cloud Build substitutions (docs/deploy.md),
so each must have the shape of what it names: the patterns of
``shared/events/_cloudbuild.py`` that migrate enforces before publishing and that
``cloudbuild-deploy.yaml``'s check-event step repeats. The image is never given: it is
derived, ``<image repo>/<service>:<commit>``, the one name CI pushes (docs/deploy.md,
"Image names").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.events import BUILD_ID_RE, COMMIT_SHA_RE, SERVICE_NAME_RE, EventType

#: A Cloud Run service name is at most 49 characters; ours is then at most 62
#: (``<service>-<8 hex>-<3 chars>``), within the 63 a revision name may have.
MAX_SERVICE_CHARS = 49
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
REGION_RE = re.compile(r"[a-z]+(-[a-z]+)+[0-9]+")
PROJECT_RE = re.compile(r"[a-z][-a-z0-9]{4,28}[a-z0-9]")
#: ``<registry host>/<path>``: lowercase letters, digits, ``.-_/`` and an optional port.
IMAGE_REPO_RE = re.compile(r"[a-z0-9][-a-z0-9.]*(:[0-9]{1,5})?(/[a-z0-9][-a-z0-9._]*)+")


class InvalidDeployRequest(ValueError):
    """A value does not have the shape of what it names; nothing was deployed."""


@dataclass(frozen=True)
class DeployRequest:
    """One release to drive: the substitutions of the deploy build (docs/deploy.md)."""

    service: str
    commit_sha: str
    project: str
    region: str
    image_repo: str
    build_id: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    tag: str = "candidate"
    #: the ``migration.succeeded`` event's W3C ``traceparent``: the deploy's span continues
    #: it (docs/release.md). Never refused: an invalid one is ignored and the span is a
    #: root span in the release's trace, as for a message without one.
    traceparent: str | None = None

    @property
    def image(self) -> str:
        """``<image repo>/<service>:<commit>``: what CI pushes (cloudbuild.yaml)."""
        return image_reference(self.image_repo, self.service, self.commit_sha)

    def validate(self) -> DeployRequest:
        """Itself, or :class:`InvalidDeployRequest` naming the first bad value."""
        where = f"event {self.event_id}: " if self.event_id else ""
        if self.event_type is not None and self.event_type != EventType.MIGRATION_SUCCEEDED:
            raise InvalidDeployRequest("not a migration.succeeded event")
        if self.event_id is not None and not UUID_RE.fullmatch(self.event_id):
            raise InvalidDeployRequest("the event id is not a UUID")
        if not SERVICE_NAME_RE.fullmatch(self.service) or len(self.service) > MAX_SERVICE_CHARS:
            raise InvalidDeployRequest(f"{where}service is not a Cloud Run service name")
        if not COMMIT_SHA_RE.fullmatch(self.commit_sha):
            raise InvalidDeployRequest(
                f"{where}commit is not a full commit (40 lowercase hex digits)"
            )
        if self.build_id is not None and not BUILD_ID_RE.fullmatch(self.build_id):
            raise InvalidDeployRequest(f"{where}build id is not a Cloud Build id")
        if not REGION_RE.fullmatch(self.region):
            raise InvalidDeployRequest("region is not a region")
        if not PROJECT_RE.fullmatch(self.project):
            raise InvalidDeployRequest("project is not a Google Cloud project id")
        if not SERVICE_NAME_RE.fullmatch(self.tag):
            raise InvalidDeployRequest("tag is not a Cloud Run revision tag")
        if not IMAGE_REPO_RE.fullmatch(self.image_repo):
            raise InvalidDeployRequest("image repository is not <host>/<path>")
        return self


def image_reference(image_repo: str, service: str, commit_sha: str) -> str:
    """The one image name of a service at a commit, shared by CI and the deploy."""
    return f"{image_repo.rstrip('/')}/{service}:{commit_sha}"

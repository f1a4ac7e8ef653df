"""One release of one service: its identity and its trace (docs/release.md).

A release is a commit of a service going through build -> migrate -> deploy -> smoke ->
promote (or rollback / freeze) -> Slack. Every event, action, log line and Slack message
of it carries the same ``release_id``, and every span belongs to the same trace, whose id
is derived from the release id: a function that receives a message without trace context
(a Cloud Build notification) still joins the release's trace instead of starting another.
"""

from __future__ import annotations

import hashlib
import re

#: Pub/Sub attribute names (W3C trace context, https://www.w3.org/TR/trace-context/).
RELEASE_ATTRIBUTE = "release_id"
TRACEPARENT_ATTRIBUTE = "traceparent"
TRACESTATE_ATTRIBUTE = "tracestate"

_RELEASE_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?@[0-9a-f]{12}$")


def release_id(service: str, commit_sha: str) -> str:
    """``<service>@<first 12 hex digits of the commit>``: readable in Slack and logs, and
    the same wherever it is computed (no shared state needed to agree on it)."""
    return f"{service}@{commit_sha.lower()[:12]}"


def is_release_id(value: str) -> bool:
    return bool(_RELEASE_RE.match(value))


def release_trace_id(release: str) -> str:
    """The release's trace id (32 lowercase hex digits, never all zero)."""
    digest = hashlib.sha256(f"sight-ops release {release}".encode()).hexdigest()[:32]
    return digest if int(digest, 16) else "1" + digest[1:]

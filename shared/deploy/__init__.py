"""``sightops deploy`` as a library: one release of one service, from a tagged no-traffic
revision to promoted (docs/deploy.md, "sightops deploy").

- :class:`DeployRequest` -- what to deploy, validated (the patterns migrate enforces);
- :func:`run_deploy` -- deploy, smoke the tag URL, promote, smoke the service URL, and
  publish ``sight.ops.release.*`` and ``sight.ops.smoke.*`` on the way;
- :class:`CloudRunDeployer` -- the two Cloud Run calls (``shared.cloudrun`` plumbing).
"""

from shared.deploy._cloudrun import (
    CloudRunDeployer,
    Deployed,
    RevisionExists,
    RevisionNotReady,
    create_deployer,
)
from shared.deploy._request import DeployRequest, InvalidDeployRequest, image_reference
from shared.deploy._run import (
    PHASES,
    DeployTools,
    PublishFailed,
    ReleaseOutcome,
    release_event_id,
    revision_name,
    run_deploy,
)

__all__ = [
    "PHASES",
    "CloudRunDeployer",
    "DeployRequest",
    "DeployTools",
    "Deployed",
    "InvalidDeployRequest",
    "PublishFailed",
    "ReleaseOutcome",
    "RevisionExists",
    "RevisionNotReady",
    "create_deployer",
    "image_reference",
    "release_event_id",
    "revision_name",
    "run_deploy",
]

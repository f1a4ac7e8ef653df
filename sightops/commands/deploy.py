"""`sightops deploy`: one release of a managed Cloud Run service (docs/deploy.md).

What ``cloudbuild-deploy.yaml`` runs after migrate's ``sight.ops.migration.succeeded``.
Every value can come from an option or from the environment (``DEPLOY_*``), so the build
passes substitutions through ``env:`` only and never pastes one into a script.
Exit codes: 0 promoted (or already: a duplicate run publishes nothing; or handed to the
canary function, for a service in ``canary.services``, docs/canary.md), 1 the release
failed (one line on stderr says why), 2 bad input, 3 Cloud Run or Pub/Sub unreachable or
refusing us (the root group's line, sightops/_errors.py).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from shared.deploy import DeployRequest


def _line(text: str) -> None:
    """The command's one error line (stderr; stdout carries the progress)."""
    print(text, file=sys.stderr, flush=True)


def deploy(
    service: Annotated[
        str | None, typer.Option(envvar="DEPLOY_SERVICE", help="Cloud Run service")
    ] = None,
    commit_sha: Annotated[
        str | None,
        typer.Option(envvar="DEPLOY_COMMIT_SHA", help="full commit (40 hex) of the image"),
    ] = None,
    build_id: Annotated[
        str | None, typer.Option(envvar="DEPLOY_BUILD_ID", help="CI build id, for the record")
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(envvar="DEPLOY_REGION", help="default: ROLLBACK__REGION / GCP_REGION"),
    ] = None,
    project: Annotated[
        str | None,
        typer.Option(envvar="DEPLOY_PROJECT", help="default: ROLLBACK__PROJECT / GCP_PROJECT"),
    ] = None,
    image_repo: Annotated[
        str | None,
        typer.Option(
            envvar="DEPLOY_IMAGE_REPO",
            help="where CI pushes <repo>/<service>:<commit> "
            "(default: <region>-docker.pkg.dev/<project>/sight)",
        ),
    ] = None,
    tag: Annotated[
        str, typer.Option(envvar="DEPLOY_TAG", help="tag of the new revision")
    ] = "candidate",
    event_id: Annotated[
        str | None,
        typer.Option(envvar="DEPLOY_EVENT_ID", help="the migration.succeeded event's id"),
    ] = None,
    event_type: Annotated[
        str | None,
        typer.Option(envvar="DEPLOY_EVENT_TYPE", help="must be sight.ops.migration.succeeded"),
    ] = None,
    traceparent: Annotated[
        str | None,
        typer.Option(
            envvar="DEPLOY_TRACEPARENT",
            help="the event's W3C traceparent: the deploy continues the release's trace",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="seconds to wait for the new revision", min=1)
    ] = 600.0,
) -> None:
    """Deploy <image repo>/SERVICE:COMMIT with no traffic (tag), smoke it, promote it,
    smoke the service; publish sight.ops.release.* and sight.ops.smoke.* on the way."""
    from shared.deploy import DeployRequest, InvalidDeployRequest
    from shared.settings import get_settings

    settings = get_settings()
    if not service or not commit_sha:
        _line(
            "not deploying: give --service and --commit-sha (or DEPLOY_SERVICE, DEPLOY_COMMIT_SHA)"
        )
        raise typer.Exit(2)
    where = region or settings.rollback.region or settings.gcp_region
    owner = project or settings.rollback.project or settings.gcp_project
    request = DeployRequest(
        service=service,
        commit_sha=commit_sha,
        project=owner,
        region=where,
        image_repo=image_repo or f"{where}-docker.pkg.dev/{owner}/sight",
        build_id=build_id or None,
        event_id=event_id or None,
        event_type=event_type or None,
        tag=tag,
        traceparent=traceparent or None,
    )
    try:
        request.validate()
    except InvalidDeployRequest as exc:
        _line(f"not deploying: {exc}")
        raise typer.Exit(2) from None
    code = _run(request, timeout)
    if code:
        raise typer.Exit(code)


def _run(request: DeployRequest, timeout: float) -> int:
    """Drive the release; an outage (Cloud Run, Pub/Sub, credentials) propagates to the
    root group, which names the service and the fix."""
    from shared.deploy import DeployTools, create_deployer, run_deploy
    from shared.runtime import Deps
    from shared.settings import get_settings
    from shared.smoke import SmokeOptions
    from sightops.cli import _require_emulator

    settings = get_settings()
    _require_emulator(settings)  # the release must be heard: say a dead emulator at once
    deps = Deps(settings)
    try:
        cloud_run = create_deployer(settings, operation_timeout_s=timeout)
        tools = DeployTools(
            cloud_run=cloud_run,
            publish=deps.publisher.publish_event,
            smoke_options=SmokeOptions.from_settings(settings, deps.secrets.resolve),
            smoke_topic=settings.topics.smoke_tests,
            events_topic=settings.topics.ops_events,
            tracing=deps.tracing,
            progress=lambda text: print(text, flush=True),
            canary_services=frozenset(settings.canary.services),
        )
        outcome = run_deploy(request, tools)
    finally:
        deps.close()  # also flushes the release's spans
    result = outcome.result
    phases = ", ".join(f"{name} {ms / 1000:.1f}s" for name, ms in result.phases.items())
    if outcome.status == "duplicate":
        print(f"release {result.release_id}: {result.reason}; nothing to do", flush=True)
        return 0
    if outcome.status == "promoted":
        print(
            f"release {result.release_id} promoted: {result.revision} serves 100 % ({phases})",
            flush=True,
        )
        return 0
    if outcome.status == "canary":
        print(
            f"release {result.release_id} handed to the canary: {result.revision} passed its "
            f"tag smoke ({phases}); the canary function now steps traffic to it and promotes "
            f"or rolls it back. Watch it: sightops canary status {request.service}",
            flush=True,
        )
        return 0
    _line(f"release {result.release_id} failed: {result.reason}")
    return outcome.exit_code


def register(app: typer.Typer) -> None:
    """Add this area's command to the root app."""
    app.command("deploy")(deploy)

"""CI pushes exactly the image the deploy deploys: ``<_IMAGE_REPO>/<service>:<commit>``.

The issue this guards (docs/deploy.md, "Image names"): CI once pushed only
``sightops-<fn>`` images while the deploy resolved ``_IMAGE_REPO/_SERVICE:_COMMIT_SHA``,
which nothing built, and ``ci_service`` defaulted to "" so migrate skipped the CI builds.
Here both YAML files are rendered as Cloud Build renders them, with the substitutions the
Terraform triggers pass, CI's build step runs in ``sh`` with a stub ``docker``, and the
deploy's image is what ``sightops deploy`` derives from its step's environment.
"""

from __future__ import annotations

import json
from pathlib import Path

from shared.deploy import DeployRequest, image_reference
from tests.infra.hcl import ROOT
from tests.infra.hcl import load as load_terraform
from tests.infra.test_deploy_pipeline import (
    CI,
    DEPLOY,
    VALID,
    Pipeline,
    _stub,
    load,
    render,
    substitutions_for,
)

TF = load_terraform()
REPO = VALID["_IMAGE_REPO"]
SHA = VALID["_COMMIT_SHA"]


def ci_pushes(tmp_path: Path, service: str, *, dockerfile: bool = True) -> tuple[int, list[str]]:
    """Run CI's build step for a push of ``SHA`` with ``_SERVICE=service``: its exit code
    and the images it lists for the push step."""
    config = load(CI)
    pipeline = Pipeline(tmp_path, config)
    _stub(tmp_path / "bin" / "docker", pipeline.state, "")
    for source in ("migrate", "kpi"):
        (pipeline.workspace / "functions" / source).mkdir(parents=True)
        (pipeline.workspace / "functions" / source / "main.py").write_text("")
    values = substitutions_for(config, {"_IMAGE_REPO": REPO, "_SERVICE": service})
    values["COMMIT_SHA"] = SHA
    if dockerfile:
        (pipeline.workspace / values["_SERVICE_DOCKERFILE"]).write_text("FROM scratch\n")
    [build] = [s for s in config["steps"] if s["id"] == "build"]
    code = pipeline.run(build, values).returncode
    listed = pipeline.workspace / "images.txt"
    return code, listed.read_text().split() if listed.exists() else []


def deploy_deploys(service: str) -> str:
    """The image ``sightops deploy`` deploys, from the deploy step's rendered environment."""
    config = load(DEPLOY)
    values = substitutions_for(config, {**VALID, "_SERVICE": service, "_TAG": "candidate"})
    [step] = [s for s in config["steps"] if s["id"] == "deploy"]
    env = dict(render(entry, values).partition("=")[::2] for entry in step["env"])
    request = DeployRequest(
        service=env["DEPLOY_SERVICE"],
        commit_sha=env["DEPLOY_COMMIT_SHA"],
        project=env["DEPLOY_PROJECT"],
        region=env["DEPLOY_REGION"],
        image_repo=env["DEPLOY_IMAGE_REPO"],
    )
    return request.validate().image


def test_ci_pushes_the_image_the_deploy_deploys_for_the_ci_service(tmp_path: Path) -> None:
    service = TF.variables["ci_service"]["default"]
    code, pushed = ci_pushes(tmp_path, service)
    assert code == 0
    assert deploy_deploys(service) == f"{REPO}/{service}:{SHA}"
    assert deploy_deploys(service) in pushed
    # The functions' images follow the same rule under their own names.
    assert f"{REPO}/sightops-migrate:{SHA}" in pushed


def test_ci_without_a_service_pushes_only_the_function_images(tmp_path: Path) -> None:
    code, pushed = ci_pushes(tmp_path, "")
    assert code == 0
    assert sorted(pushed) == [f"{REPO}/sightops-kpi:{SHA}", f"{REPO}/sightops-migrate:{SHA}"]


def test_ci_fails_when_it_cannot_build_the_service_image(tmp_path: Path) -> None:
    """A SUCCESS build is what migrate (and so the deploy) acts on: a commit without the
    service's image must not be one."""
    code, pushed = ci_pushes(tmp_path, "sight-api", dockerfile=False)
    assert code != 0
    assert f"{REPO}/sight-api:{SHA}" not in pushed


def test_ci_service_defaults_to_a_managed_service_and_both_triggers_share_the_repo() -> None:
    ci_service = TF.variables["ci_service"]
    assert ci_service["default"] != ""
    assert ci_service["default"] in TF.variables["managed_services"]["default"]
    triggers = TF.of_type("google_cloudbuild_trigger")
    assert triggers["ci"]["substitutions"]["_SERVICE"] == "${var.ci_service}"
    assert (
        triggers["ci"]["substitutions"]["_IMAGE_REPO"]
        == triggers["deploy"]["substitutions"]["_IMAGE_REPO"]
        == "${local.image_repo}"
    )
    # migrate acts on this CI's builds whenever it releases a service.
    assert "var.ci_service" in TF.locals["migrate_trigger_ids"]


def test_the_local_seed_names_its_images_by_the_same_rule() -> None:
    """`make dev`'s Cloud Run seed looks like what the deploy makes (dev/cloudrun-seed.json)."""
    seed = json.loads((ROOT / "dev" / "cloudrun-seed.json").read_text())
    for service in seed["services"]:
        repo = f"{service['location']}-docker.pkg.dev/{service['project']}/sight"
        images = [service["image"], *(r["image"] for r in service.get("revisions", []))]
        for image in images:
            commit = image.rsplit(":", 1)[1]
            assert image == image_reference(repo, service["service"], commit)

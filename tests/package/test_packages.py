"""`make package`: self-contained, pinned, minimal, reproducible; and each package installs
into a clean virtualenv from its own requirements.txt alone, imports, and handles a sample
event there."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from sightops.package import (
    FIXED_DATE_TIME,
    Package,
    build_all,
    discover_sources,
    package_data,
    read_constraints,
)
from tests.helpers import GOLDEN, ROOT
from tests.infra.hcl import load

from .conftest import PACKAGE_VENV, run_python

SOURCES = discover_sources()
DEPLOYED: dict[str, dict[str, Any]] = load().locals["functions"]
CONSTRAINTS = read_constraints(ROOT / "requirements" / "constraints.txt")


def names(package: Package) -> set[str]:
    return {canonicalize_name(line.split("==")[0]) for line in package.requirements}


@pytest.mark.parametrize("source", SOURCES)
def test_a_package_holds_main_shared_and_requirements_and_nothing_else(
    packages: dict[str, Package], source: str
) -> None:
    package = packages[source]
    with zipfile.ZipFile(package.zip_path) as archive:
        entries = archive.namelist()
    assert entries == sorted(entries)
    assert "main.py" in entries and "requirements.txt" in entries
    assert "shared/__init__.py" in entries
    data = tuple(package_data(ROOT, source))
    for entry in entries:
        assert entry in {"main.py", "requirements.txt"} or entry.startswith(("shared/", *data)), (
            entry
        )
        assert "__pycache__" not in entry and not entry.endswith(".pyc")
    on_disk = sorted(
        p.relative_to(package.directory).as_posix()
        for p in package.directory.rglob("*")
        if p.is_file()
    )
    assert on_disk == entries
    assert (package.directory / "main.py").read_bytes() == (
        ROOT / "functions" / source / "main.py"
    ).read_bytes()


@pytest.mark.parametrize("source", SOURCES)
def test_the_zip_is_named_by_its_own_content_hash(
    packages: dict[str, Package], source: str
) -> None:
    package = packages[source]
    digest = hashlib.sha256(package.zip_path.read_bytes()).hexdigest()
    assert package.zip_name == f"{source}-{digest[:12]}.zip"
    manifest = json.loads((package.zip_path.parent / "manifest.json").read_text())
    assert manifest["packages"][source]["zip"] == package.zip_name
    assert manifest["packages"][source]["sha256"] == digest


def test_the_same_input_gives_the_same_bytes(packages: dict[str, Package], tmp_path: Path) -> None:
    again = {p.source: p for p in build_all(tmp_path / "dist")}
    for source, package in packages.items():
        assert again[source].zip_name == package.zip_name
        assert again[source].zip_path.read_bytes() == package.zip_path.read_bytes()
    with zipfile.ZipFile(next(iter(again.values())).zip_path) as archive:
        for info in archive.infolist():
            assert info.date_time == FIXED_DATE_TIME
            assert info.external_attr >> 16 == 0o100644


def test_changed_source_gives_a_new_name_and_removes_the_old_zip(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for part in ("shared", "requirements", "pyproject.toml"):
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, root / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, root / part)
    fn = root / "functions" / "probe"
    fn.mkdir(parents=True)
    (fn / "main.py").write_text(
        "import functions_framework\n\n\n"
        "@functions_framework.http\ndef probe(request):\n    return 'ok'\n"
    )
    first = build_all(root / "dist", root=root)[0]
    (fn / "main.py").write_text((fn / "main.py").read_text() + "# changed\n")
    second = build_all(root / "dist", root=root)[0]
    assert first.zip_name != second.zip_name
    assert sorted(p.name for p in (root / "dist").glob("probe-*.zip")) == [second.zip_name]
    assert second.requirements  # functions-framework and its closure, pinned


@pytest.mark.parametrize("source", SOURCES)
def test_requirements_are_pinned_from_the_constraints(
    packages: dict[str, Package], source: str
) -> None:
    for line in packages[source].requirements:
        name, sep, version = line.partition("==")
        assert sep, f"{line} is not pinned"
        assert CONSTRAINTS[canonicalize_name(name)][1] == version
    assert {"functions-framework", "pg8000"} <= names(packages[source])


def test_each_package_gets_only_what_its_function_needs(packages: dict[str, Package]) -> None:
    """Function-specific libraries appear only where a function imports them."""
    assert "slack-sdk" in names(packages["notify"])
    for source, package in packages.items():
        # notify posts; the console's slack_actions verifies Slack's signatures
        if source not in {"notify", "console"}:
            assert "slack-sdk" not in names(package), source
        # rollback and the canary move traffic; the console reads the split
        if source not in {"rollback", "canary", "console"}:
            assert "google-cloud-run" not in names(package), source
        # CLI and development tools never ship.
        assert not names(package) & {"typer", "rich", "pytest", "mypy", "ruff", "pgserver"}
    for mover in ("rollback", "canary"):
        if mover in packages:
            assert "google-cloud-run" in names(packages[mover]), mover


@pytest.mark.parametrize("source", SOURCES)
def test_every_source_in_the_tree_is_deployed_by_terraform(
    packages: dict[str, Package], source: str
) -> None:
    deployed = {f["entry_point"] for f in DEPLOYED.values() if f["source"] == source}
    assert {e.name for e in packages[source].entry_points} == deployed


# --- in a clean virtualenv -------------------------------------------------------------------


def _push_case(
    name: str, target: str, topic: str, data: str, attributes: dict[str, str]
) -> dict[str, Any]:
    return {
        "name": name,
        "target": target,
        "kind": "push",
        "path": f"/projects/sight-local/topics/{topic}",
        "data": data,
        "attributes": attributes,
        "message_id": str(uuid.uuid4().int)[:16],
        "publish_time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }


def _golden(path: str) -> tuple[str, dict[str, str]]:
    body = json.loads((GOLDEN / path).read_text())
    if "attributes" in body and "data" in body:
        return json.dumps(body["data"]), {k: str(v) for k, v in body["attributes"].items()}
    return json.dumps(body), {}


# A valid message every consumer of the topic handles without outside effects.
BENIGN: dict[str, Any] = {
    "cloud-builds": lambda: _golden("cloudbuild/working.json"),  # not terminal: skipped
    "monitoring-alerts": lambda: _golden("monitoring/test_notification.json"),
    "kpi-refresh": lambda: (
        json.dumps({"project_id": str(uuid.uuid4())}),
        {"type": "sight.ops.kpi.refresh_requested", "source": "package-test"},
    ),
}
INTAKE_USER, INTAKE_PASSWORD = "package-test", "package-test-password"  # pragma: allowlist secret


def cases_for(source: str, package: Package) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for entry in package.entry_points:
        spec = DEPLOYED.get(entry.name, {"topics": ["package-test"]})
        if entry.signature == "cloudevent":
            for topic in spec["topics"]:
                # Never handleable: rejected, kept in ops.rejected_events, acknowledged (200).
                cases.append(
                    _push_case(
                        f"{entry.name} <- {topic} (not JSON)", entry.name, topic, "{not json", {}
                    )
                )
                if topic in BENIGN:
                    data, attributes = BENIGN[topic]()
                    cases.append(
                        _push_case(
                            f"{entry.name} <- {topic} (sample)", entry.name, topic, data, attributes
                        )
                    )
        else:
            import base64

            token = base64.b64encode(f"{INTAKE_USER}:{INTAKE_PASSWORD}".encode()).decode()
            cases.append(
                {
                    "name": f"{entry.name} (malformed request)",
                    "target": entry.name,
                    "kind": "http",
                    "method": "POST",
                    "path": "/",
                    "data": "{not json",
                    "headers": {
                        "Content-Type": "application/json",
                        "Authorization": f"Basic {token}",
                    },
                }
            )
    return cases


@pytest.mark.package_venv
@pytest.mark.parametrize("source", SOURCES)
def test_each_package_installs_alone_imports_and_handles_a_sample_event(
    packages: dict[str, Package],
    package_venvs: dict[str, Path],
    driver: Path,
    database_url: str,
    tmp_path: Path,
    source: str,
) -> None:
    package = packages[source]
    workdir = tmp_path / source
    shutil.copytree(package.directory, workdir)  # away from the repository and its .venv
    cases = cases_for(source, package)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ENVIRONMENT": "test",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": database_url,
        "NOTIFY__INTAKE_USERNAME": INTAKE_USER,
        "NOTIFY__INTAKE_PASSWORD": INTAKE_PASSWORD,
        # slack_actions answers 503 until it has a signing secret to check clicks with
        "CONSOLE__SLACK_SIGNING_SECRET": "package-test-signing-secret",
    }
    out = run_python(
        package_venvs[source],
        str(driver),
        str(workdir),
        str(tmp_path / "cases.json"),
        env=env,
        cwd=tmp_path,
    )
    report = json.loads(out.strip().splitlines()[-1])
    assert report["isolation"]["shared"].startswith(str(workdir))
    assert not report["isolation"]["sightops_importable"]
    assert len(report["results"]) == len(cases) > 0
    for result in report["results"]:
        if "(malformed request)" in result["name"]:
            assert 200 <= result["status"] < 500, result
        else:
            assert result["status"] == 200, result


def test_package_venv_tests_are_marked_for_selection() -> None:
    test = test_each_package_installs_alone_imports_and_handles_a_sample_event
    assert PACKAGE_VENV in {m.name for m in test.pytestmark}  # type: ignore[attr-defined]

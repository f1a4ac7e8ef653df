"""Packages built once per session; one clean virtualenv per distinct requirements.txt."""

from __future__ import annotations

import hashlib
import os
import subprocess
import venv
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sightops.package import Package, build_all

PACKAGE_VENV = "package_venv"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{PACKAGE_VENV}: creates virtualenvs from a package's requirements.txt (pip, PyPI)",
    )


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Package]:
    dist = tmp_path_factory.mktemp("dist")
    return {p.source: p for p in build_all(dist)}


def _requirements_key(package: Package) -> str:
    return hashlib.sha256("\n".join(package.requirements).encode()).hexdigest()[:12]


def _create(path: Path, requirements: Path) -> None:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    subprocess.run(
        [
            str(path / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--no-compile",  # bytecode is written on first import; saves most of the time
            "--require-virtualenv",
            "-r",
            str(requirements),
        ],
        check=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))},
    )


@pytest.fixture(scope="session")
def package_venvs(
    packages: dict[str, Package], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Path]]:
    """source -> the python of a fresh virtualenv holding that package's requirements only.

    Packages with identical requirements share one; pip's cache keeps reinstalls quick.
    """
    root = tmp_path_factory.mktemp("venvs")
    by_key: dict[str, Package] = {}
    for package in packages.values():
        by_key.setdefault(_requirements_key(package), package)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2)) as pool:
        jobs = {
            key: pool.submit(_create, root / key, package.directory / "requirements.txt")
            for key, package in by_key.items()
        }
        for job in jobs.values():
            job.result()
    yield {
        source: root / _requirements_key(package) / "bin" / "python"
        for source, package in packages.items()
    }


@pytest.fixture(scope="session")
def driver() -> Path:
    return Path(__file__).with_name("_driver.py")


def run_python(python: Path, *args: str, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [str(python), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout

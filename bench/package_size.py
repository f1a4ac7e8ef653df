"""Package sizes and cold import time per function, next to a bare functions-framework
function measured in the same run.

For each `functions/<source>/`: build the package (sightops.package), create a clean
virtualenv from its requirements.txt alone (pip's cache keeps this quick; identical
requirement sets share one), then time a fresh `python -c "import main"` in the package
directory, median of RUNS. The bare function (`import functions_framework` and one
decorated function) runs in the same virtualenv, so the difference is what the package's
own imports cost at cold start. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sightops.package import build_all  # noqa: E402

RUNS = 7
BARE = (
    "import functions_framework\n\n\n"
    "@functions_framework.http\ndef bare(request):\n    return 'ok'\n"
)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def make_venv(path: Path, requirements: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    python = path / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-compile",
            "-r",
            str(requirements),
        ],
        check=True,
    )
    return python


def cold_import_ms(python: Path, cwd: Path, module: str) -> float:
    samples = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run(
            [str(python), "-c", f"import {module}"],
            cwd=cwd,
            check=True,
            env={"PATH": "/usr/bin:/bin", "ENVIRONMENT": "test", "PYTHONDONTWRITEBYTECODE": "1"},
        )
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        packages = build_all(work / "dist")
        venvs: dict[str, Path] = {}
        rows = []
        bare_dir = work / "bare"
        bare_dir.mkdir()
        (bare_dir / "bare_main.py").write_text(BARE)
        bare_ms: list[float] = []
        for p in packages:
            key = hashlib.sha256("\n".join(p.requirements).encode()).hexdigest()[:12]
            if key not in venvs:
                venvs[key] = make_venv(work / f"venv-{key}", p.directory / "requirements.txt")
            python = venvs[key]
            site = next((python.parent.parent / "lib").glob("python3*/site-packages"))
            # warm the page cache and write bytecode once, as a deployed image would have it
            subprocess.run(
                [str(python), "-c", "import main"],
                cwd=p.directory,
                check=True,
                env={"PATH": "/usr/bin:/bin", "ENVIRONMENT": "test"},
            )
            subprocess.run([str(python), "-c", "import bare_main"], cwd=bare_dir, check=True)
            ms = cold_import_ms(python, p.directory, "main")
            base = cold_import_ms(python, bare_dir, "bare_main")
            bare_ms.append(base)
            rows.append(
                (
                    p.source,
                    p.zip_path.stat().st_size,
                    du(p.directory),
                    len(p.requirements),
                    du(site),
                    ms,
                    base,
                )
            )
    print(
        "| function source | zip | source dir | pinned requirements | installed deps | "
        "cold `import main` (median) | bare function, same venv | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for source, zsize, dsize, nreq, site, ms, base in rows:
        print(
            f"| {source} | {zsize / 1024:.0f} KiB | {dsize / 1024:.0f} KiB | {nreq} | "
            f"{site / 2**20:.0f} MiB | {ms:.0f} ms | {base:.0f} ms | {ms / base:.2f}x |"
        )


if __name__ == "__main__":
    main()

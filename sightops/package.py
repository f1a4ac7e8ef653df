"""Per-function deployable packages (`make package`).

For every ``functions/<source>/main.py`` this writes, under ``dist/``:

- ``<source>/``: the self-contained source directory: ``main.py``, the ``shared/`` library
  and a pinned ``requirements.txt``; nothing else;
- ``<source>-<sha256[:12]>.zip``: the same files, byte-for-byte reproducible (sorted
  entries, fixed timestamps and permissions), named by the hash of its own bytes;
- ``manifest.json``: what Terraform uploads and deploys (zip name, hash, entry points,
  requirements), one entry per source.

``requirements.txt`` holds only what that function needs, fully pinned:

1. the distributions behind every third-party module imported by ``main.py`` and by the
   ``shared`` modules it reaches (followed transitively, lazy imports inside functions
   included, ``if TYPE_CHECKING:`` blocks excluded), found through the installed files of
   the project's virtualenv;
2. ``RUNTIME``: what is loaded by name rather than imported (the pg8000 SQLAlchemy
   dialect) and the functions-framework that serves every function;
3. the function's extras from ``[tool.sightops.functions]`` in ``pyproject.toml``, keyed by
   source directory or entry point (e.g. migration tooling only the function needs);

then the dependency closure of those, every version taken from
``requirements/constraints.txt`` (a distribution missing there is an error, not a guess).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata as md
import importlib.util
import io
import json
import shutil
import sys
import tomllib
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SHARED = "shared"
#: Needed by every function although no module imports them by name.
RUNTIME = ("functions-framework", "pg8000")
#: Zip entries get this timestamp (the earliest a zip can hold) and these permissions.
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644
_SKIP_PARTS = {"__pycache__"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}


class PackageError(Exception):
    """A package cannot be built as declared (a message says what to fix)."""


@dataclass(frozen=True)
class EntryPoint:
    name: str
    signature: str  # "cloudevent" or "http"


@dataclass(frozen=True)
class Package:
    source: str
    directory: Path
    zip_path: Path
    sha256: str
    requirements: tuple[str, ...]
    entry_points: tuple[EntryPoint, ...]
    files: tuple[str, ...] = field(default=())

    @property
    def zip_name(self) -> str:
        return self.zip_path.name


# --- what is in a package -------------------------------------------------------------


def discover_sources(root: Path = ROOT) -> list[str]:
    """Every function source directory: ``functions/<source>/main.py``."""
    return sorted(p.parent.name for p in (root / "functions").glob("*/main.py"))


def package_data(root: Path, source: str) -> list[str]:
    """``[tool.sightops.package-data]``: data a function reads next to ``shared/`` (e.g.
    migrate's ``alembic.ini``, ``alembic/`` and ``graph/``), paths relative to the root."""
    table = tomllib.loads((root / "pyproject.toml").read_text())
    return list(table.get("tool", {}).get("sightops", {}).get("package-data", {}).get(source, []))


def package_files(root: Path, source: str) -> dict[str, Path]:
    """Archive name -> file: ``main.py``, ``shared/**`` and declared package data only."""
    files = {"main.py": root / "functions" / source / "main.py"}
    paths: list[Path] = []
    for extra in [SHARED, *package_data(root, source)]:
        base = root / extra
        if not base.exists():
            raise PackageError(f"package data {extra!r} of {source} does not exist")
        paths.extend([base] if base.is_file() else sorted(base.rglob("*")))
    for path in paths:
        rel = path.relative_to(root)
        if (
            path.is_dir()
            or path.is_symlink()
            or path.suffix in _SKIP_SUFFIXES
            or _SKIP_PARTS.intersection(rel.parts)
            or any(part.startswith(".") for part in rel.parts)
        ):
            continue
        files[rel.as_posix()] = path
    return files


def entry_points(main: Path) -> tuple[EntryPoint, ...]:
    """Top-level functions registered for functions-framework, by decorator."""
    found = []
    for node in ast.parse(main.read_text(), str(main)).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            target = deco.func if isinstance(deco, ast.Call) else deco
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if name in {"pubsub_handler", "cloud_event"}:
                found.append(EntryPoint(node.name, "cloudevent"))
            elif name in {"http_handler", "http"}:
                found.append(EntryPoint(node.name, "http"))
    return tuple(found)


# --- which modules it imports ---------------------------------------------------------


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _serves_lazily(branch: list[ast.stmt]) -> bool:
    """``__getattr__ = ...`` (``shared._lazy.lazy_attributes``): the names imported under
    ``if TYPE_CHECKING:`` are imported on first use, so they count."""
    return any(
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__getattr__" for t in node.targets)
        for node in branch
    )


def _walk_runtime(nodes: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """Every node, skipping the bodies of ``if TYPE_CHECKING:`` (never run) unless its
    ``else:`` serves those names lazily (a package's PEP 562 ``__getattr__``)."""
    for node in nodes:
        yield node
        if (
            isinstance(node, ast.If)
            and _is_type_checking(node.test)
            and not _serves_lazily(node.orelse)
        ):
            yield from _walk_runtime(node.orelse)
            continue
        yield from _walk_runtime(ast.iter_child_nodes(node))


def imported_names(path: Path, module: str, is_package: bool) -> set[str]:
    """Dotted names a module imports at run time (``from a import b`` gives a and a.b)."""
    names: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in _walk_runtime(tree.body):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "__future__":
                continue
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _shared_file(root: Path, dotted: str) -> tuple[Path, bool] | None:
    base = root.joinpath(*dotted.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py", True
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py"), False
    return None


def third_party_imports(root: Path, source: str) -> dict[str, str]:
    """Third-party dotted name -> the package module that imports it (for messages)."""
    stdlib = sys.stdlib_module_names
    seen: set[str] = set()
    found: dict[str, str] = {}
    queue: list[tuple[str, Path, bool]] = [("main", root / "functions" / source / "main.py", False)]
    local = {p.stem for p in (root / "functions" / source).glob("*.py")} - {"main"}
    while queue:
        module, path, is_package = queue.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in sorted(imported_names(path, module, is_package)):
            top = name.split(".")[0]
            if top in local and module == "main":
                raise PackageError(
                    f"functions/{source}/main.py imports {name!r} from its own directory; a "
                    "package holds only main.py and shared/: move it into shared/"
                )
            if top == SHARED:
                parts = name.split(".")
                for i in range(1, len(parts) + 1):  # parents run their __init__ too
                    dotted = ".".join(parts[:i])
                    hit = _shared_file(root, dotted)
                    if hit is not None and dotted not in seen:
                        queue.append((dotted, *hit))
            elif top not in stdlib and top != "main":
                found.setdefault(name, module)
    return found


# --- which distributions provide them -------------------------------------------------


class Environment:
    """The project's virtualenv (this interpreter): files -> distributions, constraints."""

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self._by_file: dict[Path, str] = {}
        self._dists: dict[str, md.Distribution] = {}
        for dist in md.distributions():
            name = canonicalize_name(dist.metadata["Name"])
            self._dists.setdefault(name, dist)
            for file in dist.files or ():
                self._by_file[Path(str(dist.locate_file(file))).resolve()] = name
        self.pins = read_constraints(root / "requirements" / "constraints.txt")

    def distribution_of(self, dotted: str) -> str | None:
        """The distribution installing module ``dotted`` (None: not a module)."""
        try:
            spec = importlib.util.find_spec(dotted)
        except (ImportError, ValueError, AttributeError):
            return None
        if spec is None:
            return None
        candidates = [spec.origin] if spec.origin and spec.has_location else []
        if not candidates:  # namespace package: ambiguous by itself
            return None
        return self._by_file.get(Path(candidates[0]).resolve())

    def resolve(self, imports: dict[str, str]) -> set[str]:
        """Distributions for dotted imports: the most specific name that is a module."""
        dists: set[str] = set()
        for name, importer in sorted(imports.items()):
            parts = name.split(".")
            for i in range(len(parts), 0, -1):
                dist = self.distribution_of(".".join(parts[:i]))
                if dist is not None:
                    dists.add(dist)
                    break
            else:
                if not any(other.startswith(name + ".") for other in imports):
                    raise PackageError(
                        f"{importer} imports {name!r}, which no installed distribution "
                        "provides (install it into .venv with the constraints)"
                    )
        return dists

    def closure(self, roots: Iterable[str]) -> dict[str, str]:
        """Every distribution needed by ``roots`` (with extras), pinned."""
        pinned: dict[str, str] = {}
        queue: list[tuple[str, frozenset[str]]] = []
        for spec in roots:
            req = Requirement(spec)
            queue.append((canonicalize_name(req.name), frozenset(req.extras)))
        done: set[tuple[str, frozenset[str]]] = set()
        while queue:
            name, extras = queue.pop()
            if (name, extras) in done:
                continue
            done.add((name, extras))
            if name not in self.pins:
                raise PackageError(
                    f"{name} is needed by a package but not pinned in requirements/constraints.txt"
                )
            pinned[name] = self.pins[name][1]
            dist = self._dists.get(name)
            if dist is None:
                raise PackageError(f"{name} is pinned but not installed in the virtualenv")
            for line in dist.requires or ():
                req = Requirement(line)
                if req.marker is not None and not any(
                    _marker_true(req.marker, extra) for extra in ("", *sorted(extras))
                ):
                    continue
                queue.append((canonicalize_name(req.name), frozenset(req.extras)))
        return {self.pins[name][0]: version for name, version in pinned.items()}


def _marker_true(marker: Marker, extra: str) -> bool:
    return marker.evaluate({"extra": extra})


def read_constraints(path: Path) -> dict[str, tuple[str, str]]:
    """Canonical name -> (name as written, version) from ``name==version`` lines."""
    pins: dict[str, tuple[str, str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise PackageError(f"{path.name}: {raw!r} is not pinned with ==")
        pins[canonicalize_name(name.strip())] = (name.strip(), version.strip())
    return pins


def function_extras(root: Path, source: str, entry: Iterable[EntryPoint]) -> list[str]:
    """``[tool.sightops.functions]`` entries for the source directory or its entry points."""
    table = tomllib.loads((root / "pyproject.toml").read_text())
    declared = table.get("tool", {}).get("sightops", {}).get("functions", {})
    keys = {source, *(e.name for e in entry)}
    return sorted({str(d) for key in keys for d in declared.get(key, [])})


def requirements_for(env: Environment, source: str) -> list[str]:
    """The pinned ``requirements.txt`` lines of one function source."""
    root = env.root
    entry = entry_points(root / "functions" / source / "main.py")
    dists = env.resolve(third_party_imports(root, source))
    roots = sorted({*dists, *RUNTIME, *function_extras(root, source, entry)})
    pinned = env.closure(roots)
    return [f"{name}=={pinned[name]}" for name in sorted(pinned, key=canonicalize_name)]


# --- writing ----------------------------------------------------------------------------


def requirements_text(source: str, lines: Iterable[str]) -> str:
    header = (
        f"# {source}: generated by `make package` (sightops/package.py) from pyproject.toml\n"
        "# and requirements/constraints.txt. Do not edit.\n"
    )
    return header + "".join(f"{line}\n" for line in lines)


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    """Same entries -> same bytes: sorted, fixed time, fixed mode, fixed compression."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so external_attr holds the mode
            info.external_attr = (0o100000 | FILE_MODE) << 16
            archive.writestr(info, entries[name], compresslevel=9)
    return buffer.getvalue()


def build(env: Environment, source: str, dist: Path) -> Package:
    """Write ``dist/<source>/`` and its content-hashed zip; remove older zips of it."""
    root = env.root
    requirements = requirements_for(env, source)
    entries = {name: path.read_bytes() for name, path in package_files(root, source).items()}
    entries["requirements.txt"] = requirements_text(source, requirements).encode()
    data = zip_bytes(entries)
    digest = hashlib.sha256(data).hexdigest()

    directory = dist / source
    if directory.exists():
        shutil.rmtree(directory)
    for name, content in entries.items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    zip_path = dist / f"{source}-{digest[:12]}.zip"
    for old in dist.glob(f"{source}-*.zip"):
        if old != zip_path and old.name[len(source) + 1 : -4].isalnum():
            old.unlink()
    if not zip_path.exists() or zip_path.read_bytes() != data:
        zip_path.write_bytes(data)
    return Package(
        source=source,
        directory=directory,
        zip_path=zip_path,
        sha256=digest,
        requirements=tuple(requirements),
        entry_points=entry_points(root / "functions" / source / "main.py"),
        files=tuple(sorted(entries)),
    )


def manifest(packages: Iterable[Package]) -> dict[str, object]:
    return {
        "packages": {
            p.source: {
                "zip": p.zip_name,
                "sha256": p.sha256,
                "entry_points": {e.name: e.signature for e in p.entry_points},
                "requirements": list(p.requirements),
            }
            for p in sorted(packages, key=lambda p: p.source)
        }
    }


def build_all(dist: Path, sources: Iterable[str] | None = None, root: Path = ROOT) -> list[Package]:
    dist.mkdir(parents=True, exist_ok=True)
    env = Environment(root)
    names = list(sources) if sources is not None else discover_sources(root)
    packages = [build(env, source, dist) for source in names]
    manifest_path = dist / "manifest.json"
    merged: dict[str, object] = {}
    if sources is not None and manifest_path.exists():  # a partial run keeps the others
        existing = json.loads(manifest_path.read_text()).get("packages", {})
        merged.update({k: v for k, v in existing.items() if (root / "functions" / k).is_dir()})
    merged.update(manifest(packages)["packages"])  # type: ignore[call-overload]
    text = json.dumps({"packages": dict(sorted(merged.items()))}, indent=2, sort_keys=True)
    manifest_path.write_text(text + "\n")
    return packages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", help="function directories (default: all)")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    args = parser.parse_args(argv)
    try:
        packages = build_all(args.dist, args.sources or None)
    except PackageError as exc:
        print(f"package: {exc}", file=sys.stderr)
        return 1
    for p in packages:
        size = p.zip_path.stat().st_size
        points = ", ".join(f"{e.name} ({e.signature})" for e in p.entry_points)
        print(
            f"{p.zip_path.relative_to(args.dist.parent) if args.dist.is_absolute() else p.zip_path}"
            f"  {size / 1024:.0f} KiB  {len(p.requirements)} pinned requirements  {points}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

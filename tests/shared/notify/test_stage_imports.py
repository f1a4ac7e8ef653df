"""notify's stages import only earlier stages (docs/notify.md, "The pipeline").

route/filter -> dedup -> group -> render -> deliver: a stage may import the ones before
it and the shared models, never a later one; the shared models import no stage; only
the pipeline knows every stage. Imports are read with ``ast`` (lazy ones inside
functions too), so a shortcut through a later stage fails here, not in review.
"""

from __future__ import annotations

import ast

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "shared" / "notify"

#: Each private module's place in the pipeline; shared models (-1) import no stage.
RANK = {
    "_config": -1,
    "_model": -1,
    "_route": 0,
    "_dedup": 1,
    "_group_store": 2,
    "_group": 2,
    "_render": 3,
    "_buttons": -1,  # the Slack buttons render adds; imports no stage (docs/console.md)
    "_deliver": 4,
    "_pipeline": 5,
}
STAGES = [name for name, rank in RANK.items() if 0 <= rank < RANK["_pipeline"]]


def notify_imports(module: str) -> set[str]:
    """The ``shared.notify`` modules ``module`` imports, by their short name."""
    return imports_in((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))


def imports_in(source: str) -> set[str]:
    tree = ast.parse(source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import _x / from ._x import y
                base = "shared.notify" + (f".{base}" if base else "")
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["shared", "notify"] and len(parts) > 2 and parts[2] in RANK:
                found.add(parts[2])
    return found


def test_every_module_has_a_place_in_the_pipeline() -> None:
    modules = {p.stem for p in PACKAGE.glob("_*.py")} - {"__init__"}
    assert modules == set(RANK), "give a new module its rank in RANK"


@pytest.mark.parametrize("module", sorted(RANK))
def test_no_module_imports_a_later_stage(module: str) -> None:
    later = {m for m in notify_imports(module) if RANK[m] > RANK[module]}
    assert later == set(), f"{module} imports later stage(s) {sorted(later)}"


def test_the_pipeline_wires_every_stage() -> None:
    assert set(STAGES) <= notify_imports("_pipeline")


@pytest.mark.parametrize(
    "source",
    [
        "from shared.notify._render import AlertEntry",  # what _group.py once did
        "import shared.notify._render",
        "from shared.notify import _render",
        "from ._render import SlackMessage",
        "from . import _render",
        "def lazy():\n    from shared.notify._render import render\n",
    ],
)
def test_the_check_sees_every_form_of_import(source: str) -> None:
    assert imports_in(source) == {"_render"}

"""`sightops kpi`: what an operator sees, against the real stores."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from shared.runtime import Deps
from sightops.cli import app
from tests.shared.kpi.helpers import SightProject, delete_graph, insert_project

runner = CliRunner()


@pytest.fixture
def project(deps: Deps) -> Iterator[SightProject]:
    made = insert_project(deps, old_personas=3, graph_personas=2, influences=1)
    yield made
    delete_graph(deps, [made.id])


def test_kpi_get_json_prints_the_served_document(project: SightProject) -> None:
    result = runner.invoke(app, ["kpi", "get", str(project.id), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["personas_total"] == 3
    assert document["graph"]["influences"] == 1


def test_kpi_get_table_says_where_the_value_came_from(project: SightProject) -> None:
    runner.invoke(app, ["kpi", "get", str(project.id)])
    result = runner.invoke(app, ["kpi", "get", str(project.id)])
    assert result.exit_code == 0, result.output
    assert "personas_total" in result.output and "cache: hit" in result.output


def test_kpi_get_unknown_project_exits_1(deps: Deps) -> None:
    result = runner.invoke(app, ["kpi", "get", str(uuid.uuid4())])
    assert result.exit_code == 1 and "no project" in result.output


def test_kpi_refresh_local_then_inspect_shows_a_fresh_entry(project: SightProject) -> None:
    refreshed = runner.invoke(app, ["kpi", "refresh", str(project.id), "--local"])
    assert refreshed.exit_code == 0, refreshed.output
    assert "refreshed in" in refreshed.output
    inspected = runner.invoke(app, ["kpi", "inspect", str(project.id)])
    assert inspected.exit_code == 0, inspected.output
    assert "fresh" in inspected.output and "lock: not held" in inspected.output


def test_kpi_inspect_of_an_uncached_project_says_missing(deps: Deps) -> None:
    result = runner.invoke(app, ["kpi", "inspect", str(uuid.uuid4())])
    assert result.exit_code == 0 and "missing" in result.output


@pytest.mark.parametrize("args", [[], ["--all", str(uuid.uuid4())], ["not-a-uuid"]])
def test_kpi_refresh_needs_exactly_one_valid_target(args: list[str]) -> None:
    result = runner.invoke(app, ["kpi", "refresh", *args, "--local"])
    assert result.exit_code == 2

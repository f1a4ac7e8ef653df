"""`sightops simulate SCENARIO`: a release through the real local stack, with a verdict
and its timeline (docs/simulate.md)."""

from __future__ import annotations

from sightops.simulate._harness import Harness, Recorder, Release, ScenarioTimeout
from sightops.simulate._run import Action, Facts, Row, Run
from sightops.simulate._scenarios import SCENARIOS, Scenario
from sightops.simulate._simulation import Check, Simulation, Verdict, render

__all__ = [
    "SCENARIOS",
    "Action",
    "Check",
    "Facts",
    "Harness",
    "Recorder",
    "Release",
    "Row",
    "Run",
    "Scenario",
    "ScenarioTimeout",
    "Simulation",
    "Verdict",
    "render",
]

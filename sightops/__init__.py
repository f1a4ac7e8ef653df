"""Operator tooling: the ``sightops`` CLI and the ``make dev`` orchestrator."""

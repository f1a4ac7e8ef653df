"""`sightops` commands for the notify area."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands and groups to the root app."""

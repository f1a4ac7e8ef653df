"""`sightops settings env-example`: the `.env.example` generated from Settings
(sightops/envexample.py; docs/cli.md, "sightops settings")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

settings_app = typer.Typer(help="Settings: what the environment may set.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(settings_app, name="settings")


@settings_app.command("env-example")
def env_example(
    write: Annotated[
        bool, typer.Option("--write", help="write the file (default: print it)")
    ] = False,
    check: Annotated[
        bool,
        typer.Option("--check", help="exit 1, naming what differs, unless the file is current"),
    ] = False,
    file: Annotated[
        Path | None, typer.Option("--file", help="the file (default: the checkout's .env.example)")
    ] = None,
) -> None:
    """Every setting as its environment variable, with its default and purpose."""
    from sightops.envexample import ENV_EXAMPLE, drift, render

    if write and check:
        raise typer.BadParameter("give --write or --check, not both", param_hint="--check")
    path = file or ENV_EXAMPLE
    if check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        changes = drift(current)
        if changes:
            typer.echo(
                f"{path} is out of date ({', '.join(changes)}); regenerate it with"
                " `sightops settings env-example --write`",
                err=True,
            )
            raise typer.Exit(1)
        typer.echo(f"{path} is current")
        return
    text = render()
    if write:
        path.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {path}")
        return
    typer.echo(text, nl=False)

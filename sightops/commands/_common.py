"""What several command groups need: the process's Deps and who is acting."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.runtime import Deps


@contextmanager
def open_deps() -> Iterator[Deps]:
    """Deps from the settings, closed when the command ends (heavy imports on first use)."""
    from shared.runtime import Deps
    from shared.settings import get_settings

    deps = Deps(get_settings())
    try:
        yield deps
    finally:
        deps.close()


def manual_actor(name: str | None = None) -> str:
    """``manual:<who>``, as every manual command records it (docs/schema.md ops.actions)."""
    if name:
        return name if name.startswith("manual:") else f"manual:{name}"
    try:
        return f"manual:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "manual:unknown"

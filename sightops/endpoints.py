"""Where the local stack listens, so `sightops` in a second terminal finds it (docs/cli.md).

`make dev` writes ``$SIGHTOPS_STATE/endpoints.json`` once the stack is up
(:func:`write_endpoints`, with the environment its functions get); every `sightops`
command reads it at start (:func:`load_endpoints`) and takes each setting it does not
already have from the environment. The file counts only while the process that wrote it
is alive, and never for production (``ENVIRONMENT=production``, ``--no-local`` or
``SIGHTOPS_LOCAL=0``): there the CLI uses Application Default Credentials as it always did.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE_NAME = "endpoints.json"
#: Never taken from the file: the environment a command runs in, and how much it logs, are
#: the caller's to choose (a dev stack must not turn a production shell into a local one).
NOT_SHARED = frozenset({"ENVIRONMENT", "LOG_LEVEL"})
_OFF = frozenset({"0", "false", "no", "off"})


def state_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$SIGHTOPS_STATE``, else the repository's ``.local/`` (as sightops/dev.py uses)."""
    return Path(environ.get("SIGHTOPS_STATE") or ROOT / ".local")


def endpoints_path(state: Path | None = None) -> Path:
    return (state if state is not None else state_dir()) / FILE_NAME


def _settings_names() -> tuple[frozenset[str], tuple[str, ...]]:
    """Environment names Settings reads: top-level fields (and aliases) exactly, nested
    models by prefix (``ROLLBACK__SMOKE_URL``)."""
    from pydantic import BaseModel

    from shared.settings import Settings

    exact: set[str] = set()
    prefixes: list[str] = []
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        exact.add((alias if isinstance(alias, str) else name).upper())
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            prefixes.append(f"{name.upper()}__")
    return frozenset(exact - NOT_SHARED), tuple(prefixes)


def settings_env(env: Mapping[str, str]) -> dict[str, str]:
    """The part of ``env`` that configures sight-ops: nothing else of a shell's environment
    (PATH, HOME, tokens of other tools) is written down."""
    exact, prefixes = _settings_names()
    return {
        key: value
        for key, value in sorted(env.items())
        if key.upper() in exact or key.upper().startswith(prefixes)
    }


def write_endpoints(
    env: Mapping[str, str],
    state_dir: Path,
    *,
    pid: int | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Path:
    """Record the stack's settings for other terminals; returns the file.

    ``env`` is the environment the stack's functions get; ``pid`` the process whose
    life the file is valid for (default: this one). Written atomically, readable by the
    owner only (the local stack's development passwords are in it)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / FILE_NAME
    document = {
        "written_at": now().isoformat(),
        "pid": os.getpid() if pid is None else pid,
        "env": settings_env(env),
    }
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(document, out, indent=2)
        out.write("\n")
    tmp.replace(path)
    return path


def remove_endpoints(state_dir: Path, *, pid: int | None = None) -> None:
    """Remove the file if ``pid`` (default: this process) wrote it; a newer stack's is kept."""
    path = state_dir / FILE_NAME
    try:
        written_by = json.loads(path.read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return
    if written_by == (os.getpid() if pid is None else pid):
        path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """True while a process with this id exists (signal 0 checks without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@dataclass(frozen=True)
class Loaded:
    """What :func:`load_endpoints` did, for a debug line."""

    path: Path
    applied: tuple[str, ...] = ()  # settings taken from the file
    kept: tuple[str, ...] = ()  # settings the environment already gave (they win)
    skipped: str | None = None  # why the file was not used
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def describe(self) -> str:
        if self.skipped:
            return f"local stack endpoints not used: {self.skipped}"
        return (
            f"local stack endpoints from {self.path}: {len(self.applied)} setting(s) taken"
            f" ({', '.join(self.applied) or 'none'}); {len(self.kept)} given by the environment"
        )


def load_endpoints(
    environ: MutableMapping[str, str] = os.environ,
    state: Path | None = None,
    *,
    local: bool = True,
    alive: Callable[[int], bool] = pid_alive,
) -> Loaded:
    """Set each setting of a live `make dev` stack that ``environ`` does not have yet.

    Call before Settings are read. Explicit environment always wins (setdefault); the
    file is ignored for production, when ``local`` is False or ``SIGHTOPS_LOCAL=0``,
    and when the process that wrote it is gone (a stale file)."""
    path = endpoints_path(state if state is not None else state_dir(environ))
    if environ.get("ENVIRONMENT", "").strip().lower() == "production":
        return Loaded(path, skipped="ENVIRONMENT=production")
    if not local or environ.get("SIGHTOPS_LOCAL", "").strip().lower() in _OFF:
        return Loaded(path, skipped="turned off (--no-local or SIGHTOPS_LOCAL=0)")
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return Loaded(path, skipped=f"no {path} (is `make dev` running?)")
    except (OSError, ValueError) as exc:
        return Loaded(path, skipped=f"{path} is unreadable ({type(exc).__name__})")
    env = document.get("env") if isinstance(document, dict) else None
    pid = document.get("pid") if isinstance(document, dict) else None
    if not isinstance(env, dict) or not isinstance(pid, int):
        return Loaded(path, skipped=f"{path} has no 'env' object and 'pid'")
    if not alive(pid):
        return Loaded(path, skipped=f"{path} is stale: process {pid} has exited")
    applied: list[str] = []
    kept: list[str] = []
    for key, value in settings_env({str(k): str(v) for k, v in env.items()}).items():
        if key in environ:
            kept.append(key)
        else:
            environ[key] = value
            applied.append(key)
    return Loaded(path, tuple(applied), tuple(kept), env=dict(env))

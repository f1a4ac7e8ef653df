"""``.env.example`` generated from Settings: every setting as the environment variable
pydantic-settings reads, its default and its purpose (docs/cli.md, "sightops settings").

The purpose is the field's ``description=`` when it has one, else the comment written
with it in shared/settings.py: the comment lines right above the field, or the comment at
the end of its line; a field directly below another without a comment of its own shares
that field's comment (the file's way of commenting a group). Comments are read with
``tokenize`` and ``ast`` from the model's source, so the file stays written the way it
is. Secrets are never written: ``<secret>`` stands for every ``SecretStr``.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import textwrap
import tokenize
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

#: Where the generated file lives in the checkout.
ENV_EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"
#: What a secret's value is shown as.
SECRET = "<secret>"  # noqa: S105 - the placeholder, not a password
WIDTH = 92

HEADER = """\
# sight-ops settings: every environment variable Settings reads (shared/settings.py), its
# default and its purpose. GENERATED: do not edit. Regenerate with
#   .venv/bin/sightops settings env-example --write
# (tests/sightops/test_env_example.py fails while this file and Settings disagree).
#
# Nothing here is needed locally: the defaults are the local stack's (`make dev`).
# Production sets what differs in the function's environment (terraform/functions.tf).
# Uncomment a line to change it. Nested settings are PARENT__NAME; names are
# case-insensitive; lists, maps and objects are JSON. An empty value after `=` means the
# default is unset (None). Secrets are never written here: `<secret>` stands for a value
# or a Secret Manager reference (projects/P/secrets/S/versions/V) set in the environment.
"""


@dataclass(frozen=True)
class Setting:
    """One environment variable."""

    env: str
    value: str  # as written after ``=``
    purpose: str  # "" when the field says nothing
    secret: bool


@dataclass(frozen=True)
class Section:
    """A nested model's settings, introduced by its docstring's first paragraph."""

    prefix: str
    title: str


def settings_model() -> type[BaseModel]:
    from shared.settings import Settings

    return Settings


def entries(model: type[BaseModel] | None = None) -> list[Setting | Section]:
    """Every setting of ``model`` (default: Settings) in declaration order, nested models'
    under a :class:`Section` of their own."""
    root = model or settings_model()
    # Defaults as declared (model_construct reads no environment); sections are the
    # nested models declared where the settings are (shared/settings.py), any other model
    # (a MigrateSelector) is one JSON value.
    modules = frozenset(klass.__module__ for klass in root.__mro__)
    return _entries(root, root.model_construct(), "", modules)


def _entries(
    model: type[BaseModel], default: BaseModel, prefix: str, modules: frozenset[str]
) -> list[Setting | Section]:
    purposes = field_purposes(model)
    out: list[Setting | Section] = []
    for name, info in model.model_fields.items():
        env = prefix + _env_name(name, info)
        value = getattr(default, name)
        nested = info.annotation
        if (
            isinstance(nested, type)
            and issubclass(nested, BaseModel)
            and nested.__module__ in modules
            and isinstance(value, nested)
        ):
            out.append(Section(f"{env}__", _first_paragraph(nested.__doc__)))
            out.extend(_entries(nested, value, f"{env}__", modules))
            continue
        secret = _is_secret(info.annotation)
        shown = SECRET if secret else _format(value)
        out.append(Setting(env, shown, purposes.get(name, ""), secret))
    return out


def _env_name(name: str, info: FieldInfo) -> str:
    alias = info.validation_alias
    return (alias if isinstance(alias, str) else name).upper()


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(arg) for arg in typing.get_args(annotation))


def _format(value: Any) -> str:
    """The value as a .env line holds it: JSON for lists, maps and objects."""
    if value is None:
        return ""
    plain = to_jsonable_python(value)
    if isinstance(plain, bool):
        return "true" if plain else "false"
    if isinstance(plain, int | float):
        return json.dumps(plain)
    if isinstance(plain, str):
        text = plain
    else:
        text = json.dumps(plain, separators=(",", ":"), sort_keys=True)
    if text and all(c.isalnum() or c in "-_.:/@+,=" for c in text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


def _first_paragraph(doc: str | None) -> str:
    text = inspect.cleandoc(doc or "")
    return " ".join(text.split("\n\n", 1)[0].split())


# ---- purposes from the source ---------------------------------------------------------


def field_purposes(model: type[BaseModel]) -> dict[str, str]:
    """Each field's purpose: ``description=``, else its comment (module docstring), read
    from the class that declares it (a subclass's own fields first)."""
    comments: dict[str, str] = {}
    for klass in reversed(model.__mro__):
        if issubclass(klass, BaseModel) and not klass.__module__.startswith("pydantic"):
            comments.update(_field_comments(klass))
    out: dict[str, str] = {}
    for name, info in model.model_fields.items():
        described = " ".join((info.description or "").split())
        purpose = described or comments.get(name, "")
        if purpose:
            out[name] = purpose
    return out


def _field_comments(model: type[BaseModel]) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(model))
    except (OSError, TypeError):  # defined where no source is kept
        return {}
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, the line is only a comment)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            alone = token.line.strip().startswith("#")
            comments[token.start[0]] = (token.string.lstrip("#").strip(), alone)
    klass = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef))
    out: dict[str, str] = {}
    shared: str | None = None  # a leading comment, shared with the fields right below it
    previous_end = -1
    for node in klass.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            shared, previous_end = None, getattr(node, "end_lineno", -1) or -1
            continue
        end = node.end_lineno or node.lineno
        above: list[str] = []
        line = node.lineno - 1
        while line in comments and comments[line][1]:
            above.insert(0, comments[line][0])
            line -= 1
        trailing = [
            comments[n][0]
            for n in range(node.lineno, end + 1)
            if n in comments and not comments[n][1]
        ]
        if above:
            shared = " ".join(above)
        elif node.lineno - 1 != previous_end:
            shared = None  # a blank line ends a group
        parts = ([shared] if shared and (above or not trailing) else []) + trailing
        if parts:
            out[node.target.id] = " ".join(" ".join(parts).split())
        previous_end = end
    return out


# ---- the file -------------------------------------------------------------------------


def render(model: type[BaseModel] | None = None) -> str:
    """The whole ``.env.example`` for ``model`` (default: Settings)."""
    lines = [HEADER.rstrip("\n")]
    last_purpose: str | None = None
    for entry in entries(model):
        if isinstance(entry, Section):
            title = f"==== {entry.prefix}*: {entry.title}".rstrip(": ")
            lines += ["", *textwrap.wrap(title, WIDTH, initial_indent="# ", subsequent_indent="# ")]
            last_purpose = None
            continue
        purpose = entry.purpose or "(no description: add a comment in shared/settings.py)"
        if purpose != last_purpose:
            lines.append("")
            lines += textwrap.wrap(purpose, WIDTH, initial_indent="# ", subsequent_indent="# ")
        last_purpose = purpose
        lines.append(f"# {entry.env}={entry.value}")
    return "\n".join(lines) + "\n"


def undocumented(model: type[BaseModel] | None = None) -> list[str]:
    """Settings without a purpose (no ``description=``, no comment)."""
    return [e.env for e in entries(model) if isinstance(e, Setting) and not e.purpose]


def drift(current: str, model: type[BaseModel] | None = None) -> list[str]:
    """What differs between a file's text and the generated one: variables only one of
    them names (``+NAME``: missing from the file, ``-NAME``: no longer a setting), or
    ``(defaults or purposes)`` when only those changed; empty when they agree."""
    wanted = render(model)
    if current == wanted:
        return []

    def names(text: str) -> set[str]:
        found = set()
        for line in text.splitlines():
            head = line.removeprefix("# ")
            if "=" in head and head.split("=", 1)[0].isupper():
                found.add(head.split("=", 1)[0])
        return found

    have, want = names(current), names(wanted)
    changes = [f"+{n}" for n in sorted(want - have)] + [f"-{n}" for n in sorted(have - want)]
    return changes or ["(defaults or purposes)"]


__all__ = [
    "ENV_EXAMPLE",
    "SECRET",
    "Section",
    "Setting",
    "drift",
    "entries",
    "field_purposes",
    "render",
    "undocumented",
]

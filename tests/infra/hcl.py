"""terraform/ parsed with python-hcl2, merged across files, for the wiring tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
_OPTIONS = SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True, preserve_heredocs=False
)
_REF = re.compile(r"\b(google_[a-z0-9_]+)\.([a-z0-9_]+)\b")


@dataclass
class Terraform:
    resources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    data: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    terraform: list[dict[str, Any]] = field(default_factory=list)

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return self.resources.get(kind, {})

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        return self.resources[kind][name]

    def iam_members(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(type, name, body) of every IAM grant (member, binding or policy)."""
        for kind, items in self.resources.items():
            if re.search(r"_iam_(member|binding|policy)$", kind):
                for name, body in items.items():
                    yield kind, name, body


def _merge(into: dict[str, Any], blocks: list[dict[str, Any]] | dict[str, Any]) -> None:
    for block in blocks if isinstance(blocks, list) else [blocks]:
        for key, value in block.items():
            if key in into:
                raise AssertionError(f"terraform declares {key!r} twice")
            into[key] = value


@cache
def load(directory: Path = TERRAFORM) -> Terraform:
    tf = Terraform()
    for path in sorted(directory.glob("*.tf")):
        parsed = hcl2.loads(path.read_text(), serialization_options=_OPTIONS)
        for block in parsed.get("resource", []):
            for kind, items in block.items():
                _merge(tf.resources.setdefault(kind, {}), items)
        for block in parsed.get("data", []):
            for kind, items in block.items():
                _merge(tf.data.setdefault(kind, {}), items)
        for block in parsed.get("locals", []):
            _merge(tf.locals, block)
        for block in parsed.get("variable", []):
            _merge(tf.variables, block)
        for block in parsed.get("output", []):
            _merge(tf.outputs, block)
        tf.terraform.extend(parsed.get("terraform", []))
    return tf


def first(value: Any) -> Any:
    """python-hcl2 gives a nested block as a list of one dict."""
    return value[0] if isinstance(value, list) and value else value


def references(value: Any) -> set[tuple[str, str]]:
    """Every ``google_x.name`` a value refers to."""
    return set(_REF.findall(str(value)))

"""The manifest: one JSON object per backup, written last, naming every object with its
size and checksums, and every table / label / relationship type with its count and
order-independent checksum (docs/backups.md, "The manifest").

A backup without a manifest is incomplete and never listed or restored. Object names:
``<store>/<period>/<YYYY-MM-DD>/<backup id>/<file>``, so lifecycle rules can act on the
``<store>/<period>/`` prefixes (terraform/backup.tf).
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.backup._digest import ALGORITHM, Tally
from shared.errors import PermanentError

if TYPE_CHECKING:
    from shared.backup._store import BlobStore

FORMAT = "sightops-backup/1"
MANIFEST = "manifest.json"

Store = Literal["postgres", "neo4j"]
Period = Literal["daily", "weekly", "manual"]
STORES: tuple[Store, ...] = ("postgres", "neo4j")

_BACKUP_ID = re.compile(r"^(postgres|neo4j)-\d{8}T\d{6}Z-[0-9a-f]{6}$")


class InvalidManifest(PermanentError):
    """A manifest that is missing, unreadable, or not one of ours."""


class ObjectEntry(BaseModel):
    """One object of a backup, as written."""

    model_config = ConfigDict(frozen=True)

    name: str
    size: int = Field(ge=0)
    sha256: str
    crc32c: str
    content_type: str


class Column(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    type: str


class TableEntry(BaseModel):
    """One PostgreSQL table: its object, columns (in COPY order), rows and checksum."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    schema_: str = Field(alias="schema")
    name: str
    object: str
    columns: list[Column]
    rows: int = Field(ge=0)
    checksum: str

    @property
    def qualified(self) -> str:
        return f"{self.schema_}.{self.name}"

    def tally(self) -> Tally:
        return Tally(count=self.rows, checksum=self.checksum)


class SchemaItem(BaseModel):
    """A Neo4j index or constraint: what identifies it and the statement recreating it."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    kind: Literal["constraint", "index"]
    name: str
    type: str
    entity_type: str
    labels_or_types: list[str] = Field(default_factory=list)
    properties: list[str] = Field(default_factory=list)
    owning_constraint: str | None = None
    create_statement: str

    def key(self) -> tuple[str, str, str, str, tuple[str, ...], tuple[str, ...]]:
        """What must match after a restore (ids and statistics may differ)."""
        return (
            self.kind,
            self.name,
            self.type,
            self.entity_type,
            tuple(self.labels_or_types),
            tuple(self.properties),
        )


class GraphEntry(BaseModel):
    """Counts and checksums of a Neo4j export (a node counts under each of its labels)."""

    model_config = ConfigDict(frozen=True)

    nodes: Tally
    relationships: Tally
    labels: dict[str, Tally] = Field(default_factory=dict)
    relationship_types: dict[str, Tally] = Field(default_factory=dict)
    schema_items: list[SchemaItem] = Field(default_factory=list)
    nodes_object: str
    relationships_object: str
    schema_object: str


class Manifest(BaseModel):
    """Everything a restore needs to know and a drill needs to check."""

    model_config = ConfigDict(frozen=True)

    format: Literal["sightops-backup/1"] = "sightops-backup/1"
    backup_id: str
    store: Store
    period: Period
    prefix: str
    location: str
    source: str
    started_at: datetime
    finished_at: datetime
    server_version: str
    alembic_revision: str | None = None
    graph_schema_version: int | None = None
    data_format: str
    compression: Literal["gzip"] = "gzip"
    checksum_algorithm: str = ALGORITHM
    objects: list[ObjectEntry]
    tables: list[TableEntry] = Field(default_factory=list)
    graph: GraphEntry | None = None

    @property
    def manifest_name(self) -> str:
        return f"{self.prefix}{MANIFEST}"

    def object(self, name: str) -> ObjectEntry:
        for entry in self.objects:
            if entry.name == name:
                return entry
        raise InvalidManifest(f"manifest {self.backup_id} lists no object {name}")

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.objects)


def new_backup_id(store: Store, now: datetime) -> str:
    """``<store>-<UTC time>-<6 random hex>``: sorts by time, never reused (a retried
    delivery writes a new backup; objects under a retention policy cannot be replaced)."""
    return f"{store}-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def backup_prefix(store: Store, period: Period, backup_id: str, now: datetime) -> str:
    return f"{store}/{period}/{now.strftime('%Y-%m-%d')}/{backup_id}/"


def is_backup_id(value: str) -> bool:
    return bool(_BACKUP_ID.match(value))


def parse_manifest(data: bytes, name: str) -> Manifest:
    try:
        return Manifest.model_validate_json(data)
    except ValueError as exc:
        raise InvalidManifest(f"{name} is not a sight-ops backup manifest: {exc}") from None


def manifest_json(manifest: Manifest) -> bytes:
    return manifest.model_dump_json(by_alias=True, indent=2).encode("utf-8") + b"\n"


def get_manifest(store: BlobStore, name: str) -> Manifest:
    """Read and validate one manifest object."""
    from shared.backup._store import get_bytes

    return parse_manifest(get_bytes(store, name, limit=16 * 1024 * 1024), name)


def list_manifests(store: BlobStore, store_name: Store | None = None) -> list[Manifest]:
    """Every complete backup (one with a manifest), newest first. A manifest that cannot
    be read is logged and left out: the drill then verifies an older backup, and the
    staleness alert fires if nothing newer verifies (docs/runbooks/backup-stale.md)."""
    import logging

    found: list[Manifest] = []
    for name in (store_name,) if store_name else STORES:
        for info in store.list(f"{name}/"):
            if not info.name.endswith(f"/{MANIFEST}"):
                continue
            try:
                found.append(get_manifest(store, info.name))
            except InvalidManifest as exc:
                logging.getLogger("sightops.backup").warning("skipping %s", exc)
    return sorted(found, key=lambda m: (m.finished_at, m.backup_id), reverse=True)

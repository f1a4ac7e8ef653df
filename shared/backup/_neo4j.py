"""Neo4j: nodes, relationships and the schema as streamed JSON lines, and their restore
(docs/backups.md, "Neo4j").

Community edition has no online dump (``neo4j-admin database dump`` needs the database
stopped), so the export reads through Bolt. Three gzip objects:

- ``schema.jsonl.gz``: one index or constraint a line, with its ``createStatement``;
- ``relationships.jsonl.gz``: ``{"s", "e", "t", "p", "sd", "ed"}``: the endpoints'
  element ids, the type, the typed properties (shared/backup/_values.py) and the
  endpoints' content keys (what the checksum sees instead of ids, which a restore changes);
- ``nodes.jsonl.gz``: ``{"id", "l", "p"}``: element id (the export id), labels, properties.

Relationships are read before nodes: a node created while the export runs then appears
without its new relationships (a consistent, older graph), never a relationship without
its node. Only a node deleted between the two reads leaves a relationship without an
endpoint; its restore then reports it and the drill fails (docs/backups.md).

Checksums: a node is digested as the canonical JSON of its sorted labels and typed
properties, and counts under each of its labels; a relationship as its type, properties
and the content keys of its endpoints. Sums modulo 2^256 (shared/backup/_digest.py).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, Literal

from shared.backup._check import READ_ERRORS, ObjectCheck, split_lines
from shared.backup._digest import MultisetDigest, Tally
from shared.backup._manifest import (
    GraphEntry,
    Manifest,
    ObjectEntry,
    Period,
    SchemaItem,
    backup_prefix,
    manifest_json,
    new_backup_id,
)
from shared.backup._report import Finding, RestoreReport
from shared.backup._store import BlobStore, CountingWriter, put_bytes
from shared.backup._values import decode, encode
from shared.errors import PermanentError

if TYPE_CHECKING:
    from neo4j import Driver

DATA_FORMAT = (
    "JSON lines (typed property values), gzip: schema, relationships, nodes; element ids"
    " as export ids"
)
CONTENT_TYPE = "application/gzip"
#: The temporary label, property and index a restore matches relationship endpoints by.
RESTORE_LABEL = "__SightOpsRestore"
RESTORE_KEY = "__sightops_restore_id"
RESTORE_INDEX = "__sightops_restore_id"
NO_LABEL = ""  # the tally key of nodes without labels

_NODES = "MATCH (n) RETURN elementId(n) AS id, labels(n) AS labels, properties(n) AS props"
_RELATIONSHIPS = (
    "MATCH (a)-[r]->(b) RETURN elementId(a) AS s, elementId(b) AS e, type(r) AS t,"
    " properties(r) AS p, labels(a) AS sl, properties(a) AS sp, labels(b) AS el,"
    " properties(b) AS ep"
)
_CONSTRAINTS = (
    "SHOW CONSTRAINTS YIELD name, type, entityType, labelsOrTypes, properties, createStatement"
)
_INDEXES = (
    "SHOW INDEXES YIELD name, type, entityType, labelsOrTypes, properties, owningConstraint,"
    " createStatement"
)
#: A schema statement from a backup is run only if it is one (never arbitrary Cypher).
_SCHEMA_STATEMENT = re.compile(
    r"^CREATE (CONSTRAINT|(RANGE |TEXT |POINT |FULLTEXT |VECTOR |LOOKUP )?INDEX) [^;]*$"
)


class RestoreRefused(PermanentError):
    """The target graph is not empty (and ``force`` was not given)."""


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def _canonical(head: Any, encoded_props: dict[str, Any]) -> bytes:
    return json.dumps(
        [head, encoded_props],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")


def _encode_props(props: dict[str, Any]) -> dict[str, Any]:
    return {k: encode(v) for k, v in props.items()}


def node_digest(labels: Iterable[str], encoded_props: dict[str, Any]) -> bytes:
    return hashlib.sha256(_canonical(sorted(labels), encoded_props)).digest()


def node_key(labels: Iterable[str], encoded_props: dict[str, Any]) -> str:
    """A relationship's view of an endpoint: the first 16 bytes of its digest."""
    return node_digest(labels, encoded_props)[:16].hex()


class GraphTally:
    """Counts and checksums per label and relationship type, as the manifest keeps them."""

    def __init__(self) -> None:
        self.nodes = MultisetDigest()
        self.relationships = MultisetDigest()
        self.labels: dict[str, MultisetDigest] = defaultdict(MultisetDigest)
        self.types: dict[str, MultisetDigest] = defaultdict(MultisetDigest)

    def add_node(self, labels: list[str], encoded_props: dict[str, Any]) -> None:
        digest = node_digest(labels, encoded_props)
        self.nodes.add_digest(digest)
        for label in labels or [NO_LABEL]:
            self.labels[label].add_digest(digest)

    def add_relationship(
        self, rel_type: str, encoded_props: dict[str, Any], sd: str, ed: str
    ) -> None:
        digest = hashlib.sha256(_canonical([rel_type, sd, ed], encoded_props)).digest()
        self.relationships.add_digest(digest)
        self.types[rel_type].add_digest(digest)

    def label_tallies(self) -> dict[str, Tally]:
        return {k: v.tally() for k, v in sorted(self.labels.items())}

    def type_tallies(self) -> dict[str, Tally]:
        return {k: v.tally() for k, v in sorted(self.types.items())}


# --- reading the graph ----------------------------------------------------------------


def _records(driver: Driver, query: str, database: str | None, fetch_size: int) -> Iterator[Any]:
    """Stream a query's records (``fetch_size`` at a time), outages as TransientError."""
    import neo4j

    from shared.graph import raise_if_transient

    try:
        with driver.session(
            database=database,
            fetch_size=fetch_size,
            default_access_mode=neo4j.READ_ACCESS,
            notifications_min_severity="OFF",  # e.g. "label does not exist" on a new graph
        ) as session:
            yield from session.run(query)
    except Exception as exc:
        raise_if_transient(exc)
        raise


def read_schema(driver: Driver, database: str | None = None) -> list[SchemaItem]:
    """Constraints and indexes, minus a restore's temporary index."""
    items: list[SchemaItem] = []
    for record in _records(driver, _CONSTRAINTS, database, 1000):
        items.append(_schema_item("constraint", record))
    for record in _records(driver, _INDEXES, database, 1000):
        if record["name"] != RESTORE_INDEX:
            items.append(_schema_item("index", record))
    return sorted(items, key=lambda item: item.key())


def _schema_item(kind: Literal["constraint", "index"], record: Any) -> SchemaItem:
    data = dict(record)
    return SchemaItem(
        kind=kind,
        name=data["name"],
        type=data["type"],
        entity_type=data["entityType"],
        labels_or_types=list(data.get("labelsOrTypes") or []),
        properties=list(data.get("properties") or []),
        owning_constraint=data.get("owningConstraint"),
        create_statement=data["createStatement"],
    )


def graph_schema_version(driver: Driver, label: str, database: str | None = None) -> int | None:
    """The newest applied graph migration (graph/README.md), None if none is recorded."""
    query = f"MATCH (m:{_label(label)}) RETURN max(m.version) AS v"
    for record in _records(driver, query, database, 10):
        value = record["v"]
        return int(value) if value is not None else None
    return None


def server_version(driver: Driver, database: str | None = None) -> str:
    query = "CALL dbms.components() YIELD versions, edition RETURN versions[0] AS v, edition"
    for record in _records(driver, query, database, 10):
        return f"Neo4j {record['v']} {record['edition']}"
    return "Neo4j"


def _label(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def scan(
    driver: Driver,
    *,
    database: str | None = None,
    fetch_size: int = 2000,
    on_relationship: Callable[[bytes], object] | None = None,
    on_node: Callable[[bytes], object] | None = None,
) -> GraphTally:
    """Read every relationship, then every node; tally them, and hand each line of the
    export format to the callbacks (the export writes them, a verification does not)."""
    tally = GraphTally()
    for record in _records(driver, _RELATIONSHIPS, database, fetch_size):
        props = _encode_props(record["p"])
        sd = node_key(record["sl"], _encode_props(record["sp"]))
        ed = node_key(record["el"], _encode_props(record["ep"]))
        tally.add_relationship(record["t"], props, sd, ed)
        if on_relationship is not None:
            on_relationship(
                _json(
                    {
                        "s": record["s"],
                        "e": record["e"],
                        "t": record["t"],
                        "p": props,
                        "sd": sd,
                        "ed": ed,
                    }
                )
                + b"\n"
            )
    for record in _records(driver, _NODES, database, fetch_size):
        labels = sorted(record["labels"])
        if RESTORE_LABEL in labels:  # a restore still running into this graph
            labels.remove(RESTORE_LABEL)
        props = _encode_props(record["props"])
        props.pop(RESTORE_KEY, None)
        tally.add_node(labels, props)
        if on_node is not None:
            on_node(_json({"id": record["id"], "l": labels, "p": props}) + b"\n")
    return tally


# --- export ---------------------------------------------------------------------------


class _GzipObject:
    """One gzip object being written, with its counter."""

    def __init__(self, raw: IO[bytes], compresslevel: int) -> None:
        self.counter = CountingWriter(raw)
        self.gzip = gzip.GzipFile(
            filename="", mode="wb", fileobj=self.counter, compresslevel=compresslevel, mtime=0
        )

    def entry(self, name: str) -> ObjectEntry:
        return ObjectEntry(
            name=name,
            size=self.counter.size,
            sha256=self.counter.sha256,
            crc32c=self.counter.crc32c,
            content_type=CONTENT_TYPE,
        )


def export_graph(
    driver: Driver,
    store: BlobStore,
    *,
    now: Callable[[], datetime],
    source: str,
    period: Period = "weekly",
    database: str | None = None,
    record_label: str = "SchemaMigration",
    compresslevel: int = 6,
    fetch_size: int = 2000,
) -> Manifest:
    """Export the whole graph into ``store``; returns the manifest (written last)."""
    started = now()
    backup_id = new_backup_id("neo4j", started)
    prefix = backup_prefix("neo4j", period, backup_id, started)
    names = {k: f"{prefix}{k}.jsonl.gz" for k in ("schema", "relationships", "nodes")}
    version = server_version(driver, database)
    schema_version = graph_schema_version(driver, record_label, database)
    schema = read_schema(driver, database)
    entries: list[ObjectEntry] = []

    with store.put_stream(names["schema"], CONTENT_TYPE) as raw:
        out = _GzipObject(raw, compresslevel)
        with out.gzip:
            for item in schema:
                out.gzip.write(_json(item.model_dump(mode="json")) + b"\n")
    entries.append(out.entry(names["schema"]))

    with (
        store.put_stream(names["relationships"], CONTENT_TYPE) as raw_rels,
        store.put_stream(names["nodes"], CONTENT_TYPE) as raw_nodes,
    ):
        rels = _GzipObject(raw_rels, compresslevel)
        nodes = _GzipObject(raw_nodes, compresslevel)
        with rels.gzip, nodes.gzip:
            tally = scan(
                driver,
                database=database,
                fetch_size=fetch_size,
                on_relationship=rels.gzip.write,
                on_node=nodes.gzip.write,
            )
    entries.append(rels.entry(names["relationships"]))
    entries.append(nodes.entry(names["nodes"]))

    manifest = Manifest(
        backup_id=backup_id,
        store="neo4j",
        period=period,
        prefix=prefix,
        location=store.location,
        source=source,
        started_at=started,
        finished_at=now(),
        server_version=version,
        graph_schema_version=schema_version,
        data_format=DATA_FORMAT,
        objects=entries,
        graph=GraphEntry(
            nodes=tally.nodes.tally(),
            relationships=tally.relationships.tally(),
            labels=tally.label_tallies(),
            relationship_types=tally.type_tallies(),
            schema_items=schema,
            nodes_object=names["nodes"],
            relationships_object=names["relationships"],
            schema_object=names["schema"],
        ),
    )
    put_bytes(store, manifest.manifest_name, manifest_json(manifest), "application/json")
    return manifest


# --- restore --------------------------------------------------------------------------


def _write(driver: Driver, query: str, database: str | None, **params: Any) -> list[Any]:
    from shared.graph import raise_if_transient

    try:
        with driver.session(database=database) as session:
            return list(session.run(query, **params))
    except Exception as exc:
        raise_if_transient(exc)
        raise


def graph_is_empty(driver: Driver, database: str | None = None) -> bool:
    """No node, and no index or constraint beyond the built-in lookup indexes."""
    if _write(driver, "MATCH (n) RETURN 1 LIMIT 1", database):
        return False
    return all(item.type == "LOOKUP" for item in read_schema(driver, database))


def wipe_graph(driver: Driver, database: str | None = None) -> None:
    """Delete every node and relationship, constraint and (non-lookup) index."""
    _write(
        driver,
        "MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS",
        database,
    )
    for item in read_schema(driver, database):
        if item.kind == "constraint":
            _write(driver, f"DROP CONSTRAINT {_label(item.name)} IF EXISTS", database)
    for item in read_schema(driver, database):
        if item.type != "LOOKUP":
            _write(driver, f"DROP INDEX {_label(item.name)} IF EXISTS", database)


def _json_lines(check: ObjectCheck) -> Iterator[dict[str, Any]]:
    for line in split_lines(check.chunks()):
        if line:
            value = json.loads(line)
            if not isinstance(value, dict):
                raise ValueError("a line is not a JSON object")
            yield value


def _batches(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def restore_graph(
    manifest: Manifest,
    store: BlobStore,
    driver: Driver,
    *,
    target: str,
    database: str | None = None,
    force: bool = False,
    batch_size: int = 2000,
) -> RestoreReport:
    """Load ``manifest``'s graph into ``driver``'s database, then compare it with the
    manifest. A target with nodes or a schema is refused unless ``force`` (then wiped)."""
    started = time.perf_counter()
    report = RestoreReport(manifest.store, manifest.backup_id, target)
    graph = manifest.graph
    if graph is None:
        report.findings.append(Finding("manifest", "a neo4j manifest without its graph section"))
        return report.done(started)
    if not graph_is_empty(driver, database):
        if not force:
            raise RestoreRefused(
                f"{target} already holds nodes or a schema; restore over it only with --force"
            )
        wipe_graph(driver, database)

    _write(
        driver,
        f"CREATE INDEX {_label(RESTORE_INDEX)} IF NOT EXISTS"
        f" FOR (n:{_label(RESTORE_LABEL)}) ON (n.{_label(RESTORE_KEY)})",
        database,
    )
    _write(driver, f"CALL db.awaitIndex('{RESTORE_INDEX}', 300)", database)
    loaded = GraphTally()
    checks = {
        name: ObjectCheck(store, manifest.object(name))
        for name in (graph.schema_object, graph.nodes_object, graph.relationships_object)
    }
    try:
        _load_nodes(driver, database, checks[graph.nodes_object], loaded, batch_size)
        _load_relationships(
            driver, database, checks[graph.relationships_object], loaded, batch_size, report
        )
        schema = _load_schema(driver, database, checks[graph.schema_object])
    except (*READ_ERRORS, ValueError) as exc:
        for name, check in checks.items():
            if check.reader is None:
                check.run()
            report.findings.extend(check.findings(name, None))
        if not any(check.error for check in checks.values()):
            report.findings.append(Finding("graph", f"the export cannot be loaded: {exc}"))
        return report.done(started)
    finally:
        _cleanup(driver, database)

    for name, check in checks.items():
        report.findings.extend(check.findings(name, None))
        if check.reader is not None:
            report.bytes_read += check.reader.size
    report.findings.extend(_compare_graph(graph, loaded, "in the objects"))
    if schema:
        report.findings.append(Finding("schema", schema))
    report.loaded = True
    verify_graph(driver, manifest, report, database)
    return report.done(started)


def _load_nodes(
    driver: Driver, database: str | None, check: ObjectCheck, loaded: GraphTally, size: int
) -> None:
    for batch in _batches(_json_lines(check), size):
        by_labels: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for row in batch:
            labels = tuple(row["l"])
            loaded.add_node(list(labels), row["p"])
            by_labels[labels].append(
                {"id": row["id"], "p": {k: decode(v) for k, v in row["p"].items()}}
            )
        for labels, rows in by_labels.items():
            spelled = "".join(f":{_label(label)}" for label in (*labels, RESTORE_LABEL))
            _write(
                driver,
                f"UNWIND $rows AS r CREATE (n{spelled} {{{_label(RESTORE_KEY)}: r.id}})"
                " SET n += r.p",
                database,
                rows=rows,
            )


def _load_relationships(
    driver: Driver,
    database: str | None,
    check: ObjectCheck,
    loaded: GraphTally,
    size: int,
    report: RestoreReport,
) -> None:
    restore, key = _label(RESTORE_LABEL), _label(RESTORE_KEY)
    missing: dict[str, int] = defaultdict(int)
    for batch in _batches(_json_lines(check), size):
        by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in batch:
            loaded.add_relationship(row["t"], row["p"], row["sd"], row["ed"])
            by_type[row["t"]].append(
                {"s": row["s"], "e": row["e"], "p": {k: decode(v) for k, v in row["p"].items()}}
            )
        for rel_type, rows in by_type.items():
            created = _write(
                driver,
                f"UNWIND $rows AS r MATCH (a:{restore} {{{key}: r.s}})"
                f" MATCH (b:{restore} {{{key}: r.e}})"
                f" CREATE (a)-[x:{_label(rel_type)}]->(b) SET x += r.p RETURN count(x) AS c",
                database,
                rows=rows,
            )
            missing[rel_type] += len(rows) - int(created[0]["c"])
    for rel_type, count in sorted(missing.items()):
        if count:
            report.findings.append(
                Finding(
                    f"relationship type {rel_type}",
                    f"{count} relationships name an endpoint that is not in the backup",
                )
            )


def _load_schema(driver: Driver, database: str | None, check: ObjectCheck) -> str | None:
    """Recreate the constraints, then the indexes they do not own; returns a problem."""
    items = [SchemaItem.model_validate(row) for row in _json_lines(check)]
    existing = {item.name for item in read_schema(driver, database)}
    ordered = [i for i in items if i.kind == "constraint"] + [
        i for i in items if i.kind == "index" and not i.owning_constraint
    ]
    for item in ordered:
        if item.name in existing:
            continue  # the built-in lookup indexes
        if not _SCHEMA_STATEMENT.match(item.create_statement):
            return f"{item.kind} {item.name}: not a schema statement, not run"
        _write(driver, item.create_statement, database)
    _write(driver, "CALL db.awaitIndexes(300)", database)
    return None


def _cleanup(driver: Driver, database: str | None) -> None:
    """Take the temporary label, property and index off the restored graph."""
    _write(
        driver,
        f"MATCH (n:{_label(RESTORE_LABEL)}) CALL (n) {{"
        f" REMOVE n:{_label(RESTORE_LABEL)}, n.{_label(RESTORE_KEY)} }}"
        " IN TRANSACTIONS OF 10000 ROWS",
        database,
    )
    _write(driver, f"DROP INDEX {_label(RESTORE_INDEX)} IF EXISTS", database)


def verify_graph(
    driver: Driver, manifest: Manifest, report: RestoreReport, database: str | None = None
) -> None:
    """Read the restored graph again and compare counts, checksums and schema."""
    graph = manifest.graph
    assert graph is not None
    tally = scan(driver, database=database)
    report.counts = {f"label {k}": v.count for k, v in tally.label_tallies().items()}
    report.counts.update({f"type {k}": v.count for k, v in tally.type_tallies().items()})
    report.findings.extend(_compare_graph(graph, tally, "in the restored graph"))
    expected = {item.key() for item in graph.schema_items if item.type != "LOOKUP"}
    actual = {item.key() for item in read_schema(driver, database) if item.type != "LOOKUP"}
    for key in sorted(expected - actual):
        report.findings.append(Finding("schema", f"{key[0]} {key[1]} ({key[2]}) is missing"))
    for key in sorted(actual - expected):
        report.findings.append(
            Finding("schema", f"{key[0]} {key[1]} ({key[2]}) is not in the backup")
        )


def _compare_graph(graph: GraphEntry, tally: GraphTally, where: str) -> list[Finding]:
    found: list[Finding] = []
    pairs = [
        ("nodes", graph.nodes, tally.nodes.tally()),
        ("relationships", graph.relationships, tally.relationships.tally()),
    ]
    labels, types = tally.label_tallies(), tally.type_tallies()
    empty = Tally(count=0, checksum=MultisetDigest().checksum)
    for label in sorted(set(graph.labels) | set(labels)):
        pairs.append(
            (f"label {label or '(none)'}", graph.labels.get(label, empty), labels.get(label, empty))
        )
    for rel_type in sorted(set(graph.relationship_types) | set(types)):
        pairs.append(
            (
                f"relationship type {rel_type}",
                graph.relationship_types.get(rel_type, empty),
                types.get(rel_type, empty),
            )
        )
    for subject, expected, actual in pairs:
        if actual.count != expected.count:
            found.append(
                Finding(subject, f"{actual.count} {where}, the manifest says {expected.count}")
            )
        elif actual.checksum != expected.checksum:
            found.append(Finding(subject, f"checksum {where} differs from the manifest"))
    return found

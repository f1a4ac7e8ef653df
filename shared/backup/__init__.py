"""Backups proven by restore: PostgreSQL and Neo4j exports to Cloud Storage, restored
into scratch targets and compared with their manifests (docs/backups.md).

- :func:`parse`, :func:`dedupe_key`, :func:`handle` -- the functions' face (``_function``);
- :func:`take_backup`, :func:`drill`, :func:`restore_to`, :func:`find_backup` -- the
  operations the function and ``sightops backup`` call (``_service``);
- :func:`export_postgres` / :func:`restore_postgres` -- streaming COPY (``_postgres``);
- :func:`export_graph` / :func:`restore_graph` -- typed JSON lines over Bolt (``_neo4j``);
- :class:`Manifest` -- what a backup holds and how to check it (``_manifest``);
- :class:`BlobStore`, :class:`GcsBlobStore`, :class:`LocalBlobStore` -- where (``_store``).
"""

from typing import TYPE_CHECKING

from shared._lazy import lazy_attributes

if TYPE_CHECKING:
    from shared.backup._digest import LineDigest, MultisetDigest, Tally
    from shared.backup._function import VERIFIED_METRIC, dedupe_key, handle, parse
    from shared.backup._manifest import (
        InvalidManifest,
        Manifest,
        get_manifest,
        list_manifests,
        manifest_json,
    )
    from shared.backup._neo4j import export_graph, restore_graph, wipe_graph
    from shared.backup._postgres import PgTarget, RestoreRefused, export_postgres, restore_postgres
    from shared.backup._report import Finding, RestoreReport
    from shared.backup._service import (
        NoBackup,
        Staleness,
        create_store,
        drill,
        find_backup,
        restore_to,
        source_target,
        staleness,
        take_backup,
        target_from_url,
        verdict_event,
    )
    from shared.backup._store import (
        BlobInfo,
        BlobStore,
        GcsBlobStore,
        LocalBlobStore,
        ObjectMissing,
        storage_client,
    )
else:  # each name is imported on first use: docs/architecture.md, "Cold start"
    __getattr__ = lazy_attributes(
        __name__,
        {
            "_digest": ("LineDigest", "MultisetDigest", "Tally"),
            "_function": ("VERIFIED_METRIC", "dedupe_key", "handle", "parse"),
            "_manifest": (
                "InvalidManifest",
                "Manifest",
                "get_manifest",
                "list_manifests",
                "manifest_json",
            ),
            "_neo4j": ("export_graph", "restore_graph", "wipe_graph"),
            "_postgres": ("PgTarget", "RestoreRefused", "export_postgres", "restore_postgres"),
            "_report": ("Finding", "RestoreReport"),
            "_service": (
                "NoBackup",
                "Staleness",
                "create_store",
                "drill",
                "find_backup",
                "restore_to",
                "source_target",
                "staleness",
                "take_backup",
                "target_from_url",
                "verdict_event",
            ),
            "_store": (
                "BlobInfo",
                "BlobStore",
                "GcsBlobStore",
                "LocalBlobStore",
                "ObjectMissing",
                "storage_client",
            ),
        },
    )

__all__ = [
    "VERIFIED_METRIC",
    "BlobInfo",
    "BlobStore",
    "Finding",
    "GcsBlobStore",
    "InvalidManifest",
    "LineDigest",
    "LocalBlobStore",
    "Manifest",
    "MultisetDigest",
    "NoBackup",
    "ObjectMissing",
    "PgTarget",
    "RestoreRefused",
    "RestoreReport",
    "Staleness",
    "Tally",
    "create_store",
    "dedupe_key",
    "drill",
    "export_graph",
    "export_postgres",
    "find_backup",
    "get_manifest",
    "handle",
    "list_manifests",
    "manifest_json",
    "parse",
    "restore_graph",
    "restore_postgres",
    "restore_to",
    "source_target",
    "staleness",
    "storage_client",
    "take_backup",
    "target_from_url",
    "verdict_event",
    "wipe_graph",
]

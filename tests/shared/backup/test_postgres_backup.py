"""PostgreSQL backup -> restore -> identical data, through the real server and the Cloud
Storage stand-in with the official client (docs/backups.md)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from shared.backup import (
    LocalBlobStore,
    Manifest,
    RestoreRefused,
    export_postgres,
    get_manifest,
    list_manifests,
    restore_postgres,
)
from shared.backup._service import source_target
from shared.migrate._alembic import AlembicRunner
from shared.settings import Settings
from tests.shared.backup.helpers import (
    HARD_NAME,
    SMALL,
    TABLES,
    VECTOR,
    Gcs,
    sync_engine,
    table_rows,
)


def target(url: str):  # type: ignore[no-untyped-def]
    return source_target(Settings(database_url=SecretStr(url)))


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def exported(
    source_db: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Manifest, LocalBlobStore]:
    store = LocalBlobStore(tmp_path_factory.mktemp("pg-backups"))
    return export_postgres(target(source_db), store, now=now), store


def test_export_lists_every_table_with_rows_checksums_and_the_alembic_revision(
    exported: tuple[Manifest, LocalBlobStore], source_db: str
) -> None:
    manifest, store = exported
    by_name = {t.qualified: t for t in manifest.tables}
    assert set(TABLES) <= set(by_name)
    assert "public.alembic_version" not in by_name
    assert by_name["public.projects"].rows == SMALL.projects + 1
    assert by_name["public.personas"].rows == SMALL.personas + 2
    assert by_name["ops.actions"].rows == 3
    engine = sync_engine(source_db)
    with engine.connect() as conn:
        head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    assert manifest.alembic_revision == head
    # parents before children, so foreign keys hold while loading
    order = [t.qualified for t in manifest.tables]
    assert order.index("public.projects") < order.index("public.personas")
    assert order.index("public.personas") < order.index("public.focus_group_responses")
    # objects are gzip COPY text, one row a line, named by store, period and date
    personas = manifest.object(by_name["public.personas"].object)
    assert personas.name.startswith(f"postgres/daily/{manifest.started_at:%Y-%m-%d}/")
    with store.get_stream(personas.name) as raw:
        lines = gzip.decompress(raw.read()).splitlines()
    assert len(lines) == SMALL.personas + 2
    assert get_manifest(store, manifest.manifest_name) == manifest
    assert list_manifests(store) == [manifest]


def test_a_restored_database_is_identical_row_for_row_including_vectors_json_and_time_zones(
    exported: tuple[Manifest, LocalBlobStore], source_db: str, empty_db: str
) -> None:
    manifest, store = exported
    report = restore_postgres(manifest, store, target(empty_db), alembic=AlembicRunner())
    assert report.ok, report.summary()
    assert report.counts["public.personas"] == SMALL.personas + 2
    for table in TABLES:
        assert table_rows(empty_db, table) == table_rows(source_db, table), table
    engine = sync_engine(empty_db)
    with engine.connect() as conn:
        hard = conn.execute(
            text(
                "SELECT embedding = CAST(:v AS vector) AS same_vector, attributes, pe.created_at,"
                " pr.name, pr.archived_at = 'infinity' AS forever"
                " FROM personas pe JOIN projects pr ON pr.id = pe.project_id"
                " WHERE pe.name = 'hard'"
            ),
            {"v": "[" + ",".join(repr(v) for v in VECTOR) + "]"},
        ).one()
        # the identity continues after the restored ids
        new_id = conn.execute(
            text("INSERT INTO ops.actions (kind, status) VALUES ('x', 'y') RETURNING id")
        ).scalar()
        top = conn.execute(text("SELECT max(id) FROM ops.actions WHERE kind <> 'x'")).scalar()
    engine.dispose()
    assert hard.same_vector is True
    assert hard.attributes["big"] == 123456789012345678901234567890
    assert hard.attributes["nested"]["list"][2] == "x\ty"
    assert hard.name == HARD_NAME
    assert hard.forever is True
    assert hard.created_at == datetime(2024, 3, 31, 1, 30, 0, 1, tzinfo=UTC)
    assert new_id > top


def test_restore_refuses_a_database_holding_rows_unless_forced(
    exported: tuple[Manifest, LocalBlobStore], source_db: str
) -> None:
    manifest, store = exported
    with pytest.raises(RestoreRefused, match=r"already holds rows in .*--force"):
        restore_postgres(manifest, store, target(source_db), alembic=AlembicRunner())
    assert len(table_rows(source_db, "public.personas")) == SMALL.personas + 2


def test_a_forced_restore_replaces_the_rows_and_a_failed_one_changes_nothing(
    exported: tuple[Manifest, LocalBlobStore], source_db: str, empty_db: str, tmp_path
) -> None:
    manifest, store = exported
    assert restore_postgres(manifest, store, target(empty_db), alembic=AlembicRunner()).ok
    engine = sync_engine(empty_db)
    with engine.connect() as conn:
        conn.execute(text("DELETE FROM projects WHERE name = :n"), {"n": HARD_NAME})
        conn.execute(text("INSERT INTO ops.actions (kind, status) VALUES ('extra', 'x')"))
    engine.dispose()

    report = restore_postgres(
        manifest, store, target(empty_db), alembic=AlembicRunner(), force=True
    )
    assert report.ok, report.summary()
    assert table_rows(empty_db, "public.personas") == table_rows(source_db, "public.personas")
    assert table_rows(empty_db, "ops.actions") == table_rows(source_db, "ops.actions")

    # a broken object: the forced restore fails and leaves the previous rows in place
    broken = LocalBlobStore(tmp_path)
    for entry in manifest.objects:
        with store.get_stream(entry.name) as raw:
            data = raw.read()
        if entry.name.endswith("public.personas.copy.gz"):
            data = data[: len(data) // 2]
        with broken.put_stream(entry.name, entry.content_type) as out:
            out.write(data)
    report = restore_postgres(
        manifest, broken, target(empty_db), alembic=AlembicRunner(), force=True
    )
    assert not report.ok
    assert table_rows(empty_db, "public.personas") == table_rows(source_db, "public.personas")


def test_restore_refuses_a_database_at_another_alembic_revision(
    exported: tuple[Manifest, LocalBlobStore], empty_db: str
) -> None:
    manifest, store = exported
    older = manifest.model_copy(update={"alembic_revision": "0001"})
    from tests.conftest import upgrade_to_head

    upgrade_to_head(Settings(database_url=SecretStr(empty_db)))
    with pytest.raises(RestoreRefused, match="Alembic revision"):
        restore_postgres(older, store, target(empty_db), alembic=AlembicRunner())


def test_backup_and_restore_through_cloud_storage_with_the_official_client(
    source_db: str, empty_db: str, gcs: Gcs
) -> None:
    manifest = export_postgres(target(source_db), gcs.store, now=now)
    assert manifest.location == f"gs://{gcs.bucket}"
    listed = {o["name"]: o for o in gcs.state.list_objects(gcs.bucket, {})["items"]}
    for entry in manifest.objects:  # the crc32c Cloud Storage computed is the manifest's
        assert listed[entry.name]["crc32c"] == entry.crc32c
        assert int(listed[entry.name]["size"]) == entry.size
    report = restore_postgres(manifest, gcs.store, target(empty_db), alembic=AlembicRunner())
    assert report.ok, report.summary()
    assert table_rows(empty_db, "public.personas") == table_rows(source_db, "public.personas")

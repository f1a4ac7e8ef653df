"""The Cloud Storage stand-in, driven by the official google-cloud-storage client."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import google_crc32c
import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption
from google.cloud.storage.retry import DEFAULT_RETRY

from standins import RunningServer, serve
from standins.storage import StorageState, create_app

PROJECT = "sight-local"
BUCKET = "sight-backups"
MIB = 1024 * 1024
# The client's own retry policy (what it uses by default), with short sleeps.
FAST_RETRY = DEFAULT_RETRY.with_delay(initial=0.01, maximum=0.05)


def gcs_md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def gcs_crc32c(data: bytes) -> str:
    return base64.b64encode(struct.pack(">I", google_crc32c.value(data))).decode()


def client_for(url: str) -> storage.Client:
    return storage.Client(
        project=PROJECT, client_options={"api_endpoint": url}, credentials=AnonymousCredentials()
    )


@pytest.fixture
def gcs(storage_server: RunningServer, storage_state: StorageState) -> storage.Client:
    storage_state.create_bucket(BUCKET)
    return client_for(storage_server.url)


@pytest.fixture
def disk_state(tmp_path: Path) -> Iterator[StorageState]:
    state = StorageState(storage_dir=tmp_path)
    state.create_bucket(BUCKET)
    yield state
    state.close()


def upload_types(state: StorageState) -> list[str]:
    return [r["query"].get("uploadType", "") for r in state.requests("POST", r"^/upload/")]


def test_small_upload_round_trips_metadata_content_type_and_gcs_checksums(
    gcs: storage.Client, storage_state: StorageState
) -> None:
    data = b'{"table": "personas", "rows": 3}\n'
    blob = gcs.bucket(BUCKET).blob("postgres/2024-05-01/manifest.json")
    blob.metadata = {"store": "postgres", "alembic_revision": "0007"}

    blob.upload_from_string(data, content_type="application/json", if_generation_match=0)
    fetched = gcs.bucket(BUCKET).get_blob("postgres/2024-05-01/manifest.json")

    assert fetched is not None
    assert (fetched.size, fetched.content_type) == (len(data), "application/json")
    assert fetched.metadata == {"store": "postgres", "alembic_revision": "0007"}
    # base64 of the digests, CRC32C big-endian -- as Cloud Storage reports them
    assert (fetched.md5_hash, fetched.crc32c) == (gcs_md5(data), gcs_crc32c(data))
    assert fetched.generation == blob.generation and fetched.metageneration == 1
    assert fetched.download_as_bytes() == data
    assert upload_types(storage_state) == ["multipart"]


def test_objects_over_8_mib_upload_resumably_stream_to_disk_and_download_verified(
    disk_state: StorageState,
) -> None:
    data = os.urandom(9 * MIB + 5)  # above the client's 8 MiB multipart limit
    with serve(create_app(disk_state)) as server:
        bucket = client_for(server.url).bucket(BUCKET)
        chunked = bucket.blob("postgres/chunked.jsonl", chunk_size=2 * MIB)
        chunked.upload_from_file(io.BytesIO(data), if_generation_match=0)
        bucket.blob("postgres/whole.jsonl").upload_from_file(
            io.BytesIO(data), if_generation_match=0
        )

        chunk_puts = [r["status"] for r in disk_state.requests("PUT", r"^/upload/")]
        assert upload_types(disk_state) == ["resumable", "resumable"]
        # five 2 MiB chunks (308 = keep going) then the last; the other upload: one PUT
        assert chunk_puts == [308, 308, 308, 308, 200, 200]
        assert chunked.crc32c == gcs_crc32c(data) and chunked.md5_hash == gcs_md5(data)
        # whole download (checksum verified by the client) and ranged chunked download
        assert bucket.blob("postgres/whole.jsonl").download_as_bytes() == data
        ranged = bucket.blob("postgres/chunked.jsonl", chunk_size=4 * MIB).download_as_bytes()
        assert ranged == data
        assert [r["status"] for r in disk_state.requests("GET", r"chunked\.jsonl$")] == [
            206,
            206,
            206,
        ]
        assert (
            bucket.blob("postgres/whole.jsonl").download_as_bytes(start=10, end=19) == (data[10:20])
        )

    root = disk_state.storage_root
    assert root is not None
    assert sorted(p.stat().st_size for p in (root / "objects").iterdir()) == [len(data)] * 2
    assert list((root / "uploads").iterdir()) == []
    assert disk_state.open_uploads() == []


def test_a_corrupted_stored_byte_makes_the_clients_download_raise_data_corruption(
    gcs: storage.Client, storage_state: StorageState, storage_server: RunningServer, web
) -> None:
    data = os.urandom(64 * 1024)
    storage_state.put_object(BUCKET, "neo4j/2024-05-05/nodes.jsonl", data)

    status, _ = web.json(
        "POST",
        f"{storage_server.url}/_admin/corrupt",
        {"bucket": BUCKET, "name": "neo4j/2024-05-05/nodes.jsonl", "offset": 1000},
    )

    assert status == 200
    blob = gcs.bucket(BUCKET).blob("neo4j/2024-05-05/nodes.jsonl")
    with pytest.raises(DataCorruption, match="Checksum mismatch"):
        blob.download_as_bytes()
    # the recorded checksums are still those of the bytes that were uploaded
    assert gcs.bucket(BUCKET).get_blob("neo4j/2024-05-05/nodes.jsonl").crc32c == gcs_crc32c(data)
    stored = storage_state.object_bytes(BUCKET, "neo4j/2024-05-05/nodes.jsonl")
    assert [i for i in range(len(data)) if stored[i] != data[i]] == [1000]


def test_list_by_prefix_folds_prefixes_at_the_delimiter_and_pages_in_name_order(
    gcs: storage.Client, storage_state: StorageState
) -> None:
    names = [
        "neo4j/2024-05-05/nodes.jsonl",
        "postgres/2024-05-01/manifest.json",
        "postgres/2024-05-01/sight.personas.jsonl",
        "postgres/2024-05-02/manifest.json",
        "postgres/2024-05-02/sight.personas.jsonl",
        "postgres/2024-05-02/sight.projects.jsonl",
    ]
    for name in reversed(names):
        storage_state.put_object(BUCKET, name, name.encode())

    paged = list(gcs.list_blobs(BUCKET, prefix="postgres/", page_size=2))
    days = gcs.list_blobs(BUCKET, prefix="postgres/", delimiter="/")
    day_items = list(days)
    one_day = [b.name for b in gcs.list_blobs(BUCKET, prefix="postgres/2024-05-02/")]

    assert [b.name for b in paged] == names[1:]
    assert len(storage_state.requests("GET", rf"^/storage/v1/b/{BUCKET}/o$")) >= 3  # pages
    assert (day_items, days.prefixes) == ([], {"postgres/2024-05-01/", "postgres/2024-05-02/"})
    assert one_day == names[3:]
    assert all(b.size == len(b.name) for b in paged)


def test_if_generation_match_0_refuses_to_overwrite_with_412_for_every_upload_type(
    gcs: storage.Client, storage_state: StorageState, storage_server: RunningServer, web
) -> None:
    storage_state.put_object(BUCKET, "postgres/2024-05-01/manifest.json", b"original")
    bucket = gcs.bucket(BUCKET)

    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob("postgres/2024-05-01/manifest.json").upload_from_string(
            b"other", if_generation_match=0
        )
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob("postgres/2024-05-01/manifest.json", chunk_size=256 * 1024).upload_from_file(
            io.BytesIO(b"x" * 300_000), if_generation_match=0
        )

    assert storage_state.object_bytes(BUCKET, "postgres/2024-05-01/manifest.json") == b"original"
    # a resumable session opens fine; the precondition is checked when it completes
    assert [r["status"] for r in storage_state.requests(None, r"^/upload/")] == [412, 200, 308, 412]
    assert storage_state.open_uploads() == []
    status, body = web.json(
        "POST",
        f"{storage_server.url}/upload/storage/v1/b/{BUCKET}/o?uploadType=media"
        "&name=postgres%2F2024-05-01%2Fmanifest.json&ifGenerationMatch=0",
        {"raw": "body"},
    )
    assert status == 412
    assert body["error"]["errors"][0] == {
        "domain": "global",
        "reason": "conditionNotMet",
        "message": "At least one of the pre-conditions you specified did not hold.",
    }


def test_retention_policy_refuses_deleting_or_overwriting_a_young_object_with_403(
    gcs: storage.Client, storage_state: StorageState
) -> None:
    storage_state.create_bucket("retained", retention_period_s=3600)
    bucket = gcs.bucket("retained")
    blob = bucket.blob("postgres/2024-05-01/manifest.json")
    blob.upload_from_string(b"{}", if_generation_match=0)

    with pytest.raises(exceptions.Forbidden, match="subject to bucket's retention policy"):
        blob.delete()
    with pytest.raises(exceptions.Forbidden, match="retention policy"):
        bucket.blob("postgres/2024-05-01/manifest.json").upload_from_string(b"[]")

    fetched = bucket.get_blob("postgres/2024-05-01/manifest.json")
    assert fetched.retention_expiration_time == fetched.time_created + timedelta(hours=1)
    storage_state.backdate("retained", "postgres/2024-05-01/manifest.json", 3601)
    blob.delete()  # old enough now
    assert bucket.get_blob("postgres/2024-05-01/manifest.json") is None


def test_bucket_insert_get_and_list_keep_retention_uniform_access_and_lifecycle(
    gcs: storage.Client,
) -> None:
    bucket = gcs.bucket("sight-backups-eu")
    bucket.retention_period = 86400
    bucket.iam_configuration.uniform_bucket_level_access_enabled = True
    bucket.add_lifecycle_delete_rule(age=30)
    gcs.create_bucket(bucket, location="europe-west1")

    got = gcs.get_bucket("sight-backups-eu")

    assert got.retention_period == 86400
    assert got.iam_configuration.uniform_bucket_level_access_enabled is True
    assert [dict(r) for r in got.lifecycle_rules] == [
        {"action": {"type": "Delete"}, "condition": {"age": 30}}
    ]
    assert got.location == "EUROPE-WEST1" and got.project_number == 123456789012
    assert {b.name for b in gcs.list_buckets()} == {BUCKET, "sight-backups-eu"}
    with pytest.raises(exceptions.Conflict):
        gcs.create_bucket("sight-backups-eu")
    with pytest.raises(exceptions.BadRequest, match="uniform bucket-level access"):
        got.blob("x").upload_from_string(b"x", predefined_acl="publicRead")
    with pytest.raises(exceptions.NotFound):
        gcs.get_bucket("absent-bucket")


def test_injected_503s_are_retried_by_the_clients_retry_on_reads_uploads_and_downloads(
    gcs: storage.Client, storage_state: StorageState
) -> None:
    data = os.urandom(3 * MIB)
    bucket = gcs.bucket(BUCKET)
    storage_state.inject_fault(503, method="PUT", path_regex=r"^/upload/")
    storage_state.inject_fault(429, method="GET", path_regex=r"/o/dump\.jsonl$")
    storage_state.inject_fault(503, method="GET", path_regex=r"^/download/")

    bucket.blob("dump.jsonl", chunk_size=MIB).upload_from_file(
        io.BytesIO(data), if_generation_match=0, retry=FAST_RETRY
    )
    fetched = bucket.get_blob("dump.jsonl", retry=FAST_RETRY)
    downloaded = bucket.blob("dump.jsonl").download_as_bytes(retry=FAST_RETRY)

    assert fetched is not None and fetched.size == len(data)
    assert downloaded == data
    # the client cannot tell the third chunk is the last: it closes with an empty PUT
    assert [r["status"] for r in storage_state.requests("PUT")] == [503, 308, 308, 308, 200]
    assert [r["status"] for r in storage_state.requests("GET", r"dump\.jsonl$")] == [
        429,
        200,
        503,
        200,
    ]
    storage_state.inject_fault(503, method="GET", path_regex=r"/o/dump\.jsonl$")
    with pytest.raises(exceptions.ServiceUnavailable):
        bucket.get_blob("dump.jsonl", retry=None)


def test_an_interrupted_download_resumes_with_a_range_request_for_the_rest(
    gcs: storage.Client, storage_state: StorageState
) -> None:
    data = os.urandom(2 * MIB + 17)
    storage_state.put_object(BUCKET, "neo4j/relationships.jsonl", data)
    storage_state.interrupt_next_download(after_bytes=MIB + 3)

    got = gcs.bucket(BUCKET).blob("neo4j/relationships.jsonl").download_as_bytes(retry=FAST_RETRY)

    assert got == data
    downloads = storage_state.requests("GET", r"^/download/")
    assert [r["status"] for r in downloads] == [200, 206]
    # the resumed request pins the generation it started reading
    assert downloads[1]["query"]["generation"] == str(
        gcs.bucket(BUCKET).get_blob("neo4j/relationships.jsonl").generation
    )


def test_copy_and_rewrite_keep_the_bytes_and_checksums(
    gcs: storage.Client, storage_state: StorageState
) -> None:
    storage_state.put_object(BUCKET, "postgres/a.jsonl", b"abc", metadata={"rows": "1"})
    bucket = gcs.bucket(BUCKET)

    copied = bucket.copy_blob(bucket.blob("postgres/a.jsonl"), bucket, "copies/a.jsonl")
    rewritten = bucket.blob("copies/b.jsonl")
    token, done, total = rewritten.rewrite(bucket.blob("postgres/a.jsonl"))

    assert (token, done, total) == (None, 3, 3)
    assert copied.metadata == {"rows": "1"} and copied.crc32c == gcs_crc32c(b"abc")
    assert bucket.blob("copies/b.jsonl").download_as_bytes() == b"abc"


def test_storage_emulator_host_points_the_client_at_the_stand_in(
    storage_server: RunningServer, storage_state: StorageState, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage_state.create_bucket(BUCKET)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage_server.url)

    client = storage.Client(project=PROJECT)  # anonymous credentials, by the client itself
    client.bucket(BUCKET).blob("hello.txt").upload_from_string(b"hi")

    assert storage_state.object_bytes(BUCKET, "hello.txt") == b"hi"


def test_object_resource_and_errors_have_the_json_api_shape(
    gcs: storage.Client, storage_server: RunningServer, storage_state: StorageState, web, golden
) -> None:
    storage_state.create_bucket("retained", retention_period_s=2_592_000)
    gcs.bucket("retained").blob("postgres/2024-05-01/sight.personas.jsonl").upload_from_string(
        b"{}\n", content_type="application/x-ndjson", if_generation_match=0
    )
    blob = gcs.bucket("retained").get_blob("postgres/2024-05-01/sight.personas.jsonl")
    blob.metadata = {"rows": "1"}
    blob.patch()

    url = (
        f"{storage_server.url}/storage/v1/b/retained/o/postgres%2F2024-05-01%2Fsight.personas.jsonl"
    )
    status, resource = web.json("GET", url)
    missing_status, missing = web.json("GET", f"{storage_server.url}/storage/v1/b/retained/o/nope")

    assert status == 200 and missing_status == 404
    golden.check("storage/object.json", resource)
    golden.check("storage/error_not_found.json", missing)
    assert resource["metageneration"] == "2" and resource["metadata"] == {"rows": "1"}
    assert missing["error"]["errors"][0]["reason"] == "notFound"
    assert missing["error"]["message"] == "No such object: retained/nope"
    # every field of the fixture is one the client reads into a typed property
    parsed = gcs.bucket("retained").blob("x")
    parsed._set_properties(json.loads(golden.load_text("storage/object.json")))
    assert isinstance(parsed.size, int) and isinstance(parsed.generation, int)
    assert parsed.retention_expiration_time > parsed.time_created
    assert parsed.md5_hash and parsed.crc32c and parsed.media_link and parsed.etag


def test_python_m_standins_storage_serves_the_client_from_disk_and_cleans_up_on_sigterm(
    tmp_path: Path,
) -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "standins", "storage", "--port", "0",
         "--storage-dir", str(tmp_path), "--storage-bucket", BUCKET],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        url = None
        for _ in range(50):
            line = proc.stderr.readline()
            if match := re.search(r"storage listening on (http://\S+)", line):
                url = match.group(1)
                break
        assert url is not None, "the stand-in did not start"
        blob = client_for(url).bucket(BUCKET).blob("postgres/dump.jsonl")
        blob.upload_from_string(b"row\n", if_generation_match=0)
        stored = list(tmp_path.glob("gcs-standin-*/objects/*"))
        assert [p.read_bytes() for p in stored] == [b"row\n"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(10)
    assert code == 0
    assert list(tmp_path.iterdir()) == []  # its own directory, removed at exit

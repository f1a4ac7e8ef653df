"""The backup tests' fixtures (tests/shared/backup/helpers.py)."""

from tests.shared.backup.helpers import empty_db, gcs, scratch_neo4j, source_db

__all__ = ["empty_db", "gcs", "scratch_neo4j", "source_db"]

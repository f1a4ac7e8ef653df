"""The backup functions' and CLI's fixtures: the Cloud Storage stand-in and the scratch
Neo4j (tests/shared/backup/helpers.py), private topics on the emulator."""

from tests.shared.backup.helpers import gcs, scratch_neo4j
from tests.shared.migrate.helpers import ops_topic

__all__ = ["gcs", "ops_topic", "scratch_neo4j"]

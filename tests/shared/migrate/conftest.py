from tests.shared.migrate.helpers import graph_ns, migration_db, ops_topic

__all__ = ["graph_ns", "migration_db", "ops_topic"]

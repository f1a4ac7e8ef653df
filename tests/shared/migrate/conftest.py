from tests.shared.migrate.helpers import deps_for, graph_ns, migration_db, ops_topic

__all__ = ["deps_for", "graph_ns", "migration_db", "ops_topic"]

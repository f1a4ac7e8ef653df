from tests.shared.kpi.helpers import own_redis

__all__ = ["own_redis"]

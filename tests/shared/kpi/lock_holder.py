"""Run as a process: take a cache key's lock through the real cache and compute forever.

The test SIGKILLs this process mid-computation: a crashed instance, watchdog and all.
Usage: python lock_holder.py REDIS_URL PREFIX KEY LOCK_TTL_S
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import redis

from shared.kpi.cache import BytesCodec, SingleFlightCache
from shared.settings import KpiConfig


def main() -> None:
    url, prefix, key, lock_ttl = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    cache = SingleFlightCache(
        redis.Redis.from_url(url),
        BytesCodec(),
        KpiConfig(lock_ttl_s=lock_ttl, wait_s=60),
        prefix=prefix,
    )

    def forever() -> bytes:
        print("computing", flush=True)
        time.sleep(3600)
        return b"never"

    cache.get(key, forever)


if __name__ == "__main__":
    main()

"""The group stage's state: alert groups in Redis, the way Alertmanager's dispatcher
keeps them in memory (docs/notify.md, "Grouping in a stateless, push-triggered function").

A stateless, push-triggered function has no timers, so the group's clock lives in Redis:

- ``due`` (sorted set): groups with changes not yet notified, scored by when they may
  be flushed (creation + group_wait for a new group, last flush + group_interval after);
- ``repeat`` (sorted set): groups still firing, scored by last message + repeat_interval;
- per group: a hash of alerts (incident_id -> entry, with firing/resolved state), a meta
  hash (labels, created, last flush, what the last message said), a flush lock and a
  *timer lease*: the one delivery currently responsible for flushing the group.

Appending is one Lua script (atomic), so concurrent deliveries never lose an alert or a
due time. Every key is prefixed and expires (``state_ttl_s``). What a flush says and
when is decided by the stage itself (``_group.py``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from shared.notify._model import AlertEntry
from shared.notify._route import GroupSettings

# KEYS: alerts, meta, due, closed, timer
# ARGV: gid, incident_id, entry_json, state, now, group_wait, group_interval, ttl,
#       labels_json, route, timer_token, timer_ttl_ms
_APPEND = """
local alerts, meta, due, closed, timer = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local gid, iid, entry, state = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, gwait, gint, ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]),
  tonumber(ARGV[8])
if state == 'firing' and redis.call('EXISTS', closed) == 1 then
  return {'stale', 0, false}
end
if state == 'resolved' then
  redis.call('SET', closed, '1', 'EX', ttl)
end
local changed = 1
local prev = redis.call('HGET', alerts, iid)
if prev then
  local pstate = cjson.decode(prev)['state']
  if pstate == state or pstate == 'resolved' then changed = 0 end
end
if redis.call('HEXISTS', meta, 'created') == 0 then
  redis.call('HSET', meta, 'created', now, 'labels', ARGV[9], 'route', ARGV[10],
    'last_flush', 0, 'last_notify', 0, 'notified', '[]', 'seq', 0, 'ver', 0)
end
if changed == 1 then
  redis.call('HSET', alerts, iid, entry)
  redis.call('HINCRBY', meta, 'ver', 1)
  local last = tonumber(redis.call('HGET', meta, 'last_flush'))
  local at
  if last == 0 then
    at = tonumber(redis.call('HGET', meta, 'created')) + gwait
  else
    at = math.max(last + gint, now)
  end
  redis.call('ZADD', due, 'NX', at, gid)
end
redis.call('EXPIRE', alerts, ttl)
redis.call('EXPIRE', meta, ttl)
local score = redis.call('ZSCORE', due, gid)
local holder = 0
if score then
  if redis.call('SET', timer, ARGV[11], 'NX', 'PX', ARGV[12]) then holder = 1 end
end
if changed == 1 then return {'changed', holder, score} end
return {'unchanged', holder, score}
"""

# Give up the timer lease only if nothing is pending (atomically with the check, so an
# alert appended meanwhile is never left without a timer). KEYS: due, timer; ARGV: gid, token
_RELEASE_TIMER_IF_IDLE = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Record a flush. KEYS: alerts, meta, due, repeat
# ARGV: gid, snapshot_ver, now, group_interval, repeat_interval, notified_json, notified(0/1),
#       ttl, resolved ids...
_COMMIT = """
local alerts, meta, due, rep = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local gid, ver, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local gint, rint, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[8])
for i = 9, #ARGV do redis.call('HDEL', alerts, ARGV[i]) end
redis.call('HSET', meta, 'last_flush', now, 'notified', ARGV[6])
if ARGV[7] == '1' then
  redis.call('HSET', meta, 'last_notify', now)
  redis.call('HINCRBY', meta, 'seq', 1)
end
if redis.call('HGET', meta, 'ver') == ver then
  redis.call('ZREM', due, gid)
else
  redis.call('ZADD', due, now + gint, gid)
end
local firing = 0
for _, v in ipairs(redis.call('HVALS', alerts)) do
  if cjson.decode(v)['state'] == 'firing' then firing = firing + 1 end
end
if redis.call('HLEN', alerts) == 0 and not redis.call('ZSCORE', due, gid) then
  redis.call('DEL', alerts, meta)
  redis.call('ZREM', rep, gid)
  return 0
end
if firing > 0 then
  local last = tonumber(redis.call('HGET', meta, 'last_notify'))
  redis.call('ZADD', rep, last + rint, gid)
else
  redis.call('ZREM', rep, gid)
end
redis.call('EXPIRE', alerts, ttl)
redis.call('EXPIRE', meta, ttl)
return 1
"""


@dataclass(frozen=True)
class AppendResult:
    gid: str
    status: str  # changed | unchanged | stale
    holder: bool  # this delivery holds the group's timer lease
    timer_token: str
    due: float | None


@dataclass(frozen=True)
class Snapshot:
    """A group as read under its flush lock."""

    gid: str
    labels: dict[str, str]
    route: str
    alerts: dict[str, AlertEntry]
    notified: frozenset[str]
    last_notify: float
    ver: str
    seq: int
    created: str

    @property
    def firing(self) -> list[AlertEntry]:
        return sorted((a for a in self.alerts.values() if a.state == "firing"), key=_order)

    @property
    def resolved(self) -> list[AlertEntry]:
        return sorted((a for a in self.alerts.values() if a.state == "resolved"), key=_order)


def _order(entry: AlertEntry) -> tuple[float, str]:
    return (entry.started_at or 0.0, entry.incident_id)


def group_id(route: str, labels: Mapping[str, str]) -> str:
    """A short stable id for (route, group labels); labels are kept readable in meta."""
    raw = json.dumps([route, sorted(labels.items())], ensure_ascii=False)
    return hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()[:20]


class GroupStore:
    """Grouping state for one prefix; every method may raise ``redis.RedisError``."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        self.r = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._append = client.register_script(_APPEND)
        self._release_idle = client.register_script(_RELEASE_TIMER_IF_IDLE)
        self._release = client.register_script(_RELEASE)
        self._commit = client.register_script(_COMMIT)

    # keys
    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def due_key(self) -> str:
        return self._k("due")

    @property
    def repeat_key(self) -> str:
        return self._k("repeat")

    def keys_for(self, gid: str) -> dict[str, str]:
        return {
            "alerts": self._k("g", gid, "alerts"),
            "meta": self._k("g", gid, "meta"),
            "timer": self._k("g", gid, "timer"),
            "lock": self._k("g", gid, "lock"),
        }

    def append(
        self,
        route: str,
        labels: Mapping[str, str],
        entry: AlertEntry,
        settings: GroupSettings,
        now: float,
        timer_ttl_s: float,
    ) -> AppendResult:
        gid = group_id(route, labels)
        keys = self.keys_for(gid)
        token = secrets.token_hex(8)
        raw = cast(
            "list[Any]",
            self._append(
                keys=[
                    keys["alerts"],
                    keys["meta"],
                    self.due_key,
                    self._k("closed", entry.incident_id),
                    keys["timer"],
                ],
                args=[
                    gid,
                    entry.incident_id,
                    entry.to_json(),
                    entry.state,
                    repr(now),
                    repr(settings.group_wait),
                    repr(settings.group_interval),
                    self.ttl_s,
                    json.dumps(dict(labels), ensure_ascii=False),
                    route,
                    token,
                    int(timer_ttl_s * 1000),
                ],
            ),
        )
        status = raw[0].decode() if isinstance(raw[0], bytes) else str(raw[0])
        due = float(raw[2]) if raw[2] else None
        return AppendResult(gid, status, bool(raw[1]), token, due)

    def due_at(self, gid: str) -> float | None:
        score = self.r.zscore(self.due_key, gid)
        return float(score) if score is not None else None

    def is_due(self, gid: str, now: float) -> bool:
        """Due for a flush now (changes past their wait, or a repeat reminder)? Checked
        again under the flush lock: another delivery may have flushed the group since it
        was listed as due."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zscore(self.due_key, gid)
        pipe.zscore(self.repeat_key, gid)
        due, repeat = pipe.execute()
        return any(score is not None and float(score) <= now for score in (due, repeat))

    def release_timer_if_idle(self, gid: str, token: str) -> bool:
        keys = self.keys_for(gid)
        return bool(self._release_idle(keys=[self.due_key, keys["timer"]], args=[gid, token]))

    def release_timer(self, gid: str, token: str) -> None:
        self._release(keys=[self.keys_for(gid)["timer"]], args=[token])

    def due_groups(self, now: float, limit: int) -> list[str]:
        """Groups whose flush (changes, or a repeat reminder) is due, oldest first."""
        out: list[str] = []
        for key in (self.due_key, self.repeat_key):
            for raw in self.r.zrangebyscore(key, "-inf", repr(now), start=0, num=limit):
                gid = raw.decode() if isinstance(raw, bytes) else str(raw)
                if gid not in out:
                    out.append(gid)
        return out[:limit]

    def pending_count(self) -> int:
        return int(self.r.zcard(self.due_key))

    def lock(self, gid: str, ttl_s: float) -> str | None:
        token = secrets.token_hex(8)
        ok = self.r.set(self.keys_for(gid)["lock"], token, nx=True, px=int(ttl_s * 1000))
        return token if ok else None

    def unlock(self, gid: str, token: str) -> None:
        self._release(keys=[self.keys_for(gid)["lock"]], args=[token])

    def snapshot(self, gid: str) -> Snapshot | None:
        keys = self.keys_for(gid)
        pipe = self.r.pipeline(transaction=True)
        pipe.hgetall(keys["meta"])
        pipe.hgetall(keys["alerts"])
        meta_raw, alerts_raw = pipe.execute()
        if not meta_raw:
            return None
        meta = {_s(k): _s(v) for k, v in meta_raw.items()}
        alerts = {_s(k): AlertEntry.from_json(v) for k, v in alerts_raw.items()}
        return Snapshot(
            gid=gid,
            labels=json.loads(meta.get("labels", "{}")),
            route=meta.get("route", ""),
            alerts=alerts,
            notified=frozenset(json.loads(meta.get("notified", "[]"))),
            last_notify=float(meta.get("last_notify", 0) or 0),
            ver=meta.get("ver", "0"),
            seq=int(meta.get("seq", 0) or 0),
            created=meta.get("created", "0"),
        )

    def commit(
        self,
        snap: Snapshot,
        now: float,
        settings: GroupSettings,
        notified: Sequence[str],
        sent: bool,
        shown_resolved: Sequence[str],
    ) -> None:
        keys = self.keys_for(snap.gid)
        self._commit(
            keys=[keys["alerts"], keys["meta"], self.due_key, self.repeat_key],
            args=[
                snap.gid,
                snap.ver,
                repr(now),
                repr(settings.group_interval),
                repr(settings.repeat_interval),
                json.dumps(sorted(notified)),
                "1" if sent else "0",
                self.ttl_s,
                *shown_resolved,
            ],
        )

    def drop(self, gid: str) -> dict[str, AlertEntry]:
        """Forget a group that can never be delivered (its webhook is gone), returning
        every alert it held at that moment (read and deleted in one MULTI, so an alert
        appended after a snapshot is returned for the record, never silently lost)."""
        keys = self.keys_for(gid)
        pipe = self.r.pipeline(transaction=True)
        pipe.hgetall(keys["alerts"])
        pipe.delete(keys["alerts"], keys["meta"])
        pipe.zrem(self.due_key, gid)
        pipe.zrem(self.repeat_key, gid)
        alerts_raw = pipe.execute()[0]
        return {_s(k): AlertEntry.from_json(v) for k, v in alerts_raw.items()}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

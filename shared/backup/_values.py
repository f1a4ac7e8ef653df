"""Neo4j property values as JSON, typed so every value comes back as the same type
(docs/backups.md, "Neo4j").

JSON has strings, numbers, booleans and arrays; Neo4j also has integers distinct from
floats, byte arrays, temporal values with nanoseconds and time zones, durations and
points. Strings, booleans, integers and finite floats are written as themselves (a float
always with a fraction or exponent, so ``1.0`` stays a float); everything else is an
object with one ``$type`` key. A property value is never a map in Neo4j, so an object
is always one of these.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import timedelta, tzinfo
from typing import Any

from shared.errors import PermanentError


class UnsupportedValue(PermanentError):
    """A property value this format cannot represent (or a tag it does not know)."""


def _zone_name(tz: tzinfo | None) -> str | None:
    """The IANA name of a named zone (zoneinfo, pytz), None for a fixed offset."""
    if tz is None:
        return None
    name = getattr(tz, "key", None) or getattr(tz, "zone", None)
    return str(name) if name else None


def encode(value: Any) -> Any:
    """A driver value as JSON-ready data."""
    from neo4j import time as ntime
    from neo4j.spatial import Point

    if isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {
            "$float": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        }
    if isinstance(value, Point):  # a tuple: before lists
        return {"$point": list(value), "srid": value.srid}
    if isinstance(value, ntime.Duration):  # a tuple too
        return {"$duration": [value.months, value.days, value.seconds, value.nanoseconds]}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, ntime.DateTime):
        if value.tzinfo is None:
            return {"$localdatetime": value.iso_format()}
        zone = _zone_name(value.tzinfo)
        if zone:  # the instant (UTC) and the zone: what Neo4j itself stores
            utc = value.astimezone(_utc()).replace(tzinfo=None).iso_format()
            return {"$datetime": utc, "zone": zone}
        offset = value.utcoffset() or timedelta(0)
        local = value.replace(tzinfo=None).iso_format()
        return {"$datetime": local, "offset_s": int(offset.total_seconds())}
    if isinstance(value, ntime.Date):
        return {"$date": value.iso_format()}
    if isinstance(value, ntime.Time):
        if value.tzinfo is None:
            return {"$localtime": value.iso_format()}
        offset = value.utc_offset() or timedelta(0)
        return {
            "$time": value.replace(tzinfo=None).iso_format(),
            "offset_s": int(offset.total_seconds()),
        }
    raise UnsupportedValue(f"property value of type {type(value).__name__} cannot be exported")


def decode(data: Any) -> Any:
    """The driver value :func:`encode` was given."""
    if isinstance(data, bool | str | int | float):
        return data
    if isinstance(data, list):
        return [decode(v) for v in data]
    if isinstance(data, dict):
        return _decode_tagged(data)
    raise UnsupportedValue(f"cannot restore a property value {data!r}")


def _utc() -> tzinfo:
    import pytz  # what the driver's own values carry (a dependency of neo4j)

    utc: tzinfo = pytz.UTC
    return utc


def _fixed(offset_s: int) -> tzinfo:
    import pytz

    fixed: tzinfo = pytz.FixedOffset(offset_s // 60)
    return fixed  # Bolt's offsets are whole minutes here too


def _decode_tagged(data: dict[str, Any]) -> Any:
    from neo4j import time as ntime
    from neo4j.spatial import CartesianPoint, Point, WGS84Point

    if "$float" in data:
        return float(data["$float"].lower().replace("infinity", "inf"))
    if "$bytes" in data:
        return base64.b64decode(data["$bytes"])
    if "$localdatetime" in data:
        return ntime.DateTime.from_iso_format(data["$localdatetime"])
    if "$datetime" in data:
        naive = ntime.DateTime.from_iso_format(data["$datetime"])
        zone = data.get("zone")
        if zone:  # as the driver hydrates a zoned value: the UTC instant, then the zone
            import pytz

            return naive.replace(tzinfo=_utc()).as_timezone(pytz.timezone(zone))
        return naive.replace(tzinfo=_fixed(int(data["offset_s"])))
    if "$date" in data:
        return ntime.Date.from_iso_format(data["$date"])
    if "$localtime" in data:
        return ntime.Time.from_iso_format(data["$localtime"])
    if "$time" in data:
        return ntime.Time.from_iso_format(data["$time"]).replace(
            tzinfo=_fixed(int(data["offset_s"]))
        )
    if "$duration" in data:
        months, days, seconds, nanoseconds = data["$duration"]
        return ntime.Duration(months=months, days=days, seconds=seconds, nanoseconds=nanoseconds)
    if "$point" in data:
        srid = int(data["srid"])
        coords = [float(c) for c in data["$point"]]
        cls: type[Point] = WGS84Point if srid in (4326, 4979) else CartesianPoint
        return cls(coords)
    raise UnsupportedValue(f"unknown typed value {sorted(data)!r}")


def canonical(labels_or_type: Any, properties: dict[str, Any]) -> bytes:
    """The exact bytes a node or relationship is digested as: sorted keys, no spaces,
    the typed encoding (so the digest sees types, not only spellings)."""
    return json.dumps(
        [labels_or_type, {k: encode(v) for k, v in properties.items()}],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")

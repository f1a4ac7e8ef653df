"""The per-table checksum: independent of row order and of how the stream is cut into
chunks, sensitive to any changed, lost or doubled row (shared/backup/_digest.py)."""

from __future__ import annotations

import random

from shared.backup._digest import LineDigest, MultisetDigest

ROWS = [f'{i}\tpersona {i}\t{{"age": {i % 7}}}\t\\N'.encode() for i in range(200)]


def tally(rows: list[bytes], chunk: int) -> tuple[int, str]:
    stream = b"".join(r + b"\n" for r in rows)
    lines = LineDigest()
    for i in range(0, len(stream), chunk):
        lines.feed(stream[i : i + chunk])
    result = lines.finish()
    return result.count, result.checksum


def test_the_checksum_ignores_row_order_and_chunking() -> None:
    shuffled = ROWS[:]
    random.Random(7).shuffle(shuffled)
    expected = tally(ROWS, 1 << 20)
    assert expected[0] == 200
    for chunk in (1, 7, 64, 4096):
        assert tally(shuffled, chunk) == expected


def test_a_changed_lost_or_doubled_row_changes_the_checksum() -> None:
    base = tally(ROWS, 100)[1]
    changed = [*ROWS[:-1], ROWS[-1].replace(b"\\N", b"")]
    assert tally(changed, 100)[1] != base
    assert tally(ROWS[:-1], 100)[1] != base
    assert tally([*ROWS, ROWS[0]], 100)[1] != base
    # a truncated last line still counts, so it cannot hide
    stream = b"".join(r + b"\n" for r in ROWS)[:-5]
    lines = LineDigest()
    lines.feed(stream)
    assert lines.finish().count == 200


def test_an_empty_table_has_the_empty_sum() -> None:
    assert LineDigest().finish().checksum == MultisetDigest().checksum == "0" * 64

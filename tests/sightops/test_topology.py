"""The fixed ports of `make dev` (README, "What runs where")."""

from __future__ import annotations

from collections import Counter

from sightops.stack import DEV_STANDIN_PORTS
from sightops.topology import FUNCTIONS


def test_every_function_and_stand_in_of_make_dev_has_a_port_of_its_own() -> None:
    ports = Counter([*DEV_STANDIN_PORTS.values(), *(fn.port for fn in FUNCTIONS)])
    shared = {port: count for port, count in ports.items() if count > 1}
    assert not shared, f"ports used twice in make dev: {shared}"


def test_every_function_name_is_unique() -> None:
    names = Counter(fn.name for fn in FUNCTIONS)
    assert all(count == 1 for count in names.values()), names

"""Each Pub/Sub consumer's maximum event age: the one table
:meth:`shared.settings.Settings.max_event_age` and the receipts' retention floor read
(docs/architecture.md, "The handler runtime").

Its own module, free of pydantic, so ``pubsub_handler`` can check a consumer's name when
``main.py`` is imported without loading the settings (docs/architecture.md, "Cold start").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.settings import Settings

__all__ = ["EVENT_CONSUMERS", "MAX_EVENT_AGE_S"]

#: Each consumer's maximum event age, in seconds, read from the settings.
MAX_EVENT_AGE_S: dict[str, Callable[[Settings], float]] = {
    "migrate": lambda s: s.migrate.max_age_s,
    "rollback": lambda s: s.rollback.max_event_age_s,
    "notify": lambda s: s.notify.max_event_age_s,
    "kpi_refresh": lambda s: s.kpi.refresh_max_age_s,
    "backup": lambda s: s.backup.max_event_age_s,
    "backup_drill": lambda s: s.backup.max_event_age_s,
    "maintain": lambda s: s.maintain.max_event_age_s,
    "canary": lambda s: s.canary.max_event_age_s,
}
#: Every deployed Pub/Sub consumer (functions/*/main.py).
EVENT_CONSUMERS: tuple[str, ...] = tuple(MAX_EVENT_AGE_S)

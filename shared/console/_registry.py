"""Every secret the console's settings hold, registered with the redactor before a page is
rendered: the page's last step masks them (``_app._finalize``), whatever row they hide in.

Secret Manager references are resolved only where used (``shared.secrets``, which
registers what it resolves); here the configured values themselves are registered, and
the database URL's password, which the engine reads from the settings directly.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr

if TYPE_CHECKING:
    from shared.settings import Settings

_registered: set[str] = set()
_lock = threading.Lock()


def _secret_values(model: BaseModel) -> list[str]:
    found: list[str] = []
    for name in type(model).model_fields:
        value: Any = getattr(model, name, None)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            found.extend(_secret_values(value))
    return found


def register_secrets(settings: Settings) -> None:
    """Every secret value of ``settings`` not registered yet (cheap when none is new)."""
    from sqlalchemy.engine import make_url

    from shared.log import REDACTOR

    values = _secret_values(settings)
    for url in (settings.database_url.get_secret_value(), settings.database_url_sync):
        try:
            password = make_url(url).password
        except Exception:  # an unparsable URL has no password to find
            password = None
        if password:
            values.append(str(password))
    with _lock:
        new = [v for v in values if v and v not in _registered]
        if new:
            REDACTOR.add(*new)
            _registered.update(new)

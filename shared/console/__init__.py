"""The release console (docs/console.md): server-rendered pages of what sight-ops did and
why, and Slack's interactive buttons to act on it.

- :func:`serve` -- the console function's face: every page (``_app``);
- the reads (``_queries``), the timeline (``_timeline``), the undo command (``_undo``),
  the charts (``_charts``), what each page shows (``_pages``);
- :func:`release_path` -- ``/releases/<release_id>``, the page every Slack message links to;
- :func:`serve_interactions` -- the slack_actions function's face: Slack's buttons
  (``_interactions``), which notify renders (``shared.notify._buttons``).
"""

from typing import TYPE_CHECKING

from shared._lazy import lazy_attributes

if TYPE_CHECKING:
    from shared.console._app import release_path, serve
    from shared.console._interactions import serve_interactions
else:  # each name is imported on first use: docs/architecture.md, "Cold start"
    __getattr__ = lazy_attributes(
        __name__,
        {"_app": ("release_path", "serve"), "_interactions": ("serve_interactions",)},
    )

__all__ = ["release_path", "serve", "serve_interactions"]

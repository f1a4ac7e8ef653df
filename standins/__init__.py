"""Local stand-ins for the cloud APIs that cannot be reached from a development machine.

Each stand-in is a small Flask app that speaks the *real* REST wire format of the API
it replaces, so the official client libraries run against it unmodified:

- :mod:`standins.cloudrun` -- Cloud Run Admin API v2 (services, revisions, operations),
  for ``google.cloud.run_v2`` with ``transport="rest"``;
- :mod:`standins.slack` -- a Slack incoming-webhook sink, for ``slack_sdk.WebhookClient``;
- :mod:`standins.secretmanager` -- Secret Manager v1 ``AccessSecretVersion``, for
  ``google.cloud.secretmanager`` with ``transport="rest"``;
- :mod:`standins.storage` -- the Cloud Storage JSON API v1 (buckets, objects, resumable
  uploads, ranged downloads), for ``google.cloud.storage.Client``.

Every stand-in has an app factory ``create_app(state=None)``; the state object is
thread-safe and offers, as Python methods, the same seeding / fault-injection /
inspection operations that the app exposes over HTTP under ``/_admin/``.
:func:`standins._server.serve` runs an app on a background thread for tests;
``python -m standins`` runs them as processes (``make dev``). See ``docs/standins.md``.
"""

from __future__ import annotations

from standins._server import RunningServer, serve

__all__ = ["RunningServer", "serve"]

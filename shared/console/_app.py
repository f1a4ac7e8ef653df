"""The console's HTTP face: routing, Jinja2 rendering and the headers every page gets
(docs/console.md).

Pages are rendered on the server with Jinja2, autoescape on for every template and every
value passed through the redactor on its way out (``finalize``), so nothing read from the
ledger can become markup or show a secret. There is no JavaScript at all: charts are SVG
drawn here, the one stylesheet is ours and served by the function, and the
Content-Security-Policy says so (``script-src`` is not allowed at all).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

if TYPE_CHECKING:
    from flask import Request, Response
    from jinja2 import Environment

    from shared.runtime import HttpContext

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
#: What a page may load: its own stylesheet and inline SVG; no script, no frame, no form
#: posting elsewhere.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_STATIC_TYPES = {".css": "text/css; charset=utf-8"}


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}`` passes the redactor (registered secrets, secret-shaped text)
    before autoescape: the last step, like the log formatter's."""
    from markupsafe import Markup

    from shared.log import REDACTOR

    if isinstance(value, Markup):
        return Markup(REDACTOR.redact(str(value)))  # noqa: S704 - ours, redaction adds no markup
    if isinstance(value, str):
        return REDACTOR.redact(value)
    return value


def _when(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime(fmt) + " UTC"


def _clock(value: datetime | None) -> str:
    if value is None:
        return "-"
    at = value.astimezone(UTC)
    return at.strftime("%H:%M:%S.") + f"{at.microsecond // 1000:03d}"


def release_path(release_id: str) -> str:
    """``/releases/<id>``: the id quoted as a path segment (``@`` is kept, it is legal)."""
    return "/releases/" + quote(release_id, safe="@")


def _query(base: Mapping[str, Any] | None = None, **changes: Any) -> str:
    values = {k: v for k, v in {**(base or {}), **changes}.items() if v not in (None, "")}
    return ("?" + urlencode(values)) if values else ""


@cache
def environment() -> Environment:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["clock"] = _clock
    env.globals["release_path"] = release_path
    env.globals["query"] = _query
    return env


def render(template: str, status: int = 200, **context: Any) -> Response:
    from flask import Response

    body = environment().get_template(template).render(**context)
    response = Response(body, status=status, mimetype="text/html")
    _secure(response)
    return response


def _secure(response: Response) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Cache-Control", "no-store")


def _static(name: str) -> Response:
    from flask import Response

    path = (STATIC / name).resolve()
    kind = _STATIC_TYPES.get(path.suffix)
    if kind is None or path.parent != STATIC or not path.is_file():
        return render("error.html", 404, title="Not found", message="No such file.")
    response = Response(path.read_bytes(), mimetype=kind.split(";")[0])
    response.headers["Content-Type"] = kind
    response.headers["Cache-Control"] = "public, max-age=300"
    _secure(response)
    return response


@cache
def _routes() -> Any:
    # /assets, not /static: functions-framework's Flask app claims /static for itself.
    from werkzeug.routing import Map, Rule

    return Map(
        [
            Rule("/", endpoint="services"),
            Rule("/releases", endpoint="releases"),
            Rule("/releases/<path:release_id>", endpoint="release"),
            Rule("/messages", endpoint="messages"),
            Rule("/metrics", endpoint="metrics"),
            Rule("/assets/<name>", endpoint="static"),
            Rule("/healthz", endpoint="healthz"),
        ],
        strict_slashes=False,
    )


def serve(request: Request, ctx: HttpContext) -> Response:
    """One page (docs/console.md, "Pages"); unknown paths are a 404 page."""
    from werkzeug.exceptions import MethodNotAllowed, NotFound

    from shared.console import _pages as pages
    from shared.console._registry import register_secrets

    register_secrets(ctx.deps.settings)
    adapter = _routes().bind("console", "/")
    try:
        endpoint, values = adapter.match(request.path, method="GET")
    except (NotFound, MethodNotAllowed):
        ctx.outcome = "not_found"
        return render("error.html", 404, title="Not found", message="There is no such page.")
    ctx.fields["page"] = endpoint
    if endpoint == "static":
        return _static(str(values["name"]))
    if endpoint == "healthz":
        from flask import Response

        return Response("ok", mimetype="text/plain")
    args = {k: v for k, v in request.args.items() if isinstance(v, str)}
    try:
        if endpoint == "services":
            return render("services.html", page="services", **pages.services_page(ctx.deps))
        if endpoint == "releases":
            return render("releases.html", page="releases", **pages.releases_page(ctx.deps, args))
        if endpoint == "release":
            from shared.release import is_release_id

            wanted = str(values["release_id"])
            found = pages.release_page(ctx.deps, wanted) if is_release_id(wanted) else None
            if found is None:
                ctx.outcome = "not_found"
                said = (
                    f"The ledger has nothing about {wanted}."
                    if is_release_id(wanted)
                    else "A release id is <service>@<12 hex digits of the commit>."
                )
                return render("error.html", 404, title="No such release", message=said)
            return render("release.html", page="releases", **found)
        if endpoint == "messages":
            return render(
                "messages.html",
                page="messages",
                preview=pages.payload_preview,
                **pages.messages_page(ctx.deps, args),
            )
        return render("metrics.html", page="metrics", **pages.metrics_page(ctx.deps, args))
    except pages.BadQuery as exc:
        ctx.outcome, ctx.reason = "bad_query", str(exc)
        return render("error.html", 400, title="Bad request", message=str(exc))

# One sight-ops function per image, built from the same per-function package Cloud
# Functions deploys (`make package`, sightops/package.py): main.py, shared/ and a pinned
# requirements.txt holding only what that function needs.
#
#   docker build --build-arg FUNCTION_SOURCE=kpi --build-arg FUNCTION_TARGET=kpi_refresh .
#   docker build --target tools .     # sightops CLI, alembic, stand-ins (compose one-shots)
#
# Used by docker-compose.yml (one service per function) and by CI (cloudbuild.yaml).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- project: the sight-ops project installed with its pinned dependencies -------------------
FROM ${PYTHON_IMAGE} AS project
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY pyproject.toml ./
COPY requirements/constraints.txt requirements/
COPY shared/ shared/
COPY sightops/ sightops/
COPY standins/ standins/
COPY functions/ functions/
COPY alembic.ini ./
COPY alembic/ alembic/
COPY graph/ graph/
RUN pip install --no-cache-dir -c requirements/constraints.txt .

# --- tools: CLI, migrations and stand-ins for the compose one-shot services -----------------
FROM project AS tools
USER 10001:10001

# --- package: resolve the function's requirements exactly as `make package` does ------------
FROM project AS package
ARG FUNCTION_SOURCE
RUN test -n "${FUNCTION_SOURCE}" && test -f "functions/${FUNCTION_SOURCE}/main.py" \
    && python -m sightops.package --dist /dist "${FUNCTION_SOURCE}" \
    && mv "/dist/${FUNCTION_SOURCE}" /dist/app

# --- deps: a virtualenv from the package's requirements.txt alone ----------------------------
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=package /dist/app/requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --require-virtualenv -r /tmp/requirements.txt

# --- runtime (default): the package and its virtualenv, as an unprivileged user -------------
FROM ${PYTHON_IMAGE} AS runtime
ARG FUNCTION_TARGET
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FUNCTION_TARGET=${FUNCTION_TARGET} \
    FUNCTION_SOURCE=/app/main.py \
    PORT=8080
RUN groupadd --system --gid 10001 sightops \
    && useradd --system --uid 10001 --gid sightops --no-create-home --shell /usr/sbin/nologin sightops
COPY --from=deps /opt/venv /opt/venv
COPY --from=package /dist/app /app
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# Any HTTP answer below 500 means functions-framework imported the function and serves it
# (a CloudEvent function answers a bare GET with 4xx).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.error, urllib.request\ntry:\n    urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['PORT']}/\", timeout=2)\nexcept urllib.error.HTTPError as e:\n    sys.exit(e.code >= 500)\nexcept OSError:\n    sys.exit(1)"]
# functions-framework reads FUNCTION_TARGET, FUNCTION_SOURCE and PORT from the environment.
CMD ["functions-framework"]

# syntax=docker/dockerfile:1
# The llmops image: the `llmops` command line (worker, receive, migrate, loadgen, ...).
# docker-compose.yml runs it as `llmops worker` (processors) and `llmops loadgen` (demo).
#
#   docker build -t llmops-pipeline:0.1.0 .
#
# Python 3.11 on Debian bookworm, pinned to a patch release; every dependency comes
# from PyPI wheels (chdb, confluent-kafka and grpcio ship manylinux wheels), so no
# compiler is needed.

FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/llmops
ENV PATH=/opt/llmops/bin:$PATH
WORKDIR /src

# Dependencies first, in their own layer: it only changes when pyproject.toml or the
# lock changes, not on every source edit. The versions are exactly those of
# requirements.lock (the constraints file), the same set the test suite ran against.
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -c requirements.lock -r /tmp/requirements.txt

# The package itself, a regular (non-editable) install, so package data
# (schemas/*.sql, pricing catalog, dashboards) lands in site-packages.
COPY . .
RUN pip install -c requirements.lock . \
    && llmops --help > /dev/null


FROM python:3.11.14-slim-bookworm

ENV PATH=/opt/llmops/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Unprivileged user with a fixed uid, so volume ownership is predictable.
RUN groupadd --system --gid 10001 llmops \
    && useradd --system --uid 10001 --gid llmops --home-dir /home/llmops --create-home llmops

COPY --from=build /opt/llmops /opt/llmops

USER llmops
WORKDIR /home/llmops

# OTLP/gRPC and OTLP/HTTP, used by `llmops receive` (bind LLMOPS_RECEIVER__LISTEN=0.0.0.0).
EXPOSE 4317 4318

ENTRYPOINT ["llmops"]
CMD ["worker"]

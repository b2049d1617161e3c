# syntax=docker/dockerfile:1
# TierDB container image.
#   docker build -t tierdb .
#   docker run -p 8080:8080 -v tierdb-data:/var/lib/tierdb tierdb
# Used by docker-compose.minio.yml. See docs/operations.md#docker-compose.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: compiles the wheels that need a toolchain (hnswlib has no binary wheel) ---------
FROM ${PYTHON_IMAGE} AS builder

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

# HNSWLIB_NO_NATIVE: hnswlib compiles with -march=native by default, which would make the image
# die with SIGILL on any CPU older than the build machine's. Build it portable.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HNSWLIB_NO_NATIVE=1 \
    VIRTUAL_ENV=/opt/tierdb
RUN python -m venv "$VIRTUAL_ENV" \
 && "$VIRTUAL_ENV/bin/pip" install --upgrade pip setuptools wheel

WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes, so
# editing the source does not recompile hnswlib. Then the package itself, without dependencies.
COPY pyproject.toml ./
RUN "$VIRTUAL_ENV/bin/python" -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && "$VIRTUAL_ENV/bin/pip" install -r /tmp/requirements.txt \
 && "$VIRTUAL_ENV/bin/python" -c "import hnswlib, numpy"
COPY README.md ./
COPY tierdb ./tierdb
RUN "$VIRTUAL_ENV/bin/pip" install --no-deps . \
 && "$VIRTUAL_ENV/bin/python" -c "import tierdb"

# --- runtime: no compiler, non-root ----------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="TierDB" \
      org.opencontainers.image.description="Tiered vector storage engine: RAM and local disk in front of S3" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 tierdb \
 && useradd --system --uid 10001 --gid tierdb --home-dir /var/lib/tierdb --no-create-home \
        --shell /usr/sbin/nologin tierdb \
 && install -d -o tierdb -g tierdb -m 0750 /var/lib/tierdb /var/cache/tierdb

COPY --from=builder /opt/tierdb /opt/tierdb
# Fails the build if a compiled extension misses a shared library in the slim image.
RUN /opt/tierdb/bin/python -c "import hnswlib, numpy, tierdb.cli"

ENV PATH=/opt/tierdb/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TIERDB_HOST=0.0.0.0 \
    TIERDB_PORT=8080 \
    TIERDB_DATA_DIR=/var/lib/tierdb \
    TIERDB_CACHE_DIR=/var/cache/tierdb \
    TIERDB_LOG_FORMAT=json

USER tierdb:tierdb
WORKDIR /var/lib/tierdb
VOLUME ["/var/lib/tierdb", "/var/cache/tierdb"]
EXPOSE 8080

# Liveness of the process only (readiness is /health/ready). No curl in the image: use Python.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('TIERDB_PORT', '8080'), timeout=4)"]

# SIGTERM starts the graceful shutdown (stop writes, drain, flush the WAL, drain the uploader).
STOPSIGNAL SIGTERM
CMD ["tierdb", "serve"]

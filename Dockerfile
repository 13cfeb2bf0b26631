# Evothesis: one image for the collector, pixel management and the export worker
# (docker-compose.yml picks the command). Multi-stage: the build stage installs the package
# into a virtualenv; the runtime stage copies only that, and runs as an unprivileged user.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/evothesis
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN /opt/evothesis/bin/pip install . && /opt/evothesis/bin/python -m compileall -q /opt/evothesis

FROM python:${PYTHON_VERSION}-slim
RUN groupadd --system --gid 10001 evothesis \
    && useradd --system --uid 10001 --gid evothesis --home-dir /var/lib/evothesis \
       --create-home --shell /usr/sbin/nologin evothesis
COPY --from=build /opt/evothesis /opt/evothesis
# EVOTHESIS_DATA_DIR holds the disk spool (SPOOL_DIR) a collector writes while PostgreSQL
# is unreachable, and the registry snapshot and migration record that let it start during
# an outage: docker-compose.yml keeps it on a volume so a restart replays and resumes.
ENV PATH=/opt/evothesis/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EVOTHESIS_DATA_DIR=/var/lib/evothesis
USER evothesis
WORKDIR /var/lib/evothesis
EXPOSE 8000
# No curl in the slim image; Python is there anyway.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["evothesis", "serve", "--host", "0.0.0.0", "--port", "8000"]

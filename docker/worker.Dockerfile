# syntax=docker/dockerfile:1.7
# Batch-job worker: `python -m services.jobs.worker` (Celery, threads pool) as user 10001.
# No HTTP API: Prometheus metrics on MTC_JOBS_METRICS_PORT (8105). No torch, no model: the
# worker calls the model services over HTTP.
#
# Build from the repository root (docker/build-images.sh builds every image):
#   docker build -f docker/worker.Dockerfile -t mtc-worker:0.1.0 .

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md constraints.txt /src/
COPY services /src/services
COPY gateway /src/gateway
RUN pip install --constraint /src/constraints.txt "/src[jobs]"

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 mtc \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home mtc
# The root filesystem is read-only in Kubernetes: HOME (and so any cache) is the /tmp emptyDir.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MTC_JOBS_METRICS_PORT=8105
COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
EXPOSE 8105
CMD ["python", "-m", "services.jobs.worker"]

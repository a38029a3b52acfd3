# Batch-job worker: `python -m services.jobs.worker` (Celery, threads pool) as user 10001.
# No HTTP API: Prometheus metrics on MTC_JOBS_METRICS_PORT (8105). No torch, no model: the
# worker calls the model services over HTTP.
#
# Build from the repository root (docker/build-images.sh builds every image, with docker or
# podman, and makes the base offline when no registry answers):
#   docker build -f docker/worker.Dockerfile -t mtc-worker:0.1.0 .
#   (add --secret id=pip_cert,src=$PIP_CERT behind a TLS-inspecting proxy; docs/images.md)
# No `# syntax=` line: it would make BuildKit pull its frontend from Docker Hub, which fails
# offline; the frontend built into Docker 23+ has every feature used here.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_PROGRESS_BAR=off \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY constraints.txt /src/
# The extra's dependencies before, and apart from, the sources: a change to services/ or
# gateway/ then reinstalls mtc alone and leaves the dependency layer as it was. pip
# resolves an extra only from a buildable project: empty stand-ins for the packages and the
# README serve, and the stand-in mtc is uninstalled again. Behind a TLS-inspecting proxy pip
# needs its CA bundle: the pip_cert build secret is mounted for the pip steps only and
# lands in no layer.
COPY pyproject.toml /src/
RUN --mount=type=secret,id=pip_cert,target=/run/secrets/pip_cert,required=false \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && mkdir /src/services /src/gateway \
    && touch /src/README.md /src/services/__init__.py /src/gateway/__init__.py \
    && pip install --constraint /src/constraints.txt "/src[jobs]" \
    && pip uninstall --yes --quiet mtc \
    && rm -r /src/README.md /src/services /src/gateway
# What the venv holds so far, to copy out only what mtc adds in the build stage.
RUN cd / && find opt/venv -type f -print0 | xargs -0 sha256sum >/opt/venv.sha256 \
    && find opt/venv | sort >/opt/venv.paths

FROM deps AS build
COPY README.md /src/
COPY services /src/services
COPY gateway /src/gateway
RUN --mount=type=secret,id=pip_cert,target=/run/secrets/pip_cert,required=false \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && pip install --no-deps --constraint /src/constraints.txt /src
# What mtc itself added (/opt/layers/app), checked the same way.
RUN cd / && sha256sum --quiet --check /opt/venv.sha256 \
    && find opt/venv | sort | comm -13 /opt/venv.paths - >/tmp/added \
    && mkdir -p /opt/layers/app \
    && tar --no-recursion -cf - -T /tmp/added | tar -xf - -C /opt/layers/app

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 mtc \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home mtc
# The root filesystem is read-only in Kubernetes: HOME (and so any cache) is the /tmp emptyDir.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MTC_JOBS_METRICS_PORT=8105
# The dependencies and mtc as separate layers: a new version of mtc alone changes only the
# last, small one.
COPY --from=deps /opt/venv /opt/venv
COPY --from=build /opt/layers/app/opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
EXPOSE 8105
CMD ["python", "-m", "services.jobs.worker"]

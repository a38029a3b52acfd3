# syntax=docker/dockerfile:1.7
# Gateway: `python -m gateway` on port 8080 as user 10001. No torch, no model.
#
# Build from the repository root (docker/build-images.sh builds every image):
#   docker build -f docker/gateway.Dockerfile -t mtc-gateway:0.1.0 .

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
RUN pip install --constraint /src/constraints.txt "/src[gateway]"

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 mtc \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home mtc
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MTC_GATEWAY_HOST=0.0.0.0 \
    MTC_GATEWAY_PORT=8080
COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
CMD ["python", "-m", "gateway"]

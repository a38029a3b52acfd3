# syntax=docker/dockerfile:1.7
# Pose (image) service: `python -m services.pose` on port 8000 as user 10001.
#
# Build from the repository root (docker/build-images.sh builds every image):
#   docker build -f docker/pose.Dockerfile -t mtc-pose:0.1.0 .
#
# No model is baked in: in Kubernetes an initContainer of this same image runs
# `mtc models pull` into an emptyDir (base/). To bake one in, pass BAKE_MODEL_URI:
#   --build-arg BAKE_MODEL_URI=s3://mtc-models/pose/1.0.0 --secret id=aws,src=$HOME/.aws/credentials
#   --build-arg BAKE_MODEL_URI=file:///context/models/pose   (a directory under models/ in the
#                                                             build context; see .dockerignore)
# and run the image with MTC_MODEL_URI=file:///opt/mtc/baked/model (its default).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
# Where torch's CPU build comes from: PyTorch's CPU index, or a mirror of it.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY constraints.txt /src/
# torch's CPU build first, at the lock's version: the extra's pin is then met, so pip never
# fetches PyPI's multi-GB CUDA build (and fails loudly if TORCH_INDEX has no CPU build).
RUN pip install --extra-index-url "$TORCH_INDEX" --constraint /src/constraints.txt \
        "torch==$(sed -n 's/^torch==//p' /src/constraints.txt)+cpu"
COPY pyproject.toml README.md /src/
COPY services /src/services
COPY gateway /src/gateway
RUN pip install --constraint /src/constraints.txt "/src[pose]"

FROM build AS model
ARG BAKE_MODEL_URI=""
# The build context is mounted for file:// URIs; AWS credentials come as a build secret, so
# they never land in a layer.
RUN --mount=type=bind,target=/context \
    --mount=type=secret,id=aws,target=/root/.aws/credentials,required=false \
    mkdir -p /opt/mtc/baked \
    && if [ -n "$BAKE_MODEL_URI" ]; then \
        mtc models pull --cache-dir /tmp/mtc-cache "$BAKE_MODEL_URI" /opt/mtc/baked/model; \
    fi

FROM ${PYTHON_IMAGE} AS runtime
# OpenCV inside mediapipe links against these at import time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 mtc \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home mtc \
    && mkdir -p /var/cache/mtc /models \
    && chown 10001:10001 /var/cache/mtc /models
# The root filesystem is read-only in Kubernetes: every cache points at mounted emptyDirs.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/var/cache/mtc \
    HF_HOME=/var/cache/mtc/huggingface \
    MTC_HOST=0.0.0.0 \
    MTC_PORT=8000 \
    MTC_MODEL_CACHE_DIR=/var/cache/mtc \
    MTC_MODEL_URI=file:///opt/mtc/baked/model
COPY --from=build /opt/venv /opt/venv
COPY --from=model /opt/mtc/baked /opt/mtc/baked
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
CMD ["python", "-m", "services.pose"]

#!/usr/bin/env bash
# Build the mtc images (the `make images` target): each model kind's service (text, pose,
# audio), the gateway and the worker, with docker or podman, on machines with or without
# access to a container registry.
#
#   docker/build-images.sh                       # every image, tagged with pyproject's version
#   IMAGES="text gateway" docker/build-images.sh # some of them
#   REGISTRY=registry.example.com/mtc PUSH=1 docker/build-images.sh
#   BAKE_MODEL_URI=file:///context/models/sentiment IMAGES=text docker/build-images.sh
#
# Variables (docs/images.md):
#   IMAGES          default: every image `python -m deploy.images` lists: each model kind's
#                   (text pose audio), then gateway and worker
#   PYTHON          the Python that lists them (it imports the kinds): default .venv/bin/python
#   REGISTRY        prefix of the image names, default none: mtc-<image>:<tag>
#   TAG             default: the project version
#   PUSH=1          push the images once all are built and within their size budgets
#   BAKE_MODEL_URI  a model to bake into the model images (text, pose, audio); for s3://
#                   the AWS credentials file (AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials)
#                   goes in as a build secret
#   DOCKER          engine command; default docker when its daemon answers, else podman
#   PYTHON_IMAGE    base image; default the Dockerfiles' python:3.11 slim image when it can be
#                   pulled, else one built from Debian packages (deploy/tools/build-base-image.sh)
#   WHEELS          directory holding torch's CPU wheel at the lock's version (default
#                   /opt/wheels when it does); without one, torch comes from TORCH_INDEX
#   TORCH_INDEX     PyTorch's CPU index or a mirror (default: the Dockerfiles')
#   PIP_CERT        CA bundle for pip (a TLS-inspecting proxy), passed as a build secret
#   SIZE_BUDGETS=0  report the sizes without failing on a budget
#   SIZES_FILE      where the size table is written too (default .mtc/images/sizes.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/tools/container-engine.sh
source deploy/tools/container-engine.sh

# shellcheck source=deploy/tools/image-list.sh
source deploy/tools/image-list.sh

# Each image's Dockerfile, largest size in MB (10^6 bytes, uncompressed, as the engines
# count; docs/images.md says why each is what it is), whether it runs a model, build args.
mtc_read_images build-images
IMAGES="${IMAGES:-$ALL_IMAGES}"
TAG="${TAG:-$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')}"
prefix="${REGISTRY:+${REGISTRY%/}/}"
OFFLINE_BASE="localhost/mtc-python:3.11-bookworm"
SIZES_FILE="${SIZES_FILE:-.mtc/images/sizes.txt}"

for image in $IMAGES; do
  if [[ -z "${DOCKERFILE[$image]:-}" ]]; then
    echo "build-images: no image called $image (known: $ALL_IMAGES)" >&2
    exit 2
  fi
done
mtc_engine_init

# The base: a registry's python image when the engine has it or can pull it, else the same
# Python from Debian packages (every Dockerfile takes it through the PYTHON_IMAGE arg).
if [[ -z "${PYTHON_IMAGE:-}" ]]; then
  default_base="$(sed -n 's/^ARG PYTHON_IMAGE=//p' docker/service.Dockerfile)"
  # Qualified, because podman resolves no short names without a search registry configured.
  if [[ "$default_base" != */* ]]; then
    default_base="docker.io/library/${default_base}"
  elif [[ "${default_base%%/*}" != *[.:]* && "${default_base%%/*}" != localhost ]]; then
    default_base="docker.io/${default_base}"
  fi
  if "${ENGINE[@]}" image inspect "$default_base" >/dev/null 2>&1 ||
    timeout 300 "${ENGINE[@]}" pull "$default_base" >&2; then
    PYTHON_IMAGE="$default_base"
  else
    echo "build-images: cannot pull $default_base; using $OFFLINE_BASE, built from Debian" \
      "packages" >&2
    PYTHON_IMAGE="$OFFLINE_BASE"
    # Made once and reused, unless the engine has none or one from an older recipe.
    recipe="$(sha256sum deploy/tools/build-base-image.sh | cut -c1-12)"
    made_by="$("${ENGINE[@]}" image inspect --format '{{index .Config.Labels "mtc.base-recipe"}}' \
      "$OFFLINE_BASE" 2>/dev/null || true)"
    if [[ "$made_by" != "$recipe" ]]; then
      DOCKER="$DOCKER" deploy/tools/build-base-image.sh "$OFFLINE_BASE"
    fi
  fi
fi
common=(--build-arg "PYTHON_IMAGE=${PYTHON_IMAGE}")
# torch's CPU wheel from a local directory: the Dockerfiles then never ask PyTorch's index.
torch_version="$(sed -n 's/^torch==//p' constraints.txt)"
if [[ -z "${WHEELS+set}" ]] && compgen -G "/opt/wheels/torch-${torch_version}+cpu-*.whl" >/dev/null; then
  WHEELS=/opt/wheels
fi
if [[ -n "${WHEELS:-}" ]]; then
  if ! compgen -G "${WHEELS}/torch-${torch_version}+cpu-*.whl" >/dev/null; then
    echo "build-images: WHEELS=$WHEELS has no torch-${torch_version}+cpu wheel" >&2
    exit 2
  fi
  torch_source=(--build-context "wheels=$(cd "$WHEELS" && pwd)")
elif [[ -n "${TORCH_INDEX:-}" ]]; then
  torch_source=(--build-arg "TORCH_INDEX=${TORCH_INDEX}")
else
  torch_source=()
fi
# The CA bundle reaches only the pip steps, as a build secret: it lands in no layer.
if [[ -n "${PIP_CERT:-}" ]]; then
  common+=(--secret "id=pip_cert,src=${PIP_CERT}")
fi

aws_credentials="${AWS_SHARED_CREDENTIALS_FILE:-${HOME:-/root}/.aws/credentials}"
# A model from the build context is baked again whenever its files change: podman's cache
# does not look into the bind mount the Dockerfiles read it from. (s3:// and hf:// models
# are versioned by their URI.)
bake_digest=""
if [[ "${BAKE_MODEL_URI:-}" =~ ^file:///context/(.+)$ ]]; then
  bake_dir="${BASH_REMATCH[1]%/}"
  if [[ ! -d "$bake_dir" ]]; then
    echo "build-images: BAKE_MODEL_URI names $bake_dir, not a directory of the context" >&2
    exit 2
  fi
  bake_digest="$(cd "$bake_dir" && find . -type f -print0 | LC_ALL=C sort -z |
    xargs -0 sha256sum | sha256sum | cut -c1-16)"
fi

built=()
all_started=$SECONDS
for image in $IMAGES; do
  reference="${prefix}mtc-${image}:${TAG}"
  args=(build "${BUILD_FLAGS[@]}" --file "${DOCKERFILE[$image]}" --tag "$reference"
    "${common[@]}")
  # A kind's service image: its extra, module and system packages (no value holds a space).
  for arg in ${IMAGE_ARGS[$image]}; do
    args+=(--build-arg "$arg")
  done
  # Only the model images take a model and torch; the gateway and the worker call them over
  # HTTP.
  if [[ "${MODEL_IMAGE[$image]}" == model ]]; then
    args+=("${torch_source[@]}")
    if [[ -n "${BAKE_MODEL_URI:-}" ]]; then
      args+=(--build-arg "BAKE_MODEL_URI=${BAKE_MODEL_URI}")
      if [[ -n "$bake_digest" ]]; then
        args+=(--build-arg "BAKE_MODEL_DIGEST=${bake_digest}")
      fi
      # An S3 model is fetched with the caller's AWS credentials file, as a build secret.
      if [[ "$BAKE_MODEL_URI" == s3://* && -f "$aws_credentials" ]]; then
        args+=(--secret "id=aws,src=${aws_credentials}")
      fi
    fi
  fi
  echo "building $reference" >&2
  started=$SECONDS
  "${ENGINE[@]}" "${args[@]}" .
  echo "built $reference in $((SECONDS - started)) s" >&2
  built+=("$image")
done
echo "built ${#built[@]} images in $((SECONDS - all_started)) s" >&2

# Sizes against their budgets, kept in a file as well so a later build can be compared.
over=0
table="$(printf '%-40s %9s %9s' image "size MB" "budget MB")"
for image in "${built[@]}"; do
  reference="${prefix}mtc-${image}:${TAG}"
  bytes="$("${ENGINE[@]}" image inspect --format '{{.Size}}' "$reference")"
  size_mb=$(((bytes + 500000) / 1000000))
  verdict=""
  if ((size_mb > BUDGET_MB[$image])); then
    verdict="  OVER BUDGET"
    over=1
  fi
  table+=$'\n'"$(printf '%-40s %9d %9d%s' "$reference" "$size_mb" "${BUDGET_MB[$image]}" "$verdict")"
done
mkdir -p "$(dirname "$SIZES_FILE")"
printf '%s\n' "$table" | tee "$SIZES_FILE"
if ((over)) && [[ "${SIZE_BUDGETS:-1}" != 0 ]]; then
  echo "build-images: an image is over its size budget (docs/images.md)" >&2
  exit 1
fi

if [[ "${PUSH:-0}" == 1 ]]; then
  for image in "${built[@]}"; do
    "${ENGINE[@]}" push "${prefix}mtc-${image}:${TAG}"
  done
fi

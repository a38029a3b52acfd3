#!/usr/bin/env bash
# Build the mtc images (the `make images` target): text, pose, audio, gateway and worker.
#
#   docker/build-images.sh                       # every image, tagged with pyproject's version
#   IMAGES="text gateway" docker/build-images.sh # some of them
#   REGISTRY=registry.example.com/mtc PUSH=1 docker/build-images.sh
#   BAKE_MODEL_URI=file:///context/models/sentiment IMAGES=text docker/build-images.sh
#
# Variables: IMAGES (default: text pose audio gateway worker), REGISTRY (prefix, default none),
# TAG (default: the project version), PUSH=1 to push, BAKE_MODEL_URI (model images only),
# DOCKER (default docker).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGES="${IMAGES:-text pose audio gateway worker}"
DOCKER="${DOCKER:-docker}"
TAG="${TAG:-$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')}"
prefix="${REGISTRY:+${REGISTRY%/}/}"
# The Dockerfiles mount the build context and build secrets, which need BuildKit.
export DOCKER_BUILDKIT=1

for image in $IMAGES; do
  dockerfile="docker/${image}.Dockerfile"
  if [[ ! -f "$dockerfile" ]]; then
    echo "build-images: no $dockerfile (known: text pose audio gateway worker)" >&2
    exit 2
  fi
  reference="${prefix}mtc-${image}:${TAG}"
  args=(build --file "$dockerfile" --tag "$reference")
  # Only the model images take a model; the gateway and the worker call them over HTTP.
  if [[ "$image" != gateway && "$image" != worker && -n "${BAKE_MODEL_URI:-}" ]]; then
    args+=(--build-arg "BAKE_MODEL_URI=${BAKE_MODEL_URI}")
  fi
  echo "building $reference" >&2
  "$DOCKER" "${args[@]}" .
  if [[ "${PUSH:-0}" == 1 ]]; then
    "$DOCKER" push "$reference"
  fi
done

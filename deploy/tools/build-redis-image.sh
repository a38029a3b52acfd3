#!/usr/bin/env bash
# Build localhost/mtc-redis:bookworm, a Redis image made from Debian's redis-server package, for
# hosts that cannot pull the registry's redis image (the deployment test's single-host overlay
# uses it in place of redis:7.4.2-alpine). Idempotent: does nothing when the image exists.
#
#   deploy/tools/build-redis-image.sh            # PODMAN="podman ..." to change the command
set -euo pipefail

IMAGE="localhost/mtc-redis:bookworm"
read -r -a podman <<<"${PODMAN:-podman}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$(cd "$(dirname "$0")" && pwd)/containers.conf}"

if "${podman[@]}" image exists "$IMAGE"; then
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# minbase: Debian's essential set (sh, cat, printf) plus the Redis server and its CLI, which
# the manifests' command and readiness probe call.
mmdebstrap --quiet --variant=minbase --include=redis-server,redis-tools \
  --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
  bookworm "$work/rootfs.tar"
"${podman[@]}" import \
  --change 'CMD ["redis-server"]' --change 'USER 999:999' \
  "$work/rootfs.tar" "$IMAGE" >/dev/null
echo "$IMAGE"

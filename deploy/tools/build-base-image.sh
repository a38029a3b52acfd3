#!/usr/bin/env bash
# Build the images' Python base from Debian packages, for machines that cannot pull
# python:3.11-slim from a registry. docker/build-images.sh runs it when that pull fails.
#
#   deploy/tools/build-base-image.sh [NAME]   # default localhost/mtc-python:3.11-bookworm
#
# It stands in for the registry's python:3.11-slim-bookworm: Debian bookworm's Python 3.11
# with venv (pip comes from its bundled wheel), `python` as a command, groupadd/useradd, CA
# certificates, tzdata and netbase, and a working apt. Nothing more: each Dockerfile installs
# the system libraries its service needs with apt-get, as it must on the registry's base,
# which lacks them too. Only a Debian mirror is needed (apt's proxy settings apply), no
# container registry. mmdebstrap is installed with apt-get when missing.
#
# Variables: DOCKER (engine, as in docker/build-images.sh), DEBIAN_SUITE (default bookworm),
# DEBIAN_MIRROR (default: mmdebstrap's, deb.debian.org with updates and security).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=deploy/tools/container-engine.sh
source deploy/tools/container-engine.sh

name="${1:-localhost/mtc-python:3.11-bookworm}"
# Which version of this recipe made the image: docker/build-images.sh rebuilds a base made
# by an older one.
recipe="$(sha256sum deploy/tools/build-base-image.sh | cut -c1-12)"
suite="${DEBIAN_SUITE:-bookworm}"
mtc_engine_init

deploy/tools/install-system-packages.sh "the offline base image" mmdebstrap

# mmdebstrap runs hooks in a shell with the root filesystem's path as $1.
# shellcheck disable=SC2016
apt_slim='printf "%s\n" "APT::Keep-Downloaded-Packages \"false\";" "Acquire::Languages \"none\";" >"$1/etc/apt/apt.conf.d/90mtc-slim"'
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
started=$SECONDS
# minbase: essential packages and apt only. The merged-usr hook lays out /usr as the usrmerge
# package would, without pulling in that package and the whole of perl (~50 MB). As in the
# slim image: no documentation, man pages or translations, and apt neither keeps downloaded
# packages nor fetches translated package descriptions, so an apt-get install in a Dockerfile
# leaves no caches behind; mmdebstrap itself removes apt's package lists.
mmdebstrap --variant=minbase --quiet \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=python3,python3-venv,python-is-python3,ca-certificates,passwd,netbase,tzdata \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook="$apt_slim" \
  --customize-hook="chroot \"\$1\" dpkg-query -W -f='\${Version}' python3.11 > '$work/python-version'" \
  "$suite" "$work/rootfs.tar" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"}

python_version="$(cat "$work/python-version" 2>/dev/null || echo unknown)"
# The image config the slim image has: UTF-8 locale, a PATH (the Dockerfiles extend it) and
# python as the default command.
"${ENGINE[@]}" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --change "LABEL org.opencontainers.image.description=\"Debian $suite python3.11 $python_version, built by deploy/tools/build-base-image.sh\"" \
  --change "LABEL mtc.base-recipe=$recipe" \
  "$work/rootfs.tar" "$name" >/dev/null
echo "built $name (Debian $suite, python3.11 $python_version) in $((SECONDS - started)) s" >&2

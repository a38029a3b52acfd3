#!/usr/bin/env bash
# Install the Debian packages named on the command line that are not installed yet.
#
#   deploy/tools/install-system-packages.sh "why they are needed" PACKAGE...
#
# Used by `make run` (speech synthesis, Redis) and `make test` (browser, Prometheus, RabbitMQ,
# ...), so each command sets itself up on a fresh Debian or Ubuntu machine. Without apt-get it
# names what is missing and fails, rather than letting tests fail one by one later.
set -euo pipefail

why="$1"
shift

installed() {
  if command -v dpkg-query >/dev/null 2>&1; then
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
  else
    # No dpkg: the package's main command stands in for the package.
    command -v "$1" >/dev/null 2>&1
  fi
}

missing=()
for package in "$@"; do
  installed "$package" || missing+=("$package")
done
((${#missing[@]})) || exit 0

echo "installing ${missing[*]} ($why)" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get here: install ${missing[*]} with your package manager, then run again" >&2
  exit 1
fi
sudo=()
if [[ "$(id -u)" != 0 ]]; then
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# shellcheck shell=bash
# Sourced by docker/build-images.sh, deploy/tools/build-base-image.sh and
# deploy/tools/check-images.sh: which container engine builds and runs the images, and the
# flags it needs on this host.
#
# DOCKER names the engine command when set. Otherwise: docker when its engine answers (a
# docker CLI without a running daemon is not enough), else podman, installed with apt-get
# when missing. Docker needs BuildKit with buildx (Docker 23 or later, as installed by
# Docker's packages): the Dockerfiles use build secrets and named build contexts. The
# scripts run from the repository root. After mtc_engine_init:
#   DOCKER        the engine command
#   ENGINE        the command with its global flags, as an array: "${ENGINE[@]}" build ...
#   BUILD_FLAGS   flags every `build` needs here
#   RUN_FLAGS     flags every `run` needs here

mtc_engine_init() {
  if [[ -z "${DOCKER:-}" ]]; then
    if command -v docker >/dev/null 2>&1 && timeout 30 docker info >/dev/null 2>&1; then
      DOCKER=docker
    else
      # podman needs no daemon: on a fresh Debian or Ubuntu machine it is one apt-get away.
      command -v podman >/dev/null 2>&1 ||
        deploy/tools/install-system-packages.sh \
          "no docker daemon answers: podman builds and runs the images" podman runc ||
        return 1
      DOCKER=podman
    fi
  fi
  ENGINE=("$DOCKER")
  BUILD_FLAGS=()
  RUN_FLAGS=()
  if "$DOCKER" --version 2>/dev/null | grep -qi podman; then
    # crun fails on cgroup v1 and hybrid hierarchies (this sandbox's); runc works there. A
    # CONTAINERS_CONF of the user's own wins: it may name another runtime on purpose.
    if [[ -z "${CONTAINERS_CONF:-}" ]] && command -v runc >/dev/null 2>&1 &&
      [[ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ]]; then
      ENGINE+=(--runtime runc --cgroup-manager cgroupfs)
    fi
    # Build steps reach the package indexes as the host does (its DNS, its proxy), with no
    # bridge network to set up; and the same for containers, which bind 127.0.0.1 ports.
    BUILD_FLAGS+=(--network host)
    RUN_FLAGS+=(--network host)
    # podman asks for more open files and processes than a container host may allow, and
    # the container then fails to start: the host's hard limits fit, the process limit
    # capped at podman build's own default (this sandbox refuses anything above it).
    local nofile nproc
    nofile="$(ulimit -Hn)"
    nproc="$(ulimit -Hu)"
    [[ "$nofile" == unlimited || "$nofile" -gt 1048576 ]] && nofile=1048576
    [[ "$nproc" == unlimited || "$nproc" -gt 32768 ]] && nproc=32768
    RUN_FLAGS+=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
  else
    # Build secrets, bind mounts and named build contexts need BuildKit.
    export DOCKER_BUILDKIT=1
    RUN_FLAGS+=(--network host)
  fi
}

# shellcheck shell=bash
# shellcheck disable=SC2034  # the callers read these arrays
# Sourced by docker/build-images.sh and deploy/tools/check-images.sh: the images mtc builds,
# as `python -m deploy.images` lists them (each model kind's, then the gateway and the
# worker), read into arrays keyed by image name.
#
#   mtc_read_images NAME   fills ALL_IMAGES (names in order), DOCKERFILE, BUDGET_MB (MB),
#                          MODEL_IMAGE ("model" or "-") and IMAGE_ARGS (KEY=VALUE build args,
#                          space-separated; no value holds a space); NAME is the caller's, for
#                          its error message
#
# PYTHON, the Python that lists them (it imports the kinds, so it needs the project's
# packages): default .venv/bin/python when there is one, else python3.

mtc_read_images() {
  local caller="$1" table name dockerfile budget model args
  if [[ -z "${PYTHON:-}" ]]; then
    PYTHON=python3
    [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
  fi
  if ! table="$("$PYTHON" -m deploy.images)"; then
    echo "$caller: $PYTHON cannot list the images; it needs the project's packages" \
      "(make install), or set PYTHON" >&2
    exit 2
  fi
  declare -gA DOCKERFILE=() BUDGET_MB=() MODEL_IMAGE=() IMAGE_ARGS=()
  ALL_IMAGES=""
  while IFS=$'\t' read -r name dockerfile budget model args; do
    DOCKERFILE[$name]="$dockerfile"
    BUDGET_MB[$name]="$budget"
    MODEL_IMAGE[$name]="$model"
    IMAGE_ARGS[$name]="$args"
    ALL_IMAGES+="${ALL_IMAGES:+ }$name"
  done <<<"$table"
}

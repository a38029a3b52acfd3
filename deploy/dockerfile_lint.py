"""`python -m deploy.dockerfile_lint`: the rules every mtc Dockerfile follows.

No Dockerfile linter installs here, so the rules are checked on the parsed instructions:

- multi-stage, every stage on a pinned python:3.11 slim base (the PYTHON_IMAGE arg's
  default), an earlier stage, or `scratch` for an empty placeholder stage;
- a numeric non-root USER in the final stage; no HEALTHCHECK (Kubernetes probes do that);
  no ADD; no `# syntax=` line (BuildKit would pull its frontend from a registry);
- only the image's own pip extra, and every pip install under the lock's constraints;
- pip reaches an index behind a TLS-inspecting proxy through the `pip_cert` build secret
  only: every pip step mounts it and no ENV or ARG carries PIP_CERT into a layer;
- model images (text, pose, audio): torch as its CPU build (`+cpu`) from either the
  TORCH_INDEX build arg, which defaults to PyTorch's CPU index, or a `wheels` build context
  mounted at /wheels whose default is an empty `scratch` stage; no other index; a
  BAKE_MODEL_URI build arg; the `torch` stage identical in all three and copied first into
  each runtime stage, so that the three images share that layer;
- the gateway and the worker install no torch.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKER_DIR = REPO / "docker"
EXTRAS = {"text": "text", "pose": "pose", "audio": "audio", "gateway": "gateway", "worker": "jobs"}
TORCH_IMAGES = ("text", "pose", "audio")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
BASE_IMAGE = re.compile(r"^python:3\.11\.\d+-slim(-[a-z]+)?$")
TORCH_LAYER = "--from=torch /opt/venv /opt/venv"
PIP_CERT_SECRET = re.compile(r"--mount=type=secret,id=pip_cert\b")
WHEELS_MOUNT = re.compile(r"--mount=type=bind,from=wheels,target=/wheels\b")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with its continuation lines joined."""

    keyword: str
    arguments: str
    line: int


def parse(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile (comments dropped, `\\` continuations joined)."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, arguments = " ".join(part for part in pending if part).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = []
    if pending:
        raise ValueError("Dockerfile ends inside a line continuation")
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The instructions of each stage, its FROM first."""
    found: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def stage_name(stage: list[Instruction]) -> str:
    """The `AS` name of a stage, or "" when it has none."""
    words = stage[0].arguments.split()
    return words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else ""


def _resolve_base(argument: str, args: dict[str, str]) -> str:
    image = argument.split()[0]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), image)


def _base_problems(all_stages: list[list[Instruction]], global_args: dict[str, str]) -> list[str]:
    found: list[str] = []
    earlier: set[str] = set()
    for stage in all_stages:
        base = _resolve_base(stage[0].arguments, global_args)
        if base == "scratch":
            if len(stage) > 1:
                found.append(f"line {stage[0].line}: a scratch stage must stay empty")
        elif not BASE_IMAGE.match(base) and base not in earlier:
            found.append(f"line {stage[0].line}: base {base!r} is not a pinned python:3.11 slim")
        earlier.add(stage_name(stage))
    return found


def _pip_problems(runs: list[Instruction], instructions: list[Instruction]) -> list[str]:
    found: list[str] = []
    for run in runs:
        if "pip install" not in run.arguments:
            continue
        if not PIP_CERT_SECRET.search(run.arguments):
            found.append(f"line {run.line}: pip step without the pip_cert secret mount")
        if "--constraint /src/constraints.txt" not in run.arguments:
            found.append(f"line {run.line}: pip install outside the lock (--constraint)")
        if "--index-url" in run.arguments:
            found.append(f"line {run.line}: --index-url replaces PyPI for every package")
    for instruction in instructions:
        if instruction.keyword in {"ENV", "ARG"} and "PIP_CERT" in instruction.arguments:
            found.append(
                f"line {instruction.line}: PIP_CERT in {instruction.keyword} would land in the"
                " image; it comes from the pip_cert build secret"
            )
    return found


def _torch_problems(
    all_stages: list[list[Instruction]], instructions: list[Instruction], runs: str
) -> list[str]:
    found: list[str] = []
    arg_lines = {i.arguments for i in instructions if i.keyword == "ARG"}
    if f"TORCH_INDEX={CPU_INDEX}" not in arg_lines:
        found.append(f"no TORCH_INDEX build arg defaulting to the CPU index {CPU_INDEX}")
    requirements = re.findall(r'"torch==[^"]*"', runs)
    if not requirements or not all(r.endswith('+cpu"') for r in requirements):
        found.append("torch is not installed as its CPU build (+cpu)")
    indexes = set(re.findall(r'--extra-index-url\s+"?([^\s";]+)', runs))
    if indexes != {"$TORCH_INDEX"}:
        found.append(f"torch's index is {sorted(indexes)}, not only $TORCH_INDEX")
    links = set(re.findall(r'--find-links\s+"?([^\s";]+)', runs))
    if links - {"/wheels"}:
        found.append(f"pip looks for wheels in {sorted(links - {'/wheels'})}, not only /wheels")
    if links and not WHEELS_MOUNT.search(runs):
        found.append("/wheels is not the wheels build context mounted read-only")
    wheels = [s for s in all_stages if stage_name(s) == "wheels"]
    if links and (len(wheels) != 1 or wheels[0][0].arguments.split()[0] != "scratch"):
        found.append(
            "the wheels stage must be an empty scratch stage, so that a build without"
            " --build-context wheels=DIR takes torch from TORCH_INDEX"
        )
    args = {i.arguments.partition("=")[0] for i in instructions if i.keyword == "ARG"}
    if "BAKE_MODEL_URI" not in args:
        found.append("no BAKE_MODEL_URI build arg to bake a model in")
    return found


def problems(image: str, text: str) -> list[str]:
    """Every rule the Dockerfile of `image` (text, pose, audio, gateway, worker) breaks."""
    found: list[str] = []
    if text.lstrip().lower().startswith("# syntax="):
        found.append("a `# syntax=` line makes BuildKit pull its frontend from a registry")
    instructions = parse(text)
    global_args = {}
    for instruction in instructions:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG" and "=" in instruction.arguments:
            name, _, value = instruction.arguments.partition("=")
            global_args[name] = value.strip('"')
    all_stages = stages(instructions)
    if len(all_stages) < 2:
        found.append("not multi-stage: build tools would ship in the image")
    found += _base_problems(all_stages, global_args)
    if any(i.keyword == "HEALTHCHECK" for i in instructions):
        found.append("HEALTHCHECK present: Kubernetes probes check health")
    if any(i.keyword == "ADD" for i in instructions):
        found.append("ADD used: COPY is explicit and never fetches URLs")
    final = all_stages[-1] if all_stages else []
    users = [i.arguments for i in final if i.keyword == "USER"]
    if not users:
        found.append("final stage has no USER: the image would run as root")
    else:
        user = users[-1].split(":")[0]
        if not user.isdigit() or int(user) == 0:
            found.append(f"final USER {users[-1]!r} must be a numeric non-root uid (runAsNonRoot)")
    run_instructions = [i for i in instructions if i.keyword == "RUN"]
    runs = " ".join(i.arguments for i in run_instructions)
    installed = set(re.findall(r"/src\[([a-z,]+)\]", runs))
    expected = {EXTRAS[image]}
    if installed != expected:
        found.append(f"installs extras {sorted(installed)}, expected only {sorted(expected)}")
    if not re.search(r'--constraint /src/constraints\.txt "/src\[', runs):
        found.append("the project is not installed under the lock (--constraint constraints.txt)")
    found += _pip_problems(run_instructions, instructions)
    if image in TORCH_IMAGES:
        found += _torch_problems(all_stages, instructions, runs)
    elif "torch" in runs:
        found.append(f"the {image} image must not install torch")
    return found


def shared_torch_problems(texts: dict[str, str]) -> list[str]:
    """Where the model images' Dockerfiles (image -> text) stop sharing torch's layers: the
    `torch` stage must be the same in each, and each runtime stage must copy its venv
    first, straight onto the base."""
    found: list[str] = []
    torch_stages: dict[str, list[tuple[str, str]]] = {}
    for image, text in texts.items():
        all_stages = stages(parse(text))
        named = {stage_name(s): s for s in all_stages}
        if "torch" not in named:
            found.append(f"{image}: no stage named torch")
            continue
        torch_stages[image] = [(i.keyword, i.arguments) for i in named["torch"]]
        runtime = all_stages[-1]
        if len(runtime) < 2 or (runtime[1].keyword, runtime[1].arguments) != (
            "COPY",
            TORCH_LAYER,
        ):
            found.append(
                f"{image}: the runtime stage does not start with COPY {TORCH_LAYER}, so its"
                " torch layer is not shared"
            )
    if torch_stages:
        first, reference = next(iter(torch_stages.items()))
        found += [
            f"{image}: its torch stage differs from {first}'s, so torch is installed again"
            for image, instructions in torch_stages.items()
            if instructions != reference
        ]
    return found


def main() -> int:
    """Check every Dockerfile in docker/; exit 1 on any problem."""
    failed = False
    texts = {image: (DOCKER_DIR / f"{image}.Dockerfile").read_text() for image in EXTRAS}
    for image, text in texts.items():
        for problem in problems(image, text):
            print(f"docker/{image}.Dockerfile: {problem}", file=sys.stderr)
            failed = True
    for problem in shared_torch_problems({image: texts[image] for image in TORCH_IMAGES}):
        print(f"docker/: {problem}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

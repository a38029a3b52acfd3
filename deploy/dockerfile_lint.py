"""`python -m deploy.dockerfile_lint`: the rules every mtc Dockerfile follows.

No Dockerfile linter installs here and no base image can be pulled, so the rules are checked
on the parsed instructions: multi-stage; a pinned slim Python 3.11 base; a numeric non-root
USER in the final stage; no HEALTHCHECK (Kubernetes probes do that); only the image's own
pip extra, installed under the lock's constraints; CPU-only torch (`+cpu`) from a TORCH_INDEX
build arg that defaults to PyTorch's CPU index; a BAKE_MODEL_URI build arg and no model copied
in otherwise.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKER_DIR = REPO / "docker"
EXTRAS = {"text": "text", "pose": "pose", "audio": "audio", "gateway": "gateway", "worker": "jobs"}
TORCH_IMAGES = frozenset({"text", "pose", "audio"})
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
BASE_IMAGE = re.compile(r"^python:3\.11\.\d+-slim(-[a-z]+)?$")


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


def _stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _resolve_base(argument: str, args: dict[str, str]) -> str:
    image = argument.split()[0]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), image)


def problems(image: str, text: str) -> list[str]:
    """Every rule the Dockerfile of `image` (text, pose, audio, gateway, worker) breaks."""
    instructions = parse(text)
    found: list[str] = []
    global_args = {}
    for instruction in instructions:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG" and "=" in instruction.arguments:
            name, _, value = instruction.arguments.partition("=")
            global_args[name] = value.strip('"')
    stages = _stages(instructions)
    if len(stages) < 2:
        found.append("not multi-stage: build tools would ship in the image")
    for stage in stages:
        base = _resolve_base(stage[0].arguments, global_args)
        if not BASE_IMAGE.match(base) and base not in {
            s[0].arguments.split(" AS ")[-1].split()[-1] for s in stages
        }:
            found.append(f"line {stage[0].line}: base {base!r} is not a pinned python:3.11 slim")
    if any(i.keyword == "HEALTHCHECK" for i in instructions):
        found.append("HEALTHCHECK present: Kubernetes probes check health")
    if any(i.keyword == "ADD" for i in instructions):
        found.append("ADD used: COPY is explicit and never fetches URLs")
    final = stages[-1] if stages else []
    users = [i.arguments for i in final if i.keyword == "USER"]
    if not users:
        found.append("final stage has no USER: the image would run as root")
    else:
        user = users[-1].split(":")[0]
        if not user.isdigit() or int(user) == 0:
            found.append(f"final USER {users[-1]!r} must be a numeric non-root uid (runAsNonRoot)")
    runs = " ".join(i.arguments for i in instructions if i.keyword == "RUN")
    installed = set(re.findall(r"/src\[([a-z,]+)\]", runs))
    expected = {EXTRAS[image]}
    if installed != expected:
        found.append(f"installs extras {sorted(installed)}, expected only {sorted(expected)}")
    if not re.search(r'--constraint /src/constraints\.txt "/src\[', runs):
        found.append("the project is not installed under the lock (--constraint constraints.txt)")
    if image in TORCH_IMAGES:
        arg_lines = {i.arguments for i in instructions if i.keyword == "ARG"}
        if f"TORCH_INDEX={CPU_INDEX}" not in arg_lines:
            found.append(f"no TORCH_INDEX build arg defaulting to the CPU index {CPU_INDEX}")
        if not re.search(r'--extra-index-url "\$TORCH_INDEX" [^&]*"torch==[^"]*\+cpu"', runs):
            found.append("torch is not installed as its CPU build (+cpu) from $TORCH_INDEX")
        args = {i.arguments.partition("=")[0] for i in instructions if i.keyword == "ARG"}
        if "BAKE_MODEL_URI" not in args:
            found.append("no BAKE_MODEL_URI build arg to bake a model in")
    elif "torch" in runs:
        found.append(f"the {image} image must not install torch")
    return found


def main() -> int:
    """Check every Dockerfile in docker/; exit 1 on any problem."""
    failed = False
    for image in EXTRAS:
        path = DOCKER_DIR / f"{image}.Dockerfile"
        found = problems(image, path.read_text())
        for problem in found:
            print(f"{path.relative_to(REPO)}: {problem}", file=sys.stderr)
        failed = failed or bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

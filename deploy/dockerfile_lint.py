"""`python -m deploy.dockerfile_lint`: the rules every mtc Dockerfile follows.

No Dockerfile linter installs here, so the rules are checked on the parsed instructions:

- multi-stage, every stage on a pinned python:3.11 slim base (the PYTHON_IMAGE arg's
  default), an earlier stage, or `scratch` for an empty placeholder stage;
- a numeric non-root USER in the final stage; no HEALTHCHECK (Kubernetes probes do that);
  no ADD; no `# syntax=` line (BuildKit would pull its frontend from a registry);
- only the image's own pip extra (the service image: the SERVICE_EXTRA build arg), and
  every pip install under the lock's constraints;
- pip reaches an index behind a TLS-inspecting proxy through the `pip_cert` build secret
  only: every pip step mounts it and no ENV or ARG carries PIP_CERT into a layer;
- the service image (every model kind's): torch as its CPU build (`+cpu`) from either the
  TORCH_INDEX build arg, which defaults to PyTorch's CPU index, or a `wheels` build context
  mounted at /wheels whose default is an empty `scratch` stage; no other index; a
  BAKE_MODEL_URI build arg; a `torch` stage no kind's build arg reaches, copied first into
  the runtime stage, so that every kind's image shares that layer;
- the gateway and the worker install no torch;
- every kind's declared image (`ServiceImage`) names an extra pyproject.toml defines and
  Debian package names the build can pass on.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass

from deploy.external_tools import REPO
from deploy.images import PLATFORM_IMAGES, image_builds
from services.core.kinds import model_kinds

DOCKER_DIR = REPO / "docker"
SERVICE_EXTRA = "${SERVICE_EXTRA}"
EXTRAS = {"service": SERVICE_EXTRA} | {image.name: image.extra for image in PLATFORM_IMAGES}
"""Each Dockerfile in docker/ and the extra it installs."""
TORCH_IMAGES = ("service",)
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
BASE_IMAGE = re.compile(r"^python:3\.11\.\d+-slim(-[a-z]+)?$")
TORCH_LAYER = "--from=torch /opt/venv /opt/venv"
PIP_CERT_SECRET = re.compile(r"--mount=type=secret,id=pip_cert\b")
DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
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
        if stripped.startswith("#") or (not pending and not stripped):
            continue
        if not pending:
            start = number
        pending.append(stripped.removesuffix("\\").strip())
        if stripped.endswith("\\"):
            continue
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
    return found + _shared_torch_problems(all_stages)


def _shared_torch_problems(all_stages: list[list[Instruction]]) -> list[str]:
    """Where the kinds' images would stop sharing torch's layer: a build arg other than
    TORCH_INDEX reaching the `torch` stage makes it differ per kind, and a runtime stage that
    does not copy its venv first, straight onto the base, stacks it on something else."""
    found: list[str] = []
    named = {stage_name(stage): stage for stage in all_stages}
    if "torch" not in named:
        return ["no stage named torch"]
    stage_args = {i.arguments.partition("=")[0] for i in named["torch"] if i.keyword == "ARG"} - {
        "TORCH_INDEX"
    }
    if stage_args:
        found.append(
            f"build args {sorted(stage_args)} reach the torch stage: each kind's image would "
            "install torch again"
        )
    runtime = all_stages[-1]
    copies = [(i.keyword, i.arguments) for i in runtime[1:] if i.keyword != "ARG"]
    if not copies or copies[0] != ("COPY", TORCH_LAYER):
        found.append(
            f"the runtime stage does not start with COPY {TORCH_LAYER}, so its torch layer "
            "is not shared"
        )
    return found


def problems(image: str, text: str) -> list[str]:
    """Every rule the Dockerfile of `image` (service, gateway, worker) breaks."""
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
    elif not (user := users[-1].split(":")[0]).isdigit() or int(user) == 0:
        found.append(f"final USER {users[-1]!r} must be a numeric non-root uid (runAsNonRoot)")
    run_instructions = [i for i in instructions if i.keyword == "RUN"]
    runs = " ".join(i.arguments for i in run_instructions)
    installed = set(re.findall(r"/src\[([a-z,]+|\$\{SERVICE_EXTRA\})\]", runs))
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


def kind_image_problems() -> list[str]:
    """Where a kind's declared image could not be built: an extra pyproject.toml lacks, or a
    Debian package name the build arg cannot carry."""
    with (REPO / "pyproject.toml").open("rb") as handle:
        extras = set(tomllib.load(handle)["tool"]["poetry"]["extras"])
    found = [
        f"image {build.name}: extra {build.extra!r} is not in pyproject.toml's extras"
        for build in image_builds()
        if build.extra not in extras
    ]
    found += [
        f"image {image.name}: {package!r} is not a Debian package name"
        for kind in model_kinds().values()
        if (image := kind.image) is not None
        for package in image.system_packages
        if not DEBIAN_PACKAGE.match(package)
    ]
    return found


def main() -> int:
    """Check every Dockerfile in docker/ and every kind's image; exit 1 on any problem."""
    found = [
        f"docker/{image}.Dockerfile: {problem}"
        for image in EXTRAS
        for problem in problems(image, (DOCKER_DIR / f"{image}.Dockerfile").read_text())
    ] + kind_image_problems()
    for problem in found:
        print(problem, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

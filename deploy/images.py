"""`python -m deploy.images`: the container images mtc builds, one tab-separated line each,
for docker/build-images.sh (name, Dockerfile, size budget in MB, whether it is a model
image, and its build args).

A model kind's image comes from the `ServiceImage` its `kind.py` declares and is built from
docker/service.Dockerfile with the kind's extra, module and system packages as build args,
so a new kind ships without a Dockerfile or a line in the build script. The gateway and the
jobs worker, which run no model, have Dockerfiles of their own.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from services.core.kinds import model_kinds

SERVICE_DOCKERFILE = "docker/service.Dockerfile"


@dataclass(frozen=True)
class ImageBuild:
    """How one image is built and how large it may be."""

    name: str
    """The image is `mtc-<name>`."""
    dockerfile: str
    extra: str
    """The pyproject extra it installs."""
    size_budget_mb: int
    build_args: tuple[tuple[str, str], ...] = ()
    model_image: bool = False
    """Whether it runs a model (torch, a model to bake in) or only calls the ones that do."""


PLATFORM_IMAGES = (
    ImageBuild("gateway", "docker/gateway.Dockerfile", "gateway", 340),
    ImageBuild("worker", "docker/worker.Dockerfile", "jobs", 320),
)


def image_builds() -> tuple[ImageBuild, ...]:
    """Every kind's service image in the kinds' order, then the gateway and the worker."""
    builds = [
        ImageBuild(
            image.name,
            SERVICE_DOCKERFILE,
            image.extra,
            image.size_budget_mb,
            build_args=(
                ("SERVICE_EXTRA", image.extra),
                ("SERVICE_MODULE", kind.service),
                ("SYSTEM_PACKAGES", ",".join(image.system_packages)),
            ),
            model_image=True,
        )
        for kind in model_kinds().values()
        if (image := kind.image) is not None
    ]
    builds.extend(PLATFORM_IMAGES)
    names = [build.name for build in builds]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"two images are called {duplicated}")
    return tuple(builds)


def main() -> int:
    """Print the table docker/build-images.sh reads."""
    for build in image_builds():
        args = " ".join(f"{name}={value}" for name, value in build.build_args if value)
        model = "model" if build.model_image else "-"
        print(f"{build.name}\t{build.dockerfile}\t{build.size_budget_mb}\t{model}\t{args}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

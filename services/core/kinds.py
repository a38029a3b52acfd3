"""Model kinds: what each service package declares about itself, found at run time.

A kind (`text`, `image`, `audio`, ...) is a package under `services/` with a `kind.py`
that defines `KIND`, a `ModelKind`. The gateway builds its documented routes, default body
limits and OpenAPI request schemas from these declarations, the local stack knows which
module serves a kind and which starter models it has, and the jobs worker knows which kinds
it can run; none of them lists the kinds itself. `kind.py` must stay light (pydantic
schemas and error types, no model runtime): the gateway imports every one of them.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import BaseModel

from services.core.errors import (
    BatchTooLarge,
    BodyTooLarge,
    InvalidInput,
    ItemTooLarge,
    ModelNotReady,
    MtcError,
    Overloaded,
    RequestTimedOut,
    UnsupportedMediaType,
)

MIB = 1024 * 1024

SIZE_ERRORS: tuple[type[MtcError], ...] = (BatchTooLarge, ItemTooLarge, BodyTooLarge)
"""Errors of every route that takes a batch: too many items, one too large, a large body."""
SERVING_ERRORS: tuple[type[MtcError], ...] = (Overloaded, ModelNotReady, RequestTimedOut)
"""Errors of every route that reaches a model: a full queue, not loaded yet, too slow."""
UPLOAD_ERRORS: tuple[type[MtcError], ...] = (
    InvalidInput,
    BatchTooLarge,
    BodyTooLarge,
    ItemTooLarge,
    UnsupportedMediaType,
)
"""Errors of every service route that reads uploaded files, before any is decoded, in the
order the services document them."""


def route_errors(*errors: type[MtcError]) -> tuple[type[MtcError], ...]:
    """Errors of a route that takes a batch and reaches a model: invalid input, the size
    errors, the route's own `errors`, then the serving errors."""
    return (InvalidInput, *SIZE_ERRORS, *errors, *SERVING_ERRORS)


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """An OpenAPI request body of one JSON schema (the model goes in the components)."""
    return {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
        },
    }


@dataclass(frozen=True)
class KindRoute:
    """One documented route of a kind: `POST /v1/{task}/{suffix}` on the gateway and on the
    kind's service."""

    suffix: str
    summary: str
    request_body: dict[str, Any]
    """The OpenAPI `requestBody` object; `$ref`s name models of `ModelKind.request_models`."""
    response_model: type[BaseModel]
    errors: tuple[type[MtcError], ...]
    """Errors the service may answer on this route (the gateway adds its own)."""


@dataclass(frozen=True)
class ServiceImage:
    """How a kind's service ships: the image `mtc-<name>`, built from
    docker/service.Dockerfile with the kind's pip extra (docker/build-images.sh)."""

    name: str
    """The image's name after `mtc-`, and its Grafana dashboard's uid after `mtc-`."""
    extra: str
    """The pyproject extra the image installs, and nothing more."""
    size_budget_mb: int
    """The largest the image may be, in MB as the engines count; docs/images.md says why."""
    system_packages: tuple[str, ...] = ()
    """Debian packages the extra's libraries load at run time (OpenCV's libGL, ...)."""


@dataclass(frozen=True)
class ModelKind:
    """What the rest of the system needs to know about a kind of model service."""

    name: str
    """The kind's name in `MTC_GATEWAY_TASK_KINDS` and `GET /v1/models`."""
    service: str
    """The module that runs the kind's service (`python -m <service>`)."""
    routes: tuple[KindRoute, ...]
    default_body_limit: int
    """The default `MTC_MAX_BODY_BYTES` of the kind's service, which the gateway applies
    to the kind's tasks unless told otherwise."""
    request_models: tuple[type[BaseModel], ...] = ()
    """Pydantic models the routes' JSON request bodies refer to."""
    starters: dict[str, str] = field(default_factory=dict)
    """Task -> model directory the local stack serves when no model is named."""
    try_it: str = ""
    """curl arguments that send one example to `/v1/{task}/predict` (printed by the local
    stack), e.g. `-F image=@photo.jpg`."""
    batch_jobs: bool = False
    """Whether `/v1/jobs` runs this kind's tasks (lists of JSON inputs)."""
    position: int = 100
    """Where the kind comes in listings (lower first): the local stack gives its starters
    ports in this order, so existing kinds keep their ports when one is added."""
    image: ServiceImage | None = None
    """The container image of the kind's service; none: the kind runs only locally."""


@cache
def model_kinds() -> dict[str, ModelKind]:
    """Every kind declared by a package under `services/`, by name, in `position` order."""
    import services

    kinds: dict[str, ModelKind] = {}
    for package in sorted(module.name for module in pkgutil.iter_modules(services.__path__)):
        if importlib.util.find_spec(f"services.{package}.kind") is None:
            continue
        declared = importlib.import_module(f"services.{package}.kind").KIND
        if not isinstance(declared, ModelKind):
            raise TypeError(f"services.{package}.kind.KIND is not a ModelKind")
        if declared.name in kinds:
            raise ValueError(f"two packages declare the kind {declared.name!r}")
        kinds[declared.name] = declared
    return dict(sorted(kinds.items(), key=lambda item: (item[1].position, item[0])))


def kind_named(name: str) -> ModelKind:
    """The kind called `name`; ValueError naming the known kinds otherwise."""
    kinds = model_kinds()
    if name not in kinds:
        raise ValueError(f"unknown kind {name!r}; known kinds: {', '.join(sorted(kinds))}")
    return kinds[name]

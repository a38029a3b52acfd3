"""The gateway's OpenAPI documents: the whole API at `/openapi.json` (and `/docs`), and
the compatibility sentiment API alone at `/project/openapi.json` (and `/project/docs`).

FastAPI builds most of it from the routes. Added here: the schemas of the request bodies
the gateway forwards without parsing (declared per route, referenced as components),
FastAPI's validation-error schema those routes point at, and, when API keys are on, the
two ways to send a key as security schemes of every protected operation.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import (
    get_openapi,
)
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute

from gateway.access_control import is_public
from gateway.compat_routes import PROJECT_PREFIX
from gateway.routes import request_body_models
from services.core.api_docs import swagger_ui_page

SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "ApiKeyBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <API key>`",
    },
    "ApiKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "`X-API-Key: <API key>` (the same keys)",
    },
}
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PROJECT_OPENAPI_PATH = f"{PROJECT_PREFIX}/openapi.json"
PROJECT_DOCS_PATH = f"{PROJECT_PREFIX}/docs"


def install_openapi(
    app: FastAPI, *, project_routes: Sequence[BaseRoute], api_keys_required: bool
) -> None:
    """Replace `app.openapi` with the gateway's document builder and serve the
    compatibility API's own document (of `project_routes`) and docs page under `/project`."""
    app.openapi = _document_builder(  # type: ignore[method-assign]
        app,
        routes=lambda: app.routes,
        title=app.title,
        description=app.description,
        forwarded_body_models=request_body_models(),
        api_keys_required=api_keys_required,
    )
    project_document = _document_builder(
        app,
        routes=lambda: list(project_routes),
        title="mtc sentiment API (compatibility)",
        description="The sentiment routes of the API mtc replaces, answered by mtc's "
        "sentiment model.",
        forwarded_body_models=(),
        api_keys_required=api_keys_required,
    )

    async def project_openapi() -> JSONResponse:
        return JSONResponse(project_document())

    async def project_docs() -> HTMLResponse:
        return swagger_ui_page(PROJECT_OPENAPI_PATH, "mtc sentiment API (compatibility) - docs")

    app.add_api_route(PROJECT_OPENAPI_PATH, project_openapi, include_in_schema=False)
    app.add_api_route(PROJECT_DOCS_PATH, project_docs, include_in_schema=False)


def _document_builder(
    app: FastAPI,
    *,
    routes: Callable[[], Sequence[BaseRoute]],
    title: str,
    description: str,
    forwarded_body_models: tuple[type[BaseModel], ...],
    api_keys_required: bool,
) -> Callable[[], dict[str, Any]]:
    # Built once, on first request: every route is registered by then.
    @functools.cache
    def built() -> dict[str, Any]:
        schema = get_openapi(
            title=title,
            version=app.version,
            description=description,
            routes=routes(),
        )
        _add_request_body_components(schema, forwarded_body_models)
        if api_keys_required:
            _require_api_keys(schema)
        return schema

    return lambda: copy.deepcopy(built())


def _add_request_body_components(
    schema: dict[str, Any], models: tuple[type[BaseModel], ...]
) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if models:
        _, definitions = models_json_schema(
            [(model, "validation") for model in models],
            ref_template="#/components/schemas/{model}",
        )
        for name, definition in definitions.get("$defs", {}).items():
            components.setdefault(name, definition)


def _require_api_keys(schema: dict[str, Any]) -> None:
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in schema.get("paths", {}).items():
        if is_public(path):
            continue
        for method in HTTP_METHODS:
            if method in operations:
                operations[method]["security"] = [{name: []} for name in SECURITY_SCHEMES]

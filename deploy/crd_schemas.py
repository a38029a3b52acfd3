"""Minimal JSON schemas of the custom resources mtc ships that no offline validator knows:
Prometheus Operator's ServiceMonitor, PodMonitor and PrometheusRule, KEDA's ScaledObject, and
Istio's PeerAuthentication and AuthorizationPolicy (the typed Istio models ignore unknown
fields, and a misspelt `notPaths` in an ALLOW rule would silently allow more), and the Gateway
API's HTTPRoute.

They cover the fields mtc writes (required fields, types, closed objects where a typo would
silently do nothing), not the whole CRDs.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def _closed(properties: Schema, required: tuple[str, ...] = (), **keywords: Any) -> Schema:
    """An object refusing properties outside `properties`, plus any other schema keywords."""
    schema: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    return {**schema, **keywords}


def _array(items: Schema, **bounds: int) -> Schema:
    """An array of `items`; `bounds` are `minItems` and `maxItems`."""
    return {"type": "array", **bounds, "items": items}


_STRING: Schema = {"type": "string", "minLength": 1}
_DURATION: Schema = {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}
_LABELS: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
_PORT: Schema = {"type": "integer", "minimum": 1, "maximum": 65535}
_METADATA: Schema = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": _STRING, "namespace": _STRING, "labels": _LABELS},
}
_LABEL_SELECTOR = _closed(
    {
        "matchLabels": _LABELS,
        "matchExpressions": _array(
            _closed(
                {
                    "key": _STRING,
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
                ("key", "operator"),
            )
        ),
    },
    minProperties=1,
)


def _resource(api_version: str, kind: str, spec: Schema, required: tuple[str, ...]) -> Schema:
    """A custom resource whose closed `spec` has the `required` properties."""
    return _closed(
        {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": _closed(spec, required),
        },
        ("apiVersion", "kind", "metadata", "spec"),
    )


_ENDPOINTS = _array(
    _closed(
        {
            "port": _STRING,
            "path": {"type": "string", "pattern": "^/"},
            "interval": _DURATION,
            "scrapeTimeout": _DURATION,
            "scheme": {"enum": ["http", "https"]},
        },
        ("port",),
    ),
    minItems=1,
)


def _monitor(kind: str, endpoints: str) -> Schema:
    """A ServiceMonitor or PodMonitor: they differ in the kind and the endpoints' field."""
    return _resource(
        "monitoring.coreos.com/v1",
        kind,
        {
            "selector": _LABEL_SELECTOR,
            "namespaceSelector": {"type": "object"},
            endpoints: _ENDPOINTS,
        },
        ("selector", endpoints),
    )


SERVICE_MONITOR = _monitor("ServiceMonitor", "endpoints")
POD_MONITOR = _monitor("PodMonitor", "podMetricsEndpoints")

_RULE = _closed(
    {
        "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "expr": _STRING,
        "for": _DURATION,
        "labels": _LABELS,
        "annotations": _LABELS,
    },
    ("alert", "expr"),
)

_RULE_GROUP = _closed(
    {"name": _STRING, "interval": _DURATION, "rules": _array(_RULE, minItems=1)},
    ("name", "rules"),
)

PROMETHEUS_RULE = _resource(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    {"groups": _array(_RULE_GROUP, minItems=1)},
    ("groups",),
)

_TRIGGER = _closed(
    {
        "type": {"enum": ["prometheus", "cpu", "memory"]},
        "metricType": {"enum": ["Utilization", "AverageValue", "Value"]},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    ("type", "metadata"),
    allOf=[
        {
            "if": {"properties": {"type": {"const": "prometheus"}}},
            "then": {
                "properties": {"metadata": {"required": ["serverAddress", "query", "threshold"]}}
            },
        },
        {
            "if": {"properties": {"type": {"const": "cpu"}}},
            "then": {
                "required": ["metricType"],
                "properties": {"metadata": {"required": ["value"]}},
            },
        },
    ],
)

SCALED_OBJECT = _resource(
    "keda.sh/v1alpha1",
    "ScaledObject",
    {
        "scaleTargetRef": _closed(
            {"name": _STRING, "kind": _STRING, "apiVersion": _STRING}, ("name",)
        ),
        "minReplicaCount": {"type": "integer", "minimum": 0},
        "maxReplicaCount": {"type": "integer", "minimum": 1},
        "pollingInterval": {"type": "integer", "minimum": 1},
        "cooldownPeriod": {"type": "integer", "minimum": 0},
        "advanced": {"type": "object"},
        "triggers": _array(_TRIGGER, minItems=1),
    },
    ("scaleTargetRef", "triggers"),
)

_WORKLOAD_SELECTOR = _closed({"matchLabels": {**_LABELS, "minProperties": 1}}, ("matchLabels",))
_MTLS = _closed({"mode": {"enum": ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]}}, ("mode",))
_STRINGS = _array(_STRING, minItems=1)
_PORTS = _array({"type": "string", "pattern": "^[0-9]+$"}, minItems=1)

PEER_AUTHENTICATION = _resource(
    "security.istio.io/v1",
    "PeerAuthentication",
    {
        "selector": _WORKLOAD_SELECTOR,
        "mtls": _MTLS,
        "portLevelMtls": {
            "type": "object",
            "propertyNames": {"pattern": "^[0-9]+$"},
            "additionalProperties": _MTLS,
        },
    },
    ("mtls",),
)


def _matchers(*fields: str, values: Schema = _STRINGS) -> Schema:
    """Istio's `field` and `notField` lists of a rule's source or operation."""
    names = [*fields, *(f"not{field[0].upper()}{field[1:]}" for field in fields)]
    return dict.fromkeys(names, values)


def _closed_list_of(name: str, properties: Schema) -> Schema:
    """`[{name: {...}}]`, as a rule's `from` (sources) and `to` (operations) are written."""
    return _array(_closed({name: _closed(properties, minProperties=1)}, (name,)))


# What an AuthorizationPolicy rule matches: where a request comes from, and what it asks for.
_SOURCE = _matchers("principals", "namespaces", "ipBlocks", "remoteIpBlocks", "requestPrincipals")
_OPERATION = {**_matchers("ports", values=_PORTS), **_matchers("hosts", "methods", "paths")}

AUTHORIZATION_POLICY = _resource(
    "security.istio.io/v1",
    "AuthorizationPolicy",
    {
        "selector": _WORKLOAD_SELECTOR,
        "action": {"enum": ["ALLOW", "DENY", "AUDIT"]},
        "rules": _array(
            _closed(
                {
                    "from": _closed_list_of("source", _SOURCE),
                    "to": _closed_list_of("operation", _OPERATION),
                },
                minProperties=1,
            ),
            minItems=1,
        ),
    },
    ("action", "rules"),
)

# Gateway API (gateway.networking.k8s.io/v1): its durations, names and the parts of an
# HTTPRoute mtc writes (components/gateway-api).
_GATEWAY_API_DURATION: Schema = {"type": "string", "pattern": "^([0-9]{1,5}(h|m|s|ms)){1,4}$"}
_GATEWAY_API_NAME: Schema = {"type": "string", "minLength": 1, "maxLength": 253}
# What a parent (Gateway) and a backend (Service) reference have in common.
_OBJECT_REFERENCE: Schema = {
    "group": {"type": "string"},
    "kind": _STRING,
    "namespace": _STRING,
    "name": _GATEWAY_API_NAME,
    "port": _PORT,
}
_HTTP_PATH_MATCH = _closed(
    {
        "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
        "value": {"type": "string", "pattern": "^/", "maxLength": 1024},
    },
    ("type", "value"),
)
_HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
_BACKEND_REFERENCE = _closed(
    {**_OBJECT_REFERENCE, "weight": {"type": "integer", "minimum": 0, "maximum": 1000000}},
    ("name", "port"),
)
_HTTP_ROUTE_RULE = _closed(
    {
        "name": _STRING,
        "matches": _array(
            _closed({"path": _HTTP_PATH_MATCH, "method": {"enum": _HTTP_METHODS}}), maxItems=64
        ),
        "backendRefs": _array(_BACKEND_REFERENCE, minItems=1),
        "timeouts": _closed(
            {"request": _GATEWAY_API_DURATION, "backendRequest": _GATEWAY_API_DURATION},
            minProperties=1,
        ),
    }
)

HTTP_ROUTE = _resource(
    "gateway.networking.k8s.io/v1",
    "HTTPRoute",
    {
        "parentRefs": _array(
            _closed({**_OBJECT_REFERENCE, "sectionName": _STRING}, ("name",)),
            minItems=1,
            maxItems=32,
        ),
        "hostnames": _array(_STRING, maxItems=16),
        "rules": _array(_HTTP_ROUTE_RULE, minItems=1, maxItems=16),
    },
    ("parentRefs", "rules"),
)

SCHEMAS: dict[tuple[str, str], Schema] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("security.istio.io/v1", "PeerAuthentication"): PEER_AUTHENTICATION,
    ("security.istio.io/v1", "AuthorizationPolicy"): AUTHORIZATION_POLICY,
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): HTTP_ROUTE,
}

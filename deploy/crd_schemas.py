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

_STRING: Schema = {"type": "string", "minLength": 1}
_DURATION: Schema = {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}
_LABELS: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA: Schema = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": _STRING, "namespace": _STRING, "labels": _LABELS},
}
_LABEL_SELECTOR: Schema = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "matchLabels": _LABELS,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": _STRING,
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


def _resource(api_version: str, kind: str, spec: Schema) -> Schema:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
    }


_ENDPOINTS: Schema = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["port"],
        "additionalProperties": False,
        "properties": {
            "port": _STRING,
            "path": {"type": "string", "pattern": "^/"},
            "interval": _DURATION,
            "scrapeTimeout": _DURATION,
            "scheme": {"enum": ["http", "https"]},
        },
    },
}

SERVICE_MONITOR = _resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    {
        "type": "object",
        "required": ["selector", "endpoints"],
        "additionalProperties": False,
        "properties": {
            "selector": _LABEL_SELECTOR,
            "namespaceSelector": {"type": "object"},
            "endpoints": _ENDPOINTS,
        },
    },
)

POD_MONITOR = _resource(
    "monitoring.coreos.com/v1",
    "PodMonitor",
    {
        "type": "object",
        "required": ["selector", "podMetricsEndpoints"],
        "additionalProperties": False,
        "properties": {
            "selector": _LABEL_SELECTOR,
            "namespaceSelector": {"type": "object"},
            "podMetricsEndpoints": _ENDPOINTS,
        },
    },
)

_RULE: Schema = {
    "type": "object",
    "required": ["alert", "expr"],
    "additionalProperties": False,
    "properties": {
        "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "expr": _STRING,
        "for": _DURATION,
        "labels": _LABELS,
        "annotations": _LABELS,
    },
}

PROMETHEUS_RULE = _resource(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    {
        "type": "object",
        "required": ["groups"],
        "additionalProperties": False,
        "properties": {
            "groups": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "rules"],
                    "additionalProperties": False,
                    "properties": {
                        "name": _STRING,
                        "interval": _DURATION,
                        "rules": {"type": "array", "minItems": 1, "items": _RULE},
                    },
                },
            }
        },
    },
)

_TRIGGER: Schema = {
    "type": "object",
    "required": ["type", "metadata"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": ["prometheus", "cpu", "memory"]},
        "metricType": {"enum": ["Utilization", "AverageValue", "Value"]},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "allOf": [
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
}

SCALED_OBJECT = _resource(
    "keda.sh/v1alpha1",
    "ScaledObject",
    {
        "type": "object",
        "required": ["scaleTargetRef", "triggers"],
        "additionalProperties": False,
        "properties": {
            "scaleTargetRef": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {"name": _STRING, "kind": _STRING, "apiVersion": _STRING},
            },
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "pollingInterval": {"type": "integer", "minimum": 1},
            "cooldownPeriod": {"type": "integer", "minimum": 0},
            "advanced": {"type": "object"},
            "triggers": {"type": "array", "minItems": 1, "items": _TRIGGER},
        },
    },
)

_WORKLOAD_SELECTOR: Schema = {
    "type": "object",
    "required": ["matchLabels"],
    "additionalProperties": False,
    "properties": {"matchLabels": {**_LABELS, "minProperties": 1}},
}
_MTLS: Schema = {
    "type": "object",
    "required": ["mode"],
    "additionalProperties": False,
    "properties": {"mode": {"enum": ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]}},
}
_STRINGS: Schema = {"type": "array", "minItems": 1, "items": _STRING}
_PORTS: Schema = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "string", "pattern": "^[0-9]+$"},
}

PEER_AUTHENTICATION = _resource(
    "security.istio.io/v1",
    "PeerAuthentication",
    {
        "type": "object",
        "required": ["mtls"],
        "additionalProperties": False,
        "properties": {
            "selector": _WORKLOAD_SELECTOR,
            "mtls": _MTLS,
            "portLevelMtls": {
                "type": "object",
                "propertyNames": {"pattern": "^[0-9]+$"},
                "additionalProperties": _MTLS,
            },
        },
    },
)


def _matchers(*fields: str, values: Schema = _STRINGS) -> Schema:
    """Istio's `field` and `notField` lists of a rule's source or operation."""
    names = [*fields, *(f"not{field[0].upper()}{field[1:]}" for field in fields)]
    return dict.fromkeys(names, values)


def _closed_list_of(name: str, properties: Schema) -> Schema:
    """`[{name: {...}}]`, as a rule's `from` (sources) and `to` (operations) are written."""
    return {
        "type": "array",
        "items": {
            "type": "object",
            "required": [name],
            "additionalProperties": False,
            "properties": {
                name: {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "properties": properties,
                }
            },
        },
    }


AUTHORIZATION_POLICY = _resource(
    "security.istio.io/v1",
    "AuthorizationPolicy",
    {
        "type": "object",
        "required": ["action", "rules"],
        "additionalProperties": False,
        "properties": {
            "selector": _WORKLOAD_SELECTOR,
            "action": {"enum": ["ALLOW", "DENY", "AUDIT"]},
            "rules": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "properties": {
                        "from": _closed_list_of(
                            "source",
                            _matchers(
                                "principals",
                                "namespaces",
                                "ipBlocks",
                                "remoteIpBlocks",
                                "requestPrincipals",
                            ),
                        ),
                        "to": _closed_list_of(
                            "operation",
                            {
                                **_matchers("ports", values=_PORTS),
                                **_matchers("hosts", "methods", "paths"),
                            },
                        ),
                    },
                },
            },
        },
    },
)

# Gateway API (gateway.networking.k8s.io/v1): its durations, names and the parts of an
# HTTPRoute mtc writes (components/gateway-api).
_GATEWAY_API_DURATION: Schema = {"type": "string", "pattern": "^([0-9]{1,5}(h|m|s|ms)){1,4}$"}
_GATEWAY_API_NAME: Schema = {"type": "string", "minLength": 1, "maxLength": 253}
_HTTP_PATH_MATCH: Schema = {
    "type": "object",
    "required": ["type", "value"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
        "value": {"type": "string", "pattern": "^/", "maxLength": 1024},
    },
}

HTTP_ROUTE = _resource(
    "gateway.networking.k8s.io/v1",
    "HTTPRoute",
    {
        "type": "object",
        "required": ["parentRefs", "rules"],
        "additionalProperties": False,
        "properties": {
            "parentRefs": {
                "type": "array",
                "minItems": 1,
                "maxItems": 32,
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "group": {"type": "string"},
                        "kind": _STRING,
                        "namespace": _STRING,
                        "name": _GATEWAY_API_NAME,
                        "sectionName": _STRING,
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    },
                },
            },
            "hostnames": {"type": "array", "maxItems": 16, "items": _STRING},
            "rules": {
                "type": "array",
                "minItems": 1,
                "maxItems": 16,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "name": _STRING,
                        "matches": {
                            "type": "array",
                            "maxItems": 64,
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "path": _HTTP_PATH_MATCH,
                                    "method": {
                                        "enum": [
                                            "GET",
                                            "HEAD",
                                            "POST",
                                            "PUT",
                                            "DELETE",
                                            "CONNECT",
                                            "OPTIONS",
                                            "TRACE",
                                            "PATCH",
                                        ]
                                    },
                                },
                            },
                        },
                        "backendRefs": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["name", "port"],
                                "additionalProperties": False,
                                "properties": {
                                    "group": {"type": "string"},
                                    "kind": _STRING,
                                    "namespace": _STRING,
                                    "name": _GATEWAY_API_NAME,
                                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                    "weight": {"type": "integer", "minimum": 0, "maximum": 1000000},
                                },
                            },
                        },
                        "timeouts": {
                            "type": "object",
                            "additionalProperties": False,
                            "minProperties": 1,
                            "properties": {
                                "request": _GATEWAY_API_DURATION,
                                "backendRequest": _GATEWAY_API_DURATION,
                            },
                        },
                    },
                },
            },
        },
    },
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

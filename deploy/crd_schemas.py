"""Minimal JSON schemas of the custom resources mtc ships that no offline validator knows:
Prometheus Operator's ServiceMonitor, PodMonitor and PrometheusRule, and KEDA's ScaledObject.

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

SCHEMAS: dict[tuple[str, str], Schema] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
}

"""The mtc gateway: one public API in front of the model services.

It routes each task's `/v1/{task}/...` requests to the replicas of the service configured
for the task (balanced, with timeouts, retries of unsent requests and a circuit breaker per
URL), merges every service's `/v1/models`, serves one OpenAPI document, the compatibility
routes of earlier APIs and a try-it web page at `/ui`, checks API keys and per-key quotas
when a keys file is configured, answers its own health probes and exposes its own metrics.
It talks to the services only over HTTP. Build it with `gateway.app.create_app`; run it
with `python -m gateway`.
"""

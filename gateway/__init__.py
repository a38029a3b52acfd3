"""The mtc gateway: one public API in front of the model services.

It routes `POST /v1/{task}/predict` to the service configured for the task, merges every
service's `/v1/models`, answers its own health probes and exposes its own metrics. It talks
to the services only over HTTP. Build it with `gateway.app.create_app`; run it with
`python -m gateway`.
"""

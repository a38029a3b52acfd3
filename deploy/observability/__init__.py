"""Grafana dashboards and Prometheus alerting rules of mtc, as Python data.

`python -m deploy.observability.generate` writes them where the Helm chart and the kustomize
components read them; `--check` fails when the committed files differ from the code.
"""

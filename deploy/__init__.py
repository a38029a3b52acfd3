"""Deployment code: observability as code and the checks of the Kubernetes delivery."""

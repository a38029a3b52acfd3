"""Asynchronous batch jobs: texts classified in chunks by Celery workers that call the
model services over HTTP, with progress and results kept in Redis (see docs/jobs.md)."""

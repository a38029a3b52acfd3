"""Schemathesis against the gateway's jobs routes, with jobs on: a real redis-server as
broker and store (no worker: accepted jobs just wait in the queue). Every generated
request must get a documented status with a body matching the document, never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.jobs.settings import JobsSettings
from tests.support.fuzzing import derandomised
from tests.support.in_thread_servers import serving
from tests.support.processes import free_port, start_redis, stop

pytestmark = pytest.mark.integration

CASES_PER_OPERATION = 200
FUZZ_SETTINGS = derandomised(CASES_PER_OPERATION)
# Allow-lists and limits cannot all be stated in a schema: documented refusals are fine.
CHECKS_CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "400", "403", "404", "409", "413", "422"]
            },
            # More inline inputs than the schema's `maxItems` is a size limit, refused with
            # 413 `batch_too_large` (documented), which is a rejection too.
            "negative_data_rejection": {
                "expected-statuses": [
                    "400",
                    "401",
                    "403",
                    "404",
                    "405",
                    "406",
                    "409",
                    "413",
                    "415",
                    "422",
                    "428",
                    "429",
                    "5xx",
                ]
            },
        }
    }
)
SERVICE = "http://127.0.0.1:9"  # never called by the jobs routes
REDIS_PORT = free_port()


def jobs_settings() -> JobsSettings:
    return JobsSettings(
        broker_url=f"redis://127.0.0.1:{REDIS_PORT}/0",
        upstreams={"sentiment": SERVICE},
        input_allowlist=["batch/in/"],
        output_allowlist=["batch/out/"],
    )


DOCUMENT = create_app(GatewaySettings(upstreams={"sentiment": SERVICE}), jobs_settings()).openapi()
jobs_api = schemathesis.openapi.from_dict(DOCUMENT, config=CHECKS_CONFIG).include(
    path_regex="^/v1/jobs"
)


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    redis = start_redis(REDIS_PORT)
    try:
        app = create_app(GatewaySettings(upstreams={"sentiment": SERVICE}), jobs_settings())
        with serving(app) as url:
            yield url
    finally:
        stop(redis, kill=True)


@jobs_api.parametrize()
@FUZZ_SETTINGS
def test_jobs_routes_conform(case: schemathesis.Case, gateway_url: str) -> None:
    case.call_and_validate(base_url=gateway_url)

"""`python -m services.pose`: run the pose service with settings from `MTC_*` variables."""

from __future__ import annotations

import logging

import uvicorn

from services.pose.api import build_app
from services.pose.settings import PoseSettings


def main() -> None:
    """Read settings, build the app and serve it until interrupted."""
    settings = PoseSettings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvicorn.run(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


if __name__ == "__main__":
    main()

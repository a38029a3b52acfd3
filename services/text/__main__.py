"""`python -m services.text`: run the text service with settings from `MTC_*` variables."""

from __future__ import annotations

import logging

import uvicorn

from services.text.api import build_app
from services.text.settings import TextSettings


def main() -> None:
    """Read settings, build the app and serve it until interrupted."""
    settings = TextSettings()
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

"""`python -m services.text`: run the text service with settings from `MTC_*` variables."""

from __future__ import annotations

from services.core.api import serve
from services.text.api import build_app
from services.text.settings import TextSettings


def main() -> None:
    """Read settings, build the app and serve it until interrupted."""
    settings = TextSettings()
    serve(build_app(settings), settings)


if __name__ == "__main__":
    main()

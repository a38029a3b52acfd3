"""`python -m services.pose`: run the pose service with settings from `MTC_*` variables."""

from __future__ import annotations

from services.core.api import serve
from services.pose.api import build_app
from services.pose.settings import PoseSettings


def main() -> None:
    """Read settings, build the app and serve it until interrupted."""
    settings = PoseSettings()
    serve(build_app(settings), settings)


if __name__ == "__main__":
    main()

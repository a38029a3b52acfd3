"""`python -m services.pose`: run the pose service with settings from `MTC_*` variables."""

from services.core.api import serve
from services.pose.api import build_app
from services.pose.settings import PoseSettings

if __name__ == "__main__":
    settings = PoseSettings()
    serve(build_app(settings), settings)

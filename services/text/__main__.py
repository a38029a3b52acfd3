"""`python -m services.text`: run the text service with settings from `MTC_*` variables."""

from services.core.api import serve
from services.text.api import build_app
from services.text.settings import TextSettings

if __name__ == "__main__":
    settings = TextSettings()
    serve(build_app(settings), settings)

"""`python -m services.audio`: run the audio service (configured by `MTC_*` variables)."""

from services.audio.api import build_app
from services.audio.settings import AudioSettings
from services.core.api import serve

if __name__ == "__main__":
    settings = AudioSettings()
    serve(build_app(settings), settings)

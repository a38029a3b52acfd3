"""Models of the audio service."""

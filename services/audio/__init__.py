"""The audio service: emergency-speech detection from a recording, fused with its transcript."""

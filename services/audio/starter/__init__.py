"""The offline starter emergency-call model: written transcripts and synthetic speech."""

"""The serving kit shared by every mtc model service (no model or framework specifics)."""

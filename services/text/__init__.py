"""Text model services."""

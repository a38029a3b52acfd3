"""Text classifier implementations."""

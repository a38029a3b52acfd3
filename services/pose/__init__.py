"""Image service: human pose / action classification from photos."""

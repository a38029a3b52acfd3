"""Model artefacts: the store that fetches them (a local folder, S3, the Hugging Face hub),
their manifests and the verification against them, and how model directories are written."""

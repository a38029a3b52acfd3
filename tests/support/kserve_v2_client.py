"""Classify a review, a photo and a clip with the KServe SDK's V2 REST client, then send it a
bad request; print what came back as one JSON object.

Run by `tests/e2e/test_open_inference_clients.py` with the Python of a virtualenv holding
only `kserve` (its pins conflict with mtc's), so it imports nothing of mtc:

    python kserve_v2_client.py BASE_URL PHOTO CLIP
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


def bytes_input(name: str, elements: list[bytes]) -> InferInput:
    tensor = InferInput(name=name, shape=[len(elements)], datatype="BYTES")
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=True)
    return tensor


def ranked(response: Any) -> list[list[Any]]:
    """Per item, (label, score) pairs in the order the model ranked them."""
    outputs = {output.name: output.as_numpy() for output in response.outputs}
    labels, scores = outputs["label"], outputs["score"]
    return [
        [
            [label.decode() if isinstance(label, bytes) else str(label), float(score)]
            for label, score in zip(label_row, score_row, strict=True)
        ]
        for label_row, score_row in zip(labels, scores, strict=True)
    ]


async def main(base_url: str, photo: str, clip: str) -> dict[str, Any]:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=120))
    results: dict[str, Any] = {
        "live": await client.is_server_live(base_url),
        "ready": await client.is_server_ready(base_url),
        "model_ready": await client.is_model_ready(base_url, "sentiment"),
    }
    review = InferInput(name="text", shape=[2], datatype="BYTES")
    # In JSON: the SDK sends BYTES as UTF-8 strings unless told to send binary data.
    review.set_data_from_numpy(
        np.array(
            [
                b"An absolute triumph, moving and beautifully acted",
                b"a tedious, badly written mess",
            ],
            dtype=np.object_,
        ),
        binary_data=False,
    )
    requests = {
        "sentiment": InferRequest(model_name="sentiment", infer_inputs=[review]),
        "pose": InferRequest(
            model_name="pose",
            infer_inputs=[bytes_input("image", [open(photo, "rb").read()])],  # noqa: SIM115
        ),
        "audio": InferRequest(
            model_name="audio",
            infer_inputs=[bytes_input("audio", [open(clip, "rb").read()])],  # noqa: SIM115
        ),
    }
    for model, request in requests.items():
        response = await client.infer(base_url, request, model_name=model)
        results[model] = {"model_name": response.model_name, "ranked": ranked(response)}
    wrong = InferInput(name="text", shape=[1], datatype="FP32")
    wrong.set_data_from_numpy(np.array([1.0], dtype=np.float32), binary_data=False)
    try:
        await client.infer(
            base_url, InferRequest(model_name="sentiment", infer_inputs=[wrong]), "sentiment"
        )
        results["wrong_datatype"] = None
    except httpx.HTTPStatusError as error:
        results["wrong_datatype"] = {
            "status": error.response.status_code,
            "body": error.response.json(),
        }
    await client.close()
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))

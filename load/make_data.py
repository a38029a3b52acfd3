"""`python -m load.make_data`: write the inputs the k6 scenarios send, into `load/data/`.

- `reviews.json`: a fixed random sample of Rotten Tomatoes snippets (the starter corpus), so
  the text scenarios send the lengths real reviews have;
- `photos/*.jpg`: people cropped from the `vtest.avi` street video of Debian's opencv-doc;
- `clips/*.wav`: short calls spoken by espeak-ng at 16 kHz.

The files are small and committed; run this again only to change them.
"""

from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path

from PIL import Image

from services.text.starter.rotten_tomatoes import load_reviews
from tests.support.audio_clips import spoken_wav
from tests.support.pose_images import opencv_doc_data, pedestrian_crop

DATA_DIR = Path(__file__).resolve().parent / "data"
REVIEW_SAMPLE_SIZE = 400
SAMPLE_SEED = 255
PHOTO_PEDESTRIANS = (0, 3, 6)
"""Which pedestrians of `tests.support.pose_images.PEDESTRIANS` become photos."""
CALLS = (
    "Hello, I need help, someone broke into my car and took my bag.",
    "Please send an ambulance, my neighbour fell down the stairs and is not moving.",
    "Hi, I am calling to ask when the pharmacy on Main Street opens tomorrow.",
)


def sample_reviews(count: int, seed: int = SAMPLE_SEED) -> list[str]:
    """`count` distinct review snippets drawn at random (fixed seed) from the corpus."""
    examples, _ = load_reviews()
    texts = sorted({example.text for example in examples})
    return random.Random(seed).sample(texts, min(count, len(texts)))


def photo_jpeg(which: int) -> bytes:
    """One pedestrian crop as a JPEG (what a phone would upload, and smaller than PNG)."""
    png = pedestrian_crop(opencv_doc_data(), which)
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(out, format="JPEG", quality=85)
    return out.getvalue()


def write_all(target: Path) -> list[Path]:
    """Write every data file under `target`; returns the paths written."""
    written: list[Path] = []
    target.mkdir(parents=True, exist_ok=True)
    reviews = target / "reviews.json"
    reviews.write_text(json.dumps(sample_reviews(REVIEW_SAMPLE_SIZE), indent=0) + "\n")
    written.append(reviews)
    photos, clips = target / "photos", target / "clips"
    photos.mkdir(exist_ok=True)
    clips.mkdir(exist_ok=True)
    for number, which in enumerate(PHOTO_PEDESTRIANS, start=1):
        path = photos / f"person-{number}.jpg"
        path.write_bytes(photo_jpeg(which))
        written.append(path)
    for number, text in enumerate(CALLS, start=1):
        path = clips / f"call-{number}.wav"
        path.write_bytes(spoken_wav(text))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    """Parse options and write the files."""
    parser = argparse.ArgumentParser(prog="python -m load.make_data", description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=DATA_DIR, help="where to write")
    args = parser.parse_args(argv)
    for path in write_all(args.out_dir):
        print(f"{path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

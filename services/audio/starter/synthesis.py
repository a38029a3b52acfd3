"""A synthetic spoken version of the transcript set in which HOW a sentence sounds is drawn
independently of WHAT it says.

No labelled emergency audio can be had offline, and synthetic voices cannot teach a model
that a robbery sounds different from a theft. What sound can carry is urgency, so every
sentence, whatever its label, is spoken both ways (`DELIVERIES`):

- `calm`: ordinary rate and pitch, a narrow pitch range, nothing alarming around it; some
  clips have a quiet cafe crowd, a distant siren or a slightly hot microphone, so that no
  single background cue means "urgent";
- `urgent`: fast, raised and wide-ranging pitch, often shouted (brighter, driven into
  clipping), often with sirens, screams, breaking glass or an agitated crowd; some are a
  calm-voiced bystander in an urgent scene.

On top of either, drawn the same way for both: background noise (white, pink or brown) at
a signal-to-noise ratio from the voice pool's bands, a telephone band, room reverb, and the
recording level. The voice (accent and variant) and the SNR bands come from `TRAINING_POOL`
or `HELDOUT_POOL` by the sentence's side of the text split, so held-out clips are unseen
sentences in unseen voices at unseen noise levels. Every choice is drawn from a generator
seeded by the sentence and variant number: the set is identical wherever the same espeak-ng
runs. The limits are in DATASHEET.md.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import random
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from services.audio.starter import soundscape
from services.audio.starter.soundscape import Signal
from services.text.training import is_heldout, normalise

SAMPLE_RATE = 16_000
DELIVERIES = ("calm", "urgent")
TRANSCRIPTS_NAME = "transcripts.csv"
"""Written beside the clips: `file,text,label,urgency`, the format `mtc train audio` reads."""


@dataclass(frozen=True)
class VoicePool:
    """The voices and noise levels one side of the split is spoken with."""

    accents: tuple[str, ...]
    variants: tuple[str, ...]
    snr_bands_db: tuple[tuple[float, float], ...]

    def voices(self) -> list[str]:
        """Every accent+variant combination (espeak-ng `-v` names)."""
        return [f"{a}+{v}" if v else a for a in self.accents for v in self.variants]


TRAINING_POOL = VoicePool(
    accents=("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029"),
    variants=("", "m1", "m2", "m4", "m6", "m8", "f1", "f2", "f4", "klatt", "klatt3", "klatt5"),
    snr_bands_db=((6, 9), (12, 15), (18, 21), (24, 27), (30, 33)),
)
HELDOUT_POOL = VoicePool(
    accents=("en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd"),
    variants=("m3", "m5", "m7", "f3", "f5", "klatt2", "klatt4"),
    snr_bands_db=((3, 6), (9, 12), (15, 18), (21, 24), (27, 30)),
)
"""Disjoint from TRAINING_POOL in accent, in voice variant and in SNR band."""


class SynthesisError(RuntimeError):
    """espeak-ng is missing or failed."""


@dataclass(frozen=True)
class Speech:
    """How the words are spoken (espeak-ng parameters)."""

    voice: str
    words_per_minute: int
    pitch: int
    pitch_range_percent: int
    word_gap: int


@dataclass(frozen=True)
class BackgroundEvent:
    """A sound mixed under the voice, `level_db` relative to the voice's power."""

    kind: str
    level_db: float


@dataclass(frozen=True)
class ClipRecipe:
    """Everything that decides how one clip sounds, apart from its words."""

    delivery: str
    speech: Speech
    shout_drive_db: float | None
    events: tuple[BackgroundEvent, ...]
    noise_colour: str | None
    snr_db: float
    telephone: bool
    reverb_seconds: float | None
    peak_dbfs: float

    @classmethod
    def draw(cls, seed: bytes, delivery: str, pool: VoicePool) -> ClipRecipe:
        """A recipe for `delivery` drawn from a generator seeded by `seed`."""
        if delivery not in DELIVERIES:
            raise ValueError(f"delivery must be one of {DELIVERIES}, not {delivery!r}")
        rng = random.Random(int.from_bytes(hashlib.sha256(seed).digest()[:8], "big"))
        voice = rng.choice(pool.voices())
        events: list[BackgroundEvent] = []
        shout_drive: float | None = None
        if delivery == "calm":
            speech = Speech(
                voice,
                rng.randint(115, 170),
                rng.randint(20, 55),
                rng.randint(40, 100),
                rng.choice((0, 0, 1, 2, 4)),
            )
            if rng.random() < 0.05:
                shout_drive = rng.uniform(1.0, 4.0)  # a hot microphone, not a shout
            if rng.random() < 0.2:
                events.append(BackgroundEvent("cafe", rng.uniform(-20.0, -8.0)))
            if rng.random() < 0.06:
                events.append(BackgroundEvent("siren", rng.uniform(-30.0, -20.0)))
        elif rng.random() < 0.15:
            # A bystander reporting calmly from an alarming scene: the scene is the cue.
            speech = Speech(
                voice, rng.randint(150, 195), rng.randint(40, 65), rng.randint(80, 130), 0
            )
            kind = rng.choice(("siren", "scream", "glass", "crowd"))
            events.append(BackgroundEvent(kind, rng.uniform(-6.0, 3.0)))
        else:
            speech = Speech(
                voice, rng.randint(185, 280), rng.randint(60, 99), rng.randint(120, 200), 0
            )
            if rng.random() < 0.6:
                shout_drive = rng.uniform(6.0, 20.0)
            for kind, chance, low, high in (
                ("siren", 0.3, -15.0, 0.0),
                ("scream", 0.25, -10.0, 3.0),
                ("glass", 0.15, -8.0, 3.0),
                ("crowd", 0.25, -12.0, -3.0),
            ):
                if rng.random() < chance:
                    events.append(BackgroundEvent(kind, rng.uniform(low, high)))
        low_snr, high_snr = rng.choice(pool.snr_bands_db)
        return cls(
            delivery=delivery,
            speech=speech,
            shout_drive_db=shout_drive,
            events=tuple(events),
            noise_colour=rng.choice(("white", "pink", "brown")) if rng.random() < 0.65 else None,
            snr_db=rng.uniform(low_snr, high_snr),
            telephone=rng.random() < 0.35,
            reverb_seconds=rng.uniform(0.2, 0.8) if rng.random() < 0.25 else None,
            peak_dbfs=rng.uniform(-20.0, -1.0),
        )


def speak(text: str, speech: Speech) -> Signal:
    """`text` spoken by espeak-ng, at SAMPLE_RATE, peak 0.5."""
    markup = (
        f'<speak><prosody range="{speech.pitch_range_percent}%">'
        f"{html.escape(text, quote=False)}</prosody></speak>"
    )
    command = [
        "espeak-ng",
        "-m",
        "-v",
        speech.voice,
        "-s",
        str(speech.words_per_minute),
        "-p",
        str(speech.pitch),
        "-g",
        str(speech.word_gap),
        "--stdout",
        markup,
    ]
    result = subprocess.run(command, capture_output=True, timeout=120, check=False)
    if result.returncode != 0 or not result.stdout:
        raise SynthesisError(
            f"espeak-ng failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
        )
    samples, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float64")
    resampled = np.asarray(soxr.resample(samples, rate, SAMPLE_RATE), dtype=np.float64)
    return np.asarray(resampled * (0.5 / (np.max(np.abs(resampled)) + 1e-12)), dtype=np.float64)


@dataclass(frozen=True)
class CrowdVoices:
    """Utterances a crowd is built from: agitated ones for a scene, calm ones for a cafe."""

    agitated: list[Signal]
    calm: list[Signal]


def crowd_voices(sentences: Sequence[str], pool: VoicePool, seed: str) -> CrowdVoices:
    """Eight agitated and eight calm utterances of `sentences` in `pool` voices."""
    rng = random.Random(seed)
    chosen = [rng.choice(list(sentences)) for _ in range(16)]
    voices = pool.voices()
    agitated = [
        speak(text, Speech(rng.choice(voices), rng.randint(200, 280), rng.randint(65, 99), 180, 0))
        for text in chosen[:8]
    ]
    calm = [
        speak(text, Speech(rng.choice(voices), rng.randint(130, 170), rng.randint(25, 50), 70, 1))
        for text in chosen[8:]
    ]
    return CrowdVoices(agitated, calm)


def render(text: str, recipe: ClipRecipe, crowd: CrowdVoices, seed: bytes) -> Signal:
    """The clip: `text` spoken and placed in its soundscape, at SAMPLE_RATE."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed).digest()[8:16], "big"))
    rate = SAMPLE_RATE
    voice = speak(text, recipe.speech)
    if recipe.shout_drive_db is not None:
        voice = soundscape.shout(voice, recipe.shout_drive_db)
    lead, tail = int(rng.uniform(0.2, 0.8) * rate), int(rng.uniform(0.2, 0.5) * rate)
    clip = np.concatenate([np.zeros(lead), voice, np.zeros(tail)])
    speech_power = soundscape.power(voice)
    for event in recipe.events:
        if event.kind in ("siren", "crowd", "cafe"):
            if event.kind == "siren":
                sound = soundscape.siren(len(clip), rate, rng)
            else:
                voices = crowd.agitated if event.kind == "crowd" else crowd.calm
                sound = soundscape.crowd(len(clip), voices, rng, int(rng.integers(4, 9)))
            start = 0
        else:
            made = soundscape.scream if event.kind == "scream" else soundscape.breaking_glass
            sound = made(rate, rng)
            start = int(rng.integers(0, max(1, len(clip) - len(sound))))
        scale = np.sqrt(speech_power * 10 ** (event.level_db / 10) / soundscape.power(sound))
        end = min(len(clip), start + len(sound))
        clip[start:end] += sound[: end - start] * scale
    if recipe.reverb_seconds is not None:
        clip = soundscape.room(clip, rate, recipe.reverb_seconds, rng)
    if recipe.noise_colour is not None:
        clip = soundscape.mix_at(
            clip, soundscape.noise(recipe.noise_colour, len(clip), rng), -recipe.snr_db
        )
    if recipe.telephone:
        clip = soundscape.band_limit(clip, rate, 300.0, 3_400.0)
    gain = 10 ** (recipe.peak_dbfs / 20) / (np.max(np.abs(clip)) + 1e-12)
    return np.asarray(clip * gain, dtype=np.float64)


@dataclass(frozen=True)
class SpokenClip:
    """One synthesised clip of the set."""

    file: str
    text: str
    label: str
    recipe: ClipRecipe
    heldout: bool


def plan_set(
    sentences: Iterable[tuple[str, str]], *, variants: int, all_heldout: bool = False
) -> list[SpokenClip]:
    """Every (text, label) spoken `variants` times, alternating calm and urgent, with a voice
    pool chosen by the sentence's side of the split (every sentence held out with
    `all_heldout`: sentences written apart from training). Stable order; nothing is
    synthesised."""
    clips: list[SpokenClip] = []
    for text, label in sentences:
        heldout = all_heldout or is_heldout(normalise(text))
        pool = HELDOUT_POOL if heldout else TRAINING_POOL
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        for variant in range(variants):
            delivery = DELIVERIES[variant % len(DELIVERIES)]
            recipe = ClipRecipe.draw(f"{text}\0{variant}".encode(), delivery, pool)
            name = f"{label}/{digest}-{variant}-{delivery}.wav"
            clips.append(SpokenClip(name, text, label, recipe, heldout))
    return clips


def synthesise_clips(
    clips: Sequence[SpokenClip],
    out_dir: Path,
    *,
    workers: int = 2,
    whole_set: Sequence[SpokenClip] | None = None,
) -> list[SpokenClip]:
    """Write `clips` under `out_dir` (16 kHz mono 16-bit WAV) and `out_dir/transcripts.csv`.

    The crowds are built from the sentences of `whole_set` (default: `clips`), so a subset
    of a planned set sounds exactly as it does within the whole set.
    """
    if shutil.which("espeak-ng") is None:
        raise SynthesisError(
            "espeak-ng not found; install with `apt-get install espeak-ng` "
            "(the audio starter is synthesised with it)"
        )
    crowds: dict[bool, CrowdVoices] = {}
    for heldout, pool in ((False, TRAINING_POOL), (True, HELDOUT_POOL)):
        source = clips if whole_set is None else whole_set
        side = sorted({clip.text for clip in source if clip.heldout == heldout})
        if side:
            crowds[heldout] = crowd_voices(side, pool, f"crowd\0{heldout}")
    for label in sorted({clip.label for clip in clips}):
        (out_dir / label).mkdir(parents=True, exist_ok=True)

    def run(clip: SpokenClip) -> None:
        seed = f"{clip.text}\0{clip.file}".encode()
        samples = render(clip.text, clip.recipe, crowds[clip.heldout], seed)
        soundfile.write(out_dir / clip.file, samples.astype(np.float32), SAMPLE_RATE, "PCM_16")

    # espeak-ng runs in child processes and numpy's transforms release the GIL.
    with ThreadPoolExecutor(max_workers=workers) as executor:
        list(executor.map(run, clips))
    with (out_dir / TRANSCRIPTS_NAME).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "text", "label", "urgency"])
        for clip in clips:
            writer.writerow([clip.file, clip.text, clip.label, clip.recipe.delivery])
    return list(clips)


def synthesise_set(
    sentences: Iterable[tuple[str, str]], out_dir: Path, *, variants: int, workers: int = 2
) -> list[SpokenClip]:
    """Speak every (text, label) `variants` times into `out_dir/<label>/` (see `plan_set`)
    and write `out_dir/transcripts.csv`. Returns the clips in a stable order."""
    return synthesise_clips(plan_set(sentences, variants=variants), out_dir, workers=workers)

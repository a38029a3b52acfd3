"""The shell examples of README.md and docs/, read from their fenced `bash` blocks and run."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
API_ADDRESS = "http://127.0.0.1:8080"
"""Where the examples call the API (the gateway of `make run`); the test points them at its own."""

SKIP_MARKER = re.compile(r"<!--\s*example:\s*not run\s*\((?P<reason>[^)]+)\)\s*-->")
"""Put on the line before a fence to keep an API example out of the run, with a reason, e.g.
`<!-- example: not run (needs a cluster) -->`."""

_FENCE = re.compile(r"^```bash\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)

# Every example runs with errors fatal, and curl failing on an HTTP error status: a 4xx or 5xx
# answer makes the example fail, with the answer's body in the output.
PREAMBLE = """\
set -euo pipefail
curl() { command curl --fail-with-body --show-error --max-time 180 "$@"; }
"""


@dataclass(frozen=True)
class ShellExample:
    """One fenced `bash` block of a document."""

    document: Path
    line: int
    code: str
    skip_reason: str | None

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(REPO)}:{self.line}"

    @property
    def calls_api(self) -> bool:
        return API_ADDRESS in self.code


def shell_examples(documents: tuple[Path, ...] = DOCUMENTS) -> list[ShellExample]:
    """Every fenced `bash` block of the documents, in order."""
    examples = []
    for document in documents:
        text = document.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = SKIP_MARKER.search(before)
            examples.append(
                ShellExample(
                    document=document,
                    line=text.count("\n", 0, match.start()) + 1,
                    code=match.group("code"),
                    skip_reason=marker.group("reason") if marker else None,
                )
            )
    return examples


def api_examples() -> list[ShellExample]:
    """The examples that call the API and are not marked as not run."""
    return [
        example for example in shell_examples() if example.calls_api and not example.skip_reason
    ]


def run_example(
    code: str, base_url: str, *, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run an example's code with bash from the repository root, against `base_url`."""
    script = PREAMBLE + code.replace(API_ADDRESS, base_url.rstrip("/"))
    return subprocess.run(
        ["bash", "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )

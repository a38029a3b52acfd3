"""The web page at `/ui`, driven in a real headless Debian chromium through Selenium.

Behind a gateway process: the starter sentiment and pose models in real service processes,
and a fake audio service (the audio model is not part of this stack) that records what the
page uploads. The browser gets a fake microphone, so recording runs for real too.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.fake_services import FakeAudioService
from tests.support.gateway_processes import free_ports, start_gateway, start_model_service
from tests.support.in_thread_servers import serving
from tests.support.pose_images import opencv_doc_data, pedestrian_crop
from tests.support.processes import stop, wait_for_http

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / ".mtc" / "models"
# Generous: the first prediction of a freshly loaded model on a busy CI machine is slow.
PAGE_WAIT_SECONDS = 90
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # A synthetic microphone (a beep) that needs no permission prompt.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
)
SKELETON_GREEN = (0x00, 0xE6, 0x76)


def starter_model(task: str) -> Path:
    """The starter model directory `make models` builds."""
    model_dir = MODELS_DIR / task
    if not (model_dir / "manifest.json").is_file():
        raise RuntimeError(f"{model_dir} is missing: run `make models` first")
    return model_dir


@dataclass
class PageStack:
    base: str
    audio: FakeAudioService


@pytest.fixture(scope="module")
def page_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageStack]:
    logs = tmp_path_factory.mktemp("page-stack")
    audio = FakeAudioService()
    gateway_port, sentiment_port, pose_port = free_ports(3)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with serving(audio.create_app()) as audio_url:
            processes.append(
                start_model_service(
                    "services.text",
                    "sentiment",
                    starter_model("sentiment"),
                    sentiment_port,
                    logs / "sentiment.log",
                )
            )
            processes.append(
                start_model_service(
                    "services.pose", "pose", starter_model("pose"), pose_port, logs / "pose.log"
                )
            )
            processes.append(
                start_gateway(
                    gateway_port,
                    logs / "gateway.log",
                    upstreams={
                        "sentiment": f"http://127.0.0.1:{sentiment_port}",
                        "pose": f"http://127.0.0.1:{pose_port}",
                        "audio": audio_url,
                    },
                    task_kinds={"pose": "image", "audio": "audio"},
                )
            )
            base = f"http://127.0.0.1:{gateway_port}"
            wait_for_http(f"{base}/health/ready", processes[-1], timeout=300)
            yield PageStack(base, audio)
    finally:
        for process in processes:
            stop(process)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        raise RuntimeError(
            "the web page test needs Debian's chromium and chromium-driver "
            "(apt-get install --no-install-recommends chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=ChromeService(executable_path=chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


def _open_task(browser: WebDriver, base: str, task: str) -> None:
    browser.get(f"{base}/ui")
    button = _wait(browser).until(
        expected_conditions.element_to_be_clickable(
            (By.CSS_SELECTOR, f'#tasks button[data-task="{task}"]')
        )
    )
    button.click()


def _wait(browser: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(browser, PAGE_WAIT_SECONDS)


def _results(browser: WebDriver, count: int) -> list[WebElement]:
    def shown(driver: WebDriver) -> list[WebElement] | bool:
        status = driver.find_element(By.ID, "result-status")
        if "error" in (status.get_attribute("class") or ""):
            raise AssertionError(f"the page shows an error: {status.text}")
        cards = driver.find_elements(By.CSS_SELECTOR, "#result-items .prediction")
        return cards if len(cards) >= count else False

    cards: list[WebElement] = _wait(browser).until(shown)
    return cards


def _score_rows(card: WebElement) -> list[tuple[str, str, float]]:
    """(label, shown percentage, bar width in % of its track) per row of a result card."""
    rows = []
    for row in card.find_elements(By.CSS_SELECTOR, ".score-row"):
        track = row.find_element(By.CSS_SELECTOR, ".bar").size["width"]
        fill = row.find_element(By.CSS_SELECTOR, ".fill").size["width"]
        label = row.get_attribute("data-label") or ""
        rows.append((label, row.find_element(By.CSS_SELECTOR, ".value").text, 100 * fill / track))
    return rows


def _console_errors(browser: WebDriver) -> list[str]:
    return [
        str(entry["message"])
        for entry in browser.get_log("browser")  # type: ignore[no-untyped-call]
        if entry["level"] == "SEVERE"
    ]


def test_typed_texts_are_classified_with_score_bars_and_model_version(
    page_stack: PageStack, browser: WebDriver
) -> None:
    models = httpx.get(f"{page_stack.base}/v1/models", timeout=30).json()["models"]
    sentiment = next(model for model in models if model["task"] == "sentiment")
    _open_task(browser, page_stack.base, "sentiment")

    shown_forms = [
        form.get_attribute("id")
        for form in browser.find_elements(By.CSS_SELECTOR, ".task-form")
        if form.is_displayed()
    ]
    text_box = browser.find_element(By.ID, "text-input")
    text_box.send_keys("An absolute triumph, moving and beautifully acted\n")
    text_box.send_keys("a tedious, badly written mess")
    browser.find_element(By.ID, "text-submit").click()
    first, second = _results(browser, 2)

    assert shown_forms == ["text-form"]
    assert first.find_element(By.TAG_NAME, "h3").text.startswith("An absolute triumph")
    first_rows, second_rows = _score_rows(first), _score_rows(second)
    assert [row[0] for row in first_rows] == ["POSITIVE", "NEGATIVE"]
    assert [row[0] for row in second_rows] == ["NEGATIVE", "POSITIVE"]
    _, percentage, bar_width = first_rows[0]
    assert percentage.endswith("%")
    assert bar_width == pytest.approx(float(percentage.rstrip("%")), abs=1.5)
    assert bar_width > 50
    status = browser.find_element(By.ID, "result-status").text
    assert f"{sentiment['name']} version {sentiment['version']}" in status
    assert sentiment["version"] in browser.find_element(By.ID, "task-model").text
    assert _console_errors(browser) == []


def test_a_photo_is_classified_and_its_skeleton_drawn(
    page_stack: PageStack, browser: WebDriver, tmp_path: Path
) -> None:
    photo = tmp_path / "walker.png"
    photo.write_bytes(pedestrian_crop(opencv_doc_data()))
    _open_task(browser, page_stack.base, "pose")

    browser.find_element(By.ID, "image-input").send_keys(str(photo))
    browser.find_element(By.ID, "image-submit").click()
    (card,) = _results(browser, 1)
    canvas = _wait(browser).until(
        lambda driver: (
            card.find_element(By.CSS_SELECTOR, "canvas.skeleton")
            if card.find_element(By.CSS_SELECTOR, "canvas.skeleton").size["width"] > 0
            else False
        )
    )
    skeleton_pixels = browser.execute_script(
        """
        const [canvas, red, green, blue] = arguments;
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let count = 0;
        for (let i = 0; i < pixels.length; i += 4) {
          if (Math.abs(pixels[i] - red) < 8 && Math.abs(pixels[i + 1] - green) < 8
              && Math.abs(pixels[i + 2] - blue) < 8) count += 1;
        }
        return count;
        """,
        canvas,
        *SKELETON_GREEN,
    )

    assert _score_rows(card)[0][0] == "standing"
    assert skeleton_pixels > 100
    assert _console_errors(browser) == []


def test_a_recording_is_sent_as_wav_and_its_results_shown(
    page_stack: PageStack, browser: WebDriver
) -> None:
    received_before = len(page_stack.audio.received)
    _open_task(browser, page_stack.base, "audio")

    record = browser.find_element(By.ID, "record-button")
    record.click()
    _wait(browser).until(lambda driver: record.text == "Stop")
    # Let the fake microphone fill a second of audio; the assertions do not depend on it.
    time.sleep(1.0)
    record.click()
    _wait(browser).until(lambda driver: driver.find_element(By.ID, "audio-preview").is_displayed())
    browser.find_element(By.ID, "audio-submit").click()
    (card,) = _results(browser, 1)

    (clip,) = page_stack.audio.received[received_before:]
    assert clip.filename == "recording.wav"
    assert clip.transcript is None
    channels, sample_rate = struct.unpack("<HI", clip.data[22:28])
    assert clip.data[:4] == b"RIFF"
    assert clip.data[8:16] == b"WAVEfmt "
    assert (channels, sample_rate) == (1, 16000)
    assert len(clip.data) > 44 + 16000  # more than half a second of 16-bit samples
    assert [row[0] for row in _score_rows(card)][:2] == ["emergency", "routine"]
    assert page_stack.audio.recognised_transcript in card.text
    assert "transcribed by the service" in card.text
    assert _console_errors(browser) == []


def test_an_uploaded_recording_goes_with_its_transcript(
    page_stack: PageStack, browser: WebDriver, tmp_path: Path
) -> None:
    wav = tmp_path / "call.wav"
    samples = b"\x00\x00" * 8000
    header = b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) + b"data"
    wav.write_bytes(header + struct.pack("<I", len(samples)) + samples)
    received_before = len(page_stack.audio.received)
    _open_task(browser, page_stack.base, "audio")

    browser.find_element(By.ID, "audio-input").send_keys(str(wav))
    browser.find_element(By.ID, "transcript-input").send_keys("my neighbour fell down the stairs")
    browser.find_element(By.ID, "audio-submit").click()
    (card,) = _results(browser, 1)

    (clip,) = page_stack.audio.received[received_before:]
    assert (clip.filename, clip.data) == ("call.wav", wav.read_bytes())
    assert clip.transcript == "my neighbour fell down the stairs"
    assert "my neighbour fell down the stairs" in card.text
    assert "as sent" in card.text


def test_a_recording_in_s3_is_classified_by_its_uri(
    page_stack: PageStack, browser: WebDriver
) -> None:
    uri = "s3://calls/incoming/call-0042.wav"
    received_before = len(page_stack.audio.received_s3)
    _open_task(browser, page_stack.base, "audio")

    browser.find_element(By.ID, "s3-uri-input").send_keys(uri)
    browser.find_element(By.ID, "audio-submit").click()
    (card,) = _results(browser, 1)

    (sent,) = page_stack.audio.received_s3[received_before:]
    assert sent.body == {"s3_uri": uri}
    assert card.find_element(By.TAG_NAME, "h3").text == uri
    assert [row[0] for row in _score_rows(card)][:2] == ["emergency", "routine"]
    assert _console_errors(browser) == []


def test_the_upload_page_classifies_a_wav_and_an_s3_key(
    page_stack: PageStack, browser: WebDriver, tmp_path: Path
) -> None:
    wav = tmp_path / "call-7.wav"
    wav.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32))
    uploads_before = len(page_stack.audio.received)
    s3_before = len(page_stack.audio.received_s3)
    browser.get(f"{page_stack.base}/upload")

    browser.find_element(By.ID, "audio-file").send_keys(str(wav))
    browser.find_element(By.ID, "upload-submit").click()
    (uploaded,) = _results(browser, 1)
    uploaded_rows = _score_rows(uploaded)
    uploaded_title = uploaded.find_element(By.TAG_NAME, "h3").text
    browser.find_element(By.ID, "s3-uri").send_keys("s3://calls/incoming/call-0042.wav")
    browser.find_element(By.ID, "s3-submit").click()
    _wait(browser).until(
        lambda driver: "s3://" in driver.find_element(By.CSS_SELECTOR, ".prediction h3").text
    )
    (stored,) = _results(browser, 1)

    (clip,) = page_stack.audio.received[uploads_before:]
    assert (clip.filename, clip.data) == ("call-7.wav", wav.read_bytes())
    assert uploaded_title == "call-7.wav"
    assert [(label, shown) for label, shown, _ in uploaded_rows] == [
        ("emergency", "80.0%"),
        ("routine", "20.0%"),
    ]
    (sent,) = page_stack.audio.received_s3[s3_before:]
    assert sent.body == {"s3_uri": "s3://calls/incoming/call-0042.wav"}
    assert stored.get_attribute("data-label") == "emergency"
    assert browser.find_element(By.ID, "result-status").text == "The call is emergency."
    assert _console_errors(browser) == []


def test_a_service_error_is_shown_on_the_page(page_stack: PageStack, browser: WebDriver) -> None:
    _open_task(browser, page_stack.base, "sentiment")
    too_long = "x" * 10_001

    browser.execute_script("document.getElementById('text-input').value = arguments[0];", too_long)
    browser.find_element(By.ID, "text-submit").click()
    status = _wait(browser).until(
        lambda driver: (
            driver.find_element(By.ID, "result-status")
            if "error" in (driver.find_element(By.ID, "result-status").get_attribute("class") or "")
            else False
        )
    )

    assert status.text.startswith("HTTP 413 item_too_large: text[0] has 10001 characters")


@pytest.mark.parametrize(
    ("path", "title_selector"),
    [("/docs", ".swagger-ui .info .title"), ("/redoc", "redoc h1")],
)
def test_the_api_docs_render_from_the_gateway_alone(
    page_stack: PageStack, browser: WebDriver, path: str, title_selector: str
) -> None:
    """Swagger UI and ReDoc run under their Content-Security-Policy with every file served
    by the gateway: the page shows the API's title and the console has no refusal."""
    browser.get(f"{page_stack.base}{path}")
    title = _wait(browser).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, title_selector))
    )

    assert "mtc gateway" in title.text
    # ReDoc's sidebar credit names a logo on its vendor's site: the policy refusing it is
    # the policy at work. Anything else in the console is a failure.
    refused_elsewhere = "violates the following Content Security Policy directive"
    assert [
        error
        for error in _console_errors(browser)
        if not (refused_elsewhere in error and "'https://" in error)
    ] == []

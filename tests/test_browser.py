"""End to end in headless Chromium (Playwright, sync API): open the ``pcnn serve`` page, upload a photo through the
file input and check the rendered faces. Skipped when Debian's chromium (/usr/bin/chromium) is not installed.

Set ``PCNN_FER_SCREENSHOT=1`` to also write the page with its result to ``docs/img/serve.png``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("PCNN_FER_CHROMIUM", "/usr/bin/chromium"))
if not CHROMIUM.is_file():
    pytest.skip(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")
pytest.importorskip("fastapi")
torch = pytest.importorskip("torch")

from conftest import in_process_budget_mb  # noqa: E402

from pcnn_fer import create_model, save_model  # noqa: E402
from pcnn_fer.deploy.server import create_app, serve_in_background  # noqa: E402
from pcnn_fer.weights import ASSETS, DEFAULT_MODEL  # noqa: E402

pytestmark = pytest.mark.slow  # Chromium and a server: minutes on 2 cores (pytest -m slow)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PCNN_FER_SHARED", ROOT.parent / "shared"))
SAMPLE = SHARED / "samples" / "astronaut.png"
PHOTO = SAMPLE if SAMPLE.is_file() else ASSETS / "astronaut.png"
#: The astronaut's face in the 512×512 sample (hairline to chin, ear to ear), in image pixels.
FACE = (172, 70, 272, 180)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """A live server with the bundled model when it exists, else a random tiny 8-class PCNN."""
    if DEFAULT_MODEL.exists():
        checkpoint = "default"
    else:
        torch.manual_seed(0)
        checkpoint = str(save_model(create_model("tiny", num_classes=8),
                                    tmp_path_factory.mktemp("model") / "m.safetensors"))
    app = create_app(checkpoint=checkpoint, workers=1, threads=1, max_memory_mb=in_process_budget_mb())
    with serve_in_background(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium driven by Playwright."""
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def test_upload_shows_boxed_face_with_expression_and_region_bars(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1200, "height": 820})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/")
    page.wait_for_function("document.querySelector('#model').textContent.includes('classes')")
    classes = page.evaluate("fetch('/health').then(r => r.json()).then(h => h.classes)")
    page.set_input_files("#file", str(PHOTO))
    page.wait_for_selector(".face-box", timeout=60_000)
    assert page.locator(".face-box").count() == 1
    label = page.inner_text(".face-box .face-label")
    assert any(c in label for c in classes) and "%" in label
    assert page.get_attribute(".face-box", "data-label") in classes
    assert "1 face" in page.inner_text("#status")
    # the box sits on the face: map its on-screen rectangle back to image pixels
    img = page.locator("#photo").bounding_box()
    box = page.locator(".face-box").bounding_box()
    natural = page.evaluate("[document.querySelector('#photo').naturalWidth, "
                            "document.querySelector('#photo').naturalHeight]")
    sx, sy = natural[0] / img["width"], natural[1] / img["height"]
    cx = (box["x"] - img["x"] + box["width"] / 2) * sx
    cy = (box["y"] - img["y"] + box["height"] / 2) * sy
    assert FACE[0] < cx < FACE[2] and FACE[1] < cy < FACE[3]
    # five region bars under the box and in the face card, plus one bar per class
    assert page.locator(".face-box .region-strip .row").count() == 5
    card = page.locator(".face-card")
    assert card.count() == 1 and card.locator(".bars").nth(0).locator(".bar").count() == len(classes)
    assert card.locator(".bars").nth(1).locator(".bar").count() == 5
    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("PCNN_FER_SCREENSHOT"):
        target = ROOT / "docs" / "img" / "serve.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target)
    assert not errors, errors
    page.close()


def test_page_reports_errors_and_images_without_faces(server, browser, tmp_path):
    page = browser.new_page()
    page.goto(server + "/")
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    page.set_input_files("#file", str(text))
    page.wait_for_selector("#status.error", timeout=30_000)
    assert "415" in page.inner_text("#status")
    cat = SHARED / "samples" / "chelsea.png"
    if cat.is_file():
        page.set_input_files("#file", str(cat))
        page.wait_for_function("document.querySelector('#status').textContent.includes('no face found')",
                               timeout=60_000)
        assert page.locator(".face-box").count() == 0
    page.close()


def test_api_docs_render_without_internet(server, browser):
    page = browser.new_page()
    outside: list[str] = []
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    def only_the_server(route) -> None:
        """Let requests to the server through; record and refuse everything else (as offline)."""
        if route.request.url.startswith(server + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    page.goto(server + "/docs")
    page.wait_for_selector(".opblock-summary-path[data-path='/predict']", timeout=30_000)
    paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.dataset.path)")
    assert {"/predict", "/health"} <= set(paths), paths
    assert not outside, outside
    assert not errors, errors
    page.close()


def _y4m(path: Path, frames) -> Path:
    """Write RGB frames as a 10-fps Y4M file (what Chromium's fake webcam plays, in a loop)."""
    import cv2

    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def test_live_webcam_shows_ids_and_smoothed_expressions(server, browser, tmp_path):
    """A fake webcam plays two real faces (the astronaut and a CK+ face when ../shared has one) drifting apart:
    live mode sends frame after frame in a session and every box shows the person's id and smoothed expression,
    the same ids from frame to frame."""
    import cv2
    import numpy as np
    from PIL import Image

    astronaut = np.asarray(Image.open(ASSETS / "astronaut.png").convert("RGB"))
    heads = [cv2.resize(astronaut[40:210, 137:307], (180, 180))]
    ck = sorted((SHARED / "data" / "ckplus48" / "CK+48" / "happy").glob("S011_*.png"))
    if ck:
        heads.append(cv2.resize(np.asarray(Image.open(ck[0]).convert("RGB")), (150, 150),
                                interpolation=cv2.INTER_CUBIC))
    background = cv2.GaussianBlur(cv2.resize(astronaut[300:, 300:], (640, 360)), (0, 0), 3)
    frames = []
    for k in range(40):
        frame = background.copy()
        for j, head in enumerate(heads):
            s = head.shape[0]
            x, y = 40 + 300 * j + (2 * k if j == 0 else -2 * k), 90 + 10 * j
            frame[y:y + s, x:x + s] = head
        frames.append(frame)
    clip = _y4m(tmp_path / "webcam.y4m", frames)
    # a second Chromium from the module's Playwright (one sync Playwright per thread), with a fake webcam
    webcam = browser.browser_type.launch(executable_path=str(CHROMIUM), args=[
        *ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}"])
    try:
        page = webcam.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server + "/")
        page.click("#webcam-start")
        page.wait_for_function("document.querySelector('#video').videoWidth > 0", timeout=30_000)
        page.click("#webcam-live")
        seen = []
        for _ in range(4):  # four answered frames
            page.wait_for_function("document.querySelectorAll('.face-box[data-face-id]').length > 0 && "
                                   "document.querySelector('#status').textContent.startsWith('live')",
                                   timeout=60_000)
            ids = page.eval_on_selector_all(".face-box", "els => els.map(e => e.dataset.faceId)")
            labels = page.eval_on_selector_all(".face-box .face-label", "els => els.map(e => e.textContent)")
            seen.append(sorted(ids))
            assert all(label.startswith(f"#{i}") and "%" in label for i, label in zip(ids, labels, strict=True))
            page.evaluate("document.querySelector('#overlay').replaceChildren()")
        assert all(ids == seen[-1] for ids in seen[1:]) and len(seen[-1]) == len(heads), seen
        assert "Person #1:" in page.inner_text("#faces") and "smoothed" in page.inner_text("#faces")
        page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
        page.click("#webcam-stop")
        assert not errors, errors
    finally:
        webcam.close()

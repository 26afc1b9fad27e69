"""``pcnn serve``'s memory bounds (:mod:`pcnn_fer.deploy.memory`): upload costs from headers, the decode budget's
admission rules, the lean decoder's equality with the shared one, and 503 + Retry-After when the queue is full."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import numpy as np
import pytest
from conftest import in_process_budget_mb
from PIL import Image

from pcnn_fer.deploy.memory import (
    FIXED_COST,
    DecodeBudget,
    DecodeQueueFull,
    ImageTooLargeError,
    decode_rgb,
    inspect_upload,
    upload_cost,
)
from pcnn_fer.errors import UsageError
from pcnn_fer.faces.imageio import ImageLoadError, load_image

MB = 2**20


def encoded(img: Image.Image, fmt: str = "PNG", **params) -> bytes:
    """``img`` saved in ``fmt``."""
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def gradient(mode: str, size: tuple[int, int] = (301, 203)) -> Image.Image:
    """A deterministic image of ``mode`` with varied pixels (odd sizes: strips do not divide it evenly)."""
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    return Image.fromarray(rgba, "RGBA").convert(mode)


def rotated_jpeg() -> bytes:
    """A JPEG whose EXIF orientation (6) says: turn it 90° to show it upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(gradient("RGB"), "JPEG", exif=exif.tobytes())


def transparent_palette() -> bytes:
    """A palette PNG with a transparent colour."""
    img = gradient("P")
    return encoded(img, transparency=3)


CASES = {
    "rgb": encoded(gradient("RGB")),
    "rgba": encoded(gradient("RGBA")),
    "gray": encoded(gradient("L")),
    "gray-alpha": encoded(gradient("LA")),
    "bilevel": encoded(gradient("1")),
    "palette": encoded(gradient("P")),
    "palette-transparent": transparent_palette(),
    "16-bit": encoded(Image.fromarray((np.arange(203 * 301, dtype=np.uint16) * 7).reshape(203, 301))),
    "cmyk-jpeg": encoded(gradient("CMYK"), "JPEG"),
    "exif-rotated": rotated_jpeg(),
    "tall": encoded(gradient("RGB", (7, 5000))),  # many strips of few columns
}


def _wide(values: np.ndarray, mode: str | None = None) -> Image.Image:
    return Image.fromarray(values, mode) if mode else Image.fromarray(values)


_RNG = np.random.default_rng(1)
#: High-bit-depth images wide enough to be converted in several strips, whose scaling needs the whole image's range.
CASES.update({
    "16-bit-strips": encoded(_wide(_RNG.integers(0, 65536, (801, 3001), dtype=np.uint16))),
    # rows ramp up, so each strip alone has another range than the whole image
    "int32-stretched": encoded(_wide((np.arange(401)[:, None] * 170 - 1000
                                      + _RNG.integers(0, 50, (401, 3001))).astype(np.int32)), "TIFF"),
    "float-unit": encoded(_wide(_RNG.random((401, 3001), dtype=np.float32)), "TIFF"),
    "float-nan-wide": encoded(_wide(np.where(_RNG.random((401, 3001)) < 0.01, np.nan,
                                             np.linspace(-100, 300, 401)[:, None]
                                             + _RNG.normal(0, 5, (401, 3001))).astype(np.float32)), "TIFF"),
})


def test_high_depth_cases_are_what_they_claim():
    assert {name: Image.open(io.BytesIO(CASES[name])).mode for name in
            ("16-bit-strips", "int32-stretched", "float-unit", "float-nan-wide")} == \
        {"16-bit-strips": "I;16", "int32-stretched": "I", "float-unit": "F", "float-nan-wide": "F"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_decode_rgb_gives_the_shared_rule_s_pixels(name):
    data = CASES[name]
    expected = load_image(data)
    got = decode_rgb(data, max_pixels=10**8)
    assert got.dtype == np.uint8 and got.shape == expected.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("data", [b"", b"not an image", CASES["rgb"][:400], CASES["cmyk-jpeg"][:-300]],
                         ids=["empty", "garbage", "truncated-png", "truncated-jpeg"])
def test_decode_rgb_fails_with_the_shared_rule_s_reasons(data):
    with pytest.raises(ImageLoadError) as expected:
        load_image(data)
    with pytest.raises(ImageLoadError) as got:
        decode_rgb(data, max_pixels=10**8)
    assert got.value.reason == expected.value.reason


def test_inspect_upload_reads_the_header_only():
    data = CASES["rgb"]
    upload = inspect_upload(data, max_pixels=10**6)
    assert (upload.width, upload.height, upload.mode, upload.pixels) == (301, 203, "RGB", 301 * 203)
    assert upload.cost == upload_cost(301, 203, "RGB", len(data)) > FIXED_COST
    file = io.BytesIO(data)
    file.seek(17)
    assert inspect_upload(file, max_pixels=10**6) == upload and file.tell() == 0  # a file: left at its start
    assert inspect_upload(b"not an image", max_pixels=10**6) is None  # the decoder says why
    with pytest.raises(ImageTooLargeError, match=r"301x203 = 0.1 MP exceeds the server's limit of 0.0 MP"):
        inspect_upload(data, max_pixels=1000)
    # the estimate grows with the pixels and with the mode's bytes per pixel
    assert upload_cost(8000, 8000, "RGB") > 8000 * 8000 * 8 > upload_cost(8000, 8000, "L") - FIXED_COST
    assert upload_cost(100, 100, "L") < upload_cost(100, 100, "I;16") < upload_cost(100, 100, "I") \
        == upload_cost(100, 100, "F")  # by the bytes Pillow holds per pixel (all modes are decoded strip by strip)


def hold_in_thread(budget: DecodeBudget, cost: int, order: list[int], tag: int, release: threading.Event):
    """Start a thread that takes an admission for ``cost``, appends ``tag`` to ``order`` and holds it until
    ``release`` is set."""
    def run():
        with budget.hold(cost):
            order.append(tag)
            release.wait(10)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wait_for(condition, timeout: float = 5.0) -> None:
    """Wait until ``condition()`` is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_budget_admits_by_count_and_memory_first_come_first_served():
    budget = DecodeBudget(limit=3, memory=1000 * MB, baseline=lambda: 200 * MB)  # 800 MiB for decodes
    assert budget.available == 800 * MB
    order: list[int] = []
    gates = [threading.Event() for _ in range(4)]
    first = hold_in_thread(budget, 500 * MB, order, 0, gates[0])
    wait_for(lambda: order == [0])
    second = hold_in_thread(budget, 400 * MB, order, 1, gates[1])  # 900 > 800: waits, although a slot is free
    wait_for(lambda: budget.waiting == 1)
    third = hold_in_thread(budget, 100 * MB, order, 2, gates[2])  # would fit, but waits its turn behind the second
    wait_for(lambda: budget.waiting == 2)
    assert order == [0] and budget.active == 1
    gates[0].set()
    first.join(5)
    wait_for(lambda: sorted(order) == [0, 1, 2])  # 400 + 100 fit together
    assert budget.peak_in_use == 500 * MB and budget.status()["active"] == 2
    fourth = hold_in_thread(budget, 50 * MB, order, 3, gates[3])  # the count limit: 3 at once
    wait_for(lambda: order[-1] == 3)
    assert budget.active == 3 and budget.peak == 3
    for gate in gates:
        gate.set()
    for thread in (second, third, fourth):
        thread.join(5)
    assert budget.active == 0 and budget.in_use == 0 and budget.admitted == 4


def test_budget_admits_an_oversized_decode_alone_and_remeasures_its_baseline():
    baselines = iter([100 * MB, 300 * MB])
    budget = DecodeBudget(limit=2, memory=1000 * MB, baseline=lambda: next(baselines))
    with budget.hold(5000 * MB):  # costlier than the whole budget: decoded alone rather than never
        assert budget.active == 1
        with pytest.raises(DecodeQueueFull) as full:
            with budget.hold(1 * MB, max_waiting=0):
                pass
        assert full.value.waiting == 0 and full.value.retry_after >= 1
    assert budget.baseline == 300 * MB and budget.available == 700 * MB  # measured when the last decode ended
    with pytest.raises(UsageError, match="max_decodes must be at least 1"):
        DecodeBudget(limit=0)


def test_budget_admit_is_async_and_a_cancelled_waiter_leaves_the_queue():
    async def scenario():
        budget = DecodeBudget(limit=1)
        async with budget.admit(10):
            waiter = asyncio.ensure_future(_enter(budget))
            await asyncio.sleep(0.05)
            assert budget.waiting == 1
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert budget.waiting == 0
            with pytest.raises(DecodeQueueFull):
                async with budget.admit(10, max_waiting=0):
                    pass
        assert budget.active == 0
        async with budget.admit(10, max_waiting=0):  # idle: admitted at once whatever the queue bound
            assert budget.active == 1
        return budget.admitted

    assert asyncio.run(scenario()) == 2


async def _enter(budget: DecodeBudget) -> None:
    async with budget.admit(10):
        pass


fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
torch = pytest.importorskip("torch")


def test_server_answers_503_with_retry_after_when_the_queue_is_full(checkpoint):
    from pcnn_fer.deploy.server import create_app, serve_in_background
    from pcnn_fer.weights import ASSETS

    data = (ASSETS / "astronaut.png").read_bytes()
    budget_mb = in_process_budget_mb()
    app = create_app(checkpoint=str(checkpoint), backend="torch", workers=1, threads=1, max_decodes=1, max_queue=1,
                     max_memory_mb=budget_mb)
    budget = app.state.service.budget
    with serve_in_background(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        post = lambda: client.post("/predict", files={"file": ("astronaut.png", data, "image/png")})  # noqa: E731
        health = client.get("/health").json()
        assert health["max_queue"] == 1 and health["max_memory_mb"] == pytest.approx(budget_mb, abs=0.5)
        assert health["decoding"]["active"] == 0 and health["decoding"]["for_decodes_mib"] > 0
        results: list[int] = []
        release = threading.Event()
        holder = hold_in_thread(budget, 1, [], 0, release)  # a decode in progress
        wait_for(lambda: budget.active == 1)
        queued = threading.Thread(target=lambda: results.append(post().status_code))
        queued.start()
        wait_for(lambda: budget.waiting == 1)
        busy = post()  # one waits already, the most allowed
        assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
        assert busy.json()["detail"].startswith("busy: 1 uploads already wait for a decode (pcnn serve --max-queue 1)")
        assert client.get("/health").json()["decoding"]["waiting"] == 1
        release.set()
        holder.join(5)
        queued.join(60)
        assert results == [200]
        assert post().status_code == 200  # idle again


def flat(size: int, mode: str = "I;16") -> bytes:
    """A flat ``size``×``size`` PNG of ``mode`` (I;16: 16-bit gray; about 2 KB per megapixel on the wire)."""
    return encoded(Image.new(mode, (size, size), 30000 if mode == "I;16" else 128))


def test_high_depth_uploads_cost_what_other_modes_do():
    """Issue 33: a 16-bit upload was estimated (and decoded) at 40 bytes per pixel; it now decodes strip by strip."""
    sixteen, gray = inspect_upload(flat(1000), 10**8), inspect_upload(flat(1000, "L"), 10**8)
    assert sixteen.mode == "I;16" and sixteen.cost - gray.cost < 1.5 * 10**6 and sixteen.cost < 2 * FIXED_COST


def test_an_upload_the_memory_budget_cannot_hold_is_refused_with_413_undecoded(checkpoint):
    from pcnn_fer.deploy.server import create_app, serve_in_background
    from pcnn_fer.weights import ASSETS

    with pytest.raises(UsageError, match=r"--max-memory-mb 1: the server already takes \d+ MiB .* no room"):
        create_app(checkpoint=str(checkpoint), backend="torch", workers=1, threads=1, max_memory_mb=1)
    app = create_app(checkpoint=str(checkpoint), backend="torch", workers=1, threads=1,
                     max_memory_mb=in_process_budget_mb())
    budget = app.state.service.budget
    budget.memory = budget.baseline + FIXED_COST + 50 * MB  # room for a photo, not for 16 MP
    with serve_in_background(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        big = client.post("/predict", files={"file": ("big.png", flat(4000), "image/png")})
        assert big.status_code == 413 and budget.admitted == 0
        assert big.json()["detail"].startswith("cannot use 'big.png': image too large for the server's memory: "
                                               "4000x4000 I;16 needs about ")
        photo = client.post("/predict", files={"file": ("a.png", (ASSETS / "astronaut.png").read_bytes(),
                                                        "image/png")})
        assert photo.status_code == 200 and budget.admitted == 1


@pytest.mark.slow
def test_a_flat_16_bit_64_mp_png_keeps_the_default_server_under_its_budget(checkpoint, tmp_path):
    """Issue 33: one flat 16-bit 7999×7999 PNG (about 130 KB) took ``pcnn serve`` (default --max-memory-mb 1800)
    to 2.5–2.7 GB and the memory stayed taken. Now: peak ≤ 1800 MiB, and back near the idle level afterwards."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_memory.py"
    proc = subprocess.run([sys.executable, str(bench), "--mode", "I;16", "--uploads", "1", "--rounds", "2",
                           "--checkpoint", str(checkpoint), "--start-timeout", "600", "--json"], capture_output=True,
                          text=True, timeout=1500,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    import json

    report = json.loads(proc.stdout)
    assert report["statuses"] == {"200": 2} and report["upload_kb"] < 200, report
    assert report["rss_peak_mib"] <= 1800, report
    assert max(report["rss_after_mib"]) - report["rss_before_mib"] < 250, report  # measured: +60, +131 MiB

"""``pcnn serve``: real HTTP requests against uvicorn on 127.0.0.1 (a free port, in a background thread)."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import socket
import struct
import subprocess
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
torch = pytest.importorskip("torch")

from conftest import in_process_budget_mb  # noqa: E402

from pcnn_fer.cli import build_parser  # noqa: E402
from pcnn_fer.cli import main as cli_main  # noqa: E402
from pcnn_fer.deploy.server import create_app, is_loopback, serve_in_background  # noqa: E402
from pcnn_fer.faces import Recognizer  # noqa: E402
from pcnn_fer.models.pcnn import REGIONS  # noqa: E402
from pcnn_fer.weights import ASSETS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PCNN_FER_SHARED", ROOT.parent / "shared"))
ASTRONAUT = ASSETS / "astronaut.png"
CAT = SHARED / "samples" / "chelsea.png"
LIMIT_MB = 1.0  # a small upload limit keeps the 413 tests cheap (the astronaut PNG is 0.75 MB)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width×height pixels and holds none (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def server(checkpoint) -> str:
    """Base URL of a live server (torch backend, 2 workers, 1 MB limit)."""
    before = torch.get_num_threads()
    app = create_app(checkpoint=str(checkpoint), backend="torch", max_upload_mb=LIMIT_MB, workers=2, threads=1,
                     max_memory_mb=in_process_budget_mb())
    with serve_in_background(app, host="127.0.0.1", port=0) as url:
        yield url
    torch.set_num_threads(before)


@pytest.fixture()
def client(server):
    """An HTTP client for the live server."""
    with httpx.Client(base_url=server, timeout=120) as c:
        yield c


def upload(client, data: bytes, name: str = "astronaut.png", content_type: str = "image/png", field: str = "file"):
    """POST /predict with one multipart file part."""
    return client.post("/predict", files={field: (name, data, content_type)})


def test_health_docs_and_page(client, server):
    assert server.startswith("http://127.0.0.1:")
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["backend"] == "torch"
    assert len(health["classes"]) == 8 and health["classes"][1] == "happiness"
    assert health["regions"] == list(REGIONS) and health["input_size"] == 48
    assert health["max_upload_mb"] == LIMIT_MB and set(health["colors"]) == set(health["classes"])
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/predict" in spec["paths"] and "/health" in spec["paths"]
    assert {"413", "415", "422"} <= set(spec["paths"]["/predict"]["post"]["responses"])
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="file"' in page.text and "getUserMedia" in client.get("/static/app.js").text
    assert client.get("/static/style.css").status_code == 200


def test_predict_astronaut_returns_the_predict_record(client, checkpoint):
    data = ASTRONAUT.read_bytes()
    response = upload(client, data)
    assert response.status_code == 200, response.text
    record = response.json()
    assert set(record) == {"source", "frame", "skipped", "faces"}
    assert record["source"] == "astronaut.png" and record["frame"] is None and record["skipped"] is None
    assert len(record["faces"]) == 1
    face = record["faces"][0]
    assert set(face) == {"box", "landmarks", "label", "score", "probabilities", "regions", "detection_score",
                         "quality"}
    assert set(face["regions"]) == set(REGIONS) and face["label"] in face["probabilities"]
    # exactly what pcnn predict / Recognizer gives for the same bytes with the same (torch) backend
    expected = Recognizer(checkpoint, backend="torch").predict(data, source="astronaut.png").to_dict()
    assert record == expected
    assert float(response.headers["x-inference-ms"]) > 0
    # a request's own --min-confidence: above the face's score it is "uncertain", its probabilities kept
    strict = client.post("/predict?min_confidence=1", files={"file": ("astronaut.png", data, "image/png")}).json()
    assert strict["faces"][0]["label"] == "uncertain"
    assert strict["faces"][0]["probabilities"] == face["probabilities"]
    assert client.post("/predict?min_confidence=1.5", files={"file": ("a.png", data, "image/png")}).status_code == 422
    health = client.get("/health").json()
    assert health["min_confidence"] is None and "calibration" in health and health["occlusion"] is False


@pytest.mark.parametrize("size", [(1, 1), (100_000, 1), (1, 100_000)], ids=["1x1", "100000x1", "1x100000"])
def test_an_image_too_small_for_a_face_is_a_reasoned_skip_not_a_500(client, size):
    """Issue 33 item 7: dlib's CNN fallback raised on these and the server answered 500."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 90, 90)).save(buffer, "PNG")
    response = upload(client, buffer.getvalue(), "thin.png")
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["faces"] == [] and record["skipped"].startswith(f"{size[0]}×{size[1]} pixels, too small to hold")


def test_live_session_gives_ids_and_smoothed_expressions(client):
    """Frames of one webcam session (the web page's live mode): the face keeps its id, its smoothed probabilities
    are the exponential average in time of the frames' (time constant 0.5 s), another session starts at #1 again;
    a malformed session is a 422."""
    data = ASTRONAUT.read_bytes()

    def live(session: str, t: float) -> dict:
        response = client.post("/predict", files={"file": ("webcam.jpg", data, "image/png")},
                               data={"session": session, "time_s": str(t)})
        assert response.status_code == 200, response.text
        return response.json()

    first, second = live("test-a", 0.0), live("test-a", 0.25)
    assert first["time_s"] == 0.0 and second["time_s"] == 0.25
    for record in (first, second):
        face = record["faces"][0]
        assert face["face_id"] == 1 and face["smooth_label"] == max(face["smooth_probabilities"],
                                                                    key=face["smooth_probabilities"].get)
    assert second["faces"][0]["smooth_probabilities"] == pytest.approx(second["faces"][0]["probabilities"], abs=1e-3)
    assert live("test-b", 0.0)["faces"][0]["face_id"] == 1
    bad = client.post("/predict", files={"file": ("webcam.jpg", data, "image/png")}, data={"session": "../x"})
    assert bad.status_code == 422 and "session" in bad.json()["detail"]


@pytest.mark.skipif(not CAT.is_file(), reason=f"sample photo not found: {CAT} (set PCNN_FER_SHARED)")
def test_predict_cat_has_no_face(client):
    response = upload(client, CAT.read_bytes(), "chelsea.png")
    assert response.status_code == 200
    assert response.json() == {"source": "chelsea.png", "frame": None, "skipped": None, "faces": []}


@pytest.mark.parametrize(("data", "name", "content_type", "status", "message"), [
    (b"\x00garbage bytes, not an image" * 20, "x.png", "image/png", 422, "not an image"),
    (ASTRONAUT.read_bytes()[:20000], "cut.png", "image/png", 422, "truncated"),
    (b"", "empty.jpg", "image/jpeg", 422, "empty"),
    (b"%PDF-1.4 hello", "doc.pdf", "application/pdf", 415, "unsupported file type"),
    (b"hello", "notes.txt", "text/plain", 415, "unsupported file type"),
    (b"\x89PNG garbage", "x.bin", "application/octet-stream", 422, "not an image"),
    (png_header(9000, 8000), "big.png", "image/png", 413, "9000x8000 = 72.0 MP exceeds the server's limit of 64.0 MP"),
    (png_header(20000, 20000), "bomb.png", "image/png", 413, "Pillow's decompression-bomb limit"),
], ids=["garbage", "truncated", "empty", "pdf", "text", "octet-stream-garbage", "over-max-pixels", "bomb"])
def test_bad_uploads_get_clear_4xx(client, data, name, content_type, status, message):
    response = upload(client, data, name, content_type)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_wrong_request_shapes(client):
    raw = client.post("/predict", content=ASTRONAUT.read_bytes(), headers={"content-type": "image/png"})
    assert raw.status_code == 415 and "multipart/form-data" in raw.json()["detail"]
    form = client.post("/predict", data={"file": "not a file"})
    assert form.status_code == 415
    other_field = upload(client, ASTRONAUT.read_bytes(), field="image")
    assert other_field.status_code == 422 and "field named 'file'" in other_field.json()["detail"]
    assert client.get("/predict").status_code == 405


def test_too_large_uploads_get_413(client):
    big = b"\x89PNG" + os.urandom(int(1.5 * 2**20))
    response = upload(client, big, "big.png")
    assert response.status_code == 413 and "limit is 1 MB" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while streaming
        yield (b'--BOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
               b"Content-Type: image/png\r\n\r\n")
        for _ in range(6):
            yield b"\0" * 2**18
        yield b"\r\n--BOUNDARY--\r\n"

    headers = {"content-type": "multipart/form-data; boundary=BOUNDARY"}
    streamed = client.post("/predict", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert upload(client, ASTRONAUT.read_bytes()).status_code == 200  # and the server carries on


def test_the_model_is_loaded_once(checkpoint):
    app = create_app(checkpoint=str(checkpoint), workers=3, threads=1,  # the default backend: auto
                     max_memory_mb=in_process_budget_mb())
    recognizers = list(app.state.service.recognizers.queue)
    assert len(recognizers) == 3 and len({id(r.backend) for r in recognizers}) == 1  # one shared backend
    assert len({id(r.detector) for r in recognizers}) == 3  # one face detector per worker


def test_concurrent_requests(server, client):
    data = ASTRONAUT.read_bytes()
    served_before = client.get("/health").json()["served"]

    def one(i: int):
        with httpx.Client(base_url=server, timeout=120) as c:
            if i % 4 == 3:
                return upload(c, b"junk" * 100, "junk.png").status_code, None
            r = upload(c, data)
            return r.status_code, r.json()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    good = [body for status, body in results if status == 200]
    assert len(good) == 6 and all(status == 422 for status, body in results if body is None)
    assert all(body == good[0] for body in good)  # the same answer whatever the interleaving
    assert client.get("/health").json()["served"] == served_before + 6


def test_is_loopback_and_cli_parser():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")
    args = build_parser().parse_args(["serve", "--port", "0", "--backend", "onnx", "--max-upload-mb", "2"])
    assert args.func.__name__ == "run_serve" and args.host == "127.0.0.1" and args.max_upload_mb == 2.0


def test_docs_pages_use_no_external_url(client):
    html = client.get("/docs").text
    links = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
    assert len(links) == 4 and all(link.startswith("/") and not link.startswith("//") for link in links), links
    assert "http" not in html.lower()
    for link in links:  # the Swagger UI script and style, the favicon and the schema, all from the server
        assert client.get(link).status_code == 200, link
    assert client.get("/redoc").status_code == 404  # FastAPI's ReDoc page loads its script from a CDN: not served


# --- the real `pcnn serve` / `pcnn export` commands in subprocesses -------------------------------------------

BIG = 4000  #: side of the flat PNG of the memory test: 16 MP, about 0.25 GB while decoded
PIXEL_LIMIT = 20_000_000
READ_TIMEOUT = 1.0


def flat_png(size: int) -> bytes:
    """A flat grey size×size RGB PNG (tens of KB to send, 3 bytes per pixel decoded)."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (128, 128, 128)).save(buffer, "PNG")
    return buffer.getvalue()


def rss_mib(pid: int) -> float:
    """Resident memory of a process (MiB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmRSS")


def peak_rss_during(pid: int, action) -> float:
    """Run ``action()`` while sampling the process's RSS every 5 ms; the highest sample (MiB)."""
    samples = [rss_mib(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(rss_mib(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        action()
    finally:
        done.set()
        sampler.join()
    return max(samples)


def run_pcnn(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real ``pcnn`` command (PYTHONPATH is inherited)."""
    return subprocess.run(["pcnn", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cli_server(checkpoint):
    """``pcnn serve --port 0`` with one decode slot, a 20 MP pixel limit and a 1 s read timeout: (URL, process)."""
    process = subprocess.Popen(
        ["pcnn", "serve", "--port", "0", "--checkpoint", str(checkpoint), "--workers", "2", "--threads", "1",
         "--max-decodes", "1", "--max-pixels", str(PIXEL_LIMIT), "--read-timeout", str(READ_TIMEOUT),
         "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        auto = "onnx (auto: onnxruntime is installed)" if importlib.util.find_spec("onnxruntime") else \
            "torch (auto: onnxruntime is not installed)"
        assert line.startswith(f"pcnn serve: backend {auto}, 8 classes; open "), line  # the default backend, named
        match = re.search(r"open (http://127\.0\.0\.1:(\d+))/", line)
        assert match and int(match.group(2)) != 0, (line, process.poll() is None or process.stderr.read())
        url = match.group(1)
        deadline = time.monotonic() + 60
        while True:  # the URL is printed once the model is loaded; uvicorn starts right after
            try:
                httpx.get(url + "/health", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "pcnn serve did not answer"
                time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        process.wait(30)


def test_serve_prints_the_port_it_bound(cli_server):
    url, _ = cli_server  # started with --port 0: the printed URL names the real port
    health = httpx.get(url + "/health", timeout=30).json()
    assert health["max_decodes"] == 1 and health["max_pixels"] == PIXEL_LIMIT
    assert health["read_timeout_s"] == READ_TIMEOUT


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the server's memory from /proc")
def test_concurrent_big_decodes_are_bounded_and_memory_is_returned(cli_server):
    url, process = cli_server
    data = flat_png(BIG)

    def post(i: int) -> int:
        with httpx.Client(base_url=url, timeout=120) as c:
            return upload(c, data, f"big{i}.png").status_code

    with ThreadPoolExecutor(8) as pool:  # warm-up: detector, allocator and 8 request threads in their steady state
        assert list(pool.map(post, range(-8, 0))) == [200] * 8
    time.sleep(0.3)
    base = rss_mib(process.pid)
    single = peak_rss_during(process.pid, lambda: post(0)) - base
    time.sleep(0.3)
    with ThreadPoolExecutor(8) as pool:
        statuses: list[int] = []
        peak = peak_rss_during(process.pid, lambda: statuses.extend(pool.map(post, range(8)))) - base
    assert statuses == [200] * 8
    time.sleep(0.5)
    after = rss_mib(process.pid) - base
    # one decode slot: eight uploads at once cost about what one costs (unbounded: ~4x at 16 MP, ~5x at 64 MP)
    assert single > 60 and peak < 2 * single, (single, peak)
    # in the steady state nine more big uploads leave nothing behind: no decoded image outlives its request
    assert after < 0.25 * single, (single, after)


def test_max_pixels_refuses_from_the_header_with_413(cli_server):
    url, process = cli_server
    with httpx.Client(base_url=url, timeout=60) as c:
        before = rss_mib(process.pid)
        response = upload(c, flat_png(5000), "huge.png")  # 25 MP > 20 MP
        assert rss_mib(process.pid) - before < 50  # refused without decoding (decoded: about 0.3 GB)
    assert response.status_code == 413
    assert response.json()["detail"] == ("cannot use 'huge.png': image too large: 5000x5000 = 25.0 MP exceeds the "
                                         "server's limit of 20.0 MP (pcnn serve --max-pixels)")


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_stalled_upload_gets_408_and_is_closed(cli_server, framing):
    url, _ = cli_server
    host, port = url.removeprefix("http://").split(":")
    head = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            b"Content-Type: image/png\r\n\r\n\x89PNG")
    if framing == "chunked":
        request = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(head):x}".encode() + b"\r\n" + head + b"\r\n")
    else:
        request = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                   b"Content-Length: 100000\r\n\r\n" + head)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(request)  # ... and then nothing more
        reply = b""
        while chunk := sock.recv(4096):  # until the server closes the connection
            reply += chunk
        elapsed = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"upload stalled: no data for 1 s (pcnn serve --read-timeout)" in reply
    assert READ_TIMEOUT <= elapsed < READ_TIMEOUT + 3  # closed by us, not by uvicorn's 5 s keep-alive timer


@pytest.mark.slow
def test_deploy_commands_refuse_bad_arguments_in_one_line(tmp_path, cli_server):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("a file, not a folder")
    (tmp_path / "dir.onnx").mkdir()
    busy = cli_server[0].rsplit(":", 1)[1]
    cases = [  # (arguments, the start of the one stderr line)
        (["serve", "--port", "99999"], "pcnn serve: error: --port must be between 0 and 65535 (0: any free port), "
                                       "got 99999"),
        (["serve", "--port", busy],
         f"pcnn serve: error: cannot listen on 127.0.0.1:{busy}: the port is already in use"),
        (["export", "--out", str(a_file / "m.onnx")],
         f"pcnn export: error: cannot write {a_file / 'm.onnx'}: {a_file} is not a folder"),
        (["export", "--out", str(tmp_path / "dir.onnx")],
         f"pcnn export: error: {tmp_path / 'dir.onnx'} is a folder: give the file to write, e.g. "
         f"{tmp_path / 'dir.onnx' / 'pcnn.onnx'}"),
    ]
    if Path("/sys").is_dir():
        cases.append((["export", "--out", "/sys/x.onnx"],
                      "pcnn export: error: cannot write /sys/x.onnx: no file can be created in /sys ("))
    processes = [subprocess.Popen(["pcnn", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for args, _ in cases]  # all at once: each pays the import time
    for (args, expected), process in zip(cases, processes):
        out, err = process.communicate(timeout=180)
        assert process.returncode == 1 and out == "", (args, out, err)  # no URL printed before failing
        assert len(err.strip().splitlines()) == 1 and err.startswith(expected), (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.onnx", "notes.txt"]  # nothing written


def test_serve_option_ranges(capsys):
    for args, message in ((["--max-pixels", "0"], "--max-pixels must be at least 1, got 0"),
                          (["--max-decodes", "0"], "--max-decodes must be at least 1, got 0"),
                          (["--read-timeout", "nan"], "--read-timeout must be a positive number, got nan"),
                          (["--workers", "0"], "--workers must be at least 1, got 0")):
        assert cli_main(["serve", *args]) == 1
        assert capsys.readouterr().err == f"pcnn serve: error: {message}\n"

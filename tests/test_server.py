"""``pcnn serve``: real HTTP requests against uvicorn on 127.0.0.1 (a free port, in a background thread)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
torch = pytest.importorskip("torch")

from pcnn_fer.cli import build_parser  # noqa: E402
from pcnn_fer.deploy.server import create_app, is_loopback, serve_in_background  # noqa: E402
from pcnn_fer.faces import Recognizer  # noqa: E402
from pcnn_fer.models.pcnn import REGIONS  # noqa: E402
from pcnn_fer.weights import ASSETS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PCNN_FER_SHARED", ROOT.parent / "shared"))
ASTRONAUT = ASSETS / "astronaut.png"
CAT = SHARED / "samples" / "chelsea.png"
LIMIT_MB = 1.0  # a small upload limit keeps the 413 tests cheap (the astronaut PNG is 0.75 MB)


@pytest.fixture(scope="module")
def server(checkpoint) -> str:
    """Base URL of a live server (torch backend, 2 workers, 1 MB limit)."""
    before = torch.get_num_threads()
    app = create_app(checkpoint=str(checkpoint), backend="torch", max_upload_mb=LIMIT_MB, workers=2, threads=1)
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
    assert set(face) == {"box", "landmarks", "label", "score", "probabilities", "regions", "detection_score"}
    assert set(face["regions"]) == set(REGIONS) and face["label"] in face["probabilities"]
    # exactly what pcnn predict / Recognizer gives for the same bytes
    expected = Recognizer(checkpoint).predict(data, source="astronaut.png").to_dict()
    assert record == expected
    assert float(response.headers["x-inference-ms"]) > 0


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
], ids=["garbage", "truncated", "empty", "pdf", "text", "octet-stream-garbage"])
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
    app = create_app(checkpoint=str(checkpoint), workers=3, threads=1)
    recognizers = list(app.state.service.recognizers.queue)
    assert len(recognizers) == 3 and len({id(r.backend) for r in recognizers}) == 1  # one shared, locked backend
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

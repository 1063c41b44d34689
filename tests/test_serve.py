"""``alexnet serve``: every endpoint and error code, the v2 protocol's shapes, parity with ``Predictor.predict``,
dynamic batching, the limits (413 before the body is read, 503 with Retry-After, 504), metrics, the CLI, SIGTERM."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import alexnet
from alexnet.checkpoint import save_payload
from alexnet.cli import main
from alexnet.model import create_model
from alexnet.serve.batching import Batcher
from alexnet.serve.config import ServeConfig

pytest.importorskip("fastapi", reason="alexnet serve needs pip install 'alexnet[serve]'")
httpx = pytest.importorskip("httpx", reason="FastAPI's test client needs httpx (pip install 'alexnet[dev]')")
from fastapi.testclient import TestClient  # noqa: E402 (after the skips)

from alexnet.serve.app import create_app  # noqa: E402

CLASSES = ["cat", "dog", "fox"]
# not the identity: images are resized (shorter side 73) and centre-cropped (64) before the network
PREPROCESS = {"resize": 73, "crop": 64, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
ROOT = Path(__file__).resolve().parents[1]


def png_header(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` pixels with no pixel data: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("alexnet", num_classes=3, init="kaiming")
    path = tmp_path_factory.mktemp("serve-model") / "tiny.pt"
    save_payload({"arch": "alexnet", "num_classes": 3, "model": model.state_dict(), "classes": CLASSES,
                     "preprocess": PREPROCESS, "config": {}}, path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def predictor(model_path):
    return alexnet.load(model_path, device="cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good images of several sizes (PNG and a JPEG) and bad files: text, empty, a bomb, a 40:1 strip."""
    root = tmp_path_factory.mktemp("serve-files")
    rng = np.random.default_rng(0)
    out = {}
    for name, (h, w) in {"a.png": (64, 64), "b.png": (80, 96), "c.png": (120, 70)}.items():
        out[name] = root / name
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(out[name])
    out["d.jpg"] = root / "d.jpg"
    Image.fromarray(rng.integers(0, 256, (90, 100, 3), dtype=np.uint8)).save(out["d.jpg"], quality=90)
    out["notes.txt"] = root / "notes.txt"
    out["notes.txt"].write_text("not an image")
    out["empty.png"] = root / "empty.png"
    out["empty.png"].write_bytes(b"")
    out["bomb.png"] = root / "bomb.png"
    out["bomb.png"].write_bytes(png_header(10_000, 10_000))  # 100 MP > the 64 MP limit
    out["strip.png"] = root / "strip.png"
    Image.fromarray(np.zeros((5, 200, 3), dtype=np.uint8)).save(out["strip.png"])  # 40:1 > the 20:1 limit
    return out


GOOD = ["a.png", "b.png", "c.png", "d.jpg"]


@pytest.fixture(scope="module")
def client(predictor, model_path):
    with TestClient(create_app(predictor, ServeConfig(decode_threads=2), model_path=str(model_path))) as c:
        yield c


def multipart(files: dict[str, Path], names: list[str]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("file", (n, files[n].read_bytes())) for n in names]


def as_pairs(result: dict) -> list[tuple[str, float]]:
    return [(t["class"], t["probability"]) for t in result["top"]]


class Gate:
    """A predictor whose forward pass waits while the gate is closed: requests stay in flight as long as a test needs.

    It starts open (the app's warm-up goes through); ``close()`` it once the app runs, ``open.set()`` to let go.
    """

    def __init__(self, predictor) -> None:
        self.inner, self.open, self.entered = predictor, threading.Event(), threading.Event()
        self.open.set()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def close(self) -> None:
        self.entered.clear()
        self.open.clear()

    def probabilities(self, crops):
        self.entered.set()
        assert self.open.wait(timeout=120), "the gate was never opened"
        return self.inner.probabilities(crops)


def wait_until(condition, what: str, limit_s: float = 60) -> None:
    """Poll ``condition`` (a guard against hanging on a regression, not a timing assertion)."""
    end = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def gauge(client, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    [value] = [s.value for f in text_string_to_metric_families(client.get("/metrics").text) for s in f.samples
               if s.name == name]  # fmt: skip
    return value


def same_alexnet() -> dict[str, str]:
    """The environment for a child process that imports the alexnet under test (not another installed copy)."""
    src = str(Path(alexnet.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}


@contextlib.contextmanager
def opened(gate: Gate):
    """Close the gate for the block; open it at the end whatever happens, so that the app can shut down."""
    gate.close()
    try:
        yield gate
    finally:
        gate.open.set()


@contextlib.contextmanager
def live_server(app):
    """``app`` under uvicorn on a free loopback port, in a thread; yields the base URL."""
    import uvicorn

    from alexnet.serve.app import server_config

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(server_config(app, app.state.service.config, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "the server to start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


# ----------------------------------------------------------------------------------------------------------------
# POST /predict


def test_predict_is_bit_identical_to_the_predictor(client, predictor, files):
    expected = predictor.predict([files[n] for n in GOOD], topk=3)
    r = client.post("/predict?topk=3", files=multipart(files, GOOD))
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "tiny"
    assert [x["name"] for x in body["results"]] == GOOD
    assert [as_pairs(x) for x in body["results"]] == expected  # exact floats, same order
    for n in GOOD:  # the raw body: one image, whatever the content type says
        r = client.post("/predict", content=files[n].read_bytes(), headers={"content-type": "image/png"})
        assert r.status_code == 200
        assert as_pairs(r.json()["results"][0]) == predictor.predict(files[n])[0]  # no topk: all 3 of 3 classes


def test_predict_answers_every_image_and_refuses_the_bad_ones_each(client, predictor, files):
    names = ["a.png", "notes.txt", "bomb.png", "strip.png", "empty.png", "d.jpg"]
    r = client.post("/predict", files=multipart(files, names))
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x.get("status") for x in results] == [None, 415, 422, 422, 415, None]
    assert "notes.txt: not an image" in results[1]["error"] and " at 0x" not in results[1]["error"]  # no heap address
    assert "10000x10000" in results[2]["error"] and "ALEXNET_MAX_IMAGE_PIXELS" in results[2]["error"]
    assert "aspect ratio" in results[3]["error"]
    assert "empty file" in results[4]["error"]
    good = predictor.predict([files["a.png"], files["d.jpg"]])
    assert [as_pairs(results[0]), as_pairs(results[5])] == good
    # nothing answered: the request takes the first refusal's status
    for name, status in [("notes.txt", 415), ("bomb.png", 422), ("strip.png", 422)]:
        r = client.post("/predict", files=multipart(files, [name]))
        assert r.status_code == status
        assert r.json()["error"].startswith(f"{name}: ")


def test_a_hostile_dicom_is_its_own_415_and_the_others_are_answered(client, predictor, files, tmp_path):
    pytest.importorskip("pydicom")
    from .test_medical import bad_syntax

    bad = ("file", ("ts.dcm", bad_syntax(tmp_path / "ts.dcm").read_bytes()))
    r = client.post("/predict", files=[*multipart(files, ["a.png"]), bad])
    assert r.status_code == 200
    results = r.json()["results"]
    assert as_pairs(results[0]) == predictor.predict(files["a.png"])[0]
    assert results[1]["status"] == 415 and "ts.dcm: unknown transfer syntax UID" in results[1]["error"]


def test_predict_request_errors_are_json(client, files):
    png = files["a.png"].read_bytes()
    fields_only = b'--x\r\nContent-Disposition: form-data; name="topk"\r\n\r\n3\r\n--x--\r\n'  # no file part
    truncated = b'--x\r\nContent-Disposition: form-data; name="f"; filename="a.png"\r\n\r\n' + png  # no end
    cases = [
        (client.post("/predict", content=b""), 400, "no image in the request"),
        (client.post("/predict", content=fields_only, headers={"content-type": "multipart/form-data; boundary=x"}), 400,
         "no image"),
        (client.post("/predict", content=b"--x\r\n", headers={"content-type": "multipart/form-data"}), 400, "boundary"),
        (client.post("/predict", content=truncated, headers={"content-type": "multipart/form-data; boundary=x"}), 400,
         "malformed multipart"),
        (client.post("/predict?topk=0", content=png), 400, "topk='0'"),
        (client.post("/predict?topk=abc", content=png), 400, "topk='abc'"),
        (client.get("/predict"), 405, "method not allowed"),
        (client.get("/no/such/thing"), 404, "no such endpoint"),
        (client.get("/v2/models/other"), 404, "no model named 'other'"),
    ]  # fmt: skip
    for r, status, words in cases:
        assert r.status_code == status, r.text
        assert set(r.json()) == {"error"} and words in r.json()["error"], r.text
    r = client.post("/predict", content=png)  # the top 5 by default: every class of a model of fewer
    assert sorted(t["class"] for t in r.json()["results"][0]["top"]) == sorted(CLASSES)


def test_query_parameters_are_never_ignored(client, explain_client, files):
    """A misspelt, unknown or repeated query parameter is a 400 naming it (it was ignored: the whole top, Grad-CAM for
    ?method=occlusion), as is a topk over the model's classes (it was capped); the page asks for no topk."""
    png = files["a.png"].read_bytes()
    cases = [
        (client.post("/predict?top_k=1", content=png), "unknown query parameter 'top_k': /predict takes topk"),
        (client.post("/predict?topk=1&topk=2", content=png), "'topk' given more than once"),
        (client.post("/predict?topk=4", content=png), "topk=4: this model has 3 classes; ask for 1 to 3"),
        (explain_client.post("/explain?method=occlusion", content=png), "'method': /explain takes target"),
        (explain_client.post("/explain?target=cat&layer=conv9", content=png), "'layer': /explain takes target"),
        (client.post("/v2/models/tiny/infer?topk=1", content=b"{}"), "/v2/models/{name}/infer takes no query"),
    ]
    for r, words in cases:
        assert r.status_code == 400 and words in r.json()["error"], r.text
    assert len(client.post("/predict?topk=3", content=png).json()["results"][0]["top"]) == 3


def test_get_routes_refuse_query_parameters_and_v2_counts_classes_as_topk(client):
    """Found by a new-user trial: ``/info?x=1`` and the other GET routes answered 200 while the POST routes answer
    400; v2's ``"classification": 4`` on a 3-class model answered 3 entries while ``?topk=4`` is a 400."""
    for path in ("/", "/info", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/tiny"):
        r = client.get(path + "?x=1")
        assert r.status_code == 400 and r.json()["error"].startswith("unknown query parameter 'x': /"), (path, r.text)
        assert r.json()["error"].endswith(" takes no query parameters"), r.text
        assert client.head(path + "?x=1").status_code == 400 and client.head(path).status_code == 200, path
    assert client.get("/v2/models/tiny/versions/1/ready?v=2").status_code == 400
    assert client.get("/").status_code == 200 and client.get("/v2/models/tiny/versions/1/ready").status_code == 200
    image = {"name": "image", "datatype": "UINT8", "shape": [2, 2, 3], "data": [0] * 12}
    cases = [
        (4, "classification 4: this model has 3 classes; ask for 1 to 3 (without it: the 3 probabilities as FP32)"),
        (0, "classification 0: must be a whole number of classes, from 1 to 3"),
        ("2", "classification '2': must be a whole number of classes, from 1 to 3"),
    ]
    for k, words in cases:
        body = {"inputs": [image], "outputs": [{"name": "probabilities", "parameters": {"classification": k}}]}
        r = client.post("/v2/models/tiny/infer", json=body)
        assert (r.status_code, r.json()["error"]) == (400, words), r.text
    body["outputs"][0]["parameters"]["classification"] = 3
    assert client.post("/v2/models/tiny/infer", json=body).json()["outputs"][0]["shape"] == [1, 3]


def test_uploads_over_the_cap_get_413(predictor):
    cap = 20_000  # bytes
    config = ServeConfig(max_upload_mb=cap / (1 << 20), queue=2, decode_threads=1)
    with TestClient(create_app(predictor, config)) as c:
        r = c.post("/predict", content=b"x" * (cap + 1))  # Content-Length says so
        assert r.status_code == 413 and "20,000-byte limit" in r.json()["error"]
        r = c.post("/predict", content=iter([b"x" * 8192] * 3))  # chunked, no Content-Length: counted as it streams
        assert r.status_code == 413 and r.json()["error"].startswith("the body is over the 20,000-byte limit")
        assert c.post("/predict", content=b"x" * cap).status_code == 415  # at the cap: read, then refused
        r = c.post("/predict", files=[("file", ("x.png", b"x"))] * 3)  # 3 images > --queue 2
        assert r.status_code == 413 and "more than 2 images" in r.json()["error"]


def test_413_comes_before_the_body_is_read(predictor):
    """On a real socket: the answer arrives while the client still holds back (most of) the body."""
    cap = 50_000
    with live_server(create_app(predictor, ServeConfig(max_upload_mb=cap / (1 << 20), decode_threads=1))) as url:
        port = int(url.rsplit(":", 1)[1])
        declared = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n"
        chunked = b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunked += b"%x\r\n%s\r\n" % (cap + 1, b"x" * (cap + 1))  # one byte over, and no end of the body
        for request in (declared, chunked):
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                s.sendall(request)
                answer = b""
                while b"}" not in answer:
                    data = s.recv(65536)  # a server waiting for the rest of the body would time out here
                    assert data, answer
                    answer += data
            assert answer.startswith(b"HTTP/1.1 413 "), answer
            assert b"-byte limit (--max-upload-mb)" in answer


def test_a_full_queue_answers_503_with_retry_after(predictor, files):
    gate = Gate(predictor)
    with TestClient(create_app(gate, ServeConfig(queue=2, max_wait_ms=0, decode_threads=1))) as c, opened(gate):
        service = c.app.state.service
        png = files["a.png"].read_bytes()
        answers: queue.Queue = queue.Queue()
        threads = [threading.Thread(target=lambda: answers.put(c.post("/predict", content=png))) for _ in range(2)]
        for t in threads:
            t.start()
        wait_until(lambda: service.batcher.admitted == 2, "two requests in flight")
        r = c.post("/predict", content=png)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "--queue" in r.json()["error"]
        gate.open.set()
        for t in threads:
            t.join()
        assert [answers.get().status_code for _ in threads] == [200, 200]
        assert service.batcher.admitted == 0  # released
        assert c.post("/predict", content=png).status_code == 200


def test_no_answer_within_the_timeout_is_504(predictor, files):
    gate = Gate(predictor)
    with TestClient(create_app(gate, ServeConfig(timeout_s=0.5, decode_threads=1))) as c, opened(gate):
        r = c.post("/predict", content=files["a.png"].read_bytes())
        assert r.status_code == 504 and r.json() == {"error": "answering took over 0.5 s (--timeout-s)"}
        assert c.app.state.service.batcher.admitted == 0


def test_a_server_error_is_json_without_a_traceback(predictor, files):
    app = create_app(Gate(predictor), ServeConfig(decode_threads=1))
    with TestClient(app, raise_server_exceptions=False) as c:
        c.app.state.service.predictor.probabilities = lambda crops: 1 / 0  # after the warm-up
        r = c.post("/predict", content=files["a.png"].read_bytes())
        assert r.status_code == 500
        assert r.json() == {"error": "internal server error (the server's log has the details)"}
        assert "ZeroDivisionError" not in r.text and "Traceback" not in r.text


# ----------------------------------------------------------------------------------------------------------------
# dynamic batching


def test_batcher_groups_what_waits_and_keeps_each_request_together():
    sizes, gate = [], threading.Event()

    def forward(crops):  # row i -> its first pixel, so each future can be checked against its own crops
        gate.wait()
        sizes.append(len(crops))
        return crops[:, 0, 0, :1].float()

    def crops(*values):
        return torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 2, 2)

    b = Batcher(forward, max_batch=4, max_wait_s=0.01, capacity=100)
    b.start()
    first = b.submit(crops(1))  # taken at once; its forward pass waits at the gate
    wait_until(lambda: b.waiting == 0, "the first batch to start")
    later = [b.submit(crops(2, 3)), b.submit(crops(4)), b.submit(crops(5, 6)), b.submit(crops(*range(7, 17)))]
    cancelled = b.submit(crops(99))
    cancelled[0].cancel()  # a request that timed out: skipped
    assert b.waiting == 2 + 1 + 2 + 10 + 1
    gate.set()
    results = [f.result(timeout=60).flatten().tolist() for fs in [first, *later] for f in fs]
    b.close()
    # batches: [1], then 2+1 (the next request's 2 would straddle: it starts the next batch), 2, then 10 in 4+4+2
    assert sizes == [1, 3, 2, 4, 4, 2]
    assert results == [[1], [2, 3], [4], [5, 6], [7, 8, 9, 10], [11, 12, 13, 14], [15, 16]]


def test_batcher_admission_and_errors():
    b = Batcher(lambda x: 1 / 0, max_batch=8, max_wait_s=0, capacity=3)
    assert b.reserve(2) and not b.reserve(2) and b.admitted == 2
    b.release(2)
    assert b.reserve(3) and b.admitted == 3
    b.start()
    with pytest.raises(ZeroDivisionError):
        b.submit(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))[0].result(timeout=60)
    b.forward = lambda x: x.float().mean((1, 2, 3))[:, None]  # the thread survived the error
    assert b.submit(torch.ones(2, 3, 2, 2, dtype=torch.uint8))[0].result(timeout=60).tolist() == [[1.0], [1.0]]
    b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.submit(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))


def test_concurrent_requests_share_one_forward_pass(predictor, files):
    gate = Gate(predictor)
    with TestClient(create_app(gate, ServeConfig(max_wait_ms=0, decode_threads=2))) as c, opened(gate):
        service = c.app.state.service
        answers: dict[str, object] = {}
        png = files["a.png"].read_bytes()
        first = threading.Thread(target=lambda: answers.update(first=c.post("/predict", content=png)))
        first.start()
        wait_until(gate.entered.is_set, "the first forward pass")  # it waits at the gate

        def post(name: str) -> None:
            answers[name] = c.post("/predict", files=multipart(files, [name]))

        threads = [threading.Thread(target=post, args=(n,)) for n in GOOD]
        for t in threads:
            t.start()
        wait_until(lambda: service.batcher.waiting == len(GOOD), "four requests waiting")
        gate.open.set()
        for t in [first, *threads]:
            t.join()
        metrics = c.get("/metrics").text
    assert 'alexnet_batch_size_images_bucket{le="2.0"} 1.0' in metrics  # the first, alone
    assert 'alexnet_batch_size_images_bucket{le="4.0"} 2.0' in metrics  # the four others, together
    assert "alexnet_batch_size_images_count 2.0" in metrics
    for n in GOOD:  # the same classes; probabilities within float rounding of a batch of one (see batching)
        got, alone = as_pairs(answers[n].json()["results"][0]), predictor.predict(files[n])[0]
        assert [c for c, _ in got] == [c for c, _ in alone]
        assert [p for _, p in got] == pytest.approx([p for _, p in alone], abs=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# the Open Inference Protocol v2


def test_v2_health_and_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["extensions"] == ["classification"]
    assert client.get("/v2/models/tiny/ready").json() == {"name": "tiny", "ready": True}
    assert client.get("/v2/models/tiny").json() == {
        "name": "tiny",
        "versions": ["1"],
        "platform": "pytorch",
        "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
    }
    # the version the metadata advertises has its own paths (KServe v2); no other version has
    assert client.get("/v2/models/tiny/versions/1").json() == client.get("/v2/models/tiny").json()
    assert client.get("/v2/models/tiny/versions/1/ready").json() == {"name": "tiny", "ready": True}
    one_pixel = {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 1, 3], "data": [0, 0, 0]}]}
    r = client.post("/v2/models/tiny/versions/1/infer", json=one_pixel)
    assert r.status_code == 200 and r.json()["model_version"] == "1"
    assert r.json()["outputs"] == client.post("/v2/models/tiny/infer", json=one_pixel).json()["outputs"]
    for r in (client.get("/v2/models/tiny/versions/2"), client.post("/v2/models/tiny/versions/2/infer", json=one_pixel),
              client.get("/v2/models/tiny/versions/2/ready")):  # fmt: skip
        assert r.status_code == 404 and r.json() == {"error": "model 'tiny' has no version '2'; its one version is '1'"}


def test_v2_infer_uint8_tensors_and_bytes(client, predictor, files):
    rng = np.random.default_rng(1)
    hwc = rng.integers(0, 256, (2, 70, 90, 3), dtype=np.uint8)
    tensor = {"name": "image", "shape": [2, 70, 90, 3], "datatype": "UINT8", "data": hwc.flatten().tolist()}
    r = client.post("/v2/models/tiny/infer", json={"id": "req-1", "inputs": [tensor]})
    assert r.status_code == 200
    body = r.json()
    assert body["model_name"] == "tiny" and body["model_version"] == "1" and body["id"] == "req-1"
    [out] = body["outputs"]
    assert out["name"] == "probabilities" and out["datatype"] == "FP32" and out["shape"] == [2, 3]
    crops = torch.stack([predictor.transform(torch.from_numpy(a).permute(2, 0, 1).contiguous()) for a in hwc])
    assert out["data"] == predictor.probabilities(crops).flatten().tolist()  # exact
    # one [H, W, 3] image is a batch of one
    single = {**tensor, "shape": [70, 90, 3], "data": hwc[0].flatten().tolist()}
    r = client.post("/v2/models/tiny/infer", json={"inputs": [single]})
    assert r.json()["outputs"][0]["shape"] == [1, 3] and "id" not in r.json()
    # a gray [B, H, W, 1] tensor (it was a 400): as the same image in three equal channels
    gray = {**tensor, "shape": [1, 70, 90, 1], "data": hwc[0, ..., 0].flatten().tolist()}
    r = client.post("/v2/models/tiny/infer", json={"inputs": [gray]})
    as_rgb = torch.from_numpy(hwc[0, ..., 0]).expand(3, 70, 90).contiguous()
    assert (
        r.json()["outputs"][0]["data"] == predictor.probabilities(predictor.transform(as_rgb)[None]).flatten().tolist()
    )
    # BYTES: base64 image files, as decoded from disk by alexnet predict
    encoded = [base64.b64encode(files[n].read_bytes()).decode() for n in GOOD]
    request = {"inputs": [{"name": "image", "shape": [4], "datatype": "BYTES", "data": encoded}]}
    out = client.post("/v2/models/tiny/infer", json=request).json()["outputs"][0]
    expected = predictor.predict([files[n] for n in GOOD], topk=3)
    for i, top in enumerate(expected):
        assert {c: p for c, p in top} == dict(zip(CLASSES, out["data"][3 * i : 3 * i + 3]))
    # Triton's classification extension: "probability:index:label", most likely first
    request["outputs"] = [{"name": "probabilities", "parameters": {"classification": 2}}]
    out = client.post("/v2/models/tiny/infer", json=request).json()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [4, 2]
    assert out["data"][:2] == [f"{p}:{CLASSES.index(c)}:{c}" for c, p in expected[0][:2]]


def test_v2_infer_errors(client, files):
    def infer(body, raw=None):
        r = (
            client.post("/v2/models/tiny/infer", json=body)
            if raw is None
            else client.post("/v2/models/tiny/infer", content=raw)
        )
        return r.status_code, r.json()["error"]

    def image(datatype="UINT8", shape=(2, 2, 3), data=None):
        data = [0] * int(np.prod(shape)) if data is None else data
        return {"inputs": [{"name": "image", "datatype": datatype, "shape": list(shape), "data": data}]}

    b64 = lambda name: base64.b64encode(files[name].read_bytes()).decode()  # noqa: E731
    cases = [
        (infer(None, raw=b"{not json"), 400, "not JSON"),
        (infer({"inputs": []}), 400, "one tensor"),
        (infer(image(datatype="FP32")), 400, "datatype 'FP32'"),
        (infer(image(shape=(2, 2, 4))), 400, "channels last"),
        (infer(image(data=[0] * 5)), 400, "has 5 values"),
        (infer(image(data=[256] * 12)), 400, "0 to 255"),
        (infer(image(data=[0.5] * 12)), 400, "0 to 255"),
        (infer(image(data=[True] + [2] * 11)), 400, "not true or false"),  # numpy's array took true for 1
        (infer(image(shape=(2, 100, 3), data=[0] * 600)), 422, "refused a 100x2 image tensor"),
        (infer(image("BYTES", (1,), ["***"])), 400, "not a base64 string"),
        (infer(image("BYTES", (1,), [b64("notes.txt")])), 415, "image 0: not an image"),
        (infer(image("BYTES", (1,), [b64("bomb.png")])), 422, "image 0: refused to decode"),
        (infer({**image(), "outputs": [{"name": "logits"}]}), 400, "one output, 'probabilities'"),
    ]  # fmt: skip
    for (status, message), expected_status, words in cases:
        assert (status, words in message) == (expected_status, True), message
    # Triton's binary tensor data extension: a JSON header, then the raw tensor (it was "not JSON ('utf-8' codec...")
    header = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 1, 3],
                                     "parameters": {"binary_data_size": 3}}]}).encode()  # fmt: skip
    for headers in ({"Inference-Header-Content-Length": str(len(header))}, {}):
        r = client.post(
            "/v2/models/tiny/infer", content=header + b"\xff\xff\xff"[: 3 if headers else 0], headers=headers
        )
        assert r.status_code == 400 and "binary tensor data extension is not supported" in r.json()["error"], r.text


# ----------------------------------------------------------------------------------------------------------------
# page, info, metrics, CORS


def test_page_is_self_contained_and_info_describes_the_model(client, predictor):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]  # nothing from anywhere else
    assert "http://" not in r.text and "https://" not in r.text and "//cdn" not in r.text
    info = client.get("/info").json()
    assert info["name"] == "tiny" and info["file"] == "tiny.pt" and info["arch"] == "alexnet"
    assert info["classes"] == CLASSES and info["backend"] == "torch"
    assert info["preprocess"] == predictor.preprocess.to_dict()
    assert info["limits"]["max_upload_bytes"] == 10 << 20 and info["limits"]["queue"] == 256
    assert info["limits"]["max_queued_bytes"] == 256 << 20


def test_every_get_route_answers_head(client):
    paths = [r.path for r in client.app.routes if "GET" in getattr(r, "methods", ())]
    assert "/" in paths and "/v2/models/{name}/versions/{version}" in paths
    for path in paths:
        path = path.format(name="tiny", version="1")
        head, get = client.head(path), client.get(path)
        assert (head.status_code, head.content) == (200, b"") and get.status_code == 200, path
        assert head.headers["content-type"] == get.headers["content-type"], path
    assert client.head("/predict").status_code == 405  # a POST route


def test_metrics_count_requests_by_status_and_batches(predictor, files):
    from prometheus_client.parser import text_string_to_metric_families

    with TestClient(create_app(predictor, ServeConfig(decode_threads=1))) as c:
        c.post("/predict", files=multipart(files, ["a.png", "b.png"]))
        c.post("/predict", files=multipart(files, ["notes.txt"]))
        c.get("/nowhere")
        c.get("/openapi.json")
        families = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
    requests = {(s.labels["endpoint"], s.labels["status"]): s.value
                for s in families["alexnet_http_requests"].samples if s.name.endswith("_total")}  # fmt: skip
    assert requests == {("/predict", "200"): 1, ("/predict", "415"): 1, ("unmatched", "404"): 1,
                        ("/openapi.json", "200"): 1}  # fmt: skip
    samples = {s.name: s.value for f in families.values() for s in f.samples if not s.labels or "le" not in s.labels}
    assert samples["alexnet_batch_size_images_count"] == 1 and samples["alexnet_batch_size_images_sum"] == 2
    assert samples["alexnet_queue_depth_images"] == 0 and samples["alexnet_images_in_flight"] == 0
    latency = [s for s in families["alexnet_http_request_duration_seconds"].samples if s.name.endswith("_count")]
    assert {s.labels["endpoint"]: s.value for s in latency}["/predict"] == 2
    images = {s.labels["outcome"]: s.value for s in families["alexnet_images"].samples if s.name.endswith("_total")}
    assert images == {"ok": 2, "415": 1}


def test_cors_headers_only_for_the_origins_allowed(predictor):
    origin = {"origin": "http://localhost:3000"}
    with TestClient(create_app(predictor, ServeConfig(decode_threads=1))) as c:
        assert "access-control-allow-origin" not in c.get("/info", headers=origin).headers
    with TestClient(create_app(predictor, ServeConfig(cors=("http://localhost:3000",), decode_threads=1))) as c:
        assert c.get("/info", headers=origin).headers["access-control-allow-origin"] == "http://localhost:3000"
        assert "access-control-allow-origin" not in c.get("/info", headers={"origin": "http://evil.test"}).headers


# ----------------------------------------------------------------------------------------------------------------
# ONNX backend


def tiny_onnx(path: Path) -> Path:
    """A hand-built ONNX classifier (mean colour -> 3 logits) with the metadata ``alexnet export`` writes."""
    onnx = pytest.importorskip("onnx", reason="ONNX models need pip install 'alexnet[onnx]'")
    pytest.importorskip("onnxruntime", reason="ONNX models need pip install 'alexnet[onnx]'")
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),  # (B, 3, 1, 1)
            helper.make_node("Flatten", ["pooled"], ["flat"]),  # (B, 3)
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),  # (B, 3)
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"classes": json.dumps(CLASSES), "preprocess": json.dumps(PREPROCESS), "arch": "t"})
    onnx.save(model, path)
    return path


def test_onnx_models_run_on_onnxruntime(tmp_path, files):
    path = tiny_onnx(tmp_path / "tiny.onnx")
    onnx_predictor = alexnet.load(path)
    with TestClient(create_app(onnx_predictor, ServeConfig(decode_threads=1), model_path=str(path))) as c:
        assert c.get("/v2/models/tiny").json()["platform"] == "onnxruntime_onnx"
        assert c.get("/info").json()["backend"] == "onnxruntime"
        r = c.post("/predict?topk=3", files=multipart(files, GOOD))
    assert [as_pairs(x) for x in r.json()["results"]] == onnx_predictor.predict([files[n] for n in GOOD], topk=3)


# ----------------------------------------------------------------------------------------------------------------
# the command line


def test_cli_refuses_bad_flags_in_one_line(model_path, tmp_path, capsys, monkeypatch):
    import alexnet.serve.app

    def serve(*args, **kwargs):  # a flag that slipped through must fail here, not listen on port 8000 for ever
        raise AssertionError("alexnet serve started serving")

    monkeypatch.setattr(alexnet.serve.app, "serve", serve)
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"")
    busy = socket.socket()  # a port another program listens on
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = str(busy.getsockname()[1])
    cases = [
        (
            ["serve", str(model_path), "--port", port],
            f"--host 127.0.0.1 --port {port}: cannot listen there (Address already in use)",
        ),
        (["serve", str(model_path), "--host", "999.1.1.1"], "--host 999.1.1.1: not an address or name this machine"),
        (["serve", str(model_path), "--max-batch", "0"], "--max-batch 0: must be an integer in [1, 4096]"),
        (["serve", str(model_path), "--cors", "evil.test/x"], "--cors 'evil.test/x': an origin is scheme://host"),
        (["serve", str(model_path), "--backend", "onnxruntime"], "alexnet export"),
        (["serve", str(onnx_file), "--backend", "torch"], "runs with --backend onnxruntime"),
        (["serve", str(tmp_path / "missing.pt")], "no such model file"),
        (["serve", str(onnx_file), "--explain"], "--explain needs gradients, which an .onnx export does not have"),
        (["serve", str(model_path), "--max-queued-mb", "5"], "--max-queued-mb 5: must be at least --max-upload-mb"),
    ]
    for argv, words in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("alexnet serve: error: ") and words in err and err.count("\n") == 1, err
    busy.close()


def test_cli_without_the_serve_extra_names_it(model_path, monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "alexnet.serve.app", raising=False)
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if FastAPI were not installed
    assert main(["serve", str(model_path)]) == 2
    assert (
        capsys.readouterr().err == "alexnet serve: error: alexnet serve needs fastapi: pip install 'alexnet[serve]'\n"
    )


def test_sigterm_finishes_the_requests_in_flight(model_path, files):
    """The real command: a request whose body is still arriving when SIGTERM comes is answered, then it exits."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "alexnet", "serve", str(model_path), "--port", str(port), "--decode-threads", "1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=same_alexnet())
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)
    reader.start()
    log = []

    def wait_for(words: str) -> None:
        while True:
            try:
                line = lines.get(timeout=120)
            except queue.Empty:
                raise AssertionError(f"no {words!r} from the server; it said:\n{''.join(log)}") from None
            log.append(line)
            if words in line:
                return

    try:
        wait_for("Uvicorn running on")
        png = files["b.png"].read_bytes()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(b"POST /predict?topk=3 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(png) + png[:100])
            metrics = f"http://127.0.0.1:{port}/metrics"
            held = "alexnet_request_body_bytes_held 100.0"  # the first 100 bytes arrived: the request is in flight
            wait_until(lambda: held in httpx.get(metrics).text, "the request to be admitted")
            proc.send_signal(signal.SIGTERM)
            wait_for("Waiting for connections to close")  # uvicorn stopped accepting; our request is in flight
            s.sendall(png[100:])
            answer = b""
            while not answer.endswith(b"}"):
                data = s.recv(65536)
                assert data, answer
                answer += data
        rc = proc.wait(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer
    expected = alexnet.load(model_path, device="cpu").predict(files["b.png"], topk=3)[0]
    assert as_pairs(json.loads(body)["results"][0]) == expected
    reader.join(60)
    log += list(lines.queue)
    assert rc in (0, -signal.SIGTERM), "".join(log)  # uvicorn re-raises the signal once it has drained
    assert "Traceback" not in "".join(log)


def test_load_benchmark_smoke(model_path, tmp_path):
    """benchmarks/serve_load.py: 2 clients for a second against one server it starts; a table and JSON come out."""
    out = tmp_path / "load.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--model", str(model_path), "--clients", "2",
           "--seconds", "1", "--warmup-s", "0", "--images", "2", "--runs", "batched", "--json", str(out)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=same_alexnet())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "img/s" in result.stdout and "p99" in result.stdout
    [run] = json.loads(out.read_text())["runs"]
    assert run["name"] == "batched" and run["errors"] == 0 and run["good"] > 0 and run["peak_rss_mb"] > 0


# ----------------------------------------------------------------------------------------------------------------
# POST /explain: Grad-CAM


@pytest.fixture(scope="module")
def explain_client(predictor, model_path):
    config = ServeConfig(explain=True, explain_max_images=4, decode_threads=1)
    with TestClient(create_app(predictor, config, model_path=str(model_path))) as c:
        yield c


def png_pixels(data_url: str) -> np.ndarray:
    head, _, data = data_url.partition(",")
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def expected_overlay(explanation) -> np.ndarray:
    """The overlay as ``alexnet explain`` colours it (``alexnet.plotting.overlay``), in 8 bits."""
    from alexnet.plotting import overlay

    return (overlay(explanation.crop, explanation.map) * 255).round().astype(np.uint8)


def test_explain_overlays_are_grad_cam_of_each_image(explain_client, predictor, files):
    r = explain_client.post("/explain", files=multipart(files, GOOD))
    assert r.status_code == 200, r.text
    body = r.json()
    # the default layer for 64-px crops: conv2, the deepest with >= 7x7 maps (conv5 is 3x3 there)
    assert body["method"] == "gradcam" and body["layer"] == "conv2" and [x["name"] for x in body["results"]] == GOOD
    # alexnet.explain directly, on the same batch (CPU kernels round differently at other batch sizes)
    expected = predictor.explain([files[n] for n in GOOD], method="gradcam", layer="conv2")
    overlays = []
    for got, want in zip(body["results"], expected):
        assert (got["predicted"], got["probability"]) == (want.predicted, want.probability)
        assert (got["target"], got["target_probability"]) == (want.target, want.target_probability)
        assert float(want.map.max()) > float(want.map.min())  # a map with a peak: the comparison can fail
        y, x = divmod(int(want.map.argmax()), want.map.shape[-1])
        assert got["peak"] == {"x": x, "y": y}
        pixels = png_pixels(got["overlay"])
        assert pixels.shape == (64, 64, 3)
        np.testing.assert_array_equal(pixels, expected_overlay(want))
        overlays.append(pixels)
    assert not np.array_equal(overlays[0], overlays[1])  # each image its own map
    # another class: the map for "dog", whatever the prediction
    r = explain_client.post("/explain?target=dog", content=files["b.png"].read_bytes())
    [got] = r.json()["results"]
    want = predictor.explain(files["b.png"], target="dog")[0]
    assert got["target"] == "dog" and got["target_probability"] == want.target_probability
    np.testing.assert_array_equal(png_pixels(got["overlay"]), expected_overlay(want))


def test_explain_refuses_bad_images_each_and_bad_requests(explain_client, files):
    r = explain_client.post("/explain", files=multipart(files, ["a.png", "notes.txt", "bomb.png"]))
    assert r.status_code == 200
    results = r.json()["results"]
    assert "overlay" in results[0] and [x.get("status") for x in results] == [None, 415, 422]
    assert results[1]["error"].startswith("notes.txt: not an image") and " at 0x" not in results[1]["error"]
    cases = [
        (explain_client.post("/explain", files=multipart(files, ["strip.png"])), 422, "strip.png: refused"),
        (explain_client.post("/explain?target=zebra", content=b"x"), 400, "target 'zebra'"),
        (explain_client.post("/explain", files=multipart(files, ["a.png"] * 5)), 413,
         "more than 4 images in one request (--explain-max-images)"),
    ]  # fmt: skip
    for r, status, words in cases:
        assert r.status_code == status and words in r.json()["error"], r.text


def test_explain_is_off_unless_asked_for_and_never_for_onnx(client, tmp_path, files, predictor, monkeypatch):
    r = client.post("/explain", content=files["a.png"].read_bytes())
    assert r.status_code == 404 and r.json() == {"error": "Grad-CAM is off on this server: start alexnet serve with "
                                                          "--explain"}  # fmt: skip
    assert client.get("/info").json()["explain"]["enabled"] is False
    path = tiny_onnx(tmp_path / "tiny.onnx")
    config = ServeConfig(explain=True, decode_threads=1)
    with TestClient(create_app(alexnet.load(path), config, model_path=str(path))) as c:
        r = c.post("/explain", content=files["a.png"].read_bytes())
        assert r.status_code == 501 and "tiny.onnx: Grad-CAM needs gradients" in r.json()["error"]
        info = c.get("/info").json()["explain"]
        assert info["enabled"] is False and "gradients" in info["reason"]  # the page hides the overlay
    for module, extra in [("matplotlib", "alexnet[plots]"), ("alexnet.explain", "alexnet[explain]")]:
        with monkeypatch.context() as m:
            m.setitem(sys.modules, module, None)  # as if it could not be imported
            with TestClient(create_app(predictor, config)) as c:
                r = c.post("/explain", content=files["a.png"].read_bytes())
                assert r.status_code == 501 and f"pip install '{extra}'" in r.json()["error"], r.text


def test_explain_is_bounded_one_request_at_a_time(predictor, files):
    config = ServeConfig(explain=True, explain_max_images=2, decode_threads=1)
    with TestClient(create_app(predictor, config)) as c:
        service = c.app.state.service
        png = files["a.png"].read_bytes()
        answers: queue.Queue = queue.Queue()
        with service._model_lock:  # the explain thread waits for the model, holding its two images
            thread = threading.Thread(
                target=lambda: answers.put(c.post("/explain", files=multipart(files, ["a.png", "b.png"])))
            )
            thread.start()
            wait_until(lambda: service.explaining.held == 2 and service.batcher.admitted == 2, "two images admitted")
            r = c.post("/explain", content=png)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "--explain-max-images" in r.json()["error"]
            assert gauge(c, "alexnet_explain_images_in_flight") == 2
            thread.join(timeout=1)
            assert thread.is_alive() and answers.empty()  # Grad-CAM waits for the model (no forward pass between)
        thread.join()
        assert answers.get().status_code == 200
        wait_until(lambda: service.explaining.held == 0, "the explain budget released")
        assert c.post("/explain", content=png).status_code == 200


def test_explain_answers_504_in_time_and_keeps_its_budget_until_the_work_ends(predictor, files):
    config = ServeConfig(explain=True, explain_max_images=1, timeout_s=2, decode_threads=1)
    with TestClient(create_app(predictor, config)) as c:
        service = c.app.state.service
        png = files["a.png"].read_bytes()
        with service._model_lock:  # the Grad-CAM cannot start
            r = c.post("/explain", content=png)
            assert r.status_code == 504 and r.json() == {"error": "explaining took over 2 s (--timeout-s)"}
            assert service.batcher.admitted == 0 and service.bodies.held == 0  # the request is over...
            assert service.explaining.held == 1  # ...its Grad-CAM is not: the thread still has it to do
            assert c.post("/explain", content=png).status_code == 503
        wait_until(lambda: service.explaining.held == 0, "the abandoned Grad-CAM to finish")
        assert c.post("/explain", content=png).status_code == 200


# ----------------------------------------------------------------------------------------------------------------
# the byte budget on request bodies


def test_request_bodies_over_the_byte_budget_get_503(predictor, files):
    png = files["a.png"].read_bytes()
    budget = 2 * len(png) + 100  # two bodies fit, not three
    gate = Gate(predictor)
    config = ServeConfig(max_upload_mb=len(png) / (1 << 20), max_queued_mb=budget / (1 << 20), decode_threads=1)
    with TestClient(create_app(gate, config)) as c, opened(gate):
        service = c.app.state.service
        assert c.get("/info").json()["limits"]["max_queued_bytes"] == budget
        answers: queue.Queue = queue.Queue()
        threads = [threading.Thread(target=lambda: answers.put(c.post("/predict", content=png))) for _ in range(2)]
        for t in threads:
            t.start()
        wait_until(lambda: service.bodies.held == 2 * len(png) and service.batcher.admitted == 2, "two bodies held")
        assert service.batcher.admitted == 2 < config.queue  # the images are not what is full
        r = c.post("/predict", content=png)  # Content-Length: refused before the body is read
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "--max-queued-mb" in r.json()["error"]
        r = c.post("/predict", content=iter([png[:200], png[200:]]))  # chunked: refused as it streams in
        assert r.status_code == 503 and "--max-queued-mb" in r.json()["error"]
        r = c.post("/v2/models/alexnet/infer", content=png)
        assert r.status_code == 503 and "--max-queued-mb" in r.json()["error"]
        assert gauge(c, "alexnet_request_body_bytes_held") == 2 * len(png)
        gate.open.set()
        for t in threads:
            t.join()
        assert [answers.get().status_code for _ in threads] == [200, 200]
        assert service.bodies.held == 0  # released, also by the refused requests
        assert c.post("/predict", content=png).status_code == 200


def test_the_byte_budget_refuses_before_the_body_is_read(predictor):
    """On a real socket: a body holds its bytes as they arrive, and a request whose declared length would go over
    the budget is answered 503 while its client still holds back the whole body."""
    cap = 50_000
    config = ServeConfig(max_upload_mb=cap / (1 << 20), max_queued_mb=cap / (1 << 20), decode_threads=1)
    with live_server(create_app(predictor, config)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=60) as first:
            first.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % cap + b"x" * 49_990)
            wait_until(lambda: "alexnet_request_body_bytes_held 49990.0" in httpx.get(url + "/metrics").text,
                       "the first body's bytes to be held")  # fmt: skip
            with socket.create_connection(("127.0.0.1", port), timeout=60) as second:
                second.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n")  # no body
                answer = b""
                while b"}" not in answer:
                    data = second.recv(65536)  # a server waiting for the body would time out here
                    assert data, answer
                    answer += data
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"retry-after: 1" in answer.lower() and b"--max-queued-mb" in answer
        wait_until(lambda: "alexnet_request_body_bytes_held 0.0" in httpx.get(url + "/metrics").text,
                   "the budget released when the first client went away")  # fmt: skip


def test_image_status_follows_the_error_type():
    from alexnet.data.decode import DecodeBoundsError, DecodeError
    from alexnet.serve.app import image_status

    assert image_status(DecodeBoundsError("x.png: too many pixels")) == 422
    assert image_status(DecodeError("refused.png: refused to be an image")) == 415  # no guessing from the words

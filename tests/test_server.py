"""``grounding serve``: a real server process on loopback (health, OpenAPI, predictions with overlays,
limits, concurrent requests that must equal a sequential run), and the app in-process."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grounding.results import decode_rle

from _scripted import ONE_THREAD_ENV, one_torch_thread, png_bytes, scene, scripted_answers

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.timeout(600)

PROMPT = "Please segment the red circle."


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _without_timings(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "timings"}


@pytest.fixture(scope="module")
def server():
    """``grounding serve --model tiny`` in a subprocess on a free loopback port; yields its base URL."""
    port = _free_port()
    cmd = [sys.executable, "-m", "grounding.cli", "serve", "--model", "tiny", "--host", "127.0.0.1",
           "--port", str(port), "--max-upload-mb", "1", "--max-pixels", "1000000", "--max-new-tokens", "12"]
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"grounding-serve-{port}.log", "w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1", **ONE_THREAD_ENV})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # importing torch and building the model (slow on a busy machine)
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"the server exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server did not answer /healthz within 300 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _post(url, image: bytes, prompt: str = PROMPT, timeout: float = 300, **fields):
    data = {"prompt": prompt, **{k: str(v) for k, v in fields.items()}}
    return httpx.post(f"{url}/v1/predict", files={"image": ("img.png", image, "image/png")}, data=data, timeout=timeout)


def test_healthz_and_openapi(server):
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok", "model": "tiny"}
    schema = httpx.get(f"{server}/openapi.json").json()
    op = schema["paths"]["/v1/predict"]["post"]
    ref = op["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    props = schema["components"]["schemas"][ref]["properties"]
    assert {"image", "prompt", "regions", "overlay", "box_to_mask", "max_new_tokens"} <= set(props)
    assert "/healthz" in schema["paths"]
    assert httpx.get(f"{server}/docs").status_code == 200


def test_predict_with_overlay(server):
    img = scene(60, 90)
    r = _post(server, png_bytes(img), overlay="true", regions="[[5, 5, 40, 40]]")
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["prompt"] == PROMPT and d["image_size"] == [60, 90] and d["regions"] == [[5.0, 5.0, 40.0, 40.0]]
    assert {"set_image", "generate", "total"} <= set(d["timings"])
    overlay = Image.open(io.BytesIO(base64.b64decode(d["overlay_png"])))
    assert overlay.format == "PNG" and overlay.size == (90, 60)
    for s in d["segments"]:
        if s["mask"] is not None:
            assert decode_rle(s["mask"]).shape == (60, 90)
    assert "overlay_png" not in _post(server, png_bytes(img)).json()


def test_limits_on_the_real_server(server):
    r = _post(server, b"\x00" * (2 * 2**20))  # --max-upload-mb 1
    assert r.status_code == 413
    r = _post(server, png_bytes(np.zeros((1100, 1000, 3), np.uint8)))  # --max-pixels 1000000
    assert r.status_code == 413 and "pixels" in r.json()["detail"]
    r = _post(server, b"GIF89a not really")
    assert r.status_code == 415
    r = _post(server, png_bytes(scene()), "")
    assert r.status_code == 422
    assert httpx.get(f"{server}/healthz").status_code == 200  # still serving


def test_concurrent_requests_match_sequential(server):
    jobs = [(png_bytes(scene(40 + 6 * i, 64 + 4 * i, seed=i)), q)
            for i, q in enumerate([PROMPT, "What is in the image?", "Find the square.", PROMPT, "Describe it.", "Where?"])]
    sequential = [_without_timings(_post(server, im, q).json()) for im, q in jobs]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(_post, server, im, q) for im, q in jobs * 2]
        responses = [f.result() for f in futures]
    assert all(r.status_code == 200 for r in responses)
    got = [_without_timings(r.json()) for r in responses]
    assert got == sequential * 2


# --------------------------------------------------------------------------------------------- in-process


@pytest.fixture(scope="module")
def client():
    from fastapi.testclient import TestClient

    from grounding import GroundingPredictor
    from grounding.server import ServerLimits, create_app

    predictor = GroundingPredictor.from_pretrained("tiny", max_new_tokens=64)
    with TestClient(create_app(predictor, ServerLimits(max_new_tokens=64), model_name="tiny")) as c:
        c.predictor = predictor
        yield c


def test_in_process_segments_and_box_to_mask(client):
    img = scene(50, 70)
    with scripted_answers(client.predictor, "Sure, <p>the red circle</p> [SEG] and <box>[0, 0, 500, 500]</box>."):
        r = client.post("/v1/predict", files={"image": ("a.png", png_bytes(img), "image/png")},
                        data={"prompt": PROMPT, "box_to_mask": "true", "overlay": "1"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["text"] == f"Sure, the red circle and {[round(v) for v in d['segments'][1]['box']]}."
    assert [s["source"] for s in d["segments"]] == ["seg", "box+sam"]
    assert all(decode_rle(s["mask"]).shape == (50, 70) for s in d["segments"])
    assert json.dumps(d)


def test_in_process_jpeg_and_max_new_tokens_capped(client):
    buf = io.BytesIO()
    Image.fromarray(scene(40, 40)).save(buf, format="JPEG")
    with scripted_answers(client.predictor, "word " * 200):
        r = client.post("/v1/predict", files={"image": ("a.jpg", buf.getvalue(), "image/jpeg")},
                        data={"prompt": PROMPT, "max_new_tokens": "100000"})
    assert r.status_code == 200
    assert len(client.predictor.model.tokenizer(r.json()["raw_text"])["input_ids"]) <= 64


def test_in_process_busy_is_503():
    import threading

    from fastapi.testclient import TestClient

    from grounding import GroundingPredictor
    from grounding.server import ServerLimits, create_app

    predictor = GroundingPredictor.from_pretrained("tiny", max_new_tokens=4)
    inside, release = threading.Event(), threading.Event()
    real_predict = predictor.predict

    def slow_predict(*a, **k):  # holds its slot until released
        inside.set()
        release.wait(60)
        return real_predict(*a, **k)

    predictor.predict = slow_predict
    c = TestClient(create_app(predictor, ServerLimits(max_in_flight=1)))
    files = {"image": ("a.png", png_bytes(scene(32, 32)), "image/png")}
    first: list = []
    t = threading.Thread(target=lambda: first.append(c.post("/v1/predict", files=files, data={"prompt": PROMPT})))
    t.start()
    try:
        assert inside.wait(60)
        r = c.post("/v1/predict", files=files, data={"prompt": PROMPT})
        assert r.status_code == 503 and "busy" in r.json()["detail"]
    finally:
        release.set()
        t.join(timeout=60)
    assert first[0].status_code == 200
    assert c.post("/v1/predict", files=files, data={"prompt": PROMPT}).status_code == 200

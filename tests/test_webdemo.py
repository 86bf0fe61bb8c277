"""The web demo (``demo/app.py``, ``grounding demo``) used as a person uses it: the real Gradio app on loopback,
driven in headless Chromium from Debian's packages (Playwright with ``executable_path``; no browser download),
on the tiny model whose vision-LLM is scripted to answer with a ``[SEG]`` (``tests/_scripted.py``): the rest of
the path (app -> predictor -> mask decoder -> overlay -> page) is the real one. Also the app's logic without a
browser, and the ``grounding demo`` command.

The browser tests skip only when Chromium is not installed (``apt-get install chromium``); screenshots go to
``tests/_output/webdemo_*.png``.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
from PIL import Image

import gradio  # noqa: F401  (the 'demo' extra: a missing gradio fails here, it is not a reason to skip)
from playwright.sync_api import sync_playwright

from demo.app import ASSETS, BOX_AS_REGION, BOX_AS_SAM, DemoApp, build_demo, parse_box
from grounding.errors import GroundingError
from grounding.predictor import GroundingPredictor
from grounding.results import decode_rle

from _scripted import scripted_answers

pytestmark = pytest.mark.timeout(300)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Chromium is not installed: apt-get install chromium (Debian's /usr/bin/chromium)"
)

SHAPES = ASSETS / "shapes.png"
CLIP = ASSETS / "video" / "shapes.webm"
ANSWER = "Sure, <p>the red circle</p> [SEG]."  # what the scripted vision-LLM says to every request
RED = "#e6194b"  # palette(1)[0]: the first object's colour, in the overlay and in the answer
UI_TIMEOUT_MS = 150_000  # a prediction on 2 busy cores


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return url.startswith(("data:", "blob:", "about:")) or host in ("127.0.0.1", "localhost", "::1")


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return GroundingPredictor.from_pretrained("tiny", max_new_tokens=24)


@pytest.fixture(scope="module")
def app(predictor, tmp_path_factory):
    return DemoApp(predictor, "tiny", out_dir=tmp_path_factory.mktemp("demo-out"))


# ---------------------------------------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def live_url(predictor, tmp_path_factory):
    """The app on a free loopback port, in this process (so its vision-LLM can be scripted)."""
    with scripted_answers(predictor, ANSWER):
        demo = build_demo(predictor, model_name="tiny", out_dir=tmp_path_factory.mktemp("live-out"))
        port = _free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    allowed_paths=[str(ASSETS)])
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            demo.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed: apt-get install chromium (Debian's /usr/bin/chromium)")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh user-data-dir
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000}, accept_downloads=True,
        )
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture
def page(browser, live_url):
    """A fresh tab on the app; any request off loopback is refused and recorded (the page must work offline)."""
    page = browser.new_page()
    page.outside = []

    def route(r):
        if _loopback(r.request.url):
            r.continue_()
        else:
            page.outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(live_url, wait_until="domcontentloaded")
    page.locator("button#image-run").wait_for(state="visible", timeout=60_000)
    yield page
    page.close()


def _upload_image(page, path: Path) -> None:
    page.locator("#image-input input[type=file]").set_input_files(str(path))


def _type(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(text)


def _fetch(page, url: str) -> bytes:
    resp = page.request.get(url)
    assert resp.ok, f"GET {url}: {resp.status}"
    return resp.body()


def _screenshot(page, output_dir: Path, name: str) -> Path:
    path = output_dir / f"webdemo_{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _json_link(page, elem_id: str) -> str:
    link = page.locator(f"#{elem_id} a[href]").first
    link.wait_for(state="attached", timeout=UI_TIMEOUT_MS)
    return link.get_attribute("href")


@needs_chromium
def test_browser_image_upload_prompt_overlay(page, output_dir):
    """Upload the bundled image, type an instruction, click Run: the overlay differs from the input where the
    mask is, the answer colours its phrase like the mask, and the JSON holds that mask (RLE)."""
    _upload_image(page, SHAPES)
    page.locator("#image-input img").first.wait_for(state="visible", timeout=30_000)
    _type(page, "image-prompt", "Please segment the red circle.")
    page.locator("button#image-run").click()

    overlay_img = page.locator("#image-overlay img").first
    overlay_img.wait_for(state="visible", timeout=UI_TIMEOUT_MS)
    page.locator("#image-status .gd-ok").wait_for(timeout=UI_TIMEOUT_MS)
    assert "1 object(s) grounded (1 with a mask)" in page.locator("#image-status").inner_text()
    shot = _screenshot(page, output_dir, "image")

    # the answer: the phrase highlighted in the first object's colour
    phrase = page.locator("#image-answer .gd-text span", has_text="the red circle")
    assert RED in (phrase.get_attribute("style") or "")

    # the JSON download: boxes and the RLE mask
    payload = json.loads(_fetch(page, _json_link(page, "image-json")))
    assert payload["prompt"] == "Please segment the red circle." and payload["model"] == "tiny"
    assert len(payload["segments"]) == 1
    seg = payload["segments"][0]
    assert seg["phrase"] == "the red circle" and seg["box"] is not None
    mask = decode_rle(seg["mask"])
    original = np.asarray(Image.open(SHAPES).convert("RGB"))
    assert mask.shape == original.shape[:2] and mask.any()

    # the overlay the page shows (PNG, lossless): tinted where the mask is
    shown = np.asarray(Image.open(io.BytesIO(_fetch(page, overlay_img.get_attribute("src")))).convert("RGB"))
    assert shown.shape == original.shape
    changed = np.any(shown != original, axis=-1)
    assert changed[mask].mean() > 0.95, "the overlay must differ from the input wherever the mask is"
    tint = shown[mask].astype(float) - original[mask].astype(float)
    assert (tint[:, 0] > tint[:, 1]).mean() > 0.8, "the mask is tinted with the first palette colour (red)"
    assert page.outside == [], f"the page asked for resources off loopback: {page.outside}"
    assert shot.stat().st_size > 10_000


@needs_chromium
def test_browser_bad_upload_and_empty_prompt(page, output_dir, tmp_path):
    """A text file named .png gets a friendly message (no stack trace), at upload and at Run; so does an
    empty instruction."""
    fake = tmp_path / "holiday.png"
    fake.write_text("this is not a picture\n" * 20)
    _upload_image(page, fake)
    status = page.locator("#image-status .gd-error")
    status.wait_for(timeout=60_000)
    assert "“holiday.png” cannot be used as an image" in status.inner_text()
    _type(page, "image-prompt", "Please segment the red circle.")
    page.locator("button#image-run").click()
    page.get_by_text("Upload a PNG, JPEG or WebP picture").first.wait_for(timeout=UI_TIMEOUT_MS)
    _screenshot(page, output_dir, "bad_upload")
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and "UnidentifiedImageError" not in body

    _upload_image(page, SHAPES)
    page.locator("#image-input img").first.wait_for(state="visible", timeout=30_000)
    _type(page, "image-prompt", "   ")
    page.locator("button#image-run").click()
    page.locator("#image-status .gd-error", has_text="Type an instruction first").wait_for(timeout=UI_TIMEOUT_MS)
    _screenshot(page, output_dir, "empty_prompt")


@needs_chromium
def test_browser_box_from_two_clicks_as_region(page, output_dir):
    """Two clicks on the image give the box fields; Run sends that box as the prompt's <region>."""
    _upload_image(page, SHAPES)
    img = page.locator("#image-input img").first
    img.wait_for(state="visible", timeout=30_000)
    page.wait_for_function("() => { const i = document.querySelector('#image-input img'); "
                           "return i && i.complete && i.naturalWidth > 0; }")
    geo = img.evaluate("i => { const r = i.getBoundingClientRect(); return [r.width, r.height, i.naturalWidth, "
                       "i.naturalHeight]; }")
    w, h, nw, nh = geo
    scale = min(w / nw, h / nh, 1)  # shown centred, shrunk to fit but never enlarged (as Gradio maps clicks)
    ox, oy = (w - nw * scale) / 2, (h - nh * scale) / 2
    for x, y in ((140, 74), (224, 158)):
        img.click(position={"x": ox + (x + 0.5) * scale, "y": oy + (y + 0.5) * scale})
        page.wait_for_timeout(300)
    field = page.locator("#box-y2 input")
    page.wait_for_function("() => document.querySelector('#box-y2 input').value !== ''", timeout=60_000)
    box = [float(page.locator(f"#box-{k} input").input_value()) for k in ("x1", "y1", "x2", "y2")]
    assert np.allclose(box, [140, 74, 224, 158], atol=3), box
    assert field.input_value()
    page.get_by_label(BOX_AS_REGION).check()
    _type(page, "image-prompt", "What is in <region>?")
    page.locator("button#image-run").click()
    page.locator("#image-status .gd-ok").wait_for(timeout=UI_TIMEOUT_MS)
    payload = json.loads(_fetch(page, _json_link(page, "image-json")))
    assert payload["regions"] == [box] and payload["box_mode"] == BOX_AS_REGION
    _screenshot(page, output_dir, "region")


@needs_chromium
@pytest.mark.slow
def test_browser_video_example_tracked(page, output_dir):
    """Pick the bundled clip, say what to track, click Track: the overlay video plays in the browser and the
    per-frame JSON has every frame."""
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-input").wait_for(state="visible")
    page.locator("#video-input input[type=file]").set_input_files(str(CLIP))
    page.locator("#video-input video").first.wait_for(state="attached", timeout=30_000)
    _type(page, "video-prompt", "Please segment the blue circle.")
    page.locator("button#video-run").click()
    video = page.locator("#video-overlay video").first
    video.wait_for(state="attached", timeout=UI_TIMEOUT_MS)
    page.locator("#video-status .gd-ok").wait_for(timeout=UI_TIMEOUT_MS)
    page.wait_for_function("() => { const v = document.querySelector('#video-overlay video'); "
                           "return v && v.readyState >= 1 && v.videoWidth > 0; }", timeout=60_000)
    width, duration = video.evaluate("v => [v.videoWidth, v.duration]")
    assert width == 256 and 1.5 < duration < 2.5, (width, duration)  # 16 frames at 8 fps, decoded by Chromium
    payload = json.loads(_fetch(page, _json_link(page, "video-json")))
    assert payload["num_frames"] == 16 and len(payload["frames"]) == 16
    assert payload["objects"] == [{"obj_id": 1, "phrase": "the red circle"}]
    _screenshot(page, output_dir, "video")
    assert page.outside == [], f"the page asked for resources off loopback: {page.outside}"


# ----------------------------------------------------------------------------------------- without a browser


def test_build_demo_has_the_widgets_and_writes_nothing_beside_the_source(predictor, tmp_path):
    import demo.app

    blocks = build_demo(predictor, model_name="tiny", out_dir=tmp_path)
    ids = {getattr(b, "elem_id", None) for b in blocks.blocks.values()}
    assert {"image-input", "image-prompt", "image-run", "image-overlay", "image-answer", "image-json",
            "box-x1", "box-mode", "video-input", "video-prompt", "video-run", "video-overlay", "video-json"} <= ids
    assert not Path(demo.app.__file__).with_suffix(".pyi").exists()  # Gradio writes stubs for Component subclasses


def test_parse_box():
    assert parse_box(None, None, None, None) is None
    assert parse_box(30, 40, 10, 20) == [10.0, 20.0, 30.0, 40.0]
    with pytest.raises(GroundingError, match="all four"):
        parse_box(1, 2, None, 4)


def test_app_messages_for_bad_input(app, predictor, tmp_path):
    """Every input error is a message for the page (and a toast), never an exception."""
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    cases = {
        "Upload an image": app.run_image(None, "Please segment the red circle."),
        "Type an instruction first": app.run_image(str(SHAPES), "  "),
        "“notes.png” cannot be used as an image": app.run_image(str(fake), "Please segment the red circle."),
        "lies outside the 256 x 256 image": app.run_image(str(SHAPES), "What is in <region>?", [300, 300, 400, 400]),
        "Upload a video clip": app.run_video(None, "Please segment the blue circle."),
        "Say what to track first": app.run_video(str(CLIP), ""),
        "cannot be read as a video": app.run_video(str(fake), "Please segment the blue circle."),
    }
    for text, out in cases.items():
        assert text in out.status and 'role="alert"' in out.status, (text, out.status)
        assert out.warning and getattr(out, "overlay", None) is None and out.json_path is None
        assert "Traceback" not in out.status and str(tmp_path) not in out.status


def test_app_internal_failure_is_a_message(app, predictor, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory in layer 3")

    monkeypatch.setattr(predictor, "predict", broken)
    out = app.run_image(str(SHAPES), "Please segment the red circle.")
    assert "Something went wrong inside the demo (RuntimeError)" in out.status and out.warning
    assert "layer 3" not in out.status


def test_app_prompt_that_grounds_nothing(app, predictor):
    with scripted_answers(predictor, "There is no yellow star in the image."):
        out = app.run_image(str(SHAPES), "Please segment the yellow star.")
    assert "Nothing was grounded" in out.status and out.info and not out.warning
    assert out.overlay is not None and json.loads(Path(out.json_path).read_text())["segments"] == []


def test_app_box_as_sam_prompt_and_region(app, predictor):
    """A box used as a SAM box prompt gives a mask without the LLM; used as a <region>, it reaches the JSON."""
    box = [135.0, 85.0, 212.0, 150.0]
    with scripted_answers(predictor, "Nothing to see."):  # must not be asked
        out = app.run_image(str(ASSETS / "chelsea.jpg"), "", box, BOX_AS_SAM)
    payload = json.loads(Path(out.json_path).read_text())
    assert payload["box_mode"] == BOX_AS_SAM and payload["regions"] == [box]
    assert [s["source"] for s in payload["segments"]] in ([], ["box+sam"])
    with scripted_answers(predictor, "It is <p>a green square</p> [SEG]."):
        out = app.run_image(str(SHAPES), "What is in <region>?", [140, 74, 224, 158], BOX_AS_REGION)
    payload = json.loads(Path(out.json_path).read_text())
    assert payload["regions"] == [[140.0, 74.0, 224.0, 158.0]] and payload["segments"][0]["phrase"] == "a green square"
    assert out.overlay.shape == (256, 256, 3)


@pytest.mark.slow
def test_app_video_writes_playable_webm_and_json(app, predictor):
    pytest.importorskip("grounding.tracking", reason="grounding.tracking (video tracking) is not installed")
    import cv2

    seen = []
    with scripted_answers(predictor, ANSWER):
        out = app.run_video(str(CLIP), "Please segment the red circle.", lambda *a, **k: seen.append((a, k)))
    assert out.warning is None and "1 object(s) tracked over 16 frames" in out.status, out.status
    cap = cv2.VideoCapture(out.video_path)
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = cap.read()
    cap.release()
    assert out.video_path.endswith(".webm") and frames == 16 and ok
    payload = json.loads(Path(out.json_path).read_text())
    assert payload["num_frames"] == 16 and payload["prompt"] == "Please segment the red circle."
    # frame 0 of the overlay video is tinted where frame 0's mask is (VP8 is lossy: compare means)
    mask = decode_rle(payload["frames"][0]["objects"][0]["mask"])
    source = cv2.VideoCapture(str(CLIP))
    ok, original = source.read()
    source.release()
    assert ok and mask.any() and first.shape == original.shape
    diff = np.abs(first.astype(float) - original.astype(float)).sum(-1)
    assert diff[mask].mean() > 40, "the overlay video shows the mask"
    assert any(a and isinstance(a[0], tuple) and a[0] == (16, 16) for a, _ in seen), "progress reaches 16/16"


# ------------------------------------------------------------------------------------------------ the command


def test_cli_demo_help_and_missing_model(capsys):
    from grounding.cli import main

    assert main(["demo", "--help"]) == 0
    assert "--model" in capsys.readouterr().out
    assert main(["demo", "--model", "/no/such/model"]) == 2
    assert "grounding demo: error:" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_cli_demo_serves_the_page(tmp_path):
    """``grounding demo --model tiny`` as a real process: the page and its config come back on loopback."""
    import httpx

    port = _free_port()
    log = open(tmp_path / "demo.log", "w+")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "grounding.cli", "demo", "--model", "tiny", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a cold start (torch, transformers, gradio) on 2 busy cores
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"grounding demo exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                r = httpx.get(url + "/", timeout=5)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("grounding demo did not serve its page within 300 s")
            time.sleep(0.5)
        assert "pixel-grounding demo" in r.text
        config = httpx.get(url + "/config", timeout=10).json()
        ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
        assert {"image-input", "image-prompt", "image-run", "image-overlay", "video-input", "video-run"} <= ids
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

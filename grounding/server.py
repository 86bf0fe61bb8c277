"""HTTP server for a ``GroundingPredictor`` (FastAPI; run it with ``grounding serve``).

    POST /v1/predict   multipart form: image (file), prompt, regions (JSON boxes, optional),
                       overlay (true/false), max_new_tokens (optional, capped by the server)
                       -> the JSON of ``grounding predict`` (+ ``overlay_png``: base64 PNG, when asked)
    GET  /healthz      -> {"status": "ok", "model": ...}
    GET  /openapi.json, /docs   FastAPI's schema and its page

Limits (``ServerLimits``): the request body size is checked before the body is read (``Content-Length``)
and while it is read (chunked uploads); the image's format must be one of ``formats`` and its pixel count is
read from its header and refused above ``max_pixels`` before anything is decoded (decompression bombs).
Input errors are 4xx with ``{"detail": "..."}``: 413 too large, 415 not an image, 422 a bad field; 503
when ``max_in_flight`` requests are already in flight.
Requests run in a thread pool; the predictor's lock serialises the model, and images are decoded (and
overlays drawn) outside it.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoint's annotations at run time
import base64
import io
import json
import threading
from dataclasses import dataclass

from grounding.commands import parse_regions, result_payload
from grounding.errors import GroundingError, InvalidImageError


@dataclass
class ServerLimits:
    """What one request may ask for."""

    max_upload_bytes: int = 20 * 2**20
    """Largest request body (the whole multipart form), bytes."""
    max_pixels: int = 40_000_000
    """Largest image, width x height, read from the header before decoding."""
    max_prompt_chars: int = 4000
    """Longest prompt, characters."""
    max_regions: int = 32
    """Most region boxes in one request."""
    max_new_tokens: int = 96
    """Longest answer, tokens (a request may ask for fewer)."""
    formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
    """Image formats accepted (PIL format names); others are refused with 415."""
    max_in_flight: int = 8
    """Requests decoded and waiting for (or using) the model at once; more are refused with 503 (each holds
    its decoded image in memory while it waits)."""


class BodySizeLimit:
    """ASGI middleware: 413 for a request body above ``max_bytes``, decided from ``Content-Length`` before
    reading and by counting while reading (a chunked upload cannot stream past the limit either). The body
    is read here, at most ``max_bytes`` of it, and handed on to the app as one message."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    n = int(value)
                except ValueError:
                    return await _reply(send, 400, "bad Content-Length header")
                if n > self.max_bytes:
                    return await _reply(send, 413, self._message(n))
        chunks, seen = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            seen += len(body)
            if seen > self.max_bytes:
                return await _reply(send, 413, self._message(None))
            chunks.append(body)
            if not msg.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay_receive():
            return replay.pop() if replay else await receive()

        await self.app(scope, replay_receive, send)

    def _message(self, n):
        size = f" ({n} bytes)" if n is not None else ""
        return f"request body too large{size}: the limit is {self.max_bytes} bytes"


async def _reply(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def check_image_bytes(data: bytes, limits: ServerLimits):
    """Decode uploaded bytes -> H x W x 3 uint8 RGB, refusing other formats (415) and too many pixels (413)
    from the header alone, before decoding."""
    from PIL import Image, UnidentifiedImageError

    from grounding.predictor import load_image

    if not data:
        raise _HTTPError(415, "the image file is empty")
    try:
        with Image.open(io.BytesIO(data), formats=list(limits.formats)) as im:
            w, h = im.size
    except Image.DecompressionBombError as e:
        raise _HTTPError(413, f"image too large: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        why = "" if isinstance(e, UnidentifiedImageError) else f": {e}"
        raise _HTTPError(415, f"not an image in an accepted format ({', '.join(limits.formats)}){why}") from None
    if w * h > limits.max_pixels:
        raise _HTTPError(413, f"image is {w} x {h} = {w * h} pixels, above the limit of {limits.max_pixels}")
    try:
        return load_image(data, limits.max_pixels)
    except InvalidImageError as e:
        raise _HTTPError(415 if "cannot read" in str(e) else 422, str(e)) from None


class _HTTPError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def create_app(predictor, limits: ServerLimits | None = None, model_name: str = ""):
    """A FastAPI app serving ``predictor`` (a ``GroundingPredictor``) within ``limits``."""
    from fastapi import FastAPI, File, Form, HTTPException, UploadFile
    from fastapi.concurrency import run_in_threadpool

    limits = limits or ServerLimits()
    in_flight = threading.BoundedSemaphore(max(1, limits.max_in_flight))
    app = FastAPI(
        title="pixel-grounding",
        version=_version(),
        description="Pixel-level grounding with a multimodal LLM: masks, boxes and phrases for a prompt about an image.",
    )

    @app.get("/healthz")
    def healthz() -> dict:
        """Liveness: the model is loaded and the server answers."""
        return {"status": "ok", "model": model_name}

    @app.post("/v1/predict")
    async def predict(
        image: UploadFile = File(..., description="the image (PNG, JPEG, WEBP, BMP, TIFF or GIF)"),
        prompt: str = Form(..., description='the request, e.g. "Please segment the red circle."'),
        regions: str | None = Form(None, description="JSON boxes [[x1, y1, x2, y2], ...], image pixels, for <region>"),
        overlay: bool = Form(False, description="also return the overlay as a base64 PNG (overlay_png)"),
        box_to_mask: bool = Form(False, description="turn boxes written as text into masks (SAM box prompt)"),
        max_new_tokens: int | None = Form(None, description="longest answer in tokens (capped by the server)"),
    ) -> dict:
        """Ground ``prompt`` in ``image``: the answer text and its segments (phrase, xyxy box in image pixels,
        COCO RLE mask, score), with timings in seconds."""
        if not in_flight.acquire(blocking=False):
            raise HTTPException(503, f"busy: {limits.max_in_flight} requests in flight; retry later")
        try:
            data = await image.read()
            return await run_in_threadpool(
                _predict_sync, predictor, limits, data, prompt, regions, overlay, box_to_mask, max_new_tokens
            )
        except _HTTPError as e:
            raise HTTPException(e.status, e.detail) from None
        except GroundingError as e:
            raise HTTPException(422, str(e)) from None
        finally:
            in_flight.release()

    app.state.limits = limits
    app.state.predictor = predictor
    return BodySizeLimit(app, limits.max_upload_bytes) if limits.max_upload_bytes else app


def _predict_sync(predictor, limits, data, prompt, regions, overlay, box_to_mask, max_new_tokens) -> dict:
    if not prompt or not prompt.strip():
        raise _HTTPError(422, "the prompt is empty")
    if len(prompt) > limits.max_prompt_chars:
        raise _HTTPError(422, f"the prompt has {len(prompt)} characters, above the limit of {limits.max_prompt_chars}")
    boxes = parse_regions(regions, allow_file=False)
    if boxes is not None and len(boxes) > limits.max_regions:
        raise _HTTPError(422, f"{len(boxes)} regions, above the limit of {limits.max_regions}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise _HTTPError(422, f"max_new_tokens must be >= 1, got {max_new_tokens}")
    n_tokens = min(max_new_tokens or limits.max_new_tokens, limits.max_new_tokens)
    img = check_image_bytes(data, limits)
    from grounding.predictor import check_regions

    check_regions(boxes, img.shape[:2])
    result = predictor.predict(img, prompt, regions=boxes, box_to_mask=box_to_mask, max_new_tokens=n_tokens)
    payload = result_payload(result, prompt=prompt, regions=boxes)
    if overlay:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(result.draw(img)).save(buf, format="PNG")
        payload["overlay_png"] = base64.b64encode(buf.getvalue()).decode("ascii")
    return payload


def _version() -> str:
    from grounding import __version__

    return __version__

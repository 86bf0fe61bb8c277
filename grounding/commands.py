"""The ``grounding predict`` and ``grounding serve`` commands (the dispatcher is ``grounding.cli``).

    grounding predict --image demo/assets/shapes.png --prompt "Please segment the red circle." --out outputs/demo
    grounding serve --model default --host 127.0.0.1 --port 8000

``predict`` writes ``DIR/<image stem>.png`` (the image with masks, contours, boxes and phrase labels) and
``DIR/<image stem>.json`` (``GroundingResult.to_dict()`` with COCO RLE masks, plus the request and timings),
prints the answer on stdout, and progress and timings on stderr. Bad input (an unreadable image, an empty
prompt, regions outside the image, an unknown model) is reported in one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from grounding.errors import GroundingError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so every bad input leaves through one path."""

    def error(self, message):
        raise GroundingError(message)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_regions(text: str | None, allow_file: bool = True) -> list[list[float]] | None:
    """``--regions``: JSON boxes ``[[x1, y1, x2, y2], ...]`` (xyxy pixels of the original image), one box
    ``[x1, y1, x2, y2]``, or (``allow_file``) the path of a JSON file holding either. ``None``/empty -> None."""
    if text is None or not text.strip():
        return None
    src = text
    if allow_file and not text.lstrip().startswith("[") and Path(text).is_file():
        src = Path(text).read_text()
    try:
        value = json.loads(src)
    except (json.JSONDecodeError, RecursionError) as e:
        raise GroundingError(f"regions must be JSON boxes like [[x1, y1, x2, y2]]: {e}") from None
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        value = [value]
    ok = isinstance(value, list) and all(
        isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)
        for b in value
    )
    if not ok:
        raise GroundingError(f"regions must be a list of [x1, y1, x2, y2] boxes, got {json.dumps(value)[:200]}")
    return [[float(v) for v in b] for b in value]


def result_payload(result, **request) -> dict:
    """The JSON of the CLI and the server: ``request`` fields, ``result.to_dict()`` and timings (seconds)."""
    out = dict(request)
    out.update(result.to_dict())
    out["timings"] = {k: round(float(v), 4) for k, v in result.timings.items()}
    return out


def load_predictor(model: str, device: str = "cpu", **kwargs):
    """``GroundingPredictor.from_pretrained`` with a missing model as a ``GroundingError`` (a user error)."""
    from grounding.predictor import GroundingPredictor

    try:
        return GroundingPredictor.from_pretrained(model, device=device, **kwargs)
    except FileNotFoundError as e:
        raise GroundingError(str(e)) from None


# ---------------------------------------------------------------------------------------------- predict


def predict_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="grounding predict",
        description="Ground a prompt in one image: writes DIR/<stem>.png (overlay) and DIR/<stem>.json (result).",
    )
    p.add_argument("--image", required=True, help="image file (PNG, JPEG, ...; EXIF orientation applied)")
    p.add_argument("--prompt", required=True, help='the request, e.g. "Please segment the red circle."')
    p.add_argument("--model", default="default", help="default | tiny | an exported folder | a .ckpt (default: default)")
    p.add_argument(
        "--regions",
        default=None,
        help="JSON boxes [[x1, y1, x2, y2], ...] in image pixels (or a JSON file) for <region> in the prompt",
    )
    p.add_argument("--box-to-mask", action="store_true", help="turn boxes written as text into masks (SAM box prompt)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--max-new-tokens", type=int, default=96, help="longest answer, in tokens (default: 96)")
    p.add_argument(
        "--encoder-precision",
        choices=("auto", "fp32", "bf16", "fp16"),  # heads.sam.ENCODER_PRECISIONS (not imported: no torch here yet)
        default="auto",
        help="image encoder precision; auto: bf16 where the CPU/GPU computes it natively, else fp32 (default: auto)",
    )
    p.add_argument("--out", required=True, help="output folder (created)")
    return p


def predict_main(argv: list[str] | None = None) -> int:
    """``grounding predict``; returns the exit status (0 ok, 2 bad input)."""
    if argv is not None and any(a in ("-h", "--help") for a in argv):
        predict_parser().print_help()
        return 0
    try:
        return _predict(predict_parser().parse_args(argv))
    except (GroundingError, OSError) as e:
        _stderr(f"grounding predict: error: {e}")
        return EXIT_BAD_INPUT


def _predict(args) -> int:
    t0 = time.perf_counter()
    # everything about the request is checked before the (slow) model load, the cheap checks before importing torch
    if not args.prompt.strip():
        raise GroundingError("the prompt is empty")
    if args.max_new_tokens < 1:
        raise GroundingError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not Path(args.image).is_file():
        raise GroundingError(f"no image file at {args.image}")
    regions = parse_regions(args.regions)

    from grounding.predictor import DEFAULT_MAX_PIXELS, check_regions, load_image

    image = load_image(args.image, DEFAULT_MAX_PIXELS)
    check_regions(regions, image.shape[:2])
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    h, w = image.shape[:2]
    _stderr(f"image {args.image}: {w} x {h}")

    _stderr(f"loading model {args.model!r} ...")
    t1 = time.perf_counter()
    predictor = load_predictor(
        args.model, args.device, max_new_tokens=args.max_new_tokens, encoder_precision=args.encoder_precision
    )
    t2 = time.perf_counter()
    _stderr(f"loaded in {t2 - t1:.1f} s (image encoder in {predictor.model.mask_head.encoder_precision}); predicting ...")

    result = predictor.predict(image, args.prompt, regions=regions, box_to_mask=args.box_to_mask)
    t3 = time.perf_counter()
    tm = result.timings
    _stderr(
        f"predicted in {t3 - t2:.2f} s (image encoder {tm.get('set_image', 0):.2f} s, "
        f"generation {tm.get('generate', 0):.2f} s, masks {tm.get('masks', 0):.2f} s): "
        f"{len(result.segments)} segment(s)"
    )
    for s in result.skipped:
        _stderr(f"note: skipped unreadable model output: {s}")

    stem = Path(args.image).stem or "image"
    png = out_dir / f"{stem}.png"
    js = out_dir / f"{stem}.json"
    from demo.visualize import save_image

    save_image(png, result.draw(image))
    result.timings["load_model"] = t2 - t1
    result.timings["wall"] = time.perf_counter() - t0
    payload = result_payload(
        result, image=str(args.image), prompt=args.prompt, model=args.model, regions=regions
    )
    js.write_text(json.dumps(payload, indent=1) + "\n")
    _stderr(f"wrote {png} and {js} ({time.perf_counter() - t0:.1f} s in all)")
    print(result.text)
    return 0


# ------------------------------------------------------------------------------------------------ serve


def serve_parser() -> argparse.ArgumentParser:
    from grounding.server import ServerLimits

    d = ServerLimits()
    p = _Parser(prog="grounding serve", description="HTTP server: POST /v1/predict, GET /healthz, OpenAPI at /docs.")
    p.add_argument("--model", default="default", help="default | tiny | an exported folder | a .ckpt (default: default)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_bytes / 2**20, help="largest request body, MiB")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help="largest image, in pixels (width x height)")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="longest answer, in tokens")
    p.add_argument("--max-in-flight", type=int, default=d.max_in_flight, help="requests at once; more get 503")
    return p


def serve_main(argv: list[str] | None = None) -> int:
    """``grounding serve``: load the model, then serve until interrupted."""
    if argv is not None and any(a in ("-h", "--help") for a in argv):
        serve_parser().print_help()
        return 0
    try:
        args = serve_parser().parse_args(argv)
        try:
            import uvicorn
        except ImportError:
            raise GroundingError("grounding serve needs the 'serve' extra: pip install 'pixel-grounding[serve]'") from None
        from grounding.server import ServerLimits, create_app

        limits = ServerLimits(
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            max_pixels=args.max_pixels,
            max_new_tokens=args.max_new_tokens,
            max_in_flight=args.max_in_flight,
        )
        _stderr(f"loading model {args.model!r} ...")
        t = time.perf_counter()
        predictor = load_predictor(args.model, args.device, max_new_tokens=args.max_new_tokens)
        _stderr(f"loaded in {time.perf_counter() - t:.1f} s; serving on http://{args.host}:{args.port}")
    except (GroundingError, OSError) as e:
        _stderr(f"grounding serve: error: {e}")
        return EXIT_BAD_INPUT
    app = create_app(predictor, limits, model_name=args.model)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0

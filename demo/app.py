"""The interactive web demo (Gradio): ground instructions in images and track objects through videos.

    grounding demo                                   # the embedded default model on http://127.0.0.1:7860
    grounding demo --model tiny --port 7861          # a random model (smoke tests)
    python -m demo.app --model PATH                  # the same, without the console script

As a Hugging Face Space: ``app_file: demo/app.py`` (the Space installs this package with its ``demo`` extra);
run as a script, :func:`main` reads ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` as Spaces set them.
In your own code: ``build_demo(GroundingPredictor.from_pretrained(...)).launch()``.

- Image tab: upload an image or pick an example, type an instruction, optionally click two corners on the image
  (or type them) to give a box, used either as the prompt's ``<region>`` or as a SAM box prompt (a mask from the
  box alone). Shows the answer with each grounded phrase coloured like its mask, the overlay (masks, contours,
  boxes, labels) and a JSON download (boxes + COCO RLE masks, the same JSON as ``grounding predict``).
- Video tab: upload a short clip or pick the example, say what to track; shows the overlay video (WebM) and a
  per-frame JSON download, with a progress bar while it runs.

Bad uploads, empty prompts, unusable boxes and prompts that ground nothing get a message in the page (a toast
and a status box), never a stack trace. The app only calls the public API: ``GroundingPredictor`` (through
``grounding.commands.load_predictor``), ``grounding.predictor.load_image``, ``GroundingResult``,
``grounding.tracking.track_video`` with ``grounding.video.open_frames``, and the drawing helpers of
``demo.visualize``. It never phones home: analytics are off and every asset is served by the app itself.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script (``python demo/app.py``, a Space's app_file): find the packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np

from demo.visualize import draw_overlay, palette, phrase_html
from grounding.errors import GroundingError, InvalidImageError, InvalidPromptError, InvalidRegionError

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"

BOX_AS_REGION = "<region> in the instruction"
BOX_AS_SAM = "SAM box prompt (mask from the box alone)"
BOX_MODES = (BOX_AS_REGION, BOX_AS_SAM)
BOX_COLOR = (255, 255, 255)  # the user's box, drawn over the result

# label, image, instruction, box (x1, y1, x2, y2 pixels or None), box mode, boxes in the answer -> masks
IMAGE_EXAMPLES: tuple[tuple[str, str, str, tuple[float, float, float, float] | None, str, bool], ...] = (
    ("segment: the red circle", "shapes.png", "Please segment the red circle.", None, BOX_AS_REGION, False),
    ("several: the purple shapes", "shapes.png", "Segment all the purple shapes.", None, BOX_AS_REGION, False),
    ("box as text (-> mask)", "shapes.png", "Where is the green square? Give its bounding box.", None,
     BOX_AS_REGION, True),
    ("grounded caption", "shapes.png", "Describe the image with grounded phrases.", None, BOX_AS_REGION, False),
    ("region question", "shapes.png", "What is in <region>?", (140, 74, 224, 158), BOX_AS_REGION, False),
    ("nothing to find", "shapes.png", "Please segment the yellow star.", None, BOX_AS_REGION, False),
    ("photo: SAM box prompt", "chelsea.jpg", "", (135, 85, 212, 150), BOX_AS_SAM, False),  # the cat's eye
)
# label, video, instruction
VIDEO_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    ("track: the blue circle", "video/shapes.webm", "Please segment the blue circle."),
    ("track: the orange shapes", "video/shapes.webm", "Segment all the orange shapes."),
)

_ERROR_STYLE = (
    "border:1px solid #d93025;background:#fce8e6;color:#8c1d18;padding:0.6em 0.8em;border-radius:0.4em;"
    "font-weight:500"
)
_NOTICE_STYLE = "border:1px solid #e37400;background:#fef7e0;color:#6d4100;padding:0.6em 0.8em;border-radius:0.4em"
_OK_STYLE = "color:#5f6368;font-size:0.9em"


# ------------------------------------------------------------------------------------------------- messages


class DemoInputError(GroundingError):
    """Something the person using the demo can fix (no image, no instruction, half a box, ...)."""


def error_html(message: str, details: str | None = None) -> str:
    """A red box with ``message`` (plain text) and optional collapsed ``details``."""
    more = f"<details><summary>details</summary><code>{html.escape(details)}</code></details>" if details else ""
    return f'<div class="gd-error" role="alert" style="{_ERROR_STYLE}">&#9888; {html.escape(message)}{more}</div>'


def notice_html(message: str) -> str:
    return f'<div class="gd-notice" role="status" style="{_NOTICE_STYLE}">{html.escape(message)}</div>'


def ok_html(message: str) -> str:
    return f'<div class="gd-ok" role="status" style="{_OK_STYLE}">{html.escape(message)}</div>'


def friendly_error(e: Exception, upload_name: str | None = None,
                   upload_path: str | None = None) -> tuple[str, str | None]:
    """(message for the page, technical details or None) for an input error of the public API."""
    detail = str(e)
    if upload_path and upload_name:
        detail = detail.replace(str(upload_path), upload_name)
    if isinstance(e, DemoInputError):
        return str(e), None
    if isinstance(e, InvalidImageError):
        name = f"“{upload_name}”" if upload_name else "This file"
        return f"{name} cannot be used as an image. Upload a PNG, JPEG or WebP picture.", detail
    if isinstance(e, InvalidRegionError):
        return f"The box cannot be used: {detail}. Draw it again or clear it.", None
    if isinstance(e, InvalidPromptError):
        return f"The instruction cannot be used: {detail}.", None
    if type(e).__name__ == "InvalidVideoError":
        name = f"“{upload_name}”" if upload_name else "This file"
        return f"{name} cannot be read as a video. Upload a short MP4, WebM or AVI clip.", detail
    return detail[:1].upper() + detail[1:], None


def answer_html(text: str, labels: list[str], phrases: list[str | None], colors: list[tuple[int, int, int]],
                boxes: list | None = None) -> str:
    """The answer with each grounded phrase highlighted in its object's colour, then one chip per object."""
    body = phrase_html(text, phrases, colors) if text.strip() else "<i>(the answer has no text)</i>"
    chips = []
    for i, (label, color) in enumerate(zip(labels, colors)):
        chip = phrase_html(label, [label], [color])
        box = None if boxes is None else boxes[i]
        where = "" if box is None else " <small>[" + ", ".join(f"{float(v):.0f}" for v in box) + "]</small>"
        chips.append(f'<span class="gd-chip" style="margin-right:0.8em">{chip}{where}</span>')
    legend = f'<div class="gd-legend" style="margin-top:0.5em">{"".join(chips)}</div>' if chips else ""
    return f'<div class="gd-answer"><div class="gd-text">{body}</div>{legend}</div>'


# ------------------------------------------------------------------------------------------------- the app


@dataclass
class ImageOutput:
    """What the image tab shows: the overlay (RGB), the answer (HTML), the JSON file, a status line (HTML)."""

    overlay: np.ndarray | None = None
    answer: str = ""
    json_path: str | None = None
    status: str = ""
    warning: str | None = None  # a toast: an error
    info: str | None = None  # a toast: a notice (nothing grounded)


@dataclass
class VideoOutput:
    """What the video tab shows: the overlay video, the answer (HTML), the per-frame JSON file, a status line."""

    video_path: str | None = None
    answer: str = ""
    json_path: str | None = None
    status: str = ""
    warning: str | None = None
    info: str | None = None
    extra: dict = field(default_factory=dict)


def parse_box(x1, y1, x2, y2) -> list[float] | None:
    """The four box fields -> [x1, y1, x2, y2] (sorted corners) or None when all are empty."""
    vals = [x1, y1, x2, y2]
    if all(v is None or (isinstance(v, str) and not v.strip()) for v in vals):
        return None
    if any(v is None or (isinstance(v, str) and not v.strip()) for v in vals):
        raise DemoInputError("Fill in all four box coordinates (x1, y1, x2, y2), or clear the box.")
    try:
        a, b, c, d = (float(v) for v in vals)
    except (TypeError, ValueError):
        raise DemoInputError("Box coordinates must be numbers (pixels).") from None
    return [min(a, c), min(b, d), max(a, c), max(b, d)]


class DemoApp:
    """The demo's logic, apart from its widgets: ``run_image`` and ``run_video`` take what the page holds and
    return what it shows. Input errors become messages in the output, never exceptions."""

    def __init__(self, predictor, model_name: str = "default", max_video_frames: int = 150,
                 out_dir: str | os.PathLike | None = None):
        self.predictor = predictor
        self.model_name = model_name
        self.max_video_frames = int(max_video_frames)
        self.out_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="grounding-demo-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def _new_file(self, stem: str, suffix: str) -> Path:
        folder = Path(tempfile.mkdtemp(dir=self.out_dir))  # one folder per request keeps the download's name
        return folder / f"{stem or 'result'}{suffix}"

    # ---------------------------------------------------------------------------------------------- images
    def preview_box(self, image_path: str | None, box: list[float] | None) -> np.ndarray | None:
        """The image with the user's box drawn on it (None when there is no readable image)."""
        if not image_path:
            return None
        from grounding.predictor import load_image

        try:
            img = load_image(image_path, self.predictor.max_pixels)
        except GroundingError:
            return None
        return img if box is None else draw_overlay(img, boxes=[box], labels=["your box"], colors=[BOX_COLOR], alpha=0)

    def run_image(self, image_path: str | None, prompt: str | None, box: list[float] | None = None,
                  box_mode: str = BOX_AS_REGION, box_to_mask: bool = False) -> ImageOutput:
        name = Path(image_path).name if image_path else None
        try:
            return self._run_image(image_path, (prompt or "").strip(), box, box_mode, box_to_mask)
        except GroundingError as e:
            msg, details = friendly_error(e, name, image_path)
            return ImageOutput(status=error_html(msg, details), warning=msg)
        except Exception as e:  # noqa: BLE001  (a bug, not the user's fault: a message here, the traceback in the log)
            log.exception("the image request failed")
            msg = f"Something went wrong inside the demo ({type(e).__name__}); the server's log has the details."
            return ImageOutput(status=error_html(msg), warning=msg)

    def _run_image(self, image_path, prompt, box, box_mode, box_to_mask) -> ImageOutput:
        from grounding.commands import result_payload
        from grounding.predictor import load_image

        if not image_path:
            raise DemoInputError("Upload an image (or pick an example below) first.")
        if box is not None and box_mode not in BOX_MODES:
            raise DemoInputError(f"Choose how to use the box: {' or '.join(BOX_MODES)}.")
        sam_box = box is not None and box_mode == BOX_AS_SAM
        if not prompt and not sam_box:
            raise DemoInputError("Type an instruction first, e.g. “Please segment the red circle.”")
        t0 = time.perf_counter()
        img = load_image(image_path, self.predictor.max_pixels)
        regions = None if box is None else [box]
        if sam_box:
            result = self._segment_box(img, box)
        else:
            result = self.predictor.predict(img, prompt, regions=regions, box_to_mask=box_to_mask)
        seconds = time.perf_counter() - t0

        overlay = result.draw(img)
        if box is not None:
            overlay = draw_overlay(overlay, boxes=[box], labels=["your box"], colors=[BOX_COLOR], alpha=0)
        colors = palette(len(result.segments))
        answer = answer_html(result.text, result.labels(), [s.phrase for s in result.segments], colors,
                             [s.box for s in result.segments])
        stem = Path(image_path).stem
        payload = result_payload(result, image=Path(image_path).name, prompt=prompt, model=self.model_name,
                                 regions=regions, box_mode=box_mode if box is not None else None,
                                 box_to_mask=bool(box_to_mask))
        json_path = self._new_file(stem, ".json")
        json_path.write_text(json.dumps(payload, indent=1) + "\n")

        n = len(result.segments)
        masks = sum(s.mask is not None for s in result.segments)
        notes = "".join(f"<br><small>skipped unreadable model output: {html.escape(s)}</small>" for s in result.skipped)
        if n == 0:
            msg = "Nothing was grounded: the answer has no mask and no box (the model found nothing that matches)."
            return ImageOutput(overlay, answer, str(json_path), notice_html(msg) + notes, info=msg)
        unused = " (the instruction is not used with a SAM box prompt)" if sam_box and prompt else ""
        status = ok_html(f"{n} object(s) grounded ({masks} with a mask) in {seconds:.1f} s{unused}") + notes
        return ImageOutput(overlay, answer, str(json_path), status)

    def _segment_box(self, img: np.ndarray, box: list[float]):
        """A mask from the box alone (the mask decoder's box prompt), through the tracking API on one frame."""
        from grounding.results import GroundingResult, Segment

        track_video = _tracking_api()
        tracked = track_video(self.predictor, [img], boxes=[box], max_frames=1)
        obj = tracked.frames[0].objects[0]
        seg = Segment("your box", obj.box if obj.box is not None else np.asarray(box, np.float32), obj.mask,
                      float(obj.score), "box+sam")
        text = "Mask from your box (SAM box prompt)." if obj.mask is not None else "The box gave no mask."
        return GroundingResult(text, [seg] if obj.mask is not None else [], text, tuple(img.shape[:2]))

    # ---------------------------------------------------------------------------------------------- videos
    def run_video(self, video_path: str | None, prompt: str | None,
                  progress: Callable[..., None] | None = None) -> VideoOutput:
        name = Path(video_path).name if video_path else None
        try:
            return self._run_video(video_path, (prompt or "").strip(), progress or (lambda *a, **k: None))
        except GroundingError as e:
            msg, details = friendly_error(e, name, video_path)
            return VideoOutput(status=error_html(msg, details), warning=msg)
        except Exception as e:  # noqa: BLE001
            log.exception("the video request failed")
            msg = f"Something went wrong inside the demo ({type(e).__name__}); the server's log has the details."
            return VideoOutput(status=error_html(msg), warning=msg)

    def _run_video(self, video_path, prompt, progress) -> VideoOutput:
        if not video_path:
            raise DemoInputError("Upload a video clip (or pick an example below) first.")
        if not prompt:
            raise DemoInputError("Say what to track first, e.g. “Please segment the blue circle.”")
        track_video = _tracking_api()
        from grounding.video import open_frames

        t0 = time.perf_counter()
        source = open_frames(video_path)
        total = len(source)
        limit = min(total, self.max_video_frames)
        progress(0.0, desc="Grounding the instruction on the first frame")
        result = track_video(self.predictor, source, prompt, max_frames=limit,
                             progress=lambda done: progress((done, limit), desc="Tracking", unit="frames"))
        progress(1.0, desc="Drawing the overlay video")

        ids = list(result.obj_ids)
        colors = palette(len(ids))
        labels = [result.phrases.get(i) or f"object {i}" for i in ids]
        color_of, label_of = dict(zip(ids, colors)), dict(zip(ids, labels))

        def frames():  # each object keeps its colour; objects out of sight are not drawn
            for f in result.frames:
                objs = [o for o in f.objects if o.visible]
                yield draw_overlay(source[f.frame_idx], masks=[o.mask for o in objs], boxes=[o.box for o in objs],
                                   labels=[label_of[o.obj_id] for o in objs],
                                   colors=[color_of[o.obj_id] for o in objs] if objs else None)

        stem = Path(video_path).stem
        video_out = self._new_file(stem + "-tracked", ".webm")
        count = write_webm(video_out, frames(), fps=result.fps or source.fps or 10.0)
        if count == 0:
            raise DemoInputError(f"No frames could be read from “{Path(video_path).name}”: is it a video clip?")
        payload = {"video": Path(video_path).name, "prompt": prompt, "model": self.model_name, **result.to_dict(),
                   "timings": {k: round(float(v), 4) for k, v in result.timings.items()}}
        json_path = self._new_file(stem + "-tracks", ".json")
        json_path.write_text(json.dumps(payload) + "\n")
        seconds = time.perf_counter() - t0

        answer = answer_html(result.text, labels, [result.phrases.get(i) for i in ids], colors)
        clipped = f" (the first {limit} of {total} frames)" if limit < total else ""
        if not ids:
            msg = "Nothing was grounded on the first frame, so there is nothing to track (the model found nothing " \
                  "that matches)."
            return VideoOutput(str(video_out), answer, str(json_path), notice_html(msg), info=msg)
        status = ok_html(f"{len(ids)} object(s) tracked over {count} frames{clipped} in {seconds:.1f} s")
        return VideoOutput(str(video_out), answer, str(json_path), status, extra={"frames": count})


def _tracking_api():
    """``grounding.tracking.track_video``, or a message that this installation has no video tracking."""
    try:
        from grounding.tracking import track_video
    except ImportError as e:
        raise DemoInputError(f"Video tracking is not available in this installation ({e}).") from None
    return track_video


def write_webm(path: str | os.PathLike, frames, fps: float = 10.0) -> int:
    """RGB frames (all of one size) -> a VP8 WebM that browsers play; returns the number of frames written.

    (``demo.visualize.write_video`` writes ``mp4v`` MP4 / MJPEG AVI, which browsers do not play inline.)
    """
    path = Path(path)
    writer = None
    count = 0
    try:
        for frame in frames:
            rgb = np.ascontiguousarray(frame[..., :3], dtype=np.uint8)
            if writer is None:
                h, w = rgb.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), float(fps), (w, h))
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write a VP8 WebM video to {path}")
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            count += 1
    finally:
        if writer is not None:
            writer.release()
    return count


# ------------------------------------------------------------------------------------------------- the page


def _gradio():
    try:
        import gradio
    except ModuleNotFoundError as e:
        if e.name != "gradio":
            raise
        raise GroundingError("the web demo needs gradio: pip install 'pixel-grounding[demo]'") from None
    return gradio


def _image_input(gr, **kwargs):
    """A ``gr.Image`` that hands unreadable uploads on as their path, so that the app (``load_image``) explains
    what is wrong in the page instead of Gradio failing inside PIL with a generic error.

    The instance's ``preprocess`` is wrapped (Gradio calls ``block.preprocess``); a subclass would do the same,
    but Gradio writes a ``.pyi`` stub beside the source file of every ``Component`` subclass it sees."""
    component = gr.Image(**kwargs)
    preprocess = component.preprocess

    def tolerant_preprocess(payload):
        try:
            return preprocess(payload)
        except Exception:  # noqa: BLE001  (PIL's errors for non-images vary)
            if payload is None or not getattr(payload, "path", None):
                raise
            return str(payload.path)

    component.preprocess = tolerant_preprocess
    return component


def build_demo(predictor, model_name: str = "default", max_video_frames: int = 150, out_dir=None):
    """The Gradio app (``gr.Blocks``) around ``predictor`` (a ``GroundingPredictor``); call ``.launch()`` on it."""
    gr = _gradio()
    app = DemoApp(predictor, model_name, max_video_frames, out_dir)

    def toast(out) -> None:
        if out.warning:
            gr.Warning(out.warning)
        elif out.info:
            gr.Info(out.info)

    def on_run_image(image_path, prompt, x1, y1, x2, y2, box_mode, box_to_mask):
        try:
            box = parse_box(x1, y1, x2, y2)
        except DemoInputError as e:
            out = ImageOutput(status=error_html(str(e)), warning=str(e))
        else:
            out = app.run_image(image_path, prompt, box, box_mode, box_to_mask)
        toast(out)
        return out.overlay, out.answer, out.json_path, out.status

    def on_upload(image_path):
        """A new image: forget the box; say at once when the file is not an image."""
        status = ""
        if image_path:
            from grounding.predictor import load_image

            try:
                load_image(image_path, predictor.max_pixels)
            except GroundingError as e:
                msg, details = friendly_error(e, Path(image_path).name, image_path)
                gr.Warning(msg)
                status = error_html(msg, details)
        return None, None, None, None, None, None, status

    def on_click(image_path, corner, evt: gr.SelectData):
        """Two clicks on the image give the box's corners; its preview goes in the result panel."""
        x, y = (float(v) for v in evt.index[:2])
        if corner is None:
            msg = f"First corner at ({x:.0f}, {y:.0f}): click the opposite corner."
            return (x, y), gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), ok_html(msg)
        box = [min(corner[0], x), min(corner[1], y), max(corner[0], x), max(corner[1], y)]
        msg = f"Box [{', '.join(f'{v:.0f}' for v in box)}]: run to use it, or click again for a new box."
        return None, *box, app.preview_box(image_path, box), ok_html(msg)

    on_click.__annotations__["evt"] = gr.SelectData  # how Gradio finds the event-data argument (a real class)

    def on_clear_box():
        return None, None, None, None, None, None, ""

    def on_run_video(video_path, prompt, progress=gr.Progress()):
        out = app.run_video(video_path, prompt, progress)
        toast(out)
        return out.video_path, out.answer, out.json_path, out.status

    with gr.Blocks(title="pixel-grounding demo", analytics_enabled=False) as demo:
        gr.Markdown(
            "## pixel-grounding\n"
            f"Pixel-level grounding with a multimodal LLM (model: `{model_name}`). Ask for a mask, a box, a "
            "grounded caption, or ask about a region you draw; track objects through a short clip."
        )
        with gr.Tab("Image", id="image-tab"):
            corner = gr.State(None)
            with gr.Row():
                with gr.Column():
                    image_in = _image_input(
                        gr, type="filepath", image_mode=None, sources=["upload", "clipboard"], height=420,
                        label="Image (click two corners to draw a box)", elem_id="image-input",
                    )
                    prompt = gr.Textbox(label="Instruction", placeholder="Please segment the red circle.",
                                        elem_id="image-prompt", max_lines=4)
                    with gr.Group():
                        with gr.Row():
                            x1 = gr.Number(label="box x1", precision=0, elem_id="box-x1", min_width=60)
                            y1 = gr.Number(label="y1", precision=0, elem_id="box-y1", min_width=60)
                            x2 = gr.Number(label="x2", precision=0, elem_id="box-x2", min_width=60)
                            y2 = gr.Number(label="y2", precision=0, elem_id="box-y2", min_width=60)
                        box_mode = gr.Radio(list(BOX_MODES), value=BOX_AS_REGION, label="Use the box as",
                                            elem_id="box-mode")
                    box_to_mask = gr.Checkbox(label="Turn boxes written in the answer into masks (SAM box prompt)",
                                              value=False, elem_id="box-to-mask")
                    with gr.Row():
                        clear_box = gr.Button("Clear box", elem_id="clear-box")
                        run = gr.Button("Run", variant="primary", elem_id="image-run")
                with gr.Column():
                    overlay = gr.Image(label="Result", interactive=False, format="png", height=420,
                                       elem_id="image-overlay")
                    answer = gr.HTML(elem_id="image-answer")
                    status = gr.HTML(elem_id="image-status")
                    json_file = gr.File(label="JSON: boxes + COCO RLE masks", interactive=False,
                                        elem_id="image-json")
            examples = [e for e in IMAGE_EXAMPLES if (ASSETS / e[1]).is_file()]
            gr.Examples(
                examples=[[str(ASSETS / f), p, *(b or (None,) * 4), m, t] for _, f, p, b, m, t in examples],
                example_labels=[e[0] for e in examples],
                inputs=[image_in, prompt, x1, y1, x2, y2, box_mode, box_to_mask],
                cache_examples=False,
                label="Examples (synthetic shapes like those the default model learnt from, and a photo)",
            )
            box_fields = [x1, y1, x2, y2]
            image_inputs = [image_in, prompt, *box_fields, box_mode, box_to_mask]
            image_outputs = [overlay, answer, json_file, status]
            run.click(on_run_image, image_inputs, image_outputs, api_name="ground_image", concurrency_id="model")
            prompt.submit(on_run_image, image_inputs, image_outputs, api_visibility="private",
                          concurrency_id="model")
            image_in.upload(on_upload, [image_in], [corner, *box_fields, overlay, status], api_visibility="private")
            image_in.clear(on_clear_box, None, [corner, *box_fields, overlay, status], api_visibility="private")
            image_in.select(on_click, [image_in, corner], [corner, *box_fields, overlay, status],
                            api_visibility="private")
            clear_box.click(on_clear_box, None, [corner, *box_fields, overlay, status], api_visibility="private")

        with gr.Tab("Video", id="video-tab"):
            with gr.Row():
                with gr.Column():
                    video_in = gr.Video(label="Video clip (a few seconds)", sources=["upload"], elem_id="video-input",
                                        height=360)
                    v_prompt = gr.Textbox(label="What to track", placeholder="Please segment the blue circle.",
                                          elem_id="video-prompt", max_lines=4)
                    v_run = gr.Button("Track", variant="primary", elem_id="video-run")
                with gr.Column():
                    video_out = gr.Video(label="Tracked", interactive=False, elem_id="video-overlay", height=360,
                                         loop=True, autoplay=True)
                    v_answer = gr.HTML(elem_id="video-answer")
                    v_status = gr.HTML(elem_id="video-status")
                    v_json = gr.File(label="JSON: per-frame boxes + COCO RLE masks", interactive=False,
                                     elem_id="video-json")
            v_examples = [e for e in VIDEO_EXAMPLES if (ASSETS / e[1]).is_file()]
            gr.Examples(
                examples=[[str(ASSETS / f), p] for _, f, p in v_examples],
                example_labels=[e[0] for e in v_examples],
                inputs=[video_in, v_prompt],
                cache_examples=False,
                label="Examples",
            )
            video_inputs = [video_in, v_prompt]
            video_outputs = [video_out, v_answer, v_json, v_status]
            v_run.click(on_run_video, video_inputs, video_outputs, api_name="track_video", concurrency_id="model")
            v_prompt.submit(on_run_video, video_inputs, video_outputs, api_visibility="private",
                            concurrency_id="model")
    demo.queue(default_concurrency_limit=1)  # one CPU-heavy model call at a time (the predictor is serialised)
    return demo


# ------------------------------------------------------------------------------------------------- command


def _bool(text: str) -> bool:
    v = str(text).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grounding demo", description="The interactive web demo (Gradio).")
    p.add_argument("--model", default="default",
                   help="default | tiny | an exported folder | a .ckpt (default: default)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to listen on (default: 127.0.0.1, or $GRADIO_SERVER_NAME)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                   help="port (default: 7860, or $GRADIO_SERVER_PORT)")
    p.add_argument("--share", type=_bool, nargs="?", const=True, default=False,
                   help="a public gradio.live link (needs the internet; default: false)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--max-new-tokens", type=int, default=96, help="longest answer, in tokens (default: 96)")
    p.add_argument("--max-video-frames", type=int, default=150, help="track at most this many frames (default: 150)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload, MiB (default: 50)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``grounding demo``: load the model, then serve the app until interrupted; returns the exit status."""
    if argv is not None and any(a in ("-h", "--help") for a in argv):
        parser().print_help()
        return 0
    args = parser().parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        _gradio()
        from grounding.commands import load_predictor

        print(f"loading model {args.model!r} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        predictor = load_predictor(args.model, args.device, max_new_tokens=args.max_new_tokens)
        print(f"loaded in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    except (GroundingError, OSError) as e:
        print(f"grounding demo: error: {e}", file=sys.stderr)
        return 2
    demo = build_demo(predictor, model_name=args.model, max_video_frames=args.max_video_frames)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        allowed_paths=[str(ASSETS)],
        max_file_size=int(args.max_upload_mb * 2**20),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Inference speed and memory of ``GroundingPredictor``; prints a table (markdown).

    python benchmarks/predict_speed.py                 # the embedded default model (the README's numbers)
    python benchmarks/predict_speed.py --model tiny    # a quick smoke run

Measures, on this machine's CPU:

1. image-encoder passes per image in ``predict``, ``predict`` after ``set_image`` (several prompts) and
   ``predict_batch`` (counted by wrapping the mask head's ``encode_image``); the target is 1;
2. end-to-end ``predict`` time against the sum of its unavoidable parts, each timed alone on the same input:
   the image encoder, the vision-LLM's generation (same tokens) and the mask decoder on the answer's [SEG]
   states; target ratio <= 1.10 on the default model;
3. ``predict_batch`` of N images against N single ``predict`` calls, in images/second; target >= 1.5x;
4. peak memory (max RSS) of a ``grounding predict`` process (``resource.getrusage(RUSAGE_CHILDREN)``).

Times are the best of ``--repeats`` runs after one warm-up (on a shared 2-core machine other processes only
ever add time; each part's best is taken on its own, so the ratio in 2. errs high). Busy neighbours distort
all of it: compare numbers from one quiet run.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
clock = time.perf_counter  # --clock cpu: time.process_time (with --threads 1, robust to busy neighbours)
SHAPES = ROOT / "demo" / "assets" / "shapes.png"
PROMPT = "Please segment the red circle."


class EncoderCounter:
    """Counts images through the mask head's image encoder."""

    def __init__(self, model):
        self.head = model.mask_head
        self.images = 0

    def __enter__(self):
        self._orig = self.head.encode_image

        def counted(x, *a, **k):
            self.images += int(x.shape[0])
            return self._orig(x, *a, **k)

        self.head.encode_image = counted
        return self

    def __exit__(self, *exc):
        self.head.encode_image = self._orig


def scenes(n: int, offset: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """``n`` distinct synthetic test scenes with a referring prompt each (the default model's own world)."""
    from data.synthetic import SyntheticGrounding

    ds = SyntheticGrounding(split="test", length=offset + n, tasks=["res"])
    images, prompts = [], []
    for i in range(offset, offset + n):
        s = ds[i]
        images.append(s.image)
        prompts.append("".join(p for p in s.turns[0].prompt if isinstance(p, str)))
    return images, prompts


def peak_rss_of_cli(model: str, max_new_tokens: int, encoder_precision: str = "auto") -> tuple[float, float]:
    """(max RSS in MiB, wall seconds) of ``grounding predict`` on the quick-start image, as a subprocess."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "grounding.cli", "predict", "--image", str(SHAPES), "--prompt", PROMPT,
               "--model", model, "--out", out, "--max-new-tokens", str(max_new_tokens),
               "--encoder-precision", encoder_precision]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"grounding predict failed:\n{proc.stderr[-2000:]}")
    kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux, of the largest child so far
    return kib / 1024, wall


def encoder_passes(predictor, images, prompts) -> dict[str, float]:
    """Image-encoder passes per distinct image in each mode."""
    model = predictor.model
    out = {}
    with EncoderCounter(model) as c:
        for im, q in zip(images[:2], prompts[:2]):
            predictor.reset_image()
            predictor.predict(im, q)
    out["predict"] = c.images / 2
    with EncoderCounter(model) as c:
        predictor.reset_image()
        predictor.set_image(images[0])
        for q in (prompts[0], "Segment the green square.", "Find the purple star and segment it."):
            predictor.predict(prompt=q)
    out["predict after set_image (3 prompts)"] = c.images / 1
    with EncoderCounter(model) as c:
        predictor.predict_batch(images + images[:2], prompts + prompts[:2])  # two images twice
    out[f"predict_batch ({len(images) + 2} requests, {len(images)} images)"] = c.images / len(images)
    return out


@torch.no_grad()
def parts_alone(predictor, image: np.ndarray, prompt: str) -> dict[str, float]:
    """The unavoidable parts of one ``predict``, each timed alone on the same input (seconds)."""
    model, proc = predictor.model, predictor.processor
    req = proc.encode_request(image, prompt)
    batch = proc.collate([req], padding_side="left").to(predictor.device)
    t0 = clock()
    emb = model.encode_images(batch.sam_images, None)
    t1 = clock()
    vlm = model.vision_llm
    gen = vlm.generate(
        batch.input_ids, batch.attention_mask, batch.image_inputs, batch.token_fields,
        image_features=emb if vlm.uses_mask_head_features else None,
        inject=model._inject(emb, batch.regions), max_new_tokens=predictor.max_new_tokens,
    )
    t2 = clock()
    seq = gen.sequences[0].tolist()
    seg_pos = [t for t, i in enumerate(seq) if i == model.tokens.seg]
    n_tokens = next((t for t, i in enumerate(seq) if i in (vlm.tokenizer.eos_token_id, vlm.tokenizer.pad_token_id)), len(seq))
    seg_pos = [t for t in seg_pos if t < n_tokens]
    t3 = t4 = clock()
    if seg_pos:
        hidden = gen.hidden[0, seg_pos]
        boxes = torch.full((len(seg_pos), 4), float("nan"), device=emb.device)
        t3 = clock()
        model.decode_masks(emb, hidden, torch.zeros(len(seg_pos), dtype=torch.long, device=emb.device), boxes)
        t4 = clock()
    return {"encoder": t1 - t0, "generate": t2 - t1, "mask_decoder": t4 - t3, "tokens": n_tokens, "segs": len(seg_pos)}


def end_to_end(predictor, image, prompt, repeats: int) -> tuple[float, dict[str, float]]:
    """Best wall time of ``predict`` (image encoder included) and the best of each part alone."""
    e2e, parts = [], []
    for _ in range(repeats):
        predictor.reset_image()
        t = clock()
        predictor.predict(image, prompt)
        e2e.append(clock() - t)
        parts.append(parts_alone(predictor, image, prompt))
    best = {k: min(p[k] for p in parts) for k in parts[0]}
    return min(e2e), best


def batch_vs_single(predictor, images, prompts, repeats: int) -> tuple[float, float]:
    """(images/s of single predict calls, images/s of one predict_batch), best of ``repeats``."""
    single, batched = [], []
    for _ in range(repeats):
        predictor.reset_image()
        t = clock()
        for im, q in zip(images, prompts):
            predictor.predict(im, q)
        single.append(clock() - t)
        t = clock()
        predictor.predict_batch(images, prompts)
        batched.append(clock() - t)
    n = len(images)
    return n / min(single), n / min(batched)


@torch.no_grad()
def batch_parts(predictor, images, prompts) -> dict[str, float]:
    """Per-image seconds of the image encoder and of generation, one image at a time and as one batch."""
    model, proc = predictor.model, predictor.processor
    vlm = model.vision_llm
    reqs = [proc.encode_request(im, q) for im, q in zip(images, prompts)]
    batch = proc.collate(reqs, padding_side="left").to(predictor.device)
    n = len(reqs)

    def generate(b, emb):
        return vlm.generate(
            b.input_ids, b.attention_mask, b.image_inputs, b.token_fields,
            image_features=emb if vlm.uses_mask_head_features else None,
            inject=model._inject(emb, b.regions), max_new_tokens=predictor.max_new_tokens,
        )

    t = clock()
    single_emb = [model.encode_images(batch.sam_images[i : i + 1], None) for i in range(n)]
    e1 = (clock() - t) / n
    t = clock()
    emb = model.encode_images(batch.sam_images, None)
    en = (clock() - t) / n
    t = clock()
    for i in range(n):
        generate(proc.collate([reqs[i]], padding_side="left").to(predictor.device), single_emb[i])
    g1 = (clock() - t) / n
    t = clock()
    generate(batch, emb)
    gn = (clock() - t) / n
    return {"encoder_single": e1, "encoder_batched": en, "generate_single": g1, "generate_batched": gn}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", default="default",
        help="default | tiny | an exported folder | a .ckpt | default-untrained (the default architecture, untrained)",
    )
    ap.add_argument("--batch", type=int, default=8, help="images in the predict_batch comparison")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (the best counts)")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    from heads.sam import ENCODER_PRECISIONS

    ap.add_argument("--encoder-precision", choices=ENCODER_PRECISIONS, default="auto",
                    help="GroundingPredictor's encoder_precision (auto: bf16 where native, as `grounding predict`)")
    ap.add_argument("--skip-rss", action="store_true", help="skip the peak-memory subprocess")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice, one per core)")
    ap.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="wall: elapsed time (the real numbers, on a quiet machine); cpu: this process's CPU time, which with "
        "--threads 1 hardly depends on other busy processes",
    )
    ap.add_argument("--profile", metavar="HTML", help="also profile one predict with pyinstrument into this file")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    from grounding import GroundingPredictor
    from grounding.predictor import load_image

    rows: list[tuple[str, str, str]] = []
    if not args.skip_rss and args.model != "default-untrained":  # first, so that RUSAGE_CHILDREN holds this one child only
        rss, wall = peak_rss_of_cli(args.model, args.max_new_tokens, args.encoder_precision)
        rows.append(("peak RSS of `grounding predict` (one image, model load included)", f"{rss:,.0f} MiB", f"wall {wall:.1f} s"))

    t = clock()
    if args.model == "default-untrained":  # the default model's architecture before its training has landed
        from grounding.presets import PRESETS

        model, processor = PRESETS["default"]().build()
        predictor = GroundingPredictor(
            model.eval(), processor, max_new_tokens=args.max_new_tokens, encoder_precision=args.encoder_precision
        )
    else:
        predictor = GroundingPredictor.from_pretrained(
            args.model, max_new_tokens=args.max_new_tokens, encoder_precision=args.encoder_precision
        )
    load_s = clock() - t
    predictor.model.feature_cache = None  # every encoder pass is real
    image = load_image(SHAPES)
    images, prompts = scenes(args.batch)
    predictor.predict(image, PROMPT)  # warm-up
    predictor.predict_batch(images[:2], prompts[:2])

    for mode, n in encoder_passes(predictor, images, prompts).items():
        rows.append((f"image-encoder passes per image: {mode}", f"{n:g}", "target 1"))

    e2e, parts = end_to_end(predictor, image, PROMPT, args.repeats)
    unavoidable = parts["encoder"] + parts["generate"] + parts["mask_decoder"]
    rows.append(("`predict` end to end (shapes.png, red circle)", f"{e2e:.3f} s", f"{parts['tokens']:.0f} tokens, {parts['segs']:.0f} [SEG]"))
    rows.append(("  image encoder alone", f"{parts['encoder']:.3f} s", ""))
    rows.append(("  generation alone", f"{parts['generate']:.3f} s", ""))
    rows.append(("  mask decoder alone", f"{parts['mask_decoder']:.3f} s", ""))
    ratio = e2e / unavoidable
    rows.append(("`predict` / sum of the parts", f"{ratio:.3f}", "target <= 1.10 " + ("(met)" if ratio <= 1.10 else "(NOT met)")))

    single, batched = batch_vs_single(predictor, images, prompts, args.repeats)
    speedup = batched / single
    rows.append((f"{args.batch} single `predict` calls", f"{single:.2f} images/s", ""))
    rows.append((f"`predict_batch` of {args.batch}", f"{batched:.2f} images/s", ""))
    rows.append(("batch speed-up", f"{speedup:.2f}x", "target >= 1.5x " + ("(met)" if speedup >= 1.5 else "(NOT met)")))
    bp = batch_parts(predictor, images, prompts)
    rows.append(("  image encoder per image: one at a time", f"{bp['encoder_single']:.3f} s", ""))
    rows.append((f"  image encoder per image: {args.batch} in one call", f"{bp['encoder_batched']:.3f} s",
                 f"encoder_batch_size {predictor.encoder_batch_size or 'auto (1 on CPU)'}"))
    rows.append(("  generation per image: one at a time", f"{bp['generate_single']:.3f} s", ""))
    rows.append((f"  generation per image: {args.batch} in one batch", f"{bp['generate_batched']:.3f} s", ""))
    e = min(bp["encoder_single"], bp["encoder_batched"])
    bound = (bp["encoder_single"] + bp["generate_single"]) / (e + bp["generate_batched"])
    rows.append(("  speed-up these parts allow", f"{bound:.2f}x",
                 "(encoder + generation) single / batched: the encoder does not batch on a CPU"))
    rows.append(("model load (in-process)", f"{load_s:.1f} s", ""))

    if args.profile:
        from pyinstrument import Profiler

        predictor.reset_image()
        prof = Profiler(interval=0.002)
        with prof:
            predictor.predict(image, PROMPT)
        Path(args.profile).write_text(prof.output_html())
        rows.append(("profile of one predict", args.profile, ""))

    precision = predictor.model.mask_head.encoder_precision
    print(f"\nmodel: {args.model}; image encoder: {precision} ({args.encoder_precision}); clock: {args.clock}; torch threads: {torch.get_num_threads()}; cpu count: {os.cpu_count()}; "
          f"load average: {', '.join(f'{v:.1f}' for v in os.getloadavg())}\n")
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"| {'measure':<{w0}} | {'value':<{w1}} | note |")
    print(f"|{'-' * (w0 + 2)}|{'-' * (w1 + 2)}|------|")
    for a, b, c in rows:
        print(f"| {a:<{w0}} | {b:<{w1}} | {c} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

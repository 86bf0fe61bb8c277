"""GroundingPredictor on the tiny random model: input kinds, the encode-once contract of set_image / predict /
predict_batch, results in the original frame (JSON with RLE, COCO records, overlays), empty answers, regions
and thread safety. Answers that must hold grounding tokens are scripted (tests/_scripted.py): the tiny model's
own answers are noise."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

from grounding import GroundingPredictor, GroundingResult
from grounding.errors import InvalidPromptError
from grounding.results import decode_rle

from _scripted import EncoderCounter, exif_rotated_jpeg, one_torch_thread, png_bytes, scene, scripted_answers

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)

PROMPT = "Please segment the red circle."
SEG_ANSWER = "Sure, <p>the red circle</p> [SEG]."


@pytest.fixture(scope="module")
def predictor() -> GroundingPredictor:
    return GroundingPredictor.from_pretrained("tiny", max_new_tokens=40)


def _check_result(res: GroundingResult, hw: tuple[int, int]) -> None:
    assert res.image_size == hw
    for s in res.segments:
        if s.mask is not None:
            assert s.mask.shape == hw and s.mask.dtype == bool
        if s.box is not None:
            assert np.all(np.isfinite(s.box)) and s.box.shape == (4,)
            assert 0 <= s.box[0] <= s.box[2] <= hw[1] and 0 <= s.box[1] <= s.box[3] <= hw[0]
        assert 0.0 <= s.score <= 1.0
    json.dumps(res.to_dict())


def test_predict_returns_a_result_in_the_original_frame(predictor):
    img = scene(70, 100)
    res = predictor.predict(img, PROMPT)
    _check_result(res, (70, 100))
    assert isinstance(res.text, str)
    assert {"set_image", "preprocess", "generate", "masks", "total"} <= set(res.timings)


@pytest.mark.parametrize("kind", ["path", "bytes", "pil", "gray", "rgba", "float"])
def test_input_kinds(predictor, tmp_path, kind):
    img = scene(50, 64)
    if kind == "path":
        p = tmp_path / "img.png"
        Image.fromarray(img).save(p)
        x = str(p)
    elif kind == "bytes":
        x = png_bytes(img)
    elif kind == "pil":
        x = Image.fromarray(img)
    elif kind == "gray":
        x = img[..., 0]
    elif kind == "rgba":
        x = np.concatenate([img, np.full((50, 64, 1), 128, np.uint8)], axis=2)
    else:
        x = img.astype(np.float32) / 255.0
    with scripted_answers(predictor, SEG_ANSWER):
        res = predictor.predict(x, PROMPT)
    _check_result(res, (50, 64))
    assert len(res.segments) == 1 and res.segments[0].mask.shape == (50, 64)


def test_exif_orientation_is_applied(predictor, tmp_path):
    img = scene(40, 80)  # stored landscape, shown portrait (orientation 6)
    p = tmp_path / "rotated.jpg"
    p.write_bytes(exif_rotated_jpeg(img, 6))
    with scripted_answers(predictor, SEG_ANSWER):
        res = predictor.predict(str(p), PROMPT)
    assert res.image_size == (80, 40)
    assert res.segments[0].mask.shape == (80, 40)
    assert predictor.image.shape == (80, 40, 3)


def test_set_image_encodes_once_for_many_prompts(predictor):
    predictor.reset_image()
    with EncoderCounter(predictor) as c:
        predictor.set_image(scene(seed=1))
        for q in (PROMPT, "What is in the image?", "Find the largest shape."):
            predictor.predict(prompt=q, max_new_tokens=4)
        predictor.predict(scene(seed=1), PROMPT, max_new_tokens=4)  # the same image again: still cached
    assert (c.calls, c.images) == (1, 1)


def test_predict_encodes_each_new_image_once(predictor):
    with EncoderCounter(predictor) as c, scripted_answers(predictor, "<box>[100, 100, 600, 600]</box> and [SEG]."):
        for seed in (2, 3):
            predictor.predict(scene(seed=seed), PROMPT, box_to_mask=True)
    assert (c.calls, c.images) == (2, 2)


def test_predict_batch_encodes_each_distinct_image_once(predictor):
    a, b = scene(seed=4), scene(60, 90, seed=5)
    with EncoderCounter(predictor) as c, scripted_answers(predictor, "<box>[100, 100, 600, 600]</box> and [SEG]."):
        res = predictor.predict_batch([a, b, a], [PROMPT, PROMPT, "Find the square."], box_to_mask=True)
    assert c.images == 2 and c.calls == 2  # one image per encoder call on a CPU (encoder_batch_size)
    assert [r.image_size for r in res] == [(72, 96), (60, 90), (72, 96)]
    for r in res:
        assert [s.source for s in r.segments] == ["box+sam", "seg"]
        _check_result(r, r.image_size)


def test_encoder_batch_size(predictor):
    images = [scene(seed=30 + i) for i in range(3)]
    old = predictor.encoder_batch_size
    try:
        for n, calls in ((None, 3), (1, 3), (2, 2), (8, 1)):
            predictor.encoder_batch_size = n
            with EncoderCounter(predictor) as c:
                res = predictor.predict_batch(images + images[:1], [PROMPT] * 4, max_new_tokens=4)
            assert (c.calls, c.images) == (calls, 3)
            assert [r.raw_text for r in res] == [res[0].raw_text, res[1].raw_text, res[2].raw_text, res[0].raw_text]
    finally:
        predictor.encoder_batch_size = old


def test_predict_batch_matches_single_predictions(predictor):
    images = [scene(40 + 9 * i, 64, seed=10 + i) for i in range(3)]
    prompts = [PROMPT, "What is in the image?", "Describe the image with grounded phrases."]
    batch = predictor.predict_batch(images, prompts, max_new_tokens=12)
    single = [predictor.predict(im, q, max_new_tokens=12) for im, q in zip(images, prompts)]
    assert [r.raw_text for r in batch] == [r.raw_text for r in single]
    assert [r.to_dict() for r in batch] == [r.to_dict() for r in single]


def test_predict_batch_empty_and_mismatched(predictor):
    assert predictor.predict_batch([], []) == []
    with pytest.raises(InvalidPromptError):
        predictor.predict_batch([scene()], [PROMPT, PROMPT])


def test_result_json_rle_and_coco(predictor):
    img = scene(60, 120)
    answer = "Sure: <p>a red circle</p> [SEG] and <p>a box</p> <box>[0, 0, 499, 999]</box>."
    with scripted_answers(predictor, answer):
        res = predictor.predict(img, PROMPT, max_new_tokens=96)
    assert res.text == "Sure: a red circle and a box [0, 0, 60, 60]."  # the box in original pixels
    assert [s.phrase for s in res.segments] == ["a red circle", "a box"]
    assert [s.source for s in res.segments] == ["seg", "box"]
    np.testing.assert_allclose(res.segments[1].box, [0, 0, 499 / 999 * 120, 60], atol=0.01)  # 0..999 -> original pixels
    d = json.loads(json.dumps(res.to_dict()))
    assert d["image_size"] == [60, 120]
    np.testing.assert_array_equal(decode_rle(d["segments"][0]["mask"]), res.segments[0].mask)
    assert d["segments"][1]["mask"] is None
    coco = res.to_coco(image_id=7)
    assert [r["image_id"] for r in coco] == [7, 7]
    assert "segmentation" in coco[0] and "segmentation" not in coco[1]
    x1, y1, w, h = coco[1]["bbox"]
    assert w == pytest.approx(499 / 999 * 120, abs=0.01) and h == pytest.approx(60, abs=0.1)


def test_box_to_mask(predictor):
    img = scene(64, 64)
    with scripted_answers(predictor, "It is <box>[100, 100, 600, 600]</box>."):
        plain = predictor.predict(img, PROMPT)
        masked = predictor.predict(img, PROMPT, box_to_mask=True)
    assert plain.segments[0].mask is None and plain.segments[0].source == "box"
    s = masked.segments[0]
    assert s.source == "box+sam" and s.mask.shape == (64, 64) and 0 <= s.score <= 1
    np.testing.assert_allclose(s.box, plain.segments[0].box)


def test_no_target_answer_is_empty(predictor):
    img = scene()
    with scripted_answers(predictor, "There is no green star in the image."):
        res = predictor.predict(img, "Please segment the green star.")
    assert res.segments == [] and res.skipped == []
    assert not res.union_mask().any() and res.union_mask().shape == img.shape[:2]
    assert res.boxes.shape == (0, 4) and res.to_coco() == []
    assert res.to_dict()["segments"] == []
    np.testing.assert_array_equal(res.draw(img), img)


def test_draw_overlay(predictor):
    img = np.full((64, 80, 3), 40, np.uint8)
    with scripted_answers(predictor, SEG_ANSWER + " <box>[100, 100, 900, 900]</box>"):
        res = predictor.predict(img, PROMPT, max_new_tokens=96)
    res.segments[0].mask = np.zeros((64, 80), bool)
    res.segments[0].mask[10:30, 10:40] = True
    out = res.draw(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out[20, 25] != img[20, 25]).any()  # inside the mask: blended
    assert res.labels()[0].startswith("the red circle ")
    with pytest.raises(ValueError):
        res.draw(img[:10])


def test_region_prompts(predictor):
    img = scene(64, 96)
    r1 = predictor.predict(img, "What is in <region>?", regions=[[10, 10, 40, 50]])
    r2 = predictor.predict(img, "What is in it?", regions=[[10, 10, 40, 50]])  # placeholder added in front
    _check_result(r1, (64, 96))
    _check_result(r2, (64, 96))
    r3 = predictor.predict(img, "Compare <region> and <region>.", regions=np.array([[0, 0, 20, 20], [30, 30, 90, 60]]))
    _check_result(r3, (64, 96))


def test_concurrent_predictions_match_sequential(predictor):
    jobs = [(scene(40 + 8 * i, 72, seed=20 + i), q) for i, q in enumerate([PROMPT, "Find the square.", "What is it?", PROMPT])]
    expected = [predictor.predict(im, q, max_new_tokens=8).to_dict() for im, q in jobs]
    got: dict[int, dict] = {}
    errors = []

    def work(i):
        try:
            im, q = jobs[i]
            got[i] = predictor.predict(im, q, max_new_tokens=8).to_dict()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert [got[i] for i in range(len(jobs))] == expected


def test_from_pretrained_unknown_model():
    with pytest.raises(FileNotFoundError, match="no model"):
        GroundingPredictor.from_pretrained("/no/such/model/folder")


def test_encoder_precision(predictor):
    """bf16 runs the image encoder under autocast and hands back float32 embeddings close to float32's; auto
    follows the hardware; a bad name is a clear error; training (autocast already on) is left alone."""
    import torch

    from grounding.errors import GroundingError
    from heads.sam import _cpu_has_native_bf16

    head = predictor.model.mask_head
    x = torch.randn(1, 3, head.image_size, head.image_size)
    old = head.encoder_dtype
    try:
        assert head.set_encoder_precision("fp32") is None
        with torch.no_grad():
            ref = head.encode_image(x)
        assert head.set_encoder_precision("bf16") is torch.bfloat16
        with torch.no_grad():
            low = head.encode_image(x)
        assert low.dtype == torch.float32 and not torch.equal(low, ref)  # computed in bf16, returned as float32
        assert (low - ref).norm() / ref.norm() < 0.05
        head.set_encoder_precision("fp16")
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # the caller's autocast decides (training)
            assert torch.equal(head.encode_image(x), head.image_encoder(x))
        assert head.set_encoder_precision("auto", "cpu") == (torch.bfloat16 if _cpu_has_native_bf16() else None)
        with pytest.raises(ValueError, match="encoder precision"):
            head.set_encoder_precision("int8")
        with pytest.raises(GroundingError, match="encoder precision"):
            GroundingPredictor(predictor.model, predictor.processor, encoder_precision="half")
        fp32 = GroundingPredictor(predictor.model, predictor.processor, encoder_precision="fp32")
        assert fp32.encoder_dtype is None and head.encoder_dtype is None and head.encoder_precision == "fp32"
        from grounding.commands import predict_parser
        from heads.sam import ENCODER_PRECISIONS

        flag = next(a for a in predict_parser()._actions if a.dest == "encoder_precision")
        assert tuple(flag.choices) == ENCODER_PRECISIONS  # the CLI's literal copy stays in step
    finally:
        head.encoder_dtype = old

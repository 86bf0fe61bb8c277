"""Bad input at each level where it applies - the Python API, ``grounding predict`` and ``POST /v1/predict``:
a typed error (API), one line on stderr with exit status 2 and no traceback (CLI), a 4xx with a message (HTTP),
or a well-formed result when the model's own answer is malformed. Never a crash or a hang."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from grounding import GroundingPredictor
from grounding.commands import predict_main
from grounding.errors import GroundingError, InvalidImageError, InvalidPromptError, InvalidRegionError

from _scripted import one_torch_thread, png_bytes, png_header_only, scene, scripted_answers

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)

pytestmark = pytest.mark.timeout(300)

PROMPT = "Please segment the red circle."

# (name, file bytes, HTTP status); every one is an InvalidImageError in the API and exit status 2 in the CLI
BAD_FILES = [
    ("text", b"this is not an image, just text\n", 415),
    ("empty", b"", 415),
    ("truncated", png_bytes(scene())[:120], 415),
    ("zero_width", png_header_only(0, 32), 415),
    ("bomb", png_header_only(100_000, 100_000), 413),  # 10^10 pixels claimed in a 100-byte file
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>', 415),
]

# (name, regions, prompt); every one is an InvalidRegionError / InvalidPromptError, exit 2, HTTP 422
BAD_REGIONS = [
    ("outside", [[1000, 1000, 1200, 1200]], "What is in <region>?"),
    ("negative_outside", [[-50, -50, -10, -10]], "What is in <region>?"),
    ("reversed", [[40, 40, 10, 10]], "What is in <region>?"),
    ("empty_box", [[10, 10, 10, 30]], "What is in <region>?"),
    ("three_numbers", [[1, 2, 3]], "What is in <region>?"),
    ("nan", [[float("nan"), 0, 10, 10]], "What is in <region>?"),
    ("placeholders_mismatch", [[0, 0, 10, 10]], "Compare <region> and <region>."),
    ("placeholder_without_region", None, "What is in <region>?"),
]

# answers the model might write; each must give a well-formed result
MALFORMED_ANSWERS = {
    "box_three_numbers": "It is <box>[1, 2, 3</box>.",
    "box_not_numbers": "It is <box>[a, b, c, d]</box> [SEG].",
    "box_truncated": "It is <box>[100, 200",
    "box_out_of_range": "It is <box>[-50, 100, 5000, 99999]</box>.",
    "box_reversed": "It is <box>[800, 900, 100, 50]</box> [SEG].",
    "box_zero_area": "It is <box>[500, 500, 500, 500]</box>.",
    "phrase_unclosed": "<p>the red circle [SEG] and <p>a star</p> [SEG].",
    "phrase_close_only": "the red circle</p> [SEG] </p>",
    "many_seg": "Sure, " + " ".join(["[SEG]"] * 30) + ".",
    "seg_as_plain_text": ("Sure, [ SEG ] and [S", "EG]."),
    "only_tokens": "[SEG]<p></p><box></box>[SEG]",
    "empty": "",
    "no_eos_at_limit": "Sure, it is [SEG] and " * 12,
}


@pytest.fixture(scope="module")
def predictor() -> GroundingPredictor:
    return GroundingPredictor.from_pretrained("tiny", max_new_tokens=16)


@pytest.fixture(scope="module")
def client(predictor):
    from fastapi.testclient import TestClient

    from grounding.server import ServerLimits, create_app

    limits = ServerLimits(max_upload_bytes=1_000_000, max_pixels=4_000_000, max_new_tokens=16)
    with TestClient(create_app(predictor, limits, model_name="tiny")) as c:
        yield c


def _post(client, image: bytes, prompt: str = PROMPT, **fields):
    data = {"prompt": prompt, **{k: v for k, v in fields.items() if v is not None}}
    return client.post("/v1/predict", files={"image": ("upload.png", image, "image/png")}, data=data)


def _cli(capsys, argv) -> tuple[int, str]:
    rc = predict_main(argv)
    err = capsys.readouterr().err
    return rc, err


def _assert_one_line_error(rc: int, err: str) -> None:
    assert rc == 2
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("grounding predict: error:")]
    assert len(lines) == 1, err


def _well_formed(res, hw) -> dict:
    assert res.image_size == hw
    for s in res.segments:
        assert s.box is None or (s.box.shape == (4,) and np.all(np.isfinite(s.box)))
        if s.box is not None:
            assert 0 <= s.box[0] <= s.box[2] <= hw[1] and 0 <= s.box[1] <= s.box[3] <= hw[0]
        assert s.mask is None or (s.mask.shape == hw and s.mask.dtype == bool)
        assert 0 <= s.score <= 1
    return json.loads(json.dumps(res.to_dict()))


# --------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("name,data,status", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_image_api(predictor, tmp_path, name, data, status):
    p = tmp_path / f"{name}.png"
    p.write_bytes(data)
    t = time.perf_counter()
    for x in (str(p), data):
        with pytest.raises(InvalidImageError):
            predictor.predict(x, PROMPT)
    assert time.perf_counter() - t < 5  # refused from the header, never decoded


@pytest.mark.parametrize("name,data,status", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_image_cli(capsys, tmp_path, name, data, status):
    p = tmp_path / f"{name}.png"
    p.write_bytes(data)
    rc, err = _cli(capsys, ["--image", str(p), "--prompt", PROMPT, "--model", "tiny", "--out", str(tmp_path / "o")])
    _assert_one_line_error(rc, err)
    assert not (tmp_path / "o" / f"{name}.json").exists()


@pytest.mark.parametrize("name,data,status", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_image_http(client, name, data, status):
    r = _post(client, data)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]


def test_missing_image(predictor, capsys, tmp_path, client):
    with pytest.raises(InvalidImageError, match="no image file"):
        predictor.predict(str(tmp_path / "nope.png"), PROMPT)
    rc, err = _cli(capsys, ["--image", str(tmp_path / "nope.png"), "--prompt", PROMPT, "--out", str(tmp_path)])
    _assert_one_line_error(rc, err)
    assert "no image file" in err
    r = client.post("/v1/predict", data={"prompt": PROMPT})
    assert r.status_code == 422


def test_zero_size_and_huge_arrays(predictor):
    for arr in (np.zeros((0, 10, 3), np.uint8), np.zeros((10, 0), np.uint8), np.zeros((5,), np.uint8)):
        with pytest.raises(InvalidImageError):
            predictor.predict(arr, PROMPT)
    small = GroundingPredictor(predictor.model, predictor.processor, max_pixels=10_000)
    with pytest.raises(InvalidImageError, match="above the limit"):
        small.predict(np.zeros((200, 200, 3), np.uint8), PROMPT)
    with pytest.raises(InvalidImageError, match="above the limit"):
        small.predict(png_bytes(np.zeros((200, 200, 3), np.uint8)), PROMPT)
    for bad in (np.zeros((8, 8, 7), np.uint8), np.full((8, 8, 3), "a"), np.zeros((8, 8, 3), object)):
        with pytest.raises(InvalidImageError):
            predictor.predict(bad, PROMPT)


def test_huge_upload_refused_before_reading(client):
    big = b"\x00" * 1_500_000
    r = _post(client, big)
    assert r.status_code == 413 and "too large" in r.json()["detail"]

    def chunks():  # no Content-Length: counted while reading
        for _ in range(30):
            yield b"\x00" * 100_000

    r = client.post("/v1/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413


def test_pixel_limit_http(client):
    r = _post(client, png_bytes(np.zeros((2100, 2100, 3), np.uint8)))  # 4.4 MP > 4 MP, 13 kB of PNG
    assert r.status_code == 413 and "pixels" in r.json()["detail"]


# --------------------------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt(predictor, capsys, tmp_path, client, prompt):
    img = scene()
    with pytest.raises(InvalidPromptError):
        predictor.predict(img, prompt)
    with pytest.raises(InvalidPromptError):
        predictor.predict_batch([img, img], [PROMPT, prompt])
    p = tmp_path / "img.png"
    p.write_bytes(png_bytes(img))
    rc, err = _cli(capsys, ["--image", str(p), "--prompt", prompt, "--model", "tiny", "--out", str(tmp_path)])
    _assert_one_line_error(rc, err)
    r = _post(client, png_bytes(img), prompt)
    assert r.status_code == 422


def test_prompt_too_long_http(client):
    r = _post(client, png_bytes(scene()), "word " * 2000)
    assert r.status_code == 422 and "characters" in r.json()["detail"]


def test_bad_numbers_http(client):
    assert _post(client, png_bytes(scene()), max_new_tokens="0").status_code == 422
    assert _post(client, png_bytes(scene()), max_new_tokens="many").status_code == 422


# --------------------------------------------------------------------------------------------- regions


@pytest.mark.parametrize("name,regions,prompt", BAD_REGIONS, ids=[c[0] for c in BAD_REGIONS])
def test_bad_regions_api(predictor, name, regions, prompt):
    with pytest.raises((InvalidRegionError, InvalidPromptError)):
        predictor.predict(scene(64, 64), prompt, regions=regions)


@pytest.mark.parametrize("name,regions,prompt", BAD_REGIONS, ids=[c[0] for c in BAD_REGIONS])
def test_bad_regions_http(client, name, regions, prompt):
    r = _post(client, png_bytes(scene(64, 64)), prompt, regions=None if regions is None else json.dumps(regions))
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


@pytest.mark.parametrize(
    "text", ["[[1, 2, 3, 4]", "not json", '{"x": 1}', '[["a", 1, 2, 3]]', "[" * 100_000, "[[true, 0, 5, 5]]"]
)
def test_malformed_regions_json(client, text):
    with pytest.raises(GroundingError):
        from grounding.commands import parse_regions

        parse_regions(text)
    r = _post(client, png_bytes(scene(64, 64)), "What is in <region>?", regions=text)
    assert r.status_code in (413, 422)


def test_regions_are_not_read_from_server_files(client, tmp_path):
    f = tmp_path / "regions.json"
    f.write_text("[[0, 0, 10, 10]]")
    r = _post(client, png_bytes(scene(64, 64)), "What is in <region>?", regions=str(f))
    assert r.status_code == 422


def test_bad_regions_cli(capsys, tmp_path):
    p = tmp_path / "img.png"
    p.write_bytes(png_bytes(scene(64, 64)))
    base = ["--image", str(p), "--model", "tiny", "--out", str(tmp_path / "o")]
    for regions in ("[[1000, 1000, 1200, 1200]]", "[[1, 2, 3]]", "not json", "[[40, 40, 10, 10]]"):
        rc, err = _cli(capsys, base + ["--prompt", "What is in <region>?", "--regions", regions])
        _assert_one_line_error(rc, err)
    # caught by the predictor, after the model has loaded
    rc, err = _cli(capsys, base + ["--prompt", "Compare <region> and <region>.", "--regions", "[[0, 0, 10, 10]]"])
    _assert_one_line_error(rc, err)
    assert "placeholders" in err


def test_bad_cli_options(capsys, tmp_path):
    rc, err = _cli(capsys, ["--prompt", PROMPT, "--out", str(tmp_path)])
    _assert_one_line_error(rc, err)
    assert "--image" in err
    p = tmp_path / "img.png"
    p.write_bytes(png_bytes(scene()))
    rc, err = _cli(capsys, ["--image", str(p), "--prompt", PROMPT, "--model", str(tmp_path / "nomodel"), "--out", str(tmp_path)])
    _assert_one_line_error(rc, err)
    assert "no model" in err
    rc, err = _cli(capsys, ["--image", str(p), "--prompt", PROMPT, "--max-new-tokens", "0", "--out", str(tmp_path)])
    _assert_one_line_error(rc, err)


# ------------------------------------------------------------------------------------- model answers


@pytest.mark.parametrize("name", list(MALFORMED_ANSWERS))
def test_malformed_model_answers_api(predictor, name):
    img = scene(60, 80)
    with scripted_answers(predictor, MALFORMED_ANSWERS[name], eos=name != "no_eos_at_limit"):
        res = predictor.predict(img, PROMPT, max_new_tokens=128)
        res_masks = predictor.predict(img, PROMPT, max_new_tokens=128, box_to_mask=True)
        batch = predictor.predict_batch([img, scene(30, 50)], [PROMPT, PROMPT], max_new_tokens=128)
    d = _well_formed(res, (60, 80))
    _well_formed(res_masks, (60, 80))
    _well_formed(batch[0], (60, 80))
    _well_formed(batch[1], (30, 50))
    assert "[SEG]" not in d["text"] and "<box>" not in d["text"]
    res.draw(img)


def test_malformed_answers_are_reported(predictor):
    img = scene(60, 80)
    with scripted_answers(predictor, MALFORMED_ANSWERS["box_three_numbers"]):
        res = predictor.predict(img, PROMPT)
    assert res.segments == [] and any("four numbers" in s for s in res.skipped)
    with scripted_answers(predictor, MALFORMED_ANSWERS["phrase_unclosed"], eos=True):
        res = predictor.predict(img, PROMPT, max_new_tokens=64)
    assert len(res.segments) == 2 and any("phrase not closed" in s for s in res.skipped)
    assert res.segments[1].phrase == "a star"
    with scripted_answers(predictor, MALFORMED_ANSWERS["seg_as_plain_text"]):
        res = predictor.predict(img, PROMPT, max_new_tokens=64)
    # "[S", "EG]" tokenised apart: the text "[SEG]" without the [SEG] token has no hidden state, so no mask
    assert res.segments == [] and any("without a mask" in s for s in res.skipped)


def test_many_seg_tokens_give_one_mask_each(predictor):
    img = scene(60, 80)
    with scripted_answers(predictor, MALFORMED_ANSWERS["many_seg"]):
        res = predictor.predict(img, PROMPT, max_new_tokens=128)
    assert len(res.segments) == 30 and all(s.mask.shape == (60, 80) for s in res.segments)
    with scripted_answers(predictor, MALFORMED_ANSWERS["many_seg"]):
        res = predictor.predict(img, PROMPT, max_new_tokens=10)  # cut by the token limit: still well formed
    assert 0 < len(res.segments) < 30
    _well_formed(res, (60, 80))


@pytest.mark.parametrize("name", ["box_out_of_range", "many_seg", "phrase_unclosed", "empty"])
def test_malformed_model_answers_http(client, predictor, name):
    with scripted_answers(predictor, MALFORMED_ANSWERS[name]):
        r = _post(client, png_bytes(scene(60, 80)), overlay="true", max_new_tokens="16")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image_size"] == [60, 80] and isinstance(body["segments"], list) and body["overlay_png"]

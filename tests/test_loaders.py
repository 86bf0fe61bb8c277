"""Real-format loaders on tiny fixtures written in the official layouts (RefCOCO*, gRefCOCO, ReasonSeg, GCG,
Ref-YouTube-VOS, MeViS), including the bad-data errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import (
    DatasetError,
    FlickrGCG,
    GranDfGCG,
    GRefCOCO,
    GroundingSample,
    GroundRef,
    LazyFrames,
    MeViS,
    ReasonSeg,
    RefCOCO,
    RefYouTubeVOS,
    Task,
    VideoSample,
)
from data.masks import decode_segmentation, dominant_box, encode_rle, mask_to_box, xywh_to_xyxy
from data.mixture import Templated

H, W = 32, 48


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def rect_mask(x1: int, y1: int, x2: int, y2: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y1:y2, x1:x2] = True
    return m


def rect_poly(x1, y1, x2, y2) -> list[float]:
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, prev, run = [], 0, 0
    for v in flat:
        if v != prev:
            counts.append(run)
            prev, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


# --------------------------------------------------------------------------------------------------------------
# mask helpers


def test_mask_codecs_roundtrip_and_validate():
    m = rect_mask(3, 4, 9, 7)
    assert np.array_equal(decode_segmentation(encode_rle(m), H, W), m)
    assert np.array_equal(decode_segmentation(uncompressed_rle(m), H, W), m)
    assert np.array_equal(decode_segmentation([rect_poly(3, 4, 9, 7)], H, W), m)
    assert mask_to_box(m).tolist() == [3, 4, 9, 7]
    assert mask_to_box(np.zeros((2, 2), bool)).tolist() == [0, 0, 0, 0]
    assert xywh_to_xyxy([1, 2, 3, 4]).tolist() == [1, 2, 4, 6]
    with pytest.raises(ValueError, match="6 or more coordinates"):
        decode_segmentation([[1, 2, 3, 4]], H, W)  # pycocotools would read this as a box
    with pytest.raises(ValueError, match="odd number"):
        decode_segmentation([rect_poly(3, 4, 9, 7) + [1]], H, W)
    # a degenerate 2-point part next to a proper polygon covers nothing (some COCO annotations have one)
    assert np.array_equal(decode_segmentation([[1, 1, 2, 2], rect_poly(3, 4, 9, 7)], H, W), m)
    with pytest.raises(ValueError, match="empty"):
        decode_segmentation([], H, W)
    with pytest.raises(ValueError, match="does not match"):
        decode_segmentation(encode_rle(np.zeros((5, 5), bool)), H, W)


def test_dominant_box_leaves_out_specks_but_keeps_big_parts():
    m = np.zeros((40, 60), bool)
    m[10:20, 5:25] = True  # the object: 200 pixels
    m[35:37, 55:57] = True  # a 4-pixel speck far away
    assert mask_to_box(m).tolist() == [5, 10, 57, 37]
    assert dominant_box(m).tolist() == [5, 10, 25, 20]
    m[22:30, 30:40] = True  # a second part of 80 pixels (an occluded object's other half): kept
    assert dominant_box(m).tolist() == [5, 10, 40, 30]
    assert dominant_box(m, keep=0.5).tolist() == [5, 10, 25, 20]
    assert dominant_box(np.zeros((4, 4), bool)).tolist() == [0, 0, 0, 0]


# --------------------------------------------------------------------------------------------------------------
# RefCOCO / gRefCOCO fixtures in the refer layout


def write_refer_fixture(root: Path, name: str = "refcoco", split_by: str = "unc", grefs: bool = False) -> dict:
    """Two COCO images, three annotations (polygon, compressed RLE, uncompressed RLE) and refs in three splits."""
    img_dir = root / "images" / "mscoco" / "images" / "train2014"
    img_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for image_id in (581857, 98304):
        fname = f"COCO_train2014_{image_id:012d}.jpg"
        Image.fromarray(image(image_id)).save(img_dir / fname, quality=95)
        images.append({"id": image_id, "file_name": fname, "height": H, "width": W})
    masks = {1: rect_mask(10, 5, 30, 20), 2: rect_mask(2, 2, 8, 30), 3: rect_mask(20, 10, 40, 28)}
    anns = [
        {"id": 1, "image_id": 581857, "category_id": 1, "segmentation": [rect_poly(10, 5, 30, 20)],
         "bbox": [10, 5, 20, 15], "area": 300, "iscrowd": 0},
        {"id": 2, "image_id": 581857, "category_id": 2, "segmentation": encode_rle(masks[2]),
         "bbox": [2, 2, 6, 28], "area": 168, "iscrowd": 0},
        {"id": 3, "image_id": 98304, "category_id": 1, "segmentation": uncompressed_rle(masks[3]),
         "bbox": [20, 10, 20, 18], "area": 360, "iscrowd": 1},
    ]
    cats = [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}]
    data_dir = root / name
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))

    def sents(*texts, start=0):
        return [{"sent": t, "raw": t, "tokens": t.split(), "sent_id": start + k} for k, t in enumerate(texts)]

    if not grefs:
        refs = [
            {"ref_id": 0, "ann_id": 1, "image_id": 581857, "split": "val", "category_id": 1,
             "sentences": sents("man on the left", "guy in red", start=0), "file_name": "COCO_train2014_000000581857_1.jpg"},
            {"ref_id": 1, "ann_id": 2, "image_id": 581857, "split": "val", "category_id": 2,
             "sentences": sents("small dog", start=2)},
            {"ref_id": 2, "ann_id": 3, "image_id": 98304, "split": "train", "category_id": 1,
             "sentences": sents("person right", start=3)},
            {"ref_id": 3, "ann_id": 3, "image_id": 98304, "split": "testA", "category_id": 1,
             "sentences": sents("the right one", start=4)},
        ]
        with open(data_dir / f"refs({split_by}).p", "wb") as f:
            pickle.dump(refs, f, protocol=2)
    else:
        refs = [
            {"ref_id": 0, "ann_id": [1, 2], "image_id": 581857, "split": "val", "category_id": [1, 2],
             "no_target": False, "sentences": sents("man and dog", start=0)},
            {"ref_id": 1, "ann_id": [-1], "image_id": 581857, "split": "val", "category_id": [],
             "no_target": True, "sentences": sents("the cat", "a bike", start=1)},
            {"ref_id": 2, "ann_id": [3], "image_id": 98304, "split": "val", "category_id": [1],
             "no_target": False, "sentences": sents("person", start=3)},
        ]
        (data_dir / f"grefs({split_by}).json").write_text(json.dumps(refs))
    return masks


def test_refcoco_items_per_ref_and_per_sentence(tmp_path):
    masks = write_refer_fixture(tmp_path)
    ds = RefCOCO(tmp_path, name="refcoco", split_by="unc", split="val")
    assert len(ds) == 2 and ds.num_refs == 2
    item = ds[0]
    assert item.image.shape == (H, W, 3) and item.image.dtype == np.uint8
    assert item.sentences == ["man on the left", "guy in red"] and item.sent_ids == [0, 1]
    assert item.mask.dtype == bool and np.array_equal(item.mask, masks[1])  # from a polygon
    assert item.box.tolist() == [10, 5, 30, 20]  # xywh [10, 5, 20, 15] -> xyxy
    assert item.category == "person" and item.ref_id == 0 and item.ann_id == 1 and item.image_id == 581857
    assert np.array_equal(ds[1].mask, masks[2])  # from a compressed RLE

    per_sent = RefCOCO(tmp_path, split="val", per_sentence=True)
    assert len(per_sent) == 3
    assert [per_sent[k].sentences for k in range(3)] == [["man on the left"], ["guy in red"], ["small dog"]]

    train = RefCOCO(tmp_path, split="train")
    assert len(train) == 1 and np.array_equal(train[0].mask, masks[3])  # from an uncompressed RLE
    assert train[0].box.tolist() == [20, 10, 40, 28]
    assert len(RefCOCO(tmp_path, split="testA")) == 1


def test_refcoco_to_sample_res_and_rec(tmp_path):
    masks = write_refer_fixture(tmp_path)
    ds = RefCOCO(tmp_path, split="val")
    s = ds.to_sample(ds[0], rng())
    assert isinstance(s, GroundingSample) and len(s.targets) == 1
    assert np.array_equal(s.targets[0].mask, masks[1]) and s.targets[0].box.tolist() == [10, 5, 30, 20]
    assert [t.expression for t in s.turns] == ["man on the left", "guy in red"]
    assert all(t.task == Task.RES and t.target_indices == [0] for t in s.turns)
    one = ds.to_sample(ds[0], rng(), max_turns=1)
    assert len(one.turns) == 1 and one.turns[0].expression in ("man on the left", "guy in red")

    rec = RefCOCO(tmp_path, split="val", task=Task.REC)
    s = rec.to_sample(rec[1], rng())
    assert s.turns[0].task == Task.REC and s.turns[0].grounds == [GroundRef(0, box=True, seg=False)]

    # the same (seed, index) gives the same sample; the wrapper yields GroundingSamples
    templated = Templated(ds, seed=3)
    a, b = templated[0], templated[0]
    assert a.turns == b.turns and isinstance(a, GroundingSample)


def test_refcocog_umd_and_google_file_names(tmp_path):
    write_refer_fixture(tmp_path, name="refcocog", split_by="umd")
    assert len(RefCOCO(tmp_path, name="refcocog", split_by="umd", split="val")) == 2
    with pytest.raises(DatasetError, match=r"refs\(google\)\.p.*missing refs file.*refs\(umd\)\.p"):
        RefCOCO(tmp_path, name="refcocog", split_by="google", split="val")


def test_refcoco_bad_data_errors_name_file_and_record(tmp_path):
    write_refer_fixture(tmp_path)
    with pytest.raises(DatasetError, match=r"unknown split 'testC'.*\['testA', 'train', 'val'\]"):
        RefCOCO(tmp_path, split="testC")
    with pytest.raises(DatasetError, match=r"refcoco\+: missing refcoco\+ annotation folder"):
        RefCOCO(tmp_path, name="refcoco+")

    # a missing image: found at construction (listing the folder once), or on access without that check
    img = tmp_path / "images/mscoco/images/train2014/COCO_train2014_000000098304.jpg"
    img.rename(img.with_suffix(".bak"))
    with pytest.raises(DatasetError, match=r"COCO_train2014_000000098304\.jpg.*ref_id 2.*missing"):
        RefCOCO(tmp_path, split="train")
    lazy = RefCOCO(tmp_path, split="train", check_images=False)
    with pytest.raises(DatasetError, match=r"COCO_train2014_000000098304\.jpg: record ref_id 2: missing image file"):
        lazy[0]
    img.with_suffix(".bak").rename(img)

    # a broken polygon (4 numbers) and a mask whose size disagrees with the image
    inst_file = tmp_path / "refcoco" / "instances.json"
    inst = json.loads(inst_file.read_text())
    inst["annotations"][0]["segmentation"] = [[1, 2, 3, 4]]
    inst["annotations"][1]["segmentation"] = encode_rle(np.ones((H + 1, W), bool))
    inst_file.write_text(json.dumps(inst))
    ds = RefCOCO(tmp_path, split="val")
    with pytest.raises(DatasetError, match=r"instances\.json: record ann_id 1 \(ref_id 0\): broken annotation.*6 or more coordinates"):
        ds[0]
    with pytest.raises(DatasetError, match=r"ann_id 2 .*does not match the image size"):
        ds[1]

    # an image whose size differs from instances.json
    inst["images"][1]["height"] = H + 2
    inst_file.write_text(json.dumps(inst))
    with pytest.raises(DatasetError, match=r"COCO_train2014_000000098304\.jpg: record ref_id 2: image is 32 x 48"):
        RefCOCO(tmp_path, split="train")[0]

    # a ref pointing at an annotation that does not exist
    refs_file = tmp_path / "refcoco" / "refs(unc).p"
    refs = pickle.loads(refs_file.read_bytes())
    refs[0]["ann_id"] = 99
    refs_file.write_bytes(pickle.dumps(refs))
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p: record ref_id 0: ann_id 99 is not in instances\.json"):
        RefCOCO(tmp_path, split="val")


def test_grefcoco_multi_and_no_target(tmp_path):
    masks = write_refer_fixture(tmp_path, name="grefcoco", grefs=True)
    ds = GRefCOCO(tmp_path, split="val")
    assert len(ds) == 3
    multi, none, single = ds[0], ds[1], ds[2]
    assert len(multi.masks) == 2 and np.array_equal(multi.masks[1], masks[2]) and multi.boxes.shape == (2, 4)
    assert multi.categories == ["person", "dog"] and not multi.no_target
    assert none.no_target and none.masks == [] and none.boxes.shape == (0, 4) and none.ann_ids == ()
    assert len(single.masks) == 1

    s = ds.to_sample(multi, rng())
    assert s.turns[0].task == Task.RES_MULTI and s.turns[0].target_indices == [0, 1] and len(s.targets) == 2
    s = ds.to_sample(none, rng())
    assert [t.task for t in s.turns] == [Task.RES_NONE, Task.RES_NONE] and s.targets == []
    assert all(t.grounds == [] for t in s.turns)
    assert ds.to_sample(single, rng()).turns[0].task == Task.RES
    assert len(GRefCOCO(tmp_path, split="val", per_sentence=True)) == 4

    refs_file = tmp_path / "grefcoco" / "grefs(unc).json"
    refs = json.loads(refs_file.read_text())
    refs[1]["ann_id"] = [-1, 2]
    refs_file.write_text(json.dumps(refs))
    with pytest.raises(DatasetError, match=r"grefs\(unc\)\.json: record ref_id 1: .*no_target"):
        GRefCOCO(tmp_path, split="val")


# --------------------------------------------------------------------------------------------------------------
# ReasonSeg


def write_reasonseg(root: Path, split: str = "val") -> None:
    d = root / split
    d.mkdir(parents=True)
    Image.fromarray(image(1)).save(d / "img_a.jpg", quality=95)
    shapes = [
        {"label": "target", "points": [[4, 4], [36, 4], [36, 28], [4, 28]], "shape_type": "polygon"},
        {"label": "ignore", "points": [[10, 10], [20, 10], [20, 20], [10, 20]], "shape_type": "polygon"},
        {"label": "flag", "points": [[0, 0], [1, 0], [1, 1]]},
    ]
    (d / "img_a.json").write_text(json.dumps({"text": ["What could a person sit on?", "Where can one rest?"],
                                              "is_sentence": True, "shapes": shapes}))
    Image.fromarray(image(2)).save(d / "img_b.jpg", quality=95)
    shapes = [
        {"label": "ignore", "points": [[0, 0], [47, 0], [47, 31], [0, 31]]},
        {"label": "target", "points": [[30, 5], [40, 5], [40, 15], [30, 15]]},
    ]
    (d / "img_b.json").write_text(json.dumps({"text": ["the chair"], "is_sentence": False, "shapes": shapes}))


def test_reasonseg_masks_follow_lisa_painting(tmp_path):
    write_reasonseg(tmp_path)
    ds = ReasonSeg(tmp_path, split="val")
    assert len(ds) == 2
    a = ds[0]
    assert a.questions == ["What could a person sit on?", "Where can one rest?"] and a.is_sentence
    # LISA paints polygons largest first, with a 1-pixel outline: target [4, 36] x [4, 28], ignore hole [10, 20]^2
    hole = np.zeros((H, W), bool)
    hole[10:21, 10:21] = True
    assert np.array_equal(a.ignore, hole)
    assert np.array_equal(a.mask, rect_mask(4, 4, 37, 29) & ~hole)
    assert a.box.tolist() == [4, 4, 37, 29]
    b = ds[1]  # a small target drawn over a large ignore region wins
    assert np.array_equal(b.mask, rect_mask(30, 5, 41, 16))
    assert not (b.mask & b.ignore).any() and (b.mask | b.ignore).all()

    s = ds.to_sample(a, rng())
    assert [t.task for t in s.turns] == [Task.REASON, Task.REASON] and s.turns[0].target_indices == [0]
    assert s.turns[0].expression == "What could a person sit on?"
    assert ds.to_sample(b, rng()).turns[0].expression == "the chair"
    per_q = ReasonSeg(tmp_path, split="val", per_question=True)
    assert len(per_q) == 3 and per_q[1].questions == ["Where can one rest?"]


def test_reasonseg_bad_data(tmp_path):
    write_reasonseg(tmp_path)
    with pytest.raises(DatasetError, match="unknown ReasonSeg split 'dev'"):
        ReasonSeg(tmp_path, split="dev")
    with pytest.raises(DatasetError, match="missing ReasonSeg train folder"):
        ReasonSeg(tmp_path, split="train")
    anno = tmp_path / "val" / "img_b.json"
    js = json.loads(anno.read_text())
    js["shapes"][1]["points"] = [[1, 1], [2, 2]]
    anno.write_text(json.dumps(js))
    ds = ReasonSeg(tmp_path, split="val")
    with pytest.raises(DatasetError, match=r"img_b\.json: record img_b\.jpg: broken polygon: shape 1 \('target'\)"):
        ds[1]
    anno.unlink()
    with pytest.raises(DatasetError, match=r"img_b\.json: record img_b\.jpg: missing annotation file"):
        ReasonSeg(tmp_path, split="val")


# --------------------------------------------------------------------------------------------------------------
# grounded captions


def write_grandf(root: Path) -> tuple[Path, Path]:
    img_dir = root / "GranDf_HA_images" / "train"
    img_dir.mkdir(parents=True)
    Image.fromarray(image(5)).save(img_dir / "sa_1.jpg", quality=95)
    caption = "A man rides a horse on the beach."
    records = [
        {"file_name": "sa_1.jpg", "caption": caption,
         "groundings": {
             "a horse": {"token_positives": [12, 19], "rle_masks": [encode_rle(rect_mask(20, 10, 40, 30))]},
             "A man": {"token_positives": [0, 5],
                       "rle_masks": [encode_rle(rect_mask(2, 2, 10, 10)), encode_rle(rect_mask(8, 8, 12, 20))]},
         }},
    ]
    ann = root / "annotations" / "train" / "GranDf_HA_GCG_train.json"
    ann.parent.mkdir(parents=True)
    ann.write_text(json.dumps(records))
    return ann, img_dir


def test_grandf_gcg_phrases_and_sample(tmp_path):
    ann, img_dir = write_grandf(tmp_path)
    ds = GranDfGCG(ann, img_dir)
    item = ds[0]
    assert [p.text for p in item.phrases] == ["A man", "a horse"]  # sorted by position
    assert np.array_equal(item.phrases[0].mask, rect_mask(2, 2, 10, 10) | rect_mask(8, 8, 12, 20))
    assert item.phrases[1].box.tolist() == [20, 10, 40, 30]
    assert item.parts() == [("A man", 0), " rides ", ("a horse", 1), " on the beach."]
    s = ds.to_sample(item, rng())
    turn = s.turns[0]
    assert turn.task == Task.GCG and len(s.targets) == 2
    assert turn.answer == (GroundRef(0, phrase="A man"), " rides ", GroundRef(1, phrase="a horse"), " on the beach.")

    records = json.loads(ann.read_text())
    records[0]["groundings"]["a horse"]["token_positives"] = [3, 14]
    ann.write_text(json.dumps(records))
    with pytest.raises(DatasetError, match=r"GranDf_HA_GCG_train\.json: record #0 \(sa_1\.jpg\): phrase spans .* overlap"):
        GranDfGCG(ann, img_dir)[0]
    records[0]["groundings"]["a horse"] = {"token_positives": [12, 19], "rle_masks": [encode_rle(np.ones((4, 4), bool))]}
    ann.write_text(json.dumps(records))
    with pytest.raises(DatasetError, match="broken grounding 'a horse'.*does not match"):
        GranDfGCG(ann, img_dir)[0]
    records[0]["file_name"] = "sa_2.jpg"
    ann.write_text(json.dumps(records))
    with pytest.raises(DatasetError, match=r"sa_2\.jpg: record #0: 1 image file"):
        GranDfGCG(ann, img_dir)


def test_flickr_gcg_coco_layout(tmp_path):
    img_dir = tmp_path / "flikcr_30k" / "train"
    img_dir.mkdir(parents=True)
    Image.fromarray(image(7)).save(img_dir / "1000092795.jpg", quality=95)
    caption = "Two young guys are outside near many bushes."
    coco = {
        "images": [{"id": 0, "file_name": "1000092795.jpg", "height": H, "width": W, "caption": caption}],
        "annotations": [
            {"id": 0, "image_id": 0, "bbox": [1, 1, 9, 9], "tokens_positive": [[0, 14]],
             "sam_mask": encode_rle(rect_mask(1, 1, 10, 10)), "area": 81, "category_id": 1, "iscrowd": 0},
            {"id": 1, "image_id": 0, "bbox": [20, 2, 5, 5], "tokens_positive": [[0, 14]],
             "sam_mask": encode_rle(rect_mask(20, 2, 25, 7)), "area": 25, "category_id": 1, "iscrowd": 0},
            {"id": 2, "image_id": 0, "bbox": [0, 20, 48, 12], "tokens_positive": [[32, 43]],
             "sam_mask": encode_rle(rect_mask(0, 20, 48, 32)), "area": 576, "category_id": 1, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "object"}],
    }
    ann = tmp_path / "flickr_mergedGT_GCG_train.json"
    ann.write_text(json.dumps(coco))
    item = FlickrGCG(ann, img_dir)[0]
    assert [p.text for p in item.phrases] == ["Two young guys", "many bushes"]
    assert item.phrases[0].box.tolist() == [1, 1, 25, 10]  # two boxes of one phrase: their union
    assert item.phrases[0].mask.sum() == 81 + 25
    s = FlickrGCG(ann, img_dir).to_sample(item, rng())
    assert [g.phrase for g in s.turns[0].grounds] == ["Two young guys", "many bushes"]

    del coco["annotations"][2]["sam_mask"]
    ann.write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match=r"record image_id 0 ann 2: broken annotation: KeyError\('sam_mask'\)"):
        FlickrGCG(ann, img_dir)[0]


# --------------------------------------------------------------------------------------------------------------
# video: Ref-YouTube-VOS and MeViS


def save_palette_png(path: Path, ids: np.ndarray) -> None:
    im = Image.fromarray(ids.astype(np.uint8))
    im.putpalette([0, 0, 0, 236, 95, 103, 249, 145, 87] + [0] * (256 * 3 - 9))
    assert im.mode == "P"
    im.save(path)


def moving_masks(t_count: int = 3) -> np.ndarray:
    """T x H x W palette ids: object 1 moves right, object 2 appears at frame 1."""
    ids = np.zeros((t_count, H, W), np.uint8)
    for t in range(t_count):
        ids[t, 4:12, 4 + 5 * t : 14 + 5 * t] = 1
        if t >= 1:
            ids[t, 20:30, 30:40] = 2
    return ids


def write_ytvos(root: Path) -> np.ndarray:
    ids = moving_masks()
    frames = ["00000", "00005", "00010"]
    for split in ("train", "valid"):
        for t, f in enumerate(frames):
            (root / split / "JPEGImages" / "vid_a").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image(t)).save(root / split / "JPEGImages" / "vid_a" / f"{f}.jpg", quality=95)
    (root / "train" / "Annotations" / "vid_a").mkdir(parents=True)
    for t, f in enumerate(frames):
        save_palette_png(root / "train" / "Annotations" / "vid_a" / f"{f}.png", ids[t])
    meta = {"videos": {"vid_a": {
        "expressions": {"0": {"exp": "a person walking right", "obj_id": "1"},
                        "1": {"exp": "a parked car", "obj_id": "2"},
                        "2": {"exp": "the walker", "obj_id": "1"}},
        "frames": list(reversed(frames))}}}
    for split in ("train", "valid"):
        p = root / "meta_expressions" / split / "meta_expressions.json"
        p.parent.mkdir(parents=True)
        m = meta if split == "train" else {"videos": {"vid_a": {"expressions": {"0": {"exp": "a person"}}, "frames": frames}}}
        p.write_text(json.dumps(m))
    return ids


def test_ref_youtube_vos(tmp_path):
    ids = write_ytvos(tmp_path)
    ds = RefYouTubeVOS(tmp_path, split="train")
    assert len(ds) == 1
    v = ds[0]
    assert isinstance(v, VideoSample) and isinstance(v.frames, LazyFrames) and len(v.frames) == 3
    assert [p.name for p in v.frames.paths] == ["00000.jpg", "00005.jpg", "00010.jpg"]  # sorted
    assert v.frames[1].shape == (H, W, 3) and v.frames[1].dtype == np.uint8
    assert isinstance(v.frames[1:], LazyFrames) and len(v.frames[1:]) == 2
    assert [t.obj_id for t in v.targets] == [1, 2]
    assert np.array_equal(v.target(1).masks, ids == 1) and v.target(2).visible.tolist() == [False, True, True]
    assert [(e.text, e.obj_ids, e.exp_id) for e in v.expressions] == [
        ("a person walking right", (1,), "0"), ("a parked car", (2,), "1"), ("the walker", (1,), "2")]

    valid = RefYouTubeVOS(tmp_path, split="valid")  # no Annotations: no targets
    assert valid[0].targets == [] and valid[0].expressions[0].obj_ids == ()
    with pytest.raises(DatasetError, match="missing Annotations folder"):
        RefYouTubeVOS(tmp_path, split="valid", require_masks=True)
    with pytest.raises(DatasetError, match="unknown Ref-YouTube-VOS split 'val'"):
        RefYouTubeVOS(tmp_path, split="val")
    meta_file = tmp_path / "meta_expressions" / "valid" / "meta_expressions.json"
    meta_file.write_text(json.dumps({"videos": {"vid_a": {"expressions": {"0": {"obj_id": "1"}}, "frames": ["00000"]}}}))
    with pytest.raises(DatasetError, match=r"meta_expressions\.json: record video vid_a expression 0: .*'exp'"):
        RefYouTubeVOS(tmp_path, split="valid")

    (tmp_path / "train" / "Annotations" / "vid_a" / "00005.png").unlink()
    with pytest.raises(DatasetError, match=r"00005\.png: record video vid_a frame 00005: missing annotation PNG"):
        ds[0]
    (tmp_path / "train" / "JPEGImages" / "vid_a" / "00010.jpg").unlink()
    with pytest.raises(DatasetError, match=r"00010\.jpg: record video vid_a: missing frame image"):
        ds[0]


def write_mevis(root: Path) -> np.ndarray:
    ids = moving_masks(4)
    frames = ["00000", "00001", "00002", "00003"]
    d = root / "train"
    (d / "JPEGImages" / "v1").mkdir(parents=True)
    for t, f in enumerate(frames):
        Image.fromarray(image(t)).save(d / "JPEGImages" / "v1" / f"{f}.jpg", quality=95)
    meta = {"videos": {"v1": {
        "expressions": {"0": {"exp": "moving to the right", "obj_id": [1], "anno_id": [10]},
                        "1": {"exp": "the two objects", "obj_id": [1, 2], "anno_id": [10, 11]}},
        "frames": frames}}}
    (d / "meta_expressions.json").write_text(json.dumps(meta))
    mask_dict = {
        "10": [encode_rle(ids[t] == 1) for t in range(4)],
        "11": [None] + [encode_rle(ids[t] == 2) for t in range(1, 4)],
    }
    (d / "mask_dict.json").write_text(json.dumps(mask_dict))
    return ids


def test_mevis(tmp_path):
    ids = write_mevis(tmp_path)
    ds = MeViS(tmp_path, split="train")
    v = ds[0]
    assert len(v.frames) == 4 and [t.obj_id for t in v.targets] == [1, 2]
    assert np.array_equal(v.target(1).masks, ids == 1) and np.array_equal(v.target(2).masks, ids == 2)
    assert not v.target(2).masks[0].any()  # a None RLE: not visible on that frame
    assert v.expressions[1].obj_ids == (1, 2) and v.expressions[1].text == "the two objects"

    md_file = tmp_path / "train" / "mask_dict.json"
    md = json.loads(md_file.read_text())
    md["11"] = md["11"][:2]
    md_file.write_text(json.dumps(md))
    with pytest.raises(DatasetError, match=r"mask_dict\.json: record video v1 anno_id 11: 2 masks for 4 frames"):
        MeViS(tmp_path, split="train")[0]
    meta_file = tmp_path / "train" / "meta_expressions.json"
    meta = json.loads(meta_file.read_text())
    meta["videos"]["v1"]["expressions"]["1"]["anno_id"] = [12, 11]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"meta_expressions\.json: record video v1 expression 1: object 1 has two"):
        MeViS(tmp_path, split="train")
    md_file.unlink()
    with pytest.raises(DatasetError, match=r"mask_dict\.json: missing mask_dict\.json"):
        MeViS(tmp_path, split="train")
    unlabelled = MeViS(tmp_path, split="train", require_masks=False)[0]
    assert unlabelled.targets == [] and unlabelled.expressions[1].obj_ids == ()

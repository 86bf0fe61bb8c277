"""Writes the demo's sample images (run from the repository root: ``python demo/assets/make_assets.py``).

- ``shapes.png``: scene 91 of the synthetic world's test split (256 x 256): exactly one red circle among a
  large purple circle, a purple square, a purple star and a green square, on gravel.
- ``chelsea.jpg``: scikit-image's ``chelsea`` photo (a cat; a real photo for input handling, not a shape).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

HERE = Path(__file__).parent
SHAPES_INDEX = 91


def shapes_scene():
    from data.synthetic import SyntheticGrounding

    scene, _ = SyntheticGrounding(split="test", length=SHAPES_INDEX + 1).generate(SHAPES_INDEX)
    return scene


def main() -> None:
    from skimage import data

    scene = shapes_scene()
    labels = [o.label for o in scene.objects]
    assert labels.count("red circle") == 1, labels
    Image.fromarray(scene.image).save(HERE / "shapes.png", optimize=True)
    Image.fromarray(data.chelsea()).save(HERE / "chelsea.jpg", quality=90)
    print("wrote", HERE / "shapes.png", labels, "and", HERE / "chelsea.jpg")


if __name__ == "__main__":
    main()

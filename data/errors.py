"""``DatasetError`` and the checked readers that raise it.

Every loader reads its files through these helpers, so a missing or broken file fails with one error type that
names the file and the record (an image id, a ref id, a video and frame), never with a bare ``KeyError`` deep in
a worker, and never by silently skipping the record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


class DatasetError(ValueError):
    """Bad or missing data: ``file`` is the path at fault, ``record`` the record inside it (may be empty)."""

    def __init__(self, message: str, file: str | os.PathLike | None = None, record: object = None):
        self.file = None if file is None else str(file)
        self.record = record
        where = []
        if self.file is not None:
            where.append(self.file)
        if record is not None and record != "":
            where.append(f"record {record}")
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


def require_file(path: str | os.PathLike, what: str, record: object = None) -> Path:
    """``path`` as a ``Path`` if it is an existing file, else ``DatasetError`` ("missing {what}")."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"missing {what}", p, record)
    return p


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a ``Path`` if it is an existing directory, else ``DatasetError``."""
    p = Path(path)
    if not p.is_dir():
        raise DatasetError(f"missing {what} (not a directory)", p)
    return p


def load_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file; a missing or unparsable file raises ``DatasetError`` naming it."""
    p = require_file(path, what)
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot parse {what}: {e}", p) from e


def read_rgb(path: str | os.PathLike, record: object = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image as ``H x W x 3`` uint8 RGB.

    ``size``: the (height, width) the annotation expects; a different image size raises ``DatasetError``
    (masks would not line up). A missing or undecodable file raises ``DatasetError`` too.
    """
    p = require_file(path, "image file", record)
    try:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"))
    except OSError as e:
        raise DatasetError(f"cannot decode image: {e}", p, record) from e
    if size is not None and tuple(arr.shape[:2]) != tuple(size):
        raise DatasetError(
            f"image is {arr.shape[0]} x {arr.shape[1]} (H x W) but the annotation says {size[0]} x {size[1]}", p, record
        )
    return arr


__all__ = ["DatasetError", "load_json", "read_rgb", "require_dir", "require_file"]

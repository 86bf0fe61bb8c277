"""A disk cache of frozen image-encoder features, keyed by the content hash of the encoder input.

Used whenever the mask head's image encoder is frozen: repeated epochs (and repeated questions about one
image) skip the encoder. Entries are written atomically (temp file + rename), so concurrent data-parallel
processes can share one directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


class FeatureCache:
    """``directory``: where entries live; ``namespace``: identifies the encoder (e.g. preset + weights hash);
    ``dtype``: storage dtype (float16 halves disk use; features are cast back on read)."""

    def __init__(self, directory: str | os.PathLike, namespace: str = "default", dtype: torch.dtype = torch.float16):
        self.root = Path(directory) / namespace
        self.root.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
        path = self._path(key)
        if not path.exists():
            self.misses += 1
            return None
        try:
            t = load_file(str(path))["features"]
        except Exception:  # a truncated file from a killed process: recompute and overwrite
            self.misses += 1
            return None
        self.hits += 1
        return t.to(dtype)

    def put(self, key: str, features: torch.Tensor) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file({"features": features.detach().to("cpu", self.dtype).contiguous()}, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.safetensors"))

"""Video frame sources: a video file (anything OpenCV reads), a folder of frame images, or a list of arrays.

Every source is a ``Sequence`` of ``H x W x 3`` uint8 RGB frames that reads lazily, plus :meth:`FrameSource.iter_from`,
which streams frames forwards or backwards from any frame with bounded memory (backwards reads of a video file
go chunk by chunk: seek, decode a few frames, yield them in reverse). Problems raise
:class:`~grounding.errors.InvalidVideoError` (a ``ValueError``) with a message naming the file or frame:
unreadable files, no frames, frames whose size differs from the first frame's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from data.transforms import as_rgb_uint8
from grounding.errors import GroundingError

__all__ = [
    "IMAGE_EXTENSIONS",
    "FolderFrames",
    "FrameSource",
    "InvalidVideoError",
    "SequenceFrames",
    "VideoFileFrames",
    "open_frames",
]



class InvalidVideoError(GroundingError):
    """The video cannot be read, has no frames, or its frames differ in size."""


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class FrameSource(Sequence):
    """A video's frames (lazy). ``size``: (H, W) of the first frame; ``fps``: frames per second if known."""

    name: str = "video"
    fps: float | None = None

    @property
    def size(self) -> tuple[int, int]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def _read(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        i = int(index) + (n if int(index) < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"frame {index} out of range for {n} frames of {self.name}")
        return self._checked(self._read(i), i)

    def _checked(self, frame: np.ndarray, index: int) -> np.ndarray:
        if frame.shape[:2] != self.size:
            raise InvalidVideoError(
                f"{self.name}: frame {index} is {frame.shape[0]} x {frame.shape[1]} (H x W) but frame 0 is "
                f"{self.size[0]} x {self.size[1]}; all frames of a video must have one size"
            )
        return frame

    def iter_from(self, start: int = 0, reverse: bool = False) -> Iterator[np.ndarray]:
        """Frames ``start, start + 1, ...`` (or ``start, start - 1, ..., 0`` with ``reverse``), streamed."""
        order = range(start, -1, -1) if reverse else range(start, len(self))
        for i in order:
            yield self[i]


class SequenceFrames(FrameSource):
    """Frames from any sequence of arrays (a list, a T x H x W x 3 array, a dataset's lazy frame sequence);
    each is converted to uint8 RGB when accessed. Shapes of in-memory arrays are checked up front."""

    def __init__(self, frames: Sequence, name: str = "frames"):
        self.name = name
        self.frames = frames
        if len(frames) == 0:
            raise InvalidVideoError(f"{name}: no frames")
        self._size = self._convert(frames[0], 0).shape[:2]
        for i, f in enumerate(frames if isinstance(frames, (list, tuple)) else ()):
            shape = getattr(f, "shape", None)
            if shape is not None and len(shape) >= 2 and tuple(shape[:2]) != self._size:
                self._checked(np.empty((*shape[:2], 3), np.uint8), i)

    def _convert(self, frame, index: int) -> np.ndarray:
        try:
            return as_rgb_uint8(frame)
        except ValueError as e:
            raise InvalidVideoError(f"{self.name}: frame {index}: {e}") from None

    @property
    def size(self) -> tuple[int, int]:
        return (int(self._size[0]), int(self._size[1]))

    def __len__(self) -> int:
        return len(self.frames)

    def _read(self, index: int) -> np.ndarray:
        return self._convert(self.frames[index], index)


def _natural_key(path: Path) -> list:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", path.name)]


def _read_image(path: Path, what: str) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise InvalidVideoError(f"{what}: cannot read {path} as an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class FolderFrames(FrameSource):
    """Frame images in a folder (``.jpg``, ``.png``, ...), in natural order of their names (``2.jpg`` before
    ``10.jpg``); each frame is read when accessed."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.name = str(self.folder)
        if not self.folder.is_dir():
            raise InvalidVideoError(f"no folder of frames at {self.folder}")
        self.paths = sorted((p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
                            key=_natural_key)
        if not self.paths:
            raise InvalidVideoError(f"{self.folder}: no frame images ({', '.join(IMAGE_EXTENSIONS)})")
        first = _read_image(self.paths[0], self.name)
        self._size = (int(first.shape[0]), int(first.shape[1]))

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, index: int) -> np.ndarray:
        return _read_image(self.paths[index], self.name)


class VideoFileFrames(FrameSource):
    """A video file read with OpenCV. Iterating forwards decodes sequentially; random access and backwards
    iteration seek (``CAP_PROP_POS_FRAMES``) and decode ``chunk`` frames at a time.

    The frame count comes from the container; if decoding ends earlier, the video is taken to end there.
    """

    _cap: cv2.VideoCapture | None = None

    def __init__(self, path: str | os.PathLike, chunk: int = 16):
        self.path = Path(path)
        self.name = str(self.path)
        self.chunk = max(1, int(chunk))
        if not self.path.is_file():
            raise InvalidVideoError(f"no video file at {self.path}")
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise InvalidVideoError(f"OpenCV cannot open {self.path} as a video")
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            ok, bgr = cap.read()
            if not ok or bgr is None:
                raise InvalidVideoError(f"{self.path}: the video has no readable frames")
        finally:
            cap.release()
        self.fps = fps if 0 < fps < 1000 else None
        self._size = (int(bgr.shape[0]), int(bgr.shape[1]))
        self._count = max(count, 1)
        self._pos = 0  # index of the frame the open capture reads next
        self._cache: dict[int, np.ndarray] = {}

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if hasattr(self, "_cache"):
            self._cache.clear()

    def __del__(self):
        self.close()

    def _open_at(self, index: int) -> None:
        if self._cap is None:
            self._cap = cv2.VideoCapture(str(self.path))
            self._pos = 0
        if self._pos != index:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            self._pos = index

    def _next(self) -> np.ndarray | None:
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            self._count = self._pos  # the container over-reported its length
            return None
        self._pos += 1
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _read(self, index: int) -> np.ndarray:
        if index in self._cache:
            return self._cache[index]
        start = (index // self.chunk) * self.chunk
        self._open_at(start)
        self._cache.clear()
        for i in range(start, min(start + self.chunk, len(self))):
            frame = self._next()
            if frame is None:
                break
            self._cache[i] = frame
        if index not in self._cache:
            raise IndexError(f"frame {index} out of range: {self.name} has {len(self)} readable frames")
        return self._cache[index]

    def iter_from(self, start: int = 0, reverse: bool = False) -> Iterator[np.ndarray]:
        if reverse:
            yield from super().iter_from(start, reverse=True)
            return
        self._cache.clear()
        self._open_at(start)
        i = start
        while i < len(self):
            frame = self._next()
            if frame is None:
                return
            yield self._checked(frame, i)
            i += 1


def open_frames(frames) -> FrameSource:
    """A :class:`FrameSource` for a video file path, a folder of frames, a list of arrays (or a T x H x W x 3
    array), or a ``FrameSource`` (returned as is)."""
    if isinstance(frames, FrameSource):
        return frames
    if isinstance(frames, (str, os.PathLike)):
        path = Path(frames)
        if path.is_dir():
            return FolderFrames(path)
        if path.is_file():
            return VideoFileFrames(path)
        raise InvalidVideoError(f"no video file or folder of frames at {path}")
    if isinstance(frames, np.ndarray):
        if frames.ndim not in (3, 4):
            raise InvalidVideoError(f"an array of frames must be T x H x W x 3, got shape {frames.shape}")
        return SequenceFrames(frames)
    if isinstance(frames, Sequence) and not isinstance(frames, (bytes, bytearray)):
        return SequenceFrames(frames)
    raise InvalidVideoError(
        f"frames must be a video file, a folder of frames or a list of arrays, got {type(frames).__name__}"
    )

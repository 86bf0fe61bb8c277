"""Saving and loading the *trained* parts of a model (safetensors + a JSON manifest).

Base weights (the language model, SAM's image encoder, ...) come from their own files or packages; a shipped
checkpoint holds only what training changed (LoRA, new token rows, projectors, heads), named as in the
``GroundingLitModule``'s state dict.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def save_trained_weights(module: torch.nn.Module, path: str | Path, manifest: dict | None = None) -> Path:
    """Write the parameters that require grad to ``path`` (safetensors) and ``manifest`` next to it (.json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items() if k in names}
    if not state:
        raise ValueError("the module has no trainable parameters to save")
    save_file(state, str(path))
    if manifest is not None:
        path.with_suffix(".json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def load_trained_weights(module: torch.nn.Module, path: str | Path) -> list[str]:
    """Load a file written by ``save_trained_weights`` into ``module``; returns the keys loaded.

    Raises ``ValueError`` naming keys the module does not have or whose shapes differ (a checkpoint for a
    different configuration), rather than loading part of it silently.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = load_file(str(path))
    own = module.state_dict()
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

"""pixel-grounding: pixel-level grounding and segmentation with multimodal LLMs.

    from grounding import GroundingPredictor
    predictor = GroundingPredictor.from_pretrained("default")
"""

__version__ = "0.1.0"

_LAZY = {
    "GroundingPredictor": "grounding.predictor",
    "GroundingResult": "grounding.results",
    "Segment": "grounding.results",
    "GroundingModel": "grounding.model",
    "GroundingProcessor": "grounding.processor",
    "GroundingLitModule": "grounding.lit_module",
    "GroundingError": "grounding.errors",
    "InvalidImageError": "grounding.errors",
    "InvalidPromptError": "grounding.errors",
    "InvalidRegionError": "grounding.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name):  # lazy imports keep `import grounding` and `grounding --help` fast
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'grounding' has no attribute {name!r}")

"""pixel-grounding: pixel-level grounding and segmentation with multimodal LLMs."""

__version__ = "0.1.0"

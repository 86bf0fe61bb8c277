"""Vision-LLM adapters behind one small interface (``VisionLLM``)."""

from grounding.vision_llm.base import (
    EncodedPrompt,
    GenerationOutput,
    LoraSettings,
    VisionLLM,
    VisionLLMOutput,
    inject_embeddings,
)
from grounding.vision_llm.composed import ComposedVisionLLM
from grounding.vision_llm.hf import HFVisionLLM

__all__ = [
    "ComposedVisionLLM",
    "EncodedPrompt",
    "GenerationOutput",
    "HFVisionLLM",
    "LoraSettings",
    "VisionLLM",
    "VisionLLMOutput",
    "inject_embeddings",
]

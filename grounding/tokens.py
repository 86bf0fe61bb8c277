"""The grounding tokens: defined here and nowhere else.

``add_grounding_tokens`` is the one function that adds them to a tokenizer (and resizes a model's
embeddings); ``GroundingTokenIds.from_tokenizer`` looks their ids up. No id is ever hard-coded.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

SEG = "[SEG]"
PHRASE_START = "<p>"
PHRASE_END = "</p>"
BOX_START = "<box>"
BOX_END = "</box>"
REGION = "<region>"
# Placeholder for image features in composed vision-LLMs (HF vision-LLMs bring their own image token).
IMAGE = "<image>"

GROUNDING_TOKENS: tuple[str, ...] = (SEG, PHRASE_START, PHRASE_END, BOX_START, BOX_END, REGION)


@dataclass(frozen=True)
class GroundingTokenIds:
    """Token ids of the grounding tokens in one tokenizer (looked up, never assumed)."""

    seg: int
    phrase_start: int
    phrase_end: int
    box_start: int
    box_end: int
    region: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "GroundingTokenIds":
        ids = {}
        for f, token in zip(fields(cls), GROUNDING_TOKENS):
            ids[f.name] = token_id(tokenizer, token)
        return cls(**ids)

    def as_list(self) -> list[int]:
        return [getattr(self, f.name) for f in fields(self)]


def token_id(tokenizer, token: str) -> int:
    """The id of a single added token; raises ``KeyError`` if the tokenizer does not have it."""
    vocab = tokenizer.get_vocab()
    if token not in vocab:
        raise KeyError(
            f"token {token!r} is not in the tokenizer's vocabulary; call grounding.tokens.add_grounding_tokens first"
        )
    return vocab[token]


def add_grounding_tokens(tokenizer, model=None, extra: tuple[str, ...] = ()) -> list[int]:
    """Add the grounding tokens (and ``extra`` ones) to ``tokenizer`` as special tokens.

    If ``model`` is given (anything with ``resize_token_embeddings``), its input and output embeddings are
    resized to the new vocabulary; new rows are initialised to the mean of the old ones (transformers'
    default). Idempotent: tokens already present are left as they are.

    Returns the ids of all requested tokens, in order (grounding tokens, then ``extra``).
    """
    wanted = list(GROUNDING_TOKENS) + [t for t in extra if t not in GROUNDING_TOKENS]
    vocab = tokenizer.get_vocab()
    missing = [t for t in wanted if t not in vocab]
    if missing:
        # Special tokens: never split, and kept in decoded text only when asked (skip_special_tokens=False).
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if model is not None:
        n = len(tokenizer)
        if model.get_input_embeddings().weight.shape[0] < n:
            model.resize_token_embeddings(n, mean_resizing=True)
    return [token_id(tokenizer, t) for t in wanted]

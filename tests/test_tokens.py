import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from grounding.presets import tiny_tokenizer
from grounding.tokens import GROUNDING_TOKENS, SEG, GroundingTokenIds, add_grounding_tokens, token_id


def test_add_tokens_is_idempotent_and_ids_are_looked_up():
    tok = tiny_tokenizer()
    n0 = len(tok)
    ids = add_grounding_tokens(tok)
    assert len(tok) == n0 + len(GROUNDING_TOKENS)
    assert ids == [tok.convert_tokens_to_ids(t) for t in GROUNDING_TOKENS]
    assert add_grounding_tokens(tok) == ids and len(tok) == n0 + len(GROUNDING_TOKENS)
    t = GroundingTokenIds.from_tokenizer(tok)
    assert t.seg == tok.convert_tokens_to_ids(SEG)
    # special tokens are never split
    assert tok.tokenize("Sure, [SEG].").count(SEG) == 1


def test_add_tokens_resizes_embeddings():
    tok = tiny_tokenizer()
    lm = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=len(tok)))
    add_grounding_tokens(tok, lm, extra=("<image>",))
    assert lm.get_input_embeddings().weight.shape[0] == len(tok)
    assert lm.get_output_embeddings().weight.shape[0] == len(tok)


def test_missing_token_is_a_clear_error():
    tok = tiny_tokenizer()
    with pytest.raises(KeyError, match="add_grounding_tokens"):
        token_id(tok, SEG)

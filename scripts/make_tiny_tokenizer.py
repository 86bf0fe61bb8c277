"""Build the tiny byte-level BPE tokenizer used by tiny configs and tests (no download).

    python scripts/make_tiny_tokenizer.py   # writes grounding/assets/tiny-tokenizer/
"""

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

OUT = Path(__file__).resolve().parents[1] / "grounding" / "assets" / "tiny-tokenizer"
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = """
Please segment the red green blue yellow purple orange circle square triangle star hexagon shape shapes object
objects in this image Where is it Give its bounding box What can you see Sure here mask masks left right top
bottom largest smallest small medium large big of above below next to and all the There no none I could not find
a an is are on with picture photo region describe caption each one two three four five six seven eight nine zero
0 1 2 3 4 5 6 7 8 9 , . ? ! : ; [ ] ( ) { } " ' - _ / the of to in
"""


def main() -> None:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [" ".join(WORDS.split())] * 20 + WORDS.split()
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>", pad_token="<pad>", unk_token=None
    )
    fast.chat_template = CHATML
    OUT.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(OUT)
    print(f"wrote {OUT} (vocab {len(fast)})")


if __name__ == "__main__":
    main()

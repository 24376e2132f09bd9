"""The byte-level BPE tokenizer of lokal's synthetic ONNX models (ONNX GenAI folders and transformers.js).

Printable ASCII symbols, the chat markers and filler words up to the shape's vocabulary size: any token id
decodes to readable text, which is all random weights can produce. Characters outside printable ASCII cannot
be encoded and are dropped. No merges: the fillers are whole-word entries only a decoder needs.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterator
from typing import Any

from lokal.gguf.synthetic import CHATML_TEMPLATE

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2  # the SPECIALS' ids: <|im_end|> ends a chat turn


def byte_symbols() -> list[str]:
    """Printable ASCII plus GPT-2's byte-level stand-ins for space and newline."""
    return [chr(c) for c in range(0x21, 0x7F)] + ["\u0120", "\u010a"]


def _fillers() -> Iterator[str]:
    for n in itertools.count(2):
        for combo in itertools.product(string.ascii_lowercase, repeat=n):
            word = "".join(combo)
            yield "\u0120" + word  # a word that starts with a space
            yield word


def min_vocab() -> int:
    return len(SPECIALS) + len(byte_symbols())


def tokenizer_json(n_vocab: int) -> dict[str, Any]:
    tokens = SPECIALS + byte_symbols()
    if n_vocab < len(tokens):
        raise ValueError(f"vocabulary of {n_vocab} is too small for this tokenizer (minimum {len(tokens)})")
    seen = set(tokens)
    tokens += [t for t in itertools.islice(_fillers(), n_vocab - len(tokens) + 2) if t not in seen]
    tokens = tokens[:n_vocab]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": t,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i, t in enumerate(SPECIALS)
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": [],
        },
    }


def tokenizer_config(n_ctx: int, chat_template: str = CHATML_TEMPLATE) -> dict[str, Any]:
    """tokenizer_config.json: ChatML markers as bos/eos, and the Jinja chat template ORT GenAI renders."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": SPECIALS[EOS_ID],
        "pad_token": SPECIALS[PAD_ID],
        "unk_token": None,
        "model_max_length": n_ctx,
        "clean_up_tokenization_spaces": False,
        "chat_template": chat_template,
    }

"""pi0's prompt tokens: openpi's PaliGemma rule, `[BOS] + tokens(clean prompt) + tokens("\n")`, padded with 0 (masked)
or cut to `max_len`. The vocabulary is read from the checkpoint directory: `tokenizer.json` (Hugging Face fast
tokenizer: the hub's PaliGemma one, or the tiny model's word-level one) or openpi's sentencepiece
`paligemma_tokenizer.model` / `tokenizer.model`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from vla_pruner.models.checkpoint import CheckpointError

FAST_FILE = "tokenizer.json"
SENTENCEPIECE_FILES = ("paligemma_tokenizer.model", "tokenizer.model")


class Pi0Tokenizer:
    def __init__(self, encode: Callable[[str], list[int]], bos_id: int, max_len: int):
        self._encode, self.bos_id, self.max_len = encode, bos_id, max_len

    @classmethod
    def from_dir(cls, directory: Path, max_len: int) -> "Pi0Tokenizer":
        if (directory / FAST_FILE).is_file():
            from transformers import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast(tokenizer_file=str(directory / FAST_FILE))
            bos = tok.convert_tokens_to_ids("<bos>")
            return cls(lambda text: tok.encode(text, add_special_tokens=False), bos, max_len)
        for name in SENTENCEPIECE_FILES:
            if (directory / name).is_file():
                import sentencepiece

                sp = sentencepiece.SentencePieceProcessor(model_file=str(directory / name))
                return cls(sp.encode, sp.bos_id(), max_len)
        raise CheckpointError(f"no tokenizer in {directory}: put the PaliGemma tokenizer there as {FAST_FILE} or "
                              f"{' / '.join(SENTENCEPIECE_FILES)} (openpi: gs://big_vision/paligemma_tokenizer.model)")

    def __call__(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        """(tokens [max_len] int64, mask [max_len] bool) of one prompt."""
        clean = prompt.strip().replace("_", " ").replace("\n", " ")
        ids = ([self.bos_id] + list(self._encode(clean)) + list(self._encode("\n")))[: self.max_len]
        tokens = np.zeros(self.max_len, dtype=np.int64)
        tokens[: len(ids)] = ids
        return tokens, np.arange(self.max_len) < len(ids)

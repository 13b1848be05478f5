"""Checkpoints whose tokenizer is only `tokenizer.model` (sentencepiece), as the official OpenVLA ones ship it.

The tokenizer is trained here, in the test, on a few LIBERO instructions with Llama-2's settings (BPE, byte
fallback, no normalisation, ids 0/1/2 for <unk>/<s>/</s>) and placed beside the fixture checkpoint's other
files with the official tokenizer_config.json (LlamaTokenizer), without tokenizer.json.
"""
import io
import json
import shutil
import sys

import numpy as np
import pytest
import sentencepiece as spm  # a dependency: transformers converts tokenizer.model with it
from PIL import Image

from vla_pruner import OpenVLA, OpenVLAProcessor
from vla_pruner.models.checkpoint import CheckpointError
from vla_pruner.models.openvla.processor import prompt_for

INSTRUCTIONS = [
    "pick up the black bowl between the plate and the ramekin and place it on the plate",
    "open the top drawer and put the bowl inside",
    "put the cream cheese in the bowl",
    "turn on the stove and put the moka pot on it",
    "pick up the alphabet soup and place it in the basket",
    "put both the alphabet soup and the tomato sauce in the basket",
]
# openvla-7b's tokenizer_config.json, less the added-token table the test writes beside it
OFFICIAL_TOKENIZER_CONFIG = {
    "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "clean_up_tokenization_spaces": False,
    "eos_token": "</s>", "legacy": False, "model_max_length": 2048, "pad_token": "<PAD>", "padding_side": "right",
    "processor_class": "PrismaticProcessor", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
    "unk_token": "<unk>", "use_default_system_prompt": False,
}


def train_llama_style(texts: list[str]) -> bytes:
    """A small sentencepiece model with Llama-2's trainer settings (its vocabulary is 32000, ours 300)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, model_type="bpe", vocab_size=300, hard_vocab_limit=False,
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
        add_dummy_prefix=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, minloglevel=2)
    return model.getvalue()


@pytest.fixture(scope="module")
def sp_checkpoint(fixtures_dir, tmp_path_factory):
    directory = tmp_path_factory.mktemp("sp") / "openvla_tiny_sp"
    shutil.copytree(fixtures_dir / "openvla_tiny_hf", directory,
                    ignore=shutil.ignore_patterns("tokenizer.json", "tokenizer_config.json"))
    (directory / "tokenizer.model").write_bytes(train_llama_style([prompt_for(i) for i in INSTRUCTIONS]))
    sp = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
    pad_id = sp.get_piece_size()  # <PAD> comes right after the sentencepiece vocabulary (32000 in openvla-7b)
    added = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True} for i, t in ((0, "<unk>"), (1, "<s>"), (2, "</s>"), (pad_id, "<PAD>"))}
    (directory / "tokenizer_config.json").write_text(
        json.dumps({**OFFICIAL_TOKENIZER_CONFIG, "added_tokens_decoder": added}, indent=2))
    (directory / "added_tokens.json").write_text(json.dumps({"<PAD>": pad_id}))
    return directory


def test_sentencepiece_only_checkpoint_tokenizes_as_sentencepiece_does(sp_checkpoint):
    assert not (sp_checkpoint / "tokenizer.json").exists()
    tokenizer = OpenVLAProcessor.from_pretrained(sp_checkpoint).tokenizer
    sp = spm.SentencePieceProcessor(model_file=str(sp_checkpoint / "tokenizer.model"))
    texts = [prompt_for(i) for i in INSTRUCTIONS] + [
        prompt_for("Put the Zebra in the 2nd basket!"),  # unseen letters and digits: byte fallback
        "two  spaces, a tab\tand ünïcode",
    ]
    for text in texts:
        assert tokenizer(text)["input_ids"] == [1] + sp.encode(text), text
        assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    assert tokenizer.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "<PAD>"]) == [0, 1, 2, sp.get_piece_size()]
    assert tokenizer.pad_token == "<PAD>"


def test_sentencepiece_only_checkpoint_runs_the_model(sp_checkpoint):
    processor = OpenVLAProcessor.from_pretrained(sp_checkpoint)
    model = OpenVLA.from_pretrained(sp_checkpoint, device="cpu")
    frame = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    inputs = processor(prompt_for(INSTRUCTIONS[1]), Image.fromarray(frame))
    action = model.predict_action(**inputs, unnorm_key=next(iter(model.config.norm_stats)))
    assert action.shape == (7,) and np.isfinite(action).all()


def test_sentencepiece_missing_is_a_clear_error(sp_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # as on an install without the package
    with pytest.raises(CheckpointError, match=r"tokenizer\.model.*pip install sentencepiece protobuf"):
        OpenVLAProcessor.from_pretrained(sp_checkpoint)

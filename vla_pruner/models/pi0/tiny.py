"""A small pi0 built from a seed and saved in LeRobot's layout: `model=pi0_tiny`.

The sizes of the LeRobot fixture (VLM Gemma 128 x 3 layers, expert 64 x 3, SigLIP 64 x 2, vocabulary 1024; real
token counts: 3 cameras x 256, 48 language tokens, 50 actions of 32, 10 steps), PyTorch's default init, the
state/action mean and std the harness gives it (the benchmark's) and a word-level tokenizer over the instructions it
gives (PaliGemma's special ids: pad 0, eos 1, bos 2, unk 3, newline 108). It exercises loading, sampling, pruning, FLOPs and latency on a CPU; its actions
mean nothing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from vla_pruner.models.pi0.model import Pi0
from vla_pruner.models.pi0.checkpoint import LEROBOT_STATS_GLOB, TINY_DIMS_FILE, stored_key
from vla_pruner.models.pi0.config import GemmaDims, Pi0Config, SiglipDims
from vla_pruner.models.pi0.tokenizer import FAST_FILE
from vla_pruner.models.seeded import build_atomically

TINY_PI0 = Pi0Config(
    vlm=GemmaDims(width=128, depth=3, mlp_dim=256, num_heads=8, head_dim=16),
    expert=GemmaDims(width=64, depth=3, mlp_dim=192, num_heads=8, head_dim=16),
    vision=SiglipDims(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4),
    vocab_size=1024,
)
SPECIAL_IDS = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "\n": 108}
CAMERAS = ("image", "image2", "empty_camera_0")


def build_tokenizer(instructions: Iterable[str]) -> Tokenizer:
    """Word-level vocabulary of the lower-cased instructions around PaliGemma's special ids (newline as a token
    matched before splitting on whitespace)."""
    split = pre_tokenizers.Whitespace()
    words = sorted({w for text in instructions for w, _ in split.pre_tokenize_str(text.lower())})
    free = (i for i in range(4, TINY_PI0.vocab_size) if i not in SPECIAL_IDS.values())
    vocab = {**SPECIAL_IDS, **dict(zip(words, free))}
    if len(vocab) < len(SPECIAL_IDS) + len(words):
        raise ValueError(f"{len(words)} words do not fit a vocabulary of {TINY_PI0.vocab_size}")
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = split
    tok.add_special_tokens(list(SPECIAL_IDS))
    return tok


def lerobot_config(seed: int) -> dict:
    """config.json as LeRobot writes it, with the fields this model reads (and the seed it was built from)."""
    visual = {"type": "VISUAL", "shape": [3, 224, 224]}
    return {
        "type": "pi0", "build_seed": seed,
        "input_features": {**{f"observation.images.{c}": visual for c in CAMERAS},
                           "observation.state": {"type": "STATE", "shape": [8]}},
        "output_features": {"action": {"type": "ACTION", "shape": [7]}},
        "chunk_size": TINY_PI0.chunk_size, "n_action_steps": TINY_PI0.chunk_size,
        "max_state_dim": TINY_PI0.max_state_dim, "max_action_dim": TINY_PI0.max_action_dim,
        "num_inference_steps": TINY_PI0.num_steps, "min_period": TINY_PI0.min_period,
        "max_period": TINY_PI0.max_period, "use_relative_actions": False, "empty_cameras": 1,
        "tokenizer_max_length": TINY_PI0.max_token_len,
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"},
    }


def write_tiny_pi0(directory: Path, seed: int, instructions: Iterable[str], stats: dict[str, list[float]]) -> None:
    """config.json, model.safetensors (LeRobot's `model.` names), tiny_dims.json, the normalizer and the tokenizer."""
    directory.mkdir(parents=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Pi0(TINY_PI0)
    tensors = {f"model.{stored_key(k)}": v.contiguous() for k, v in model.state_dict().items()
               if not k.endswith("position_ids")}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(lerobot_config(seed), indent=2))
    dims = {"vision": {"num_attention_heads": TINY_PI0.vision.num_attention_heads}}
    (directory / TINY_DIMS_FILE).write_text(json.dumps(dims, indent=2))
    tensors = {k: torch.tensor(v, dtype=torch.float32) for k, v in stats.items()}
    save_file(tensors, str(directory / LEROBOT_STATS_GLOB.replace("*", "0")))
    build_tokenizer(instructions).save(str(directory / FAST_FILE))


def ensure_tiny_pi0(directory: str | Path, seed: int, instructions: Iterable[str],
                    stats: dict[str, list[float]]) -> Path:
    """The tiny pi0 at `directory`, built first if absent; `stats`: its normalizer's state and action mean and std
    (LeRobot's names)."""
    return build_atomically(Path(directory).expanduser(), seed,
                            lambda staging: write_tiny_pi0(staging, seed, instructions, stats))

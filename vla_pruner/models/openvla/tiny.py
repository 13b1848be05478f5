"""A small OpenVLA built from a seed and saved in the official checkpoint format: the project's default model.

Same architecture family as OpenVLA-7B (DINOv2 + SigLIP ViTs of depth 3, an 8-layer Llama of width 128,
the 32064-token Llama-2 id layout) with random weights, so the whole pipeline (loading, preprocessing,
decoding, pruning, the harness) runs on a CPU in seconds. Its actions are meaningless. The language-model
head scores only action tokens (other rows are zero), so greedy decoding always lands on action bins;
the weights are drawn so that the image and the instruction change the decoded tokens.
The tokenizer is a word-level one over the instructions it is given, with Llama-2's special ids.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from vla_pruner.models.checkpoint import WEIGHTS_FILE, to_stored_key
from vla_pruner.models.openvla.config import OpenVLAConfig
from vla_pruner.models.openvla.tiny_configs import TINY_CONFIG
from vla_pruner.models.openvla.model import EMPTY_TOKEN_ID, OpenVLA
from vla_pruner.models.openvla.processor import prompt_for
from vla_pruner.models.seeded import build_atomically

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<PAD>"
SPECIAL_IDS = {UNK: 0, BOS: 1, EOS: 2, "▁": EMPTY_TOKEN_ID, PAD: 32000}


_DINO_NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
_SIGLIP_NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
PREPROCESSOR_CONFIG = {
    "image_processor_type": "PrismaticImageProcessor",
    "processor_class": "PrismaticProcessor",
    "image_resize_strategy": "resize-naive",
    "use_fused_vision_backbone": True,
    "input_sizes": [[3, 224, 224], [3, 224, 224]],
    "interpolations": ["bicubic", "bicubic"],
    "means": [_DINO_NORM["mean"], _SIGLIP_NORM["mean"]],
    "stds": [_DINO_NORM["std"], _SIGLIP_NORM["std"]],
    "tvf_resize_params": [{"size": [224, 224], "interpolation": 3, "max_size": None, "antialias": True}] * 2,
    "tvf_crop_params": [{"output_size": [224, 224]}] * 2,
    "tvf_normalize_params": [{**_DINO_NORM, "inplace": False}, {**_SIGLIP_NORM, "inplace": False}],
    "tvf_do_letterbox": False,
    "tvf_letterbox_fill": None,
}


def build_tokenizer(instructions: Iterable[str]) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the prompt template and the (lower-cased) instructions, Llama-2 special ids."""
    split = pre_tokenizers.Whitespace()
    texts = [prompt_for(i) for i in instructions] or [prompt_for("")]
    words = sorted({w for text in texts for w, _ in split.pre_tokenize_str(text)} - set(SPECIAL_IDS))
    first_word_id = max(i for i in SPECIAL_IDS.values() if i < 100) + 1
    vocab = {**SPECIAL_IDS, **{w: first_word_id + i for i, w in enumerate(words)}}
    if first_word_id + len(words) > EMPTY_TOKEN_ID:
        raise ValueError(f"{len(words)} words do not fit below the Llama-2 special id {EMPTY_TOKEN_ID}")
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = split
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, SPECIAL_IDS[BOS])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD)


def build_tiny_model(seed: int) -> OpenVLA:
    """Seeded random weights; the LM head keeps only the action-token rows.

    timm's ViT init is kept. The language model and projector are re-drawn: embeddings N(0, 0.02) and
    matrices N(0, 0.1), so that attention and MLP outputs dominate the residual stream and the decoded
    tokens depend on the image and the instruction (with PyTorch's default init each token's own
    embedding dominates and every query decodes the same action).
    """
    config = OpenVLAConfig.from_dict(TINY_CONFIG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = OpenVLA(config)
        lm = model.language_model
        with torch.no_grad():
            lm.model.embed_tokens.weight.normal_(0.0, 0.02)
            for module in [*lm.model.layers.modules(), *model.projector.modules()]:
                if isinstance(module, torch.nn.Linear):
                    module.weight.normal_(0.0, 0.1)
            head = lm.lm_head.weight.normal_(0.0, 0.02)
            keep = torch.zeros(head.shape[0], dtype=torch.bool)
            keep[list(model.action_tokenizer.token_ids)] = True
            head[~keep] = 0.0
    return model.eval()


def write_tiny_checkpoint(directory: Path, seed: int, instructions: Iterable[str], norm_stats: dict) -> None:
    """Write config (with `norm_stats`, the benchmark's statistics), weights, tokenizer (a word-level vocabulary of
    `instructions`) and preprocessor config into `directory` (which must not exist)."""
    directory.mkdir(parents=True)
    model = build_tiny_model(seed)
    tensors = {to_stored_key(k): v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps({**TINY_CONFIG, "norm_stats": norm_stats, "build_seed": seed}, indent=2))
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2))
    build_tokenizer(instructions).save_pretrained(str(directory))


def ensure_tiny_checkpoint(directory: str | Path, seed: int, instructions: Iterable[str], norm_stats: dict) -> Path:
    """The tiny checkpoint at `directory`, built first if absent."""
    return build_atomically(Path(directory).expanduser(), seed,
                            lambda path: write_tiny_checkpoint(path, seed, instructions, norm_stats))


def seven_b_shaped(llm_width: int, vit_width: int) -> OpenVLA:
    """OpenVLA-7B's depths and token counts (32 Llama layers, ViTs of depth 24/27, 256 visual tokens) at
    reduced width, random weights: for benchmarks of where a 7B-shaped query spends its time."""
    heads = max(1, llm_width // 64)
    config = {
        **TINY_CONFIG,
        "timm_model_kwargs": [
            {"depth": 24, "embed_dim": vit_width, "num_heads": max(1, vit_width // 64)},
            {"depth": 27, "embed_dim": vit_width, "num_heads": max(1, vit_width // 64)},
        ],
        "text_config": {**TINY_CONFIG["text_config"], "hidden_size": llm_width, "intermediate_size": round(2.6875 * llm_width),
                        "num_attention_heads": heads, "num_key_value_heads": heads, "num_hidden_layers": 32},
    }
    torch.manual_seed(0)
    return OpenVLA(OpenVLAConfig.from_dict(config)).eval()

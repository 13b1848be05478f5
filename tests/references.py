"""What several model tests compare against: the OpenVLA fixture's real queries and eager attention weights."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vla_pruner.models.llama import LlamaLM
from vla_pruner.models.openvla.model import OpenVLA, with_empty_token
from vla_pruner.models.openvla.processor import OpenVLAProcessor


def fixture_checkpoint(fixtures_dir: Path, model_class, name: str, reference: str):
    """(model in float32 on the CPU, its processor, the reference npz) of a fixture checkpoint directory."""
    path = fixtures_dir / name
    return (model_class.from_pretrained(path, device="cpu", dtype="float32"), OpenVLAProcessor.from_pretrained(path),
            np.load(fixtures_dir / reference))


def openvla_fixture_queries(fixtures_dir: Path) -> tuple[OpenVLA, list[torch.Tensor]]:
    """The fixture checkpoint (float32, CPU) and the prefill embeddings of its reference frames and prompts."""
    model, processor, reference = fixture_checkpoint(fixtures_dir, OpenVLA, "openvla_tiny_hf",
                                                     "openvla_tiny_hf_reference.npz")
    queries = []
    with torch.inference_mode():
        for image, prompt in zip(reference["image"], reference["prompt"]):
            inputs = processor(str(prompt), Image.fromarray(image))
            queries.append(model.multimodal_embeds(with_empty_token(inputs["input_ids"]),
                                                   model.encode_image(inputs["pixel_values"])))
    return model, queries


def eager_attention(lm: LlamaLM, layer_idx: int, layer_input: torch.Tensor, positions: torch.Tensor,
                    additive_mask: torch.Tensor) -> torch.Tensor:
    """Attention weights [B, heads, S, S] of one layer, from transformers' eager attention (not the engine's)."""
    attn = lm.layers[layer_idx].self_attn
    implementation, attn.config._attn_implementation = attn.config._attn_implementation, "eager"
    try:
        x = lm.layers[layer_idx].input_layernorm(layer_input)
        return attn(x, position_embeddings=lm.rotary_emb(x, positions), attention_mask=additive_mask)[1]
    finally:
        attn.config._attn_implementation = implementation

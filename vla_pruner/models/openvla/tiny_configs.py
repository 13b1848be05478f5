"""Architecture and statistics of the project's seeded tiny models, as data: read by the builders (openvla/tiny.py,
openvla_oft/tiny.py) and by the model family records, which must not import the builders (they import the models)."""
from __future__ import annotations

from typing import Any

from vla_pruner.models.libero_norm_stats import LIBERO_ACTION_STATS

TINY_CONFIG = {
    "architectures": ["OpenVLAForActionPrediction"],
    "model_type": "openvla",
    "arch_specifier": "no-align+fused-gelu-mlp",
    "vision_backbone_id": "dinosiglip-vit-so-224px",
    "llm_backbone_id": "llama2-7b-pure",
    "hf_llm_id": "meta-llama/Llama-2-7b-hf",
    "use_fused_vision_backbone": True,
    "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
    "timm_model_kwargs": [{"depth": 3, "embed_dim": 48, "num_heads": 3}, {"depth": 3, "embed_dim": 64, "num_heads": 2}],
    "timm_override_act_layers": [None, None],
    "image_sizes": [224, 224],
    "image_resize_strategy": "resize-naive",
    "llm_max_length": 2048,
    "n_action_bins": 256,
    "pad_to_multiple_of": 64,
    "pad_token_id": 32000,
    "output_projector_states": False,
    "text_config": {  # only the fields that differ from Llama-2-7B, as the official checkpoints store it
        "model_type": "llama",
        "hidden_size": 128,
        "intermediate_size": 344,
        "num_attention_heads": 4,
        "num_hidden_layers": 8,
        "num_key_value_heads": 4,
        "pad_token_id": 32000,
        "vocab_size": 32064,
    },
    "norm_stats": {suite: {"action": stats} for suite, stats in LIBERO_ACTION_STATS.items()},
    "torch_dtype": "float32",
}

# Proprio bounds for the tiny model (the real q01/q99 come with real checkpoints): a box around every LIBERO
# scene the Panda reaches (eef x, y, z in metres; LIBERO tables sit at z of about 0.2 to 1.2), axis-angle
# components within +-pi (gripper-down poses are near (pi, 0, 0)), finger joints within the Panda's 0.04 m.
TINY_PROPRIO_STATS = {
    "q01": [-0.5, -0.4, 0.0, -3.1416, -3.1416, -3.1416, 0.0, -0.04],
    "q99": [0.3, 0.4, 1.4, 3.1416, 3.1416, 3.1416, 0.04, 0.0],
}


def tiny_oft_norm_stats() -> dict[str, Any]:
    return {f"{suite}_no_noops": {"action": stats, "proprio": TINY_PROPRIO_STATS}
            for suite, stats in LIBERO_ACTION_STATS.items()}

"""Architecture of the project's seeded tiny models, as data: read by the builders (openvla/tiny.py,
openvla_oft/tiny.py) and by the model family records, which must not import the builders (they import the models).
Their statistics are the benchmark's, which the harness hands the builders (`norm_stats`, filled in at its place)."""
from __future__ import annotations

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
    "norm_stats": {},  # the benchmark's statistics, given to the builder
    "torch_dtype": "float32",
}

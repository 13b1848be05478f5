"""OpenVLA's config.json, read into a typed object.

The official checkpoints store only the non-default fields of the Llama `text_config`; the rest are the
defaults of transformers 4.40's LlamaConfig (the version they were saved with), spelled out here so that a
newer transformers with other defaults cannot change the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import LlamaConfig

# transformers-4.40 LlamaConfig defaults (Llama-2-7B), for fields a checkpoint's text_config omits.
LLAMA_40_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,  # None -> num_attention_heads
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "mlp_bias": False,
    "pad_token_id": None,
}


@dataclass
class OpenVLAConfig:
    """The fields of an OpenVLA config.json that the model uses."""

    timm_model_ids: list[str]
    text_config: dict[str, Any]  # as stored; `llama_config()` fills in the defaults
    image_sizes: list[int] = field(default_factory=lambda: [224, 224])
    timm_model_kwargs: list[dict[str, Any]] | None = None  # project extension: create_model overrides
    timm_override_act_layers: list[str | None] | None = None
    norm_stats: dict[str, Any] = field(default_factory=dict)
    n_action_bins: int = 256
    pad_to_multiple_of: int = 64
    pad_token_id: int = 32000

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "OpenVLAConfig":
        """ValueError (one line) for a config.json this model cannot be built from."""
        if not raw.get("use_fused_vision_backbone", False) or len(raw.get("timm_model_ids") or []) != 2:
            raise ValueError("only the fused (two-ViT) OpenVLA vision backbone is supported "
                             "(use_fused_vision_backbone: true and two timm_model_ids)")
        if not isinstance(raw.get("text_config"), dict):
            raise ValueError("no text_config object (the language model's dimensions)")
        for name, kind in (("norm_stats", dict), ("image_sizes", list)):
            if raw.get(name) is not None and not isinstance(raw[name], kind):
                raise ValueError(f"{name} is a {type(raw[name]).__name__}, not a {kind.__name__}")
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in raw.items() if k in names and v is not None})

    def timm_kwargs(self, i: int) -> dict[str, Any]:
        """Arguments of `timm.create_model` for backbone i (0 = DINOv2 featurizer, 1 = SigLIP)."""
        kwargs: dict[str, Any] = {"pretrained": False, "num_classes": 0, "img_size": self.image_sizes[i]}
        # the official code always passes act_layer (None = the architecture's own default)
        acts = self.timm_override_act_layers or [None, None]
        kwargs["act_layer"] = acts[i]
        if self.timm_model_kwargs:
            kwargs.update(self.timm_model_kwargs[i])
        return kwargs

    def llama_config(self) -> LlamaConfig:
        from transformers import LlamaConfig  # here: reading a config (a run's pre-load checks) needs no transformers

        t = {**LLAMA_40_DEFAULTS, **self.text_config}
        if t["rope_scaling"] is not None:
            raise ValueError(f"text_config.rope_scaling={t['rope_scaling']!r} is not supported")
        cfg = LlamaConfig(
            vocab_size=t["vocab_size"],
            hidden_size=t["hidden_size"],
            intermediate_size=t["intermediate_size"],
            num_hidden_layers=t["num_hidden_layers"],
            num_attention_heads=t["num_attention_heads"],
            num_key_value_heads=t["num_key_value_heads"],
            hidden_act=t["hidden_act"],
            max_position_embeddings=t["max_position_embeddings"],
            rms_norm_eps=t["rms_norm_eps"],
            rope_parameters={"rope_type": "default", "rope_theta": float(t["rope_theta"])},
            attention_bias=t["attention_bias"],
            mlp_bias=t["mlp_bias"],
            pad_token_id=t["pad_token_id"],
        )
        cfg._attn_implementation = "sdpa"
        return cfg

    @property
    def vocab_size(self) -> int:
        return {**LLAMA_40_DEFAULTS, **self.text_config}["vocab_size"]

    @property
    def text_vocab_size(self) -> int:
        """Vocabulary without the pad-to-multiple rows: action bins count down from here."""
        return self.vocab_size - self.pad_to_multiple_of


# The official OpenVLA-7B architecture (config.json of openvla/openvla-7b*, non-default fields only); the
# OpenVLA-OFT checkpoints share it. FLOPs of a model without a local checkpoint are counted from it.
OFFICIAL_OPENVLA_CONFIG: dict = {
    "use_fused_vision_backbone": True,
    "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
    "image_sizes": [224, 224],
    "text_config": {"vocab_size": 32064, "pad_token_id": 32000},
}

"""The openvla_oft family's record: two images, a proprio token, one bidirectional pass read by an action head."""
from vla_pruner.families import ModelFamily
from vla_pruner.models.openvla.config import OFFICIAL_OPENVLA_CONFIG
from vla_pruner.models.openvla.cost import OpenVLAVariant
from vla_pruner.models.openvla.tiny_configs import TINY_CONFIG
from vla_pruner.models.openvla_oft.model import ACTION_HEAD_FILE, ACTION_SLOTS, NUM_IMAGES, PROPRIO_FILE, select_proprio_stats

VARIANT = OpenVLAVariant(
    decode_steps=0, prefill_logit_rows=0, extra_tokens=1 + ACTION_SLOTS + 1,
    part_files=(f"{ACTION_HEAD_FILE}--*_checkpoint.pt", f"{PROPRIO_FILE}--*_checkpoint.pt"),
    default_unnorm_key=lambda suite: f"{suite}_no_noops",
    select_stats=select_proprio_stats,  # the action statistics of the same dataset are checked with it
    official_config=lambda: OFFICIAL_OPENVLA_CONFIG,  # the OpenVLA-7B base with LoRA merged
    tiny_config=lambda: TINY_CONFIG,  # the OFT tiny model is built on the openvla_tiny base
)
FAMILY = ModelFamily(
    name="openvla_oft", num_images=NUM_IMAGES, cost=VARIANT,
    # the VLA-Pruner repository's OFT port: prune after 4 layers, FastV scores all prefill rows, its released
    # VLA-Pruner ranks by all prefill rows in the paper's temporal order; its VLA-Cache never reuses the 100 most
    # attended tokens, its Gated VLA-Cache gates below a margin of 0.50
    pruner_defaults={"prune_layer": 4, "fastv_source": "prefill", "released_semantic_source": "prefill",
                     "released_temporal_order": "paper", "vla_cache_eviction_top_k": 100,
                     "gated_vla_cache_margin_threshold": 0.50},
    # the policies trained here (openvla_oft_small: libero_object, openvla_oft_small_goal: libero_goal) prune after 1
    # of their 8 layers, the same eighth of the depth as OFT-7B's 4 of 32
    model_pruner_defaults={"openvla_oft_small": {"prune_layer": 1}, "openvla_oft_small_goal": {"prune_layer": 1}},
)

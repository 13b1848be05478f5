"""The openvla family's record: one image, a causal prefill that emits action token 1, six cached decode steps."""
from vla_pruner.families import ModelFamily
from vla_pruner.models.openvla.action_tokenizer import select_action_stats
from vla_pruner.models.openvla.config import OFFICIAL_OPENVLA_CONFIG
from vla_pruner.models.openvla.model import ACTION_DIM
from vla_pruner.models.openvla.tiny_configs import TINY_CONFIG
from vla_pruner.models.openvla.cost import OpenVLAVariant

VARIANT = OpenVLAVariant(
    decode_steps=ACTION_DIM - 1, prefill_logit_rows=1, extra_tokens=0,
    part_files=(),  # the base checkpoint alone
    default_unnorm_key=lambda suite: suite,
    select_stats=select_action_stats,
    official_config=lambda: OFFICIAL_OPENVLA_CONFIG,
    tiny_config=lambda: TINY_CONFIG,
)
FAMILY = ModelFamily(name="openvla", num_images=1, cost=VARIANT)

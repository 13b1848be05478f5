"""The pi0 family's record: two valid cameras in a bidirectional prefix, an action expert over its cache."""
from vla_pruner.families import ModelFamily
from vla_pruner.models.pi0.config import REAL_PI0
from vla_pruner.models.pi0.cost import pi0_cost


def _unkeyed_stats(stats, key: str):
    """pi0 checkpoints carry one statistics set (openpi's pi0_libero: all four suites), not one per suite."""
    return stats


FAMILY = ModelFamily(
    name="pi0",
    num_images=2,  # the valid cameras (agent view, wrist): the empty third slot is never visual budget
    decode_steps=0, prefill_logit_rows=0,
    extra_tokens=1 + 50,  # the expert's state and action tokens (run 10 times, over the prefix's cache)
    part_files=(),
    default_unnorm_key=lambda suite: "libero",
    select_stats=_unkeyed_stats,
    tiny_norm_stats=dict,  # the tiny pi0 writes its own statistics (pi0.tiny.TINY_STATS)
    official_config=lambda: REAL_PI0.__dict__,
    tiny_config=dict,
    cost=pi0_cost,
    policy="pi0",
    model_pruner_defaults={"pi0_tiny": {"prune_layer": 2}},  # the seeded pi0_tiny's VLM has 3 layers
    paper_table="table4",
)

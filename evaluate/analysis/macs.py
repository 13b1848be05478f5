"""The unit and the per-layer count every FLOPs module shares (evaluate.analysis.flops for the Llama VLAs,
evaluate.analysis.pi0_flops for pi0), apart so that neither imports the other's module to get them."""
from __future__ import annotations

TERA = 1e12
UNIT = "TMACs"  # what the paper calls "FLOPs (T)"
UNIT_NOTE = "TMACs = the paper's 'FLOPs (T)'; torch FlopCounterMode FLOPs = 2 x MACs"
DEFAULT_PRUNE_LAYER = 3


def layer_macs(n: int, d: int, m: int, keys: int | None = None) -> int:
    """The paper's per-layer prefill count for n tokens, hidden d, MLP width m; `keys` (default n): the keys they
    attend to, more than n when some are reused rather than computed (VLA-Cache)."""
    return 4 * n * d * d + 2 * n * (n if keys is None else keys) * d + 3 * n * d * m


def stage_schedule(pruner, num_layers: int, dense: int, fixed: int) -> list[int]:
    """Per-layer rows of a query that `pruner` (a built `vla_pruner.pruning.Pruner`) prunes once its history is
    warm: `dense` rows until its first stage, then at each stage's layer `fixed` (the rows no pruner drops) + what
    the stage leaves of each image (its budget; progressive SparseVLM: its `stage_counts`, kept + merged; VLA-Cache:
    the rows it still computes). Layer `stage.layer` still sees the stage's input; a stage at layer -1 (DivPrune's
    cut before the model) leaves every layer the kept tokens. No stages (pruner=none, keep=1.0): dense."""
    stages = pruner.plan.stages
    per_image = pruner.describe().get("stage_counts") or [[b] * len(stages) for b in pruner.budgets]
    after_stage = {s.layer: fixed + sum(c[j] for c in per_image) for j, s in enumerate(stages)}
    tokens, schedule = after_stage.get(-1, dense), []
    for layer in range(num_layers):
        schedule.append(tokens)
        tokens = after_stage.get(layer, tokens)
    return schedule

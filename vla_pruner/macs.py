"""Compute cost in multiply-accumulates (MACs): the unit, the per-layer formulas every family's cost shares, and the
`ModelCost` a family's `cost.py` hands the harness (the FLOPs command, the run's recorded counts).

The VLA-pruning papers print MACs as "FLOPs (T)" (OpenVLA-7B dense prefill of ~291 tokens: 1.906 T), so TMACs
compare with their tables directly; torch's FlopCounterMode counts 2 FLOPs per MAC.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from vla_pruner.pruning import DEFAULT_PRUNE_LAYER

TERA = 1e12
UNIT = "TMACs"  # what the paper calls "FLOPs (T)"
UNIT_NOTE = "TMACs = the paper's 'FLOPs (T)'; torch FlopCounterMode FLOPs = 2 x MACs"


@dataclass(frozen=True)
class QueryMacs:
    """One recorded query's count: `prefill` in the paper's convention (its table's FLOPs), `total` end to end."""

    prefill: int
    total: int


class ModelCost(Protocol):
    """A model's architecture without weights, as its family's `cost(model_cfg)` builds it."""

    num_layers: int  # depth of the stack the pruners cut (`ModelLayout.num_layers`)

    def recorded_macs(self, prefill_tokens: list[int], prefill_keys: list[int] | None,
                      decode_steps: int | None) -> QueryMacs | None:
        """The count of a query from what it recorded (rows and keys per layer, decode steps); None when the
        record does not fit this model."""

    def report_lines(self, name: str, pruner, keep: float, prompt_tokens: int) -> list[str]:
        """`python -m evaluate.flops`'s report for model `name` with a built pruner; the last line is the pruned
        count alone, in TMACs."""


def layer_macs(n: int, d: int, m: int, keys: int | None = None) -> int:
    """The paper's per-layer prefill count for n tokens, hidden d, MLP width m; `keys` (default n): the keys they
    attend to, more than n when some are reused rather than computed (VLA-Cache)."""
    return 4 * n * d * d + 2 * n * (n if keys is None else keys) * d + 3 * n * d * m


def prefill_macs(tokens_per_layer: Sequence[int], d: int, m: int, keys_per_layer: Sequence[int] | None = None) -> int:
    """The paper's analytic LLM-prefill count: layer l processes tokens_per_layer[l] tokens (attending to
    keys_per_layer[l] keys; default: the same tokens)."""
    keys = tokens_per_layer if keys_per_layer is None else keys_per_layer
    return sum(layer_macs(int(n), d, m, int(k)) for n, k in zip(tokens_per_layer, keys, strict=True))


def pruned_schedule(dense_tokens: int, kept_tokens: int, num_layers: int,
                    prune_layer: int = DEFAULT_PRUNE_LAYER) -> list[int]:
    """Tokens per layer when layers 0..K-1 see all of them and layers K..L-1 the kept ones."""
    if not 0 <= prune_layer <= num_layers:
        raise ValueError(f"prune layer {prune_layer} outside 0..{num_layers}")
    return [dense_tokens] * prune_layer + [kept_tokens] * (num_layers - prune_layer)


def stage_schedule(pruner, num_layers: int, dense: int, fixed: int) -> list[int]:
    """Per-layer rows of a query that `pruner` (a built `vla_pruner.pruning.Pruner`) prunes once its history is
    warm: `dense` rows until its first stage, then at each stage's layer `fixed` (the rows no pruner drops) + what
    the stage leaves of each image (`Pruner.schedule()`: its budget; progressive SparseVLM: kept + merged; VLA-Cache:
    the rows it still computes). Layer `stage.layer` still sees the stage's input; a stage at layer -1 (DivPrune's
    cut before the model) leaves every layer the kept tokens. No stages (pruner=none, keep=1.0): dense."""
    after_stage = {stage.layer: fixed + sum(stage.rows) for stage in pruner.schedule()}
    tokens, schedule = after_stage.get(-1, dense), []
    for layer in range(num_layers):
        schedule.append(tokens)
        tokens = after_stage.get(layer, tokens)
    return schedule
